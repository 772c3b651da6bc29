//! WebSocket peers of the entrance: admission at the handshake, then one task
//! per session.
//!
//! Admission happens on the upgrade request, so a refused peer gets 401/403 with
//! the reason before any WebSocket exists: a box proves its key-derived ID and
//! is enrolled or enrols now ([`admit_box`]); a publisher proves its ID and
//! must hold one of the configured publisher keys; a peer with no proof at all is
//! the original 2017 code, admitted only with `legacy_peers` and otherwise told
//! why in a message it can log ([`refuse_legacy`]). Inside a session
//! every message must carry the proven ID, so no box can heartbeat or say goodbye
//! for another.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::Remote;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dandelion_core::auth::Channel;
use dandelion_core::connection::{ConnectionError, Encoded, Incoming, MAX_SEARCH_REPLY};
use dandelion_core::console::Level;
use dandelion_core::ids::Role;
use dandelion_core::protocol::{
    ErrorReply, Exchange, ExchangeReply, Header, Message, Search, SearchOrder, SearchReply, legacy,
};
use dandelion_core::store::StoreError;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Shared;
use super::book::{self, Beat, Checked, Heartbeat, Memo, now};
use super::enrol::{self, EnrolError, Standing};
use super::registry::{self, BoxInfo, BoxState, Candidate, rank};
use super::{locate, reach};
use crate::handshake::{self, Peer, Refusal};
use crate::ws::{self, ServerConnection};

/// Who was admitted.
#[derive(Debug, Clone)]
enum Admitted {
    Box(Peer),
    Publisher(Peer),
    /// An original 2017 client: one message per connection, no proof.
    Legacy,
    /// An original 2017 client while `legacy_peers` is off.
    LegacyRefused,
}

/// `GET /dandelion/ws`: admits the peer, then upgrades.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    let ip = dandelion_core::proxies::client_ip(
        remote.addr.ip(),
        request.headers(),
        &shared.config.trusted_proxies,
    );
    // Cloned: a borrowed request (its body is not Sync) cannot be held across an await.
    let headers = request.headers().clone();
    let admitted = match admit(&shared, &headers, remote.channel(), ip).await {
        Ok(Admitted::LegacyRefused) => {
            shared.common.refusals.record(
                &shared.common.metrics,
                ip,
                &Refusal::unauthorized("legacy_off", LEGACY_OFF),
            );
            Admitted::LegacyRefused
        }
        Ok(a) => a,
        Err(refusal) => {
            shared
                .common
                .refusals
                .record(&shared.common.metrics, ip, &refusal);
            return refusal.into_response();
        }
    };
    let common = shared.common.clone();
    let config = dandelion_core::connection::control_ws_config();
    ws::upgrade_for(request, &common, config, move |conn| async move {
        match admitted {
            Admitted::Box(peer) => box_session(shared, conn, peer, ip).await,
            Admitted::Publisher(peer) => publisher_session(shared, conn, peer, ip).await,
            Admitted::Legacy => legacy_session(shared, conn, ip).await,
            Admitted::LegacyRefused => refuse_legacy(shared, conn).await,
        }
    })
}

async fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    channel: Channel,
    ip: IpAddr,
) -> Result<Admitted, Refusal> {
    let common = &shared.common;
    let Some(peer) =
        handshake::verify_proof(headers, &common.nonces, common.identity.id(), channel).await?
    else {
        // No proof at all: the original's code, or something that is not a peer.
        // A 401 would reach an original box's log only as "Invalid response
        // status", so it is told in a message instead.
        return Ok(if shared.config.legacy_peers {
            Admitted::Legacy
        } else {
            Admitted::LegacyRefused
        });
    };
    match peer.id.role() {
        Role::Box => admit_box(shared, headers, peer, ip)
            .await
            .map(Admitted::Box),
        Role::Publisher => {
            let known = shared
                .config
                .publisher_keys
                .iter()
                .any(|k| k.trim().eq_ignore_ascii_case(&peer.public_key));
            if known {
                Ok(Admitted::Publisher(peer))
            } else {
                Err(Refusal::forbidden(
                    "unknown_publisher",
                    format!(
                        "publisher {} (key {}) is not one of this entrance's publisher_keys",
                        peer.id, peer.public_key
                    ),
                ))
            }
        }
        Role::Entrance => Err(Refusal::forbidden(
            "wrong_role",
            "an entrance may not connect here; expected a box or a publisher",
        )),
    }
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "store",
        reason: super::registry_unavailable("cannot admit a peer", &e),
    }
}

/// A box's admission, in this order: a box of a revoked owner never, whatever
/// it presents; an evicted box not before its ban ends; an enrolled box on its
/// key alone; a new identity with the join token (where there is one) or an
/// invitation, within the new-identity limits.
async fn admit_box(
    shared: &Shared,
    headers: &HeaderMap,
    peer: Peer,
    ip: IpAddr,
) -> Result<Peer, Refusal> {
    let id = peer.id.as_str();
    let standing = shared.enrolment.standing(id).await.map_err(unavailable)?;
    if let Standing::Revoked { owner, reason } = &standing {
        return Err(Refusal::forbidden(
            "revoked",
            format!("box {id} belongs to revoked owner `{owner}`: {reason}"),
        ));
    }
    if let Some((until, reason)) = shared.book.ban(id, now()).await.map_err(unavailable)? {
        return Err(Refusal::forbidden("evicted", ban_text(&reason, until)));
    }
    if matches!(standing, Standing::Enrolled { .. }) {
        return Ok(peer);
    }
    match handshake::bearer(headers) {
        Some(code) if enrol::is_code(code) => {
            let claim = shared
                .enrolment
                .prepare(code, shared.config.max_boxes_per_owner, now())
                .await
                .map_err(enrol_refusal)?;
            newcomer(shared, ip)?;
            let owner = shared
                .enrolment
                .claim(claim, id, now())
                .await
                .map_err(enrol_refusal)?;
            tracing::info!(box_id = %id, %owner, %ip, "box enrolled");
            shared
                .common
                .console
                .event(Level::Info, format!("box {id} enrolled for {owner}"));
            Ok(peer)
        }
        Some(token) => {
            let Some(expected) = &shared.join_token else {
                return Err(Refusal::forbidden(
                    "not_enrolled",
                    "this entrance has no join token: a box joins with an invitation \
                     (box.invitation = \"dinv-…\", from the operator's `dandelion invite OWNER`)",
                ));
            };
            if !handshake::token_matches(token, expected) {
                return Err(Refusal::forbidden(
                    "join_token",
                    "wrong or missing join token",
                ));
            }
            if shared.book.listed(id).await.map_err(unavailable)?.is_none() {
                newcomer(shared, ip)?;
            }
            Ok(peer)
        }
        None if shared.join_token.is_some() => Err(Refusal::forbidden(
            "join_token",
            "wrong or missing join token",
        )),
        None => Err(Refusal::unauthorized(
            "not_enrolled",
            "this box is not enrolled: start it with box.invitation = \"dinv-…\" from the \
             operator's `dandelion invite OWNER`",
        )),
    }
}

fn enrol_refusal(e: EnrolError) -> Refusal {
    match e {
        EnrolError::NotAdmitted(n) => Refusal::forbidden(n.code(), n.to_string()),
        other => unavailable(other),
    }
}

/// Counts one new identity from `ip`, refusing it past the hourly limits.
fn newcomer(shared: &Shared, ip: IpAddr) -> Result<(), Refusal> {
    shared.newcomers.admit(ip).map_err(|refused| {
        if refused.newsworthy {
            shared.common.console.event(
                Level::Warn,
                format!(
                    "new boxes from {} {} refused: more than {} an hour",
                    refused.scope, refused.key, refused.per_hour
                ),
            );
        }
        Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "new_identity_rate",
            reason: refused.to_string(),
        }
    })
}

/// What a banned box is told: why, and until when.
pub fn ban_text(reason: &str, until: f64) -> String {
    let left = (until - now()).max(0.0);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, bounded
    let until_time = std::time::UNIX_EPOCH + Duration::from_secs(until as u64);
    format!(
        "evicted: {reason}; banned until {} ({left:.0}s from now)",
        humantime::format_rfc3339_seconds(until_time)
    )
}

fn own_header(shared: &Shared) -> Header {
    Header::new(shared.common.identity.id().clone())
}

fn error_reply(
    shared: &Shared,
    code: &str,
    text: impl Into<String>,
    command: Option<&str>,
) -> Message {
    Message::Error(ErrorReply {
        header: own_header(shared),
        error: text.into(),
        code: Some(code.to_owned()),
        command: command.map(str::to_owned),
        entrance_urls: None,
    })
}

/// Counts a receive error as the refusal it is and returns its code; `None`
/// for a dropped or broken transport, which is how sessions end, not a refusal.
fn count_bad(shared: &Shared, ip: IpAddr, e: &ConnectionError) -> Option<&'static str> {
    let code = match e {
        ConnectionError::BadMessage(p) => p.reason_code(),
        ConnectionError::TooLarge { .. } => "too_large",
        ConnectionError::TooManyErrors(_) => "too_many_errors",
        other => {
            tracing::debug!(%ip, "session ended: {other}");
            return None;
        }
    };
    let refusal = Refusal {
        status: StatusCode::BAD_REQUEST,
        code,
        reason: e.to_string(),
    };
    shared
        .common
        .refusals
        .record(&shared.common.metrics, ip, &refusal);
    Some(code)
}

/// Answers a message that does not decode; `false` when the session must end.
async fn answer_bad(
    shared: &Shared,
    conn: &mut ServerConnection,
    ip: IpAddr,
    e: &ConnectionError,
) -> bool {
    let Some(code) = count_bad(shared, ip, e) else {
        return false;
    };
    if e.is_fatal() {
        return false;
    }
    conn.send(&error_reply(shared, code, e.to_string(), None))
        .await
        .is_ok()
}

/// The facts of one heartbeat: the exchange as sent, and what the entrance
/// adds (where the box is, when it expires).
fn heartbeat_of<'a>(
    shared: &Shared,
    exchange: &'a Exchange,
    legacy: bool,
    public_key: Option<&'a str>,
    ip: IpAddr,
) -> Heartbeat<'a> {
    let (geo, geo_source) = locate::resolve(shared.geo.as_ref(), ip, exchange.geoip.as_ref());
    let now = now();
    shared.metrics.heartbeats.inc();
    Heartbeat {
        exchange,
        legacy,
        observed_ip: Some(ip.to_string()),
        public_key,
        geo,
        geo_source,
        expires_at: now + shared.config.expire_box_time.as_secs_f64(),
        now,
    }
}

/// Tells a banned box why and closes its session.
async fn refuse_banned(shared: &Shared, conn: &mut ServerConnection, reason: &str, until: f64) {
    let _ = conn
        .send(&error_reply(
            shared,
            "evicted",
            ban_text(reason, until),
            Some("EXCHANGE"),
        ))
        .await;
    conn.close_with(CloseCode::Policy, "evicted").await;
}

/// Tells a box its heartbeat could not be recorded; false if the session is gone.
async fn answer_store_error(
    shared: &Shared,
    conn: &mut ServerConnection,
    id: &str,
    e: &StoreError,
) -> bool {
    let reply = error_reply(
        shared,
        "store",
        super::registry_unavailable(&format!("cannot record a heartbeat of {id}"), e),
        Some("EXCHANGE"),
    );
    conn.send(&reply).await.is_ok()
}

/// The answer to every heartbeat: built from configuration alone, so encoded
/// once.
fn exchange_reply(shared: &Shared) -> &Encoded {
    shared
        .exchange_reply
        .get_or_init(|| Encoded::new(&build_exchange_reply(shared)))
}

fn build_exchange_reply(shared: &Shared) -> Message {
    Message::ExchangeReply(ExchangeReply {
        header: own_header(shared),
        entrance_urls: shared.entrance_urls(),
        entrances: Some(shared.entrances()),
        publisher_keys: Some(shared.config.publisher_keys.clone()),
        heartbeat_interval: Some(shared.config.heartbeat_interval.as_secs().max(1)),
        extra: Default::default(),
    })
}

async fn box_session(shared: Arc<Shared>, mut conn: ServerConnection, peer: Peer, ip: IpAddr) {
    let id = peer.id.to_string();
    let (n, mut evictions) = shared.attach(&id);
    let shutdown = shared.common.shutdown.clone();
    // The DATA_URL this session last had checked: a box that advertises another
    // one is checked again at once (publishers are handed only checked URLs).
    let mut checked: Option<String> = None;
    // A box that keeps changing it is checked at most so often.
    let mut rechecks = reach::RecheckBudget::default();
    let mut registered = false;
    let mut said_goodbye = false;
    // What this session stored last; the next heartbeat is decided from it.
    let mut memo: Option<Memo> = None;
    tracing::debug!(box_id = %id, %ip, "box session opened");
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close_with(CloseCode::Away, "entrance shutting down").await;
                break;
            }
            Some(reason) = evictions.recv() => {
                let _ = conn.send(&error_reply(&shared, "evicted", reason, None)).await;
                conn.close_with(CloseCode::Policy, "evicted").await;
                break;
            }
            incoming = conn.recv() => incoming,
        };
        let message = match incoming {
            Ok(None) => break,
            Ok(Some(Incoming::Binary(_))) => {
                let reply = error_reply(
                    &shared,
                    "unexpected_binary",
                    "the entrance takes no file frames",
                    None,
                );
                if conn.send(&reply).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(Some(Incoming::Message(m))) => m,
            Err(e) => {
                if answer_bad(&shared, &mut conn, ip, &e).await {
                    continue;
                }
                break;
            }
        };
        if message.header().id != peer.id {
            let text = format!(
                "this session belongs to {}; a message for {} is refused",
                peer.id,
                message.header().id
            );
            shared.common.refusals.record(
                &shared.common.metrics,
                ip,
                &Refusal::forbidden("id_mismatch", text.clone()),
            );
            let _ = conn
                .send(&error_reply(
                    &shared,
                    "id_mismatch",
                    text,
                    Some(message.command()),
                ))
                .await;
            conn.close_with(CloseCode::Policy, "ID mismatch").await;
            break;
        }
        match message {
            Message::Exchange(exchange) => {
                let read_at = std::time::Instant::now();
                let answered = || shared.metrics.heartbeat_reply.observe_since(read_at);
                let hb = heartbeat_of(&shared, &exchange, false, Some(&peer.public_key), ip);
                // A registration (a session's first heartbeat) is answered once it
                // is stored and checked, so that ACCEPTED means "listed". Later
                // heartbeats are answered as soon as they are judged and stored
                // behind the answer (`Book::check` says why); the next message
                // waits for the write.
                let answer_first = registered;
                // A ban made by another entrance on the same store reaches us here.
                let beat = match shared.book.check(&hb, memo.take()).await {
                    Ok(Checked::Accepted(pending)) => {
                        if answer_first {
                            if conn.send_encoded(exchange_reply(&shared)).await.is_err() {
                                break;
                            }
                            answered();
                        }
                        shared.book.store(&hb, pending).await
                    }
                    Ok(Checked::Banned { until, reason }) => Ok(Beat::Banned { until, reason }),
                    Err(e) => Err(e),
                };
                match beat {
                    Ok(Beat::Recorded { new, memo: stored }) => {
                        memo = Some(stored);
                        if !registered {
                            shared.watchers.tell(&id, super::watch::ACTIVE, "");
                        }
                        super::console::heartbeat(&shared, &id, new).await;
                    }
                    Ok(Beat::Banned { until, reason }) => {
                        refuse_banned(&shared, &mut conn, &reason, until).await;
                        break;
                    }
                    Err(e) => {
                        if !answer_store_error(&shared, &mut conn, &id, &e).await {
                            break;
                        }
                        continue;
                    }
                }
                let data_url = exchange.data_url.as_deref().unwrap_or_default();
                if shared.config.reachability_check
                    && checked.as_deref() != Some(data_url)
                    && rechecks.allow(std::time::Instant::now())
                {
                    checked = Some(data_url.to_owned());
                    reach::check_and_record(&shared, &exchange, &peer.public_key, Some(ip)).await;
                    // Its verdict changed the record: the next heartbeat must read.
                    memo = None;
                }
                if !answer_first {
                    if conn.send_encoded(exchange_reply(&shared)).await.is_err() {
                        break;
                    }
                    answered();
                }
                registered = true;
            }
            Message::Goodbye(goodbye) => {
                if let Err(e) = shared.book.remove(&id).await {
                    tracing::warn!(box_id = %id, "cannot remove a box that said goodbye: {e}");
                }
                tracing::info!(box_id = %id, reason = goodbye.reason.as_deref().unwrap_or(""), "box said goodbye");
                super::console::gone(&shared, &id, Level::Info, "said goodbye");
                shared
                    .watchers
                    .tell(&id, super::watch::GONE, "it said goodbye");
                said_goodbye = true;
                conn.close().await;
                break;
            }
            other => {
                let command = other.command();
                let reply = error_reply(
                    &shared,
                    "unexpected_command",
                    format!("a box may not send {command} to an entrance"),
                    Some(command),
                );
                if conn.send(&reply).await.is_err() {
                    break;
                }
            }
        }
    }
    // Sessions ended by this entrance's own shutdown say nothing about the box.
    if shared.detach(&id, n) && registered && !said_goodbye && !shutdown.is_triggered() {
        shared
            .watchers
            .tell(&id, super::watch::DISCONNECTED, "its session ended");
    }
    tracing::debug!(box_id = %id, "box session ended");
}

async fn publisher_session(
    shared: Arc<Shared>,
    mut conn: ServerConnection,
    peer: Peer,
    ip: IpAddr,
) {
    let shutdown = shared.common.shutdown.clone();
    // Box changes for a publisher that asked to watch (`SEARCH` with `WATCH`).
    let mut watching: Option<broadcast::Receiver<super::watch::Change>> = None;
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => {
                conn.close_with(CloseCode::Away, "entrance shutting down").await;
                break;
            }
            change = next_change(&mut watching) => {
                let Some(change) = change else {
                    // It fell behind: a fresh session resyncs with a SEARCH.
                    conn.close_with(CloseCode::Again, "box changes overflowed; search again").await;
                    break;
                };
                if let Some(m) = change.message(shared.common.identity.id())
                    && conn.send(&m).await.is_err()
                {
                    break;
                }
                continue;
            }
            incoming = conn.recv() => incoming,
        };
        let reply = match incoming {
            Ok(None) => break,
            Ok(Some(Incoming::Message(Message::Search(search)))) if search.header.id == peer.id => {
                if search.watch == Some(true) && watching.is_none() {
                    watching = Some(shared.watchers.subscribe());
                }
                search_reply(&shared, &search).await
            }
            Ok(Some(Incoming::Message(Message::Goodbye(_)))) => {
                conn.close().await;
                break;
            }
            Ok(Some(Incoming::Message(m))) if m.header().id != peer.id => error_reply(
                &shared,
                "id_mismatch",
                format!("this session belongs to {}", peer.id),
                Some(m.command()),
            ),
            Ok(Some(Incoming::Message(m))) => error_reply(
                &shared,
                "unexpected_command",
                format!(
                    "a publisher may only send SEARCH to an entrance, not {}",
                    m.command()
                ),
                Some(m.command()),
            ),
            Ok(Some(Incoming::Binary(_))) => error_reply(
                &shared,
                "unexpected_binary",
                "the entrance takes no file frames",
                None,
            ),
            Err(e) => {
                if answer_bad(&shared, &mut conn, ip, &e).await {
                    continue;
                }
                break;
            }
        };
        if conn.send(&reply).await.is_err() {
            break;
        }
    }
}

/// The next box change for a watching session; never, for one that is not
/// watching; `None` when the session fell too far behind to catch up.
async fn next_change(
    watching: &mut Option<broadcast::Receiver<super::watch::Change>>,
) -> Option<super::watch::Change> {
    let Some(rx) = watching else {
        return std::future::pending().await;
    };
    // Lagged or closed: either way the session cannot be kept in step.
    rx.recv().await.ok()
}

/// What an original peer is told when `legacy_peers` is off.
const LEGACY_OFF: &str = "this Dandelion entrance does not admit the original 2017 peers, which cannot \
     prove their ID; its operator can admit them with legacy_peers = true in [entrance] \
     (original publishers also need their address in legacy_publishers), or move this peer \
     to Dandelion";

/// How long an original peer has to send its one message before it is told
/// anyway: it sends at once, and the answer is the same whatever it says.
const LEGACY_FIRST_MESSAGE: Duration = Duration::from_secs(10);

/// An original peer while `legacy_peers` is off: its one message is read
/// (the original client writes before it reads, and a reply that beats its
/// write can reset the connection under it), then answered with the refusal.
async fn refuse_legacy(shared: Arc<Shared>, mut conn: ServerConnection) {
    let _ = tokio::time::timeout(LEGACY_FIRST_MESSAGE, conn.recv()).await;
    let _ = conn
        .send_value(&legacy_error(&shared, "legacy_off", LEGACY_OFF))
        .await;
    conn.close_with(CloseCode::Policy, "legacy peers are not admitted")
        .await;
}

/// An `ERROR` in the original's shape (see [`legacy::error_reply`]).
fn legacy_error(shared: &Shared, code: &str, text: &str) -> Value {
    legacy::error_reply(
        &own_header(shared),
        code,
        text,
        shared.legacy_entrance_urls(),
    )
}

/// The original's clients: one `EXCHANGE` or `SEARCH` per connection, then
/// close. Every answer is shaped for them ([`legacy`]).
async fn legacy_session(shared: Arc<Shared>, mut conn: ServerConnection, ip: IpAddr) {
    let reply = match conn.recv().await {
        Ok(Some(Incoming::Message(Message::Exchange(exchange)))) => {
            legacy_exchange(&shared, &exchange, ip).await
        }
        Ok(Some(Incoming::Message(Message::Search(search)))) => {
            legacy_search(&shared, &search, ip).await
        }
        Ok(Some(Incoming::Message(m))) => legacy_error(
            &shared,
            "unexpected_command",
            &format!("unexpected {} from an unauthenticated peer", m.command()),
        ),
        Ok(Some(Incoming::Binary(_))) => legacy_error(
            &shared,
            "unexpected_binary",
            "the entrance takes no file frames",
        ),
        Ok(None) => return,
        Err(e) => {
            if let Some(code) = count_bad(&shared, ip, &e)
                && !e.is_fatal()
            {
                let _ = conn
                    .send_value(&legacy_error(&shared, code, &e.to_string()))
                    .await;
            }
            conn.close().await;
            return;
        }
    };
    let _ = conn.send_value(&reply).await;
    conn.close().await;
}

async fn legacy_exchange(shared: &Shared, exchange: &Exchange, ip: IpAddr) -> Value {
    let id = exchange.header.id.as_str();
    if exchange.header.id.role() != Role::Box {
        return legacy_error(shared, "wrong_role", "only a box sends EXCHANGE");
    }
    // An unauthenticated peer must not take over a box that proved its ID.
    match shared.book.load_info(id).await {
        Ok(Some(info)) if !info.legacy => {
            return legacy_error(
                shared,
                "id_taken",
                &format!("{id} is registered by a box that proved its ID"),
            );
        }
        _ => {}
    }
    match shared
        .book
        .heartbeat(&heartbeat_of(shared, exchange, true, None, ip))
        .await
    {
        Ok(Beat::Recorded { .. }) => {
            legacy::exchange_reply(&own_header(shared), shared.legacy_entrance_urls())
        }
        Ok(Beat::Banned { until, reason }) => {
            legacy_error(shared, "evicted", &ban_text(&reason, until))
        }
        Err(e) => legacy_error(
            shared,
            "store",
            &super::registry_unavailable("cannot answer a one-shot EXCHANGE", &e),
        ),
    }
}

/// An original publisher's `SEARCH`: answered only from the configured
/// addresses, and only with legacy boxes — it proved nothing, so it learns
/// nothing an unauthenticated peer could not (a verified box's address is
/// the verified network's to give).
async fn legacy_search(shared: &Shared, search: &Search, ip: IpAddr) -> Value {
    let ip = ip.to_canonical();
    if !shared
        .config
        .legacy_publishers
        .iter()
        .any(|net| net.contains(&ip))
    {
        let text = format!(
            "an original publisher at {ip} is not admitted: the entrance's operator can list its \
             address in legacy_publishers"
        );
        shared.common.refusals.record(
            &shared.common.metrics,
            ip,
            &Refusal::forbidden("legacy_publisher", text.clone()),
        );
        return legacy_error(shared, "legacy_publisher", &text);
    }
    if search.header.id.role() != Role::Publisher {
        return legacy_error(shared, "wrong_role", "only a publisher sends SEARCH");
    }
    // The original's publisher asks for no count; neither may anyone posing as one.
    let count = shared.config.search_count as usize;
    let boxes = match live_boxes(shared, count, |info, _| info.legacy).await {
        Ok(boxes) => boxes,
        Err(e) => {
            return legacy_error(
                shared,
                "store",
                &super::registry_unavailable("cannot answer a SEARCH", &e),
            );
        }
    };
    let entries = boxes.into_iter().filter_map(|(info, exchange)| {
        let entry = legacy::box_entry(&exchange, Some(&info.geo), info.observed_ip.as_deref())?;
        Some((exchange.header.id.to_string(), entry))
    });
    legacy::search_reply(&own_header(shared), entries)
}

/// Live boxes, freshest first, with their last exchange: at most `limit` of
/// those `wanted` keeps.
async fn live_boxes(
    shared: &Shared,
    limit: usize,
    wanted: impl Fn(&BoxInfo, &Exchange) -> bool,
) -> Result<Vec<(BoxInfo, Exchange)>, StoreError> {
    let now = now();
    let mut live = Vec::new();
    for (n, (id, _)) in shared.book.members().await?.into_iter().enumerate() {
        if live.len() >= limit {
            break;
        }
        if n > 0 && n % book::LIST_CHUNK == 0 {
            book::between_chunks().await;
        }
        let Ok(Some(info)) = shared.book.load_info(&id).await else {
            continue;
        };
        // Legacy boxes count as live here; `wanted` decides who may see them.
        if !info.is_live(now, shared.config.heartbeat_interval, true) {
            continue;
        }
        let Ok(Some(exchange)) = shared.book.load_exchange(&id).await else {
            continue;
        };
        if wanted(&info, &exchange) {
            live.push((info, exchange));
        }
    }
    Ok(live)
}

/// Live boxes for a publisher, ranked, each exchange carrying the entrance's view
/// of the box: the location it looked up and the `STATE`.
async fn search_reply(shared: &Shared, search: &Search) -> Message {
    let unverified = shared.config.legacy_peers && search.unverified == Some(true);
    let count = search.count.unwrap_or(shared.config.search_count) as usize;
    let origin = search.geoip.as_ref().and_then(|g| g.lat_lon());
    let order = search.order.unwrap_or(SearchOrder::Freshest);
    // Members come freshest first (expiry = last heartbeat + a fixed time), so a
    // freshest-first answer can stop at `count`; only nearest-first needs all.
    let needs_all = order == SearchOrder::Nearest && origin.is_some();
    let limit = if needs_all { usize::MAX } else { count };
    let live = live_boxes(shared, limit, |info, exchange| {
        (unverified || !info.legacy)
            && (!shared.config.reachability_check
                || info.legacy
                || info.verified_for(exchange.data_url.as_deref()))
    })
    .await;
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            return error_reply(
                shared,
                "store",
                super::registry_unavailable("cannot answer a SEARCH", &e),
                Some("SEARCH"),
            );
        }
    };
    let mut candidates = Vec::new();
    for (info, mut exchange) in live {
        let loc = info.geo.lat_lon();
        exchange.geoip = Some(info.geo.clone());
        exchange
            .extra
            .insert("STATE".into(), Value::from(BoxState::Active.as_str()));
        if info.legacy {
            exchange.extra.insert("LEGACY".into(), Value::from(true));
        }
        candidates.push(Candidate {
            last_heartbeat: info.last_heartbeat,
            loc,
            item: exchange,
        });
    }
    let ranked = rank(candidates, order, origin, count);
    let found = ranked.len();
    // What the answer carries besides the boxes (entrances, header) is small;
    // the budget leaves it room. Each box costs its encoded exchange and a comma.
    let boxes = registry::fit(ranked, MAX_SEARCH_REPLY - (16 << 10), |b| {
        serde_json::to_vec(b).map_or(usize::MAX, |v| v.len() + 1)
    });
    if boxes.len() < found {
        tracing::debug!(
            listed = boxes.len(),
            found,
            "a SEARCH answer lists fewer boxes to stay within {MAX_SEARCH_REPLY} bytes"
        );
    }
    Message::SearchReply(SearchReply {
        header: own_header(shared),
        boxes,
        entrance_urls: Some(shared.entrance_urls()),
        entrances: Some(shared.entrances()),
        undecodable: Vec::new(),
        extra: Default::default(),
    })
}
