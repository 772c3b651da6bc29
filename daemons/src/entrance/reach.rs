//! The reachability check: a box is only worth handing to publishers if viewers
//! can reach it. The entrance issues a nonce, calls the box's advertised data URL
//! (`GET {DATA_URL}/dandelion/reachability?nonce=…&verifier=<entrance-id>`) and
//! expects the box's reachability proof: its signature, with the key it registered
//! with, over that nonce, this entrance's ID and the very data URL called. Anything else — no answer, an error status,
//! another ID or key — marks the box `unreachable` with the reason.
//!
//! The URL is the box's to choose, so the entrance calls it only where the box
//! itself is: the host is resolved once, and the call goes to the address the
//! box connects from (or one the operator allowed), never to a private,
//! loopback or link-local address unless the network is private
//! (`reachability_private`), and follows no redirect. Otherwise a box could
//! make the entrance scan the networks behind it. The reasons name addresses
//! and network errors; only the admin API shows them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dandelion_core::auth::{self, AuthError, Claim, Nonce, Proof};
use dandelion_core::console::Level;
use dandelion_core::ipscope::{self, Scope};
use dandelion_core::protocol::Exchange;

use super::Shared;
use super::book::now;
use super::registry::BoxState;
use crate::shutdown::Shutdown;

pub use dandelion_core::auth::REACHABILITY_PATH;

/// Checks of a changed `DATA_URL` one session gets at once (its registration
/// included); after them, at most one per [`RECHECK_GAP`].
pub const RECHECK_BURST: u32 = 3;

/// The least time between a session's checks once its burst is spent.
pub const RECHECK_GAP: std::time::Duration = std::time::Duration::from_secs(60);

/// How often one box session may make the entrance call out. Each changed
/// `DATA_URL` costs the entrance an outgoing request to wherever the box
/// points it; a box flipping its URL every heartbeat would otherwise turn the
/// entrance into a dialler at its command. Until a check passes at the new URL
/// the box is not handed to publishers there (`VERIFIED_URL`), so waiting
/// costs the honest box nothing but time.
#[derive(Debug, Default)]
pub struct RecheckBudget {
    done: u32,
    last: Option<std::time::Instant>,
}

impl RecheckBudget {
    /// Whether a check may go out at `now`, counting it if so.
    pub fn allow(&mut self, now: std::time::Instant) -> bool {
        let rested = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= RECHECK_GAP);
        if self.done < RECHECK_BURST || rested {
            self.done = self.done.saturating_add(1);
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

/// Where the entrance may call a box: the rules that keep a box's `DATA_URL`
/// from making the entrance probe networks of the box's choosing.
#[derive(Debug, Clone, Copy)]
pub struct TargetRules<'a> {
    /// Loopback, private and link-local addresses may be called
    /// (`reachability_private`).
    pub private: bool,
    /// Addresses that may be called for any box (`reachability_allow`).
    pub allow: &'a [IpAddr],
}

impl TargetRules<'_> {
    /// The address to call among those a data URL's host resolved to, for a box
    /// connecting from `observed`: one that is that very host (or allow-listed),
    /// in a network the entrance may call. The reason when there is none; it
    /// names addresses and is for the operator's eyes only.
    pub fn choose(&self, resolved: &[IpAddr], observed: Option<IpAddr>) -> Result<IpAddr, String> {
        let own = |ip: IpAddr| {
            observed.is_some_and(|o| ipscope::same_host(ip, o))
                || self.allow.iter().any(|a| ipscope::same_host(*a, ip))
        };
        let callable = |ip: IpAddr| match Scope::of(ip) {
            Scope::Public => true,
            Scope::Loopback | Scope::Private | Scope::LinkLocal => self.private,
            Scope::Unusable => false,
        };
        if let Some(ip) = resolved
            .iter()
            .copied()
            .find(|ip| own(*ip) && callable(*ip))
        {
            return Ok(ip);
        }
        let listed = resolved
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(ip) = resolved.iter().copied().find(|ip| !callable(*ip)) {
            let scope = Scope::of(ip).as_str();
            let hint = if self.private || Scope::of(ip) == Scope::Unusable {
                ""
            } else {
                " (reachability_private is off)"
            };
            return Err(format!(
                "DATA_URL leads to a {scope} address, {ip}, which this entrance does not call{hint}"
            ));
        }
        let from = observed.map_or_else(|| "unknown".to_owned(), |o| o.to_string());
        Err(format!(
            "DATA_URL leads to {listed}, not to the address the box connects from ({from}); \
             the entrance calls a box only there or at a reachability_allow address"
        ))
    }
}

/// The addresses `url`'s host stands for, and its port: a literal as it is, a
/// name looked up once (the caller then dials only what it chose from them).
async fn resolve(url: &str) -> Result<(Vec<IpAddr>, u16), String> {
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| format!("DATA_URL {} is not a URL", url.escape_debug()))?;
    let port = match (uri.port_u16(), uri.scheme_str()) {
        (Some(p), _) => p,
        (None, Some("https")) => 443,
        (None, Some("http")) => 80,
        _ => return Err("DATA_URL must be http:// or https://".to_owned()),
    };
    let host = uri
        .host()
        .ok_or("DATA_URL has no host")?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((vec![ip], port));
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("DATA_URL host {host} does not resolve: {e}"))?;
    let mut ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    ips.dedup();
    Ok((ips, port))
}

/// Checks one box that connects from `observed`. `Ok(())` when it answered
/// with a valid proof for its own key.
pub async fn check(
    shared: &Shared,
    exchange: &Exchange,
    public_key: &str,
    observed: Option<IpAddr>,
) -> Result<(), String> {
    let data_url = exchange
        .data_url
        .as_deref()
        .ok_or("the box advertises no DATA_URL")?;
    let data_url = data_url.trim_end_matches('/');
    let nonce = Nonce::random().map_err(|e| e.to_string())?;
    let verifier = shared.common.identity.id();
    let claim = Claim::reachability(verifier, &nonce, data_url)
        .map_err(|e| format!("reachability check: DATA_URL: {e}"))?;
    let url = format!(
        "{data_url}{REACHABILITY_PATH}?nonce={}&verifier={verifier}",
        nonce.as_str()
    );
    let (resolved, port) = tokio::time::timeout(shared.config.reachability_timeout, resolve(&url))
        .await
        .map_err(|_| "reachability check: DATA_URL's host did not resolve in time".to_owned())?
        .map_err(|e| format!("reachability check: {e}"))?;
    let rules = TargetRules {
        private: shared.config.reachability_private,
        allow: &shared.config.reachability_allow,
    };
    let ip = rules
        .choose(&resolved, observed)
        .map_err(|e| format!("reachability check: {e}"))?;
    let response = shared
        .reach_http
        .get_at(&url, SocketAddr::new(ip, port))
        .await
        .map_err(|e| format!("reachability check failed: {e}"))?;
    if !response.status.is_success() {
        return Err(format!(
            "reachability check: {url} answered {}",
            response.status
        ));
    }
    let proof: Proof = response
        .json()
        .map_err(|e| format!("reachability check: the answer is not a proof: {e}"))?;
    let key = auth::verify_from(&proof, &exchange.header.id, &claim).map_err(|e| match e {
        AuthError::WrongPeer { found, .. } => {
            format!("reachability check: {data_url} is served by {found}, not by this box")
        }
        other => format!("reachability check: {other}"),
    })?;
    if !key.eq_ignore_ascii_case(public_key) {
        return Err(
            "reachability check: answered with another key than the box registered with".into(),
        );
    }
    Ok(())
}

/// Checks a box and records the outcome as its state.
pub async fn check_and_record(
    shared: &Shared,
    exchange: &Exchange,
    public_key: &str,
    observed: Option<IpAddr>,
) {
    let id = exchange.header.id.as_str();
    let outcome = check(shared, exchange, public_key, observed).await;
    let result = match &outcome {
        Ok(()) => {
            let url = exchange
                .data_url
                .as_deref()
                .map(|u| u.trim_end_matches('/'));
            shared
                .book
                .set_state(
                    id,
                    BoxState::Active,
                    "reachability check passed",
                    url,
                    now(),
                )
                .await
        }
        Err(reason) => {
            tracing::info!(box_id = id, "box unreachable: {reason}");
            shared
                .watchers
                .tell(id, super::watch::UNREACHABLE, reason.clone());
            shared
                .book
                .set_state(id, BoxState::Unreachable, reason, None, now())
                .await
        }
    };
    match (result, outcome) {
        (Err(e), _) => {
            tracing::warn!(box_id = id, "cannot record the reachability result: {e}");
        }
        (Ok(()), Ok(())) => super::console::heartbeat(shared, id, false).await,
        (Ok(()), Err(reason)) => {
            let text = format!("{id} is unreachable: {reason}");
            super::console::changed(shared, id, Level::Warn, text).await;
        }
    }
}

/// Re-checks every registered, verified box every `reachability_interval`.
pub async fn run_periodic(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(shared.config.reachability_interval);
    tick.tick().await; // the first tick is immediate; sessions check at registration
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let members = match shared.book.members().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("reachability round skipped: {e}");
                continue;
            }
        };
        for (id, _) in members {
            if shutdown.is_triggered() {
                return;
            }
            let (Ok(Some(info)), Ok(Some(exchange))) = (
                shared.book.load_info(&id).await,
                shared.book.load_exchange(&id).await,
            ) else {
                continue;
            };
            // A silent box is already stale: calling it would only cost up to
            // `reachability_timeout` of this serial round and say nothing new.
            let state = info
                .effective(now(), shared.config.heartbeat_interval)
                .state;
            if info.legacy || matches!(state, BoxState::Evicted | BoxState::Stale) {
                continue;
            }
            let observed = info.observed_ip.as_deref().and_then(|ip| ip.parse().ok());
            if let Some(key) = &info.public_key {
                check_and_record(&shared, &exchange, key, observed).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn the_entrance_calls_a_box_only_where_the_box_is() {
        let public = TargetRules {
            private: false,
            allow: &[],
        };
        let box_ip = Some("203.0.113.7".parse().unwrap());
        // Its own address: called.
        assert_eq!(
            public.choose(&ips(&["203.0.113.7"]), box_ip),
            Ok("203.0.113.7".parse().unwrap())
        );
        // A name resolving to several: the one that is the box.
        assert_eq!(
            public.choose(&ips(&["198.51.100.1", "203.0.113.7"]), box_ip),
            Ok("203.0.113.7".parse().unwrap())
        );
        // Someone else's server, the entrance's own networks, cloud metadata.
        for target in [
            "198.51.100.1",
            "127.0.0.1",
            "10.0.0.5",
            "169.254.169.254",
            "::1",
        ] {
            let err = public.choose(&ips(&[target]), box_ip).unwrap_err();
            assert!(err.contains(target), "{target}: {err}");
        }
        assert!(
            public
                .choose(&ips(&["10.0.0.5"]), box_ip)
                .unwrap_err()
                .contains("private address")
        );
        // Even a box that connects from a private address is not called there.
        let lan_box = Some("10.0.0.5".parse().unwrap());
        assert!(public.choose(&ips(&["10.0.0.5"]), lan_box).is_err());
        // A private network: its own LAN address, any loopback address for a box
        // on this machine, and still nobody else's.
        let private = TargetRules {
            private: true,
            allow: &[],
        };
        assert!(private.choose(&ips(&["10.0.0.5"]), lan_box).is_ok());
        assert!(private.choose(&ips(&["10.0.0.6"]), lan_box).is_err());
        let local_box = Some("127.0.0.2".parse().unwrap());
        assert!(private.choose(&ips(&["127.0.0.1"]), local_box).is_ok());
        assert!(private.choose(&ips(&["0.0.0.0"]), local_box).is_err());
        // An operator's allow-list.
        let allow = ips(&["198.51.100.1"]);
        let allowed = TargetRules {
            private: false,
            allow: &allow,
        };
        assert!(allowed.choose(&ips(&["198.51.100.1"]), box_ip).is_ok());
        assert!(allowed.choose(&ips(&["198.51.100.2"]), box_ip).is_err());
    }

    #[test]
    fn a_url_flipping_box_gets_a_burst_of_checks_then_one_a_minute() {
        let mut budget = RecheckBudget::default();
        let t0 = Instant::now();
        for n in 0..RECHECK_BURST {
            assert!(budget.allow(t0 + Duration::from_secs(u64::from(n))));
        }
        // Every heartbeat with another URL: refused until the gap has passed.
        for s in 3..62 {
            assert!(!budget.allow(t0 + Duration::from_secs(s)), "{s}");
        }
        assert!(budget.allow(t0 + Duration::from_secs(62)));
        assert!(!budget.allow(t0 + Duration::from_secs(63)));
    }
}
