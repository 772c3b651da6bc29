//! The offload ledger: how much of what viewers fetched came from boxes, per
//! stream (`paths::stream_of`: a file's directory) and in total. Three figures
//! each: viewer bytes the boxes served (their own counters, asked over a
//! publish session — the boxes' word), bytes the publisher served itself
//! (origin fallbacks and playlists), and bytes it uploaded to boxes (each
//! confirmed copy's size). The share of viewer bytes served by boxes is the
//! figure operators watch: the publisher's uplink is what Dandelion saves.
//!
//! [`Ledger`] is the arithmetic, [`collect`] the task that asks the boxes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dandelion_core::connection::{Incoming, connect_as};
use dandelion_core::console::{OffloadRow as Row, OffloadStream, OffloadView};
use dandelion_core::ids::NodeId;
use dandelion_core::protocol::{Header, Message, ServedCount, TrafficQuery};
use futures_util::StreamExt;

use super::{Publisher, now_secs};

/// Streams the ledger keeps apart; later ones are counted under
/// [`OTHER_STREAMS`], which bounds memory and the metrics' label values.
pub const MAX_STREAMS: usize = 1024;
pub const OTHER_STREAMS: &str = "(other streams)";

/// How often boxes are asked what they served.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Boxes that held a copy this long ago are still asked: what a copy served
/// before it expired is counted by the box until the publisher collects it.
const ASK_AFTER_HOLDING_SECS: u64 = 600;

/// Boxes asked at once, and how long one has to answer.
const PARALLEL: usize = 8;
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A box's last answer: when its counters started, and their values.
#[derive(Debug, Clone, Default)]
struct Reported {
    since: u64,
    streams: BTreeMap<String, ServedCount>,
}

#[derive(Debug, Default)]
pub struct Ledger {
    streams: HashMap<String, Row>,
    reported: HashMap<NodeId, Reported>,
    /// Streams this publisher placed a copy of: the only ones a box's report
    /// is taken for, so a box cannot fill the ledger (and the metrics' labels)
    /// with names of its own.
    placed: std::collections::HashSet<String>,
}

/// Streams remembered as placed; past it, reports of new ones are not taken.
const MAX_PLACED_STREAMS: usize = 65_536;

impl Ledger {
    /// The row `stream` is counted in: its own, or [`OTHER_STREAMS`] past the cap.
    fn row(&mut self, stream: &str) -> (String, &mut Row) {
        let key = if self.streams.contains_key(stream) || self.streams.len() < MAX_STREAMS - 1 {
            stream
        } else {
            OTHER_STREAMS
        };
        let row = self.streams.entry(key.to_owned()).or_default();
        (key.to_owned(), row)
    }

    /// The publisher served `bytes` of a file of `stream` itself; returns the
    /// stream's row name.
    pub fn origin(&mut self, stream: &str, bytes: u64) -> String {
        let (key, row) = self.row(stream);
        row.origin_bytes = row.origin_bytes.saturating_add(bytes);
        key
    }

    /// A box confirmed storing a copy of `bytes` of `stream`.
    pub fn uploaded(&mut self, stream: &str, bytes: u64) -> String {
        if self.placed.len() < MAX_PLACED_STREAMS && !self.placed.contains(stream) {
            self.placed.insert(stream.to_owned());
        }
        let (key, row) = self.row(stream);
        row.uploaded_bytes = row.uploaded_bytes.saturating_add(bytes);
        key
    }

    /// Takes in a box's counters; returns what they add, per stream row. A box
    /// whose `since` changed restarted: its counts began again, all new. A
    /// count that went down (which an honest box never reports) adds nothing,
    /// and neither does a stream this publisher never placed a copy of.
    pub fn take_report(
        &mut self,
        box_id: &NodeId,
        since: u64,
        streams: BTreeMap<String, ServedCount>,
    ) -> Vec<(String, ServedCount)> {
        let before = self
            .reported
            .get(box_id)
            .filter(|r| r.since == since)
            .cloned()
            .unwrap_or_default();
        let mut added = Vec::new();
        for (stream, now) in &streams {
            if !self.placed.contains(stream) {
                continue;
            }
            let was = before.streams.get(stream).copied().unwrap_or_default();
            let delta = ServedCount {
                bytes: now.bytes.saturating_sub(was.bytes),
                requests: now.requests.saturating_sub(was.requests),
            };
            if delta == ServedCount::default() {
                continue;
            }
            let (key, row) = self.row(stream);
            row.box_bytes = row.box_bytes.saturating_add(delta.bytes);
            row.box_requests = row.box_requests.saturating_add(delta.requests);
            added.push((key, delta));
        }
        self.reported
            .insert(box_id.clone(), Reported { since, streams });
        added
    }

    /// Forgets the last answers of boxes not in `keep`, so the ledger stays as
    /// small as the boxes in use (their counts so far stay counted).
    pub fn keep_boxes(&mut self, keep: &dyn Fn(&NodeId) -> bool) {
        self.reported.retain(|id, _| keep(id));
    }

    pub fn view(&self) -> OffloadView {
        let mut total = Row::default();
        let mut streams: Vec<OffloadStream> = self
            .streams
            .iter()
            .map(|(stream, row)| {
                total.add(row);
                OffloadStream {
                    stream: stream.clone(),
                    row: *row,
                    box_share: row.box_share(),
                }
            })
            .collect();
        streams.sort_by(|a, b| {
            let viewer = |s: &OffloadStream| s.row.box_bytes.saturating_add(s.row.origin_bytes);
            viewer(b)
                .cmp(&viewer(a))
                .then_with(|| a.stream.cmp(&b.stream))
        });
        OffloadView {
            total,
            box_share: total.box_share(),
            streams,
        }
    }
}

/// Runs until shutdown: every [`INTERVAL`], asks each box that holds (or held,
/// within ten minutes) a copy what it served of this publisher's files, and
/// folds the answers into the ledger. One short publish session per box and
/// round, opened like any other (the box proves its ID first).
pub async fn collect(p: Arc<Publisher>) {
    let mut held: HashMap<NodeId, u64> = HashMap::new();
    loop {
        tokio::select! {
            () = p.common.shutdown.cancelled() => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
        let now = now_secs();
        for known in p.records.all() {
            for pl in &known.placements {
                if let Ok(id) = pl.box_id.parse::<NodeId>() {
                    held.insert(id, now);
                }
            }
        }
        held.retain(|_, at| now.saturating_sub(*at) <= ASK_AFTER_HOLDING_SECS);
        let asks: Vec<(NodeId, String)> = {
            let dir = p.directory.read().await;
            held.keys()
                .filter_map(|id| Some((id.clone(), dir.get(id)?.exchange.connect_ws.clone()?)))
                .collect()
        };
        let answers: Vec<_> = futures_util::stream::iter(asks)
            .map(|(id, url)| {
                let p = p.clone();
                async move {
                    let answer = tokio::time::timeout(ANSWER_WITHIN, ask(&p, &id, &url)).await;
                    (id, answer)
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (id, answer) in answers {
            match answer {
                Ok(Ok((since, streams))) => {
                    let added = p.ledger().take_report(&id, since, streams);
                    for (stream, count) in added {
                        p.metrics
                            .offload_box_bytes
                            .get_or_create(&super::StreamLabel { stream })
                            .inc_by(count.bytes);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(box_id = %id, "cannot ask the box what it served: {e}")
                }
                Err(_) => {
                    tracing::debug!(box_id = %id, "the box did not say what it served in time")
                }
            }
        }
        let share = {
            let mut ledger = p.ledger();
            ledger.keep_boxes(&|id| held.contains_key(id));
            ledger.view().box_share
        };
        p.metrics.offload_box_share.set(share.unwrap_or(0.0));
        p.common.console.touch();
    }
}

/// One box's counters for this publisher's files.
async fn ask(
    p: &Publisher,
    box_id: &NodeId,
    url: &str,
) -> Result<(u64, BTreeMap<String, ServedCount>), String> {
    let identity = &p.common.identity;
    let mut conn = connect_as(url, box_id, identity, None)
        .await
        .map_err(|e| e.to_string())?;
    conn.send(&Message::Traffic(TrafficQuery {
        header: Header::new(identity.id().clone()),
    }))
    .await
    .map_err(|e| e.to_string())?;
    let answer = loop {
        match conn.recv().await {
            Ok(Some(Incoming::Message(Message::TrafficReply(r)))) => {
                break Ok((r.since, r.streams));
            }
            Ok(Some(Incoming::Message(Message::Error(e)))) => {
                break Err(format!("refused: {}", e.error));
            }
            Ok(Some(_)) => {}
            Ok(None) => break Err("the box closed the session".to_owned()),
            Err(e) => break Err(e.to_string()),
        }
    };
    conn.close().await;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(bytes: u64, requests: u64) -> ServedCount {
        ServedCount { bytes, requests }
    }

    fn box_id(n: u8) -> NodeId {
        NodeId::parse(&format!("box-{n:032x}")).unwrap()
    }

    #[test]
    fn reports_add_what_grew_and_a_restart_starts_the_count_again() {
        let mut l = Ledger::default();
        let a = box_id(1);
        l.uploaded("live", 4000);
        let added = l.take_report(&a, 100, [("live".into(), count(1000, 2))].into());
        assert_eq!(added, vec![("live".to_owned(), count(1000, 2))]);
        assert!(
            l.take_report(&a, 100, [("live".into(), count(1000, 2))].into())
                .is_empty()
        );
        l.take_report(&a, 100, [("live".into(), count(1500, 3))].into());
        // Restarted: its counters began again at 0.
        l.take_report(&a, 200, [("live".into(), count(300, 1))].into());
        // A count that went down adds nothing.
        l.take_report(&a, 200, [("live".into(), count(100, 1))].into());
        l.origin("live", 500);
        // A stream no copy was placed of is a box's invention.
        assert!(
            l.take_report(&a, 200, [("spam".into(), count(1 << 40, 1))].into())
                .is_empty()
        );
        let v = l.view();
        assert_eq!(v.total.box_bytes, 1800);
        assert_eq!(v.total.box_requests, 4);
        assert_eq!(v.total.origin_bytes, 500);
        assert_eq!(v.total.uploaded_bytes, 4000);
        assert!((v.box_share.unwrap() - 1800.0 / 2300.0).abs() < 1e-9);
        assert_eq!(v.streams[0].stream, "live");
    }

    #[test]
    fn streams_past_the_cap_share_a_row_and_an_empty_ledger_has_no_share() {
        let mut l = Ledger::default();
        assert_eq!(l.view().box_share, None);
        for i in 0..MAX_STREAMS + 5 {
            l.origin(&format!("s{i}"), 1);
        }
        let v = l.view();
        assert_eq!(v.streams.len(), MAX_STREAMS);
        assert_eq!(v.total.origin_bytes, (MAX_STREAMS + 5) as u64);
        let other = v
            .streams
            .iter()
            .find(|s| s.stream == OTHER_STREAMS)
            .unwrap();
        assert_eq!(other.row.origin_bytes, 6);
    }
}
