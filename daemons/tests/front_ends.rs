//! Two publisher front ends sharing one Redis: either answers viewers for a
//! file the other accepted, and the survivor keeps answering when the other is
//! killed, including under live playback through a balancer. Needs
//! `redis-server` (`.ci/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dandelion_core::http::HttpClient;
use dandelion_testkit::balancer::Balancer;
use dandelion_testkit::browser::{finished, hls_js, require_hls_js};
use dandelion_testkit::daemon::DaemonBuilder;
use dandelion_testkit::media::{
    decoded_seconds, failures, ffmpeg, live_encoder, play_on, push_watch, require_ffmpeg,
};
use dandelion_testkit::network::{NetworkBuilder, entrance_id};
use dandelion_testkit::process::{Running, binary, run};
use dandelion_testkit::redis::RedisServer;
use dandelion_testkit::wait_for;
use serde_json::Value;

/// Small files are kept in the store, so both front ends can read them.
const IN_STORE: &str = "store_files_up_to = \"1 MiB\"";

fn push(origin: &str, token: &str, file: &std::path::Path, name: &str) {
    let out = run(Command::new(binary("dandelion"))
        .arg("push")
        .arg(file)
        .args(["--to", origin, "--token", token.trim(), "--as", name])
        .env_remove("DANDELION_CONFIG"));
    assert!(out.status.success(), "push to {origin}: {out:?}");
}

#[test]
fn either_front_end_answers_for_files_the_other_accepted_and_one_survives_the_other() {
    let redis = RedisServer::start();
    let store = format!("store = {:?}", redis.url());
    let root = tempfile::tempdir().unwrap();
    let mut net = NetworkBuilder::new(root.path(), 2)
        .publisher_top(store.clone())
        .publisher_setting(IN_STORE)
        .start();
    let b = second_front_end(root.path(), &net, &[IN_STORE])
        .top(store)
        .spawn();
    let b_dir = b.data_dir().to_owned();
    let a_origin = net.publisher.origin();
    let b_origin = b.origin();
    let a_token = std::fs::read_to_string(root.path().join("publisher/admin.token")).unwrap();
    let b_token = std::fs::read_to_string(b_dir.join("admin.token")).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let status = |url: &str| {
        rt.block_on(http.get(url, &[]))
            .ok()
            .map(|r| r.status.as_u16())
    };
    for front_end in [&a_origin, &b_origin] {
        wait_known_boxes(&rt, &http, front_end.as_ref(), 2);
    }

    let file = root.path().join("clip.ts");
    std::fs::write(&file, vec![7u8; 20_000]).unwrap();
    // Pushed to one, answered by the other: from its origin at first, then
    // by redirect once placed. Never "no such file" for more than a moment.
    for (to, token, other, name) in [
        (&a_origin, &a_token, &b_origin, "a/clip.ts"),
        (&b_origin, &b_token, &a_origin, "b/clip.ts"),
    ] {
        push(to, token, &file, name);
        let pushed = Instant::now();
        wait_for(
            "the other front end to know the file",
            Duration::from_secs(5),
            || matches!(status(&format!("{other}/{name}")), Some(200 | 302)).then_some(()),
        );
        eprintln!(
            "{name}: known by the other front end after {:?}",
            pushed.elapsed()
        );
        wait_for(
            "the other front end to redirect to a box",
            Duration::from_secs(20),
            || (status(&format!("{other}/{name}")) == Some(302)).then_some(()),
        );
    }

    // A file too big for the store lives on the disk of the front end that
    // took it; the other redirects to its copies, and its senders never fail
    // it for lack of the bytes.
    let big = root.path().join("film.bin");
    std::fs::write(&big, vec![9u8; 2 << 20]).unwrap();
    push(&a_origin, &a_token, &big, "big/film.bin");
    wait_for(
        "the other front end to redirect the big file to a box",
        Duration::from_secs(20),
        || (status(&format!("{b_origin}/big/film.bin")) == Some(302)).then_some(()),
    );
    let record: Value = rt
        .block_on(http.get(
            &format!("{a_origin}/api/files/big/film.bin"),
            &[("authorization", &format!("Bearer {}", a_token.trim()))],
        ))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(record["failures"], serde_json::json!([]), "{record}");

    // A viewer plays through A the way a player behind a DNS name with both
    // addresses would: it asks the front end it is on and, when that one
    // does not answer, retries on the other and stays there.
    let stop = Arc::new(AtomicBool::new(false));
    let viewer = {
        let (a_origin, b_origin, stop) = (a_origin.clone(), b_origin.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let http = HttpClient::default();
            let (mut on, mut retries, mut served, mut refused) = (&a_origin, 0, 0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                for name in ["a/clip.ts", "b/clip.ts"] {
                    let answer = rt.block_on(http.get(&format!("{on}/{name}"), &[]));
                    match answer.map(|r| r.status.as_u16()) {
                        Ok(200 | 302) => served += 1,
                        Ok(other) => refused.push(format!("{name}: {other}")),
                        Err(_) if on == &a_origin => {
                            // Not answering: retry on the other front end.
                            on = &b_origin;
                            retries += 1;
                            match rt.block_on(http.get(&format!("{on}/{name}"), &[])) {
                                Ok(r) if matches!(r.status.as_u16(), 200 | 302) => served += 1,
                                other => refused.push(format!("{name} on retry: {other:?}")),
                            }
                        }
                        Err(e) => refused.push(format!("{name} on {on}: {e}")),
                    }
                }
            }
            (retries, served, refused)
        })
    };

    // One front end dies in the middle of pushes: every file it acknowledged
    // is answered by the other (kept in the shared store), which takes the
    // next pushes.
    let pusher = {
        let (a_origin, a_token, file) = (a_origin.clone(), a_token.clone(), file.clone());
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            for i in 0..40 {
                let name = format!("during/clip{i}.ts");
                let out = run(Command::new(binary("dandelion"))
                    .arg("push")
                    .arg(&file)
                    .args(["--to", &a_origin, "--token", a_token.trim(), "--as", &name])
                    .env_remove("DANDELION_CONFIG"));
                if out.status.success() {
                    acknowledged.push(name);
                }
            }
            acknowledged
        })
    };
    wait_for(
        "A to acknowledge some pushes",
        Duration::from_secs(20),
        || {
            matches!(
                status(&format!("{b_origin}/during/clip3.ts")),
                Some(200 | 302)
            )
            .then_some(())
        },
    );
    // A file too big for the store, acknowledged by A just before it dies:
    // acknowledged only once a box held it, so the survivor sends viewers to
    // that copy.
    push(&a_origin, &a_token, &big, "big/last.bin");
    let record: Value = rt
        .block_on(http.get(
            &format!("{a_origin}/api/files/big/last.bin"),
            &[("authorization", &format!("Bearer {}", a_token.trim()))],
        ))
        .unwrap()
        .json()
        .unwrap();
    assert!(
        record["placements"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "acknowledged before any box held a copy: {record}"
    );
    net.publisher.kill9();
    wait_for(
        "the survivor to redirect the big file A acknowledged before dying",
        Duration::from_secs(5),
        || (status(&format!("{b_origin}/big/last.bin")) == Some(302)).then_some(()),
    );
    let acknowledged = pusher.join().unwrap();
    eprintln!(
        "A acknowledged {} of 40 pushes before it died",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 4, "{acknowledged:?}");
    for name in acknowledged
        .iter()
        .map(String::as_str)
        .chain(["a/clip.ts", "b/clip.ts"])
    {
        let answer = status(&format!("{b_origin}/{name}"));
        assert!(
            matches!(answer, Some(200 | 302)),
            "{name}, acknowledged before the kill, is answered {answer:?} by the survivor"
        );
    }
    push(&b_origin, &b_token, &file, "after/clip.ts");
    wait_for(
        "a push after the other front end died to be placed",
        Duration::from_secs(20),
        || (status(&format!("{b_origin}/after/clip.ts")) == Some(302)).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let (retries, served, refused) = viewer.join().unwrap();
    eprintln!("the viewer was served {served} times, with {retries} retry");
    assert!(refused.is_empty(), "the viewer was refused: {refused:?}");
    assert_eq!(
        retries, 1,
        "a front end's death must cost a viewer one retry"
    );
    assert!(served >= 10, "the viewer was served only {served} times");
}

/// A live stream pushed and watched through a TCP balancer in front of two
/// front ends, the way an operator runs them: the front end everything goes
/// to is killed, and the encoder's pushes and both players (ffmpeg, hls.js in
/// headless Chromium) go on through the other with at most one stall. Needs
/// ffmpeg and Chromium as well.
#[test]
fn a_live_stream_plays_on_through_a_balancer_when_the_front_end_serving_it_dies() {
    require_ffmpeg();
    require_hls_js();
    let redis = RedisServer::start();
    let store = format!("store = {:?}", redis.url());
    let root = tempfile::tempdir().unwrap();
    let mut net = NetworkBuilder::new(root.path(), 2)
        .publisher_top(store.clone())
        .publisher_setting(IN_STORE)
        .start();
    let b = second_front_end(root.path(), &net, &[IN_STORE]).top(store);
    // One admin token on both, so a pusher can go through the balancer.
    let token_file = root.path().join("publisher/admin.token");
    std::fs::copy(&token_file, root.path().join("publisher-b/admin.token")).unwrap();
    let b = b.spawn();
    let token = std::fs::read_to_string(&token_file).unwrap();
    let balancer = Balancer::start(vec![net.publisher.addr(), b.addr()]);
    let origin = balancer.origin();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    for front_end in [net.publisher.origin(), b.origin()] {
        wait_known_boxes(&rt, &http, front_end.as_ref(), 2);
    }

    let live = root.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let mut encoder = ffmpeg();
    live_encoder(&mut encoder, &live, &root.path().join("encoder.log"));
    let _encoder = Running::spawn(&mut encoder);
    let mut watcher = push_watch(&live, &origin, &token, Some(1), root.path());
    let _watcher = Running::spawn(&mut watcher);
    let playlist = format!("{origin}/live/index.m3u8");
    wait_for(
        "a playlist listing three segments",
        Duration::from_secs(30),
        || {
            let p = rt.block_on(http.get(&playlist, &[])).ok()?;
            (p.status.as_u16() == 200 && p.text().matches(".ts").count() >= 3).then_some(())
        },
    );

    let player_log = root.path().join("player.log");
    let mut player = ffmpeg();
    player
        .args(["-loglevel", "info", "-rw_timeout", "2000000"])
        .args(["-i", &playlist, "-t", "30", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(File::create(&player_log).unwrap());
    let mut player = Running::spawn(&mut player);
    let browser_out = root.path().join("hls.js.out");
    let browser_err = root.path().join("hls.js.err");
    let mut browser = Command::new("node");
    hls_js(&mut browser, &playlist, BROWSER_SECONDS)
        .stdout(File::create(&browser_out).unwrap())
        .stderr(File::create(&browser_err).unwrap());
    let mut browser = Running::spawn(&mut browser);
    play_on(&player_log, 6.0);
    let before = balancer.connections();
    assert!(
        before[0] > 0,
        "nothing went to the first front end: {before:?}"
    );

    net.publisher.kill9();
    play_on(&player_log, 10.0);
    let status = wait_for("the player to finish", Duration::from_secs(60), || {
        player.child().try_wait().ok().flatten()
    });
    let log = std::fs::read_to_string(&player_log).unwrap();
    let failed = failures(&log);
    let after = balancer.connections();
    eprintln!(
        "connections to A, B before the kill {before:?}, after {after:?}; ffmpeg failed {} segment(s), decoded {:.1} s",
        failed.len(),
        decoded_seconds(&log)
    );
    assert!(
        after[1] > before[1],
        "nothing moved to the survivor: {after:?}"
    );
    assert!(status.success(), "the player failed:\n{log}");
    assert!(
        failed.len() <= 1,
        "more than one stall in ffmpeg:\n{}",
        failed.join("\n---\n")
    );
    assert!(decoded_seconds(&log) >= 29.0, "playback stopped:\n{log}");

    let watched = finished(
        &mut browser,
        &browser_out,
        &browser_err,
        Duration::from_secs(60),
    );
    eprintln!("hls.js: {watched:?}");
    assert_eq!(watched.fatal, None, "hls.js gave up: {watched:?}");
    assert!(
        watched.stalls <= 1,
        "more than one stall in hls.js: {watched:?}"
    );
    assert!(
        watched.played >= f64::from(BROWSER_SECONDS) - 6.0,
        "hls.js played only {:.1} s of {BROWSER_SECONDS}: {watched:?}",
        watched.played
    );
}

/// How long hls.js watches in the balancer test: from before the kill to well
/// after it.
const BROWSER_SECONDS: u32 = 25;

/// On a shared store a file kept on disk is acknowledged only once a box
/// holds a copy: with no box to take one, the push is refused, saying why,
/// after a bounded wait for a box to appear.
#[test]
fn a_file_no_box_can_take_is_not_acknowledged_on_a_shared_store() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_top(format!("store = {:?}", redis.url()))
        .start();
    let token = std::fs::read_to_string(root.path().join("publisher/admin.token")).unwrap();
    let big = root.path().join("film.bin");
    std::fs::write(&big, vec![3u8; 2 << 20]).unwrap();
    let asked = Instant::now();
    let out = run(Command::new(binary("dandelion"))
        .arg("push")
        .arg(&big)
        .args(["--to", &net.publisher.origin(), "--token", token.trim()])
        .env_remove("DANDELION_CONFIG"));
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("503") && said.contains("only once a box holds it"),
        "{said}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
}

/// A push that finds no box asks for a search round at once; pushes waiting
/// together must not turn into a stream of `SEARCH`es at the entrance (each
/// one a read of every box there): the early rounds come at most once a
/// second, however many pushes wait.
#[test]
fn pushes_waiting_for_a_box_search_at_most_once_a_second() {
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_top(format!("store = {:?}", redis.url()))
        .publisher_setting("search_interval = 60")
        .start();
    let token = std::fs::read_to_string(root.path().join("publisher/admin.token")).unwrap();
    let file = root.path().join("seg.ts");
    std::fs::write(&file, vec![5u8; 10_000]).unwrap();
    let searches = || -> u64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let metrics = rt
            .block_on(
                HttpClient::default().get(&format!("{}/metrics", net.publisher.origin()), &[]),
            )
            .unwrap();
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .find_map(|l| {
                l.strip_prefix("dandelion_searches_total ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    wait_for("the search at start", Duration::from_secs(20), || {
        (searches() >= 1).then_some(())
    });
    let before = searches();
    let started = Instant::now();
    let pushes: Vec<_> = (0..12)
        .map(|i| {
            Command::new(binary("dandelion"))
                .arg("push")
                .arg(&file)
                .args(["--as", &format!("a/seg{i}.ts")])
                .args(["--to", &net.publisher.origin(), "--token", token.trim()])
                .env_remove("DANDELION_CONFIG")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut push in pushes {
        assert!(
            !push.wait().unwrap().success(),
            "no box, no acknowledgement"
        );
    }
    let rounds = searches() - before;
    let allowed = started.elapsed().as_secs() + 1;
    assert!(
        (1..=allowed).contains(&rounds),
        "{rounds} search rounds in {:?} while 12 pushes waited",
        started.elapsed()
    );
}

/// The second front end of `net`'s publisher (its data under `root`): the
/// same identity, its own data directory and admin token; the caller adds the
/// same store.
/// Waits until the front end at `origin` knows `n` boxes.
fn wait_known_boxes(rt: &tokio::runtime::Runtime, http: &HttpClient, origin: &str, n: u64) {
    wait_for(
        &format!("{origin} to know {n} boxes"),
        Duration::from_secs(30),
        || {
            let h: Value = rt
                .block_on(http.get(&format!("{origin}/healthz"), &[]))
                .ok()?
                .json()
                .ok()?;
            (h["known_boxes"] == n).then_some(())
        },
    );
}

fn second_front_end(
    root: &std::path::Path,
    net: &dandelion_testkit::network::Network,
    lines: &[&str],
) -> DaemonBuilder {
    let dir = root.join("publisher-b");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root.join("publisher/publisher.key"),
        dir.join("publisher.key"),
    )
    .unwrap();
    let entrance_ws = format!(
        "ws://127.0.0.1:{}/dandelion/ws#{}",
        net.entrance.port(),
        entrance_id(&root.join("entrance"))
    );
    let mut b = DaemonBuilder::new("publisher", &dir)
        .set(format!("entrances = [{entrance_ws:?}]"))
        .set("search_interval = 1")
        .set("replace_after = 3");
    for line in lines {
        b = b.set(*line);
    }
    b
}

/// A file on the disk of the front end that took it, with a copy still to
/// make when that front end dies: the survivor fetches it back from the box
/// that holds it, keeps it only if its bytes are the file's, and makes the
/// copy. A box that gives back other bytes gets nothing placed from them.
#[test]
fn the_copies_a_dead_front_end_still_owed_are_made_from_a_boxs_copy() {
    let redis = RedisServer::start();
    let store = format!("store = {:?}", redis.url());
    let dead_after = "front_end_dead_after = \"2s\"";
    let root = tempfile::tempdir().unwrap();
    let mut net = NetworkBuilder::new(root.path(), 1)
        .publisher_top(store.clone())
        .publisher_setting(dead_after)
        .start();
    let b = second_front_end(root.path(), &net, &[dead_after])
        .top(store)
        .spawn();
    let (a_origin, b_origin) = (net.publisher.origin(), b.origin());
    let a_token = std::fs::read_to_string(root.path().join("publisher/admin.token")).unwrap();
    let b_token = std::fs::read_to_string(b.data_dir().join("admin.token")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let record = |origin: &str, token: &str| -> Option<Value> {
        rt.block_on(http.get(
            &format!("{origin}/api/files/film.bin"),
            &[("authorization", &format!("Bearer {}", token.trim()))],
        ))
        .ok()?
        .json()
        .ok()
    };
    wait_for("A to know the box", Duration::from_secs(30), || {
        let h: Value = rt
            .block_on(http.get(&format!("{a_origin}/healthz"), &[]))
            .ok()?
            .json()
            .ok()?;
        (h["known_boxes"] == 1).then_some(())
    });

    // Two copies asked for, one box: A acknowledges with one copy and owes the other.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = root.path().join("film.bin");
    std::fs::write(&file, &bytes).unwrap();
    let out = run(Command::new(binary("dandelion"))
        .arg("push")
        .arg(&file)
        .args([
            "--to",
            &a_origin,
            "--token",
            a_token.trim(),
            "--replicas",
            "2",
        ])
        .env_remove("DANDELION_CONFIG"));
    assert!(out.status.success(), "{out:?}");
    let first = record(&a_origin, &a_token).unwrap();
    assert_eq!(first["placements"].as_array().unwrap().len(), 1, "{first}");
    net.publisher.kill9();

    // The box's copy changed on its disk (same size, other bytes): what a
    // lying box would give back.
    let copy = find_file(&root.path().join("box-0/files"), "film.bin");
    let mut other = bytes.clone();
    other[1000] ^= 0xff;
    std::fs::write(&copy, &other).unwrap();

    // A box to take the second copy.
    let _second_box =
        dandelion_testkit::network::box_joining(root.path(), &net.entrance, "box-1").spawn();
    let refused = wait_for(
        "B to refuse the box's other bytes",
        Duration::from_secs(30),
        || {
            let r = record(&b_origin, &b_token)?;
            r["failures"]
                .as_array()?
                .iter()
                .filter_map(|f| f["reason"].as_str())
                .find(|reason| reason.contains("sent other bytes"))
                .map(str::to_owned)
        },
    );
    eprintln!("B refused: {refused}");
    let r = record(&b_origin, &b_token).unwrap();
    assert_eq!(r["placements"].as_array().unwrap().len(), 1, "{r}");

    // The box's copy is the file again: B fetches it and makes the copy.
    std::fs::write(&copy, &bytes).unwrap();
    let placements = wait_for("B to make the copy A owed", Duration::from_secs(30), || {
        let r = record(&b_origin, &b_token)?;
        let p = r["placements"].as_array()?.clone();
        (p.len() == 2).then_some(p)
    });
    for p in &placements {
        let url = p["url"].as_str().unwrap();
        let got = rt.block_on(http.get(url, &[])).unwrap();
        assert_eq!(got.status.as_u16(), 200, "{url}");
        assert!(got.body == bytes, "{url} serves other bytes");
    }
    assert!(b.log().contains("fetched back from a box"), "{}", b.log());
}

/// The one file named `name` under `dir`, at any depth.
fn find_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                found.push(path);
            }
        }
    }
    assert_eq!(found.len(), 1, "{name} under {}: {found:?}", dir.display());
    found.remove(0)
}
