//! Box state changes pushed to watching publishers (`SEARCH` with `WATCH`), so
//! that a box whose session drops, which says goodbye, expires, fails its
//! reachability check or is evicted leaves viewers' redirects within a second
//! rather than at the publisher's next search.
//!
//! Fire and forget by design: a publisher that misses one (a reconnect, or
//! lagging behind the channel) loses nothing it cannot get back, because every
//! `SEARCH` answer carries the whole list and its own serve probes check each
//! box it sends viewers to. The publisher treats a change as a hint either way
//! (see `publisher::search`).

use dandelion_core::ids::NodeId;
use dandelion_core::protocol::{BoxState, Header, Message};
use tokio::sync::broadcast;

/// Changes kept for a slow watcher before it counts as lagging (and its session
/// is closed, to resync with a fresh `SEARCH`).
const BACKLOG: usize = 1024;

/// One box's change, as the entrance saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub box_id: String,
    pub state: &'static str,
    pub reason: String,
}

impl Change {
    /// The message a watcher receives, sent as the entrance `own`; `None` for a
    /// box ID that is not one (the registry holds only valid IDs, so never in
    /// practice).
    pub fn message(&self, own: &NodeId) -> Option<Message> {
        Some(Message::BoxState(BoxState {
            header: Header::new(own.clone()),
            box_id: self.box_id.parse().ok()?,
            state: self.state.to_owned(),
            reason: (!self.reason.is_empty()).then(|| self.reason.clone()),
        }))
    }
}

/// The states a change can announce.
pub const ACTIVE: &str = "active";
pub const DISCONNECTED: &str = "disconnected";
pub const GONE: &str = "gone";
pub const UNREACHABLE: &str = "unreachable";
pub const EVICTED: &str = "evicted";

/// The entrance's side: one channel every watching session subscribes to.
#[derive(Debug)]
pub struct Watchers(broadcast::Sender<Change>);

impl Default for Watchers {
    fn default() -> Self {
        Watchers(broadcast::channel(BACKLOG).0)
    }
}

impl Watchers {
    /// Tells every watching publisher; nobody watching is not an error.
    pub fn tell(&self, box_id: &str, state: &'static str, reason: impl Into<String>) {
        if self.0.receiver_count() == 0 {
            return;
        }
        let _ = self.0.send(Change {
            box_id: box_id.to_owned(),
            state,
            reason: reason.into(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reaches_every_watcher_and_nobody_watching_is_fine() {
        let w = Watchers::default();
        w.tell("box-1", GONE, "nobody hears this");
        let mut a = w.subscribe();
        let mut b = w.subscribe();
        let id = format!("box-{:032x}", 5);
        w.tell(&id, DISCONNECTED, "");
        for rx in [&mut a, &mut b] {
            let change = rx.try_recv().unwrap();
            assert_eq!(change.state, DISCONNECTED);
            let own = NodeId::parse(&format!("entrance-{:032x}", 1)).unwrap();
            let Some(Message::BoxState(m)) = change.message(&own) else {
                panic!("a BOX_STATE");
            };
            assert_eq!(m.box_id.as_str(), id);
            assert_eq!(m.reason, None);
            assert!(
                rx.try_recv().is_err(),
                "the one before subscribing is not kept"
            );
        }
    }
}
