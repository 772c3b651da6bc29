//! The publish sessions the publisher keeps open: one per box at most, opened
//! ahead of time to the best-ranked boxes so the first file for a box does not
//! wait for a handshake, replaced when a box goes away, closed when a box drops
//! out of the best few.
//!
//! The decision — which sessions to open and which to close, given the ranking
//! and the sessions there are — is [`plan`], a plain function. Around it,
//! [`keep`] runs it after every search round (and at once when a session is lost)
//! and opens sessions in tasks of their own, so neither the search loop nor a
//! sender ever waits for a box it is not talking to. Senders get their session
//! from [`link`], which opens one on first use if the keeper has not.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};

use dandelion_core::console::Level;
use dandelion_core::ids::NodeId;
use tokio::sync::Notify;

use super::link::{self, Link};
use super::ranking::{Ranked, rank};
use super::{Publisher, now_secs};

/// A session to a box outside the best few is closed only after it was idle this
/// long, so a box that the ranking's random draw still sends files to now and
/// then keeps its session instead of paying a handshake for each file.
pub const IDLE_CLOSE_SECS: u64 = 30;

/// A box with an open session counts this much better when the best few are
/// chosen, so two boxes of nearly equal score do not trade places (and
/// sessions) every search round.
const STICKINESS: f64 = 0.1;

/// One box's slot. An async mutex per box: it is held while that box's session
/// opens, so two senders never open two sessions to one box, while sessions to
/// different boxes open side by side.
type Slot = tokio::sync::Mutex<Option<Link>>;

/// The publisher's publish sessions.
#[derive(Debug, Default)]
pub struct Pool {
    // A std mutex: held only to find, add or remove a slot, never across an
    // await, so it never serialises opens.
    slots: std::sync::Mutex<HashMap<NodeId, Arc<Slot>>>,
    /// Woken when a session ends by itself or an open fails, so the keeper
    /// replaces it without waiting for the next search round.
    changed: Notify,
}

/// What the pool knows about one box's session, for [`plan`] and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Being opened (or looked at by a sender this instant).
    Opening,
    Open {
        opened_at: u64,
        in_flight: usize,
        /// Seconds since the last transfer ended (or the session opened).
        idle_secs: u64,
    },
    /// The session ended (the box went away or closed it).
    Ended,
}

impl SessionState {
    fn is_up(self) -> bool {
        matches!(self, SessionState::Opening | SessionState::Open { .. })
    }
}

impl Pool {
    fn slot(&self, box_id: &NodeId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(box_id.clone()).or_default().clone()
    }

    /// Whether `slot` is still the box's slot: the keeper may have closed it
    /// between a sender finding it and locking it.
    fn is_current(&self, box_id: &NodeId, slot: &Arc<Slot>) -> bool {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(box_id).is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Every box's session, sorted by box.
    pub fn sessions(&self, now: u64) -> Vec<(NodeId, SessionState)> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<(NodeId, SessionState)> = slots
            .iter()
            .map(|(id, slot)| {
                let state = match slot.try_lock() {
                    Err(_) => SessionState::Opening,
                    Ok(held) => match held.as_ref() {
                        Some(l) if !l.is_closed() => SessionState::Open {
                            opened_at: l.opened_at(),
                            in_flight: l.in_flight(),
                            idle_secs: now.saturating_sub(l.last_used()),
                        },
                        _ => SessionState::Ended,
                    },
                };
                (id.clone(), state)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Closes the box's session unless a transfer is using it or it is being
    /// opened; returns whether the box has no session now. The link task ends
    /// when the last clone of the link is dropped, closing the WebSocket cleanly.
    fn close(&self, box_id: &NodeId) -> bool {
        let removed = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(slot) = slots.get(box_id).cloned() else {
                return true;
            };
            // Removing the slot while holding its lock is what lets `link`
            // notice, under that same lock, that its slot is gone.
            let Ok(mut held) = slot.try_lock() else {
                return false;
            };
            if held.as_ref().is_some_and(|l| l.in_flight() > 0) {
                return false;
            }
            slots.remove(box_id);
            held.take()
        };
        drop(removed);
        true
    }
}

/// The sessions to open and to close.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Best first.
    pub open: Vec<NodeId>,
    pub close: Vec<NodeId>,
}

/// Keeps sessions to the `keep` best of `ranked` (best first, eligible boxes
/// only). A box that left the best few is closed once idle for
/// [`IDLE_CLOSE_SECS`]; one that is no longer ranked at all (gone, stale,
/// failing) as soon as no transfer uses it; a session being opened is left alone.
pub fn plan(ranked: &[Ranked], keep: usize, sessions: &[(NodeId, SessionState)]) -> Plan {
    let up: HashSet<&NodeId> = sessions
        .iter()
        .filter(|(_, s)| s.is_up())
        .map(|(id, _)| id)
        .collect();
    let mut order: Vec<(f64, &NodeId)> = ranked
        .iter()
        .map(|r| {
            let bonus = if up.contains(&r.id) {
                1.0 + STICKINESS
            } else {
                1.0
            };
            (r.score * bonus, &r.id)
        })
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let wanted: Vec<&NodeId> = order.iter().take(keep).map(|(_, id)| *id).collect();
    let ranked_ids: HashSet<&NodeId> = ranked.iter().map(|r| &r.id).collect();
    let open = wanted
        .iter()
        .filter(|id| !up.contains(*id))
        .map(|id| (*id).clone())
        .collect();
    let close = sessions
        .iter()
        .filter(|(id, _)| !wanted.contains(&id))
        .filter(|(id, state)| match *state {
            SessionState::Ended => true,
            SessionState::Opening => false,
            SessionState::Open {
                in_flight,
                idle_secs,
                ..
            } => in_flight == 0 && (!ranked_ids.contains(id) || idle_secs >= IDLE_CLOSE_SECS),
        })
        .map(|(id, _)| id.clone())
        .collect();
    Plan { open, close }
}

impl Pool {
    /// The box's open session, or the one `open` opens. Only this box's slot is
    /// locked while it opens: a second caller for the same box waits for that
    /// session instead of opening another, callers for other boxes do not wait.
    pub async fn get_or_open<F, Fut>(&self, box_id: &NodeId, open: F) -> Result<Link, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Link, String>>,
    {
        loop {
            let slot = self.slot(box_id);
            let mut held = slot.lock().await;
            if !self.is_current(box_id, &slot) {
                continue;
            }
            if let Some(link) = held.as_ref().filter(|l| !l.is_closed()) {
                return Ok(link.clone());
            }
            let link = open().await?;
            *held = Some(link.clone());
            return Ok(link);
        }
    }
}

/// The open publish session to a box, opening one if needed.
pub async fn link(p: &Publisher, box_id: &NodeId) -> Result<Link, String> {
    p.links.get_or_open(box_id, || open(p, box_id)).await
}

async fn open(p: &Publisher, box_id: &NodeId) -> Result<Link, String> {
    let url = {
        let dir = p.directory.read().await;
        dir.get(box_id)
            .and_then(|b| b.exchange.connect_ws.clone())
            .ok_or_else(|| format!("box {box_id} advertises no CONNECT_WS"))?
    };
    let stop = p.common.shutdown.token();
    let stall = p.config.upload_stall_timeout;
    let (link, task) = link::open(box_id.clone(), &url, &p.common.identity, stall, stop)
        .await
        .map_err(|e| {
            if let link::OpenError::Unproven(reason) = &e {
                p.common.metrics.refuse("box_unproven");
                p.common
                    .console
                    .event(Level::Warn, format!("not publishing to {box_id}: {reason}"));
            }
            format!("cannot open a publish session to {url}: {e}")
        })?;
    tracing::info!(box_id = %box_id, "publish session open");
    let directory = p.directory.clone();
    let pool = p.links.clone();
    let id = box_id.clone();
    p.common.shutdown.spawn(async move {
        if task.await == link::Ended::Lost {
            // Cooled off like a failed transfer: no new files, and viewers
            // are sent to other copies while the sweep re-places its files.
            tracing::info!(box_id = %id, "lost the publish session to a box; passing it over");
            directory.write().await.record_failure(&id, now_secs());
            pool.changed.notify_one();
        }
    });
    Ok(link)
}

/// Runs until shutdown: after every search round, when a session is lost, and
/// at least every search interval, brings the sessions in line with [`plan`].
pub async fn keep(p: Arc<Publisher>) {
    loop {
        tokio::select! {
            () = p.common.shutdown.cancelled() => return,
            () = p.searched.notified() => {}
            () = p.links.changed.notified() => {}
            () = tokio::time::sleep(p.config.search_interval) => {}
        }
        reconcile(&p).await;
    }
}

async fn reconcile(p: &Arc<Publisher>) {
    let now = now_secs();
    let ranked = {
        let dir = p.directory.read().await;
        rank(&dir.candidates(p.audience, now), &p.weights)
    };
    let plan = plan(&ranked, p.config.keep_sessions, &p.links.sessions(now));
    for id in &plan.close {
        if p.links.close(id) {
            tracing::debug!(box_id = %id, "publish session dropped: the box left the best few or went away");
        }
    }
    for id in plan.open {
        let p = p.clone();
        p.common.shutdown.clone().spawn(async move {
            let opened = tokio::select! {
                () = p.common.shutdown.cancelled() => return,
                opened = link(&p, &id) => opened,
            };
            if let Err(e) = opened {
                // Passed over like a failed transfer, so the next round opens
                // a session to the next box instead.
                tracing::warn!(box_id = %id, "{e}; passing the box over");
                p.directory.write().await.record_failure(&id, now_secs());
                p.links.changed.notify_one();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::ranking::Factors;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("box-{n:032x}")).unwrap()
    }

    fn ranked(scores: &[(u8, f64)]) -> Vec<Ranked> {
        let f = Factors {
            nearness: 0.5,
            spare_upload: 0.5,
            storage: 0.5,
            reliability: 0.5,
            throughput: 0.5,
        };
        scores
            .iter()
            .map(|&(n, score)| Ranked {
                id: id(n),
                score,
                factors: f,
                probation: false,
            })
            .collect()
    }

    fn open(in_flight: usize, idle_secs: u64) -> SessionState {
        SessionState::Open {
            opened_at: 0,
            in_flight,
            idle_secs,
        }
    }

    /// Opens a stand-in session after `opening` resolves, counting opens.
    async fn slow_open(
        box_id: NodeId,
        opens: &std::sync::atomic::AtomicUsize,
        opening: &tokio::sync::Barrier,
    ) -> Result<Link, String> {
        opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        opening.wait().await;
        Ok(Link::detached(box_id))
    }

    #[tokio::test]
    async fn one_session_per_box_and_opens_to_different_boxes_overlap() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Pool::default();
        let opens = AtomicUsize::new(0);
        // Both opens must be under way at once to pass the barrier: an open to
        // one box never waits for an open to another.
        let both = tokio::sync::Barrier::new(2);
        let (one, two, three) = (id(1), id(2), id(3));
        let overlapping = async {
            tokio::join!(
                pool.get_or_open(&one, || slow_open(id(1), &opens, &both)),
                pool.get_or_open(&two, || slow_open(id(2), &opens, &both)),
            )
        };
        let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(10), overlapping)
            .await
            .expect("an open to one box waited for an open to another");
        assert_eq!((a.unwrap().box_id, b.unwrap().box_id), (id(1), id(2)));
        // Three callers for one box: one opens, the others get its session.
        let alone = tokio::sync::Barrier::new(1);
        let opens = AtomicUsize::new(0);
        let (x, y, z) = tokio::join!(
            pool.get_or_open(&three, || slow_open(id(3), &opens, &alone)),
            pool.get_or_open(&three, || slow_open(id(3), &opens, &alone)),
            pool.get_or_open(&three, || slow_open(id(3), &opens, &alone)),
        );
        assert!(x.is_ok() && y.is_ok() && z.is_ok());
        assert_eq!(opens.load(Ordering::SeqCst), 1);
        let states: Vec<NodeId> = pool.sessions(0).into_iter().map(|(id, _)| id).collect();
        assert_eq!(states, [id(1), id(2), id(3)]);
        assert!(pool.close(&id(3)));
        assert_eq!(pool.sessions(0).len(), 2);
    }

    #[test]
    fn opens_sessions_to_the_best_few_and_nothing_more() {
        let r = ranked(&[(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]);
        let p = plan(&r, 2, &[]);
        assert_eq!(p.open, [id(1), id(2)]);
        assert!(p.close.is_empty());
        let p = plan(
            &r,
            2,
            &[(id(1), open(0, 0)), (id(2), SessionState::Opening)],
        );
        assert_eq!(p, Plan::default(), "already open or opening");
        assert_eq!(plan(&r, 0, &[]), Plan::default());
    }

    #[test]
    fn a_lost_session_is_replaced_and_one_to_a_box_gone_is_closed() {
        // Box 1's session ended and the box is no longer ranked (cooled off).
        let r = ranked(&[(2, 0.8), (3, 0.7), (4, 0.6)]);
        let sessions = [(id(1), SessionState::Ended), (id(2), open(0, 0))];
        let p = plan(&r, 2, &sessions);
        assert_eq!(p.open, [id(3)]);
        assert_eq!(p.close, [id(1)]);
        // A ranked box whose session ended is opened again.
        let r = ranked(&[(1, 0.9), (2, 0.8)]);
        let p = plan(&r, 2, &[(id(1), SessionState::Ended), (id(2), open(0, 0))]);
        assert_eq!(p.open, [id(1)]);
        assert!(p.close.is_empty());
    }

    #[test]
    fn sessions_in_use_or_recently_used_are_kept_outside_the_best_few() {
        let r = ranked(&[(1, 0.9), (2, 0.8), (3, 0.7)]);
        let sessions = [
            (id(1), open(0, 0)),
            (id(3), open(1, 100)),                 // a transfer is running
            (id(4), open(1, 0)),                   // gone, but a transfer is running
            (id(5), open(0, IDLE_CLOSE_SECS - 1)), // gone and idle: closed at once
            (id(6), SessionState::Opening),        // a sender opens it: left alone
        ];
        let p = plan(&r, 1, &sessions);
        assert!(p.open.is_empty());
        assert_eq!(p.close, [id(5)]);
        let sessions = [(id(1), open(0, 0)), (id(2), open(0, IDLE_CLOSE_SECS - 1))];
        assert!(plan(&r, 1, &sessions).close.is_empty(), "recently used");
        let sessions = [(id(1), open(0, 0)), (id(2), open(0, IDLE_CLOSE_SECS))];
        assert_eq!(plan(&r, 1, &sessions).close, [id(2)]);
    }

    #[test]
    fn an_open_session_keeps_its_place_against_a_box_barely_better() {
        let r = ranked(&[(1, 0.82), (2, 0.80)]);
        let p = plan(&r, 1, &[(id(2), open(0, IDLE_CLOSE_SECS))]);
        assert_eq!(p, Plan::default(), "0.80 × 1.1 beats 0.82");
        let r = ranked(&[(1, 0.95), (2, 0.80)]);
        let p = plan(&r, 1, &[(id(2), open(0, IDLE_CLOSE_SECS))]);
        assert_eq!(p.open, [id(1)]);
        assert_eq!(p.close, [id(2)]);
    }
}
