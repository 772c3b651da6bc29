//! Finding boxes: every search interval, ask every known entrance for boxes and
//! fold the answers into the directory. When an entrance is down, or answers
//! something too large or malformed, the publisher keeps what it last learned:
//! boxes are forgotten only in rounds every entrance answered, so no entrance
//! (or whoever fills its answers) can make the publisher forget its boxes.
//!
//! Each entrance has one session, kept open between rounds by its own task (a
//! [`Link`]). Its `SEARCH`es ask to `WATCH`, so between them the entrance pushes
//! a `BOX_STATE` when a box leaves or comes back: a box whose session dropped
//! leaves viewers' redirects at once instead of at the next search. A change is
//! a hint (`ServeHealth::hint`): viewers skip a box said to be gone until a
//! serve probe shows it serving, and a box said to be back is probed at once,
//! not believed. A session that drops is opened again by the next round, whose
//! answer carries the whole list again; nothing depends on every push arriving.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dandelion_core::connection::{ClientConnection, ConnectionError, Incoming, connect_as};
use dandelion_core::ids::NodeId;
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{
    BoxState, GeoIp, Header, Message, Search, SearchOrder, SearchReply,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Publisher, now_secs};
use crate::health;

/// Boxes no entrance listed for this many search intervals are forgotten.
const FORGET_AFTER_INTERVALS: u64 = 6;

/// How long an entrance has to answer a `SEARCH` before its session is dropped.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Rounds asked for early ([`Publisher::search_now`]) come no closer together
/// than this: pushes waiting for a box must not turn into a stream of
/// `SEARCH`es at the entrances.
pub const EARLY_SEARCH_GAP: Duration = Duration::from_secs(1);

/// Runs until shutdown.
pub async fn run(publisher: Arc<Publisher>) {
    let interval = publisher.config.search_interval;
    let mut all_down_reported = false;
    let mut links: HashMap<NodeId, Link> = HashMap::new();
    loop {
        let entrances = publisher.entrances();
        links.retain(|id, _| entrances.iter().any(|e| e.id() == id));
        for e in &entrances {
            links
                .entry(e.id().clone())
                .or_insert_with(|| Link::spawn(publisher.clone(), e.clone()));
        }
        let asks = entrances
            .iter()
            .filter_map(|e| links.get(e.id()))
            .map(Link::search);
        let results = futures_util::future::join_all(asks).await;
        let mut answered = 0;
        for (entrance, result) in entrances.iter().zip(results) {
            let url = entrance.url();
            publisher.metrics.searches.inc();
            match result {
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
            () = asked_early(&publisher) => {}
        }
    }
}

/// Ends when a round is asked for early, no sooner than [`EARLY_SEARCH_GAP`]
/// after the last one. An ask made while a round runs is kept (a
/// [`Notify`](tokio::sync::Notify) permit) and honoured after the gap.
async fn asked_early(publisher: &Publisher) {
    tokio::time::sleep(EARLY_SEARCH_GAP).await;
    publisher.search_now.notified().await;
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

/// One entrance's session, owned by its own task; dropping the link ends it.
struct Link {
    asks: mpsc::Sender<oneshot::Sender<Result<usize, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    fn spawn(publisher: Arc<Publisher>, entrance: PinnedUrl) -> Link {
        let (asks, rx) = mpsc::channel(1);
        Link {
            asks,
            task: tokio::spawn(session(publisher, entrance, rx)),
        }
    }

    /// Searches once; how many boxes the entrance listed.
    async fn search(&self) -> Result<usize, String> {
        let (tx, rx) = oneshot::channel();
        self.asks
            .send(tx)
            .await
            .map_err(|_| "the entrance's session task ended".to_owned())?;
        rx.await
            .map_err(|_| "the entrance's session task ended".to_owned())?
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who waits for the answer to the `SEARCH` in flight, and since when.
type Waiting = Option<(oneshot::Sender<Result<usize, String>>, Instant)>;

fn answer(waiting: &mut Waiting, result: Result<usize, String>) {
    if let Some((to, _)) = waiting.take() {
        let _ = to.send(result);
    }
}

/// The task behind a [`Link`]: opens the session when a search needs it, sends
/// `SEARCH`es, and takes in what the entrance sends, asked or not.
async fn session(
    publisher: Arc<Publisher>,
    entrance: PinnedUrl,
    mut asks: mpsc::Receiver<oneshot::Sender<Result<usize, String>>>,
) {
    let mut conn: Option<ClientConnection> = None;
    let mut waiting: Waiting = None;
    loop {
        let deadline = waiting.as_ref().map(|(_, since)| *since + SEARCH_TIMEOUT);
        tokio::select! {
            () = publisher.common.shutdown.cancelled() => break,
            ask = asks.recv() => {
                let Some(to) = ask else { break };
                answer(&mut waiting, Err("a newer search replaced it".into()));
                if conn.is_none() {
                    match open(&publisher, &entrance).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            let _ = to.send(Err(e));
                            continue;
                        }
                    }
                }
                let search = search_message(&publisher).await;
                if let Some(c) = conn.as_mut()
                    && let Err(e) = c.send(&search).await
                {
                    conn = None;
                    let _ = to.send(Err(e.to_string()));
                    continue;
                }
                waiting = Some((to, Instant::now()));
            }
            () = sleep_until(deadline) => {
                conn = None;
                answer(&mut waiting, Err(format!("no answer within {}s", SEARCH_TIMEOUT.as_secs())));
            }
            incoming = recv(&mut conn) => match incoming {
                Ok(Some(Incoming::Message(Message::SearchReply(reply)))) => {
                    let found = take_reply(&publisher, reply).await;
                    answer(&mut waiting, Ok(found));
                }
                Ok(Some(Incoming::Message(Message::BoxState(change)))) => {
                    if change.header.id == *entrance.id() {
                        take_change(&publisher, &entrance, change).await;
                    }
                }
                Ok(Some(Incoming::Message(Message::Error(e)))) => {
                    answer(&mut waiting, Err(format!("refused: {}", e.error)));
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    conn = None;
                    answer(&mut waiting, Err("the entrance closed the connection".into()));
                }
                Err(e) => {
                    conn = None;
                    answer(&mut waiting, Err(e.to_string()));
                }
            }
        }
    }
    if let Some(mut c) = conn {
        c.close().await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next message on the session; never, while there is none.
async fn recv(conn: &mut Option<ClientConnection>) -> Result<Option<Incoming>, ConnectionError> {
    match conn {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

async fn open(publisher: &Publisher, entrance: &PinnedUrl) -> Result<ClientConnection, String> {
    connect_as(
        entrance.url(),
        entrance.id(),
        &publisher.common.identity,
        None,
    )
    .await
    .map_err(|e| {
        if matches!(e, ConnectionError::Unproven { .. }) {
            publisher.common.metrics.refuse("entrance_unproven");
        }
        e.to_string()
    })
}

async fn search_message(publisher: &Publisher) -> Message {
    let geoip = publisher.audience.map(|(lat, lon)| {
        let mut g = GeoIp::default();
        g.set_lat_lon(lat, lon);
        g
    });
    Message::Search(Search {
        header: Header::new(publisher.common.identity.id().clone()),
        order: Some(if geoip.is_some() {
            SearchOrder::Nearest
        } else {
            SearchOrder::Freshest
        }),
        geoip,
        count: Some(publisher.config.search_count),
        unverified: Some(publisher.directory.read().await.allow_legacy),
        watch: Some(true),
        extra: Default::default(),
    })
}

/// Folds one answer into the directory; how many boxes it listed.
async fn take_reply(publisher: &Publisher, reply: SearchReply) -> usize {
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
    found
}

/// Takes in an entrance's word that a box left or came back, and has the
/// prober look at it now.
async fn take_change(publisher: &Publisher, entrance: &PinnedUrl, change: BoxState) {
    let was_serving = {
        let mut dir = publisher.directory.write().await;
        let Some(b) = dir.get_mut(&change.box_id) else {
            return;
        };
        b.serve.hint(&change.state, change.reason.as_deref())
    };
    if was_serving {
        tracing::info!(
            box_id = %change.box_id,
            entrance = %entrance.url(),
            state = %change.state,
            "an entrance says the box left; redirects skip it until a serve probe shows it serving"
        );
    } else {
        tracing::debug!(box_id = %change.box_id, state = %change.state, "box state from an entrance");
    }
    publisher.probe_wake.notify_one();
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
