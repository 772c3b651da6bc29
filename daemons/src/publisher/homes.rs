//! Where each stream lives: the boxes its newest segment went to. A stream's
//! next segment goes to the same boxes while they can take it
//! ([`super::ranking::choose_keeping`]), so each of them holds the whole
//! stream — the window a live playlist lists — and can be a content-steering
//! pathway of its own ([`super::steering`]) that a player fetches from without
//! a redirect per segment. At any moment a live stream's viewers want the same
//! few segments, so keeping a stream on two boxes loads no box more than
//! spreading its segments would.
//!
//! In memory only: after a restart the first segment of each stream sets its
//! home again.

use std::collections::HashMap;

use dandelion_core::ids::NodeId;
use dandelion_core::paths::stream_of;

use super::api::is_playlist;

/// Most streams remembered; past it an arbitrary one is forgotten (it finds a
/// home again with its next segment).
const MAX_STREAMS: usize = 4096;

#[derive(Debug, Default)]
pub struct Homes {
    by_stream: HashMap<String, Vec<NodeId>>,
}

/// The stream a file's placement follows: segments in a directory. Playlists
/// are answered by the publisher and files outside a directory belong to no
/// stream.
fn stream_key(name: &str) -> Option<&str> {
    Some(stream_of(name)).filter(|s| !s.is_empty() && !is_playlist(name))
}

impl Homes {
    /// The boxes `name` should go to first, best kept first.
    pub fn of(&self, name: &str) -> Vec<NodeId> {
        stream_key(name)
            .and_then(|s| self.by_stream.get(s))
            .cloned()
            .unwrap_or_default()
    }

    /// A new file (none of its copies there before) was placed on `boxes`:
    /// its stream lives there now.
    pub fn placed(&mut self, name: &str, boxes: Vec<NodeId>) {
        let Some(stream) = stream_key(name) else {
            return;
        };
        if boxes.is_empty() {
            return;
        }
        if self.by_stream.len() >= MAX_STREAMS
            && !self.by_stream.contains_key(stream)
            && let Some(any) = self.by_stream.keys().next().cloned()
        {
            self.by_stream.remove(&any);
        }
        self.by_stream.insert(stream.to_owned(), boxes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("box-{n:032x}")).unwrap()
    }

    #[test]
    fn a_stream_s_segments_follow_its_newest_one_and_playlists_follow_nothing() {
        let mut homes = Homes::default();
        assert!(homes.of("live/seg1.ts").is_empty());
        homes.placed("live/seg1.ts", vec![id(1), id(2)]);
        assert_eq!(homes.of("live/seg2.ts"), [id(1), id(2)]);
        assert!(homes.of("other/seg2.ts").is_empty());
        homes.placed("live/seg2.ts", vec![id(3), id(2)]);
        assert_eq!(homes.of("live/seg3.ts"), [id(3), id(2)]);
        homes.placed("live/index.m3u8", vec![id(4)]);
        assert!(homes.of("live/index.m3u8").is_empty());
        homes.placed("loose.mp4", vec![id(4)]);
        assert!(homes.of("loose.mp4").is_empty());
    }

    #[test]
    fn the_map_stays_bounded() {
        let mut homes = Homes::default();
        for n in 0..(MAX_STREAMS + 10) {
            homes.placed(&format!("s{n}/seg.ts"), vec![id(1)]);
        }
        assert_eq!(homes.by_stream.len(), MAX_STREAMS);
        assert_eq!(homes.of(&format!("s{}/x.ts", MAX_STREAMS + 9)), [id(1)]);
    }
}
