//! The daemons' state, behind one small trait of Redis-like primitives.
//!
//! Domain code is written once against [`Store`] and the key names of [`keys`]; the
//! operator picks the backend: an embedded `redb` file (the default, nothing to
//! install) or a Redis server shared by several daemons. Both backends follow Redis
//! semantics — a key has one type, using it as another fails with
//! [`StoreError::WrongType`] and changes nothing, an emptied container disappears —
//! and one conformance suite (`core/tests/store_conformance.rs`) runs against both, so
//! code tested on one behaves the same on the other. Writes that belong together
//! (a record spread over several keys) go in one [`Batch`], applied all or nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

mod batch;
pub mod embedded;
mod error;
pub mod keys;
#[cfg(feature = "redis")]
pub mod redis;

pub use batch::{Batch, Guard, Write};
pub use embedded::{EmbeddedStore, SOFT_SYNC_WITHIN};
pub use error::StoreError;
pub use keys::Keys;
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// The result of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Direction of a sorted-set range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Lowest score first; equal scores by member, bytewise ascending.
    Asc,
    /// Highest score first; equal scores by member, bytewise descending (like
    /// `ZREVRANGEBYSCORE`).
    Desc,
}

/// Redis-like primitives over UTF-8 keys, fields and values.
///
/// Object-safe (daemons hold an `Arc<dyn Store>`) and async, because the Redis
/// backend is network I/O and the embedded one must keep its synchronous disk work
/// off the async worker threads. Every method follows the Redis command of the same
/// name; differences are documented on the method. Calls with an empty slice of
/// members do nothing and return 0 (Redis would refuse the command).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    // --- hashes ---

    /// Sets fields of a hash; returns how many fields are new.
    async fn hset(&self, key: &str, fields: &[(&str, &str)]) -> Result<u64>;
    /// One field of a hash.
    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>>;
    /// All fields of a hash (empty if the key does not exist).
    async fn hgetall(&self, key: &str) -> Result<BTreeMap<String, String>>;
    /// Removes fields; returns how many existed.
    async fn hdel(&self, key: &str, fields: &[&str]) -> Result<u64>;
    /// [`Store::hgetall`] of several keys, in their order, as of one moment: one
    /// read snapshot on the embedded store, one atomic `MULTI` round trip on Redis.
    async fn hgetall_many(&self, keys: &[&str]) -> Result<Vec<BTreeMap<String, String>>>;

    // --- sorted sets ---

    /// Adds a member or updates its score; returns whether the member is new.
    /// A NaN score is refused with [`StoreError::InvalidScore`].
    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<bool>;
    /// The score of a member.
    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>>;
    /// Removes members; returns how many existed.
    async fn zrem(&self, key: &str, members: &[&str]) -> Result<u64>;
    /// Members with `min <= score <= max`, in `order`, at most `limit` of them.
    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        order: Order,
        limit: Option<usize>,
    ) -> Result<Vec<(String, f64)>>;
    /// Atomically removes and returns the lowest-scored members with `score <= max`
    /// (at most `limit`), ascending: two concurrent expiry sweeps never get the same
    /// member.
    async fn zpop_by_score(
        &self,
        key: &str,
        max: f64,
        limit: Option<usize>,
    ) -> Result<Vec<(String, f64)>>;
    /// Removes members with `min <= score <= max`; returns how many.
    async fn zrem_range_by_score(&self, key: &str, min: f64, max: f64) -> Result<u64>;
    /// Number of members.
    async fn zcard(&self, key: &str) -> Result<u64>;

    // --- lists ---

    /// Appends values at the right; returns the new length.
    async fn rpush(&self, key: &str, values: &[&str]) -> Result<u64>;
    /// Prepends values one by one at the left (so `[a, b]` ends up as `b, a, …`);
    /// returns the new length.
    async fn lpush(&self, key: &str, values: &[&str]) -> Result<u64>;
    /// Removes and returns the leftmost value.
    async fn lpop(&self, key: &str) -> Result<Option<String>>;
    /// Removes and returns the rightmost value.
    async fn rpop(&self, key: &str) -> Result<Option<String>>;
    /// Values from index `start` to `stop`, both inclusive; negative indices count
    /// from the end (`-1` is the last value).
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<String>>;
    /// Length of a list.
    async fn llen(&self, key: &str) -> Result<u64>;
    /// Removes values equal to `value`: the first `count` from the left if
    /// `count > 0`, the last `-count` from the right if `count < 0`, all if 0.
    /// Returns how many were removed.
    async fn lrem(&self, key: &str, count: i64, value: &str) -> Result<u64>;
    /// Atomically pops the left of `src` and pushes it at the right of `dst`: the
    /// reliable-queue move (a value is always in exactly one of the two lists).
    async fn lmove(&self, src: &str, dst: &str) -> Result<Option<String>>;
    /// [`Store::lmove`], waiting up to `timeout` for `src` to get a value.
    /// `Duration::ZERO` waits forever, as in Redis.
    async fn blmove(&self, src: &str, dst: &str, timeout: Duration) -> Result<Option<String>>;
    /// [`Store::lpop`], waiting up to `timeout` for a value.
    /// `Duration::ZERO` waits forever, as in Redis.
    async fn blpop(&self, key: &str, timeout: Duration) -> Result<Option<String>>;

    // --- sets ---

    /// Adds members; returns how many are new.
    async fn sadd(&self, key: &str, members: &[&str]) -> Result<u64>;
    /// Removes members; returns how many existed.
    async fn srem(&self, key: &str, members: &[&str]) -> Result<u64>;
    /// All members.
    async fn smembers(&self, key: &str) -> Result<BTreeSet<String>>;
    /// Whether `member` is in the set.
    async fn sismember(&self, key: &str, member: &str) -> Result<bool>;
    /// Number of members.
    async fn scard(&self, key: &str) -> Result<u64>;

    // --- values of bytes (written with [`Batch::set`]) ---

    /// The bytes `key` was set to; `None` when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>>;

    // --- keys ---

    /// Deletes keys of any type; returns how many existed.
    async fn del(&self, keys: &[&str]) -> Result<u64>;
    /// Whether the key exists.
    async fn exists(&self, key: &str) -> Result<bool>;
    /// Every key starting with `prefix`, sorted. Meant for start-up and maintenance
    /// (it walks the key space), not for hot paths.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>>;

    // --- batches ---

    /// Applies the writes of `batch` in order, all or nothing: a concurrent reader
    /// sees either none of them or all of them, and a failed batch changes nothing.
    ///
    /// Types are checked before anything is written, by the rule given at
    /// [`Batch`]: a write that does not fit its key fails the whole batch with
    /// [`StoreError::WrongType`], a NaN score with [`StoreError::InvalidScore`]. An
    /// empty batch does nothing. The embedded store commits a batch in one write
    /// transaction; Redis runs it as one script, which no other client's command
    /// can interleave with.
    async fn apply(&self, batch: &Batch) -> Result<()>;

    // --- about the store ---

    /// Whether other processes may write this store too: Redis, shared by
    /// several daemons, rather than the embedded file, which redb locks to one
    /// process. What a process remembers of its own writes is still the store's
    /// content only when the store is not shared.
    fn shared(&self) -> bool;

    /// Whether the store answers now: a round trip to a Redis server, nothing
    /// for the embedded file. `/healthz` asks it, within its own time limit.
    async fn ping(&self) -> Result<()>;

    /// The messages published on `channel` ([`Batch::publish`]) from now on,
    /// in order, on a connection of their own. The stream ends when that
    /// connection is lost: the subscriber must then assume it missed messages,
    /// subscribe again and read what it follows afresh. The embedded store,
    /// which no other process writes, gives a stream that never yields.
    async fn subscribe(&self, channel: &str) -> Result<Messages>;
}

/// What [`Store::subscribe`] gives: each message's text.
pub type Messages = std::pin::Pin<Box<dyn futures_util::Stream<Item = String> + Send>>;

/// `redis://user:secret@host/` → `redis://user:***@host/`: URLs end up in logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{userinfo}@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// The file name of the embedded store inside the data directory.
pub const EMBEDDED_FILE_NAME: &str = "dandelion.redb";

/// Opens the store named by `spec`, as given on the command line (`--store`).
///
/// `"embedded"` or `""` opens `data_dir/dandelion.redb`; `redis://…` or
/// `rediss://…` connects to Redis, with `prefix` in front of every key (the
/// embedded file belongs to one daemon and needs none). `cache_bytes` bounds the
/// embedded store's page cache.
pub async fn open_store(
    spec: &str,
    data_dir: &Path,
    prefix: &str,
    cache_bytes: usize,
) -> Result<Arc<dyn Store>> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "embedded" {
        let store =
            EmbeddedStore::open_with_cache(&data_dir.join(EMBEDDED_FILE_NAME), cache_bytes)?;
        return Ok(Arc::new(store));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        return open_redis(spec, prefix).await;
    }
    Err(StoreError::Config(format!(
        "unknown store {spec:?}: use \"embedded\" (a file in the data directory) or a \
         Redis URL, redis://[user:password@]host[:port][/db] or rediss://… for TLS"
    )))
}

/// Opens the store a daemon's configuration names: `store`, with `store_prefix`
/// and the `store_cache` bound.
pub async fn open_configured(config: &crate::config::Config) -> Result<Arc<dyn Store>> {
    open_store(
        &config.store,
        &config.data_dir,
        &config.store_prefix,
        usize::try_from(config.store_cache.as_u64()).unwrap_or(usize::MAX),
    )
    .await
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str, prefix: &str) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(RedisStore::connect(url, prefix).await?))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_url: &str, _prefix: &str) -> Result<Arc<dyn Store>> {
    Err(StoreError::Config(
        "this build of Dandelion has no Redis support (built without the `redis` \
         feature); use --store embedded, or a build with Redis support"
            .to_owned(),
    ))
}
