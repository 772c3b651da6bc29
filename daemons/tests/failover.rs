//! Boxes dying during a live stream, each box on a host of its own (network
//! namespaces, `dandelion_testkit::hosts`): one killed, one frozen (SIGSTOP),
//! one whose cable is cut. A player keeps playing, and the publisher's
//! redirects avoid each dead box within 3 s.
//!
//! Two players watch: ffmpeg, which gives up on a segment it cannot fetch in
//! time and goes on with the next (a stall shows as a failed segment in its
//! log), and hls.js in headless Chromium, which retries and reports its stalls.
//! Needs root and iproute2 for the namespaces (skipped, saying so, without),
//! ffmpeg, and Chromium with the npm packages in `tests/browser`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dandelion_testkit::browser::{finished, hls_js, require_hls_js};
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::hosts::{Host, Lan};
use dandelion_testkit::media::{
    QUIET, decoded_seconds, failures, ffmpeg, live_encoder, play_on, require_ffmpeg,
};
use dandelion_testkit::network::{JOIN_TOKEN, entrance_id, identity};
use dandelion_testkit::process::{Running, binary, run};
use dandelion_testkit::wait_for;

/// Every daemon and the pusher: tokens cross the test LAN in clear.
const PLAIN: &str = "insecure_plain_tokens = true";

/// How long each box's death may keep viewers going to it.
const WITHIN: Duration = Duration::from_secs(3);

fn curl(host: &Host) -> Command {
    let mut c = host.command("curl");
    c.args(["-sS", "--max-time", "2"]);
    c
}

fn text_on(host: &Host, url: &str) -> Option<String> {
    let out = run(curl(host).arg("-f").arg(url));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where a viewer on `host` is sent for `url`: the redirect's location, or
/// `None` for any other answer (the publisher serving the bytes itself).
fn redirect_on(host: &Host, url: &str) -> Option<String> {
    let out = run(curl(host)
        .args(["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"])
        .arg(url));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, location) = text.split_once(' ')?;
    (code == "302").then(|| location.to_owned())
}

/// One look at where the playlist's segments send viewers: when, and each
/// redirect's location.
struct Look {
    at: Instant,
    locations: Vec<String>,
}

/// Asks for every segment in the live playlist, over and over, until `stop`.
fn watch_redirects(core: Host, publisher: String, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<Look>>> {
    let looks: Arc<Mutex<Vec<Look>>> = Arc::default();
    let out = looks.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(playlist) = text_on(&core, &format!("{publisher}/live/index.m3u8")) else {
                continue;
            };
            let at = Instant::now();
            let locations = playlist
                .lines()
                .filter(|l| l.ends_with(".ts"))
                .filter_map(|seg| redirect_on(&core, &format!("{publisher}/live/{seg}")))
                .collect();
            out.lock().unwrap().push(Look { at, locations });
        }
    });
    looks
}

/// The box a viewer is being sent to now, other than the `dead` ones.
fn current_target(looks: &Mutex<Vec<Look>>, boxes: &[Daemon], dead: &[usize]) -> usize {
    wait_for("a redirect to a live box", Duration::from_secs(10), || {
        let looks = looks.lock().unwrap();
        let location = looks.last()?.locations.last()?.clone();
        boxes
            .iter()
            .position(|b| location.starts_with(&b.origin()))
            .filter(|i| !dead.contains(i))
    })
}

/// How long after `since` viewers were still sent to `origin`: the time of the
/// first look from which on no look named it, once a look after that exists.
fn sent_for(looks: &Mutex<Vec<Look>>, origin: &str, since: Instant) -> Duration {
    wait_for(
        "redirects to avoid the dead box",
        Duration::from_secs(15),
        || {
            let looks = looks.lock().unwrap();
            let after: Vec<&Look> = looks.iter().filter(|l| l.at >= since).collect();
            let last_bad = after
                .iter()
                .rposition(|l| l.locations.iter().any(|u| u.starts_with(origin)));
            let first_good = last_bad.map_or(0, |i| i + 1);
            // Two clean looks in a row, so one lucky look does not count.
            (after.len() >= first_good + 2).then(|| after[first_good].at - since)
        },
    )
}

#[test]
fn a_live_stream_plays_on_while_boxes_die_and_redirects_avoid_each_within_three_seconds() {
    require_ffmpeg();
    require_hls_js();
    let Some(mut lan) = Lan::new("failover") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let core = lan.host("core");
    let box_hosts: Vec<Host> = (0..4).map(|i| lan.host(&format!("box{i}"))).collect();

    let publisher_dir = root.path().join("publisher");
    let (_, key) = identity(&publisher_dir, "publisher");
    let entrance_dir = root.path().join("entrance");
    let id = entrance_id(&entrance_dir);
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .on(&core)
        .top(PLAIN)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
        .spawn();
    let entrance_ws = format!("ws://{}/dandelion/ws#{id}", entrance.addr());
    let mut boxes: Vec<Daemon> = box_hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            DaemonBuilder::new("box", &root.path().join(format!("box-{i}")))
                .on(host)
                .top(PLAIN)
                .set(format!("entrances = [{entrance_ws:?}]"))
                .set(format!("join_token = {JOIN_TOKEN:?}"))
                .set(format!("publisher_keys = [{key:?}]"))
                .set("heartbeat_interval = 1")
                .spawn()
        })
        .collect();
    let publisher = DaemonBuilder::new("publisher", &publisher_dir)
        .on(&core)
        .top(PLAIN)
        .set(format!("entrances = [{entrance_ws:?}]"))
        .set("search_interval = 1")
        .spawn();
    let origin = publisher.origin();
    wait_for(
        "the publisher to know four boxes",
        Duration::from_secs(40),
        || {
            let h: serde_json::Value =
                serde_json::from_str(&text_on(&core, &format!("{origin}/healthz"))?).ok()?;
            (h["known_boxes"] == 4).then_some(())
        },
    );

    let live = root.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let mut encoder = ffmpeg();
    live_encoder(&mut encoder, &live, &root.path().join("encoder.log"));
    let _encoder = Running::spawn(&mut encoder);
    let pusher_config = root.path().join("pusher.toml");
    std::fs::write(&pusher_config, format!("{PLAIN}\n")).unwrap();
    let token = std::fs::read_to_string(publisher_dir.join("admin.token")).unwrap();
    let mut watcher = core.command(binary("dandelion"));
    watcher
        .arg("--config")
        .arg(&pusher_config)
        .arg("push")
        .arg("--watch")
        .arg(&live)
        .args(["--to", &origin, "--token", token.trim()])
        .args(["--replicas", "2", "--ttl", "60s"])
        .env_remove("DANDELION_CONFIG")
        .stdout(File::create(root.path().join("watch.out")).unwrap())
        .stderr(File::create(root.path().join("watch.err")).unwrap());
    let _watcher = Running::spawn(&mut watcher);
    wait_for(
        "a playlist listing three segments",
        Duration::from_secs(30),
        || {
            let p = text_on(&core, &format!("{origin}/live/index.m3u8"))?;
            (p.matches(".ts").count() >= 3).then_some(())
        },
    );

    let player_log = root.path().join("player.log");
    let mut player = core.command("ffmpeg");
    player
        .args(QUIET)
        .args(["-loglevel", "info", "-rw_timeout", "2000000"])
        .args(["-i", &format!("{origin}/live/index.m3u8")])
        .args(["-t", "40", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(File::create(&player_log).unwrap());
    let mut player = Running::spawn(&mut player);
    let browser_out = root.path().join("hls.js.out");
    let mut browser = core.command("node");
    hls_js(
        &mut browser,
        &format!("{origin}/live/index.m3u8"),
        BROWSER_SECONDS,
    )
    .stdout(File::create(&browser_out).unwrap())
    .stderr(File::create(root.path().join("hls.js.err")).unwrap());
    let mut browser = Running::spawn(&mut browser);
    let stop = Arc::new(AtomicBool::new(false));
    let looks = watch_redirects(core.clone(), origin.clone(), stop.clone());
    play_on(&player_log, 6.0);

    let mut dead = Vec::new();
    let mut report = Vec::new();
    for how in ["kill -9", "SIGSTOP", "cable cut"] {
        let victim = current_target(&looks, &boxes, &dead);
        let victim_origin = boxes[victim].origin();
        match how {
            "kill -9" => boxes[victim].kill9(),
            "SIGSTOP" => {
                let pid = boxes[victim].pid().unwrap().to_string();
                assert!(
                    run(Command::new("kill").args(["-STOP", &pid]))
                        .status
                        .success()
                );
            }
            _ => box_hosts[victim].cut(),
        }
        let since = Instant::now();
        dead.push(victim);
        let sent = sent_for(&looks, &victim_origin, since);
        report.push(format!("{how}: {:.2} s", sent.as_secs_f64()));
        assert!(
            sent <= WITHIN,
            "{how}: viewers were still sent to the dead box for {sent:?}"
        );
        play_on(&player_log, 8.0);
    }
    let status = wait_for("the player to finish", Duration::from_secs(60), || {
        player.child().try_wait().ok().flatten()
    });
    stop.store(true, Ordering::Relaxed);
    let log = std::fs::read_to_string(&player_log).unwrap();
    let tail = || log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
    assert!(status.success(), "the player failed:\n{}", tail());
    let failed = failures(&log);
    eprintln!(
        "redirects avoided the dead box after {}; the player failed {} segment(s), decoded {:.1} s",
        report.join(", "),
        failed.len(),
        decoded_seconds(&log)
    );
    assert!(
        failed.len() <= 3,
        "more than one stall per dead box:\n{}",
        failed.join("\n---\n")
    );
    assert!(
        decoded_seconds(&log) >= 39.0,
        "playback stopped:\n{}",
        tail()
    );

    let watched = finished(
        &mut browser,
        &browser_out,
        &root.path().join("hls.js.err"),
        Duration::from_secs(90),
    );
    eprintln!("hls.js: {watched:?}");
    assert_eq!(watched.fatal, None, "hls.js gave up: {watched:?}");
    assert!(
        watched.stalls <= 3,
        "more than one stall per dead box in hls.js: {watched:?}"
    );
    assert!(
        watched.played >= f64::from(BROWSER_SECONDS) - 10.0,
        "hls.js played only {:.1} s of {BROWSER_SECONDS}: {watched:?}",
        watched.played
    );
}

/// How long hls.js watches: from before the first death to after the last.
const BROWSER_SECONDS: u32 = 45;
