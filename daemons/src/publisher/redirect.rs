//! Where to send a viewer: the box holding the file that is alive, near the
//! viewer and least loaded.
//!
//! A viewer who asked over `https://` is sent to an `https://` copy when there is
//! one: a browser page served over TLS may not fetch from plain HTTP (mixed
//! content). Plain viewers take either.
//!
//! Nearness comes first but in coarse steps, so that two boxes in the same metro
//! area are told apart by load rather than by a few kilometres; within a step a
//! box a serve probe has proven serving goes before one not probed yet. A box
//! whose last serve probe failed ([`super::probe`]) is skipped until a probe
//! succeeds again, and when no box qualifies the publisher serves the bytes
//! itself (the origin of last resort).
//!
//! A box on probation (not yet measured, `ranking::on_probation`) is a
//! stranger's claim: it is sent only the share of viewers the caller lets it
//! have (`admit_probation`, drawn at `ranking::PROBATION_PER_MILLE`), unless
//! no measured box holds the file.

use std::cmp::Ordering;

use dandelion_core::ids::NodeId;

use super::directory::Directory;
use super::jobs::Placement;

/// Distances within one step count as equally near.
const DISTANCE_STEP_KM: f64 = 250.0;

/// A box known to hold a copy of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub box_id: NodeId,
    /// The file's URL on that box.
    pub url: String,
    /// Whether the entrance lists the box as active.
    pub live: bool,
    /// What the serve probes found about the box.
    pub serve: Serve,
    /// Distance to the viewer, when both locations are known.
    pub distance_km: Option<f64>,
    /// Upload in use as a share of the box's cap (0 when unknown).
    pub load: f64,
    /// When the box will delete the copy (Unix seconds).
    pub expires_at: u64,
    /// Not yet measured by this publisher.
    pub probation: bool,
}

impl Holder {
    /// Whether viewers may be sent to this copy now.
    pub fn usable(&self, now: u64) -> bool {
        self.live && self.serve != Serve::Failing && self.expires_at > now
    }
}

/// A box's standing according to the serve probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Serve {
    /// Its last probe succeeded.
    Serving,
    /// Not probed yet: a copy it just confirmed storing.
    Unprobed,
    /// Its last probe failed, and none succeeded since.
    Failing,
}

fn distance_step(h: &Holder) -> u64 {
    // Unknown distance sorts after every known one.
    h.distance_km
        .map_or(u64::MAX, |d| (d.max(0.0) / DISTANCE_STEP_KM) as u64)
}

/// Whether a copy cannot be fetched by a page the viewer loaded over TLS.
fn mixed_content(h: &Holder, https_viewer: bool) -> bool {
    https_viewer && !h.url.starts_with("https://")
}

/// The box to redirect to, if any may serve the file now; `https_viewer` when
/// the viewer asked over TLS; `admit_probation` when this viewer may go to a
/// box on probation although a measured one holds the file.
pub fn best_holder(
    holders: &[Holder],
    now: u64,
    https_viewer: bool,
    admit_probation: bool,
) -> Option<&Holder> {
    let best = |probation_too: bool| {
        holders
            .iter()
            .filter(|h| h.usable(now))
            .filter(|h| probation_too || !h.probation)
            .min_by(|a, b| order(a, b, https_viewer))
    };
    if admit_probation {
        best(true)
    } else {
        best(false).or_else(|| best(true))
    }
}

/// Where to send a viewer at `viewer_at` for the file with `placements`: the
/// URL of [`best_holder`] among them as `dir` knows their boxes, if any. The
/// chosen box is marked as sent viewers (`KnownBox::redirected_at`), which
/// keeps serve probes on it every second while it has them.
pub fn choose_url(
    dir: &Directory,
    placements: &[Placement],
    viewer_at: Option<(f64, f64)>,
    now: u64,
    https_viewer: bool,
    admit_probation: bool,
) -> Option<String> {
    let holders = holders(dir, placements, viewer_at, now);
    let best = best_holder(&holders, now, https_viewer, admit_probation)?;
    if let Some(b) = dir.get(&best.box_id) {
        b.redirected_at.set(now);
    }
    Some(best.url.clone())
}

/// The holders a viewer may be sent to, in the order to try them: as
/// [`best_holder`] would pick them one after the other, except that boxes
/// equal in everything else are ordered by `tie` (a per-viewer number, so
/// viewers spread over them) and copies a TLS page cannot fetch are left out.
pub fn in_order(
    holders: &[Holder],
    now: u64,
    https_viewer: bool,
    admit_probation: bool,
    tie: &dyn Fn(&NodeId) -> u64,
) -> Vec<Holder> {
    let usable = |probation_too: bool| -> Vec<Holder> {
        holders
            .iter()
            .filter(|h| h.usable(now) && !mixed_content(h, https_viewer))
            .filter(|h| probation_too || !h.probation)
            .cloned()
            .collect()
    };
    let mut out = usable(admit_probation);
    if out.is_empty() {
        out = usable(true);
    }
    out.sort_by(|a, b| {
        order_without_id(a, b, https_viewer).then_with(|| tie(&a.box_id).cmp(&tie(&b.box_id)))
    });
    out
}

/// Every box holding one of `placements`, as `dir` knows it, seen from a
/// viewer at `viewer_at`.
pub fn holders(
    dir: &Directory,
    placements: &[Placement],
    viewer_at: Option<(f64, f64)>,
    now: u64,
) -> Vec<Holder> {
    placements
        .iter()
        .filter_map(|pl| {
            let id: NodeId = pl.box_id.parse().ok()?;
            let known = dir.get(&id);
            let load = known
                .and_then(|b| b.exchange.system_info.as_ref())
                .and_then(|s| {
                    Some((s.upload_rate? as f64) / (s.upload_cap.filter(|c| *c > 0)? as f64))
                })
                .unwrap_or(0.0);
            let distance_km = viewer_at
                .zip(known.and_then(|b| b.location()))
                .map(|(v, b)| dandelion_core::geo::haversine_km(v, b));
            let serve = match known.map(|b| &b.serve) {
                Some(h) if !h.serving() => Serve::Failing,
                Some(h) if h.probed_at.is_some() => Serve::Serving,
                _ => Serve::Unprobed,
            };
            Some(Holder {
                live: dir.is_live(&id, now),
                probation: known.is_none_or(|b| b.on_probation()),
                serve,
                box_id: id,
                url: pl.url.clone(),
                distance_km,
                load,
                expires_at: pl.expires_at,
            })
        })
        .collect()
}

fn order(a: &Holder, b: &Holder, https_viewer: bool) -> Ordering {
    order_without_id(a, b, https_viewer).then_with(|| a.box_id.cmp(&b.box_id))
}

fn order_without_id(a: &Holder, b: &Holder, https_viewer: bool) -> Ordering {
    mixed_content(a, https_viewer)
        .cmp(&mixed_content(b, https_viewer))
        .then(distance_step(a).cmp(&distance_step(b)))
        .then(a.serve.cmp(&b.serve))
        .then(a.load.partial_cmp(&b.load).unwrap_or(Ordering::Equal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(n: u8, distance_km: Option<f64>, load: f64) -> Holder {
        Holder {
            box_id: NodeId::parse(&format!("box-{n:032x}")).unwrap(),
            url: format!("http://127.0.0.{n}:7071/f"),
            live: true,
            serve: Serve::Serving,
            distance_km,
            load,
            expires_at: 1_000,
            probation: false,
        }
    }

    #[test]
    fn a_box_on_probation_gets_viewers_only_when_admitted_or_alone() {
        let mut stranger = holder(1, Some(1.0), 0.0);
        stranger.probation = true;
        let measured = holder(2, Some(3000.0), 0.8);
        let all = [stranger.clone(), measured.clone()];
        assert_eq!(best_holder(&all, 0, false, false), Some(&measured));
        assert_eq!(best_holder(&all, 0, false, true), Some(&stranger));
        assert_eq!(
            best_holder(&[stranger.clone()], 0, false, false),
            Some(&stranger),
            "alone, it serves rather than the origin"
        );
    }

    #[test]
    fn nearest_step_first_then_least_loaded() {
        let far = holder(1, Some(5000.0), 0.0);
        let near_busy = holder(2, Some(10.0), 0.9);
        let near_idle = holder(3, Some(60.0), 0.1);
        let all = [far, near_busy, near_idle.clone()];
        assert_eq!(best_holder(&all, 0, false, false), Some(&near_idle));
    }

    #[test]
    fn dead_failing_and_expired_copies_are_skipped() {
        let mut dead = holder(1, Some(1.0), 0.0);
        dead.live = false;
        let mut failing = holder(2, Some(1.0), 0.0);
        failing.serve = Serve::Failing;
        let mut expired = holder(3, Some(1.0), 0.0);
        expired.expires_at = 10;
        let unknown = holder(4, None, 0.5);
        let all = [dead, failing, expired, unknown.clone()];
        assert_eq!(best_holder(&all, 10, false, false), Some(&unknown));
        assert_eq!(
            best_holder(&all[..3], 10, false, false),
            None,
            "nobody qualifies: serve from the origin"
        );
    }

    #[test]
    fn a_box_failing_its_probe_is_skipped_for_another_holder_or_the_origin() {
        let mut near_failing = holder(1, Some(1.0), 0.0);
        near_failing.serve = Serve::Failing;
        let far_serving = holder(2, Some(4000.0), 0.9);
        let all = [near_failing.clone(), far_serving.clone()];
        assert_eq!(best_holder(&all, 0, false, false), Some(&far_serving));
        assert_eq!(
            best_holder(&[near_failing], 0, false, false),
            None,
            "the origin serves"
        );
    }

    #[test]
    fn within_a_step_a_proven_box_goes_before_an_unprobed_one() {
        let mut fresh = holder(1, Some(10.0), 0.0);
        fresh.serve = Serve::Unprobed;
        let proven = holder(2, Some(20.0), 0.5);
        let all = [fresh.clone(), proven.clone()];
        assert_eq!(best_holder(&all, 0, false, false), Some(&proven));
        let far_proven = holder(3, Some(3000.0), 0.0);
        let all = [fresh.clone(), far_proven];
        assert_eq!(
            best_holder(&all, 0, false, false),
            Some(&fresh),
            "nearness still comes first"
        );
    }

    #[test]
    fn an_https_viewer_goes_to_an_https_copy_when_there_is_one() {
        let near_plain = holder(1, Some(5.0), 0.0);
        let far_tls = Holder {
            url: "https://box.example.net/f".into(),
            ..holder(2, Some(5000.0), 0.9)
        };
        let all = [near_plain.clone(), far_tls.clone()];
        assert_eq!(best_holder(&all, 0, true, false), Some(&far_tls));
        assert_eq!(best_holder(&all, 0, false, false), Some(&near_plain));
        // Without an https copy, the plain one still beats the origin.
        assert_eq!(best_holder(&all[..1], 0, true, false), Some(&near_plain));
    }
}
