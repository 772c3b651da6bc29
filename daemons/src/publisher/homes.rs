//! Where each stream lives: the boxes its newest segment went to. While
//! players are steered through a stream ([`super::steering`]: someone asked
//! for its steering manifest in the last [`STEERED_FOR`] seconds), its next
//! segment goes to the same boxes while they can take it
//! ([`super::ranking::choose_keeping`]), so each of them holds the whole
//! stream — the window a live playlist lists — and can be a pathway of its
//! own that a player fetches from without a redirect per segment. At any
//! moment a live stream's viewers want the same few segments, so keeping it
//! on two boxes loads no box more than spreading its segments would; what it
//! costs is exploration: a box that joins later gets no segment of a stream
//! already steered, which is why streams nobody steers are spread as before.
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
/// How long after its last steering manifest a stream keeps its home.
pub const STEERED_FOR: u64 = 60;

#[derive(Debug, Default)]
pub struct Homes {
    by_stream: HashMap<String, Vec<NodeId>>,
    /// When each stream's steering manifest was last asked for.
    steered: HashMap<String, u64>,
}

/// Inserts into a map bounded at [`MAX_STREAMS`], forgetting an arbitrary
/// other entry when full.
fn bounded_insert<V>(map: &mut HashMap<String, V>, key: &str, value: V) {
    if map.len() >= MAX_STREAMS
        && !map.contains_key(key)
        && let Some(any) = map.keys().next().cloned()
    {
        map.remove(&any);
    }
    map.insert(key.to_owned(), value);
}

/// The stream a file's placement follows: segments in a directory. Playlists
/// are answered by the publisher and files outside a directory belong to no
/// stream.
fn stream_key(name: &str) -> Option<&str> {
    Some(stream_of(name)).filter(|s| !s.is_empty() && !is_playlist(name))
}

impl Homes {
    /// The boxes `name` should go to first, best kept first: its stream's
    /// home while the stream is steered, none otherwise.
    pub fn of(&self, name: &str, now: u64) -> Vec<NodeId> {
        stream_key(name)
            .filter(|s| {
                self.steered
                    .get(*s)
                    .is_some_and(|at| now.saturating_sub(*at) <= STEERED_FOR)
            })
            .and_then(|s| self.by_stream.get(s))
            .cloned()
            .unwrap_or_default()
    }

    /// A player asked for the steering manifest of `playlist` at `now`.
    pub fn steered(&mut self, playlist: &str, now: u64) {
        bounded_insert(&mut self.steered, stream_of(playlist), now);
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
        bounded_insert(&mut self.by_stream, stream, boxes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("box-{n:032x}")).unwrap()
    }

    #[test]
    fn a_steered_stream_s_segments_follow_its_newest_one_and_playlists_follow_nothing() {
        let mut homes = Homes::default();
        homes.steered("live/index.m3u8", 100);
        homes.steered("loose.m3u8", 100);
        assert!(homes.of("live/seg1.ts", 100).is_empty());
        homes.placed("live/seg1.ts", vec![id(1), id(2)]);
        assert_eq!(homes.of("live/seg2.ts", 100), [id(1), id(2)]);
        assert!(homes.of("other/seg2.ts", 100).is_empty());
        homes.placed("live/seg2.ts", vec![id(3), id(2)]);
        assert_eq!(homes.of("live/seg3.ts", 100), [id(3), id(2)]);
        homes.placed("live/index.m3u8", vec![id(4)]);
        assert!(homes.of("live/index.m3u8", 100).is_empty());
        homes.placed("loose.mp4", vec![id(4)]);
        assert!(homes.of("loose.mp4", 100).is_empty());
    }

    #[test]
    fn a_stream_nobody_steers_is_spread_as_before() {
        let mut homes = Homes::default();
        homes.placed("vod/seg1.ts", vec![id(1)]);
        assert!(homes.of("vod/seg2.ts", 100).is_empty());
        homes.steered("vod/index.m3u8", 100);
        assert_eq!(homes.of("vod/seg2.ts", 100 + STEERED_FOR), [id(1)]);
        assert!(homes.of("vod/seg2.ts", 101 + STEERED_FOR).is_empty());
    }

    #[test]
    fn the_maps_stay_bounded() {
        let mut homes = Homes::default();
        for n in 0..(MAX_STREAMS + 10) {
            homes.placed(&format!("s{n}/seg.ts"), vec![id(1)]);
            homes.steered(&format!("s{n}/index.m3u8"), 5);
        }
        assert_eq!(homes.by_stream.len(), MAX_STREAMS);
        assert_eq!(homes.steered.len(), MAX_STREAMS);
        assert_eq!(homes.of(&format!("s{}/x.ts", MAX_STREAMS + 9), 5), [id(1)]);
    }
}
