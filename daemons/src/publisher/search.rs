//! Finding boxes: every search interval, ask every known entrance for boxes and
//! fold the answers into the directory. When an entrance is down, or answers
//! something too large or malformed, the publisher keeps what it last learned:
//! boxes are forgotten only in rounds every entrance answered, so no entrance
//! (or whoever fills its answers) can make the publisher forget its boxes.

use std::sync::Arc;

use dandelion_core::connection::{ConnectionError, Incoming, connect_as};
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{GeoIp, Header, Message, Search, SearchOrder};

use super::{Publisher, now_secs};
use crate::health;

/// Boxes no entrance listed for this many search intervals are forgotten.
const FORGET_AFTER_INTERVALS: u64 = 6;

/// Runs until shutdown.
pub async fn run(publisher: Arc<Publisher>) {
    let interval = publisher.config.search_interval;
    let mut all_down_reported = false;
    loop {
        let mut answered = 0;
        let entrances = publisher.entrances();
        for entrance in &entrances {
            let url = entrance.url();
            match search_one(&publisher, entrance).await {
                Ok(found) => {
                    answered += 1;
                    if publisher.common.health.set(&health::entrance(url), None) {
                        tracing::info!(entrance = %url, "the entrance answers searches again");
                    }
                    tracing::debug!(entrance = %url, boxes = found, "search answered");
                }
                Err(e) => {
                    publisher.metrics.search_failures.inc();
                    let problem = format!("search failed: {e}");
                    if publisher
                        .common
                        .health
                        .set(&health::entrance(url), Some(problem.clone()))
                    {
                        tracing::warn!(entrance = %url, "{problem}");
                    }
                }
            }
        }
        let now = now_secs();
        let forgotten = if may_forget(answered, entrances.len()) {
            let mut dir = publisher.directory.write().await;
            dir.forget_unseen(now, interval.as_secs().max(1) * FORGET_AFTER_INTERVALS)
        } else {
            Vec::new()
        };
        if !forgotten.is_empty() {
            tracing::info!(
                count = forgotten.len(),
                "forgot boxes no entrance lists any more"
            );
            let keys: Vec<String> = forgotten
                .iter()
                .map(|id| publisher.keys.search(id.as_str()))
                .collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            if let Err(e) = publisher.common.store.del(&keys).await {
                tracing::warn!("cannot forget boxes in the store: {e}");
            }
        }
        if let Err(e) = save_ranking(&publisher, now).await {
            tracing::warn!("cannot save the box ranking: {e}");
        }
        if answered == 0 && !publisher.entrances().is_empty() {
            if !all_down_reported {
                let known = publisher.directory.read().await.len();
                tracing::warn!(
                    boxes = known,
                    "every entrance is unreachable; working on the last-known boxes"
                );
                all_down_reported = true;
            }
        } else if all_down_reported && answered > 0 {
            tracing::info!("an entrance answers again");
            all_down_reported = false;
        }
        publisher.searched.notify_waiters();
        publisher.common.console.touch();
        tokio::select! {
            () = publisher.common.shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Whether a round in which `answered` of `asked` entrances answered may
/// forget the boxes none of them listed: only a full round knows a box is gone.
fn may_forget(answered: usize, asked: usize) -> bool {
    answered == asked
}

/// Keeps `{ID}:BOX_RANKING` (box → score) in step with the directory, so the
/// ranking is visible to operators in the store as the original's was.
async fn save_ranking(
    publisher: &Publisher,
    now: u64,
) -> Result<(), dandelion_core::store::StoreError> {
    let ranked = {
        let dir = publisher.directory.read().await;
        super::ranking::rank(&dir.candidates(publisher.audience, now), &publisher.weights)
    };
    let key = publisher.keys.box_ranking();
    publisher.common.store.del(&[&key]).await?;
    for r in &ranked {
        publisher
            .common
            .store
            .zadd(&key, r.id.as_str(), r.score)
            .await?;
    }
    Ok(())
}

async fn search_one(publisher: &Publisher, entrance: &PinnedUrl) -> Result<usize, String> {
    let identity = &publisher.common.identity;
    let mut conn = connect_as(entrance.url(), entrance.id(), identity, None)
        .await
        .map_err(|e| {
            if matches!(e, ConnectionError::Unproven { .. }) {
                publisher.common.metrics.refuse("entrance_unproven");
            }
            e.to_string()
        })?;
    let geoip = publisher.audience.map(|(lat, lon)| {
        let mut g = GeoIp::default();
        g.set_lat_lon(lat, lon);
        g
    });
    let search = Search {
        header: Header::new(identity.id().clone()),
        order: Some(if geoip.is_some() {
            SearchOrder::Nearest
        } else {
            SearchOrder::Freshest
        }),
        geoip,
        count: Some(publisher.config.search_count),
        unverified: Some(publisher.directory.read().await.allow_legacy),
        extra: Default::default(),
    };
    conn.send(&Message::Search(search))
        .await
        .map_err(|e| e.to_string())?;
    let reply = loop {
        match conn.recv().await {
            Ok(Some(Incoming::Message(Message::SearchReply(reply)))) => break reply,
            Ok(Some(Incoming::Message(Message::Error(e)))) => {
                return Err(format!("refused: {}", e.error));
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err("the entrance closed the connection".into()),
            Err(e) => return Err(e.to_string()),
        }
    };
    conn.close().await;
    if let Some(entries) = &reply.entrances {
        publisher.learn_entrances(entries);
    }
    let found = reply.boxes.len();
    for b in &reply.boxes {
        let key = publisher.keys.search(b.header.id.as_str());
        let json = Message::Exchange(b.clone()).encode();
        // The last-known list survives a restart of the publisher.
        if let Err(e) = publisher
            .common
            .store
            .hset(&key, &[("EXCHANGE", &json)])
            .await
        {
            tracing::warn!("cannot remember box {}: {e}", b.header.id);
        }
    }
    publisher
        .directory
        .write()
        .await
        .update(reply.boxes, now_secs());
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::may_forget;

    #[test]
    fn only_a_round_every_entrance_answered_forgets_boxes() {
        assert!(may_forget(2, 2));
        assert!(may_forget(0, 0));
        assert!(!may_forget(1, 2));
        assert!(!may_forget(0, 1));
    }
}
