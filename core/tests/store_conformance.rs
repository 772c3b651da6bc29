//! One behaviour, two backends: every test here runs against the embedded store (in a
//! temporary directory) and against a real `redis-server` started for the test, with a
//! per-test key prefix. Domain code tested on one backend can then trust the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dandelion_core::store::{Batch, EmbeddedStore, Order, RedisStore, Store, StoreError};
use dandelion_testkit::redis::RedisServer;

/// Whatever must live as long as the store: its directory, or its server.
type Keep = Box<dyn std::any::Any + Send>;

async fn embedded() -> (Arc<dyn Store>, Keep) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    (Arc::new(store), Box::new(dir))
}

async fn redis(prefix: &str) -> (Arc<dyn Store>, Keep) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), prefix).await.unwrap();
    (Arc::new(store), Box::new(server))
}

/// Generates `embedded::<test>` and `redis::<test>` for each test function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _keep) = super::embedded().await;
                    super::$name(store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let prefix = concat!("test-", stringify!($name), ":");
                    let (store, _keep) = super::redis(prefix).await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    hashes,
    sorted_sets,
    sorted_set_ties_limits_and_infinities,
    zpop_by_score_pops_lowest_first,
    nan_scores_are_refused,
    lists,
    lrange_indices,
    lrem_count_sign,
    lmove_moves_left_to_right,
    sets,
    keys_del_exists_scan,
    wrong_type_changes_nothing,
    blpop_wakes_when_another_task_pushes,
    blmove_wakes_when_another_task_pushes,
    blocking_pops_time_out_with_none,
    lmove_delivers_each_item_once_to_concurrent_consumers,
    zpop_by_score_pops_each_member_once_under_concurrent_sweepers,
    batch_applies_its_writes_in_order,
    batch_is_seen_all_at_once_by_a_concurrent_reader,
    batch_with_a_wrong_type_anywhere_changes_nothing,
    empty_batch_is_a_no_op,
    batch_push_wakes_a_blocked_pop,
    batch_guard_applies_only_while_its_field_holds,
    racing_guarded_updates_lose_none,
    hgetall_many_reads_keys_in_order,
    values_of_bytes,
    a_batch_publishes_after_its_writes_or_nowhere,
);

/// A subscriber that receives a batch's message finds the batch's writes;
/// messages come in order, and a channel is not a key. The embedded store
/// applies the batch and publishes nowhere.
async fn a_batch_publishes_after_its_writes_or_nowhere(s: Arc<dyn Store>) {
    use futures_util::StreamExt;
    let mut messages = s.subscribe("{p}:CHANGES").await.unwrap();
    for n in 0..3 {
        let mut batch = Batch::new();
        batch
            .hset("{p}:H", &[(&format!("f{n}"), "v")])
            .publish("{p}:CHANGES", &format!("m{n}"));
        s.apply(&batch).await.unwrap();
    }
    assert!(!s.exists("{p}:CHANGES").await.unwrap());
    if !s.shared() {
        let nothing = tokio::time::timeout(Duration::from_millis(100), messages.next()).await;
        assert!(nothing.is_err(), "the embedded store published {nothing:?}");
        return;
    }
    for n in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, format!("m{n}"));
        assert_eq!(
            s.hget("{p}:H", &format!("f{n}")).await.unwrap().as_deref(),
            Some("v")
        );
    }
}

fn assert_wrong_type<T: std::fmt::Debug>(result: Result<T, StoreError>, key: &str) {
    match result {
        Err(StoreError::WrongType { key: k }) => assert_eq!(k, key),
        other => panic!("expected WRONGTYPE on {key}, got {other:?}"),
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn scored(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(m, s)| ((*m).to_owned(), *s)).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn hashes(s: Arc<dyn Store>) {
    let k = "{d}:EXCHANGE:box-1";
    assert_eq!(s.hset(k, &[("a", "1"), ("b", "2")]).await.unwrap(), 2);
    assert_eq!(s.hset(k, &[("b", "3"), ("c", "4")]).await.unwrap(), 1);
    assert_eq!(s.hget(k, "b").await.unwrap().as_deref(), Some("3"));
    assert_eq!(s.hget(k, "zz").await.unwrap(), None);
    assert_eq!(s.hget("{d}:nope", "a").await.unwrap(), None);
    assert_eq!(
        s.hgetall(k).await.unwrap(),
        map(&[("a", "1"), ("b", "3"), ("c", "4")])
    );
    assert_eq!(s.hgetall("{d}:nope").await.unwrap(), BTreeMap::new());
    assert_eq!(s.hset(k, &[]).await.unwrap(), 0);
    assert_eq!(s.hdel(k, &["a", "zz"]).await.unwrap(), 1);
    assert_eq!(s.hdel("{d}:nope", &["a"]).await.unwrap(), 0);
    // UTF-8 and separators in fields and values are data, not syntax.
    assert_eq!(s.hset(k, &[("é:{x}", "ü ✓")]).await.unwrap(), 1);
    assert_eq!(s.hget(k, "é:{x}").await.unwrap().as_deref(), Some("ü ✓"));
    assert_eq!(s.hdel(k, &["b", "c", "é:{x}"]).await.unwrap(), 3);
    assert!(!s.exists(k).await.unwrap(), "an emptied hash must vanish");
    assert_eq!(s.scan_prefix("{d}:").await.unwrap(), Vec::<String>::new());
}

async fn sorted_sets(s: Arc<dyn Store>) {
    let k = "{p}:BOX_RANKING";
    assert!(s.zadd(k, "b", 2.0).await.unwrap());
    assert!(s.zadd(k, "a", 1.0).await.unwrap());
    assert!(s.zadd(k, "c", 3.5).await.unwrap());
    assert!(!s.zadd(k, "a", 4.0).await.unwrap(), "an update is not new");
    assert_eq!(s.zscore(k, "a").await.unwrap(), Some(4.0));
    assert_eq!(s.zscore(k, "zz").await.unwrap(), None);
    assert_eq!(s.zscore("{p}:nope", "a").await.unwrap(), None);
    assert_eq!(s.zcard(k).await.unwrap(), 3);
    assert_eq!(s.zcard("{p}:nope").await.unwrap(), 0);
    let all = s
        .zrange_by_score(k, f64::NEG_INFINITY, f64::INFINITY, Order::Asc, None)
        .await
        .unwrap();
    assert_eq!(all, scored(&[("b", 2.0), ("c", 3.5), ("a", 4.0)]));
    // Bounds are inclusive.
    let mid = s
        .zrange_by_score(k, 2.0, 3.5, Order::Desc, None)
        .await
        .unwrap();
    assert_eq!(mid, scored(&[("c", 3.5), ("b", 2.0)]));
    assert_eq!(
        s.zrange_by_score(k, 5.0, 1.0, Order::Asc, None)
            .await
            .unwrap(),
        vec![],
        "min > max is an empty range"
    );
    assert_eq!(s.zrem(k, &["b", "zz"]).await.unwrap(), 1);
    assert_eq!(s.zrem_range_by_score(k, 3.0, 3.9).await.unwrap(), 1);
    assert_eq!(s.zscore(k, "a").await.unwrap(), Some(4.0));
    assert_eq!(s.zrem_range_by_score(k, 0.0, 1.0).await.unwrap(), 0);
    assert_eq!(s.zrem(k, &["a"]).await.unwrap(), 1);
    assert!(
        !s.exists(k).await.unwrap(),
        "an emptied sorted set must vanish"
    );
    assert_eq!(
        s.zrem_range_by_score("{p}:nope", 0.0, 1.0).await.unwrap(),
        0
    );
}

async fn sorted_set_ties_limits_and_infinities(s: Arc<dyn Store>) {
    let k = "{b}:EXPIRE_FILES";
    for (m, score) in [
        ("m2", 1.0),
        ("m1", 1.0),
        ("m3", 1.0),
        ("neg", -7.25),
        ("big", 1e300),
        ("ninf", f64::NEG_INFINITY),
        ("inf", f64::INFINITY),
        ("tiny", 5e-324),
    ] {
        s.zadd(k, m, score).await.unwrap();
    }
    let asc = s
        .zrange_by_score(k, f64::NEG_INFINITY, f64::INFINITY, Order::Asc, None)
        .await
        .unwrap();
    assert_eq!(
        asc,
        scored(&[
            ("ninf", f64::NEG_INFINITY),
            ("neg", -7.25),
            ("tiny", 5e-324),
            ("m1", 1.0),
            ("m2", 1.0),
            ("m3", 1.0),
            ("big", 1e300),
            ("inf", f64::INFINITY),
        ])
    );
    let desc = s
        .zrange_by_score(k, 1.0, 1.0, Order::Desc, None)
        .await
        .unwrap();
    assert_eq!(desc, scored(&[("m3", 1.0), ("m2", 1.0), ("m1", 1.0)]));
    let limited = s
        .zrange_by_score(k, 0.0, f64::INFINITY, Order::Asc, Some(2))
        .await
        .unwrap();
    assert_eq!(limited, scored(&[("tiny", 5e-324), ("m1", 1.0)]));
    let limited = s
        .zrange_by_score(k, f64::NEG_INFINITY, 1.0, Order::Desc, Some(2))
        .await
        .unwrap();
    assert_eq!(limited, scored(&[("m3", 1.0), ("m2", 1.0)]));
    assert_eq!(
        s.zrange_by_score(k, 0.0, 1.0, Order::Asc, Some(0))
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(s.zscore(k, "big").await.unwrap(), Some(1e300));
    assert_eq!(s.zscore(k, "tiny").await.unwrap(), Some(5e-324));
}

async fn zpop_by_score_pops_lowest_first(s: Arc<dyn Store>) {
    let k = "{b}:EXPIRE_FILES";
    for (m, score) in [("c", 30.0), ("a", 10.0), ("b", 10.0), ("d", 40.0)] {
        s.zadd(k, m, score).await.unwrap();
    }
    assert_eq!(
        s.zpop_by_score(k, 30.0, Some(2)).await.unwrap(),
        scored(&[("a", 10.0), ("b", 10.0)])
    );
    assert_eq!(
        s.zpop_by_score(k, 30.0, None).await.unwrap(),
        scored(&[("c", 30.0)])
    );
    assert_eq!(s.zpop_by_score(k, 30.0, None).await.unwrap(), vec![]);
    assert_eq!(s.zpop_by_score(k, 100.0, Some(0)).await.unwrap(), vec![]);
    assert_eq!(s.zcard(k).await.unwrap(), 1);
    assert_eq!(
        s.zpop_by_score(k, f64::INFINITY, None).await.unwrap(),
        scored(&[("d", 40.0)])
    );
    assert!(
        !s.exists(k).await.unwrap(),
        "an emptied sorted set must vanish"
    );
    assert_eq!(
        s.zpop_by_score("{b}:nope", 1.0, None).await.unwrap(),
        vec![]
    );
}

async fn nan_scores_are_refused(s: Arc<dyn Store>) {
    let k = "{p}:BOX_RANKING";
    s.zadd(k, "a", 1.0).await.unwrap();
    let nan = f64::NAN;
    assert!(matches!(
        s.zadd(k, "a", nan).await,
        Err(StoreError::InvalidScore)
    ));
    assert!(matches!(
        s.zadd(k, "new", nan).await,
        Err(StoreError::InvalidScore)
    ));
    assert!(matches!(
        s.zrange_by_score(k, nan, 1.0, Order::Asc, None).await,
        Err(StoreError::InvalidScore)
    ));
    assert!(matches!(
        s.zpop_by_score(k, nan, None).await,
        Err(StoreError::InvalidScore)
    ));
    assert!(matches!(
        s.zrem_range_by_score(k, 0.0, nan).await,
        Err(StoreError::InvalidScore)
    ));
    assert_eq!(s.zscore(k, "a").await.unwrap(), Some(1.0));
    assert_eq!(s.zcard(k).await.unwrap(), 1);
}

async fn lists(s: Arc<dyn Store>) {
    let k = "{p}:FILE:FILES_SENDING_QUEUE";
    assert_eq!(s.rpush(k, &["b", "c"]).await.unwrap(), 2);
    assert_eq!(s.lpush(k, &["a", "z"]).await.unwrap(), 4);
    // LPUSH pushes one by one: the last argument ends up first.
    assert_eq!(
        s.lrange(k, 0, -1).await.unwrap(),
        strings(&["z", "a", "b", "c"])
    );
    assert_eq!(s.llen(k).await.unwrap(), 4);
    assert_eq!(s.rpush(k, &[]).await.unwrap(), 4);
    assert_eq!(s.lpop(k).await.unwrap().as_deref(), Some("z"));
    assert_eq!(s.rpop(k).await.unwrap().as_deref(), Some("c"));
    assert_eq!(s.lrange(k, 0, -1).await.unwrap(), strings(&["a", "b"]));
    assert_eq!(s.lpop(k).await.unwrap().as_deref(), Some("a"));
    assert_eq!(s.lpop(k).await.unwrap().as_deref(), Some("b"));
    assert_eq!(s.lpop(k).await.unwrap(), None);
    assert_eq!(s.rpop(k).await.unwrap(), None);
    assert!(!s.exists(k).await.unwrap(), "an emptied list must vanish");
    assert_eq!(s.llen(k).await.unwrap(), 0);
    // A list emptied and refilled starts afresh.
    assert_eq!(s.lpush(k, &["x"]).await.unwrap(), 1);
    assert_eq!(s.rpush(k, &["y"]).await.unwrap(), 2);
    assert_eq!(s.lrange(k, 0, -1).await.unwrap(), strings(&["x", "y"]));
}

async fn lrange_indices(s: Arc<dyn Store>) {
    let k = "{p}:list";
    s.rpush(k, &["0", "1", "2", "3", "4"]).await.unwrap();
    assert_eq!(s.lrange(k, 1, 3).await.unwrap(), strings(&["1", "2", "3"]));
    assert_eq!(s.lrange(k, -2, -1).await.unwrap(), strings(&["3", "4"]));
    assert_eq!(s.lrange(k, -100, 1).await.unwrap(), strings(&["0", "1"]));
    assert_eq!(s.lrange(k, 3, 100).await.unwrap(), strings(&["3", "4"]));
    assert_eq!(s.lrange(k, 4, 2).await.unwrap(), strings(&[]));
    assert_eq!(s.lrange(k, 5, 10).await.unwrap(), strings(&[]));
    assert_eq!(s.lrange(k, -1, -2).await.unwrap(), strings(&[]));
    assert_eq!(s.lrange(k, 0, 0).await.unwrap(), strings(&["0"]));
    assert_eq!(s.lrange("{p}:nope", 0, -1).await.unwrap(), strings(&[]));
}

async fn lrem_count_sign(s: Arc<dyn Store>) {
    let k = "{p}:FILE:FILES_IN_FLIGHT";
    s.rpush(k, &["x", "a", "x", "b", "x", "c", "x"])
        .await
        .unwrap();
    assert_eq!(s.lrem(k, 2, "x").await.unwrap(), 2);
    assert_eq!(
        s.lrange(k, 0, -1).await.unwrap(),
        strings(&["a", "b", "x", "c", "x"])
    );
    assert_eq!(s.lrem(k, -1, "x").await.unwrap(), 1);
    assert_eq!(
        s.lrange(k, 0, -1).await.unwrap(),
        strings(&["a", "b", "x", "c"])
    );
    assert_eq!(s.lrem(k, 0, "zz").await.unwrap(), 0);
    s.rpush(k, &["x"]).await.unwrap();
    assert_eq!(s.lrem(k, 0, "x").await.unwrap(), 2);
    assert_eq!(s.lrange(k, 0, -1).await.unwrap(), strings(&["a", "b", "c"]));
    assert_eq!(s.llen(k).await.unwrap(), 3);
    // Index access still works across the holes LREM leaves.
    assert_eq!(s.lrange(k, 1, 1).await.unwrap(), strings(&["b"]));
    assert_eq!(s.lrem(k, -5, "b").await.unwrap(), 1);
    assert_eq!(s.lrem(k, 1, "a").await.unwrap(), 1);
    assert_eq!(s.lrem(k, 1, "c").await.unwrap(), 1);
    assert!(!s.exists(k).await.unwrap(), "an emptied list must vanish");
    assert_eq!(s.lrem("{p}:nope", 0, "a").await.unwrap(), 0);
}

async fn lmove_moves_left_to_right(s: Arc<dyn Store>) {
    let (q, f) = ("{p}:FILE:FILES_SENDING_QUEUE", "{p}:FILE:FILES_IN_FLIGHT");
    s.rpush(q, &["1", "2"]).await.unwrap();
    s.rpush(f, &["0"]).await.unwrap();
    assert_eq!(s.lmove(q, f).await.unwrap().as_deref(), Some("1"));
    assert_eq!(s.lrange(q, 0, -1).await.unwrap(), strings(&["2"]));
    assert_eq!(s.lrange(f, 0, -1).await.unwrap(), strings(&["0", "1"]));
    assert_eq!(s.lmove(q, f).await.unwrap().as_deref(), Some("2"));
    assert!(!s.exists(q).await.unwrap(), "an emptied list must vanish");
    assert_eq!(s.lmove(q, f).await.unwrap(), None);
    // Same list: a rotation.
    assert_eq!(s.lmove(f, f).await.unwrap().as_deref(), Some("0"));
    assert_eq!(s.lrange(f, 0, -1).await.unwrap(), strings(&["1", "2", "0"]));
    // An empty source answers nil whatever the destination holds.
    s.sadd("{p}:set", &["m"]).await.unwrap();
    assert_eq!(s.lmove(q, "{p}:set").await.unwrap(), None);
}

async fn sets(s: Arc<dyn Store>) {
    let k = "{e}:BOX_SET";
    assert_eq!(s.sadd(k, &["b", "a", "b"]).await.unwrap(), 2);
    assert_eq!(s.sadd(k, &["a", "c"]).await.unwrap(), 1);
    assert_eq!(s.scard(k).await.unwrap(), 3);
    assert!(s.sismember(k, "c").await.unwrap());
    assert!(!s.sismember(k, "zz").await.unwrap());
    assert!(!s.sismember("{e}:nope", "a").await.unwrap());
    assert_eq!(
        s.smembers(k).await.unwrap(),
        ["a", "b", "c"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(s.srem(k, &["a", "zz"]).await.unwrap(), 1);
    assert_eq!(s.srem(k, &["b", "c"]).await.unwrap(), 2);
    assert!(!s.exists(k).await.unwrap(), "an emptied set must vanish");
    assert_eq!(s.smembers(k).await.unwrap(), BTreeSet::new());
    assert_eq!(s.scard(k).await.unwrap(), 0);
}

async fn keys_del_exists_scan(s: Arc<dyn Store>) {
    s.hset("{a}:h", &[("f", "v")]).await.unwrap();
    s.sadd("{a}:s", &["m"]).await.unwrap();
    s.zadd("{a}:z", "m", 1.0).await.unwrap();
    s.rpush("{a}:l", &["v"]).await.unwrap();
    s.rpush("{b}:l", &["v"]).await.unwrap();
    // Glob characters in a prefix are literal.
    s.sadd("{a*}:x", &["m"]).await.unwrap();
    s.sadd("{a?}:x", &["m"]).await.unwrap();
    s.sadd("{a[b]}:x", &["m"]).await.unwrap();
    assert_eq!(
        s.scan_prefix("{a}:").await.unwrap(),
        strings(&["{a}:h", "{a}:l", "{a}:s", "{a}:z"])
    );
    assert_eq!(s.scan_prefix("{a*}").await.unwrap(), strings(&["{a*}:x"]));
    assert_eq!(s.scan_prefix("{a[").await.unwrap(), strings(&["{a[b]}:x"]));
    assert_eq!(s.scan_prefix("{zz").await.unwrap(), strings(&[]));
    assert_eq!(s.scan_prefix("").await.unwrap().len(), 8);
    for k in ["{a}:h", "{a}:s", "{a}:z", "{a}:l"] {
        assert!(s.exists(k).await.unwrap(), "{k}");
    }
    assert!(!s.exists("{a}:nope").await.unwrap());
    assert_eq!(
        s.del(&["{a}:h", "{a}:s", "{a}:z", "{a}:l", "{a}:nope", "{a}:h"])
            .await
            .unwrap(),
        4
    );
    assert_eq!(s.del(&[]).await.unwrap(), 0);
    for k in ["{a}:h", "{a}:s", "{a}:z", "{a}:l"] {
        assert!(!s.exists(k).await.unwrap(), "{k}");
    }
    assert_eq!(s.scan_prefix("{a}:").await.unwrap(), strings(&[]));
    // A deleted key can be reused as another type.
    s.zadd("{a}:h", "m", 1.0).await.unwrap();
    assert_eq!(s.zcard("{a}:h").await.unwrap(), 1);
    assert_eq!(s.lrange("{b}:l", 0, -1).await.unwrap(), strings(&["v"]));
}

async fn wrong_type_changes_nothing(s: Arc<dyn Store>) {
    let (h, st, z, l) = ("{w}:h", "{w}:s", "{w}:z", "{w}:l");
    s.hset(h, &[("f", "v")]).await.unwrap();
    s.sadd(st, &["m"]).await.unwrap();
    s.zadd(z, "m", 1.0).await.unwrap();
    s.rpush(l, &["v"]).await.unwrap();
    let short = Duration::from_millis(50);

    // Every kind of write and read against every other type.
    for key in [st, z, l] {
        assert_wrong_type(s.hset(key, &[("f", "x")]).await, key);
        assert_wrong_type(s.hget(key, "f").await, key);
        assert_wrong_type(s.hgetall(key).await, key);
        assert_wrong_type(s.hdel(key, &["m"]).await, key);
    }
    for key in [h, st, l] {
        assert_wrong_type(s.zadd(key, "m", 2.0).await, key);
        assert_wrong_type(s.zscore(key, "m").await, key);
        assert_wrong_type(s.zrem(key, &["m"]).await, key);
        assert_wrong_type(s.zcard(key).await, key);
        assert_wrong_type(
            s.zrange_by_score(key, 0.0, 9.0, Order::Asc, None).await,
            key,
        );
        assert_wrong_type(s.zpop_by_score(key, 9.0, None).await, key);
        assert_wrong_type(s.zrem_range_by_score(key, 0.0, 9.0).await, key);
    }
    for key in [h, st, z] {
        assert_wrong_type(s.rpush(key, &["x"]).await, key);
        assert_wrong_type(s.lpush(key, &["x"]).await, key);
        assert_wrong_type(s.lpop(key).await, key);
        assert_wrong_type(s.rpop(key).await, key);
        assert_wrong_type(s.lrange(key, 0, -1).await, key);
        assert_wrong_type(s.llen(key).await, key);
        assert_wrong_type(s.lrem(key, 0, "v").await, key);
        assert_wrong_type(s.lmove(key, l).await, key);
        assert_wrong_type(s.blpop(key, short).await, key);
        assert_wrong_type(s.blmove(key, l, short).await, key);
    }
    for key in [h, z, l] {
        assert_wrong_type(s.sadd(key, &["x"]).await, key);
        assert_wrong_type(s.srem(key, &["m"]).await, key);
        assert_wrong_type(s.smembers(key).await, key);
        assert_wrong_type(s.sismember(key, "m").await, key);
        assert_wrong_type(s.scard(key).await, key);
    }
    // A destination of the wrong type: the source keeps its value.
    assert!(matches!(
        s.lmove(l, h).await,
        Err(StoreError::WrongType { .. })
    ));

    assert_eq!(s.hgetall(h).await.unwrap(), map(&[("f", "v")]));
    assert_eq!(s.smembers(st).await.unwrap().len(), 1);
    assert_eq!(
        s.zrange_by_score(z, 0.0, 9.0, Order::Asc, None)
            .await
            .unwrap(),
        scored(&[("m", 1.0)])
    );
    assert_eq!(s.lrange(l, 0, -1).await.unwrap(), strings(&["v"]));
}

/// A value of bytes (a publisher's copy of a small file) goes in with a batch,
/// with the other writes of its commit, and comes back byte for byte — any
/// bytes, not only UTF-8 — until replaced or deleted. It is a type like the
/// others: a batch cannot make a hash of it, nor it of a hash.
async fn values_of_bytes(s: Arc<dyn Store>) {
    let (v, h) = ("{v}:blob", "{v}:h");
    assert_eq!(s.get(v).await.unwrap(), None);
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut batch = Batch::new();
    batch
        .set(v, Bytes::from(big.clone()))
        .hset(h, &[("f", "1")]);
    s.apply(&batch).await.unwrap();
    assert_eq!(s.get(v).await.unwrap().as_deref(), Some(big.as_slice()));
    assert!(s.exists(v).await.unwrap());
    assert!(s.scan_prefix("{v}:").await.unwrap().contains(&v.to_owned()));

    // Replaced whole, by a shorter value that is not UTF-8.
    let odd = Bytes::from_static(&[0xff, 0x00, 0xfe, b'\n', 0x80]);
    s.apply(Batch::new().set(v, odd.clone())).await.unwrap();
    assert_eq!(s.get(v).await.unwrap(), Some(odd.clone()));
    let empty = Bytes::new();
    s.apply(Batch::new().set("{v}:empty", empty.clone()))
        .await
        .unwrap();
    assert_eq!(s.get("{v}:empty").await.unwrap(), Some(empty));

    // Types: each fails the whole batch and changes nothing.
    let failed = s
        .apply(
            Batch::new()
                .hset("{v}:other", &[("f", "x")])
                .set(h, odd.clone()),
        )
        .await;
    assert_wrong_type(failed, h);
    assert!(!s.exists("{v}:other").await.unwrap());
    assert_wrong_type(s.apply(Batch::new().hset(v, &[("f", "x")])).await, v);
    assert_wrong_type(s.hget(v, "f").await, v);
    assert_wrong_type(s.get(h).await, h);
    assert_eq!(s.get(v).await.unwrap(), Some(odd.clone()));
    // `del` first lets a batch change a key's type.
    s.apply(Batch::new().del(h).set(h, odd.clone()))
        .await
        .unwrap();
    assert_eq!(s.get(h).await.unwrap(), Some(odd));

    assert_eq!(s.del(&[v, h]).await.unwrap(), 2);
    assert_eq!(s.get(v).await.unwrap(), None);
    // A deleted value's key can hold another type.
    s.sadd(v, &["m"]).await.unwrap();
    assert_eq!(s.scard(v).await.unwrap(), 1);
}

/// Runs `pop` in a task, pushes from here, and expects the task to get the value
/// long before its own timeout. The push must be delivered whether or not the task
/// is already blocked when it happens; the pause only makes "already blocked", the
/// interesting case, the likely one.
async fn check_wakes<F, Fut>(s: Arc<dyn Store>, key: &str, pop: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = Result<Option<String>, StoreError>> + Send + 'static,
{
    check_wakes_by(s, key, pop, false).await;
}

/// [`check_wakes`], pushing with a one-write [`Batch`] if `by_batch`.
async fn check_wakes_by<F, Fut>(s: Arc<dyn Store>, key: &str, pop: F, by_batch: bool)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = Result<Option<String>, StoreError>> + Send + 'static,
{
    let started = Instant::now();
    let waiter = tokio::spawn(pop(Arc::clone(&s)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "the pop returned before anything was pushed"
    );
    if by_batch {
        s.apply(Batch::new().rpush(key, &["hello"])).await.unwrap();
    } else {
        s.rpush(key, &["hello"]).await.unwrap();
    }
    let popped = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the blocked pop was not woken by the push")
        .unwrap()
        .unwrap();
    assert_eq!(popped.as_deref(), Some("hello"));
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn blpop_wakes_when_another_task_pushes(s: Arc<dyn Store>) {
    let key = "{b}:queue";
    check_wakes(Arc::clone(&s), key, |s| async move {
        s.blpop("{b}:queue", Duration::from_secs(30)).await
    })
    .await;
    assert!(!s.exists(key).await.unwrap());
    // Duration::ZERO waits for ever, as in Redis.
    check_wakes(Arc::clone(&s), key, |s| async move {
        s.blpop("{b}:queue", Duration::ZERO).await
    })
    .await;
}

async fn blmove_wakes_when_another_task_pushes(s: Arc<dyn Store>) {
    let (q, f) = ("{p}:FILE:FILES_SENDING_QUEUE", "{p}:FILE:FILES_IN_FLIGHT");
    check_wakes(Arc::clone(&s), q, |s| async move {
        s.blmove(
            "{p}:FILE:FILES_SENDING_QUEUE",
            "{p}:FILE:FILES_IN_FLIGHT",
            Duration::from_secs(30),
        )
        .await
    })
    .await;
    assert_eq!(s.lrange(f, 0, -1).await.unwrap(), strings(&["hello"]));
    assert!(!s.exists(q).await.unwrap());
}

async fn blocking_pops_time_out_with_none(s: Arc<dyn Store>) {
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    assert_eq!(s.blpop("{b}:empty", timeout).await.unwrap(), None);
    assert_eq!(
        s.blmove("{b}:empty", "{b}:dst", timeout).await.unwrap(),
        None
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= 2 * timeout - Duration::from_millis(20),
        "{elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(!s.exists("{b}:dst").await.unwrap());
    // The store still works for ordinary commands after blocking ones.
    s.rpush("{b}:empty", &["x"]).await.unwrap();
    assert_eq!(
        s.blpop("{b}:empty", timeout).await.unwrap().as_deref(),
        Some("x")
    );
}

async fn lmove_delivers_each_item_once_to_concurrent_consumers(s: Arc<dyn Store>) {
    const ITEMS: usize = 300;
    let (q, f) = ("{p}:FILE:FILES_SENDING_QUEUE", "{p}:FILE:FILES_IN_FLIGHT");
    let delivered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut consumers = Vec::new();
    for c in 0..4 {
        let (s, delivered) = (Arc::clone(&s), Arc::clone(&delivered));
        consumers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while delivered.load(AtomicOrdering::SeqCst) < ITEMS && Instant::now() < deadline {
                // Half the consumers block, half poll.
                let moved = if c % 2 == 0 {
                    s.blmove(q, f, Duration::from_millis(200)).await.unwrap()
                } else {
                    s.lmove(q, f).await.unwrap()
                };
                if let Some(item) = moved {
                    // Acknowledge: the item leaves the in-flight list.
                    assert_eq!(s.lrem(f, 1, &item).await.unwrap(), 1);
                    delivered.fetch_add(1, AtomicOrdering::SeqCst);
                    got.push(item);
                } else if c % 2 == 1 {
                    tokio::task::yield_now().await;
                }
            }
            got
        }));
    }
    // Produce while the consumers run, in small batches.
    let items: Vec<String> = (0..ITEMS).map(|i| format!("file-{i:04}")).collect();
    for chunk in items.chunks(7) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        s.rpush(q, &chunk).await.unwrap();
    }
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(consumer.await.unwrap());
    }
    assert_eq!(all.len(), ITEMS, "each item delivered exactly once");
    let unique: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(unique, items.into_iter().collect::<BTreeSet<_>>());
    assert_eq!(s.llen(q).await.unwrap(), 0);
    assert_eq!(s.llen(f).await.unwrap(), 0);
}

async fn zpop_by_score_pops_each_member_once_under_concurrent_sweepers(s: Arc<dyn Store>) {
    const MEMBERS: usize = 400;
    let k = "{b}:EXPIRE_FILES";
    for i in 0..MEMBERS {
        s.zadd(k, &format!("f{i}"), (i % 37) as f64).await.unwrap();
    }
    let mut sweepers = Vec::new();
    for _ in 0..4 {
        let s = Arc::clone(&s);
        sweepers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let popped = s.zpop_by_score(k, 100.0, Some(5)).await.unwrap();
                if popped.is_empty() {
                    return got;
                }
                // Each batch is ascending.
                assert!(popped.windows(2).all(|w| w[0].1 <= w[1].1), "{popped:?}");
                got.extend(popped.into_iter().map(|(m, _)| m));
            }
        }));
    }
    let mut all = Vec::new();
    for sweeper in sweepers {
        all.extend(sweeper.await.unwrap());
    }
    assert_eq!(all.len(), MEMBERS, "each member popped exactly once");
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), MEMBERS);
    assert!(!s.exists(k).await.unwrap());
}

// --- batches ---

/// Everything under `prefix`, each key's content as text, whatever its type: what
/// "nothing changed" is compared with.
async fn dump(s: &Arc<dyn Store>, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in s.scan_prefix(prefix).await.unwrap() {
        let content = if let Ok(hash) = s.hgetall(&key).await {
            format!("hash {hash:?}")
        } else if let Ok(set) = s.smembers(&key).await {
            format!("set {set:?}")
        } else if let Ok(zset) = s
            .zrange_by_score(&key, f64::NEG_INFINITY, f64::INFINITY, Order::Asc, None)
            .await
        {
            format!("zset {zset:?}")
        } else {
            format!("list {:?}", s.lrange(&key, 0, -1).await.unwrap())
        };
        out.insert(key, content);
    }
    out
}

async fn batch_applies_its_writes_in_order(s: Arc<dyn Store>) {
    let (h, z, st, l, retyped) = ("{t}:h", "{t}:z", "{t}:s", "{t}:l", "{t}:retyped");
    s.hset(h, &[("old", "1"), ("keep", "2")]).await.unwrap();
    s.zadd(z, "old", 1.0).await.unwrap();
    s.sadd(st, &["old"]).await.unwrap();
    s.rpush(l, &["a"]).await.unwrap();
    s.hset(retyped, &[("f", "v")]).await.unwrap();
    let mut batch = Batch::new();
    batch
        .hset(h, &[("new", "3"), ("keep", "4")])
        .hdel(h, &["old", "nope"])
        .zadd(z, "new", 2.5)
        .zadd(z, "old", 3.0)
        .zrem(z, &["nope"])
        .sadd(st, &["new", "x"])
        .srem(st, &["old"])
        .rpush(l, &["b", "c", "x", "x"])
        .rpush(l, &["d", "x"])
        // From the head, two of the three: the last stays.
        .lrem(l, 2, "x")
        .lrem("{t}:no-list", 1, "x")
        // A key changes type only through a delete.
        .del(retyped)
        .zadd(retyped, "m", f64::INFINITY)
        .del("{t}:never-was");
    assert_eq!(batch.len(), 14);
    s.apply(&batch).await.unwrap();
    assert_eq!(
        s.hgetall(h).await.unwrap(),
        map(&[("keep", "4"), ("new", "3")])
    );
    assert_eq!(
        s.zrange_by_score(z, f64::NEG_INFINITY, f64::INFINITY, Order::Asc, None)
            .await
            .unwrap(),
        scored(&[("new", 2.5), ("old", 3.0)])
    );
    assert_eq!(
        s.smembers(st).await.unwrap(),
        ["new", "x"].map(str::to_owned).into()
    );
    assert_eq!(
        s.lrange(l, 0, -1).await.unwrap(),
        strings(&["a", "b", "c", "d", "x"])
    );
    assert!(!s.exists("{t}:no-list").await.unwrap());
    assert_eq!(s.zscore(retyped, "m").await.unwrap(), Some(f64::INFINITY));
    assert!(!s.exists("{t}:never-was").await.unwrap());

    // Removals that empty a key delete it, as the single commands do.
    let mut batch = Batch::new();
    batch
        .hdel(h, &["keep", "new"])
        .zrem(z, &["new", "old"])
        .srem(st, &["new", "x"])
        .del(l);
    s.apply(&batch).await.unwrap();
    assert_eq!(s.scan_prefix("{t}:").await.unwrap(), strings(&[retyped]));

    // Writes far longer than one Lua `unpack` takes.
    let fields: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("f{i}"), format!("v{i}")))
        .collect();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(f, v)| (f.as_str(), v.as_str()))
        .collect();
    let values: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    s.apply(Batch::new().hset(h, &fields).rpush(l, &values))
        .await
        .unwrap();
    assert_eq!(s.hgetall(h).await.unwrap().len(), 3000);
    assert_eq!(s.hget(h, "f2999").await.unwrap().as_deref(), Some("v2999"));
    assert_eq!(s.lrange(l, 0, -1).await.unwrap(), strings(&values));
}

async fn hgetall_many_reads_keys_in_order(s: Arc<dyn Store>) {
    s.hset("{m}:a", &[("f", "1"), ("g", "2")]).await.unwrap();
    s.hset("{m}:c", &[("h", "3")]).await.unwrap();
    s.sadd("{m}:set", &["x"]).await.unwrap();
    assert_eq!(
        s.hgetall_many(&["{m}:c", "{m}:missing", "{m}:a"])
            .await
            .unwrap(),
        [
            map(&[("h", "3")]),
            BTreeMap::new(),
            map(&[("f", "1"), ("g", "2")])
        ]
    );
    assert!(s.hgetall_many(&[]).await.unwrap().is_empty());
    assert_wrong_type(s.hgetall_many(&["{m}:a", "{m}:set"]).await, "{m}:set");
}

async fn batch_guard_applies_only_while_its_field_holds(s: Arc<dyn Store>) {
    let (rec, z) = ("{g}:rec", "{g}:z");
    // Absent key: a guard on "absent" holds, one on a value does not.
    let mut batch = Batch::new();
    batch
        .only_if(rec, "STATE", Some("active"))
        .hset(rec, &[("STATE", "active")]);
    match s.apply(&batch).await {
        Err(StoreError::Conflict { key, field }) => assert_eq!((&*key, &*field), (rec, "STATE")),
        other => panic!("a guard on a missing record passed: {other:?}"),
    }
    assert!(!s.exists(rec).await.unwrap());
    let mut batch = Batch::new();
    batch
        .only_if(rec, "STATE", None)
        .hset(rec, &[("STATE", "active"), ("N", "1")])
        .zadd(z, "box", 1.0);
    s.apply(&batch).await.unwrap();

    // Someone else changed the field: nothing of the guarded batch is written.
    s.hset(rec, &[("STATE", "evicted")]).await.unwrap();
    let mut batch = Batch::new();
    batch
        .only_if(rec, "N", Some("1"))
        .only_if(rec, "STATE", Some("active"))
        .hset(rec, &[("N", "2")])
        .zadd(z, "box", 2.0);
    match s.apply(&batch).await {
        Err(StoreError::Conflict { field, .. }) => assert_eq!(field, "STATE"),
        other => panic!("a stale guard passed: {other:?}"),
    }
    assert_eq!(s.hget(rec, "N").await.unwrap().as_deref(), Some("1"));
    assert_eq!(s.zscore(z, "box").await.unwrap(), Some(1.0));

    // A guard on a key of another type is a type error, as a write would be.
    let mut batch = Batch::new();
    batch.only_if(z, "f", None).hset(rec, &[("N", "3")]);
    assert!(matches!(s.apply(&batch).await, Err(StoreError::WrongType { key }) if key == z));
    assert_eq!(s.hget(rec, "N").await.unwrap().as_deref(), Some("1"));
}

/// Many tasks increment one counter by read, guarded write, re-read on conflict:
/// with guards no increment is lost.
async fn racing_guarded_updates_lose_none(s: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 10;
    let key = "{r}:counter";
    let tasks = (0..TASKS).map(|_| {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..EACH {
                loop {
                    let seen = s.hget(key, "n").await.unwrap();
                    let next = seen.as_deref().map_or(0, |n| n.parse::<u64>().unwrap()) + 1;
                    let mut batch = Batch::new();
                    batch
                        .only_if(key, "n", seen.as_deref())
                        .hset(key, &[("n", &next.to_string())]);
                    match s.apply(&batch).await {
                        Ok(()) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        })
    });
    let conflicts: u64 = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    eprintln!("{conflicts} conflicts re-tried");
    assert_eq!(
        s.hget(key, "n").await.unwrap().as_deref(),
        Some((TASKS * EACH).to_string().as_str())
    );
}

async fn batch_is_seen_all_at_once_by_a_concurrent_reader(s: Arc<dyn Store>) {
    const ROUNDS: u64 = 300;
    let (h, z, st, l) = ("{v}:h", "{v}:z", "{v}:s", "{v}:l");
    let writer = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            for i in 1..=ROUNDS {
                let n = i.to_string();
                let mut batch = Batch::new();
                batch
                    .hset(h, &[("n", &n)])
                    .zadd(z, "n", i as f64)
                    .sadd(st, &[&n])
                    .rpush(l, &[&n]);
                s.apply(&batch).await.unwrap();
            }
        })
    };
    // Read in the order the batch writes: a reader that sees round i's first write
    // must see its later ones too. Were the writes applied one by one, it could
    // catch the first key ahead of the others.
    let mut seen = BTreeSet::new();
    loop {
        let finished = writer.is_finished();
        if let Some(n) = s.hget(h, "n").await.unwrap() {
            let i: u64 = n.parse().unwrap();
            let score = s.zscore(z, "n").await.unwrap();
            assert!(score >= Some(i as f64), "round {i}: score {score:?}");
            assert!(
                s.sismember(st, &n).await.unwrap(),
                "round {i}: not in the set"
            );
            let len = s.llen(l).await.unwrap();
            assert!(len >= i, "round {i}: the list has {len} values");
            seen.insert(i);
        }
        if finished {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert!(seen.contains(&ROUNDS), "the reader missed the last round");
    eprintln!("the reader saw {} of {ROUNDS} rounds", seen.len());
}

async fn batch_with_a_wrong_type_anywhere_changes_nothing(s: Arc<dyn Store>) {
    let (h, st, z, l, fresh) = ("{w}:h", "{w}:s", "{w}:z", "{w}:l", "{w}:fresh");
    s.hset(h, &[("f", "v")]).await.unwrap();
    s.sadd(st, &["m"]).await.unwrap();
    s.zadd(z, "m", 1.0).await.unwrap();
    s.rpush(l, &["v"]).await.unwrap();
    let before = dump(&s, "{w}:").await;

    let mut last = Batch::new();
    last.hset(h, &[("g", "w")])
        .zadd(z, "n", 2.0)
        .sadd(st, &["n"])
        .hset(fresh, &[("f", "v")])
        .sadd(l, &["x"]);
    let mut first = Batch::new();
    first.rpush(st, &["x"]).hset(h, &[("g", "w")]).del(z);
    let mut middle = Batch::new();
    middle
        .hset(fresh, &[("f", "v")])
        .del(z)
        .sadd(l, &["x"])
        .rpush(l, &["w"]);
    let mut removal = Batch::new();
    removal.srem(fresh, &["x"]).zrem(h, &["f"]);
    // The batch itself uses a key as two types.
    let mut twice = Batch::new();
    twice.hset(fresh, &[("f", "v")]).zadd(fresh, "m", 1.0);
    // A removal keeps the type even when it empties the key (the rule of `Batch`),
    // on both backends alike.
    let mut emptied = Batch::new();
    emptied.hdel(h, &["f"]).zadd(h, "m", 1.0);
    // Absent, then used as two types without a delete in between.
    let mut two_removals = Batch::new();
    two_removals
        .hdel(fresh, &["f"])
        .srem(fresh, &["m"])
        .sadd(h, &["m"]);
    for (batch, key) in [
        (&last, l),
        (&first, st),
        (&middle, l),
        (&removal, h),
        (&twice, fresh),
        (&emptied, h),
    ] {
        assert_wrong_type(s.apply(batch).await, key);
        assert_eq!(dump(&s, "{w}:").await, before, "{batch:?}");
    }
    // Two removals of two types on an absent key are harmless...
    let mut harmless = Batch::new();
    harmless.hdel(fresh, &["f"]).srem(fresh, &["m"]);
    s.apply(&harmless).await.unwrap();
    // ...but not on a key that exists.
    let mut harmful = Batch::new();
    harmful.hdel(st, &["f"]).srem(st, &["m"]);
    assert_wrong_type(s.apply(&harmful).await, st);
    assert_wrong_type(s.apply(&two_removals).await, h);
    assert_eq!(dump(&s, "{w}:").await, before);

    let mut nan = Batch::new();
    nan.hset(fresh, &[("f", "v")]).zadd(z, "m", f64::NAN);
    assert!(matches!(s.apply(&nan).await, Err(StoreError::InvalidScore)));
    assert_eq!(dump(&s, "{w}:").await, before);

    // An empty write is dropped, so it cannot fail on a key of another type.
    let mut empty_write = Batch::new();
    empty_write.hset(z, &[]).sadd(st, &["n"]);
    s.apply(&empty_write).await.unwrap();
    assert_eq!(s.scard(st).await.unwrap(), 2);
}

async fn empty_batch_is_a_no_op(s: Arc<dyn Store>) {
    s.apply(&Batch::new()).await.unwrap();
    let mut empties = Batch::new();
    empties
        .hset("{e}:h", &[])
        .hdel("{e}:h", &[])
        .zrem("{e}:z", &[])
        .sadd("{e}:s", &[])
        .srem("{e}:s", &[])
        .rpush("{e}:l", &[]);
    assert!(empties.is_empty());
    s.apply(&empties).await.unwrap();
    assert_eq!(s.scan_prefix("{e}:").await.unwrap(), Vec::<String>::new());
}

async fn batch_push_wakes_a_blocked_pop(s: Arc<dyn Store>) {
    let key = "{b}:queue";
    check_wakes_by(
        Arc::clone(&s),
        key,
        |s| async move { s.blpop("{b}:queue", Duration::from_secs(30)).await },
        true,
    )
    .await;
}

// --- Redis only ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_prefixes_isolate_namespaces_on_one_server() {
    let server = RedisServer::start();
    let a = RedisStore::connect(&server.url(), "staging:")
        .await
        .unwrap();
    let b = RedisStore::connect(&server.url(), "prod:").await.unwrap();
    let none = RedisStore::connect(&server.url(), "").await.unwrap();
    a.hset("{e}:OWN_INFO", &[("v", "a")]).await.unwrap();
    b.hset("{e}:OWN_INFO", &[("v", "b")]).await.unwrap();
    a.rpush("{e}:q", &["only-a"]).await.unwrap();
    assert_eq!(
        a.hget("{e}:OWN_INFO", "v").await.unwrap().as_deref(),
        Some("a")
    );
    assert_eq!(
        b.hget("{e}:OWN_INFO", "v").await.unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(b.lpop("{e}:q").await.unwrap(), None);
    assert_eq!(
        a.scan_prefix("").await.unwrap(),
        strings(&["{e}:OWN_INFO", "{e}:q"])
    );
    assert_eq!(
        b.scan_prefix("{e}").await.unwrap(),
        strings(&["{e}:OWN_INFO"])
    );
    // The real key names, as an operator with redis-cli sees them.
    assert_eq!(
        none.scan_prefix("").await.unwrap(),
        strings(&["prod:{e}:OWN_INFO", "staging:{e}:OWN_INFO", "staging:{e}:q"])
    );
    assert_eq!(b.del(&["{e}:OWN_INFO", "{e}:q"]).await.unwrap(), 1);
    assert!(a.exists("{e}:OWN_INFO").await.unwrap());
}

#[tokio::test]
async fn redis_prefix_with_braces_is_refused() {
    for prefix in ["a{b:", "x}"] {
        let err = RedisStore::connect("redis://127.0.0.1:1/", prefix)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    }
}

#[tokio::test]
async fn redis_unreachable_port_fails_fast_with_url_and_cause() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("redis://operator:s3cret@127.0.0.1:{port}/0");
    let started = Instant::now();
    let err = RedisStore::connect(&url, "").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = err.to_string();
    let expected =
        format!("cannot reach the Redis store at redis://operator:***@127.0.0.1:{port}/0: ");
    assert!(message.starts_with(&expected), "{message}");
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn redis_silent_server_fails_within_seconds_saying_it_timed_out() {
    // Accepts connections (the kernel does, via the backlog) and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "redis://127.0.0.1:{}/",
        listener.local_addr().unwrap().port()
    );
    let started = Instant::now();
    let err = RedisStore::connect(&url, "").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot reach the Redis store at {url}: ")),
        "{message}"
    );
    assert!(message.contains("timed out"), "{message}");
    drop(listener);
}

// --- open_store ---

#[tokio::test]
async fn open_store_accepts_embedded_and_redis_and_explains_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    for spec in ["embedded", ""] {
        let store = dandelion_core::store::open_store(spec, dir.path(), "", 1 << 20)
            .await
            .unwrap();
        store.sadd("{x}:s", &["m"]).await.unwrap();
        drop(store);
        assert!(dir.path().join("dandelion.redb").exists());
    }
    let server = RedisServer::start();
    let store = dandelion_core::store::open_store(&server.url(), dir.path(), "p:", 1 << 20)
        .await
        .unwrap();
    store.sadd("{x}:s", &["m"]).await.unwrap();
    assert!(store.sismember("{x}:s", "m").await.unwrap());

    let err = dandelion_core::store::open_store("postgres://db", dir.path(), "", 1 << 20)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(
        message.contains("embedded") && message.contains("redis://"),
        "{message}"
    );
}
