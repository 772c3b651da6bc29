//! The publisher's reliable sending queue, on the store.
//!
//! Jobs wait in `{ID}:FILE:FILES_SENDING_QUEUE`. A sender takes one with an atomic
//! move into `{ID}:FILE:FILES_IN_FLIGHT` and removes it from there only when the
//! job is finished (placed or failed for good). A crash in between leaves the job
//! in the in-flight list, and [`Queue::recover`] puts it back at start-up: nothing
//! acknowledged is lost, at the price of a job possibly being sent twice — which
//! is harmless, because a box replaces a path atomically.
//!
//! Several front ends sharing one Redis ([`Queue::shared_by`]) share the
//! queue, but each keeps its own in-flight list, `FILES_IN_FLIGHT:<instance>`,
//! and says every few seconds that it is alive (`{ID}:FILE:SENDERS`). A front
//! end that stopped saying so for `front_end_dead_after` (30 s) is taken for
//! dead: any other moves its in-flight jobs back to the queue
//! ([`Queue::reclaim`]), rather than leaving them until it starts again, and
//! may fetch the files only it held from their boxes
//! ([`Queue::holder_alive`], `sender::recover_origin`).

use std::sync::Arc;
use std::time::Duration;

use dandelion_core::store::keys::Keys;
use dandelion_core::store::{Batch, Result, Store};

/// How often a front end on a shared store says it is alive, at most: a third
/// of the silence that makes it dead, so one late write is not a death.
pub const ALIVE_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    waiting: String,
    in_flight: String,
    /// On a shared store: the name every in-flight list starts with (also the
    /// list of a single publisher), the senders' hash and this front end.
    shared: Option<SharedQueue>,
}

#[derive(Debug, Clone)]
struct SharedQueue {
    base: String,
    senders: String,
    instance: String,
    /// Silence after which a front end is taken for dead, in seconds.
    dead_after: u64,
}

/// The front ends in `senders` (instance → last said alive, Unix seconds)
/// that have been silent for more than `after` seconds at `now`, other than
/// `me`. A value that does not parse is as silent as can be.
pub fn silent(
    senders: &std::collections::BTreeMap<String, String>,
    me: &str,
    now: u64,
    after: u64,
) -> Vec<String> {
    senders
        .iter()
        .filter(|(instance, _)| instance.as_str() != me)
        .filter(|(_, seen)| is_silent(seen, now, after))
        .map(|(instance, _)| instance.clone())
        .collect()
}

/// Whether a front end last said alive at `seen` (Unix seconds) has been
/// silent for more than `after` seconds at `now`.
fn is_silent(seen: &str, now: u64, after: u64) -> bool {
    now.saturating_sub(seen.parse().unwrap_or(0)) > after
}

impl Queue {
    pub fn new(store: Arc<dyn Store>, keys: &Keys) -> Queue {
        Queue {
            store,
            waiting: keys.files_sending_queue(),
            in_flight: keys.files_in_flight(),
            shared: None,
        }
    }

    /// The queue of a front end `instance` among several on one store, where
    /// one silent for `dead_after` is taken for dead.
    pub fn shared_by(
        store: Arc<dyn Store>,
        keys: &Keys,
        instance: &str,
        dead_after: Duration,
    ) -> Queue {
        let base = keys.files_in_flight();
        Queue {
            store,
            waiting: keys.files_sending_queue(),
            in_flight: format!("{base}:{instance}"),
            shared: Some(SharedQueue {
                senders: format!("{}:FILE:SENDERS", keys.prefix()),
                base,
                instance: instance.to_owned(),
                dead_after: dead_after.as_secs().max(1),
            }),
        }
    }

    /// Says this front end is alive at `now` (a shared store; else nothing).
    pub async fn alive(&self, now: u64) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        self.store
            .hset(&shared.senders, &[(&shared.instance, &now.to_string())])
            .await
            .map(drop)
    }

    /// Whether front end `instance` said it was alive within the silence that
    /// makes one dead, at `now` (this one is). Always, with no other front end.
    pub async fn holder_alive(&self, instance: &str, now: u64) -> Result<bool> {
        let Some(shared) = &self.shared else {
            return Ok(true);
        };
        if instance == shared.instance {
            return Ok(true);
        }
        // Not listed: forgotten once taken for dead.
        let seen = self.store.hget(&shared.senders, instance).await?;
        Ok(seen.is_some_and(|seen| !is_silent(&seen, now, shared.dead_after)))
    }

    /// Moves the in-flight jobs of every front end silent for more than
    /// `after` seconds back to the queue, and forgets those front ends: how
    /// many jobs came back. Two front ends reclaiming at once move each job
    /// once (each move is atomic).
    pub async fn reclaim(&self, now: u64, after: u64) -> Result<usize> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        let senders = self.store.hgetall(&shared.senders).await?;
        let mut moved = 0;
        for instance in silent(&senders, &shared.instance, now, after) {
            let list = format!("{}:{instance}", shared.base);
            while self.store.lmove(&list, &self.waiting).await?.is_some() {
                moved += 1;
            }
            self.store.hdel(&shared.senders, &[&instance]).await?;
        }
        Ok(moved)
    }

    /// Queues a job at the back.
    pub async fn push(&self, job: &str) -> Result<()> {
        self.store.rpush(&self.waiting, &[job]).await.map(drop)
    }

    /// Queues `job` as part of `batch`, written with it.
    pub fn push_in(&self, batch: &mut Batch, job: &str) {
        batch.rpush(&self.waiting, &[job]);
    }

    /// Records `job` as taken by a sender already, as part of `batch`: a
    /// cut-through upload whose boxes are receiving it
    /// ([`super::cutthrough`]). It is finished or requeued like any taken job.
    pub fn hold_in(&self, batch: &mut Batch, job: &str) {
        batch.rpush(&self.in_flight, &[job]);
    }

    /// Takes the next job, waiting up to `timeout` for one. The job stays in the
    /// in-flight list until [`Queue::finish`] or [`Queue::requeue`].
    pub async fn take(&self, timeout: Duration) -> Result<Option<String>> {
        self.store
            .blmove(&self.waiting, &self.in_flight, timeout)
            .await
    }

    /// Takes `job` off the in-flight list as part of `batch`, written with it
    /// (the placement that finished it: one commit instead of two).
    pub fn finish_in(&self, batch: &mut Batch, job: &str) {
        batch.lrem(&self.in_flight, 1, job);
    }

    /// The job is done, one way or the other.
    pub async fn finish(&self, job: &str) -> Result<()> {
        self.store.lrem(&self.in_flight, 1, job).await.map(drop)
    }

    /// The job must be tried again later. Pushed before it leaves the in-flight
    /// list, so a crash between the two duplicates it rather than losing it.
    pub async fn requeue(&self, job: &str) -> Result<()> {
        self.store.rpush(&self.waiting, &[job]).await?;
        self.finish(job).await
    }

    /// Puts every job a previous run left in flight back in front of the queue.
    /// Call once at start-up, before any sender runs.
    /// On a shared store, also what the one in-flight list of a publisher
    /// that ran alone holds.
    pub async fn recover(&self) -> Result<usize> {
        let mut moved = 0;
        let lists = [Some(&self.in_flight), self.shared.as_ref().map(|s| &s.base)];
        for list in lists.into_iter().flatten() {
            while let Some(job) = self.store.rpop(list).await? {
                self.store.lpush(&self.waiting, &[&job]).await?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Until `shutdown`, on a shared store: says this front end is alive every
    /// [`ALIVE_EVERY`] (or a third of `front_end_dead_after`) and takes back
    /// the jobs of front ends silent for longer.
    pub async fn keep_alive(&self, shutdown: crate::shutdown::Shutdown) {
        if self.shared.is_none() {
            return;
        }
        loop {
            let now = super::now_secs();
            if let Err(e) = self.alive(now).await {
                tracing::warn!("cannot tell the other front ends this one is alive: {e}");
            }
            let Some(shared) = &self.shared else {
                return;
            };
            let dead_after = shared.dead_after;
            match self.reclaim(now, dead_after).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    jobs = n,
                    "queued again the jobs of a front end silent for {dead_after} s"
                ),
                Err(e) => tracing::warn!("cannot take back a silent front end's jobs: {e}"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(ALIVE_EVERY.min(Duration::from_secs(dead_after) / 3)) => {}
            }
        }
    }

    /// Jobs waiting and in flight, oldest first; on a shared store, in
    /// flight on any front end.
    pub async fn snapshot(&self) -> Result<(Vec<String>, Vec<String>)> {
        let waiting = self.store.lrange(&self.waiting, 0, -1).await?;
        let mut in_flight = self.store.lrange(&self.in_flight, 0, -1).await?;
        if let Some(shared) = &self.shared {
            let senders = self.store.hgetall(&shared.senders).await?;
            let others = senders
                .keys()
                .filter(|i| **i != shared.instance)
                .map(|i| format!("{}:{i}", shared.base))
                .chain([shared.base.clone()]);
            for list in others {
                in_flight.extend(self.store.lrange(&list, 0, -1).await?);
            }
        }
        Ok((waiting, in_flight))
    }
}

#[cfg(test)]
mod tests {
    use dandelion_core::store::embedded::EmbeddedStore;

    use super::*;

    fn queue(dir: &std::path::Path) -> Queue {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("q.redb")).unwrap());
        Queue::new(
            store,
            &Keys::new("publisher-0123456789abcdef0123456789abcdef"),
        )
    }

    #[test]
    fn a_front_end_is_dead_after_its_silence_not_before() {
        let senders: std::collections::BTreeMap<String, String> = [
            ("me", "0"),
            ("quiet", "100"),
            ("fresh", "125"),
            ("garbled", "x"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert_eq!(silent(&senders, "me", 130, 29), ["garbled", "quiet"]);
        assert_eq!(silent(&senders, "me", 130, 30), ["garbled"]);
    }

    /// A front end takes a job and dies; another takes it back once the first
    /// has been silent long enough, not before.
    const DEAD_AFTER: u64 = 30;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_front_ends_jobs_come_back_to_the_shared_queue() {
        let redis = dandelion_testkit::redis::RedisServer::start();
        let store: Arc<dyn Store> = Arc::new(
            dandelion_core::store::RedisStore::connect(&redis.url(), "")
                .await
                .unwrap(),
        );
        let keys = Keys::new("publisher-0123456789abcdef0123456789abcdef");
        let a = Queue::shared_by(store.clone(), &keys, "a", Duration::from_secs(DEAD_AFTER));
        let b = Queue::shared_by(store.clone(), &keys, "b", Duration::from_secs(DEAD_AFTER));
        a.push("seg1.ts").await.unwrap();
        a.alive(100).await.unwrap();
        assert_eq!(
            a.take(Duration::from_millis(10)).await.unwrap().as_deref(),
            Some("seg1.ts")
        );
        // B sees the job in flight, and nothing to take.
        assert_eq!(
            b.snapshot().await.unwrap(),
            (vec![], vec!["seg1.ts".to_owned()])
        );
        assert_eq!(b.take(Duration::from_millis(10)).await.unwrap(), None);
        b.alive(110).await.unwrap();
        assert!(b.holder_alive("a", 110).await.unwrap());
        assert!(!b.holder_alive("a", 100 + DEAD_AFTER + 1).await.unwrap());
        assert!(!b.holder_alive("nobody", 110).await.unwrap());
        assert_eq!(b.reclaim(110, DEAD_AFTER).await.unwrap(), 0);
        assert_eq!(
            b.reclaim(100 + DEAD_AFTER + 1, DEAD_AFTER).await.unwrap(),
            1
        );
        assert_eq!(
            b.take(Duration::from_millis(10)).await.unwrap().as_deref(),
            Some("seg1.ts")
        );
        // A forgotten: nothing more to take back.
        assert_eq!(b.reclaim(1_000, DEAD_AFTER).await.unwrap(), 0);
        b.finish("seg1.ts").await.unwrap();
        assert_eq!(b.snapshot().await.unwrap(), (vec![], vec![]));
    }

    #[tokio::test]
    async fn jobs_in_flight_at_a_crash_come_back_first_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = queue(dir.path());
            for job in ["a", "b", "c", "d"] {
                q.push(job).await.unwrap();
            }
            assert_eq!(
                q.take(Duration::from_millis(10)).await.unwrap().as_deref(),
                Some("a")
            );
            assert_eq!(
                q.take(Duration::from_millis(10)).await.unwrap().as_deref(),
                Some("b")
            );
            q.finish("a").await.unwrap();
            // "b" is in flight when the process dies.
        }
        let q = queue(dir.path());
        assert_eq!(q.recover().await.unwrap(), 1);
        let (waiting, in_flight) = q.snapshot().await.unwrap();
        assert_eq!(waiting, ["b", "c", "d"]);
        assert!(in_flight.is_empty());
    }

    #[tokio::test]
    async fn requeue_puts_a_job_at_the_back_and_take_times_out_empty() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path());
        q.push("x").await.unwrap();
        q.push("y").await.unwrap();
        let x = q.take(Duration::from_millis(10)).await.unwrap().unwrap();
        q.requeue(&x).await.unwrap();
        assert_eq!(
            q.snapshot().await.unwrap(),
            (vec!["y".to_owned(), "x".to_owned()], vec![])
        );
        q.take(Duration::from_millis(10)).await.unwrap();
        q.take(Duration::from_millis(10)).await.unwrap();
        assert_eq!(q.take(Duration::from_millis(20)).await.unwrap(), None);
    }
}
