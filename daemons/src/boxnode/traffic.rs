//! What the box served: bytes and requests per file and in total, for the
//! heartbeat's `TRAFFIC_FLOW`, `/metrics` and the console's file list, plus a
//! recent upload rate for `SYSTEM_INFO`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

/// Served bytes and requests of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    pub bytes: u64,
    pub requests: u64,
}

#[derive(Debug)]
pub struct Traffic {
    bytes: Counter,
    requests: Counter,
    // A std Mutex: one short map update per response chunk, never held across an await.
    per_file: Mutex<HashMap<String, Served>>,
    rate: Mutex<(Instant, u64)>,
    last_total: AtomicU64,
}

impl Traffic {
    /// Counters registered in `metrics` as `dandelion_box_served_bytes_total` and
    /// `dandelion_box_served_requests_total`.
    pub fn new(metrics: &crate::metrics::Metrics) -> Traffic {
        let bytes = Counter::default();
        let requests = Counter::default();
        metrics.register(
            "box_served_bytes",
            "File bytes served to viewers",
            bytes.clone(),
        );
        metrics.register(
            "box_served_requests",
            "File requests answered from storage",
            requests.clone(),
        );
        Traffic {
            bytes,
            requests,
            per_file: Mutex::new(HashMap::new()),
            rate: Mutex::new((Instant::now(), 0)),
            last_total: AtomicU64::new(0),
        }
    }

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<String, Served>> {
        self.per_file.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, member: &str) {
        self.requests.inc();
        self.files().entry(member.to_owned()).or_default().requests += 1;
    }

    pub fn bytes(&self, member: &str, n: u64) {
        self.bytes.inc_by(n);
        self.files().entry(member.to_owned()).or_default().bytes += n;
    }

    pub fn totals(&self) -> Served {
        Served {
            bytes: self.bytes.get(),
            requests: self.requests.get(),
        }
    }

    pub fn of(&self, member: &str) -> Served {
        self.files().get(member).copied().unwrap_or_default()
    }

    /// Drops the counts of files no longer stored, so the map stays as small as storage.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.files().retain(|m, _| live(m));
    }

    /// Bytes per second served since the previous call.
    pub fn recent_rate(&self) -> u64 {
        let total = self.bytes.get();
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let secs = rate.0.elapsed().as_secs_f64().max(0.001);
        let delta = total.saturating_sub(rate.1);
        *rate = (Instant::now(), total);
        self.last_total.store(total, Ordering::Relaxed);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let per_sec = (delta as f64 / secs) as u64;
        per_sec
    }
}
