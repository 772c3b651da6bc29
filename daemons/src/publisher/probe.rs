//! Serve probes: whether each box the publisher redirects viewers to really
//! serves them. A box can keep its publish session and its heartbeats and still
//! fail viewers — its HTTP side refuses or answers 5xx, or it lost a copy (a
//! disk error, someone cleaning its data directory) and answers 404. Neither the
//! session nor the entrance would ever tell.
//!
//! So the publisher asks the way a viewer would: a `HEAD` of a placed file's
//! viewer URL, one box at a time at most once per `serve_probe_interval` (every
//! second for a box viewers are being sent to), with a short timeout. New
//! copies are probed first, then every copy in turn. A box whose probe fails
//! is *not serving*: redirects skip it and it takes no new
//! files; the copy that failed is probed again next time. Failing
//! [`LOST_AFTER`] probes in a row over `replace_after`, its copies count as lost
//! and the sweep re-places them. A box with no copy left to probe is asked for
//! `/dandelion/<box-id>/` (the original's "HI <box-id>") to see whether its
//! HTTP side answers again. Any probe that succeeds makes it serving again.
//!
//! [`target`], [`verdict`] and [`ServeHealth::record`] are the decisions, plain
//! functions; [`run`] is the task around them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dandelion_core::http::HttpClient;
use dandelion_core::ids::NodeId;

use super::{Publisher, now_secs};

/// Probes failed in a row, over `replace_after` at least, after which a box's
/// copies count as lost. One failure already keeps viewers away; waiting keeps a
/// lost packet or a restart from moving every file the box holds.
pub const LOST_AFTER: u32 = 2;

/// Copies with less TTL left than this are not probed: a box may delete a copy a
/// moment before the publisher's clock says it expires, and a 404 then says
/// nothing about the box.
const MIN_TTL_TO_PROBE: u64 = 3;

/// Probes in flight at once, across all boxes.
const PARALLEL: usize = 16;

/// What the publisher learned from probing one box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServeHealth {
    /// When the box was last probed (Unix seconds).
    pub probed_at: Option<u64>,
    /// Probes that failed in a row; 0 once one succeeds.
    pub failures: u32,
    /// Probes answered, ever: a box none answered is still on probation.
    pub answered: u32,
    /// Why the last probe failed.
    pub error: Option<String>,
    /// The copy whose probe failed, probed again until it answers or the box's
    /// copies are given up.
    pub failed_url: Option<String>,
    /// When each copy was last probed, so probes go round every copy.
    probed: HashMap<String, u64>,
    /// Why an entrance said the box left (its session dropped, it expired…):
    /// viewers skip it until a probe shows it serving.
    pub doubt: Option<String>,
    /// Probe it at the next tick, whatever the interval says.
    pub probe_soon: bool,
    /// When its probes started failing (Unix seconds).
    pub failing_since: Option<u64>,
}

/// How a probe result changed a box's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// It was serving and now is not.
    Failing,
    /// It was not serving and now is.
    Recovered,
}

impl ServeHealth {
    /// Whether viewers may be sent to the box and it may take new files.
    pub fn serving(&self) -> bool {
        self.failures == 0 && self.doubt.is_none()
    }

    /// Whether the box's copies count as lost: [`LOST_AFTER`] probes failed in a
    /// row, over at least `min_secs`. Probes come every second while viewers
    /// are sent to a box; the span keeps that from moving every copy a box
    /// holds within two seconds of a hiccup.
    pub fn lost(&self, now: u64, min_secs: u64) -> bool {
        self.failures >= LOST_AFTER
            && self
                .failing_since
                // Strictly more: times are whole seconds, and "8 s" must never
                // be 7.1 s of real time.
                .is_some_and(|since| now.saturating_sub(since) > min_secs)
    }

    /// Takes in an entrance's word about the box (`BOX_STATE`): any state but
    /// `active` keeps viewers away until a probe succeeds; either way the box is
    /// probed at once. True when viewers were being sent to it until now.
    pub fn hint(&mut self, state: &str, reason: Option<&str>) -> bool {
        self.probe_soon = true;
        if state == "active" {
            return false;
        }
        let was_serving = self.serving();
        self.doubt = Some(match reason {
            Some(r) => format!("an entrance says it is {state}: {r}"),
            None => format!("an entrance says it is {state}"),
        });
        was_serving
    }

    /// Takes in a probe's result.
    pub fn record(&mut self, target: &Target, now: u64, result: Result<(), String>) -> Change {
        self.probed_at = Some(now);
        if matches!(target.expect, Expect::Copy { .. }) {
            self.probed.insert(target.url.clone(), now);
        }
        let was_serving = self.serving();
        self.probe_soon = false;
        match result {
            Ok(()) => {
                self.failures = 0;
                self.failing_since = None;
                self.doubt = None;
                self.answered = self.answered.saturating_add(1);
                self.error = None;
                self.failed_url = None;
                if was_serving {
                    Change::Unchanged
                } else {
                    Change::Recovered
                }
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                self.failing_since.get_or_insert(now);
                self.error = Some(e);
                if matches!(target.expect, Expect::Copy { .. }) {
                    self.failed_url = Some(target.url.clone());
                }
                if was_serving {
                    Change::Failing
                } else {
                    Change::Unchanged
                }
            }
        }
    }

    /// A probe that could not be made (a URL that is not HTTP): nothing learned,
    /// but not to be tried again before the interval.
    pub fn skipped(&mut self, now: u64) {
        self.probed_at = Some(now);
        self.probe_soon = false;
    }

    /// Forgets copies the box no longer holds, so the record stays as small as
    /// the placements.
    pub fn keep_copies(&mut self, urls: &HashSet<&str>) {
        self.probed.retain(|url, _| urls.contains(url.as_str()));
    }
}

/// A copy of a file that a box confirmed it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub url: String,
    pub stored_at: u64,
    pub expires_at: u64,
    /// The file's size, when the job is still known.
    pub size: Option<u64>,
}

/// What a probe expects to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A stored copy: a success answer to `HEAD`, of the file's size.
    Copy { size: Option<u64> },
    /// The box's own greeting, `HI <box-id>`.
    Hello,
}

/// One probe to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub box_id: NodeId,
    pub url: String,
    pub expect: Expect,
}

/// What to probe on one box now, if anything: nothing until `interval` has
/// passed since its last probe; on a failing box, the copy that failed (or any
/// copy, or its greeting when it holds none); on a serving box, the copy probed
/// longest ago, new copies first and the newest of them first.
pub fn target(
    box_id: &NodeId,
    health: &ServeHealth,
    copies: &[Copy],
    data_url: Option<&str>,
    now: u64,
    interval: u64,
) -> Option<Target> {
    if !health.probe_soon
        && health
            .probed_at
            .is_some_and(|at| now < at.saturating_add(interval))
    {
        return None;
    }
    let usable: Vec<&Copy> = copies
        .iter()
        .filter(|c| c.expires_at >= now.saturating_add(MIN_TTL_TO_PROBE))
        .collect();
    let of_copy = |c: &Copy| Target {
        box_id: box_id.clone(),
        url: c.url.clone(),
        expect: Expect::Copy { size: c.size },
    };
    if !health.serving() {
        let again = health
            .failed_url
            .as_deref()
            .and_then(|failed| usable.iter().find(|c| c.url == failed))
            .or_else(|| usable.iter().max_by_key(|c| (c.stored_at, &c.url)));
        return match again {
            Some(c) => Some(of_copy(c)),
            None => data_url.map(|base| Target {
                box_id: box_id.clone(),
                url: format!("{}/dandelion/{box_id}/", base.trim_end_matches('/')),
                expect: Expect::Hello,
            }),
        };
    }
    usable
        .iter()
        .min_by_key(|c| {
            (
                health.probed.get(&c.url).copied().unwrap_or(0),
                std::cmp::Reverse(c.stored_at),
                &c.url,
            )
        })
        .map(|c| of_copy(c))
}

/// Whether a probe's answer shows the box serving.
pub fn verdict(
    target: &Target,
    status: u16,
    content_length: Option<u64>,
    body: &[u8],
) -> Result<(), String> {
    if !(200..300).contains(&status) {
        return Err(format!("{} answered {status}", target.url));
    }
    match &target.expect {
        Expect::Copy { size: Some(size) } => match content_length {
            Some(len) if len != *size => Err(format!(
                "{} has {len} bytes, not the {size} the box stored",
                target.url
            )),
            _ => Ok(()),
        },
        Expect::Copy { size: None } => Ok(()),
        Expect::Hello => {
            let expected = format!("HI {}", target.box_id);
            if String::from_utf8_lossy(body).trim() == expected {
                Ok(())
            } else {
                Err(format!(
                    "{} is not answered by {}",
                    target.url, target.box_id
                ))
            }
        }
    }
}

/// The client probes use: plain HTTP with the probe timeout. The user agent says
/// what the request is, for a box operator reading the box's logs.
pub fn client(timeout: Duration) -> HttpClient {
    HttpClient::new(timeout).with_body_limit(4096)
}

/// Probes one target; `None` when it cannot be probed at all (a URL that is
/// neither `http://` nor `https://`): that says nothing about the box.
async fn probe(http: &HttpClient, target: &Target) -> Option<Result<(), String>> {
    use dandelion_core::http::HttpError;
    let method = match target.expect {
        Expect::Copy { .. } => http::Method::HEAD,
        Expect::Hello => http::Method::GET,
    };
    let headers = [("user-agent", "dandelion-publisher serve-probe")];
    match http
        .request(method, &target.url, &headers, bytes::Bytes::new())
        .await
    {
        Ok(r) => {
            let length = r
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            Some(verdict(target, r.status.as_u16(), length, &r.body))
        }
        Err(HttpError::BadUrl(_)) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

/// How often the prober looks for boxes due a probe.
const TICK: Duration = Duration::from_millis(250);

/// A box a viewer was sent to within this many seconds is *hot*: probed every
/// [`HOT_INTERVAL_SECS`] with at most [`HOT_TIMEOUT`] to answer, so that one
/// that stops (killed, frozen, its line cut) leaves viewers' redirects within
/// about two seconds: the interval, a tick, the timeout.
const HOT_FOR_SECS: u64 = 10;
const HOT_INTERVAL_SECS: u64 = 1;
const HOT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Ticks between sweeps of the per-copy probe records.
const TIDY_EVERY_TICKS: u32 = 40;

/// Runs until shutdown, unless probes are turned off (`serve_probe_interval = 0`).
///
/// Each probe runs as its own task and is recorded the moment it ends, so a box
/// that hangs until the timeout holds up nobody else's verdict; a box has at
/// most one probe in flight.
pub async fn run(p: Arc<Publisher>) {
    let interval = p.config.serve_probe_interval;
    if interval.is_zero() {
        return;
    }
    let interval = interval.as_secs().max(1);
    let normal = Arc::new(client(p.config.serve_probe_timeout));
    let hot = Arc::new(client(p.config.serve_probe_timeout.min(HOT_TIMEOUT)));
    let permits = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let in_flight: Arc<std::sync::Mutex<HashSet<NodeId>>> = Arc::default();
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            () = p.common.shutdown.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
            () = p.probe_wake.notified() => {}
        }
        ticks = ticks.wrapping_add(1);
        let busy = in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let due = plan(&p, interval, &busy, ticks.is_multiple_of(TIDY_EVERY_TICKS)).await;
        for (target, is_hot) in due {
            in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(target.box_id.clone());
            let http = if is_hot { hot.clone() } else { normal.clone() };
            let (p, permits, in_flight) = (p.clone(), permits.clone(), in_flight.clone());
            tokio::spawn(async move {
                if let Ok(_permit) = permits.acquire_owned().await {
                    let result = probe(&http, &target).await;
                    record(&p, &target, result).await;
                }
                in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&target.box_id);
            });
        }
    }
}

/// The probes due now, hot boxes first, leaving out boxes in `busy` (a probe
/// in flight); with `tidy`, also forgets probe records of copies no longer placed.
async fn plan(
    p: &Publisher,
    interval: u64,
    busy: &HashSet<NodeId>,
    tidy: bool,
) -> Vec<(Target, bool)> {
    let now = now_secs();
    // The boxes a probe may be due for, and whether each is hot, from the
    // directory alone: most ticks find none, and then the placements are not
    // read at all (this runs four times a second).
    let candidates: HashMap<NodeId, (u64, bool)> = {
        let dir = p.directory.read().await;
        dir.iter()
            .filter(|(id, _)| !busy.contains(*id))
            .filter_map(|(id, b)| {
                let sent = b.redirected_at.get();
                let is_hot = sent > 0 && now.saturating_sub(sent) <= HOT_FOR_SECS;
                let every = if is_hot { HOT_INTERVAL_SECS } else { interval };
                let due = b.serve.probe_soon
                    || b.serve
                        .probed_at
                        .is_none_or(|at| now >= at.saturating_add(every));
                due.then(|| (id.clone(), (every, is_hot)))
            })
            .collect()
    };
    if candidates.is_empty() && !tidy {
        return Vec::new();
    }
    let files = p.records.all();
    let mut copies: HashMap<NodeId, Vec<Copy>> = HashMap::new();
    // What each copy's size should be, by its URL.
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for known in &files {
        for pl in &known.placements {
            let Ok(id) = pl.box_id.parse::<NodeId>() else {
                continue;
            };
            if !tidy && !candidates.contains_key(&id) {
                continue;
            }
            sizes.insert(&pl.url, known.job.size);
            copies.entry(id).or_default().push(Copy {
                url: pl.url.clone(),
                stored_at: pl.stored_at,
                expires_at: pl.expires_at,
                size: None,
            });
        }
    }
    if tidy {
        let mut dir = p.directory.write().await;
        for (id, b) in dir.iter_mut() {
            let urls: HashSet<&str> = copies
                .get(id)
                .map(|c| c.iter().map(|c| c.url.as_str()).collect())
                .unwrap_or_default();
            b.serve.keep_copies(&urls);
        }
    }
    let mut due: Vec<(Target, bool)> = {
        let dir = p.directory.read().await;
        candidates
            .iter()
            .filter_map(|(id, &(every, is_hot))| {
                let b = dir.get(id)?;
                let theirs = copies.get(id).map_or(&[][..], Vec::as_slice);
                let data_url = b.exchange.data_url.as_deref();
                target(id, &b.serve, theirs, data_url, now, every).map(|t| (t, is_hot))
            })
            .collect()
    };
    for (t, _) in &mut due {
        if let Expect::Copy { size } = &mut t.expect {
            *size = sizes.get(t.url.as_str()).copied();
        }
    }
    due.sort_by_key(|(_, is_hot)| !is_hot);
    due
}

/// Takes in one probe's result the moment it is known.
async fn record(p: &Publisher, t: &Target, result: Option<Result<(), String>>) {
    let now = now_secs();
    let mut dir = p.directory.write().await;
    let lost_after = dir.replace_after_secs;
    let Some(b) = dir.get_mut(&t.box_id) else {
        return;
    };
    let Some(result) = result else {
        b.serve.skipped(now);
        return;
    };
    if result.is_err() {
        p.metrics.probe_failures.inc();
    }
    let was_lost = b.serve.lost(now, lost_after);
    match b.serve.record(t, now, result) {
        Change::Failing => tracing::warn!(
            box_id = %t.box_id,
            "the box fails to serve viewers ({}); redirects skip it",
            b.serve.error.as_deref().unwrap_or("")
        ),
        Change::Recovered => {
            // Back (a restart, say): what cooled it off is over, and it keeps
            // the copies it still serves.
            b.failing_until = 0;
            tracing::info!(box_id = %t.box_id, url = %t.url, "the box serves viewers again");
        }
        Change::Unchanged => {}
    }
    if !was_lost && b.serve.lost(now, lost_after) {
        tracing::warn!(
            box_id = %t.box_id,
            "the box still fails to serve viewers ({}); its copies count as lost",
            b.serve.error.as_deref().unwrap_or("")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeId {
        NodeId::parse(&format!("box-{:032x}", 7)).unwrap()
    }

    fn copy(url: &str, stored_at: u64) -> Copy {
        Copy {
            url: url.into(),
            stored_at,
            expires_at: 1_000,
            size: Some(10),
        }
    }

    #[test]
    fn one_probe_per_box_per_interval_new_copies_first_then_round_robin() {
        let mut h = ServeHealth::default();
        let copies = [copy("http://b/a", 10), copy("http://b/b", 20)];
        let t = target(&id(), &h, &copies, None, 100, 10).unwrap();
        assert_eq!(t.url, "http://b/b", "the newest unprobed copy");
        assert_eq!(h.record(&t, 100, Ok(())), Change::Unchanged);
        assert_eq!(target(&id(), &h, &copies, None, 109, 10), None);
        let t = target(&id(), &h, &copies, None, 110, 10).unwrap();
        assert_eq!(t.url, "http://b/a");
        h.record(&t, 110, Ok(()));
        let fresh = [
            copy("http://b/a", 10),
            copy("http://b/b", 20),
            copy("http://b/c", 115),
        ];
        assert_eq!(
            target(&id(), &h, &fresh, None, 120, 10).unwrap().url,
            "http://b/c"
        );
        assert_eq!(
            target(&id(), &h, &copies, None, 120, 10).unwrap().url,
            "http://b/b"
        );
    }

    #[test]
    fn a_serving_box_without_copies_and_copies_about_to_expire_are_not_probed() {
        let h = ServeHealth::default();
        assert_eq!(target(&id(), &h, &[], Some("http://b"), 0, 10), None);
        let ending = Copy {
            expires_at: 102,
            ..copy("http://b/a", 10)
        };
        assert_eq!(
            target(&id(), &h, &[ending], Some("http://b"), 100, 10),
            None
        );
    }

    #[test]
    fn a_failing_box_is_probed_on_the_failed_copy_then_its_greeting_until_it_answers() {
        let mut h = ServeHealth::default();
        let copies = [copy("http://b/a", 10), copy("http://b/b", 20)];
        let t = target(&id(), &h, &copies, Some("http://b/"), 100, 1).unwrap();
        assert_eq!(h.record(&t, 100, Err("404".into())), Change::Failing);
        assert!(!h.serving() && !h.lost(100, 0));
        // The failed copy again, though the other was never probed.
        let again = target(&id(), &h, &copies, Some("http://b/"), 101, 1).unwrap();
        assert_eq!(again.url, t.url);
        assert_eq!(h.record(&again, 101, Err("404".into())), Change::Unchanged);
        assert!(h.lost(101, 0));
        assert!(!h.lost(101, 1), "not before failing for the span");
        assert!(h.lost(102, 1));
        // The sweep re-placed its copies: nothing left but the greeting.
        let hello = target(&id(), &h, &[], Some("http://b/"), 102, 1).unwrap();
        assert_eq!(hello.url, format!("http://b/dandelion/{}/", id()));
        assert_eq!(hello.expect, Expect::Hello);
        assert_eq!(h.record(&hello, 102, Ok(())), Change::Recovered);
        assert!(h.serving() && h.failed_url.is_none());
        assert_eq!(target(&id(), &h, &[], None, 200, 1), None);
    }

    #[test]
    fn an_entrance_saying_a_box_left_keeps_viewers_away_until_a_probe_answers() {
        let mut h = ServeHealth::default();
        let copies = [copy("http://b/a", 10)];
        let t = target(&id(), &h, &copies, None, 100, 10).unwrap();
        h.record(&t, 100, Ok(()));
        assert_eq!(target(&id(), &h, &copies, None, 101, 10), None);
        assert!(
            h.hint("disconnected", Some("its session ended")),
            "it was serving"
        );
        assert!(!h.serving(), "viewers skip it at once");
        assert!(!h.lost(101, 0), "its copies still count");
        let again = target(&id(), &h, &copies, None, 101, 10).expect("probed at once");
        assert_eq!(h.record(&again, 101, Ok(())), Change::Recovered);
        assert!(h.serving());
        // Back, by its entrance's word: probed at once, but nothing changes until then.
        h.record(&again, 102, Err("refused".into()));
        assert!(!h.hint("active", None));
        assert!(!h.serving());
        assert!(target(&id(), &h, &copies, None, 102, 10).is_some());
    }

    #[test]
    fn verdicts() {
        let t = Target {
            box_id: id(),
            url: "http://b/a".into(),
            expect: Expect::Copy { size: Some(10) },
        };
        assert_eq!(verdict(&t, 200, Some(10), b""), Ok(()));
        assert_eq!(verdict(&t, 200, None, b""), Ok(()));
        assert_eq!(
            verdict(&t, 404, None, b"").unwrap_err(),
            "http://b/a answered 404"
        );
        assert_eq!(
            verdict(&t, 503, None, b"").unwrap_err(),
            "http://b/a answered 503"
        );
        assert!(
            verdict(&t, 200, Some(9), b"")
                .unwrap_err()
                .contains("9 bytes")
        );
        let hello = Target {
            expect: Expect::Hello,
            ..t
        };
        assert_eq!(
            verdict(&hello, 200, None, format!("HI {}", id()).as_bytes()),
            Ok(())
        );
        assert!(verdict(&hello, 200, None, b"HI box-other").is_err());
    }
}
