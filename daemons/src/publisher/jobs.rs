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

use std::collections::{BTreeMap, HashMap};
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
    /// Several front ends on one store: the one whose disk holds the file
    /// (`Origin::File`), which makes its copies. Another makes them only once
    /// it is taken for dead, from a box's copy (`sender::recover_origin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_at: Option<String>,
    /// The acknowledgement again, in Unix milliseconds, for the push-to-placed
    /// histogram; absent from records written before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_ms: Option<u64>,
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

/// A name's job and its placements as last written together.
#[derive(Debug, Clone, PartialEq)]
pub struct Known {
    pub job: Job,
    pub placements: Vec<Placement>,
    /// How many writes of the name the shared store has seen (0 on a store
    /// no other process writes): what the next write is conditional on.
    pub version: u64,
}

/// Job and placement records: durable in the store, read from memory.
///
/// A job's state and its placements describe one fact — "this file is on these
/// boxes" — so every change that touches placements writes the job in the same
/// atomic store batch, and the copy in memory is replaced whole after that
/// batch is applied: a reader can never see a file `queued` while its
/// placement is already serving viewers, nor `placed` with its placements just
/// trimmed away.
///
/// Every read comes from memory, loaded from the store at start-up and kept
/// true by the writes below (the store's namespace is this publisher's own)
/// and by those of the publisher's other front ends, below. A redirect is a map lookup, not
/// a store read and two JSON decodes (issue 18: the viewer path at nginx's
/// pace), and viewers keep being redirected while the store is unreachable.
/// A write whose outcome the store left unknown (a Redis timeout after the
/// command went out) leaves memory as it was; the name's next write sets both.
///
/// On a shared store (Redis) several publisher front ends write these keys.
/// Each write then also publishes the name on the change channel in the same
/// atomic batch, and [`Records::follow`] reads each name another front end
/// wrote back from the store; a lost subscription reads everything again, so
/// a change missed while it was down is not missed for good. Two front ends
/// writing one name at once must not lose either's change: each write is
/// conditional on the name's version (`{ID}:FILE:VERSIONS`) being the one its
/// placements were read at, and on a conflict the name is read back and the
/// change made again on what the other wrote.
#[derive(Debug, Clone)]
pub struct Records {
    store: Arc<dyn Store>,
    jobs: String,
    placements: String,
    /// `{ID}:FILE:ORIGIN:`, followed by a name: a small file's bytes.
    origins: String,
    /// `{ID}:FILE:VERSIONS`: each name's write count, on a shared store.
    versions: String,
    known: Arc<std::sync::RwLock<HashMap<String, Arc<Known>>>>,
    // Writers read placements, change them and write them back with the job:
    // a lock per name keeps one from losing another's update, and keeps the
    // order of the store's writes of a name the order of memory's. Names
    // share [`STRIPES`] locks: one lock for all names held each save across
    // a durable commit, so saves ran one at a time and capped a publisher
    // near 350 files/s. A tokio lock: it is held across store calls.
    locks: Arc<Stripes<tokio::sync::Mutex<()>>>,
    /// Where writes are announced, on a shared store.
    feed: Option<Feed>,
}

/// The change channel of a shared store, and this process's name on it.
#[derive(Debug, Clone)]
struct Feed {
    channel: String,
    /// Random per process: its own announcements need no reading back.
    instance: String,
}

impl Feed {
    /// A change message: the writer, a tab, the name (names hold no control
    /// characters).
    fn message(&self, name: &str) -> String {
        format!("{}\t{name}", self.instance)
    }

    /// The name another process wrote, from a message; `None` for our own.
    fn foreign<'a>(&self, message: &'a str) -> Option<&'a str> {
        let (by, name) = message.split_once('\t')?;
        (by != self.instance && !name.is_empty()).then_some(name)
    }
}

/// Most times one write is made again because another front end wrote the
/// name first.
const MAX_CONFLICTS: usize = 16;

/// Wait before subscribing again after the change feed was lost.
const FEED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Locks the names are spread over: saves of different names rarely wait for
/// each other.
const STRIPES: usize = 64;

fn corrupt(key: &str, name: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt {
        key: format!("{key} {name}"),
        detail: e.to_string(),
    }
}

impl Records {
    /// The records of the publisher whose keys are `keys`, read into memory.
    pub async fn open(store: Arc<dyn Store>, keys: &Keys) -> Result<Records, StoreError> {
        let jobs_key = format!("{}:FILE:JOBS", keys.prefix());
        let placements_key = keys.processed_files();
        let versions_key = format!("{}:FILE:VERSIONS", keys.prefix());
        let jobs = store.hgetall(&jobs_key).await?;
        let mut placements = store.hgetall(&placements_key).await?;
        let mut versions = if store.shared() {
            store.hgetall(&versions_key).await?
        } else {
            BTreeMap::new()
        };
        let known = table_of(
            (&jobs_key, &placements_key),
            &jobs,
            &mut placements,
            &mut versions,
        )?;
        let feed = store.shared().then(|| Feed {
            channel: format!("{}:FILE:CHANGES", keys.prefix()),
            instance: format!("{:016x}", getrandom::u64().unwrap_or(0)),
        });
        Ok(Records {
            store,
            jobs: jobs_key,
            placements: placements_key,
            origins: format!("{}:FILE:ORIGIN:", keys.prefix()),
            versions: versions_key,
            known: Arc::new(std::sync::RwLock::new(known)),
            locks: Arc::new(Stripes::new(STRIPES)),
            feed,
        })
    }

    /// Keeps memory true to the writes of other front ends sharing the store,
    /// until `shutdown`: subscribes to the change channel, reads every record
    /// afresh (what changed before the subscription), then reads back each
    /// name another process announces. A lost subscription starts over. Does
    /// nothing on a store no other process writes.
    pub async fn follow(&self, shutdown: crate::shutdown::Shutdown) {
        let Some(feed) = &self.feed else {
            return;
        };
        let mut first = true;
        while !shutdown.is_triggered() {
            if !first {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(FEED_RETRY) => {}
                }
            }
            first = false;
            let mut messages = match self.store.subscribe(&feed.channel).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!("cannot follow the other front ends' writes: {e}");
                    continue;
                }
            };
            if let Err(e) = self.resync().await {
                tracing::warn!("cannot read the records again: {e}");
                continue;
            }
            tracing::debug!("following the other front ends' writes");
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = futures_util::StreamExt::next(&mut messages) => m,
                };
                let Some(message) = message else {
                    tracing::warn!("lost the other front ends' writes; reading every record again");
                    break;
                };
                if let Some(name) = feed.foreign(&message)
                    && let Err(e) = self.reload(name).await
                {
                    // Memory may be behind for this name: read all again.
                    tracing::warn!(file = %name, "cannot read a record another front end wrote: {e}");
                    break;
                }
            }
        }
    }

    /// Reads one name's job and placements back from the store into memory.
    async fn reload(&self, name: &str) -> Result<(), StoreError> {
        let _guard = self.lock(name).lock().await;
        self.read_back(name).await
    }

    /// [`Records::reload`] with the name's lock already held. The three
    /// fields are read one after the other, so the version is read before and
    /// after: every write bumps it in the same batch, so the same version
    /// twice means no write fell in between.
    async fn read_back(&self, name: &str) -> Result<(), StoreError> {
        let mut tries = 0;
        let (job, placements, version) = loop {
            let before = self.store.hget(&self.versions, name).await?;
            let job = self.store.hget(&self.jobs, name).await?;
            let placements = self.store.hget(&self.placements, name).await?;
            let after = self.store.hget(&self.versions, name).await?;
            if before == after {
                break (job, placements, after);
            }
            tries += 1;
            if tries >= MAX_CONFLICTS {
                return Err(StoreError::Conflict {
                    key: self.versions.clone(),
                    field: name.to_owned(),
                });
            }
        };
        let known = match job {
            Some(text) => {
                Some(self.known_from(name, &text, placements.as_deref(), version.as_deref())?)
            }
            None => None,
        };
        let mut table = self.table_mut();
        match known {
            Some(k) => table.insert(name.to_owned(), Arc::new(k)),
            None => table.remove(name),
        };
        Ok(())
    }

    /// Reads every record from the store into memory, with every name's lock
    /// held: no write of this process falls between the read and memory.
    async fn resync(&self) -> Result<(), StoreError> {
        let mut guards = Vec::new();
        for lock in self.locks.all() {
            guards.push(lock.lock().await);
        }
        // Other front ends write meanwhile: a name whose version moved while
        // the hashes were read is read again on its own.
        let before = self.store.hgetall(&self.versions).await?;
        let jobs = self.store.hgetall(&self.jobs).await?;
        let mut placements = self.store.hgetall(&self.placements).await?;
        let mut versions = self.store.hgetall(&self.versions).await?;
        let moved: Vec<String> = versions
            .iter()
            .filter(|(name, v)| before.get(*name) != Some(*v))
            .map(|(name, _)| name.clone())
            .chain(
                before
                    .keys()
                    .filter(|n| !versions.contains_key(*n))
                    .cloned(),
            )
            .collect();
        let fresh = table_of(
            (&self.jobs, &self.placements),
            &jobs,
            &mut placements,
            &mut versions,
        )?;
        *self.table_mut() = fresh;
        for name in moved {
            self.read_back(&name).await?;
        }
        drop(guards);
        Ok(())
    }

    fn known_from(
        &self,
        name: &str,
        job: &str,
        placements: Option<&str>,
        version: Option<&str>,
    ) -> Result<Known, StoreError> {
        known_of(
            (&self.jobs, &self.placements),
            name,
            job,
            placements,
            version,
        )
    }

    /// Announces a write of `name` to the other front ends, in its batch.
    fn announce(&self, batch: &mut Batch, name: &str) {
        if let Some(feed) = &self.feed {
            batch.publish(&feed.channel, &feed.message(name));
        }
    }

    fn lock(&self, name: &str) -> &tokio::sync::Mutex<()> {
        self.locks.of(name)
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Known>>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Known>>> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }

    /// This front end's name among those sharing the store, if it is shared.
    pub fn instance(&self) -> Option<&str> {
        self.feed.as_ref().map(|f| f.instance.as_str())
    }

    /// Whether other front ends write these records too (a shared store).
    pub fn shared(&self) -> bool {
        self.feed.is_some()
    }

    /// A name's job and placements, as they were written together.
    pub fn known(&self, name: &str) -> Option<Arc<Known>> {
        self.table().get(name).cloned()
    }

    /// [`Records::known`] for a name learnt from the store rather than from
    /// these records: the sending queue, which a write's batch fills in the
    /// same commit as the job. That commit is visible before the writer has
    /// put the job in memory; the writer still holds the name's lock until it
    /// has.
    ///
    /// On a shared store the queue is every front end's, and the job may be
    /// another's, written a moment ago and not read here yet: it is read from
    /// the store first.
    /// A store that cannot be read is an error, not an unknown name: the job
    /// must stay queued.
    pub async fn known_after_write(&self, name: &str) -> Result<Option<Arc<Known>>, StoreError> {
        if self.feed.is_some() {
            self.reload(name).await?;
            return Ok(self.known(name));
        }
        let _settled = self.lock(name).lock().await;
        Ok(self.known(name))
    }

    /// A job alone.
    pub fn job(&self, name: &str) -> Option<Job> {
        self.known(name).map(|k| k.job.clone())
    }

    /// Every job.
    pub fn jobs(&self) -> Vec<Job> {
        self.table().values().map(|k| k.job.clone()).collect()
    }

    /// Every name's job and placements.
    pub fn all(&self) -> Vec<Arc<Known>> {
        self.table().values().cloned().collect()
    }

    /// Writes a job whose placements do not change.
    pub async fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        self.save(job, |_| {}).await.map(drop)
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
        let _guard = self.lock(name).lock().await;
        let mut batch = Batch::new();
        batch
            .hdel(&self.jobs, &[name])
            .hdel(&self.placements, &[name])
            .hdel(&self.versions, &[name])
            .del(&self.origin_key(name));
        self.announce(&mut batch, name);
        self.store.apply(&batch).await?;
        self.table_mut().remove(name);
        Ok(())
    }

    /// Writes `job` and its placements as `change` edits them, in one atomic
    /// store batch, with no other update of the records in between. Returns the
    /// placements as written.
    pub async fn save(
        &self,
        job: &Job,
        change: impl FnMut(&mut Vec<Placement>),
    ) -> Result<Vec<Placement>, StoreError> {
        self.save_with(job, change, |_| {}).await
    }

    /// [`Records::save`], with writes of the caller's in the same batch (an
    /// accepted file's place in the sending queue: one durable commit).
    /// `change` and `also` run again when another front end wrote the name
    /// first.
    pub async fn save_with(
        &self,
        job: &Job,
        change: impl FnMut(&mut Vec<Placement>),
        also: impl FnMut(&mut Batch),
    ) -> Result<Vec<Placement>, StoreError> {
        let _guard = self.lock(&job.name).lock().await;
        let written = self.write(job, change, also, |_| true).await?;
        Ok(written.unwrap_or_default())
    }

    /// The write of [`Records::save_with`], under the name's lock: `None`
    /// when `still` says the record as it stands no longer wants it.
    async fn write(
        &self,
        job: &Job,
        mut change: impl FnMut(&mut Vec<Placement>),
        mut also: impl FnMut(&mut Batch),
        still: impl Fn(Option<&Known>) -> bool,
    ) -> Result<Option<Vec<Placement>>, StoreError> {
        let name = job.name.as_str();
        let job_text = job_text(&self.jobs, job)?;
        let mut conflicts = 0;
        loop {
            let base = self.known(name);
            if !still(base.as_deref()) {
                return Ok(None);
            }
            let version = base.as_ref().map_or(0, |k| k.version);
            let mut placements = base.map(|k| k.placements.clone()).unwrap_or_default();
            change(&mut placements);
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
            let next = if self.feed.is_some() {
                // Another front end's write since this one read the name
                // makes this batch fail whole.
                let seen = (version > 0).then(|| version.to_string());
                batch.only_if(&self.versions, name, seen.as_deref());
                let next = version.saturating_add(1);
                batch.hset(&self.versions, &[(name, &next.to_string())]);
                next
            } else {
                0
            };
            self.announce(&mut batch, name);
            match self.store.apply(&batch).await {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    self.read_back(name).await?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.table_mut().insert(
                name.to_owned(),
                Arc::new(Known {
                    job: job.clone(),
                    placements: placements.clone(),
                    version: next,
                }),
            );
            return Ok(Some(placements));
        }
    }

    /// [`Records::save_with`] for a job read before a transfer: written only if
    /// the name still holds that upload (same SHA-256, accepted at the same
    /// time), checked under the name's lock. `None` when the name was pushed
    /// again meanwhile: the older upload's copies are of other bytes, and
    /// writing its job back would put its size and hash over the newer one's.
    pub async fn save_if_current(
        &self,
        job: &Job,
        change: impl FnMut(&mut Vec<Placement>),
        also: impl FnMut(&mut Batch),
    ) -> Result<Option<Vec<Placement>>, StoreError> {
        let _guard = self.lock(&job.name).lock().await;
        self.write(job, change, also, |current| {
            current
                .is_some_and(|c| c.job.sha256 == job.sha256 && c.job.accepted_at == job.accepted_at)
        })
        .await
    }
}

/// Every name's record from the stored hashes (jobs, placements, versions)
/// under `keys` (jobs, placements).
fn table_of(
    keys: (&str, &str),
    jobs: &BTreeMap<String, String>,
    placements: &mut BTreeMap<String, String>,
    versions: &mut BTreeMap<String, String>,
) -> Result<HashMap<String, Arc<Known>>, StoreError> {
    let mut table = HashMap::with_capacity(jobs.len());
    for (name, text) in jobs {
        let known = known_of(
            keys,
            name,
            text,
            placements.remove(name).as_deref(),
            versions.remove(name).as_deref(),
        )?;
        table.insert(name.clone(), Arc::new(known));
    }
    Ok(table)
}

/// A name's record from the texts of its job and placements as stored under
/// `keys` (jobs, placements).
fn known_of(
    keys: (&str, &str),
    name: &str,
    job: &str,
    placements: Option<&str>,
    version: Option<&str>,
) -> Result<Known, StoreError> {
    Ok(Known {
        job: parse_job(keys.0, name, job)?,
        placements: match placements {
            Some(text) => serde_json::from_str(text).map_err(|e| corrupt(keys.1, name, e))?,
            None => Vec::new(),
        },
        // A version that does not parse is one no write will match: the
        // next write conflicts, reads back and makes it whole again.
        version: version.map_or(0, |v| v.parse().unwrap_or(u64::MAX)),
    })
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
            origin_at: None,
            accepted_ms: None,
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

    /// Two front ends on one Redis record copies of one file at once, each
    /// from its own memory: every copy must be in the record at the end, in
    /// the store and in both memories once the feed has caught up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn front_ends_writing_one_name_at_once_lose_no_placement() {
        let redis = dandelion_testkit::redis::RedisServer::start();
        let keys = Keys::new("publisher-0123456789abcdef0123456789abcdef");
        let open = || async {
            let store: Arc<dyn Store> = Arc::new(
                dandelion_core::store::RedisStore::connect(&redis.url(), "")
                    .await
                    .unwrap(),
            );
            Records::open(store, &keys).await.unwrap()
        };
        let (a, b) = (open().await, open().await);
        let shutdown = crate::shutdown::Shutdown::new();
        for r in [&a, &b] {
            let (r, stop) = (r.clone(), shutdown.clone());
            tokio::spawn(async move { r.follow(stop).await });
        }
        let queued = job(JobState::Queued, 0);
        a.save(&queued, Vec::clear).await.unwrap();
        let writers: Vec<_> = (0..40u32)
            .map(|n| {
                let records = if n % 2 == 0 { a.clone() } else { b.clone() };
                let queued = queued.clone();
                tokio::spawn(async move {
                    records
                        .save(&queued, |all| all.push(placement(1000 + n)))
                        .await
                        .unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        let stored = b
            .store
            .hget(&b.placements, &queued.name)
            .await
            .unwrap()
            .unwrap();
        let stored: Vec<Placement> = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored.len(), 40, "copies were lost: {stored:?}");
        for r in [&a, &b] {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            while r.known(&queued.name).unwrap().placements.len() != 40 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "memory never caught up"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        shutdown.trigger();
    }

    #[tokio::test]
    async fn a_placement_of_an_upload_pushed_over_since_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir.path().join("r.redb")).unwrap());
        let records = Records::open(
            store,
            &Keys::new("publisher-0123456789abcdef0123456789abcdef"),
        )
        .await
        .unwrap();
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
        let known = records.known(&older.name).unwrap();
        assert_eq!(
            (known.job.sha256.clone(), known.job.state),
            (newer.sha256.clone(), JobState::Queued)
        );
        assert!(known.placements.is_empty());

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
        let records = Records::open(
            store,
            &Keys::new("publisher-0123456789abcdef0123456789abcdef"),
        )
        .await
        .unwrap();
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
            let known = records.known("live/seg1.ts").unwrap();
            let (job, placements) = (&known.job, &known.placements);
            match job.state {
                JobState::Placed => {
                    seen_placed = true;
                    assert_eq!(placements, &[placement(job.attempts)]);
                }
                _ => assert!(placements.is_empty(), "{job:?} with {placements:?}"),
            }
            let listed = records.all();
            assert_eq!(listed.len(), 1);
            assert_eq!(
                listed[0].job.state == JobState::Placed,
                !listed[0].placements.is_empty()
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
        assert_eq!(records.known("live/seg1.ts"), None);
    }

    #[tokio::test]
    async fn what_was_written_is_what_a_restart_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        let keys = Keys::new("publisher-0123456789abcdef0123456789abcdef");
        let written = {
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path).unwrap());
            let records = Records::open(store, &keys).await.unwrap();
            let placed = job(JobState::Placed, 1);
            records
                .save(&placed, |all| all.extend([placement(1), placement(2)]))
                .await
                .unwrap();
            let other = Job {
                name: "live/seg2.ts".into(),
                ..job(JobState::Queued, 0)
            };
            records.save(&other, Vec::clear).await.unwrap();
            let gone = Job {
                name: "live/seg0.ts".into(),
                ..job(JobState::Placed, 1)
            };
            records
                .save(&gone, |all| all.push(placement(3)))
                .await
                .unwrap();
            records.forget(&gone.name).await.unwrap();
            let mut all: Vec<Known> = records.all().iter().map(|k| (**k).clone()).collect();
            all.sort_by(|a, b| a.job.name.cmp(&b.job.name));
            all
        };
        assert_eq!(written.len(), 2);
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path).unwrap());
        let records = Records::open(store, &keys).await.unwrap();
        let mut read: Vec<Known> = records.all().iter().map(|k| (**k).clone()).collect();
        read.sort_by(|a, b| a.job.name.cmp(&b.job.name));
        assert_eq!(read, written);
        assert_eq!(records.known("live/seg0.ts"), None);
    }
}
