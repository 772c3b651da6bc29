//! Steered playlists as written (pathway playlists, and the multivariant
//! playlist steering players open), kept for the next viewer who asks.
//!
//! Every steered viewer of a live stream asks for its pathway playlist once
//! a segment, and all of a stream's viewers on one box get the same text
//! until the playlist, a placement of one of its segments, or the clock (a
//! placement's expiry) changes it. Writing it costs a lookup, a resolve and a
//! URL per segment (docs/performance.md, "Content steering's answers"), so
//! the text is kept with what it was made from: the playlist's and each
//! segment's record. Records are immutable and replaced whole on every write
//! ([`super::jobs::Records`]), so a kept text is still true exactly when every
//! record it was made from is still the one in memory (`Arc::ptr_eq`) and no
//! placement it used has expired. Nothing has to remember to invalidate it.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use dandelion_core::ids::NodeId;

use super::jobs::{Known, Records};

/// Most kept texts: a few per (stream, box, origin) a viewer asked for. When
/// full, the map is emptied rather than aged: the hot ones come back at once.
const MAX_KEPT: usize = 4096;

/// Which text it is: the playlist, the box whose pathway it is (none: the
/// multivariant playlist), and how the viewer reaches the publisher (the text
/// names that origin).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Which<'a> {
    pub playlist: &'a str,
    pub box_id: Option<&'a NodeId>,
    pub base: &'a str,
    pub tls: bool,
}

impl Which<'_> {
    fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        Hash::hash(self, &mut h);
        h.finish()
    }
}

/// A steered playlist as written, and what it was written from.
#[derive(Debug)]
pub struct Written {
    pub body: Arc<str>,
    /// Whether it sends the viewer to the box for at least one segment.
    pub to_box: bool,
    playlist: String,
    box_id: Option<NodeId>,
    base: String,
    tls: bool,
    /// The playlist's record its text came from.
    from: Arc<Known>,
    /// Each segment name it resolved and the record it read (none: unknown).
    segments: Vec<(String, Option<Arc<Known>>)>,
    /// The earliest expiry (Unix seconds) of a placement it sends viewers to.
    until: u64,
}

/// What [`PathwayCache::put`] keeps about one written text.
#[derive(Debug)]
pub struct Sources {
    pub from: Arc<Known>,
    pub segments: Vec<(String, Option<Arc<Known>>)>,
    pub until: u64,
}

#[derive(Debug, Default)]
pub struct PathwayCache {
    kept: Mutex<HashMap<u64, Arc<Written>>>,
}

impl PathwayCache {
    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Written>>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The kept text of `which`, if every record it was made from is still
    /// the one `records` holds and it sends no viewer to an expired copy.
    pub fn get(&self, which: &Which<'_>, records: &Records, now: u64) -> Option<Arc<Written>> {
        let w = self.kept().get(&which.hash()).cloned()?;
        let same_pathway = w.playlist == which.playlist
            && w.box_id.as_ref() == which.box_id
            && w.base == which.base
            && w.tls == which.tls;
        let current = |name: &str, was: Option<&Arc<Known>>| match (records.known(name), was) {
            (Some(now), Some(was)) => Arc::ptr_eq(&now, was),
            (None, None) => true,
            _ => false,
        };
        let fresh = same_pathway
            && now < w.until
            && current(&w.playlist, Some(&w.from))
            && w.segments
                .iter()
                .all(|(name, was)| current(name, was.as_ref()));
        fresh.then_some(w)
    }

    /// Keeps `body`, the text of `which` written from `sources`.
    pub fn put(&self, which: &Which<'_>, body: Arc<str>, to_box: bool, sources: Sources) {
        let written = Arc::new(Written {
            body,
            to_box,
            playlist: which.playlist.to_owned(),
            box_id: which.box_id.cloned(),
            base: which.base.to_owned(),
            tls: which.tls,
            from: sources.from,
            segments: sources.segments,
            until: sources.until,
        });
        let mut kept = self.kept();
        if kept.len() >= MAX_KEPT {
            kept.clear();
        }
        kept.insert(which.hash(), written);
    }
}
