//! The publisher's console feed — its files with their placements and the
//! reasons behind them, the sending queue and the box ranking — and the one
//! description of a file that the API and `dandelion where` answer too.

use std::sync::Arc;

use async_trait::async_trait;
use dandelion_core::console::{
    FailureView, FileView, PlacementView, PublisherView, RankRow, Update,
};

use super::jobs::{Job, Placement};
use super::ranking::rank;
use super::{Publisher, now_secs};
use crate::console::Source;

/// A job and its placements as users see them.
pub fn file_view(job: &Job, placements: &[Placement], now: u64) -> FileView {
    FileView {
        name: job.name.clone(),
        size: job.size,
        sha256: job.sha256.clone(),
        state: job.state.as_str().to_owned(),
        ttl_left: job.ttl_left(now),
        replicas: job.replicas,
        attempts: job.attempts,
        failures: job
            .failures
            .iter()
            .map(|f| FailureView {
                box_id: f.box_id.clone(),
                reason: f.reason.clone(),
                at: f.at,
            })
            .collect(),
        placements: placements
            .iter()
            .map(|pl| PlacementView {
                box_id: pl.box_id.clone(),
                url: pl.url.clone(),
                ttl_left: pl.expires_at.saturating_sub(now),
                why: pl.trace.clone(),
            })
            .collect(),
    }
}

/// The current ranking of every known box, best first.
pub async fn ranking(p: &Publisher) -> Vec<RankRow> {
    let now = now_secs();
    let ranked = {
        let dir = p.directory.read().await;
        rank(&dir.candidates(p.audience, now), &p.weights)
    };
    ranked
        .iter()
        .map(|r| RankRow {
            box_id: r.id.to_string(),
            score: r.score,
            nearness: r.factors.nearness,
            spare_upload: r.factors.spare_upload,
            storage: r.factors.storage,
            reliability: r.factors.reliability,
            throughput: r.factors.throughput,
            probation: r.probation,
        })
        .collect()
}

/// The publisher as a console [`Source`].
#[derive(Debug)]
pub struct Feed(pub Arc<Publisher>);

#[async_trait]
impl Source for Feed {
    async fn view(&self) -> Result<Update, String> {
        let p = &self.0;
        let records = p.records.all();
        let (queue, sending) = p.queue.snapshot().await.map_err(|e| e.to_string())?;
        let now = now_secs();
        let mut files: Vec<FileView> = records
            .iter()
            .map(|k| file_view(&k.job, &k.placements, now))
            .collect();
        // Newest first: what an operator pushed last is what they look for.
        files.sort_by(|a, b| b.ttl_left.cmp(&a.ttl_left).then(a.name.cmp(&b.name)));
        Ok(Update::Publisher(PublisherView {
            files,
            ranking: ranking(p).await,
            queue,
            sending,
            known_boxes: p.directory.read().await.len(),
            offload: Some(p.ledger().view()),
        }))
    }
}
