//! A bounded in-memory cache of hot small files: the serving fast path.
//!
//! Live-stream segments are small, short-lived and fetched by many viewers
//! within seconds, and most of those fetches are plain `GET`s. Serving them from
//! memory skips the open/stat/read round trips through tokio's blocking pool
//! that dominate `ServeFile`'s cost for small files. Anything with `Range` or a
//! conditional header still goes to `ServeFile`, so the HTTP semantics stay
//! tower-http's; the cached response carries the same `ETag` and `Last-Modified`
//! that `ServeFile` computes from the file's metadata, so both paths agree.
//!
//! Entries are keyed by member and tagged with the storage's file version: a
//! replaced file never matches its old entry. Total bytes are bounded; the
//! oldest insertions go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;

/// Largest file kept in memory: HLS/DASH segments are 100 KiB – 2 MiB.
pub const MAX_CACHED_FILE: u64 = 2 * 1024 * 1024;
/// Memory the cache may use in total: a few dozen segments, a small share of a
/// Raspberry Pi's memory.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// One cached file with the validators `ServeFile` would send.
#[derive(Debug, Clone)]
pub struct Cached {
    pub version: u64,
    pub body: Bytes,
    pub etag: String,
    pub last_modified: String,
}

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<String, Cached>,
    order: VecDeque<String>,
    bytes: u64,
}

#[derive(Debug, Default)]
pub struct Cache {
    // A std Mutex: a map lookup or insert, never held across an await.
    inner: Mutex<Inner>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached file if it is of `version`.
    pub fn get(&self, member: &str, version: u64) -> Option<Cached> {
        self.lock()
            .files
            .get(member)
            .filter(|c| c.version == version)
            .cloned()
    }

    pub fn insert(&self, member: &str, cached: Cached) {
        let size = u64::try_from(cached.body.len()).unwrap_or(u64::MAX);
        if size > MAX_CACHED_FILE {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.files.remove(member) {
            inner.bytes = inner.bytes.saturating_sub(len(&old.body));
            inner.order.retain(|m| m != member);
        }
        while inner.bytes + size > CACHE_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.files.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(len(&old.body));
            }
        }
        inner.bytes += size;
        inner.order.push_back(member.to_owned());
        inner.files.insert(member.to_owned(), cached);
    }

    /// Reads a file into a cache entry, with `ServeFile`'s validators. One trip
    /// to the blocking pool, and contents and metadata from the same open file.
    pub async fn load(path: std::path::PathBuf, version: u64) -> std::io::Result<Cached> {
        dandelion_core::fsio::blocking(move || {
            use std::io::Read;
            let mut file = std::fs::File::open(&path)?;
            let meta = file.metadata()?;
            let mut body = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.read_to_end(&mut body)?;
            let (etag, last_modified) = validators(&meta)?;
            Ok(Cached {
                version,
                etag,
                last_modified,
                body: Bytes::from(body),
            })
        })
        .await
    }
}

/// The `ETag` and `Last-Modified` that tower-http's `ServeFile` sends for a
/// file with this metadata: every path that answers for a file agrees on them.
pub fn validators(meta: &std::fs::Metadata) -> std::io::Result<(String, String)> {
    let modified = meta.modified()?;
    let since = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let etag = format!(
        "\"{:x}.{:08x}-{:x}\"",
        since.as_secs(),
        since.subsec_nanos(),
        meta.len()
    );
    Ok((etag, httpdate::fmt_http_date(modified)))
}

fn len(body: &Bytes) -> u64 {
    u64::try_from(body.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, size: usize) -> Cached {
        Cached {
            version,
            body: Bytes::from(vec![0u8; size]),
            etag: String::new(),
            last_modified: String::new(),
        }
    }

    #[test]
    fn stale_versions_miss_and_memory_stays_bounded() {
        let cache = Cache::default();
        cache.insert("p/a", entry(1, 10));
        assert!(cache.get("p/a", 1).is_some());
        assert!(cache.get("p/a", 2).is_none());
        let big = usize::try_from(MAX_CACHED_FILE).unwrap();
        for i in 0..40 {
            cache.insert(&format!("p/{i}"), entry(1, big));
        }
        assert!(cache.lock().bytes <= CACHE_BYTES);
        assert!(cache.get("p/39", 1).is_some());
        assert!(cache.get("p/0", 1).is_none(), "the oldest went first");
        cache.insert("p/huge", entry(1, big + 1));
        assert!(cache.get("p/huge", 1).is_none());
    }
}
