//! The expiry sweep, driven by the time-ordered `BOX_SET` (score = expiry time):
//! each round atomically pops what has expired, so entrances sharing a store
//! never expire the same box twice and nothing scans the whole registry. Before
//! popping, self-preservation decides whether to hold back (see
//! `registry::self_preservation`). Every few seconds it also recounts the `boxes` gauge, and
//! now and then prunes the new-identity limits.

use std::sync::Arc;
use std::time::Duration;

use dandelion_core::console::Level;

use super::Shared;
use super::book::now;
use super::registry::{self, MISSED_HEARTBEATS_FOR_STALE, Tally};
use crate::shutdown::Shutdown;

/// Boxes expired per store call, so one round cannot hold the store for long.
const POP_BATCH: usize = 1000;

/// How often the `boxes` gauge is recounted at most (or every heartbeat interval,
/// if shorter): it reads every box, so not every round.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// How often the new-identity limits forget full buckets.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How often the sweep runs: often enough that expiry is punctual to about a
/// heartbeat, capped at one second.
fn period(heartbeat: Duration) -> Duration {
    (heartbeat / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

pub async fn run(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(period(shared.config.heartbeat_interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let gauge_every = GAUGE_EVERY.min(shared.config.heartbeat_interval);
    let mut counted: Option<tokio::time::Instant> = None;
    let mut pruned = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = round(&shared).await {
            tracing::warn!("expiry sweep failed; retrying next round: {e}");
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            shared.newcomers.prune();
        }
        if counted.is_none_or(|t| t.elapsed() >= gauge_every) {
            counted = Some(tokio::time::Instant::now());
            if let Err(e) = update_gauge(&shared, now()).await {
                tracing::warn!("cannot count boxes for the gauge: {e}");
            }
        }
    }
}

async fn round(shared: &Shared) -> Result<(), dandelion_core::store::StoreError> {
    let now = now();
    let c = &shared.config;
    shared.book.pop_ended_bans(now, POP_BATCH).await?;
    // Boxes silent for more than the stale time are those whose expiry falls
    // before now + (expiry - stale time); all of them went silent within one
    // expiry period, or they would have been expired already.
    let stale_after = c.heartbeat_interval.as_secs_f64() * f64::from(MISSED_HEARTBEATS_FOR_STALE);
    let by = now + (c.expire_box_time.as_secs_f64() - stale_after).max(0.0);
    let (total, silent) = shared.book.count_expiring(by).await?;
    let reason = registry::self_preservation(
        total,
        silent,
        c.self_preservation_threshold,
        c.self_preservation_min_boxes,
    );
    let before = shared.set_preservation(reason.clone());
    shared
        .metrics
        .self_preservation
        .set(i64::from(reason.is_some()));
    let console = &shared.common.console;
    match (&before, &reason) {
        (None, Some(r)) => {
            tracing::error!("SELF-PRESERVATION ON: {r}");
            console.event(Level::Error, format!("self-preservation on: {r}"));
        }
        (Some(_), None) => {
            tracing::warn!("self-preservation off: heartbeats recovered; expiring again");
            console.event(
                Level::Warn,
                "self-preservation off: heartbeats recovered; expiring again",
            );
        }
        _ => {}
    }
    if reason.is_none() {
        loop {
            let expired = shared.book.pop_expired(now, POP_BATCH).await?;
            for id in &expired {
                tracing::info!(box_id = %id, "box expired after {}s of silence", c.expire_box_time.as_secs());
                let why = format!("expired after {}s of silence", c.expire_box_time.as_secs());
                super::console::gone(shared, id, Level::Warn, &why);
                shared.watchers.tell(id, super::watch::GONE, why);
            }
            shared.metrics.expired.inc_by(expired.len() as u64);
            if expired.len() < POP_BATCH {
                break;
            }
        }
    }
    Ok(())
}

async fn update_gauge(shared: &Shared, now: f64) -> Result<(), dandelion_core::store::StoreError> {
    let tallies = shared.book.tallies().await?;
    let state = |s: &Tally| s.effective(now, shared.config.heartbeat_interval);
    let all = registry::count_states(tallies.iter().map(state));
    let legacy = registry::count_states(tallies.iter().filter(|s| s.legacy).map(state));
    for (gauge, counts) in [
        (&shared.metrics.boxes, all),
        (&shared.metrics.legacy_boxes, legacy),
    ] {
        for (state, n) in counts {
            gauge
                .get_or_create(&super::StateLabel {
                    state: state.to_owned(),
                })
                .set(n);
        }
    }
    Ok(())
}
