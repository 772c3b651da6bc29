//! What only the embedded backend promises: concurrent writes share commits (group
//! commit), every acknowledged write survives `kill -9` of the process, and a soft
//! one does once it is `SOFT_SYNC_WITHIN` old.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dandelion_core::store::{Batch, EmbeddedStore, SOFT_SYNC_WITHIN, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_grouped_into_few_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let before = store.write_stats();
    let writes = (0..200).map(|i| {
        let store = store.clone();
        async move {
            store
                .hset(&format!("{{b}}:k{i}"), &[("n", &i.to_string())])
                .await
        }
    });
    for result in futures_util::future::join_all(writes).await {
        assert_eq!(result.unwrap(), 1);
    }
    let after = store.write_stats();
    let (commits, ops) = (after.commits - before.commits, after.ops - before.ops);
    eprintln!("200 concurrent writes: {commits} commits");
    assert_eq!(ops, 200);
    assert!(
        commits <= 20,
        "200 concurrent writes took {commits} commits"
    );
    // And every one of them is readable.
    assert_eq!(store.scan_prefix("{b}:k").await.unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_fail_or_taint_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    store.sadd("{b}:set", &["m"]).await.unwrap();
    // Many writes in flight at once, every other one of the wrong type.
    let writes = (0..100).map(|i| {
        let store = store.clone();
        async move {
            if i % 2 == 0 {
                store.rpush("{b}:set", &["x"]).await.map(|_| ())
            } else {
                store.rpush("{b}:list", &[&i.to_string()]).await.map(|_| ())
            }
        }
    });
    let results = futures_util::future::join_all(writes).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), i % 2 == 1, "write {i}: {result:?}");
    }
    assert_eq!(store.llen("{b}:list").await.unwrap(), 50);
    assert_eq!(store.scard("{b}:set").await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_shares_a_commit_without_leaving_half_of_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    store.sadd("{b}:set", &["m"]).await.unwrap();
    // Batches in flight at once (so they share commits), every other one failing
    // on its last write, after writes that would otherwise have succeeded.
    let batches = (0..100).map(|i| {
        let store = store.clone();
        async move {
            let n = i.to_string();
            let mut batch = Batch::new();
            batch
                .hset(&format!("{{b}}:h{i}"), &[("n", &n)])
                .rpush("{b}:list", &[&n]);
            if i % 2 == 0 {
                batch.rpush("{b}:set", &["x"]);
            }
            store.apply(&batch).await
        }
    });
    let results = futures_util::future::join_all(batches).await;
    for (i, result) in results.iter().enumerate() {
        match result {
            Err(StoreError::WrongType { key }) if i % 2 == 0 => assert_eq!(key, "{b}:set"),
            Ok(()) if i % 2 == 1 => {}
            other => panic!("batch {i}: {other:?}"),
        }
    }
    assert_eq!(store.llen("{b}:list").await.unwrap(), 50);
    assert_eq!(store.scan_prefix("{b}:h").await.unwrap().len(), 50);
    for i in (0..100).step_by(2) {
        assert!(!store.exists(&format!("{{b}}:h{i}")).await.unwrap());
    }
    assert_eq!(store.scard("{b}:set").await.unwrap(), 1);
    let stats = store.write_stats();
    assert!(stats.commits < 101, "no grouping at all: {stats:?}");
}

#[tokio::test]
async fn a_batch_is_one_commit_and_an_empty_one_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let before = store.write_stats();
    store.apply(&Batch::new()).await.unwrap();
    assert_eq!(
        store.write_stats(),
        before,
        "an empty batch must not commit"
    );
    let mut batch = Batch::new();
    batch
        .del("{b}:exchange")
        .hset("{b}:exchange", &[("a", "1"), ("b", "2")])
        .hset("{b}:info", &[("LAST", "1")])
        .zadd("{b}:set", "box", 5.0);
    store.apply(&batch).await.unwrap();
    let after = store.write_stats();
    assert_eq!(
        (after.commits - before.commits, after.ops - before.ops),
        (1, 1)
    );
}

#[tokio::test]
async fn data_survives_close_and_reopen_and_cache_size_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = EmbeddedStore::open_with_cache(&path, 1024 * 1024).unwrap();
        store.rpush("{p}:q", &["a", "b"]).await.unwrap();
        store.zadd("{p}:z", "m", 2.5).await.unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&path).unwrap());
    assert_eq!(store.lrange("{p}:q", 0, -1).await.unwrap(), ["a", "b"]);
    assert_eq!(store.zscore("{p}:z", "m").await.unwrap(), Some(2.5));
}

fn soft_beat(i: usize) -> Batch {
    let mut batch = Batch::new();
    batch
        .hset(&format!("{{s}}:h{i}"), &[("n", &i.to_string())])
        .zadd("{s}:set", &format!("m{i}"), 1.0)
        .soft();
    batch
}

#[tokio::test]
async fn soft_batches_skip_the_fsync_until_one_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let before = store.write_stats();
    // One after another, so each is its own commit (held open for at most
    // SOFT_GATHER for company that does not come).
    for i in 0..30 {
        store.apply(&soft_beat(i)).await.unwrap();
    }
    let soft = store.write_stats();
    assert_eq!(soft.commits - before.commits, 30);
    assert!(
        soft.syncs - before.syncs <= 2,
        "30 quick soft batches made {} fsyncs",
        soft.syncs - before.syncs
    );
    // Readable at once, fsync or not.
    assert_eq!(store.zcard("{s}:set").await.unwrap(), 30);
    // With nothing else to write, the writer syncs them by itself.
    let deadline = Instant::now() + SOFT_SYNC_WITHIN * 5;
    while store.write_stats().syncs == soft.syncs {
        assert!(Instant::now() < deadline, "soft writes never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A durable write is never left waiting for that.
    let synced = store.write_stats();
    store.hset("{s}:durable", &[("v", "1")]).await.unwrap();
    assert_eq!(store.write_stats().syncs, synced.syncs + 1);
}

/// Soft writes from many sessions share commits even when they come a few ms
/// apart, as heartbeats do (the writer waits SOFT_GATHER for more), and a
/// durable write that comes meanwhile is synced before it is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soft_writes_a_few_ms_apart_share_commits_and_a_durable_one_is_still_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let before = store.write_stats();
    let writers: Vec<_> = (0..8)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    // Spread out, not synchronising: the shape of the load.
                    tokio::time::sleep(Duration::from_millis(2 + task as u64)).await;
                    store.apply(&soft_beat(task * 100 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let after = store.write_stats();
    assert_eq!(store.zcard("{s}:set").await.unwrap(), 80);
    assert!(
        after.commits - before.commits <= 30,
        "80 soft writes from 8 sessions took {} commits (about 55 without gathering)",
        after.commits - before.commits
    );
    // A durable write that comes while a soft one is gathered is still synced
    // before it is acknowledged.
    let soft = {
        let store = store.clone();
        tokio::spawn(async move { store.apply(&soft_beat(999)).await.unwrap() })
    };
    let synced = store.write_stats().syncs;
    store.hset("{s}:durable", &[("v", "1")]).await.unwrap();
    assert!(
        store.write_stats().syncs > synced,
        "the durable write was not synced"
    );
    soft.await.unwrap();
}

#[tokio::test]
async fn soft_writes_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = EmbeddedStore::open(&path).unwrap();
        for i in 0..10 {
            store.apply(&soft_beat(i)).await.unwrap();
        }
    }
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.zcard("{s}:set").await.unwrap(), 10);
}

const CHILD_ENV: &str = "DANDELION_STORE_CRASH_CHILD";

/// Child role: write keys from several tasks for ever, printing one line per
/// acknowledged write, until the parent kills the process. `soft` makes every
/// write a soft batch.
async fn crash_child(path: &str, soft: bool) {
    let store = EmbeddedStore::open(std::path::Path::new(path)).unwrap();
    let mut tasks = Vec::new();
    for task in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("{{c}}:t{task}:{i}");
                let mut batch = Batch::new();
                batch.hset(&key, &[("v", "1")]);
                if soft {
                    batch.soft();
                }
                store.apply(&batch).await.unwrap();
                println!("ACK {key}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Runs `test` (this binary's test of that name) as a crash child writing to
/// `path`, kills it with SIGKILL once it has acknowledged at least 500 writes and
/// run for `at_least`, and returns each acknowledged key with when it was read.
fn kill_a_writer(test: &str, path: &std::path::Path, at_least: Duration) -> Vec<(String, Instant)> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    // Only complete lines count: the kill may cut the last one short.
    let mut next_ack = || {
        let mut line = String::new();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                line.strip_suffix('\n')
                    .and_then(|l| l.strip_prefix("ACK "))
                    .map(|key| (key.to_owned(), Instant::now())),
            ),
        }
    };
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Kill it mid-stream, once it has acknowledged a good number of writes.
    while acked.len() < 500 || started.elapsed() < at_least {
        assert!(
            Instant::now() < deadline,
            "the child acknowledged only {}",
            acked.len()
        );
        let line = next_ack().expect("the child ended early");
        acked.extend(line);
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements already in the pipe count too.
    while let Some(line) = next_ack() {
        acked.extend(line);
    }
    eprintln!("killed the child after {} acknowledged writes", acked.len());
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return crash_child(&path, false).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let acked = kill_a_writer("acknowledged_writes_survive_kill_9", &path, Duration::ZERO);
    let store = EmbeddedStore::open(&path).unwrap();
    for (key, _) in &acked {
        assert!(
            store.exists(key).await.unwrap(),
            "acknowledged {key} was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_writes_survive_kill_9_once_they_are_due_on_disk() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return crash_child(&path, true).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let acked = kill_a_writer(
        "soft_writes_survive_kill_9_once_they_are_due_on_disk",
        &path,
        SOFT_SYNC_WITHIN * 3,
    );
    let killed = Instant::now();
    let store = EmbeddedStore::open(&path).unwrap();
    // A write read from the pipe more than SOFT_SYNC_WITHIN (and a margin for a
    // slow fsync) before the kill was on disk by then.
    let due: Vec<_> = acked
        .iter()
        .filter(|(_, at)| killed.duration_since(*at) > SOFT_SYNC_WITHIN * 2)
        .collect();
    assert!(!due.is_empty(), "no write was old enough to check");
    for (key, _) in due {
        assert!(
            store.exists(key).await.unwrap(),
            "soft write {key}, acknowledged well before the kill, was lost"
        );
    }
}
