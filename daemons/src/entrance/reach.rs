//! The reachability check: a box is only worth handing to publishers if viewers
//! can reach it. The entrance issues a nonce, calls the box's advertised data URL
//! (`GET {DATA_URL}/dandelion/reachability?nonce=…&verifier=<entrance-id>`) and
//! expects the box's reachability proof: its signature, with the key it registered
//! with, over that nonce, this entrance's ID and the very data URL called. Anything else — no answer, an error status,
//! another ID or key — marks the box `unreachable` with the reason.

use std::sync::Arc;

use dandelion_core::auth::{self, AuthError, Claim, Nonce, Proof};
use dandelion_core::console::Level;
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

/// Checks one box. `Ok(())` when it answered with a valid proof for its own key.
pub async fn check(shared: &Shared, exchange: &Exchange, public_key: &str) -> Result<(), String> {
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
    let response = shared
        .reach_http
        .get(&url, &[])
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
pub async fn check_and_record(shared: &Shared, exchange: &Exchange, public_key: &str) {
    let id = exchange.header.id.as_str();
    let outcome = check(shared, exchange, public_key).await;
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
            if let Some(key) = &info.public_key {
                check_and_record(&shared, &exchange, key).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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
