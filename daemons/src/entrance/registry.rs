//! The registry's decisions as plain data and functions, tested without sockets
//! or a store: what state a box is in, when self-preservation holds expiry back,
//! and which boxes a `SEARCH` gets in what order.
//!
//! Only `active`, `unreachable` and `evicted` are stored; `stale` is derived at
//! read time from the last heartbeat, so every entrance sharing a store agrees on
//! it without anyone writing it, and no timer has to flip it.

use std::collections::BTreeMap;
use std::time::Duration;

use dandelion_core::geo::haversine_km;
use dandelion_core::protocol::{GeoIp, SearchOrder};
use serde::{Deserialize, Serialize};

/// Heartbeats a box may miss before it is `stale`.
pub const MISSED_HEARTBEATS_FOR_STALE: u32 = 3;

pub use dandelion_core::console::BoxState;

/// What the entrance knows about one box, beyond its last exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxInfo {
    /// The stored state (never `stale`; see [`BoxInfo::effective`]).
    pub state: BoxState,
    /// Unix seconds of the last stored state change.
    pub since: f64,
    pub reason: String,
    /// An original 2017 box that could not prove its ID.
    pub legacy: bool,
    pub first_seen: f64,
    pub last_heartbeat: f64,
    pub observed_ip: Option<String>,
    pub public_key: Option<String>,
    /// The location in use: operator override, else database, else the box's own.
    pub geo: GeoIp,
    /// Where `geo` came from: `override`, `geoip` or `box`.
    pub geo_source: String,
    pub ban_until: Option<f64>,
    /// The data URL the last passed reachability check called.
    pub verified_url: Option<String>,
}

/// A state with the time and reason of its last change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effective {
    pub state: BoxState,
    pub since: f64,
    pub reason: String,
}

impl BoxInfo {
    /// The state at `now`: a stored `active` or `unreachable` becomes `stale` after
    /// [`MISSED_HEARTBEATS_FOR_STALE`] missed heartbeats. An `unreachable` verdict
    /// describes a box that was heartbeating; once it falls silent (killed, power
    /// cut) a reachability check made in between must not hide that it is gone.
    /// Only an eviction wins over silence.
    pub fn effective(&self, now: f64, heartbeat: Duration) -> Effective {
        gone_stale(self.state, self.last_heartbeat, now, heartbeat).unwrap_or_else(|| Effective {
            state: self.state,
            since: self.since,
            reason: self.reason.clone(),
        })
    }

    /// Whether a publisher may be handed this box.
    pub fn is_live(&self, now: f64, heartbeat: Duration, unverified_ok: bool) -> bool {
        self.effective(now, heartbeat).state == BoxState::Active && (!self.legacy || unverified_ok)
    }

    /// Whether a reachability check passed at `data_url`, the data URL the box
    /// advertises now. A box is handed to publishers only at a URL the entrance
    /// called and found it at: not between its registration and its first check,
    /// and not at a URL it switched to after passing one, until that is checked.
    pub fn verified_for(&self, data_url: Option<&str>) -> bool {
        data_url.is_some_and(|url| self.verified_url.as_deref() == Some(url.trim_end_matches('/')))
    }
}

/// The little of a box's record its count by state needs: the `boxes` gauge
/// tallies every box every few seconds, and a whole [`BoxInfo`] (its location
/// parsed from JSON among the rest) costs several times as much to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    pub state: BoxState,
    pub last_heartbeat: f64,
    pub legacy: bool,
}

impl Tally {
    /// The state at `now`, as [`BoxInfo::effective`] gives it.
    pub fn effective(&self, now: f64, heartbeat: Duration) -> BoxState {
        gone_stale(self.state, self.last_heartbeat, now, heartbeat).map_or(self.state, |e| e.state)
    }
}

/// `stale`, with when and why, if a box in `state` that last heartbeat at
/// `last_heartbeat` has missed too many heartbeats by `now`; see
/// [`BoxInfo::effective`]. The console feed applies it to rows it already sent.
pub fn gone_stale(
    state: BoxState,
    last_heartbeat: f64,
    now: f64,
    heartbeat: Duration,
) -> Option<Effective> {
    let stale_after = heartbeat.as_secs_f64() * f64::from(MISSED_HEARTBEATS_FOR_STALE);
    let silent = now - last_heartbeat;
    (matches!(state, BoxState::Active | BoxState::Unreachable) && silent > stale_after).then(|| {
        Effective {
            state: BoxState::Stale,
            since: last_heartbeat + stale_after,
            reason: format!("no heartbeat for {silent:.0}s ({MISSED_HEARTBEATS_FOR_STALE} missed)"),
        }
    })
}

/// Self-preservation: when at least `threshold` of at least `min_boxes` boxes went
/// silent within one expiry period, the likelier story is that the entrance lost
/// its own network, and expiring them all would empty the registry for nothing.
/// Returns the reason when expiry should stop.
pub fn self_preservation(
    total: u64,
    silent: u64,
    threshold: f64,
    min_boxes: u32,
) -> Option<String> {
    if total == 0 || total < u64::from(min_boxes) {
        return None;
    }
    #[allow(clippy::cast_precision_loss)] // box counts are far below 2^52
    let share = silent as f64 / total as f64;
    (share >= threshold).then(|| {
        format!(
            "{silent} of {total} boxes ({:.0} %) went silent within one expiry period \
             (threshold {:.0} %); not expiring boxes until heartbeats recover",
            share * 100.0,
            threshold * 100.0
        )
    })
}

/// A candidate for a `SEARCH` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<T> {
    pub last_heartbeat: f64,
    pub loc: Option<(f64, f64)>,
    pub item: T,
}

/// Orders candidates and keeps at most `count`: freshest first, or nearest to
/// `origin` first (boxes without a location after all located ones, freshest
/// first among themselves). Ties break freshest first.
pub fn rank<T>(
    mut candidates: Vec<Candidate<T>>,
    order: SearchOrder,
    origin: Option<(f64, f64)>,
    count: usize,
) -> Vec<T> {
    let fresher =
        |a: &Candidate<T>, b: &Candidate<T>| b.last_heartbeat.total_cmp(&a.last_heartbeat);
    match (order, origin) {
        (SearchOrder::Nearest, Some(origin)) => candidates.sort_by(|a, b| {
            let da = a.loc.map(|l| haversine_km(origin, l));
            let db = b.loc.map(|l| haversine_km(origin, l));
            match (da, db) {
                (Some(x), Some(y)) => x.total_cmp(&y).then_with(|| fresher(a, b)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => fresher(a, b),
            }
        }),
        _ => candidates.sort_by(fresher),
    }
    candidates.truncate(count);
    candidates.into_iter().map(|c| c.item).collect()
}

/// The longest prefix of `ranked` whose items' sizes (`size`, in bytes) add up
/// to at most `budget`: a `SEARCH` answer lists fewer boxes rather than grow past
/// what a publisher reads, so boxes with bloated exchanges cannot make the answer
/// fail for everyone. The best-ranked come first, so they are the ones kept.
pub fn fit<T>(ranked: Vec<T>, budget: usize, size: impl Fn(&T) -> usize) -> Vec<T> {
    let mut used = 0usize;
    ranked
        .into_iter()
        .take_while(|item| {
            used = used.saturating_add(size(item));
            used <= budget
        })
        .collect()
}

/// The `?state=&country=` filter of `/api/boxes` and `dandelion boxes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Filter {
    pub state: Option<String>,
    pub country: Option<String>,
}

impl Filter {
    /// `legacy` is accepted as a state name too: it is a marker next to the state.
    pub fn matches(&self, state: BoxState, legacy: bool, geo: &GeoIp) -> bool {
        let state_ok = match self.state.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(s) if s.eq_ignore_ascii_case("legacy") => legacy,
            Some(s) => BoxState::parse(s) == Some(state),
        };
        let country_ok = match self.country.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(c) => geo
                .country
                .as_deref()
                .is_some_and(|g| g.eq_ignore_ascii_case(c)),
        };
        state_ok && country_ok
    }
}

/// Counts per state, for the `boxes` gauge.
pub fn count_states(states: impl IntoIterator<Item = BoxState>) -> BTreeMap<&'static str, i64> {
    let mut counts: BTreeMap<&'static str, i64> =
        BoxState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
    for s in states {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_keeps_the_best_ranked_that_fit() {
        let sizes = vec![300, 300, 800_000, 10];
        assert_eq!(super::fit(sizes.clone(), 1_000_000, |s| *s), sizes);
        // A bloated one ends the answer: the smaller one after it ranked lower.
        assert_eq!(super::fit(sizes.clone(), 800_000, |s| *s), [300, 300]);
        assert_eq!(super::fit(sizes, 100, |s| *s), Vec::<usize>::new());
    }

    use super::*;

    const HB: Duration = Duration::from_secs(5);

    fn info(state: BoxState, last_heartbeat: f64) -> BoxInfo {
        BoxInfo {
            state,
            since: 100.0,
            reason: "registered".into(),
            legacy: false,
            first_seen: 100.0,
            last_heartbeat,
            observed_ip: None,
            public_key: None,
            geo: GeoIp::default(),
            geo_source: "box".into(),
            ban_until: None,
            verified_url: None,
        }
    }

    #[test]
    fn only_the_data_url_a_check_passed_at_is_vouched_for() {
        let mut b = info(BoxState::Active, 1000.0);
        assert!(
            !b.verified_for(Some("http://10.0.0.5:7071")),
            "never checked"
        );
        b.verified_url = Some("http://10.0.0.5:7071".into());
        assert!(b.verified_for(Some("http://10.0.0.5:7071")));
        assert!(b.verified_for(Some("http://10.0.0.5:7071/")));
        assert!(
            !b.verified_for(Some("http://203.0.113.9:80")),
            "switched after the check"
        );
        assert!(!b.verified_for(None));
    }

    #[test]
    fn a_box_is_stale_after_three_missed_heartbeats_and_not_before() {
        let b = info(BoxState::Active, 1000.0);
        assert_eq!(b.effective(1015.0, HB).state, BoxState::Active);
        let e = b.effective(1015.5, HB);
        assert_eq!(e.state, BoxState::Stale);
        assert_eq!(e.since, 1015.0);
        assert_eq!(e.reason, "no heartbeat for 16s (3 missed)");
        assert!(!b.is_live(1016.0, HB, true));
        assert!(b.is_live(1001.0, HB, false));
    }

    #[test]
    fn eviction_wins_over_staleness_but_unreachable_does_not() {
        let evicted = info(BoxState::Evicted, 0.0);
        assert_eq!(evicted.effective(1e6, HB).state, BoxState::Evicted);
        assert!(!evicted.is_live(1.0, HB, true));
        let unreachable = info(BoxState::Unreachable, 1000.0);
        assert_eq!(
            unreachable.effective(1001.0, HB).state,
            BoxState::Unreachable
        );
        assert!(!unreachable.is_live(1001.0, HB, true));
        assert_eq!(unreachable.effective(1016.0, HB).state, BoxState::Stale);
    }

    /// The gauge counts from a [`Tally`]; it must count what a listing shows.
    #[test]
    fn a_tally_comes_to_the_state_its_whole_record_does() {
        for (state, last, now) in [
            (BoxState::Active, 1000.0, 1015.0),
            (BoxState::Active, 1000.0, 1015.5),
            (BoxState::Unreachable, 1000.0, 1001.0),
            (BoxState::Unreachable, 1000.0, 1016.0),
            (BoxState::Evicted, 0.0, 1e6),
        ] {
            let b = info(state, last);
            let tally = Tally {
                state,
                last_heartbeat: last,
                legacy: false,
            };
            assert_eq!(tally.effective(now, HB), b.effective(now, HB).state);
        }
    }

    #[test]
    fn legacy_boxes_only_go_to_publishers_that_opt_in() {
        let mut b = info(BoxState::Active, 1000.0);
        b.legacy = true;
        assert!(!b.is_live(1001.0, HB, false));
        assert!(b.is_live(1001.0, HB, true));
    }

    #[test]
    fn self_preservation_needs_the_threshold_share_and_enough_boxes() {
        assert_eq!(self_preservation(10, 4, 0.5, 3), None);
        let reason = self_preservation(10, 5, 0.5, 3).unwrap();
        assert!(
            reason.starts_with("5 of 10 boxes (50 %) went silent"),
            "{reason}"
        );
        assert_eq!(self_preservation(2, 2, 0.5, 3), None, "too few boxes");
        assert_eq!(self_preservation(0, 0, 0.0, 0), None);
    }

    fn cand(name: &'static str, hb: f64, loc: Option<(f64, f64)>) -> Candidate<&'static str> {
        Candidate {
            last_heartbeat: hb,
            loc,
            item: name,
        }
    }

    #[test]
    fn ranking_freshest_and_nearest() {
        let taipei = Some((25.03, 121.56));
        let tokyo = Some((35.68, 139.65));
        let london = Some((51.5, -0.12));
        let all = vec![
            cand("london", 3.0, london),
            cand("tokyo", 1.0, tokyo),
            cand("nowhere", 5.0, None),
            cand("taipei", 2.0, taipei),
        ];
        assert_eq!(
            rank(all.clone(), SearchOrder::Freshest, None, 10),
            ["nowhere", "london", "taipei", "tokyo"]
        );
        assert_eq!(
            rank(all.clone(), SearchOrder::Nearest, Some((24.0, 121.0)), 10),
            ["taipei", "tokyo", "london", "nowhere"]
        );
        assert_eq!(
            rank(all.clone(), SearchOrder::Nearest, Some((51.0, 0.0)), 2),
            ["london", "tokyo"]
        );
        // Nearest without an origin falls back to freshest.
        assert_eq!(rank(all, SearchOrder::Nearest, None, 1), ["nowhere"]);
    }

    #[test]
    fn filters_by_state_legacy_and_country() {
        let tw = GeoIp {
            country: Some("TW".into()),
            ..GeoIp::default()
        };
        let f = Filter {
            state: Some("active".into()),
            country: Some("tw".into()),
        };
        assert!(f.matches(BoxState::Active, false, &tw));
        assert!(!f.matches(BoxState::Stale, false, &tw));
        assert!(!f.matches(BoxState::Active, false, &GeoIp::default()));
        let legacy = Filter {
            state: Some("legacy".into()),
            country: None,
        };
        assert!(legacy.matches(BoxState::Stale, true, &tw));
        assert!(!legacy.matches(BoxState::Active, false, &tw));
        assert!(Filter::default().matches(BoxState::Evicted, false, &tw));
        assert_eq!(BoxState::parse("Unreachable"), Some(BoxState::Unreachable));
        let counts = count_states([BoxState::Active, BoxState::Active, BoxState::Stale]);
        assert_eq!(counts["active"], 2);
        assert_eq!(counts["evicted"], 0);
    }
}
