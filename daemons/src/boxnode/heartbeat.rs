//! The box's heartbeat: one long-lived WebSocket per entrance, an `EXCHANGE`
//! every heartbeat interval (with jitter, so boxes started together do not beat
//! together), replies that teach it more entrances and the publishers to trust,
//! reconnection with exponential backoff, and a `GOODBYE` on shutdown so the
//! entrance marks the box gone at once.
//!
//! Every entrance is pinned to its ID ([`PinnedUrl`]): configured ones by the
//! operator, learned ones by the entrance that named them. The box sends its join
//! token to, and believes publisher keys from, only an entrance that proved that
//! ID in the session handshake; each entrance's keys are kept apart from the
//! others' and from the configured ones.
//!
//! Entrances being down never stops the box: serving and storing go on, and each
//! entrance's task keeps retrying on its own.

use crate::health;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dandelion_core::connection::{ConnectOptions, ConnectionError, Incoming, connect_as_with};
use dandelion_core::http::HttpClient;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::probe::Probe;
use dandelion_core::protocol::{Exchange, Goodbye, Message, SystemInfo, TrafficFlow};

use super::BoxState;

/// Longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First wait after a failed connection.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// How long an evicted box waits before it offers itself again: the entrance
/// refuses it for a while anyway, and hammering it would only be logged.
pub const EVICTED_BACKOFF: Duration = Duration::from_secs(300);

/// The entrances the box knows (one task each), by ID: however many URLs name an
/// entrance, the box keeps one session to it, at the first URL it learned.
#[derive(Debug, Default)]
pub struct Entrances {
    // A std Mutex: a handful of entries, locked briefly.
    known: Mutex<BTreeMap<NodeId, Known>>,
    /// Signalled when an entrance proves its ID for the first time, so the
    /// uplink test need not wait a whole interval for one at start.
    proven_one: tokio::sync::Notify,
}

#[derive(Debug)]
struct Known {
    url: String,
    /// Whether the entrance has proven its ID in a session: only then does the
    /// box send it the join token outside the handshake (the uplink test).
    proven: bool,
}

impl Entrances {
    /// Adds an entrance; true if it was new.
    fn add(&self, id: &NodeId, url: &str) -> bool {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains_key(id) {
            return false;
        }
        known.insert(
            id.clone(),
            Known {
                url: url.to_owned(),
                proven: false,
            },
        );
        true
    }

    fn set_proven(&self, id: &NodeId) {
        let newly = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
            .is_some_and(|k| !std::mem::replace(&mut k.proven, true));
        if newly {
            self.proven_one.notify_one();
        }
    }

    /// The URLs of the entrances known.
    pub fn list(&self) -> Vec<String> {
        self.urls(|_| true)
    }

    /// The URLs of the entrances that have proven their IDs.
    pub fn proven(&self) -> Vec<String> {
        self.urls(|k| k.proven)
    }

    fn urls(&self, keep: impl Fn(&Known) -> bool) -> Vec<String> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|k| keep(k))
            .map(|k| k.url.clone())
            .collect()
    }
}

/// Starts one task per configured entrance; more start as replies name them.
pub fn start(state: &Arc<BoxState>) {
    for pin in &state.config.entrances {
        learn(state, pin);
    }
}

/// One spelling per entrance URL: entrances name themselves as the original did
/// (`http://host:port/dandelion/ws/`) while an operator may configure
/// `ws://host:port/dandelion/ws`.
pub fn normalise(url: &str) -> Option<String> {
    let ws = dandelion_core::connection::websocket_url(url).ok()?;
    Some(ws.trim_end_matches('/').to_owned())
}

/// Learns the `ENTRANCES` of a reply: `URL#entrance-ID` entries only.
fn learn_all(state: &Arc<BoxState>, from: &str, entries: &[String]) {
    for entry in entries {
        match PinnedUrl::parse(entry) {
            Ok(pin) if pin.id().role() == Role::Entrance => learn(state, &pin),
            Ok(_) | Err(_) => tracing::debug!(
                entrance = from,
                entry = %entry.escape_debug(),
                "ignoring an ENTRANCES entry that is not URL#entrance-ID"
            ),
        }
    }
}

fn learn(state: &Arc<BoxState>, pin: &PinnedUrl) {
    let Some(url) = normalise(pin.url()) else {
        tracing::warn!(
            url = pin.url(),
            "ignoring an entrance URL that is not ws(s):// or http(s)://"
        );
        return;
    };
    if state.entrances.add(pin.id(), &url) {
        tracing::info!(url, entrance = %pin.id(), "heartbeating to entrance");
        let task_state = state.clone();
        let id = pin.id().clone();
        state
            .common
            .shutdown
            .spawn(async move { entrance_task(task_state, url, id).await });
    }
}

/// A random fraction in `[0, 1)`.
fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or(0) >> 11;
    #[allow(clippy::cast_precision_loss)]
    let unit = bits as f64 / (1u64 << 53) as f64;
    unit
}

/// `base` ± 20 %: enough to spread boxes out, little enough to keep the rhythm.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.8 + 0.4 * random_unit())
}

/// The next backoff: doubled, capped, and with "full jitter" in its upper half.
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_BACKOFF)
}

async fn entrance_task(state: Arc<BoxState>, url: String, id: NodeId) {
    let shutdown = state.common.shutdown.clone();
    let options = ConnectOptions {
        local_addr: state.config.bind_outgoing,
    };
    let mut backoff = MIN_BACKOFF;
    let (health, part) = (state.common.health.clone(), health::entrance(&url));
    // A failure is logged when it starts or changes, not at every retry.
    let mut last_failure = String::new();
    loop {
        let connecting = connect_as_with(
            &url,
            &id,
            &state.common.identity,
            state.credential.as_deref(),
            options,
        );
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            c = connecting => c,
        };
        let wait = match connected {
            Ok(conn) => {
                tracing::info!(url, entrance = %id, "connected to entrance");
                state.entrances.set_proven(&id);
                health.set(&part, None);
                backoff = MIN_BACKOFF;
                last_failure.clear();
                let end = session(&state, &url, &id, conn).await;
                let lost = match end {
                    End::Shutdown => return,
                    End::Evicted => "evicted by the entrance",
                    End::Lost => "the session was lost",
                };
                health.set(&part, Some(format!("{lost}; reconnecting")));
                match end {
                    End::Evicted => EVICTED_BACKOFF,
                    _ => MIN_BACKOFF,
                }
            }
            Err(e) => {
                let text = e.to_string();
                health.set(&part, Some(format!("cannot connect: {text}")));
                let unproven = matches!(e, ConnectionError::Unproven { .. });
                if unproven {
                    state.common.metrics.refuse("entrance_unproven");
                }
                if text != last_failure {
                    if unproven {
                        tracing::error!(url, entrance = %id, "not trusting this entrance: {text}");
                    } else {
                        tracing::warn!(url, "cannot reach entrance: {text}");
                    }
                    last_failure = text;
                }
                let wait = backoff.mul_f64(0.5 + 0.5 * random_unit());
                backoff = next_backoff(backoff);
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

enum End {
    Shutdown,
    Evicted,
    Lost,
}

async fn session(
    state: &Arc<BoxState>,
    url: &str,
    entrance: &NodeId,
    mut conn: dandelion_core::connection::ClientConnection,
) -> End {
    let shutdown = state.common.shutdown.clone();
    let mut interval = state.config.heartbeat_interval;
    // The first heartbeat goes at once, so the entrance knows the box right away.
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => {
                let bye = Message::Goodbye(Goodbye {
                    header: state.header(),
                    reason: Some("shutting down".to_owned()),
                });
                let _ = conn.send(&bye).await;
                conn.close().await;
                return End::Shutdown;
            }
            () = tokio::time::sleep_until(next) => {
                let exchange = Message::Exchange(exchange(state));
                if let Err(e) = conn.send(&exchange).await {
                    tracing::warn!(url, "lost the entrance: {e}");
                    return End::Lost;
                }
                next = tokio::time::Instant::now() + jittered(interval);
            }
            incoming = conn.recv() => match incoming {
                Ok(Some(Incoming::Message(Message::ExchangeReply(reply)))) => {
                    if let Some(entries) = &reply.entrances {
                        learn_all(state, url, entries);
                    }
                    if let Some(keys) = reply.publisher_keys {
                        state.set_learned_keys(entrance, keys);
                    }
                    if let Some(secs) = reply.heartbeat_interval.filter(|s| *s > 0) {
                        interval = Duration::from_secs(secs.min(3600));
                    }
                }
                Ok(Some(Incoming::Message(Message::Error(e)))) => {
                    if e.code.as_deref() == Some("evicted") {
                        tracing::error!(url, "EVICTED by the entrance: {}; retrying in {}s", e.error, EVICTED_BACKOFF.as_secs());
                        conn.close().await;
                        return End::Evicted;
                    }
                    tracing::warn!(url, code = ?e.code, "entrance refused a heartbeat: {}", e.error);
                }
                Ok(Some(other)) => tracing::debug!(url, "ignoring {other:?} from the entrance"),
                Ok(None) => {
                    tracing::warn!(url, "the entrance closed the connection");
                    return End::Lost;
                }
                Err(e) if !e.is_fatal() => tracing::warn!(url, "bad message from the entrance: {e}"),
                Err(e) => {
                    tracing::warn!(url, "lost the entrance: {e}");
                    return End::Lost;
                }
            }
        }
    }
}

/// Measures the uplink against the first entrance that answers, at start and
/// every `uplink_test_interval`, unless `uplink_test_size` is 0. Only entrances
/// that proved their IDs are asked: the test carries the join token.
pub async fn measure_uplink(state: Arc<BoxState>) {
    let size = state.config.uplink_test_size.as_u64();
    if size == 0 {
        return;
    }
    let shutdown = state.common.shutdown.clone();
    let http = HttpClient::new(Duration::from_secs(60));
    loop {
        let proven = state.entrances.proven();
        if proven.is_empty() {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = state.entrances.proven_one.notified() => continue,
            }
        }
        for url in proven {
            match uplink_once(&state, &http, &url, size).await {
                Ok(rate) => {
                    tracing::info!(entrance = %url, bytes_per_second = rate, "measured the uplink");
                    state
                        .uplink
                        .store(rate, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                Err(e) => tracing::warn!(entrance = %url, "uplink measurement failed: {e}"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(state.config.uplink_test_interval) => {}
        }
    }
}

async fn uplink_once(
    state: &BoxState,
    http: &HttpClient,
    url: &str,
    size: u64,
) -> Result<u64, String> {
    let origin = dandelion_core::http::origin_of(url)
        .ok_or_else(|| format!("`{url}` has no HTTP origin"))?;
    let token = state.credential.clone().unwrap_or_default();
    let auth = format!("Bearer {token}");
    let body = bytes::Bytes::from(vec![0u8; usize::try_from(size).map_err(|e| e.to_string())?]);
    let started = std::time::Instant::now();
    let response = http
        .request(
            http::Method::POST,
            &format!("{origin}{}", dandelion_core::protocol::UPLINK_PATH),
            &[("authorization", &auth)],
            body,
        )
        .await
        .map_err(|e| e.to_string())?;
    let client_seconds = started.elapsed().as_secs_f64();
    if !response.status.is_success() {
        return Err(format!("{}: {}", response.status, response.text().trim()));
    }
    let answer: serde_json::Value = response.json().map_err(|e| e.to_string())?;
    let bytes = answer["BYTES"].as_u64().unwrap_or(0);
    // The entrance's clock starts at the first byte it sees, which leaves out
    // connection set-up; fall back to ours when its reading is too short to trust.
    let seconds = answer["SECONDS"]
        .as_f64()
        .filter(|s| *s > 0.001)
        .unwrap_or(client_seconds);
    if bytes != size || seconds <= 0.0 {
        return Err(format!("the entrance counted {bytes} of {size} bytes"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((bytes as f64 / seconds) as u64)
}

/// One heartbeat's content.
pub fn exchange(state: &BoxState) -> Exchange {
    let mut info = state.sample();
    info.storage_quota = state.config.storage_quota.map(|q| q.as_u64());
    info.storage_used = Some(state.storage.used(None));
    info.upload_cap = state.limits.upload_cap;
    info.max_downloads = Some(state.limits.max_downloads);
    // SystemInfo has no field of its own for it yet; publishers read it by name.
    if let Some(quota) = state.config.publisher_quota {
        info.extra.insert(
            "PUBLISHER_QUOTA".to_owned(),
            serde_json::Value::from(quota.as_u64()),
        );
    }
    info.upload_rate = Some(state.traffic.recent_rate());
    let uplink = state.uplink.load(std::sync::atomic::Ordering::Relaxed);
    info.uplink = (uplink > 0).then_some(uplink);
    let totals = state.traffic.totals();
    Exchange {
        header: state.header(),
        connect_ws: Some(state.connect_ws.clone()),
        data_url: Some(state.public_base.clone()),
        system_info: Some(Box::new(info)),
        geoip: None,
        traffic_flow: Some(TrafficFlow {
            bytes_served: Some(totals.bytes),
            requests: Some(totals.requests),
            extra: Default::default(),
        }),
        extra: Default::default(),
    }
}

/// The system probe, shared by every entrance task: one reading per heartbeat
/// interval is enough whatever the number of entrances.
#[derive(Debug)]
pub struct Sampler {
    // A std Mutex: sampling reads a few /proc files, well under a millisecond.
    probe: Mutex<(Probe, Option<(std::time::Instant, SystemInfo)>)>,
}

impl Sampler {
    pub fn new(probe: Probe) -> Sampler {
        Sampler {
            probe: Mutex::new((probe, None)),
        }
    }

    pub fn sample(&self, max_age: Duration) -> SystemInfo {
        let mut guard = self.probe.lock().unwrap_or_else(|p| p.into_inner());
        let (probe, last) = &mut *guard;
        if let Some((at, info)) = last
            && at.elapsed() < max_age
        {
            return info.clone();
        }
        let info = probe.sample();
        *last = Some((std::time::Instant::now(), info.clone()));
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrance_is_known_once_by_its_id() {
        let entrances = Entrances::default();
        let id = NodeId::parse("entrance-0123456789abcdef0123456789abcdef").unwrap();
        assert!(entrances.add(&id, "ws://10.0.0.1:7070/dandelion/ws"));
        assert!(!entrances.add(&id, "ws://10.0.0.9:7070/dandelion/ws"));
        assert_eq!(entrances.list(), ["ws://10.0.0.1:7070/dandelion/ws"]);
        // Not asked for the uplink test (with the join token) until proven.
        assert!(entrances.proven().is_empty());
        entrances.set_proven(&id);
        assert_eq!(entrances.proven(), ["ws://10.0.0.1:7070/dandelion/ws"]);
    }

    #[test]
    fn entrance_urls_in_either_spelling_are_one_entrance() {
        let a = normalise("http://127.0.0.1:17071/dandelion/ws/");
        assert_eq!(a.as_deref(), Some("ws://127.0.0.1:17071/dandelion/ws"));
        assert_eq!(normalise(" ws://127.0.0.1:17071/dandelion/ws "), a);
        assert_eq!(
            normalise("https://e.example/dandelion/ws/").as_deref(),
            Some("wss://e.example/dandelion/ws")
        );
        assert_eq!(normalise("ftp://e.example/"), None);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_jitter_stays_near() {
        assert_eq!(next_backoff(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(next_backoff(Duration::from_secs(50)), MAX_BACKOFF);
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(5));
            assert!(
                j >= Duration::from_secs(4) && j <= Duration::from_secs(6),
                "{j:?}"
            );
        }
    }
}
