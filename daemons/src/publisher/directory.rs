//! The boxes this publisher knows: what the entrances last said about each, and
//! what the publisher measured itself (transfers that worked or failed, how
//! fast, and whether the box serves viewers). Plain data, changed by the search
//! loop, the senders and the serve probes.
//!
//! A box no entrance has listed for a while is forgotten — the original kept
//! every box it ever heard of and retried dead ones forever.

use std::collections::HashMap;

use dandelion_core::geo::haversine_km;
use dandelion_core::ids::NodeId;
use dandelion_core::protocol::Exchange;

use super::probe::ServeHealth;
use super::ranking::Candidate;

/// The `STATE` an entrance adds to each box it lists.
pub const STATE_FIELD: &str = "STATE";

/// Weight of the newest throughput sample in the moving average.
const THROUGHPUT_ALPHA: f64 = 0.3;

/// Smallest transfer whose rate is a throughput sample: a smaller one times the
/// round trip and the box's fsync, not the line (a 20-byte file "measured" a
/// gigabit box at 5 kB/s).
pub const MIN_THROUGHPUT_SAMPLE: u64 = 64 * 1024;

/// How long a box that failed a transfer is passed over.
pub const FAILURE_COOL_OFF_SECS: u64 = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct KnownBox {
    pub exchange: Exchange,
    /// The entrance's verdict: `active`, `stale`, `legacy`…; `active` when absent.
    pub state: String,
    /// When an entrance last listed it (Unix seconds).
    pub seen_at: u64,
    pub successes: u32,
    pub failures: u32,
    /// Bytes per second measured by this publisher, smoothed.
    pub throughput: Option<f64>,
    /// Transfers that measured it.
    pub throughput_samples: u32,
    /// Skipped for placements and redirects until then.
    pub failing_until: u64,
    /// What the serve probes found.
    pub serve: ServeHealth,
    /// When a viewer was last sent to it: such a box is probed every second.
    pub redirected_at: Stamp,
}

/// A Unix-seconds time set through a shared reference, so the redirect path
/// can mark a box under the directory's read lock.
#[derive(Debug, Default)]
pub struct Stamp(std::sync::atomic::AtomicU64);

impl Stamp {
    pub fn set(&self, secs: u64) {
        // Relaxed: a probe a moment early or late is all an ordering could cost.
        if self.get() != secs {
            self.0.store(secs, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Clone for Stamp {
    fn clone(&self) -> Self {
        Stamp(self.get().into())
    }
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl KnownBox {
    /// Whether the box is still to be measured ([`super::ranking::on_probation`]).
    pub fn on_probation(&self) -> bool {
        super::ranking::on_probation(self.successes, self.serve.answered)
    }

    pub fn location(&self) -> Option<(f64, f64)> {
        self.exchange.geoip.as_ref().and_then(|g| g.lat_lon())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Directory {
    boxes: HashMap<NodeId, KnownBox>,
    /// Whether legacy (unverified) boxes may take files.
    pub allow_legacy: bool,
    /// How long a box must keep failing serve probes before its copies count
    /// as lost (`ServeHealth::lost`): `publisher.replace_after`.
    pub replace_after_secs: u64,
}

impl Directory {
    /// Takes in one entrance's `SEARCH` answer.
    pub fn update(&mut self, listed: Vec<Exchange>, now: u64) {
        for exchange in listed {
            let state = exchange
                .extra
                .get(STATE_FIELD)
                .and_then(|v| v.as_str())
                .unwrap_or("active")
                .to_owned();
            let id = exchange.header.id.clone();
            match self.boxes.get_mut(&id) {
                Some(known) => {
                    known.exchange = exchange;
                    known.state = state;
                    known.seen_at = now;
                }
                None => {
                    self.boxes.insert(
                        id,
                        KnownBox {
                            exchange,
                            state,
                            seen_at: now,
                            successes: 0,
                            failures: 0,
                            throughput: None,
                            throughput_samples: 0,
                            failing_until: 0,
                            serve: ServeHealth::default(),
                            redirected_at: Stamp::default(),
                        },
                    );
                }
            }
        }
    }

    /// Drops boxes no entrance listed since `now - max_age`; returns them.
    pub fn forget_unseen(&mut self, now: u64, max_age: u64) -> Vec<NodeId> {
        let gone: Vec<NodeId> = self
            .boxes
            .iter()
            .filter(|(_, b)| now.saturating_sub(b.seen_at) > max_age)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.boxes.remove(id);
        }
        gone
    }

    pub fn get(&self, id: &NodeId) -> Option<&KnownBox> {
        self.boxes.get(id)
    }

    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    pub fn get_mut(&mut self, id: &NodeId) -> Option<&mut KnownBox> {
        self.boxes.get_mut(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &KnownBox)> {
        self.boxes.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut KnownBox)> {
        self.boxes.iter_mut()
    }

    fn eligible(&self, b: &KnownBox) -> bool {
        b.state == "active" || (self.allow_legacy && b.state == "legacy")
    }

    /// Whether the box's copies still count: it is listed and has not kept
    /// failing serve probes for `replace_after`. A box that failed a probe, lost
    /// its publish session or a transfer still holds its copies — viewers skip
    /// it while it fails probes, and it takes no new files while cooling off —
    /// so one that comes back within the grace period keeps them.
    pub fn is_live(&self, id: &NodeId, now: u64) -> bool {
        self.boxes
            .get(id)
            .is_some_and(|b| self.eligible(b) && !b.serve.lost(now, self.replace_after_secs))
    }

    /// Ranking input for every known box, as seen from `audience`.
    pub fn candidates(&self, audience: Option<(f64, f64)>, now: u64) -> Vec<Candidate> {
        self.boxes
            .iter()
            .map(|(id, b)| {
                let sys = b.exchange.system_info.as_deref();
                let storage_free =
                    sys.and_then(
                        |s| match (s.disk_available, s.storage_quota, s.storage_used) {
                            (disk, Some(quota), used) => {
                                let left = quota.saturating_sub(used.unwrap_or(0));
                                Some(disk.map_or(left, |d| d.min(left)))
                            }
                            (disk, None, _) => disk,
                        },
                    );
                Candidate {
                    id: id.clone(),
                    // A box that fails to serve viewers gets no new files either.
                    eligible: self.eligible(b) && b.failing_until <= now && b.serve.serving(),
                    distance_km: audience.zip(b.location()).map(|(a, l)| haversine_km(a, l)),
                    upload_cap: sys.and_then(|s| s.upload_cap),
                    upload_rate: sys.and_then(|s| s.upload_rate),
                    storage_free,
                    successes: b.successes,
                    failures: b.failures,
                    throughput: b.throughput,
                    throughput_samples: b.throughput_samples,
                    probation: b.on_probation(),
                }
            })
            .collect()
    }

    pub fn record_success(&mut self, id: &NodeId, bytes: u64, seconds: f64) {
        if let Some(b) = self.boxes.get_mut(id) {
            b.successes = b.successes.saturating_add(1);
            if seconds > 0.0 && bytes >= MIN_THROUGHPUT_SAMPLE {
                let sample = bytes as f64 / seconds;
                b.throughput_samples = b.throughput_samples.saturating_add(1);
                b.throughput = Some(match b.throughput {
                    Some(t) => t + THROUGHPUT_ALPHA * (sample - t),
                    None => sample,
                });
            }
        }
    }

    pub fn record_failure(&mut self, id: &NodeId, now: u64) {
        if let Some(b) = self.boxes.get_mut(id) {
            b.failures = b.failures.saturating_add(1);
            b.failing_until = now + FAILURE_COOL_OFF_SECS;
        }
    }
}

#[cfg(test)]
mod tests {
    use dandelion_core::protocol::{GeoIp, Header};
    use serde_json::Value;

    use super::*;

    fn exchange(n: u8, state: Option<&str>, loc: &str) -> Exchange {
        let mut extra = std::collections::BTreeMap::new();
        if let Some(s) = state {
            extra.insert(STATE_FIELD.to_owned(), Value::from(s));
        }
        Exchange {
            header: Header::new(NodeId::parse(&format!("box-{n:032x}")).unwrap()),
            connect_ws: None,
            data_url: None,
            system_info: None,
            geoip: Some(GeoIp {
                loc: Some(loc.into()),
                ..GeoIp::default()
            }),
            traffic_flow: None,
            extra,
        }
    }

    #[test]
    fn only_active_boxes_take_files_and_unseen_ones_are_forgotten() {
        let mut d = Directory::default();
        d.update(
            vec![
                exchange(1, Some("active"), "25.03,121.56"),
                exchange(2, Some("stale"), "0,0"),
            ],
            100,
        );
        d.update(vec![exchange(3, None, "35.68,139.69")], 150);
        let id = |n: u8| NodeId::parse(&format!("box-{n:032x}")).unwrap();
        assert!(d.is_live(&id(1), 100) && !d.is_live(&id(2), 100) && d.is_live(&id(3), 150));
        let cands = d.candidates(Some((25.0, 121.5)), 150);
        let near = cands.iter().find(|c| c.id == id(1)).unwrap();
        assert!(near.eligible && near.distance_km.unwrap() < 10.0);
        let mut gone = d.forget_unseen(200, 60);
        gone.sort();
        assert_eq!(gone, [id(1), id(2)]);
        assert_eq!(d.len(), 1, "only the box seen at 150 is kept");
    }

    #[test]
    fn a_failed_transfer_cools_the_box_off_and_successes_measure_throughput() {
        let mut d = Directory::default();
        d.update(vec![exchange(1, None, "0,0")], 0);
        let id = NodeId::parse(&format!("box-{:032x}", 1)).unwrap();
        d.record_failure(&id, 10);
        let eligible = |d: &Directory, now| d.candidates(None, now)[0].eligible;
        assert!(!eligible(&d, 20), "no new files while it cools off");
        assert!(d.is_live(&id, 20), "but its copies still count");
        assert!(eligible(&d, 10 + FAILURE_COOL_OFF_SECS));
        d.record_success(&id, 1_000, 0.001);
        assert_eq!(d.get(&id).unwrap().throughput, None, "too small to measure");
        d.record_success(&id, 1_000_000, 0.5);
        assert_eq!(d.get(&id).unwrap().throughput, Some(2_000_000.0));
        assert_eq!(d.get(&id).unwrap().throughput_samples, 1);
        assert_eq!(d.get(&id).unwrap().successes, 2);
    }

    #[test]
    fn a_box_failing_serve_probes_takes_no_files_then_loses_its_copies_then_recovers() {
        use crate::publisher::probe::{Expect, Target};
        let mut d = Directory::default();
        d.update(vec![exchange(1, None, "0,0")], 0);
        let id = NodeId::parse(&format!("box-{:032x}", 1)).unwrap();
        let probe = Target {
            box_id: id.clone(),
            url: "http://b/f".into(),
            expect: Expect::Copy { size: None },
        };
        let eligible = |d: &Directory| d.candidates(None, 5)[0].eligible;
        d.get_mut(&id)
            .unwrap()
            .serve
            .record(&probe, 1, Err("404".into()));
        assert!(
            !eligible(&d) && d.is_live(&id, 5),
            "skipped, copies still count"
        );
        d.get_mut(&id)
            .unwrap()
            .serve
            .record(&probe, 2, Err("404".into()));
        assert!(!d.is_live(&id, 5), "copies count as lost");
        d.get_mut(&id).unwrap().serve.record(&probe, 3, Ok(()));
        assert!(eligible(&d) && d.is_live(&id, 5));

        // With a grace period, failing probes lose the copies only after it.
        d.replace_after_secs = 30;
        for at in [10, 11] {
            d.get_mut(&id)
                .unwrap()
                .serve
                .record(&probe, at, Err("refused".into()));
        }
        assert!(d.is_live(&id, 40), "back within the grace period: kept");
        assert!(!d.is_live(&id, 41), "failing for longer: lost");
    }
}
