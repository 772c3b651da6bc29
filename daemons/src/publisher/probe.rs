//! Serve probes: whether each box the publisher redirects viewers to really
//! serves them. A box can keep its publish session and its heartbeats and still
//! fail viewers — its HTTP side refuses or answers 5xx, or it lost a copy (a
//! disk error, someone cleaning its data directory) and answers 404. Neither the
//! session nor the entrance would ever tell.
//!
//! So the publisher asks the way a viewer would: a `HEAD` of a placed file's
//! viewer URL, one box at a time at most once per `serve_probe_interval`, with a
//! short timeout. New copies are probed first, then every copy in turn. A box
//! whose probe fails is *not serving*: redirects skip it and it takes no new
//! files; the copy that failed is probed again next time. Failing
//! [`LOST_AFTER`] probes in a row, its copies count as lost and the sweep
//! re-places them. A box with no copy left to probe is asked for
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
use futures_util::StreamExt;

use super::{Publisher, now_secs};

/// Probes failed in a row after which a box's copies count as lost. One failure
/// already keeps viewers away; waiting for a second before re-placing keeps one
/// lost packet from moving every file the box holds.
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
        self.failures == 0
    }

    /// Whether the box's copies count as lost.
    pub fn lost(&self) -> bool {
        self.failures >= LOST_AFTER
    }

    /// Takes in a probe's result.
    pub fn record(&mut self, target: &Target, now: u64, result: Result<(), String>) -> Change {
        self.probed_at = Some(now);
        if matches!(target.expect, Expect::Copy { .. }) {
            self.probed.insert(target.url.clone(), now);
        }
        let was_serving = self.serving();
        match result {
            Ok(()) => {
                self.failures = 0;
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
    if health
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

/// Runs until shutdown, unless probes are turned off (`serve_probe_interval = 0`).
pub async fn run(p: Arc<Publisher>) {
    let interval = p.config.serve_probe_interval;
    if interval.is_zero() {
        return;
    }
    // Ticks finer than the interval, so a new copy is probed soon after it is
    // placed; `target` keeps each box to one probe per interval.
    let tick = interval.min(Duration::from_secs(1));
    let http = client(p.config.serve_probe_timeout);
    loop {
        tokio::select! {
            () = p.common.shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        if let Err(e) = round(&p, &http, interval.as_secs().max(1)).await {
            tracing::warn!("serve probes skipped: {e}");
        }
    }
}

async fn round(p: &Publisher, http: &HttpClient, interval: u64) -> Result<(), String> {
    let now = now_secs();
    let files = p.records.all();
    let mut copies: HashMap<NodeId, Vec<Copy>> = HashMap::new();
    // What each copy's size should be, by its URL.
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for known in &files {
        for pl in &known.placements {
            let Ok(id) = pl.box_id.parse::<NodeId>() else {
                continue;
            };
            sizes.insert(&pl.url, known.job.size);
            copies.entry(id).or_default().push(Copy {
                url: pl.url.clone(),
                stored_at: pl.stored_at,
                expires_at: pl.expires_at,
                size: None,
            });
        }
    }
    let mut targets: Vec<Target> = {
        let dir = p.directory.read().await;
        dir.iter()
            .filter_map(|(id, b)| {
                let theirs = copies.get(id).map_or(&[][..], Vec::as_slice);
                target(
                    id,
                    &b.serve,
                    theirs,
                    b.exchange.data_url.as_deref(),
                    now,
                    interval,
                )
            })
            .collect()
    };
    if targets.is_empty() {
        return Ok(());
    }
    for t in &mut targets {
        if let Expect::Copy { size } = &mut t.expect {
            *size = sizes.get(t.url.as_str()).copied();
        }
    }
    let results: Vec<(Target, Option<Result<(), String>>)> = futures_util::stream::iter(targets)
        .map(|t| async move {
            let result = probe(http, &t).await;
            (t, result)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let now = now_secs();
    let mut dir = p.directory.write().await;
    for (id, b) in dir.iter_mut() {
        let urls: HashSet<&str> = copies
            .get(id)
            .map(|c| c.iter().map(|c| c.url.as_str()).collect())
            .unwrap_or_default();
        b.serve.keep_copies(&urls);
    }
    for (t, result) in results {
        let Some(result) = result else { continue };
        if result.is_err() {
            p.metrics.probe_failures.inc();
        }
        let Some(b) = dir.get_mut(&t.box_id) else {
            continue;
        };
        match b.serve.record(&t, now, result) {
            Change::Failing => tracing::warn!(
                box_id = %t.box_id,
                "the box fails to serve viewers ({}); redirects skip it",
                b.serve.error.as_deref().unwrap_or("")
            ),
            Change::Recovered => {
                tracing::info!(box_id = %t.box_id, url = %t.url, "the box serves viewers again");
            }
            Change::Unchanged if b.serve.failures == LOST_AFTER => tracing::warn!(
                box_id = %t.box_id,
                "the box still fails to serve viewers ({}); its copies count as lost",
                b.serve.error.as_deref().unwrap_or("")
            ),
            Change::Unchanged => {}
        }
    }
    Ok(())
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
        assert!(!h.serving() && !h.lost());
        // The failed copy again, though the other was never probed.
        let again = target(&id(), &h, &copies, Some("http://b/"), 101, 1).unwrap();
        assert_eq!(again.url, t.url);
        assert_eq!(h.record(&again, 101, Err("404".into())), Change::Unchanged);
        assert!(h.lost());
        // The sweep re-placed its copies: nothing left but the greeting.
        let hello = target(&id(), &h, &[], Some("http://b/"), 102, 1).unwrap();
        assert_eq!(hello.url, format!("http://b/dandelion/{}/", id()));
        assert_eq!(hello.expect, Expect::Hello);
        assert_eq!(h.record(&hello, 102, Ok(())), Change::Recovered);
        assert!(h.serving() && h.failed_url.is_none());
        assert_eq!(target(&id(), &h, &[], None, 200, 1), None);
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
