//! What the box served: bytes and requests per file and in total, for the
//! heartbeat's `TRAFFIC_FLOW`, `/metrics` and the console's file list, plus a
//! recent upload rate for `SYSTEM_INFO`; and per publisher and stream since the
//! box started, for each publisher's offload ledger (`TRAFFIC` on a publish
//! session).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;

/// Served bytes and requests of one file. Requests are `GET`s: a `HEAD`
/// sends no file, and the publisher's serve probes are `HEAD`s.
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
    /// Counts of files no longer stored, by publisher and stream, so a
    /// publisher's totals keep growing after its files expire. Bounded:
    /// [`MAX_STREAMS`] per publisher, and publishers are the trusted few.
    retired: Mutex<HashMap<String, HashMap<String, Served>>>,
    rate: Mutex<(Instant, u64)>,
    last_total: AtomicU64,
    /// When the counters started (Unix seconds): a publisher seeing another
    /// value knows the box restarted and its counts began again.
    pub since: u64,
}

/// Streams counted per publisher; past it, new streams' counts go to
/// [`OTHER_STREAMS`]. Also the most a `TRAFFIC` answer lists.
pub const MAX_STREAMS: usize = 512;

/// Where streams past [`MAX_STREAMS`] are counted.
pub const OTHER_STREAMS: &str = "(other streams)";

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
            "File GET requests answered from storage (HEADs, such as serve probes, are not counted)",
            requests.clone(),
        );
        Traffic {
            bytes,
            requests,
            per_file: Mutex::new(HashMap::new()),
            retired: Mutex::new(HashMap::new()),
            rate: Mutex::new((Instant::now(), 0)),
            last_total: AtomicU64::new(0),
            since: super::storage::now_secs(),
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

    /// Drops the counts of files no longer stored, so the map stays as small as
    /// storage; what they served stays in their stream's count.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        let mut gone = Vec::new();
        self.files().retain(|m, served| {
            let keep = live(m);
            if !keep {
                gone.push((m.clone(), *served));
            }
            keep
        });
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        for (member, served) in gone {
            let Some((publisher, name)) = member.split_once('/') else {
                continue;
            };
            let streams = retired.entry(publisher.to_owned()).or_default();
            add(streams, dandelion_core::paths::stream_of(name), served);
        }
    }

    /// What the box served of `publisher`'s files since [`Traffic::since`], per
    /// stream, at most [`MAX_STREAMS`] of them.
    pub fn streams_of(&self, publisher: &str) -> BTreeMap<String, Served> {
        let mut streams: HashMap<String, Served> = self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(publisher)
            .cloned()
            .unwrap_or_default();
        for (member, served) in self.files().iter() {
            if let Some((p, name)) = member.split_once('/')
                && p == publisher
            {
                add(
                    &mut streams,
                    dandelion_core::paths::stream_of(name),
                    *served,
                );
            }
        }
        streams.into_iter().collect()
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

/// Adds `served` to `stream`'s count, or to [`OTHER_STREAMS`] once `streams`
/// holds [`MAX_STREAMS`] others.
fn add(streams: &mut HashMap<String, Served>, stream: &str, served: Served) {
    let key = if streams.contains_key(stream) || streams.len() < MAX_STREAMS - 1 {
        stream
    } else {
        OTHER_STREAMS
    };
    let count = streams.entry(key.to_owned()).or_default();
    count.bytes = count.bytes.saturating_add(served.bytes);
    count.requests = count.requests.saturating_add(served.requests);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publishers_streams_keep_what_expired_files_served() {
        let t = Traffic::new(&crate::metrics::Metrics::new());
        for (member, n) in [
            ("p1/live/a.ts", 100),
            ("p1/live/b.ts", 50),
            ("p1/vod.mp4", 7),
            ("p2/live/a.ts", 9),
        ] {
            t.request(member);
            t.bytes(member, n);
        }
        t.retain(|m| m != "p1/live/a.ts");
        t.bytes("p1/live/b.ts", 1);
        let s = t.streams_of("p1");
        assert_eq!(
            s["live"],
            Served {
                bytes: 151,
                requests: 2
            }
        );
        assert_eq!(
            s[""],
            Served {
                bytes: 7,
                requests: 1
            }
        );
        assert_eq!(s.len(), 2, "p2's stream is not p1's business");
    }

    #[test]
    fn streams_past_the_cap_are_counted_together() {
        let mut streams = HashMap::new();
        for i in 0..MAX_STREAMS + 10 {
            add(
                &mut streams,
                &format!("s{i}"),
                Served {
                    bytes: 1,
                    requests: 1,
                },
            );
        }
        assert_eq!(streams.len(), MAX_STREAMS);
        assert_eq!(streams[OTHER_STREAMS].bytes, 11);
    }
}
