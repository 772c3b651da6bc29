//! Household controls on serving: an upload rate cap shared by every viewer (a
//! token bucket metered in KiB cells) and a cap on concurrent downloads.

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Bucket = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// Bytes per cell: metering in KiB keeps the bucket's numbers small and a cell per
/// byte would make every 64 KiB chunk 65 536 governor operations.
pub const CELL: u64 = 1024;

/// The bucket's depth in cells: one response chunk (64 KiB) may go at once, which
/// keeps the cap accurate over a second while never blocking a chunk forever.
pub const BURST_CELLS: u32 = 64;

/// Cheap-clone handle.
#[derive(Debug, Clone)]
pub struct Limits {
    bucket: Option<Arc<Bucket>>,
    downloads: Arc<Semaphore>,
    pub upload_cap: Option<u64>,
    pub max_downloads: u32,
}

impl Limits {
    pub fn new(upload_cap: Option<u64>, max_downloads: u32) -> Limits {
        let bucket = upload_cap.map(|cap| {
            let per_sec = u32::try_from((cap / CELL).max(1)).unwrap_or(u32::MAX);
            let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(BURST_CELLS).unwrap_or(NonZeroU32::MIN);
            Arc::new(RateLimiter::direct(
                Quota::per_second(per_sec).allow_burst(burst),
            ))
        });
        Limits {
            bucket,
            downloads: Arc::new(Semaphore::new(usize::try_from(max_downloads).unwrap_or(1))),
            upload_cap,
            max_downloads,
        }
    }

    /// A download slot, or `None` when all are taken.
    pub fn try_download(&self) -> Option<OwnedSemaphorePermit> {
        self.downloads.clone().try_acquire_owned().ok()
    }

    /// Waits until `bytes` may be sent under the upload cap.
    pub async fn wait_for(&self, bytes: u64) {
        let Some(bucket) = &self.bucket else { return };
        let mut cells = bytes.div_ceil(CELL);
        while cells > 0 {
            let step = cells.min(u64::from(BURST_CELLS));
            cells -= step;
            let n = NonZeroU32::new(u32::try_from(step).unwrap_or(BURST_CELLS))
                .unwrap_or(NonZeroU32::MIN);
            // `step` never exceeds the burst, so capacity is always sufficient.
            let _ = bucket.until_n_ready(n).await;
        }
    }
}
