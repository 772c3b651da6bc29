//! The box's plain decisions, kept apart from sockets and files so each is tested
//! as a function: how long a file is kept, whether it fits the quotas, and the
//! headers it is served with.

use std::time::Duration;

use dandelion_core::frame::DEFAULT_TTL_SECS;
pub use dandelion_core::media::content_type;

/// Seconds a file is kept: a missing `TTL` is the original's 60 s, the original's
/// `0` ("forever") is the box's maximum, and nothing exceeds the maximum — a
/// household disk is not an archive.
pub fn effective_ttl(requested: Option<u64>, max_ttl: Duration) -> u64 {
    let max = max_ttl.as_secs().max(1);
    match requested {
        None => DEFAULT_TTL_SECS.min(max),
        Some(0) => max,
        Some(ttl) => ttl.min(max),
    }
}

/// What is stored (and reserved by transfers under way) when a push asks for room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of every publisher, including reservations.
    pub total: u64,
    /// Bytes of the pushing publisher, including its reservations.
    pub publisher: u64,
    /// Bytes of the file the push would replace (same path), freed when it lands.
    pub replaced: u64,
}

/// The limits a push is checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quotas {
    pub storage: Option<u64>,
    pub publisher: Option<u64>,
    /// Free space on the disk right now; the box never fills it to the last byte.
    pub disk_available: Option<u64>,
}

/// Why a push does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaRefusal {
    #[error("{size} bytes do not fit the box's storage quota ({free} of {quota} bytes free)")]
    Storage { size: u64, free: u64, quota: u64 },
    #[error("{size} bytes do not fit this publisher's share ({free} of {quota} bytes free)")]
    Publisher { size: u64, free: u64, quota: u64 },
    #[error(
        "{size} bytes do not fit the free disk space ({free} bytes, {reserve} kept in reserve)"
    )]
    Disk { size: u64, free: u64, reserve: u64 },
}

impl QuotaRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            QuotaRefusal::Storage { .. } => "storage_quota",
            QuotaRefusal::Publisher { .. } => "publisher_quota",
            QuotaRefusal::Disk { .. } => "disk_full",
        }
    }
}

/// Disk space never handed out, so the household's own use of the disk (and the
/// box's store and logs) keeps working when the box is full.
pub const DISK_RESERVE: u64 = 64 * 1024 * 1024;

/// Whether `size` more bytes fit. Replacing a file frees its old size once the new
/// one lands, so the old size is counted as free.
pub fn check_quota(size: u64, usage: Usage, quotas: Quotas) -> Result<(), QuotaRefusal> {
    let after = |used: u64| used.saturating_sub(usage.replaced).saturating_add(size);
    if let Some(quota) = quotas.publisher
        && after(usage.publisher) > quota
    {
        return Err(QuotaRefusal::Publisher {
            size,
            free: quota.saturating_sub(usage.publisher.saturating_sub(usage.replaced)),
            quota,
        });
    }
    if let Some(quota) = quotas.storage
        && after(usage.total) > quota
    {
        return Err(QuotaRefusal::Storage {
            size,
            free: quota.saturating_sub(usage.total.saturating_sub(usage.replaced)),
            quota,
        });
    }
    if let Some(free) = quotas.disk_available
        && size.saturating_add(DISK_RESERVE) > free.saturating_add(usage.replaced)
    {
        return Err(QuotaRefusal::Disk {
            size,
            free,
            reserve: DISK_RESERVE,
        });
    }
    Ok(())
}

/// Longest `max-age` a segment gets: short, because the box may drop it early
/// (restart, eviction) and a cache should come back and ask.
pub const MAX_SEGMENT_AGE: u64 = 300;

/// `Cache-Control`: playlists change under the same name while a stream is live,
/// so caches must revalidate them; everything else may be cached until it expires
/// here, at most [`MAX_SEGMENT_AGE`].
pub fn cache_control(path: &str, ttl_left: u64) -> String {
    match content_type(path) {
        "application/vnd.apple.mpegurl" | "application/dash+xml" => "no-cache".to_owned(),
        _ => format!("public, max-age={}", ttl_left.min(MAX_SEGMENT_AGE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rules() {
        let max = Duration::from_secs(3600);
        assert_eq!(effective_ttl(None, max), 60);
        assert_eq!(effective_ttl(Some(0), max), 3600);
        assert_eq!(effective_ttl(Some(30), max), 30);
        assert_eq!(effective_ttl(Some(99_999), max), 3600);
        assert_eq!(effective_ttl(None, Duration::from_secs(10)), 10);
    }

    #[test]
    fn quota_math() {
        let quotas = Quotas {
            storage: Some(1000),
            publisher: Some(600),
            disk_available: None,
        };
        let usage = |total, publisher, replaced| Usage {
            total,
            publisher,
            replaced,
        };
        assert_eq!(check_quota(600, usage(0, 0, 0), quotas), Ok(()));
        assert_eq!(
            check_quota(601, usage(0, 0, 0), quotas).unwrap_err().code(),
            "publisher_quota"
        );
        assert_eq!(
            check_quota(500, usage(600, 100, 0), quotas).unwrap_err(),
            QuotaRefusal::Storage {
                size: 500,
                free: 400,
                quota: 1000
            }
        );
        // Replacing a 100-byte file frees its bytes.
        assert_eq!(check_quota(500, usage(600, 200, 100), quotas), Ok(()));
        let disk = Quotas {
            disk_available: Some(DISK_RESERVE + 10),
            ..Quotas::default()
        };
        assert_eq!(check_quota(10, usage(0, 0, 0), disk), Ok(()));
        assert_eq!(
            check_quota(11, usage(0, 0, 0), disk).unwrap_err().code(),
            "disk_full"
        );
        assert_eq!(
            check_quota(u64::MAX, usage(0, 0, 0), Quotas::default()),
            Ok(())
        );
    }

    #[test]
    fn content_types_and_cache_control() {
        assert_eq!(
            content_type("live/index.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type("a/seg1.TS"), "video/mp2t");
        assert_eq!(content_type("a/seg1.m4s"), "video/iso.segment");
        assert_eq!(content_type("movie.mp4"), "video/mp4");
        assert_eq!(content_type("audio.aac"), "audio/aac");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(cache_control("live/index.m3u8", 50), "no-cache");
        assert_eq!(cache_control("a/seg.ts", 50), "public, max-age=50");
        assert_eq!(cache_control("a/seg.ts", 5000), "public, max-age=300");
    }
}
