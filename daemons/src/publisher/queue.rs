//! The publisher's reliable sending queue, on the store.
//!
//! Jobs wait in `{ID}:FILE:FILES_SENDING_QUEUE`. A sender takes one with an atomic
//! move into `{ID}:FILE:FILES_IN_FLIGHT` and removes it from there only when the
//! job is finished (placed or failed for good). A crash in between leaves the job
//! in the in-flight list, and [`Queue::recover`] puts it back at start-up: nothing
//! acknowledged is lost, at the price of a job possibly being sent twice — which
//! is harmless, because a box replaces a path atomically.

use std::sync::Arc;
use std::time::Duration;

use dandelion_core::store::keys::Keys;
use dandelion_core::store::{Batch, Result, Store};

#[derive(Debug, Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    waiting: String,
    in_flight: String,
}

impl Queue {
    pub fn new(store: Arc<dyn Store>, keys: &Keys) -> Queue {
        Queue {
            store,
            waiting: keys.files_sending_queue(),
            in_flight: keys.files_in_flight(),
        }
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
    pub async fn recover(&self) -> Result<usize> {
        let mut moved = 0;
        while let Some(job) = self.store.rpop(&self.in_flight).await? {
            self.store.lpush(&self.waiting, &[&job]).await?;
            moved += 1;
        }
        Ok(moved)
    }

    /// Jobs waiting and in flight, oldest first.
    pub async fn snapshot(&self) -> Result<(Vec<String>, Vec<String>)> {
        let waiting = self.store.lrange(&self.waiting, 0, -1).await?;
        let in_flight = self.store.lrange(&self.in_flight, 0, -1).await?;
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
