//! The default backend: one `redb` file in the data directory.
//!
//! redb is synchronous and has one writer at a time, and every `commit()` with
//! `Durability::Immediate` is an fsync — milliseconds on an SD card. A heartbeat storm
//! must not become an fsync storm, so all writes go through one dedicated writer
//! thread that drains its queue and applies every pending operation in ONE write
//! transaction with ONE commit, and only then acknowledges them (group commit). An
//! acknowledged write is therefore on disk and survives `kill -9` — except a
//! [soft](Batch::soft) one, which is on disk within [`SOFT_SYNC_WITHIN`]: a group of
//! soft writes only is committed without an fsync, and the writer makes a durable
//! commit at least that often while any is pending. Reads take an MVCC snapshot
//! with `begin_read()` and never wait for the writer: reads of one key's few
//! entries run in the caller's task, scans on the blocking pool.
//! A [`Batch`] is one job of that queue: its type checks run before its first
//! write, so a batch that fails leaves nothing in the shared transaction, and one
//! that passes is committed whole, with the other jobs of its group.
//!
//! Layout: a key-type table (`key -> type`) answers WRONGTYPE checks, `exists` and
//! prefix scans in one lookup; each type has its own tables, keyed by tuples that
//! start with the key so that one key's entries are one contiguous range:
//!
//! | table          | key                            | value                 |
//! |----------------|--------------------------------|-----------------------|
//! | `key_types`    | key                            | type code             |
//! | `hashes`       | (key, field)                   | value                 |
//! | `sets`         | (key, member)                  | ()                    |
//! | `zset_members` | (key, member)                  | score (f64)           |
//! | `zset_scores`  | (key, order-preserving score, member) | ()             |
//! | `list_items`   | (key, sequence number)         | value                 |
//! | `list_meta`    | key                            | (head, tail, len)     |

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{Notify, oneshot};

use super::batch::{KeyType, Write};
use super::{Batch, Order, Result, Store, StoreError};

/// Default page-cache size. redb's own default is 1 GiB, which is most of a
/// Raspberry Pi's memory; a daemon's working set is a few MiB.
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How long a [soft](Batch::soft) write may stay acknowledged but not on disk: the
/// writer commits soft-only groups without an fsync, and makes the next commit
/// durable once the last durable one is this old (an empty one if nothing else
/// comes).
pub const SOFT_SYNC_WITHIN: Duration = Duration::from_secs(1);

/// How long the writer holds a group of soft writes open for more before it
/// commits. Every commit writes out each page it touched (the live set's index,
/// the upper levels of the hash table) however little changed on it, so a
/// heartbeat storm committed a few writes at a time spends the writer's core on
/// rewriting the same pages; gathered over a few milliseconds they are written
/// once per group. Today only the entrance's heartbeats are soft, and a box is
/// answered before its heartbeat is stored: what waits on this is a box's
/// registration and the next message of the same session, both by at most this
/// long. A write made soft elsewhere waits as long.
const SOFT_GATHER: Duration = Duration::from_millis(20);

/// Upper bound of operations in one commit, so that one huge batch cannot hold every
/// acknowledgement back for long.
const MAX_BATCH: usize = 1024;

const TYPES: TableDefinition<&str, u8> = TableDefinition::new("key_types");
const HASHES: TableDefinition<(&str, &str), &str> = TableDefinition::new("hashes");
const SETS: TableDefinition<(&str, &str), ()> = TableDefinition::new("sets");
const ZMEMBERS: TableDefinition<(&str, &str), f64> = TableDefinition::new("zset_members");
const ZSCORES: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("zset_scores");
const LIST_ITEMS: TableDefinition<(&str, i64), &str> = TableDefinition::new("list_items");
/// `(head, tail, len)`: items live at sequence numbers in `head..tail`; `len` is kept
/// separately because `LREM` leaves gaps (renumbering would rewrite the whole list).
const LIST_META: TableDefinition<&str, (i64, i64, u64)> = TableDefinition::new("list_meta");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

/// The type of a key, as stored in `key_types`. The numbers are on disk: never reuse
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hash = 1,
    Set = 2,
    ZSet = 3,
    List = 4,
    Blob = 5,
}

impl From<Kind> for KeyType {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Hash => Self::Hash,
            Kind::Set => Self::Set,
            Kind::ZSet => Self::ZSet,
            Kind::List => Self::List,
            Kind::Blob => Self::Blob,
        }
    }
}

impl Kind {
    fn from_code(key: &str, code: u8) -> Result<Self> {
        match code {
            1 => Ok(Self::Hash),
            2 => Ok(Self::Set),
            3 => Ok(Self::ZSet),
            4 => Ok(Self::List),
            5 => Ok(Self::Blob),
            other => Err(StoreError::Corrupt {
                key: key.to_owned(),
                detail: format!("unknown type code {other}"),
            }),
        }
    }
}

/// How many commits carried how many write operations: the measure of group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Successful commits.
    pub commits: u64,
    /// Write operations acknowledged by those commits.
    pub ops: u64,
    /// Durable commits (with an fsync), including the empty ones that put
    /// [soft](Batch::soft) writes on disk.
    pub syncs: u64,
}

/// A cheap, cloneable handle to one embedded store file.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// State shared with the writer thread.
#[derive(Debug, Default)]
struct Shared {
    /// Signalled after a commit that pushed to a list, for blocking pops.
    list_pushed: Notify,
    commits: AtomicU64,
    ops: AtomicU64,
    syncs: AtomicU64,
}

struct Inner {
    db: Arc<Database>,
    path: PathBuf,
    /// `Option` only so that `Drop` can close the channel before joining the writer.
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    /// Closing the channel ends the writer once it has committed what it holds;
    /// joining it releases the file, so the same process can reopen it at once.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, with the default cache size.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the store file at `path` with a page cache of
    /// `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let opening = || format!("opening {}", path.display());
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| embedded_error(opening(), e))?;
        // Create every table once, so that readers never meet a missing table.
        let txn = db.begin_write().map_err(|e| embedded_error(opening(), e))?;
        Tables::open(&txn).map_err(|e| with_context(e, "creating tables in", path))?;
        txn.commit().map_err(|e| embedded_error(opening(), e))?;

        let db = Arc::new(db);
        let shared = Arc::new(Shared::default());
        let (jobs, queue) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn({
                let db = Arc::clone(&db);
                let shared = Arc::clone(&shared);
                move || writer_loop(&db, &queue, &shared)
            })
            .map_err(|e| embedded_error("starting the writer thread", redb::Error::Io(e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_owned(),
                jobs: Some(jobs),
                writer: Some(writer),
                shared,
            }),
        })
    }

    /// Commits so far and the operations they carried (for tests and metrics).
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            commits: self.inner.shared.commits.load(AtomicOrdering::Relaxed),
            ops: self.inner.shared.ops.load(AtomicOrdering::Relaxed),
            syncs: self.inner.shared.syncs.load(AtomicOrdering::Relaxed),
        }
    }

    /// Queues a write for the writer thread and waits for its commit.
    ///
    /// `f` must check everything that can make it fail for the caller's reasons
    /// (types, arguments) before it changes anything: it shares its transaction with
    /// other callers' writes, which must not see half of it.
    async fn write<T, F>(&self, op: &'static str, key: &str, wakes: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
    {
        self.queue(op, key, wakes, false, f).await
    }

    /// [`EmbeddedStore::write`], with `soft` as [`Batch::soft`] says.
    async fn queue<T, F>(
        &self,
        op: &'static str,
        key: &str,
        wakes: bool,
        soft: bool,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Op {
            op,
            wakes,
            soft,
            f: Some(f),
            out: None,
            reply,
        });
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::WriterStopped)?;
        jobs.send(job).map_err(|_| StoreError::WriterStopped)?;
        answer
            .await
            .map_err(|_| StoreError::WriterStopped)?
            .map_err(|e| with_context(e, op, key))
    }

    /// Runs `f` on a read snapshot, here and now: for reads of one key's entry or
    /// a handful of entries (a field, a small hash, a score).
    ///
    /// Such a read is a few lookups in pages that are nearly always in redb's
    /// cache or the OS's, microseconds; handing it to the blocking pool costs
    /// more than the read (two thread wake-ups — a third of the entrance's CPU at
    /// 4 000 heartbeats/s, before this). redb's readers do not wait for the
    /// writer's transaction, but a read of a page the cache does not hold can
    /// wait while a durable commit writes its pages out (tens of ms), and with it
    /// the caller's runtime worker: hot paths that can avoid reading should (the
    /// entrance's heartbeats do, `book::Memo`). Scans go through
    /// [`EmbeddedStore::read`].
    fn read_now<T>(
        &self,
        op: &'static str,
        key: impl std::fmt::Debug,
        f: impl FnOnce(&ReadTransaction) -> Result<T>,
    ) -> Result<T> {
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| with_context(embedded_error("", e), op, &key))?;
        f(&txn).map_err(|e| with_context(e, op, key))
    }

    /// Runs `f` on a read snapshot on the blocking pool: for scans, whose size
    /// the caller does not bound.
    async fn read<T, F>(&self, op: &'static str, key: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = Arc::clone(&self.inner.db);
        let result = tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(|e| embedded_error("", e))?;
            f(&txn)
        })
        .await
        .map_err(|e| embedded_error("the read task failed", redb::Error::Io(e.into())))?;
        result.map_err(|e| with_context(e, op, key))
    }

    /// Waits until `attempt` returns a value, re-trying after every commit that
    /// pushed to a list. The `Notified` future is created before each attempt: a push
    /// committed between the attempt and the wait still wakes us.
    async fn wait_for<F, Fut>(&self, timeout: Duration, mut attempt: F) -> Result<Option<String>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<String>>>,
    {
        let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
        loop {
            let pushed = self.inner.shared.list_pushed.notified();
            if let Some(value) = attempt().await? {
                return Ok(Some(value));
            }
            match deadline {
                None => pushed.await,
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, pushed).await.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

// --- the writer thread ---

/// One queued write, with its types erased so that one channel carries them all.
trait Job: Send {
    /// Applies the write to the batch's transaction. An `Err` poisons the whole
    /// batch (a storage failure part-way through a change); a caller error is kept
    /// as this write's result and the batch goes on.
    fn apply(&mut self, tables: &mut Tables<'_>) -> Result<()>;
    /// Whether a blocking pop may now succeed.
    fn wakes(&self) -> bool;
    /// Whether the write may be acknowledged before it is on disk.
    fn soft(&self) -> bool;
    /// The batch committed: send the result.
    fn succeed(self: Box<Self>);
    /// The batch failed: send `error`.
    fn fail(self: Box<Self>, error: StoreError);
}

struct Op<T, F> {
    op: &'static str,
    wakes: bool,
    soft: bool,
    f: Option<F>,
    out: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Op<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
{
    fn apply(&mut self, tables: &mut Tables<'_>) -> Result<()> {
        let Some(f) = self.f.take() else {
            return Ok(());
        };
        match f(tables) {
            Ok(value) => self.out = Some(Ok(value)),
            Err(e) if e.is_caller_error() => self.out = Some(Err(e)),
            // Every write of the batch gets this, each with its own operation and key
            // added by `queue`; this one says which write broke it.
            Err(e) => return Err(with_context(e, "a batch failed at", self.op)),
        }
        Ok(())
    }

    fn wakes(&self) -> bool {
        self.wakes
    }

    fn soft(&self) -> bool {
        self.soft
    }

    fn succeed(self: Box<Self>) {
        let out = self.out.unwrap_or(Err(StoreError::WriterStopped));
        // The caller may have gone away; its write is committed all the same.
        let _ = self.reply.send(out);
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error));
    }
}

fn writer_loop(db: &Database, queue: &mpsc::Receiver<Box<dyn Job>>, shared: &Shared) {
    // When the oldest commit not yet on disk was made: soft commits since the last
    // durable one. The next commit is durable once this is SOFT_SYNC_WITHIN old.
    let mut unsynced_since: Option<Instant> = None;
    loop {
        let first = match unsynced_since {
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Some(since) => {
                let left = SOFT_SYNC_WITHIN.saturating_sub(since.elapsed());
                match queue.recv_timeout(left) {
                    Ok(job) => job,
                    Err(timeout) => {
                        // Nothing came to carry the fsync: make an empty durable
                        // commit, also when the store is closing.
                        match sync(db) {
                            Ok(()) => {
                                shared.syncs.fetch_add(1, AtomicOrdering::Relaxed);
                                unsynced_since = None;
                            }
                            Err(error) => {
                                tracing::error!(%error, "embedded store: cannot sync soft writes");
                            }
                        }
                        if timeout == mpsc::RecvTimeoutError::Disconnected {
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let mut batch = gather(queue, first);
        let wakes = batch.iter().any(|job| job.wakes());
        let durable = !batch.iter().all(|job| job.soft())
            || unsynced_since.is_some_and(|since| since.elapsed() >= SOFT_SYNC_WITHIN);
        match commit_batch(db, &mut batch, durable) {
            Ok(()) => {
                shared.commits.fetch_add(1, AtomicOrdering::Relaxed);
                shared
                    .ops
                    .fetch_add(batch.len() as u64, AtomicOrdering::Relaxed);
                if durable {
                    shared.syncs.fetch_add(1, AtomicOrdering::Relaxed);
                    unsynced_since = None;
                } else {
                    unsynced_since.get_or_insert_with(Instant::now);
                }
                batch.into_iter().for_each(|job| job.succeed());
                if wakes {
                    shared.list_pushed.notify_waiters();
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = batch.len(), "embedded store: a write batch failed");
                for job in batch {
                    job.fail(duplicate(&error));
                }
            }
        }
    }
}

/// The jobs of one commit: `first` and whatever is queued behind it, up to
/// [`MAX_BATCH`]. A group of [soft](Batch::soft) jobs only is held open for up
/// to [`SOFT_GATHER`] to take the ones that follow; a durable job ends the wait,
/// so nothing that waits for its fsync waits for this too.
fn gather(queue: &mpsc::Receiver<Box<dyn Job>>, first: Box<dyn Job>) -> Vec<Box<dyn Job>> {
    let deadline = first.soft().then(|| Instant::now() + SOFT_GATHER);
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let next = match queue.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let all_soft = batch.iter().all(|job| job.soft());
                let Some(left) = deadline
                    .filter(|_| all_soft)
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .filter(|left| !left.is_zero())
                else {
                    break;
                };
                match queue.recv_timeout(left) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        batch.push(next);
    }
    batch
}

fn commit_batch(db: &Database, batch: &mut [Box<dyn Job>], durable: bool) -> Result<()> {
    let writes = batch.len();
    let context = || format!("committing a batch of {writes} writes");
    let mut txn = db.begin_write().map_err(|e| embedded_error(context(), e))?;
    let durability = if durable {
        Durability::Immediate
    } else {
        Durability::None
    };
    txn.set_durability(durability)
        .map_err(|e| embedded_error(context(), e))?;
    {
        let mut tables = Tables::open(&txn)?;
        for job in batch.iter_mut() {
            job.apply(&mut tables)?;
        }
    }
    // On an error above, dropping `txn` aborts it: nothing of the batch is written.
    txn.commit().map_err(|e| embedded_error(context(), e))
}

/// A durable commit of nothing: puts the soft commits before it on disk.
fn sync(db: &Database) -> Result<()> {
    let context = "writing soft writes to disk";
    let mut txn = db.begin_write().map_err(|e| embedded_error(context, e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| embedded_error(context, e))?;
    txn.commit().map_err(|e| embedded_error(context, e))
}

/// The error every write of a failed batch receives (errors are not `Clone`).
fn duplicate(error: &StoreError) -> StoreError {
    match error {
        StoreError::Embedded { context, cause } => StoreError::Embedded {
            context: context.clone(),
            cause: Arc::clone(cause),
        },
        StoreError::Corrupt { key, detail } => StoreError::Corrupt {
            key: key.clone(),
            detail: detail.clone(),
        },
        other => embedded_error(
            other.to_string(),
            redb::Error::Io(std::io::Error::other("")),
        ),
    }
}

// --- errors ---

fn embedded_error(context: impl Into<String>, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Embedded {
        context: context.into(),
        cause: Arc::new(e.into()),
    }
}

/// Prefixes the operation and key to a backend error's context.
fn with_context(e: StoreError, op: &str, key: impl std::fmt::Debug) -> StoreError {
    match e {
        StoreError::Embedded { context, cause } => StoreError::Embedded {
            context: if context.is_empty() {
                format!("{op} {key:?}")
            } else {
                format!("{op} {key:?}: {context}")
            },
            cause,
        },
        other => other,
    }
}

/// Lets `?` carry redb's errors; `with_context` adds the operation and key later.
macro_rules! from_redb_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                embedded_error("", e)
            }
        }
    )*};
}
from_redb_error!(redb::StorageError, redb::TableError, redb::TransactionError);

fn corrupt(key: &str, detail: &str) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        detail: detail.to_owned(),
    }
}

// --- encodings ---

/// Maps an f64 to a u64 with the same order, so that scores can be a part of a redb
/// key (f64 is not a redb key type): flip the sign bit of positives, all bits of
/// negatives. `-0.0` is stored as `0.0` so that the two compare equal, as in Redis.
fn score_key(score: f64) -> u64 {
    let bits = if score == 0.0 { 0 } else { score.to_bits() };
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn score_from_key(key: u64) -> f64 {
    let bits = if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    };
    f64::from_bits(bits)
}

fn check_score(score: f64) -> Result<f64> {
    if score.is_nan() {
        Err(StoreError::InvalidScore)
    } else {
        Ok(if score == 0.0 { 0.0 } else { score })
    }
}

// --- shared read/write helpers ---

/// Whether `key` exists as `want`; `WrongType` if it holds another type.
fn expect_kind(
    types: &impl ReadableTable<&'static str, u8>,
    key: &str,
    want: Kind,
) -> Result<bool> {
    match kind_of(types, key)? {
        None => Ok(false),
        Some(kind) if kind == want => Ok(true),
        Some(_) => Err(StoreError::WrongType {
            key: key.to_owned(),
        }),
    }
}

fn kind_of(types: &impl ReadableTable<&'static str, u8>, key: &str) -> Result<Option<Kind>> {
    match types.get(key)? {
        None => Ok(None),
        Some(code) => Kind::from_code(key, code.value()).map(Some),
    }
}

/// The second halves of the `(key, _)` entries of `key`, in order.
fn sub_keys<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    key: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in table.range((key, "")..)? {
        let (k, _) = entry?;
        let (owner, sub) = k.value();
        if owner != key {
            break;
        }
        out.push(sub.to_owned());
    }
    Ok(out)
}

fn has_sub_keys<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    key: &str,
) -> Result<bool> {
    match table.range((key, "")..)?.next() {
        None => Ok(false),
        Some(entry) => Ok(entry?.0.value().0 == key),
    }
}

/// Members of the sorted set `key` with scores in `min..=max`, from the score index.
fn score_range(
    index: &impl ReadableTable<(&'static str, u64, &'static str), ()>,
    key: &str,
    min: f64,
    max: f64,
    order: Order,
    limit: Option<usize>,
) -> Result<Vec<(String, f64)>> {
    if min > max || limit == Some(0) {
        return Ok(Vec::new());
    }
    // `score_key(max) + 1` cannot overflow: only NaNs map to the top of the range.
    let range = index.range((key, score_key(min), "")..(key, score_key(max) + 1, ""))?;
    let mut out = Vec::new();
    let mut push = |entry: std::result::Result<_, redb::StorageError>| -> Result<bool> {
        let (k, _): (redb::AccessGuard<'_, (&str, u64, &str)>, _) = entry?;
        let (_, score, member) = k.value();
        out.push((member.to_owned(), score_from_key(score)));
        Ok(limit.is_some_and(|limit| out.len() >= limit))
    };
    match order {
        Order::Asc => {
            for entry in range {
                if push(entry)? {
                    break;
                }
            }
        }
        Order::Desc => {
            for entry in range.rev() {
                if push(entry)? {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// The `(seq, value)` items of list `key`, in order.
fn list_items(
    items: &impl ReadableTable<(&'static str, i64), &'static str>,
    key: &str,
) -> Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for entry in items.range((key, i64::MIN)..=(key, i64::MAX))? {
        let (k, v) = entry?;
        out.push((k.value().1, v.value().to_owned()));
    }
    Ok(out)
}

fn list_len(meta: &impl ReadableTable<&'static str, (i64, i64, u64)>, key: &str) -> Result<u64> {
    Ok(meta.get(key)?.map_or(0, |m| m.value().2))
}

// --- write transactions ---

/// Every table, opened once per batch (redb allows one open handle per table).
struct Tables<'txn> {
    types: Table<'txn, &'static str, u8>,
    hashes: Table<'txn, (&'static str, &'static str), &'static str>,
    sets: Table<'txn, (&'static str, &'static str), ()>,
    zmembers: Table<'txn, (&'static str, &'static str), f64>,
    zscores: Table<'txn, (&'static str, u64, &'static str), ()>,
    list_items: Table<'txn, (&'static str, i64), &'static str>,
    list_meta: Table<'txn, &'static str, (i64, i64, u64)>,
    blobs: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(Self {
            types: txn.open_table(TYPES)?,
            hashes: txn.open_table(HASHES)?,
            sets: txn.open_table(SETS)?,
            zmembers: txn.open_table(ZMEMBERS)?,
            zscores: txn.open_table(ZSCORES)?,
            list_items: txn.open_table(LIST_ITEMS)?,
            list_meta: txn.open_table(LIST_META)?,
            blobs: txn.open_table(BLOBS)?,
        })
    }

    /// A hash field's value; `None` also when the key is absent (its type was
    /// checked before).
    fn hash_field(&self, key: &str, field: &str) -> Result<Option<String>> {
        Ok(self.hashes.get((key, field))?.map(|v| v.value().to_owned()))
    }

    /// Checks that `key` is absent or of type `kind`, and records it as `kind`
    /// when absent. A key already of its type is not written again: every
    /// insert dirties a page of the type table, and a heartbeat's writes would
    /// otherwise copy one out per key on each commit.
    fn claim(&mut self, key: &str, kind: Kind) -> Result<()> {
        if !expect_kind(&self.types, key, kind)? {
            self.types.insert(key, kind as u8)?;
        }
        Ok(())
    }

    /// Removes every trace of `key` (of type `kind`).
    fn delete_key(&mut self, key: &str, kind: Kind) -> Result<()> {
        match kind {
            Kind::Hash => {
                for field in sub_keys(&self.hashes, key)? {
                    self.hashes.remove((key, field.as_str()))?;
                }
            }
            Kind::Set => {
                for member in sub_keys(&self.sets, key)? {
                    self.sets.remove((key, member.as_str()))?;
                }
            }
            Kind::ZSet => {
                let all = score_range(
                    &self.zscores,
                    key,
                    f64::NEG_INFINITY,
                    f64::INFINITY,
                    Order::Asc,
                    None,
                )?;
                for (member, score) in all {
                    self.zremove(key, &member, score)?;
                }
            }
            Kind::List => {
                for (seq, _) in list_items(&self.list_items, key)? {
                    self.list_items.remove((key, seq))?;
                }
                self.list_meta.remove(key)?;
            }
            Kind::Blob => {
                self.blobs.remove(key)?;
            }
        }
        self.types.remove(key)?;
        Ok(())
    }

    fn zremove(&mut self, key: &str, member: &str, score: f64) -> Result<()> {
        self.zmembers.remove((key, member))?;
        self.zscores.remove((key, score_key(score), member))?;
        Ok(())
    }

    /// Drops the key-type entry of a container that became empty.
    fn forget_if_empty(&mut self, key: &str, kind: Kind) -> Result<()> {
        let empty = match kind {
            Kind::Hash => !has_sub_keys(&self.hashes, key)?,
            Kind::Set => !has_sub_keys(&self.sets, key)?,
            Kind::ZSet => !has_sub_keys(&self.zmembers, key)?,
            Kind::List => list_len(&self.list_meta, key)? == 0,
            Kind::Blob => false,
        };
        if empty {
            self.types.remove(key)?;
            if kind == Kind::List {
                self.list_meta.remove(key)?;
            }
        }
        Ok(())
    }

    fn hset(&mut self, key: &str, fields: &[(String, String)]) -> Result<u64> {
        self.claim(key, Kind::Hash)?;
        let mut added = 0;
        for (field, value) in fields {
            if self
                .hashes
                .insert((key, field.as_str()), value.as_str())?
                .is_none()
            {
                added += 1;
            }
        }
        Ok(added)
    }

    fn hdel(&mut self, key: &str, fields: &[String]) -> Result<u64> {
        if !expect_kind(&self.types, key, Kind::Hash)? {
            return Ok(0);
        }
        let mut removed = 0;
        for field in fields {
            if self.hashes.remove((key, field.as_str()))?.is_some() {
                removed += 1;
            }
        }
        self.forget_if_empty(key, Kind::Hash)?;
        Ok(removed)
    }

    /// `score` must have been through [`check_score`].
    fn zadd(&mut self, key: &str, member: &str, score: f64) -> Result<bool> {
        self.claim(key, Kind::ZSet)?;
        let old = self
            .zmembers
            .insert((key, member), score)?
            .map(|s| s.value());
        if let Some(old) = old {
            self.zscores.remove((key, score_key(old), member))?;
        }
        self.zscores.insert((key, score_key(score), member), ())?;
        Ok(old.is_none())
    }

    fn zrem(&mut self, key: &str, members: &[String]) -> Result<u64> {
        if !expect_kind(&self.types, key, Kind::ZSet)? {
            return Ok(0);
        }
        let mut removed = 0;
        for member in members {
            let score = self
                .zmembers
                .get((key, member.as_str()))?
                .map(|s| s.value());
            if let Some(score) = score {
                self.zremove(key, member, score)?;
                removed += 1;
            }
        }
        self.forget_if_empty(key, Kind::ZSet)?;
        Ok(removed)
    }

    fn sadd(&mut self, key: &str, members: &[String]) -> Result<u64> {
        self.claim(key, Kind::Set)?;
        let mut added = 0;
        for member in members {
            if self.sets.insert((key, member.as_str()), ())?.is_none() {
                added += 1;
            }
        }
        Ok(added)
    }

    fn srem(&mut self, key: &str, members: &[String]) -> Result<u64> {
        if !expect_kind(&self.types, key, Kind::Set)? {
            return Ok(0);
        }
        let mut removed = 0;
        for member in members {
            if self.sets.remove((key, member.as_str()))?.is_some() {
                removed += 1;
            }
        }
        self.forget_if_empty(key, Kind::Set)?;
        Ok(removed)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.claim(key, Kind::Blob)?;
        self.blobs.insert(key, value)?;
        Ok(())
    }

    fn del(&mut self, key: &str) -> Result<bool> {
        match kind_of(&self.types, key)? {
            Some(kind) => {
                self.delete_key(key, kind)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Applies a batch whose [`Plan`] checks passed. Any error here is the
    /// storage's, or a broken invariant, never the caller's: the checks ruled
    /// those out, and half a batch must never be committed.
    fn apply_checked(&mut self, write: &Write) -> Result<()> {
        let key = write.key();
        let result = match write {
            Write::Hset { fields, .. } => self.hset(key, fields).map(drop),
            Write::Hdel { fields, .. } => self.hdel(key, fields).map(drop),
            Write::Zadd { member, score, .. } => {
                check_score(*score).and_then(|score| self.zadd(key, member, score).map(drop))
            }
            Write::Zrem { members, .. } => self.zrem(key, members).map(drop),
            Write::Sadd { members, .. } => self.sadd(key, members).map(drop),
            Write::Srem { members, .. } => self.srem(key, members).map(drop),
            Write::Rpush { values, .. } => self.list_push(key, values, false).map(drop),
            Write::Lrem { count, value, .. } => self.list_remove(key, *count, value).map(drop),
            Write::Set { value, .. } => self.set(key, value),
            Write::Del { .. } => self.del(key).map(drop),
            // No other process reads this store: nobody to tell.
            Write::Publish { .. } => Ok(()),
        };
        result.map_err(|e| {
            if e.is_caller_error() {
                corrupt(key, &format!("a checked batch write failed: {e}"))
            } else {
                e
            }
        })
    }

    /// LREM: the first `count` items equal to `value` (from the tail when
    /// negative, all when 0); how many went.
    fn list_remove(&mut self, k: &str, count: i64, value: &str) -> Result<u64> {
        if !expect_kind(&self.types, k, Kind::List)? {
            return Ok(0);
        }
        let matching = list_items(&self.list_items, k)?
            .into_iter()
            .filter(|(_, v)| v == value)
            .map(|(seq, _)| seq);
        let limit = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
        let doomed: Vec<i64> = match count {
            0 => matching.collect(),
            c if c > 0 => matching.take(limit).collect(),
            _ => matching.rev().take(limit).collect(),
        };
        if doomed.is_empty() {
            return Ok(0);
        }
        for seq in &doomed {
            self.list_items.remove((k, *seq))?;
        }
        let (head, tail, len) = self
            .list_meta
            .get(k)?
            .map(|m| m.value())
            .ok_or_else(|| corrupt(k, "list without metadata"))?;
        let removed = doomed.len() as u64;
        self.list_meta
            .insert(k, (head, tail, len.saturating_sub(removed)))?;
        self.forget_if_empty(k, Kind::List)?;
        Ok(removed)
    }

    fn list_push(&mut self, key: &str, values: &[String], left: bool) -> Result<u64> {
        self.claim(key, Kind::List)?;
        let (mut head, mut tail, mut len) =
            self.list_meta.get(key)?.map_or((0, 0, 0), |m| m.value());
        for value in values {
            let seq = if left {
                head = head
                    .checked_sub(1)
                    .ok_or_else(|| corrupt(key, "list head overflow"))?;
                head
            } else {
                let seq = tail;
                tail = tail
                    .checked_add(1)
                    .ok_or_else(|| corrupt(key, "list tail overflow"))?;
                seq
            };
            self.list_items.insert((key, seq), value.as_str())?;
            len += 1;
        }
        self.list_meta.insert(key, (head, tail, len))?;
        Ok(len)
    }

    fn list_pop(&mut self, key: &str, left: bool) -> Result<Option<String>> {
        if !expect_kind(&self.types, key, Kind::List)? {
            return Ok(None);
        }
        let (head, tail, len) = self
            .list_meta
            .get(key)?
            .map(|m| m.value())
            .ok_or_else(|| corrupt(key, "list without metadata"))?;
        let found = {
            let mut range = self.list_items.range((key, i64::MIN)..=(key, i64::MAX))?;
            let entry = if left {
                range.next()
            } else {
                range.next_back()
            };
            match entry {
                None => None,
                Some(entry) => {
                    let (k, v) = entry?;
                    Some((k.value().1, v.value().to_owned()))
                }
            }
        };
        let (seq, value) = found.ok_or_else(|| corrupt(key, "list metadata without items"))?;
        self.list_items.remove((key, seq))?;
        self.list_meta
            .insert(key, (head, tail, len.saturating_sub(1)))?;
        self.forget_if_empty(key, Kind::List)?;
        Ok(Some(value))
    }
}

// --- the trait ---

fn owned(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn hset(&self, key: &str, fields: &[(&str, &str)]) -> Result<u64> {
        if fields.is_empty() {
            return Ok(0);
        }
        let k = key.to_owned();
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(f, v)| ((*f).to_owned(), (*v).to_owned()))
            .collect();
        self.write("HSET", key, false, move |t| t.hset(&k, &fields))
            .await
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>> {
        self.read_now("HGET", key, |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, key, Kind::Hash)? {
                return Ok(None);
            }
            let hashes = txn.open_table(HASHES)?;
            Ok(hashes.get((key, field))?.map(|v| v.value().to_owned()))
        })
    }

    async fn hgetall(&self, key: &str) -> Result<BTreeMap<String, String>> {
        self.read_now("HGETALL", key, |txn| read_hash(txn, key))
    }

    async fn hgetall_many(&self, keys: &[&str]) -> Result<Vec<BTreeMap<String, String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.read_now("HGETALL", keys, |txn| read_hashes(txn, keys))
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> Result<u64> {
        if fields.is_empty() {
            return Ok(0);
        }
        let (k, fields) = (key.to_owned(), owned(fields));
        self.write("HDEL", key, false, move |t| t.hdel(&k, &fields))
            .await
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<bool> {
        let score = check_score(score)?;
        let (k, member) = (key.to_owned(), member.to_owned());
        self.write("ZADD", key, false, move |t| t.zadd(&k, &member, score))
            .await
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>> {
        self.read_now("ZSCORE", key, |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, key, Kind::ZSet)? {
                return Ok(None);
            }
            let members = txn.open_table(ZMEMBERS)?;
            Ok(members.get((key, member))?.map(|s| s.value()))
        })
    }

    async fn zrem(&self, key: &str, members: &[&str]) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let (k, members) = (key.to_owned(), owned(members));
        self.write("ZREM", key, false, move |t| t.zrem(&k, &members))
            .await
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        order: Order,
        limit: Option<usize>,
    ) -> Result<Vec<(String, f64)>> {
        let (min, max) = (check_score(min)?, check_score(max)?);
        let k = key.to_owned();
        self.read("ZRANGEBYSCORE", key, move |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, &k, Kind::ZSet)? {
                return Ok(Vec::new());
            }
            score_range(&txn.open_table(ZSCORES)?, &k, min, max, order, limit)
        })
        .await
    }

    async fn zpop_by_score(
        &self,
        key: &str,
        max: f64,
        limit: Option<usize>,
    ) -> Result<Vec<(String, f64)>> {
        let max = check_score(max)?;
        let k = key.to_owned();
        self.write("ZPOPBYSCORE", key, false, move |t| {
            if !expect_kind(&t.types, &k, Kind::ZSet)? {
                return Ok(Vec::new());
            }
            let popped = score_range(&t.zscores, &k, f64::NEG_INFINITY, max, Order::Asc, limit)?;
            for (member, score) in &popped {
                t.zremove(&k, member, *score)?;
            }
            t.forget_if_empty(&k, Kind::ZSet)?;
            Ok(popped)
        })
        .await
    }

    async fn zrem_range_by_score(&self, key: &str, min: f64, max: f64) -> Result<u64> {
        let (min, max) = (check_score(min)?, check_score(max)?);
        let k = key.to_owned();
        self.write("ZREMRANGEBYSCORE", key, false, move |t| {
            if !expect_kind(&t.types, &k, Kind::ZSet)? {
                return Ok(0);
            }
            let doomed = score_range(&t.zscores, &k, min, max, Order::Asc, None)?;
            for (member, score) in &doomed {
                t.zremove(&k, member, *score)?;
            }
            t.forget_if_empty(&k, Kind::ZSet)?;
            Ok(doomed.len() as u64)
        })
        .await
    }

    async fn zcard(&self, key: &str) -> Result<u64> {
        let k = key.to_owned();
        self.read("ZCARD", key, move |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, &k, Kind::ZSet)? {
                return Ok(0);
            }
            Ok(sub_keys(&txn.open_table(ZMEMBERS)?, &k)?.len() as u64)
        })
        .await
    }

    async fn rpush(&self, key: &str, values: &[&str]) -> Result<u64> {
        if values.is_empty() {
            return self.llen(key).await;
        }
        let (k, values) = (key.to_owned(), owned(values));
        self.write("RPUSH", key, true, move |t| t.list_push(&k, &values, false))
            .await
    }

    async fn lpush(&self, key: &str, values: &[&str]) -> Result<u64> {
        if values.is_empty() {
            return self.llen(key).await;
        }
        let (k, values) = (key.to_owned(), owned(values));
        self.write("LPUSH", key, true, move |t| t.list_push(&k, &values, true))
            .await
    }

    async fn lpop(&self, key: &str) -> Result<Option<String>> {
        let k = key.to_owned();
        self.write("LPOP", key, false, move |t| t.list_pop(&k, true))
            .await
    }

    async fn rpop(&self, key: &str) -> Result<Option<String>> {
        let k = key.to_owned();
        self.write("RPOP", key, false, move |t| t.list_pop(&k, false))
            .await
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        let k = key.to_owned();
        self.read("LRANGE", key, move |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, &k, Kind::List)? {
                return Ok(Vec::new());
            }
            let len = i64::try_from(list_len(&txn.open_table(LIST_META)?, &k)?)
                .map_err(|_| corrupt(&k, "list length out of range"))?;
            let start = if start < 0 {
                (start + len).max(0)
            } else {
                start
            };
            let stop = if stop < 0 {
                stop + len
            } else {
                stop.min(len - 1)
            };
            if start > stop || start >= len {
                return Ok(Vec::new());
            }
            let (skip, take) = (start as usize, (stop - start + 1) as usize);
            let items = txn.open_table(LIST_ITEMS)?;
            let mut out = Vec::with_capacity(take);
            for entry in items
                .range((k.as_str(), i64::MIN)..=(k.as_str(), i64::MAX))?
                .skip(skip)
                .take(take)
            {
                out.push(entry?.1.value().to_owned());
            }
            Ok(out)
        })
        .await
    }

    async fn llen(&self, key: &str) -> Result<u64> {
        self.read_now("LLEN", key, |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, key, Kind::List)? {
                return Ok(0);
            }
            list_len(&txn.open_table(LIST_META)?, key)
        })
    }

    async fn lrem(&self, key: &str, count: i64, value: &str) -> Result<u64> {
        let (k, value) = (key.to_owned(), value.to_owned());
        self.write("LREM", key, false, move |t| {
            t.list_remove(&k, count, &value)
        })
        .await
    }

    async fn lmove(&self, src: &str, dst: &str) -> Result<Option<String>> {
        let (s, d) = (src.to_owned(), dst.to_owned());
        self.write("LMOVE", src, true, move |t| {
            // Like Redis: an empty source answers nil before the destination is
            // looked at; a destination of another type fails before the pop.
            if !expect_kind(&t.types, &s, Kind::List)? {
                return Ok(None);
            }
            expect_kind(&t.types, &d, Kind::List)?;
            let Some(value) = t.list_pop(&s, true)? else {
                return Ok(None);
            };
            t.list_push(&d, std::slice::from_ref(&value), false)?;
            Ok(Some(value))
        })
        .await
    }

    async fn blmove(&self, src: &str, dst: &str, timeout: Duration) -> Result<Option<String>> {
        // Look with a cheap read first: a blocked consumer must not cost a commit
        // (an fsync) every time some other list gets a push.
        self.wait_for(timeout, || async {
            if self.llen(src).await? == 0 {
                return Ok(None);
            }
            self.lmove(src, dst).await
        })
        .await
    }

    async fn blpop(&self, key: &str, timeout: Duration) -> Result<Option<String>> {
        self.wait_for(timeout, || async {
            if self.llen(key).await? == 0 {
                return Ok(None);
            }
            self.lpop(key).await
        })
        .await
    }

    async fn sadd(&self, key: &str, members: &[&str]) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let (k, members) = (key.to_owned(), owned(members));
        self.write("SADD", key, false, move |t| t.sadd(&k, &members))
            .await
    }

    async fn srem(&self, key: &str, members: &[&str]) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let (k, members) = (key.to_owned(), owned(members));
        self.write("SREM", key, false, move |t| t.srem(&k, &members))
            .await
    }

    async fn smembers(&self, key: &str) -> Result<BTreeSet<String>> {
        let k = key.to_owned();
        self.read("SMEMBERS", key, move |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, &k, Kind::Set)? {
                return Ok(BTreeSet::new());
            }
            Ok(sub_keys(&txn.open_table(SETS)?, &k)?.into_iter().collect())
        })
        .await
    }

    async fn sismember(&self, key: &str, member: &str) -> Result<bool> {
        self.read_now("SISMEMBER", key, |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, key, Kind::Set)? {
                return Ok(false);
            }
            Ok(txn.open_table(SETS)?.get((key, member))?.is_some())
        })
    }

    async fn scard(&self, key: &str) -> Result<u64> {
        let k = key.to_owned();
        self.read("SCARD", key, move |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, &k, Kind::Set)? {
                return Ok(0);
            }
            Ok(sub_keys(&txn.open_table(SETS)?, &k)?.len() as u64)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        let k = key.to_owned();
        self.read("GET", key, move |txn| {
            if !expect_kind(&txn.open_table(TYPES)?, &k, Kind::Blob)? {
                return Ok(None);
            }
            Ok(txn
                .open_table(BLOBS)?
                .get(k.as_str())?
                .map(|v| bytes::Bytes::copy_from_slice(v.value())))
        })
        .await
    }

    async fn del(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let label = keys.join(" ");
        let keys = owned(keys);
        self.write("DEL", &label, false, move |t| {
            let mut deleted = 0;
            for key in &keys {
                if t.del(key)? {
                    deleted += 1;
                }
            }
            Ok(deleted)
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.read_now("EXISTS", key, |txn| {
            Ok(txn.open_table(TYPES)?.get(key)?.is_some())
        })
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let p = prefix.to_owned();
        self.read("SCAN", prefix, move |txn| {
            let types = txn.open_table(TYPES)?;
            let mut out = Vec::new();
            for entry in types.range(p.as_str()..)? {
                let key = entry?.0;
                if !key.value().starts_with(p.as_str()) {
                    break;
                }
                out.push(key.value().to_owned());
            }
            Ok(out)
        })
        .await
    }

    fn shared(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn subscribe(&self, _channel: &str) -> Result<super::Messages> {
        // redb locks the file to this process: nobody else publishes.
        Ok(Box::pin(futures_util::stream::pending()))
    }

    async fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let plan = batch.plan()?;
        let label = batch_label(batch);
        let batch = batch.clone();
        // One job, so one transaction: the group commit it shares with other
        // callers' writes includes all of it or, if the checks fail, none of it.
        let soft = batch.is_soft();
        self.queue("BATCH", &label, batch.pushes(), soft, move |t| {
            for (key, required) in &plan.checks {
                let actual = kind_of(&t.types, key)?.map(KeyType::from);
                if !required.allows(actual) {
                    return Err(StoreError::WrongType { key: key.clone() });
                }
            }
            for guard in batch.guards() {
                if t.hash_field(&guard.key, &guard.field)? != guard.value {
                    return Err(StoreError::Conflict {
                        key: guard.key.clone(),
                        field: guard.field.clone(),
                    });
                }
            }
            for write in batch.writes() {
                t.apply_checked(write)?;
            }
            Ok(())
        })
        .await
    }
}

/// All fields of the hash `key` in a read snapshot.
fn read_hash(txn: &ReadTransaction, key: &str) -> Result<BTreeMap<String, String>> {
    read_hashes(txn, &[key]).map(|mut all| all.pop().unwrap_or_default())
}

/// Every hash in `keys`, in order (empty for a key that is not there). The
/// tables are opened once for all of them: opening one is a lookup of its own,
/// and a listing reads hundreds of hashes at a time.
fn read_hashes(txn: &ReadTransaction, keys: &[&str]) -> Result<Vec<BTreeMap<String, String>>> {
    let types = txn.open_table(TYPES)?;
    let hashes = txn.open_table(HASHES)?;
    keys.iter()
        .map(|&key| {
            let mut out = BTreeMap::new();
            if !expect_kind(&types, key, Kind::Hash)? {
                return Ok(out);
            }
            for entry in hashes.range((key, "")..)? {
                let (entry_key, value) = entry?;
                let (owner, field) = entry_key.value();
                if owner != key {
                    break;
                }
                out.insert(field.to_owned(), value.value().to_owned());
            }
            Ok(out)
        })
        .collect()
}

/// Names a batch in error messages by the keys it writes.
fn batch_label(batch: &Batch) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for write in batch.writes() {
        if !keys.contains(&write.key()) {
            keys.push(write.key());
        }
    }
    keys.join(" ")
}

#[cfg(test)]
mod tests {
    use super::{score_from_key, score_key};

    #[test]
    fn score_encoding_preserves_order_and_value() {
        let scores = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -f64::MIN_POSITIVE,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            1.5,
            1e300,
            f64::INFINITY,
        ];
        for pair in scores.windows(2) {
            assert!(score_key(pair[0]) < score_key(pair[1]), "{pair:?}");
        }
        for s in scores {
            assert_eq!(score_from_key(score_key(s)), s);
        }
        assert_eq!(score_key(-0.0), score_key(0.0));
        assert!(score_key(f64::INFINITY) < u64::MAX);
    }
}
