//! What the publisher remembers about each published name: the job (size, hash,
//! TTL, replicas, state, failures) and its placements (which boxes confirmed the
//! exact bytes, and why each won).
//!
//! Both live in the store as JSON, one hash field per name: jobs in
//! `{ID}:FILE:JOBS`, placements in `{ID}:FILE:PROCESSED_FILES` — the original's
//! key, which it wrote before a box had stored anything; ours is written only
//! after the box confirmed size and SHA-256. A small file's bytes (up to
//! `publisher.store_files_up_to`) are kept in the store too, at
//! `{ID}:FILE:ORIGIN:<name>`, written in the commit that records its job.

use std::collections::BTreeMap;
use std::sync::Arc;

use dandelion_core::store::keys::Keys;
use dandelion_core::store::{Batch, Store, StoreError};
use dandelion_core::stripes::Stripes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted and durable, waiting for (more) boxes.
    Queued,
    /// On as many boxes as asked for.
    Placed,
    /// Given up after too many failures; `failures` says why.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Placed => "placed",
            JobState::Failed => "failed",
        }
    }
}

/// Where the publisher keeps its own copy of a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A file in the origin directory (every job written before this field).
    #[default]
    File,
    /// A value in the store, beside the job ([`Records::origin`]).
    Store,
}

/// One failed attempt to place a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub box_id: Option<String>,
    pub reason: String,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub ttl: u64,
    pub replicas: u32,
    /// When the push was acknowledged (Unix seconds); the TTL counts from here.
    pub accepted_at: u64,
    pub state: JobState,
    pub attempts: u32,
    #[serde(default)]
    pub failures: Vec<Failure>,
    #[serde(default)]
    pub origin: Origin,
}

impl Job {
    pub fn expires_at(&self) -> u64 {
        self.accepted_at.saturating_add(self.ttl)
    }

    /// TTL left for a box that stores the file `now`: a copy must not outlive the job.
    pub fn ttl_left(&self, now: u64) -> u64 {
        self.expires_at().saturating_sub(now)
    }
}

/// A box that confirmed it holds the exact bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    pub box_id: String,
    /// Where viewers fetch the copy.
    pub url: String,
    pub stored_at: u64,
    pub expires_at: u64,
    /// Why this box was chosen, and which came next.
    pub trace: String,
    /// Frame header keys the box echoed back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, serde_json::Value>,
}

/// Job and placement records on the store.
///
/// A job's state and its placements describe one fact — "this file is on these
/// boxes" — so every change that touches placements writes the job in the same
/// atomic store batch, and readers that report both take them under one lock:
/// the API can then never show a file as `queued` while its placement is already
/// serving viewers, nor `placed` with its placements just trimmed away.
#[derive(Debug, Clone)]
pub struct Records {
    store: Arc<dyn Store>,
    jobs: String,
    placements: String,
    /// `{ID}:FILE:ORIGIN:`, followed by a name: a small file's bytes.
    origins: String,
    // Writers read placements, change them and write them back with the job;
    // readers of the pair read two keys. A read/write lock per name keeps a
    // writer from losing another's update and a reader from seeing the pair
    // between two writes. Names share [`STRIPES`] locks: one lock for all names
    // held each save across a durable commit, so saves ran one at a time and
    // capped a publisher near 350 files/s. A tokio lock: it is held across
    // store calls.
    locks: Arc<Stripes<tokio::sync::RwLock<()>>>,
}

/// Locks the names are spread over: saves of different names rarely wait for
/// each other, and a reader of every name takes them all.
const STRIPES: usize = 64;

fn corrupt(key: &str, name: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: format!("{key} {name}"),
        detail: e.to_string(),
    }
}

impl Records {
    pub fn new(store: Arc<dyn Store>, keys: &Keys) -> Records {
        Records {
            store,
            jobs: format!("{}:FILE:JOBS", keys.prefix()),
            placements: keys.processed_files(),
            origins: format!("{}:FILE:ORIGIN:", keys.prefix()),
            locks: Arc::new(Stripes::new(STRIPES)),
        }
    }

    fn lock(&self, name: &str) -> &tokio::sync::RwLock<()> {
        self.locks.of(name)
    }

    /// Every name's lock for reading, always in the same order.
    async fn read_all(&self) -> Vec<tokio::sync::RwLockReadGuard<'_, ()>> {
        let mut guards = Vec::with_capacity(STRIPES);
        for lock in self.locks.all() {
            guards.push(lock.read().await);
        }
        guards
    }

    /// A job alone, for callers that do not report its placements with it.
    pub async fn job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        match self.store.hget(&self.jobs, name).await? {
            None => Ok(None),
            Some(text) => parse_job(&self.jobs, name, &text).map(Some),
        }
    }

    /// Writes a job whose placements do not change.
    pub async fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        let _guard = self.lock(&job.name).write().await;
        let text = job_text(&self.jobs, job)?;
        self.store
            .hset(&self.jobs, &[(&job.name, &text)])
            .await
            .map(drop)
    }

    /// Every job, for callers that do not report placements with them.
    pub async fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let all = self.store.hgetall(&self.jobs).await?;
        all.iter()
            .map(|(name, text)| parse_job(&self.jobs, name, text))
            .collect()
    }

    /// A job and its placements as they were written together.
    pub async fn file(&self, name: &str) -> Result<Option<(Job, Vec<Placement>)>, StoreError> {
        let _guard = self.lock(name).read().await;
        let Some(job) = self.job(name).await? else {
            return Ok(None);
        };
        Ok(Some((job, self.placements(name).await?)))
    }

    /// Every job with its placements, as they were written together.
    pub async fn files(&self) -> Result<Vec<(Job, Vec<Placement>)>, StoreError> {
        let _guards = self.read_all().await;
        let jobs = self.jobs().await?;
        let mut placements = self.all_placements().await?;
        Ok(jobs
            .into_iter()
            .map(|job| {
                let placed = placements.remove(&job.name).unwrap_or_default();
                (job, placed)
            })
            .collect())
    }

    /// The key of `name`'s bytes when its job says [`Origin::Store`].
    pub fn origin_key(&self, name: &str) -> String {
        format!("{}{name}", self.origins)
    }

    /// The bytes of a file kept in the store; `None` if they are not there.
    pub async fn origin(&self, name: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.store.get(&self.origin_key(name)).await
    }

    /// Forgets a name entirely (its TTL ran out), with its bytes if the store
    /// held them.
    pub async fn forget(&self, name: &str) -> Result<(), StoreError> {
        let _guard = self.lock(name).write().await;
        let mut batch = Batch::new();
        batch
            .hdel(&self.jobs, &[name])
            .hdel(&self.placements, &[name])
            .del(&self.origin_key(name));
        self.store.apply(&batch).await
    }

    /// A name's placements alone, for the redirect (which needs no job state).
    pub async fn placements(&self, name: &str) -> Result<Vec<Placement>, StoreError> {
        match self.store.hget(&self.placements, name).await? {
            None => Ok(Vec::new()),
            Some(text) => {
                serde_json::from_str(&text).map_err(|e| corrupt(&self.placements, name, e))
            }
        }
    }

    /// Writes `job` and its placements as `change` edits them, in one atomic
    /// store batch, with no other update of the records in between. Returns the
    /// placements as written.
    pub async fn save(
        &self,
        job: &Job,
        change: impl FnOnce(&mut Vec<Placement>),
    ) -> Result<Vec<Placement>, StoreError> {
        self.save_with(job, change, |_| {}).await
    }

    /// [`Records::save`], with writes of the caller's in the same batch (an
    /// accepted file's place in the sending queue: one durable commit).
    pub async fn save_with(
        &self,
        job: &Job,
        change: impl FnOnce(&mut Vec<Placement>),
        also: impl FnOnce(&mut Batch),
    ) -> Result<Vec<Placement>, StoreError> {
        let _guard = self.lock(&job.name).write().await;
        self.write(job, change, also).await
    }

    /// The write of [`Records::save_with`], under the name's lock.
    async fn write(
        &self,
        job: &Job,
        change: impl FnOnce(&mut Vec<Placement>),
        also: impl FnOnce(&mut Batch),
    ) -> Result<Vec<Placement>, StoreError> {
        let name = job.name.as_str();
        let mut placements = self.placements(name).await?;
        change(&mut placements);
        let job_text = job_text(&self.jobs, job)?;
        let mut batch = Batch::new();
        batch.hset(&self.jobs, &[(name, &job_text)]);
        if placements.is_empty() {
            batch.hdel(&self.placements, &[name]);
        } else {
            let text = serde_json::to_string(&placements)
                .map_err(|e| corrupt(&self.placements, name, e))?;
            batch.hset(&self.placements, &[(name, &text)]);
        }
        also(&mut batch);
        self.store.apply(&batch).await?;
        Ok(placements)
    }

    /// [`Records::save_with`] for a job read before a transfer: written only if
    /// the name still holds that upload (same SHA-256, accepted at the same
    /// time), checked under the name's lock. `None` when the name was pushed
    /// again meanwhile: the older upload's copies are of other bytes, and
    /// writing its job back would put its size and hash over the newer one's.
    pub async fn save_if_current(
        &self,
        job: &Job,
        change: impl FnOnce(&mut Vec<Placement>),
        also: impl FnOnce(&mut Batch),
    ) -> Result<Option<Vec<Placement>>, StoreError> {
        let _guard = self.lock(&job.name).write().await;
        let current = self.job(&job.name).await?;
        if !current.is_some_and(|c| c.sha256 == job.sha256 && c.accepted_at == job.accepted_at) {
            return Ok(None);
        }
        self.write(job, change, also).await.map(Some)
    }

    /// Every name's placements, without their jobs (use [`Records::files`] to
    /// show them together).
    pub async fn all_placements(&self) -> Result<BTreeMap<String, Vec<Placement>>, StoreError> {
        let all = self.store.hgetall(&self.placements).await?;
        all.iter()
            .map(|(name, text)| {
                serde_json::from_str(text)
                    .map(|p| (name.clone(), p))
                    .map_err(|e| corrupt(&self.placements, name, e))
            })
            .collect()
    }
}

fn parse_job(key: &str, name: &str, text: &str) -> Result<Job, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(key, name, e))
}

fn job_text(key: &str, job: &Job) -> Result<String, StoreError> {
    serde_json::to_string(job).map_err(|e| corrupt(key, &job.name, e))
}

#[cfg(test)]
mod tests {
    use dandelion_core::store::embedded::EmbeddedStore;

    use super::*;

    fn job(state: JobState, attempts: u32) -> Job {
        Job {
            name: "live/seg1.ts".into(),
            size: 10,
            sha256: "00".repeat(32),
            ttl: 60,
            replicas: 1,
            accepted_at: 1,
            state,
            attempts,
            failures: Vec::new(),
            origin: Origin::File,
        }
    }

    fn placement(n: u32) -> Placement {
        Placement {
            box_id: format!("box-{n:032x}"),
            url: format!("http://127.0.0.1:{n}/f"),
            stored_at: 1,
            expires_at: 61,
            trace: String::new(),
            headers: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn a_placement_of_an_upload_pushed_over_since_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("r.redb")).unwrap());
        let records = Records::new(
            store,
            &Keys::new("publisher-0123456789abcdef0123456789abcdef"),
        );
        let older = job(JobState::Queued, 0);
        records.save(&older, Vec::clear).await.unwrap();
        let newer = Job {
            sha256: "11".repeat(32),
            accepted_at: 2,
            ..older.clone()
        };
        records.save(&newer, Vec::clear).await.unwrap();
        let placed = Job {
            state: JobState::Placed,
            ..older.clone()
        };
        let saved = records
            .save_if_current(&placed, |all| all.push(placement(1)), |_| {})
            .await
            .unwrap();
        assert_eq!(saved, None);
        let (stored, placements) = records.file(&older.name).await.unwrap().unwrap();
        assert_eq!(
            (stored.sha256, stored.state),
            (newer.sha256.clone(), JobState::Queued)
        );
        assert!(placements.is_empty());

        let placed = Job {
            state: JobState::Placed,
            ..newer
        };
        let saved = records
            .save_if_current(&placed, |all| all.push(placement(1)), |_| {})
            .await
            .unwrap();
        assert_eq!(
            saved.map(|p| p.len()),
            Some(1),
            "the current upload is recorded"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_never_sees_a_state_that_contradicts_the_placements() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("r.redb")).unwrap());
        let records = Records::new(
            store,
            &Keys::new("publisher-0123456789abcdef0123456789abcdef"),
        );
        records
            .save(&job(JobState::Queued, 0), Vec::clear)
            .await
            .unwrap();
        // As the sender and the sweep do: placed with a copy, then queued again
        // with the copy trimmed, over and over.
        let writer = {
            let records = records.clone();
            tokio::spawn(async move {
                for round in 1..=100 {
                    let placed = job(JobState::Placed, round);
                    records
                        .save(&placed, |all| all.push(placement(round)))
                        .await
                        .unwrap();
                    let queued = job(JobState::Queued, round);
                    records.save(&queued, Vec::clear).await.unwrap();
                }
                let last = job(JobState::Placed, 101);
                records
                    .save(&last, |all| all.push(placement(101)))
                    .await
                    .unwrap();
            })
        };
        let mut seen_placed = false;
        loop {
            let finished = writer.is_finished();
            let (job, placements) = records.file("live/seg1.ts").await.unwrap().unwrap();
            match job.state {
                JobState::Placed => {
                    seen_placed = true;
                    assert_eq!(placements, [placement(job.attempts)]);
                }
                _ => assert!(placements.is_empty(), "{job:?} with {placements:?}"),
            }
            let listed = records.files().await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(
                listed[0].0.state == JobState::Placed,
                !listed[0].1.is_empty()
            );
            if finished {
                break;
            }
        }
        writer.await.unwrap();
        assert!(
            seen_placed,
            "the last read is after the last save, which placed it"
        );
        records.forget("live/seg1.ts").await.unwrap();
        assert_eq!(records.file("live/seg1.ts").await.unwrap(), None);
    }
}
