//! The Redis backend, for operators who run several entrances or publishers on one
//! shared namespace.
//!
//! Ordinary commands share one reconnecting multiplexed connection
//! (`ConnectionManager`) with a response timeout, so a dead server turns into errors
//! instead of hung daemons. Blocking commands (`BLMOVE`, `BLPOP`) must not run on it:
//! a multiplexed connection answers in order, so one blocked command would stall
//! every other command behind it, and the response timeout would cut it short. They
//! run on dedicated connections without a response timeout, kept in a small idle
//! pool.
//!
//! A [`Batch`] runs as one Lua script (`EVALSHA`, falling back to `EVAL` when the
//! server forgot the script), not as `MULTI`/`EXEC`: `EXEC` keeps the commands
//! before one that failed with `WRONGTYPE`, and checking the types first from the
//! client would need `WATCH` on a connection of its own, and a retry loop. The
//! script checks the types the batch planned, then writes, and no other client's
//! command runs in between. All its keys are passed as `KEYS`, so on a cluster
//! they must share a slot, which the `{ID}` hash tag of one daemon's keys gives.
//!
//! Every key gets the configured prefix in front of it (`staging:{box-1}:EXPIRE_FILES`).
//! The prefix may not contain braces: the hash tag of a key must stay the daemon's
//! `{ID}`, which is the first `{…}` of the key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisError};

use super::batch::Requirement;
use futures_util::StreamExt;

use super::{Batch, Messages, Order, Result, Store, StoreError, Write, redact_url};

/// The whole start-up check (connect, PING) must fit in this: a daemon pointed at a
/// wrong address has to say so, not hang.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(3);
/// One TCP connect (+ handshake) attempt.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer time of a non-blocking command. The client's default, 500 ms, is
/// short for a `SCAN` of a large key space on a loaded server.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time given to a blocking command beyond its own timeout before we decide
/// the server is gone.
const BLOCKING_GRACE: Duration = Duration::from_secs(5);
/// Idle dedicated connections kept for blocking commands.
const MAX_IDLE_BLOCKING: usize = 4;

/// Atomic range-and-remove for expiry sweeps; a script runs without interleaving, so
/// two sweepers never pop the same member. Sent with `EVAL` (not `Script`) so that the
/// client's `script` feature is not needed.
const ZPOP_BY_SCORE: &str = r"
local popped = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
for i = 1, #popped, 2 do
  redis.call('ZREM', KEYS[1], popped[i])
end
return popped
";

/// Applies a [`Batch`] in one script, so no other client's command runs between
/// its writes. Scripts are not rolled back either, so the type checks the batch
/// planned and its guards come first, before any write: `KEYS` are the batch's
/// keys; `ARGV[1]` is the number of checks, followed by that many pairs (key index,
/// the one type the key may hold besides none, or `none`); then the number of
/// guards, followed by that many quadruples (key index, field, `1` and the value
/// the field must hold, or `0` and anything when it must be absent); then the
/// writes, each as (command, key index, argument count, arguments...). Returns 0
/// when applied; the index of the first key whose type failed its check, or minus
/// the number of the first guard that failed, nothing written. Long
/// argument lists go out in slices because `unpack` is limited by Lua's stack.
const APPLY_BATCH: &str = r"
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  local index = tonumber(ARGV[i])
  local actual = redis.call('TYPE', KEYS[index])['ok']
  if actual ~= 'none' and actual ~= ARGV[i + 1] then
    return index
  end
  i = i + 2
end
local guards = tonumber(ARGV[i])
i = i + 1
for g = 1, guards do
  local index = tonumber(ARGV[i])
  local value = redis.call('HGET', KEYS[index], ARGV[i + 1])
  local want = false
  if ARGV[i + 2] == '1' then
    want = ARGV[i + 3]
  end
  if value ~= want then
    return -g
  end
  i = i + 4
end
while i <= #ARGV do
  local command, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  if n == 0 then
    redis.call(command, key)
  end
  local first, last = i + 3, i + 2 + n
  while first <= last do
    local stop = math.min(first + 511, last)
    redis.call(command, key, unpack(ARGV, first, stop))
    first = stop + 1
  end
  i = last + 1
end
return 0
";

/// A store on a Redis server. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

/// How long subscribing may take: a connection and one round trip.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    /// The URL with its password masked, for messages.
    url: String,
    prefix: String,
    client: Client,
    manager: ConnectionManager,
    /// Dedicated connections for blocking commands, not in use right now. A std
    /// mutex: it is held only to push or pop, never across an `.await`.
    idle_blocking: Mutex<Vec<MultiplexedConnection>>,
    /// The SHA1 the server gave [`APPLY_BATCH`] at start-up, so that a batch sends
    /// 40 bytes instead of the script. A restarted or flushed server has forgotten
    /// it; `apply` then sends the script itself, which caches it again.
    apply_sha: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis server at `url` and checks it answers `PING`, within a
    /// few seconds. Every key is prefixed with `prefix` (may be empty; no braces).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        if prefix.contains(['{', '}']) {
            return Err(StoreError::Config(format!(
                "the Redis key prefix {prefix:?} contains a brace; braces are reserved for \
                 the {{ID}} hash tag of every key"
            )));
        }
        let shown = redact_url(url);
        let unreachable = |cause: String| StoreError::Unreachable {
            url: shown.clone(),
            cause,
        };
        let client = Client::open(url).map_err(|e| unreachable(format!("invalid URL: {e}")))?;

        let started = async {
            // The first dedicated connection doubles as the reachability probe.
            let mut probe = client
                .get_multiplexed_async_connection_with_config(&blocking_config())
                .await?;
            redis::cmd("PING").query_async::<String>(&mut probe).await?;
            let manager = ConnectionManager::new_with_config(
                client.clone(),
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECTION_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT)),
            )
            .await?;
            let apply_sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(APPLY_BATCH)
                .query_async(&mut probe)
                .await?;
            Ok::<_, RedisError>((probe, manager, apply_sha))
        };
        let (probe, manager, apply_sha) = match tokio::time::timeout(STARTUP_TIMEOUT, started).await
        {
            Ok(Ok(connected)) => connected,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "timed out: no answer to PING within {} s",
                    STARTUP_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url: shown,
                prefix: prefix.to_owned(),
                client,
                manager,
                idle_blocking: Mutex::new(vec![probe]),
                apply_sha,
            }),
        })
    }

    /// The key as stored in Redis.
    fn k(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn error(&self, e: RedisError, op: &str, key: &str) -> StoreError {
        if e.code() == Some("WRONGTYPE") {
            StoreError::WrongType {
                key: key.to_owned(),
            }
        } else {
            StoreError::Redis {
                context: format!("{op} {key:?} on {}", self.inner.url),
                cause: e,
            }
        }
    }

    /// Runs a non-blocking command on the shared connection.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, op: &str, key: &str) -> Result<T> {
        let mut conn = self.inner.manager.clone();
        cmd.query_async(&mut conn)
            .await
            .map_err(|e| self.error(e, op, key))
    }

    /// Runs a blocking command on a dedicated connection. A connection whose command
    /// failed, timed out or was cancelled is dropped, never reused: it may still have
    /// a blocked command pending on the server.
    async fn run_blocking<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        timeout: Duration,
        op: &str,
        key: &str,
    ) -> Result<T> {
        let idle = self.idle().pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self
                .inner
                .client
                .get_multiplexed_async_connection_with_config(&blocking_config())
                .await
                .map_err(|e| self.error(e, op, key))?,
        };
        let result = if timeout.is_zero() {
            cmd.query_async(&mut conn).await
        } else {
            tokio::time::timeout(timeout + BLOCKING_GRACE, cmd.query_async(&mut conn))
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the server did not end the blocking command in time",
                    )))
                })
        };
        match result {
            Ok(value) => {
                let mut idle = self.idle();
                if idle.len() < MAX_IDLE_BLOCKING {
                    idle.push(conn);
                }
                Ok(value)
            }
            Err(e) => Err(self.error(e, op, key)),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<MultiplexedConnection>> {
        // The vector is valid whatever a panicking holder did to it.
        self.inner
            .idle_blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn blocking_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(None)
}

/// A score as Redis parses it; Rust's `Display` is exact (shortest round-trip form).
fn score_arg(score: f64) -> Result<String> {
    if score.is_nan() {
        Err(StoreError::InvalidScore)
    } else if score == f64::INFINITY {
        Ok("+inf".to_owned())
    } else if score == f64::NEG_INFINITY {
        Ok("-inf".to_owned())
    } else {
        Ok(format!("{score}"))
    }
}

/// Seconds for a blocking command; `0` blocks forever in Redis, so a tiny non-zero
/// timeout must not round down to it.
fn block_seconds(timeout: Duration) -> String {
    if timeout.is_zero() {
        "0".to_owned()
    } else {
        format!("{:.3}", timeout.as_secs_f64().max(0.001))
    }
}

/// Escapes the glob characters of `SCAN MATCH`, so a prefix matches literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `KEYS` and `ARGV` of [`APPLY_BATCH`] for `batch`, keys prefixed.
/// `ARGV` is bytes: a [`Write::Set`] carries a value that need not be UTF-8.
fn batch_args(prefix: &str, batch: &Batch) -> Result<(Vec<String>, Vec<Vec<u8>>)> {
    let plan = batch.plan()?;
    let mut keys: Vec<String> = Vec::new();
    let mut index = |key: &str| -> String {
        let full = format!("{prefix}{key}");
        let i = match keys.iter().position(|k| *k == full) {
            Some(i) => i,
            None => {
                keys.push(full);
                keys.len() - 1
            }
        };
        // Lua indices start at 1.
        (i + 1).to_string()
    };
    let mut argv: Vec<Vec<u8>> = vec![plan.checks.len().to_string().into_bytes()];
    for (key, required) in &plan.checks {
        argv.push(index(key).into_bytes());
        argv.push(
            match required {
                Requirement::AbsentOr(kind) => kind.redis_name(),
                Requirement::Absent => "none",
            }
            .into(),
        );
    }
    argv.push(batch.guards().len().to_string().into_bytes());
    for guard in batch.guards() {
        argv.push(index(&guard.key).into_bytes());
        argv.push(guard.field.clone().into_bytes());
        match &guard.value {
            Some(value) => argv.extend([b"1".to_vec(), value.clone().into_bytes()]),
            None => argv.extend([b"0".to_vec(), Vec::new()]),
        }
    }
    for write in batch.writes() {
        let text = |items: &[String]| -> Vec<Vec<u8>> {
            items.iter().map(|i| i.clone().into_bytes()).collect()
        };
        let (command, args): (&str, Vec<Vec<u8>>) = match write {
            Write::Hset { fields, .. } => (
                "HSET",
                fields
                    .iter()
                    .flat_map(|(f, v)| [f.clone().into_bytes(), v.clone().into_bytes()])
                    .collect(),
            ),
            Write::Hdel { fields, .. } => ("HDEL", text(fields)),
            Write::Zadd { member, score, .. } => (
                "ZADD",
                vec![score_arg(*score)?.into_bytes(), member.clone().into_bytes()],
            ),
            Write::Zrem { members, .. } => ("ZREM", text(members)),
            Write::Sadd { members, .. } => ("SADD", text(members)),
            Write::Srem { members, .. } => ("SREM", text(members)),
            Write::Rpush { values, .. } => ("RPUSH", text(values)),
            Write::Lrem { count, value, .. } => (
                "LREM",
                vec![count.to_string().into_bytes(), value.clone().into_bytes()],
            ),
            Write::Set { value, .. } => ("SET", vec![value.to_vec()]),
            Write::Del { .. } => ("DEL", Vec::new()),
            Write::Publish { message, .. } => ("PUBLISH", vec![message.clone().into_bytes()]),
        };
        argv.push(command.into());
        argv.push(index(write.key()).into_bytes());
        argv.push(args.len().to_string().into_bytes());
        argv.extend(args);
    }
    Ok((keys, argv))
}

fn limit_arg(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

#[async_trait]
impl Store for RedisStore {
    async fn hset(&self, key: &str, fields: &[(&str, &str)]) -> Result<u64> {
        if fields.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.k(key));
        for (field, value) in fields {
            cmd.arg(*field).arg(*value);
        }
        self.run(&cmd, "HSET", key).await
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>> {
        let cmd = redis::cmd("HGET").arg(self.k(key)).arg(field).take();
        self.run(&cmd, "HGET", key).await
    }

    async fn hgetall(&self, key: &str) -> Result<BTreeMap<String, String>> {
        let cmd = redis::cmd("HGETALL").arg(self.k(key)).take();
        self.run(&cmd, "HGETALL", key).await
    }

    async fn hgetall_many(&self, keys: &[&str]) -> Result<Vec<BTreeMap<String, String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys {
            pipe.cmd("HGETALL").arg(self.k(key));
        }
        let mut conn = self.inner.manager.clone();
        match pipe.query_async(&mut conn).await {
            Ok(hashes) => Ok(hashes),
            Err(e) => {
                // Name the key that is not a hash, as `hgetall` would.
                let failed = e.clone().into_server_errors().and_then(|failures| {
                    let (index, error) = failures.first()?;
                    (error.code() == "WRONGTYPE").then_some(*index)
                });
                match failed.and_then(|i| keys.get(i)) {
                    Some(key) => Err(StoreError::WrongType {
                        key: (*key).to_owned(),
                    }),
                    None => Err(self.error(e, "HGETALL", &keys.join(" "))),
                }
            }
        }
    }

    async fn hdel(&self, key: &str, fields: &[&str]) -> Result<u64> {
        if fields.is_empty() {
            return Ok(0);
        }
        let cmd = redis::cmd("HDEL").arg(self.k(key)).arg(fields).take();
        self.run(&cmd, "HDEL", key).await
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<bool> {
        let cmd = redis::cmd("ZADD")
            .arg(self.k(key))
            .arg(score_arg(score)?)
            .arg(member)
            .take();
        Ok(self.run::<i64>(&cmd, "ZADD", key).await? == 1)
    }

    async fn zscore(&self, key: &str, member: &str) -> Result<Option<f64>> {
        let cmd = redis::cmd("ZSCORE").arg(self.k(key)).arg(member).take();
        self.run(&cmd, "ZSCORE", key).await
    }

    async fn zrem(&self, key: &str, members: &[&str]) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let cmd = redis::cmd("ZREM").arg(self.k(key)).arg(members).take();
        self.run(&cmd, "ZREM", key).await
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        min: f64,
        max: f64,
        order: Order,
        limit: Option<usize>,
    ) -> Result<Vec<(String, f64)>> {
        let (min, max) = (score_arg(min)?, score_arg(max)?);
        let mut cmd = match order {
            Order::Asc => redis::cmd("ZRANGEBYSCORE")
                .arg(self.k(key))
                .arg(min)
                .arg(max)
                .take(),
            Order::Desc => redis::cmd("ZREVRANGEBYSCORE")
                .arg(self.k(key))
                .arg(max)
                .arg(min)
                .take(),
        };
        let cmd = cmd
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit_arg(limit))
            .take();
        self.run(&cmd, "ZRANGEBYSCORE", key).await
    }

    async fn zpop_by_score(
        &self,
        key: &str,
        max: f64,
        limit: Option<usize>,
    ) -> Result<Vec<(String, f64)>> {
        if limit == Some(0) {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("EVAL")
            .arg(ZPOP_BY_SCORE)
            .arg(1)
            .arg(self.k(key))
            .arg(score_arg(max)?)
            .arg(limit_arg(limit))
            .take();
        self.run(&cmd, "ZPOPBYSCORE", key).await
    }

    async fn zrem_range_by_score(&self, key: &str, min: f64, max: f64) -> Result<u64> {
        let cmd = redis::cmd("ZREMRANGEBYSCORE")
            .arg(self.k(key))
            .arg(score_arg(min)?)
            .arg(score_arg(max)?)
            .take();
        self.run(&cmd, "ZREMRANGEBYSCORE", key).await
    }

    async fn zcard(&self, key: &str) -> Result<u64> {
        let cmd = redis::cmd("ZCARD").arg(self.k(key)).take();
        self.run(&cmd, "ZCARD", key).await
    }

    async fn rpush(&self, key: &str, values: &[&str]) -> Result<u64> {
        if values.is_empty() {
            return self.llen(key).await;
        }
        let cmd = redis::cmd("RPUSH").arg(self.k(key)).arg(values).take();
        self.run(&cmd, "RPUSH", key).await
    }

    async fn lpush(&self, key: &str, values: &[&str]) -> Result<u64> {
        if values.is_empty() {
            return self.llen(key).await;
        }
        let cmd = redis::cmd("LPUSH").arg(self.k(key)).arg(values).take();
        self.run(&cmd, "LPUSH", key).await
    }

    async fn lpop(&self, key: &str) -> Result<Option<String>> {
        let cmd = redis::cmd("LPOP").arg(self.k(key)).take();
        self.run(&cmd, "LPOP", key).await
    }

    async fn rpop(&self, key: &str) -> Result<Option<String>> {
        let cmd = redis::cmd("RPOP").arg(self.k(key)).take();
        self.run(&cmd, "RPOP", key).await
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<String>> {
        let cmd = redis::cmd("LRANGE")
            .arg(self.k(key))
            .arg(start)
            .arg(stop)
            .take();
        self.run(&cmd, "LRANGE", key).await
    }

    async fn llen(&self, key: &str) -> Result<u64> {
        let cmd = redis::cmd("LLEN").arg(self.k(key)).take();
        self.run(&cmd, "LLEN", key).await
    }

    async fn lrem(&self, key: &str, count: i64, value: &str) -> Result<u64> {
        let cmd = redis::cmd("LREM")
            .arg(self.k(key))
            .arg(count)
            .arg(value)
            .take();
        self.run(&cmd, "LREM", key).await
    }

    async fn lmove(&self, src: &str, dst: &str) -> Result<Option<String>> {
        let cmd = redis::cmd("LMOVE")
            .arg(self.k(src))
            .arg(self.k(dst))
            .arg("LEFT")
            .arg("RIGHT")
            .take();
        self.run(&cmd, "LMOVE", src).await
    }

    async fn blmove(&self, src: &str, dst: &str, timeout: Duration) -> Result<Option<String>> {
        let cmd = redis::cmd("BLMOVE")
            .arg(self.k(src))
            .arg(self.k(dst))
            .arg("LEFT")
            .arg("RIGHT")
            .arg(block_seconds(timeout))
            .take();
        self.run_blocking(&cmd, timeout, "BLMOVE", src).await
    }

    async fn blpop(&self, key: &str, timeout: Duration) -> Result<Option<String>> {
        let cmd = redis::cmd("BLPOP")
            .arg(self.k(key))
            .arg(block_seconds(timeout))
            .take();
        let popped: Option<(String, String)> =
            self.run_blocking(&cmd, timeout, "BLPOP", key).await?;
        Ok(popped.map(|(_, value)| value))
    }

    async fn sadd(&self, key: &str, members: &[&str]) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let cmd = redis::cmd("SADD").arg(self.k(key)).arg(members).take();
        self.run(&cmd, "SADD", key).await
    }

    async fn srem(&self, key: &str, members: &[&str]) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let cmd = redis::cmd("SREM").arg(self.k(key)).arg(members).take();
        self.run(&cmd, "SREM", key).await
    }

    async fn smembers(&self, key: &str) -> Result<BTreeSet<String>> {
        let cmd = redis::cmd("SMEMBERS").arg(self.k(key)).take();
        self.run(&cmd, "SMEMBERS", key).await
    }

    async fn sismember(&self, key: &str, member: &str) -> Result<bool> {
        let cmd = redis::cmd("SISMEMBER").arg(self.k(key)).arg(member).take();
        self.run(&cmd, "SISMEMBER", key).await
    }

    async fn scard(&self, key: &str) -> Result<u64> {
        let cmd = redis::cmd("SCARD").arg(self.k(key)).take();
        self.run(&cmd, "SCARD", key).await
    }

    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        let cmd = redis::cmd("GET").arg(self.k(key)).take();
        let value: Option<Vec<u8>> = self.run(&cmd, "GET", key).await?;
        Ok(value.map(bytes::Bytes::from))
    }

    async fn del(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("DEL");
        for key in keys {
            cmd.arg(self.k(key));
        }
        self.run(&cmd, "DEL", &keys.join(" ")).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let cmd = redis::cmd("EXISTS").arg(self.k(key)).take();
        Ok(self.run::<u64>(&cmd, "EXISTS", key).await? > 0)
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let pattern = format!("{}*", glob_escape(&self.k(prefix)));
        // SCAN may return a key more than once: collect into a set.
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let cmd = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .take();
            let (next, batch): (u64, Vec<String>) = self.run(&cmd, "SCAN", prefix).await?;
            keys.extend(
                batch
                    .iter()
                    .filter_map(|k| k.strip_prefix(self.inner.prefix.as_str()))
                    .map(str::to_owned),
            );
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<()> {
        self.run::<String>(&redis::cmd("PING"), "PING", "")
            .await
            .map(drop)
    }

    async fn subscribe(&self, channel: &str) -> Result<Messages> {
        let timed_out = || {
            RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the server did not answer the subscription in time",
            ))
        };
        let subscribed = async {
            let mut pubsub = self.inner.client.get_async_pubsub().await?;
            pubsub.subscribe(self.k(channel)).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribed)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .map_err(|e| self.error(e, "SUBSCRIBE", channel))?;
        Ok(Box::pin(pubsub.into_on_message().map(|m| {
            // A payload that is not text is no message this code sent.
            m.get_payload::<String>().unwrap_or_default()
        })))
    }

    async fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let (keys, argv) = batch_args(&self.inner.prefix, batch)?;
        let label = keys
            .iter()
            .map(|k| k.strip_prefix(self.inner.prefix.as_str()).unwrap_or(k))
            .collect::<Vec<_>>()
            .join(" ");
        let call = |command: &str, script: &str| {
            redis::cmd(command)
                .arg(script)
                .arg(keys.len())
                .arg(&keys)
                .arg(&argv)
                .take()
        };
        let mut conn = self.inner.manager.clone();
        let answer: std::result::Result<i64, RedisError> =
            match call("EVALSHA", &self.inner.apply_sha)
                .query_async(&mut conn)
                .await
            {
                Err(e) if e.code() == Some("NOSCRIPT") => {
                    call("EVAL", APPLY_BATCH).query_async(&mut conn).await
                }
                other => other,
            };
        let answer = answer.map_err(|e| self.error(e, "BATCH", &label))?;
        let unprefixed = |key: &String| {
            key.strip_prefix(self.inner.prefix.as_str())
                .unwrap_or(key)
                .to_owned()
        };
        let nth = |n: i64| usize::try_from(n).ok()?.checked_sub(1);
        if answer > 0 {
            if let Some(key) = nth(answer).and_then(|i| keys.get(i)) {
                return Err(StoreError::WrongType {
                    key: unprefixed(key),
                });
            }
        } else if answer < 0 {
            if let Some(guard) = nth(-answer).and_then(|i| batch.guards().get(i)) {
                return Err(StoreError::Conflict {
                    key: guard.key.clone(),
                    field: guard.field.clone(),
                });
            }
        } else {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            key: label,
            detail: format!("the batch script answered {answer}, which names nothing"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{block_seconds, glob_escape, score_arg};
    use crate::store::redact_url;
    use std::time::Duration;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact_url("redis://user:hunter2@h:6379/0"),
            "redis://user:***@h:6379/0"
        );
        assert_eq!(redact_url("rediss://:pw@h/"), "rediss://:***@h/");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(redact_url("redis://u@h"), "redis://u@h");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape(r"a*b?[c]\d"), r"a\*b\?\[c\]\\d");
    }

    #[test]
    fn scores_and_timeouts_are_formatted_for_redis() {
        assert_eq!(score_arg(f64::INFINITY).ok().as_deref(), Some("+inf"));
        assert_eq!(score_arg(f64::NEG_INFINITY).ok().as_deref(), Some("-inf"));
        assert_eq!(score_arg(1.5).ok().as_deref(), Some("1.5"));
        assert!(score_arg(f64::NAN).is_err());
        assert_eq!(block_seconds(Duration::ZERO), "0");
        assert_eq!(block_seconds(Duration::from_micros(1)), "0.001");
        assert_eq!(block_seconds(Duration::from_millis(1500)), "1.500");
    }
}
