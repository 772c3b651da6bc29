//! A live HLS stream end to end with real processes: ffmpeg encodes into a
//! directory, `dandelion push --watch` pushes it to a publisher with an entrance
//! and three boxes, and ffmpeg as the player decodes it through the publisher,
//! each segment fetched from a box by redirect.
//!
//! Needs `ffmpeg` on the PATH (Debian's package; `.ci/run` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::media::{decoded_seconds, ffmpeg, live_encoder, push_watch, require_ffmpeg};
use dandelion_testkit::process::Running;
use dandelion_testkit::{counter_sum, wait_for};
use serde_json::Value;

const JOIN_TOKEN: &str = "live-test-join-token";

#[test]
fn a_live_hls_stream_plays_through_the_publisher_with_every_segment_from_a_box() {
    require_ffmpeg();
    let started = Instant::now();
    let root = tempfile::tempdir().unwrap();
    let publisher_dir = root.path().join("publisher");
    let (_, key) = dandelion_testkit::network::identity(&publisher_dir, "publisher");
    let entrance_dir = root.path().join("entrance");
    let entrance_id = dandelion_testkit::network::entrance_id(&entrance_dir);
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
        .spawn();
    let entrance_ws = format!(
        "ws://127.0.0.1:{}/dandelion/ws#{entrance_id}",
        entrance.port()
    );
    let boxes: Vec<Daemon> = (0..3)
        .map(|i| {
            DaemonBuilder::new("box", &root.path().join(format!("box-{i}")))
                .set(format!("entrances = [{entrance_ws:?}]"))
                .set(format!("join_token = {JOIN_TOKEN:?}"))
                .set(format!("publisher_keys = [{key:?}]"))
                .set("heartbeat_interval = 1")
                .spawn()
        })
        .collect();
    let publisher = DaemonBuilder::new("publisher", &publisher_dir)
        .set(format!("entrances = [{entrance_ws:?}]"))
        .set("search_interval = 1")
        .spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let get = |url: &str| rt.block_on(http.get(url, &[])).ok();
    let entrance_auth = entrance.admin_auth();
    wait_for("three active boxes", Duration::from_secs(30), || {
        let list: Value = rt
            .block_on(http.get(
                &format!("{}/api/boxes", entrance.origin()),
                &[("authorization", &entrance_auth)],
            ))
            .ok()?
            .json()
            .ok()?;
        let active = list
            .as_array()?
            .iter()
            .filter(|b| b["state"] == "active")
            .count();
        (active == 3).then_some(())
    });
    wait_for(
        "the publisher to know three boxes",
        Duration::from_secs(30),
        || {
            let h: Value = get(&format!("{}/healthz", publisher.origin()))?
                .json()
                .ok()?;
            (h["known_boxes"] == 3).then_some(())
        },
    );

    // The live encoder: one-second segments, six in the playlist, old ones deleted.
    let live = root.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let mut encoder = ffmpeg();
    live_encoder(&mut encoder, &live, &root.path().join("encoder.log"));
    let _encoder = Running::spawn(&mut encoder);

    let token = std::fs::read_to_string(publisher_dir.join("admin.token")).unwrap();
    let mut watcher = push_watch(&live, &publisher.origin(), &token, Some(2), root.path());
    let _watcher = Running::spawn(&mut watcher);

    let playlist_url = format!("{}/live/index.m3u8", publisher.origin());
    wait_for(
        "the publisher to serve a playlist listing three segments",
        Duration::from_secs(20),
        || {
            let r = get(&playlist_url)?;
            (r.status == 200 && r.text().matches(".ts").count() >= 3).then_some(())
        },
    );

    // The player: a stock ffmpeg pointed at the publisher.
    let player_log = root.path().join("player.log");
    let mut player = ffmpeg();
    player
        .args(["-loglevel", "info", "-i", &playlist_url])
        .args(["-t", "31", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(File::create(&player_log).unwrap());
    let mut player = Running::spawn(&mut player);
    let status = wait_for("the player to finish", Duration::from_secs(50), || {
        player.child().try_wait().ok().flatten()
    });
    let log = std::fs::read_to_string(&player_log).unwrap();
    let context = || {
        format!(
            "player:\n{}\nwatch:\n{}{}",
            log.lines().rev().take(30).collect::<Vec<_>>().join("\n"),
            std::fs::read_to_string(root.path().join("watch.out")).unwrap_or_default(),
            std::fs::read_to_string(root.path().join("watch.err")).unwrap_or_default()
        )
    };
    assert!(status.success(), "the player failed\n{}", context());
    let decoded = decoded_seconds(&log);
    assert!(decoded >= 30.0, "decoded only {decoded} s\n{}", context());

    let segments = log
        .lines()
        .filter(|l| l.contains("Opening '") && l.contains(".ts' for reading"))
        .count();
    assert!(
        segments >= 25,
        "the player fetched {segments} segments\n{}",
        context()
    );
    let metrics = get(&format!("{}/metrics", publisher.origin()))
        .unwrap()
        .text();
    let origin = counter_sum(&metrics, "dandelion_origin_bytes_total");
    let redirects = counter_sum(&metrics, "dandelion_redirects_total");
    let served: f64 = boxes
        .iter()
        .map(|b| {
            counter_sum(
                &get(&format!("{}/metrics", b.origin())).unwrap().text(),
                "dandelion_box_served_requests_total",
            )
        })
        .sum();
    eprintln!(
        "decoded {decoded} s; {segments} segments; {redirects} redirects; boxes served {served} \
         requests; origin bytes {origin}; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        origin,
        0.0,
        "segments were served by the publisher\n{}",
        context()
    );
    assert!(
        redirects >= segments as f64,
        "{redirects} redirects < {segments} segments"
    );
    assert!(
        served >= segments as f64,
        "boxes served {served} < {segments} segments"
    );
}

/// An encoder rewrites its playlist every segment, also while `push --watch`
/// waits for the previous one's segments to be placed (here forever: the
/// network has no box). What the publisher serves as the playlist must only
/// ever list segments it has: a listed segment it refuses is a failed
/// segment in every player.
#[test]
fn a_watched_playlist_never_lists_a_segment_the_publisher_does_not_have() {
    const SEGMENTS: u32 = 40;
    let root = tempfile::tempdir().unwrap();
    let net = dandelion_testkit::network::NetworkBuilder::new(root.path(), 0).start();
    let publisher = &net.publisher;
    let publisher_dir = publisher.data_dir().to_owned();

    let live = root.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let token = std::fs::read_to_string(publisher_dir.join("admin.token")).unwrap();
    let mut watcher = push_watch(&live, &publisher.origin(), &token, None, root.path());
    let _watcher = Running::spawn(&mut watcher);

    // A fast encoder: a segment every 150 ms, six listed, the oldest deleted,
    // the playlist replaced by rename as ffmpeg does. Its pace stands in for
    // real time; nothing waits on it.
    let dir = live.clone();
    let encoder = std::thread::spawn(move || {
        for n in 0..SEGMENTS {
            std::fs::write(dir.join(format!("seg{n}.ts")), vec![n as u8; 4000]).unwrap();
            let first = n.saturating_sub(5);
            let mut text = format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:{first}\n"
            );
            for k in first..=n {
                text.push_str(&format!("#EXTINF:0.150,\nseg{k}.ts\n"));
            }
            std::fs::write(dir.join("index.m3u8.tmp"), text).unwrap();
            std::fs::rename(dir.join("index.m3u8.tmp"), dir.join("index.m3u8")).unwrap();
            if n >= 6 {
                let _ = std::fs::remove_file(dir.join(format!("seg{}.ts", n - 6)));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let get = |url: &str| rt.block_on(http.get(url, &[])).ok();
    let playlist_url = format!("{}/live/index.m3u8", publisher.origin());
    let mut refused = Vec::new();
    let mut looks = 0;
    let last = format!("seg{}.ts", SEGMENTS - 1);
    wait_for(
        "the publisher's playlist to list the last segment",
        Duration::from_secs(60),
        || {
            let playlist = get(&playlist_url).filter(|r| r.status == 200)?.text();
            looks += 1;
            for seg in playlist.lines().filter(|l| l.ends_with(".ts")) {
                let status = get(&format!("{}/live/{seg}", publisher.origin())).map(|r| r.status);
                if status.is_none_or(|s| s != 200) {
                    refused.push(format!("{seg}: {status:?}"));
                }
            }
            playlist.contains(&last).then_some(())
        },
    );
    encoder.join().unwrap();
    assert!(looks >= 5, "only {looks} looks at the playlist");
    assert!(
        refused.is_empty(),
        "the playlist listed segments the publisher refused: {refused:?}\nwatch:\n{}",
        std::fs::read_to_string(root.path().join("watch.err")).unwrap_or_default()
    );
}
