//! Small files the publisher serves itself, kept in memory, so the front path
//! ([`super::front`]) can answer without a store read or hyper: playlists,
//! which a live stream's viewers ask for every segment, and a new segment's
//! fallback before a box holds it. A body is kept by name with the SHA-256 of
//! the job it belongs to, and served only while the job still has that hash: a
//! file pushed again is read from the store once (by hyper) and kept anew.
//! Bounded: files kept in the store only, each up to [`MAX_BODY`], at most
//! [`MAX_ENTRIES`] of them.

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;

/// Larger files are served by hyper every time.
pub const MAX_BODY: usize = 64 << 10;

/// Past this many, the cache starts again empty (old streams' files would
/// otherwise stay forever).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
pub struct OriginCache {
    bodies: RwLock<HashMap<String, (String, Bytes)>>,
}

impl OriginCache {
    /// The body of `name` if it is the one whose SHA-256 is `sha256`.
    pub fn get(&self, name: &str, sha256: &str) -> Option<Bytes> {
        let bodies = self
            .bodies
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (hash, body) = bodies.get(name)?;
        (hash == sha256).then(|| body.clone())
    }

    /// Keeps `body` as `name`'s, with the hash of the job it was read for.
    pub fn put(&self, name: &str, sha256: &str, body: Bytes) {
        if body.len() > MAX_BODY {
            return;
        }
        let mut bodies = self
            .bodies
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bodies.len() >= MAX_ENTRIES && !bodies.contains_key(name) {
            bodies.clear();
        }
        bodies.insert(name.to_owned(), (sha256.to_owned(), body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_served_only_for_the_hash_it_was_read_for() {
        let p = OriginCache::default();
        p.put("live/index.m3u8", "aa", Bytes::from_static(b"#EXTM3U\n"));
        assert_eq!(
            p.get("live/index.m3u8", "aa").as_deref(),
            Some(&b"#EXTM3U\n"[..])
        );
        assert_eq!(p.get("live/index.m3u8", "bb"), None, "pushed again since");
        assert_eq!(p.get("other.m3u8", "aa"), None);
        p.put("big.m3u8", "cc", Bytes::from(vec![b'#'; MAX_BODY + 1]));
        assert_eq!(p.get("big.m3u8", "cc"), None, "too big to keep");
    }
}
