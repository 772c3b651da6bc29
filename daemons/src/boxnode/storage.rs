//! Stored files on disk and their expiry index.
//!
//! Layout under the data directory:
//!
//! ```text
//! files/<publisher-id>/<path>     stored files, served at /<publisher-id>/<path>
//! files/.partial/<n>.partial      transfers under way (same filesystem, so rename is atomic)
//! ```
//!
//! The index is the store's `{ID}:EXPIRE_FILES` sorted set (member
//! `<publisher-id>/<path>`, score = expiry in epoch seconds). A file lands by
//! recording its expiry first and renaming the verified temporary file second; it
//! goes by deleting the file first and the index entry second. So after a crash at
//! any point there is at worst an index entry without a file, or a file without an
//! entry — and [`Storage::open`] repairs both at start-up, together with expired
//! files and leftover temporary files.
//!
//! An in-memory table of live files (size, expiry) answers quota checks and
//! serving without touching the store; it is rebuilt from disk and index at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dandelion_core::store::{Order, Store};
use dandelion_core::stripes::Stripes;

use super::rules::{self, QuotaRefusal, Quotas, Usage};
use dandelion_core::fsio;
use dandelion_core::paths::{self, PathRefusal};

/// One live stored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEntry {
    pub size: u64,
    /// Epoch seconds.
    pub expires: u64,
    /// Changes whenever the file is replaced, so a cached copy can tell it is stale
    /// even when size and expiry happen to be equal (a playlist re-pushed in the
    /// same second).
    pub version: u64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a push cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreRefusal {
    #[error(transparent)]
    Path(#[from] PathRefusal),
    #[error(transparent)]
    Quota(#[from] QuotaRefusal),
    #[error("the box could not write the file: {0}")]
    Io(String),
}

impl StoreRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            StoreRefusal::Path(p) => p.code(),
            StoreRefusal::Quota(q) => q.code(),
            StoreRefusal::Io(_) => "io_error",
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    files: HashMap<String, FileEntry>,
    /// Bytes stored, by publisher.
    used: HashMap<String, u64>,
    /// Bytes promised to transfers under way, by publisher.
    reserved: HashMap<String, u64>,
    total_used: u64,
    total_reserved: u64,
}

/// Cheap-clone handle to the box's stored files.
#[derive(Debug, Clone)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    partial: PathBuf,
    store: Arc<dyn Store>,
    index_key: String,
    quotas: Quotas,
    // A std Mutex: held for map updates only, never across an await.
    table: std::sync::Mutex<Table>,
    // Serialise "index then file" updates of one name (landing, sweeping), so a
    // sweep never deletes a file that a push just replaced under the same name.
    // Names share [`LANDING_STRIPES`] locks ([`Stripes`]): one lock for the whole box, held
    // across a durable commit and a directory fsync, let a box land one file
    // at a time (about 300 a second) and kept its store from grouping their
    // commits. Tokio mutexes, because they are held across store and
    // filesystem awaits.
    landing: Stripes<tokio::sync::Mutex<()>>,
    /// Numbers temporary files and file versions: unique while the process runs.
    counter: AtomicU64,
}

/// A reservation plus temporary file for a transfer under way. Dropping it
/// without [`Storage::land`] removes the temporary file and frees the reservation.
#[derive(Debug)]
pub struct Pending {
    storage: Storage,
    pub publisher: String,
    pub rel: String,
    pub member: String,
    pub temp: PathBuf,
    /// The temporary file, created by the first write (or by landing, for an
    /// empty file). A big one is written past the page cache.
    file: Option<fsio::DirectFile>,
    /// The last write synced the file: landing need not.
    synced: bool,
    /// A big file's pages go to disk while it arrives, where they were not
    /// written past the cache.
    behind: fsio::WriteBehind,
    /// The write under way, and its length.
    writing: Option<(Writing, u64)>,
    reserved: u64,
    landed: bool,
}

/// Transfers bigger than this are written past the page cache: they are
/// not live segments, whose readers come at once and find them in the cache.
const BIG: u64 = fsio::STAGE as u64;

fn create_temp(temp: &Path, big: bool) -> Result<fsio::DirectFile, StoreRefusal> {
    let created = if big {
        fsio::DirectFile::create(temp)
    } else {
        fsio::DirectFile::create_cached(temp)
    };
    created.map_err(|e| StoreRefusal::Io(format!("creating a temporary file: {e}")))
}

/// A write on the blocking pool: the file comes back with the result.
type Writing = tokio::task::JoinHandle<(Option<fsio::DirectFile>, Result<(), StoreRefusal>)>;

impl Pending {
    /// Appends `bytes` to the temporary file, and syncs it when `last`: one
    /// trip to the blocking pool for what was three (create, write, fsync)
    /// when a file comes in one frame, as live segments do.
    ///
    /// The write is left running while the session reads and hashes the next
    /// frame; the next call (or landing) waits for it and reports its failure. `held` (the bytes' share of `box.upload_memory`)
    /// is given up when the write ends, also when nobody waits for it any
    /// more: until then the bytes, and a direct file's aligned copy of them,
    /// are in memory.
    pub async fn write(
        &mut self,
        bytes: bytes::Bytes,
        last: bool,
        held: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), StoreRefusal> {
        self.written().await?;
        let len = bytes.len() as u64;
        let file = self.file.take();
        let (temp, big) = (self.temp.clone(), self.reserved > BIG);
        let task = tokio::task::spawn_blocking(move || {
            let _held = held;
            let mut file = match file {
                Some(file) => file,
                None => match create_temp(&temp, big) {
                    Ok(file) => file,
                    Err(e) => return (None, Err(e)),
                },
            };
            let failed =
                |e: std::io::Error| StoreRefusal::Io(format!("writing the temporary file: {e}"));
            if let Err(e) = file.write_all(&bytes) {
                return (Some(file), Err(failed(e)));
            }
            if !last {
                return (Some(file), Ok(()));
            }
            (
                None,
                file.finish()
                    .and_then(|file| file.sync_all())
                    .map_err(failed),
            )
        });
        self.writing = Some((task, len));
        // The last write's fsync is waited for by landing, off the session:
        // the session reads the next file while this one reaches the disk.
        self.synced = last;
        Ok(())
    }

    /// Waits for the write under way, if any; its failure is the transfer's.
    async fn written(&mut self) -> Result<(), StoreRefusal> {
        let Some((task, len)) = self.writing.take() else {
            return Ok(());
        };
        let (file, written) = task.await.unwrap_or_else(|e| {
            (
                None,
                Err(StoreRefusal::Io(format!("a filesystem task failed: {e}"))),
            )
        });
        self.file = file;
        written?;
        if let Some(file) = self.file.as_ref().filter(|f| !f.is_direct()) {
            self.behind
                .wrote(file.file(), len)
                .map_err(|e| StoreRefusal::Io(format!("writing the temporary file: {e}")))?;
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.landed
            && let Some((task, _)) = self.writing.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            // The write under way may create the file after this: remove it
            // once that write is over.
            let temp = self.temp.clone();
            runtime.spawn(async move {
                let _ = task.await;
                let _ = tokio::fs::remove_file(temp).await;
            });
        }
        if !self.landed {
            // Best effort and synchronous: a temporary file must not outlive its transfer.
            let _ = std::fs::remove_file(&self.temp);
        }
        self.storage.unreserve(&self.publisher, self.reserved);
    }
}

impl Storage {
    /// Opens the storage under `data_dir`, repairing what a crash left behind:
    /// temporary files, expired files, files without an index entry and entries
    /// without a file.
    pub async fn open(
        data_dir: &Path,
        store: Arc<dyn Store>,
        index_key: String,
        quotas: Quotas,
    ) -> anyhow::Result<Storage> {
        let root = data_dir.join("files");
        let partial = root.join(".partial");
        if partial.exists() {
            tokio::fs::remove_dir_all(&partial)
                .await
                .with_context(|| format!("cannot clear {}", partial.display()))?;
        }
        tokio::fs::create_dir_all(&partial)
            .await
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let storage = Storage {
            inner: Arc::new(Inner {
                root,
                partial,
                store,
                index_key,
                quotas,
                table: std::sync::Mutex::new(Table::default()),
                landing: Stripes::new(LANDING_STRIPES),
                counter: AtomicU64::new(0),
            }),
        };
        storage.reconcile().await?;
        Ok(storage)
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn reconcile(&self) -> anyhow::Result<()> {
        let now = now_secs();
        let entries = self
            .inner
            .store
            .zrange_by_score(
                &self.inner.index_key,
                f64::NEG_INFINITY,
                f64::INFINITY,
                Order::Asc,
                None,
            )
            .await
            .context("cannot read the expiry index")?;
        let mut live = HashMap::new();
        let (mut expired, mut missing) = (0u32, 0u32);
        for (member, score) in entries {
            let expires = score_secs(score);
            let path = self.inner.root.join(&member);
            let file = std::fs::symlink_metadata(&path)
                .ok()
                .filter(|m| m.is_file() && paths::relative_path(&member).is_ok());
            match file {
                Some(_) if expires <= now => {
                    remove_file_if_there(&path).await?;
                    expired += 1;
                    self.inner
                        .store
                        .zrem(&self.inner.index_key, &[&member])
                        .await?;
                }
                Some(meta) => {
                    live.insert(
                        member,
                        FileEntry {
                            size: meta.len(),
                            expires,
                            version: self.inner.counter.fetch_add(1, Ordering::Relaxed),
                        },
                    );
                }
                None => {
                    missing += 1;
                    self.inner
                        .store
                        .zrem(&self.inner.index_key, &[&member])
                        .await?;
                }
            }
        }
        let root = self.inner.root.clone();
        let keep: std::collections::HashSet<String> = live.keys().cloned().collect();
        let orphans = tokio::task::spawn_blocking(move || remove_orphans(&root, &keep))
            .await
            .context("orphan sweep task failed")??;
        if expired + missing + orphans > 0 {
            tracing::info!(
                expired,
                missing,
                orphans,
                "repaired stored files against the expiry index"
            );
        }
        let mut table = self.table();
        for (member, entry) in live {
            let publisher = publisher_of(&member).to_owned();
            *table.used.entry(publisher).or_default() += entry.size;
            table.total_used += entry.size;
            table.files.insert(member, entry);
        }
        Ok(())
    }

    /// Checks the path and the quotas, reserves the room and creates the
    /// temporary file for a push of `size` bytes.
    pub async fn begin(
        &self,
        publisher: &str,
        file_path: &str,
        size: u64,
    ) -> Result<Pending, StoreRefusal> {
        let rel = paths::relative_path(file_path)?;
        let base = self.inner.root.join(publisher);
        paths::check_on_disk(&base, &rel)?;
        let member = format!("{publisher}/{rel}");
        let disk_available = dandelion_core::probe::disk_space(&self.inner.root).map(|d| d.1);
        {
            let mut table = self.table();
            let usage = Usage {
                total: table.total_used + table.total_reserved,
                publisher: table.used.get(publisher).copied().unwrap_or(0)
                    + table.reserved.get(publisher).copied().unwrap_or(0),
                replaced: table.files.get(&member).map_or(0, |f| f.size),
            };
            rules::check_quota(
                size,
                usage,
                Quotas {
                    disk_available,
                    ..self.inner.quotas
                },
            )?;
            *table.reserved.entry(publisher.to_owned()).or_default() += size;
            table.total_reserved += size;
        }
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let temp = self.inner.partial.join(format!("{n}.partial"));
        Ok(Pending {
            storage: self.clone(),
            publisher: publisher.to_owned(),
            rel,
            member,
            temp,
            file: None,
            synced: false,
            behind: fsio::WriteBehind::default(),
            writing: None,
            reserved: size,
            landed: false,
        })
    }

    fn unreserve(&self, publisher: &str, bytes: u64) {
        let mut table = self.table();
        if let Some(r) = table.reserved.get_mut(publisher) {
            *r = r.saturating_sub(bytes);
            if *r == 0 {
                table.reserved.remove(publisher);
            }
        }
        table.total_reserved = table.total_reserved.saturating_sub(bytes);
    }

    /// Moves a verified temporary file into place: fsync (unless its last
    /// write did), record the expiry, then rename over whatever was there (an
    /// atomic replace) and sync the directory.
    ///
    /// The file's fsync and the expiry's commit are each a wait on the disk and
    /// need nothing from each other, so they run side by side: one fsync less
    /// between a segment's last byte and its verdict. Both end before the
    /// rename, so a file under its name always has its expiry recorded; a
    /// crash between them leaves an entry without a file or a temporary file,
    /// both of which opening the storage repairs. Anything that fails after
    /// the expiry was recorded (the path's check, the rename) puts the index
    /// back as it was.
    pub async fn land(
        &self,
        mut pending: Pending,
        size: u64,
        ttl: u64,
    ) -> Result<(), StoreRefusal> {
        let io = |what: &str, e: std::io::Error| StoreRefusal::Io(format!("{what}: {e}"));
        let member = pending.member.clone();
        let base = self.inner.root.join(&pending.publisher);
        let rel = pending.rel.clone();
        let _landing = self.landing(&member).lock().await;
        let durable = async {
            pending.written().await?;
            pending.behind.settle().await.map_err(|e| io("fsync", e))?;
            if !pending.synced {
                let file = pending.file.take();
                let temp = pending.temp.clone();
                blocking(move || {
                    let file = match file {
                        Some(file) => file,
                        // No byte came: an empty file.
                        None => create_temp(&temp, false)?,
                    };
                    let file = file.finish().map_err(|e| io("writing the file", e))?;
                    file.sync_all().map_err(|e| io("fsync", e))
                })
                .await?;
            }
            pending.file = None;
            Ok(())
        };
        let expires = now_secs().saturating_add(ttl);
        let recorded = async {
            self.inner
                .store
                .zadd(&self.inner.index_key, &member, secs_score(expires))
                .await
                .map(|_| ())
                .map_err(|e| StoreRefusal::Io(format!("recording the expiry: {e}")))
        };
        let (durable, recorded) = tokio::join!(durable, recorded);
        let recorded_ok = recorded.is_ok();
        if let Err(e) = durable.and(recorded) {
            if recorded_ok {
                self.restore_expiry(&member).await;
            }
            return Err(e);
        }
        let temp = pending.temp.clone();
        let renamed = blocking(move || {
            // Checked again: a directory may have changed since the transfer
            // began. In the same trip to the blocking pool as the rename: a
            // check and a `mkdir` of a directory that is there take
            // microseconds, a trip of its own costs two thread switches.
            let target = paths::check_on_disk(&base, &rel)?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("creating the directory", e))?;
            }
            std::fs::rename(&temp, &target).map_err(|e| io("moving the file into place", e))?;
            // The rename is durable once the directory is synced.
            if let Some(parent) = target.parent()
                && let Ok(dir) = std::fs::File::open(parent)
            {
                let _ = dir.sync_all();
            }
            Ok(())
        })
        .await;
        if let Err(e) = renamed {
            self.restore_expiry(&member).await;
            return Err(e);
        }
        pending.landed = true;
        let mut table = self.table();
        let version = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let old = table.files.insert(
            pending.member.clone(),
            FileEntry {
                size,
                expires,
                version,
            },
        );
        let publisher_used = table.used.entry(pending.publisher.clone()).or_default();
        *publisher_used = publisher_used
            .saturating_sub(old.map_or(0, |f| f.size))
            .saturating_add(size);
        table.total_used = table
            .total_used
            .saturating_sub(old.map_or(0, |f| f.size))
            .saturating_add(size);
        Ok(())
    }

    /// Puts back the expiry a failed landing recorded: the one of the file
    /// still under the name, or none. Best effort: an entry left wrong names
    /// a file that is not there, which the sweep and opening the storage forget.
    async fn restore_expiry(&self, member: &str) {
        let before = self.table().files.get(member).map(|f| f.expires);
        let key = &self.inner.index_key;
        let restored = match before {
            Some(expires) => self
                .inner
                .store
                .zadd(key, member, secs_score(expires))
                .await
                .map(|_| ()),
            None => self.inner.store.zrem(key, &[member]).await.map(|_| ()),
        };
        if let Err(e) = restored {
            tracing::warn!(member, "cannot undo the expiry of a failed landing: {e}");
        }
    }

    /// A live (not expired) file by its member name `<publisher-id>/<path>`.
    pub fn get(&self, member: &str) -> Option<FileEntry> {
        let entry = *self.table().files.get(member)?;
        (entry.expires > now_secs()).then_some(entry)
    }

    /// Every live file, for the admin listing.
    pub fn list(&self) -> Vec<(String, FileEntry)> {
        let now = now_secs();
        let mut files: Vec<_> = self
            .table()
            .files
            .iter()
            .filter(|(_, e)| e.expires > now)
            .map(|(m, e)| (m.clone(), *e))
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        files
    }

    /// Files and bytes stored (expired but not yet swept included), for `/metrics`.
    pub fn counts(&self) -> (u64, u64) {
        let table = self.table();
        (
            u64::try_from(table.files.len()).unwrap_or(u64::MAX),
            table.total_used,
        )
    }

    /// Bytes stored in total and by one publisher.
    pub fn used(&self, publisher: Option<&str>) -> u64 {
        let table = self.table();
        match publisher {
            None => table.total_used,
            Some(p) => table.used.get(p).copied().unwrap_or(0),
        }
    }

    /// Free room for one publisher under the quotas (not counting the disk).
    pub fn quota_free(&self, publisher: &str) -> Option<u64> {
        let total = self
            .inner
            .quotas
            .storage
            .map(|q| q.saturating_sub(self.used(None)));
        let own = self
            .inner
            .quotas
            .publisher
            .map(|q| q.saturating_sub(self.used(Some(publisher))));
        match (total, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The lock that orders landings and the sweep for `member`.
    fn landing(&self, member: &str) -> &tokio::sync::Mutex<()> {
        self.inner.landing.of(member)
    }

    /// Deletes every file whose time is up: file first, index entry second.
    /// Returns how many went.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let now = now_secs();
        let due = self
            .inner
            .store
            .zrange_by_score(
                &self.inner.index_key,
                f64::NEG_INFINITY,
                secs_score(now),
                Order::Asc,
                Some(1024),
            )
            .await
            .context("cannot read the expiry index")?;
        let mut removed = 0;
        for (member, _) in due {
            let _landing = self.landing(&member).lock().await;
            // A push may have renewed it since the range was read.
            let score = self
                .inner
                .store
                .zscore(&self.inner.index_key, &member)
                .await?;
            if score.is_none_or(|s| score_secs(s) > now) {
                continue;
            }
            if paths::relative_path(&member).is_ok() {
                remove_file_if_there(&self.inner.root.join(&member)).await?;
            }
            self.inner
                .store
                .zrem(&self.inner.index_key, &[&member])
                .await?;
            let mut table = self.table();
            if let Some(old) = table.files.remove(&member) {
                let publisher = publisher_of(&member).to_owned();
                if let Some(used) = table.used.get_mut(&publisher) {
                    *used = used.saturating_sub(old.size);
                }
                table.total_used = table.total_used.saturating_sub(old.size);
            }
            removed += 1;
        }
        Ok(removed)
    }
}

/// Locks the names a box lands are spread over: landings of different names
/// rarely wait for each other (a session lands up to
/// `session::MAX_LANDINGS` at once, from up to `box.max_publisher_sessions`).
const LANDING_STRIPES: usize = 64;

fn publisher_of(member: &str) -> &str {
    member.split_once('/').map_or(member, |(p, _)| p)
}

fn secs_score(secs: u64) -> f64 {
    // Epoch seconds stay far below 2^53, where f64 is exact.
    #[allow(clippy::cast_precision_loss)]
    let score = secs as f64;
    score
}

fn score_secs(score: f64) -> u64 {
    if score.is_finite() && score > 0.0 {
        // Scores are whole epoch seconds written by `secs_score`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let secs = score as u64;
        secs
    } else {
        0
    }
}

async fn remove_file_if_there(path: &Path) -> anyhow::Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}

/// Deletes every file under `root` (except the temporary directory) whose member
/// name is not in `keep`; returns how many.
fn remove_orphans(root: &Path, keep: &std::collections::HashSet<String>) -> anyhow::Result<u32> {
    let mut removed = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            if dir == root && entry.file_name() == ".partial" {
                continue;
            }
            let file_type = entry
                .file_type()
                .with_context(|| format!("cannot inspect {}", path.display()))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let member = path
                .strip_prefix(root)
                .ok()
                .and_then(|p| p.to_str())
                .map(str::to_owned);
            if member.is_none_or(|m| !keep.contains(&m)) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot delete {}", path.display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Runs filesystem work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreRefusal> + Send + 'static,
) -> Result<T, StoreRefusal> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(StoreRefusal::Io(format!("a filesystem task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use dandelion_core::store::embedded::EmbeddedStore;

    const INDEX: &str = "box:EXPIRE_FILES";
    const PUBLISHER: &str = "publisher-0123";

    async fn open(dir: &Path) -> (Storage, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.join("store.redb")).unwrap());
        let storage = Storage::open(dir, store.clone(), INDEX.into(), Quotas::default())
            .await
            .unwrap();
        (storage, store)
    }

    /// A transfer of `bytes` to `path`, written and ready to land.
    async fn arrived(storage: &Storage, path: &str, bytes: &'static [u8]) -> Pending {
        let mut pending = storage
            .begin(PUBLISHER, path, bytes.len() as u64)
            .await
            .unwrap();
        let permit = Arc::new(tokio::sync::Semaphore::new(1 << 20))
            .acquire_many_owned(1)
            .await
            .unwrap();
        pending
            .write(bytes::Bytes::from_static(bytes), true, permit)
            .await
            .unwrap();
        pending
    }

    #[tokio::test]
    async fn a_landed_file_is_in_place_with_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, store) = open(dir.path()).await;
        let pending = arrived(&storage, "/live/seg-1.ts", b"segment").await;
        storage.land(pending, 7, 60).await.unwrap();
        let member = format!("{PUBLISHER}/live/seg-1.ts");
        let on_disk = std::fs::read(dir.path().join("files").join(&member)).unwrap();
        assert_eq!(on_disk, b"segment");
        let entry = storage.get(&member).unwrap();
        let score = store.zscore(INDEX, &member).await.unwrap();
        assert_eq!(score.map(score_secs), Some(entry.expires));
        assert!(
            std::fs::read_dir(dir.path().join("files/.partial"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    /// The expiry is committed while the file is still being made durable; a
    /// landing that then fails must not leave it behind, for a new name or
    /// over a file already there.
    #[tokio::test]
    async fn a_failed_landing_leaves_the_expiry_index_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, store) = open(dir.path()).await;
        let files = dir.path().join("files").join(PUBLISHER);
        std::fs::create_dir_all(&files).unwrap();

        // A new name whose directory became a symlink while the bytes came.
        let pending = arrived(&storage, "/moved/seg-1.ts", b"segment").await;
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), files.join("moved")).unwrap();
        let refused = storage.land(pending, 7, 60).await.unwrap_err();
        assert!(matches!(refused, StoreRefusal::Path(_)), "{refused:?}");
        let member = format!("{PUBLISHER}/moved/seg-1.ts");
        assert_eq!(store.zscore(INDEX, &member).await.unwrap(), None);
        assert!(storage.get(&member).is_none());
        assert!(
            std::fs::read_dir(elsewhere.path())
                .unwrap()
                .next()
                .is_none()
        );

        // A replacement whose name became a directory while the bytes came:
        // the expiry of the file the index had stays.
        let pending = arrived(&storage, "/stuck.ts", b"first").await;
        storage.land(pending, 5, 600).await.unwrap();
        let member = format!("{PUBLISHER}/stuck.ts");
        let before = store.zscore(INDEX, &member).await.unwrap();
        assert!(before.is_some());
        let pending = arrived(&storage, "/stuck.ts", b"second").await;
        std::fs::remove_file(files.join("stuck.ts")).unwrap();
        std::fs::create_dir_all(files.join("stuck.ts/inside")).unwrap();
        let refused = storage.land(pending, 6, 5).await.unwrap_err();
        assert!(matches!(refused, StoreRefusal::Path(_)), "{refused:?}");
        assert_eq!(store.zscore(INDEX, &member).await.unwrap(), before);

        // A replacement whose rename fails (its temporary file is gone): the
        // file under the name and its expiry stay as they were.
        std::fs::remove_dir_all(files.join("stuck.ts")).unwrap();
        let pending = arrived(&storage, "/kept.ts", b"first").await;
        storage.land(pending, 5, 600).await.unwrap();
        let member = format!("{PUBLISHER}/kept.ts");
        let before = store.zscore(INDEX, &member).await.unwrap();
        let mut pending = arrived(&storage, "/kept.ts", b"second").await;
        pending.written().await.unwrap();
        std::fs::remove_file(&pending.temp).unwrap();
        let refused = storage.land(pending, 6, 5).await.unwrap_err();
        assert!(matches!(refused, StoreRefusal::Io(_)), "{refused:?}");
        assert_eq!(store.zscore(INDEX, &member).await.unwrap(), before);
        assert_eq!(std::fs::read(files.join("kept.ts")).unwrap(), b"first");
    }
}
