//! Files flow end to end through real processes: an entrance, three boxes and a
//! publisher, each a `dandelion` process with its own port and data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::Daemon;
use dandelion_testkit::network::NetworkBuilder;
use dandelion_testkit::process::{binary, run};
use dandelion_testkit::{files_under, wait_for};
use serde_json::Value;

struct Network {
    entrance: Daemon,
    boxes: Vec<Daemon>,
    publisher: Daemon,
    rt: tokio::runtime::Runtime,
    http: HttpClient,
}

impl Network {
    /// `GET url`, with the admin token of the daemon it names: the APIs that
    /// list boxes and placements are the operator's.
    fn get(&self, url: &str) -> dandelion_core::http::Response {
        let daemon = std::iter::once(&self.entrance)
            .chain(std::iter::once(&self.publisher))
            .chain(&self.boxes)
            .find(|d| url.starts_with(&d.origin()));
        let auth = daemon.map(Daemon::admin_auth);
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| ("authorization", a))
            .into_iter()
            .collect();
        self.rt.block_on(self.http.get(url, &headers)).unwrap()
    }

    fn json(&self, url: &str) -> Value {
        self.get(url).json().unwrap()
    }
}

fn start(root: &Path, boxes: usize) -> Network {
    start_with(root, boxes, false, &[])
}

fn start_located(root: &Path, boxes: usize, located: bool) -> Network {
    start_with(root, boxes, located, &[])
}

/// With `located`, the entrance and the publisher share a GeoIP database that
/// puts 127.0.0.2/.3/.4 in Taipei, Tokyo and London, and box `i` connects from
/// 127.0.0.(2 + i), so boxes and viewers have real places. `publisher` lines go
/// into the publisher's section of its config.
fn start_with(root: &Path, boxes: usize, located: bool, publisher: &[&str]) -> Network {
    let mut builder = NetworkBuilder::new(root, boxes);
    if located {
        builder = builder.located();
    }
    for line in publisher {
        builder = builder.publisher_setting(*line);
    }
    network(builder.start())
}

fn network(started: dandelion_testkit::network::Network) -> Network {
    Network {
        entrance: started.entrance,
        boxes: started.boxes,
        publisher: started.publisher,
        rt: tokio::runtime::Runtime::new().unwrap(),
        http: HttpClient::default(),
    }
}

/// Deterministic bytes that no two tests share.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn push(net: &Network, file: &Path, extra: &[&str]) -> std::process::Output {
    let token = std::fs::read_to_string(net.publisher.data_dir().join("admin.token")).unwrap();
    let mut cmd = Command::new(binary("dandelion"));
    cmd.arg("push")
        .arg(file)
        .args(["--to", &net.publisher.origin(), "--token", token.trim()])
        .args(extra)
        .env_remove("DANDELION_CONFIG");
    run(&mut cmd)
}

/// Pushes `bytes` under `name` with `extra` flags, through a file in `root`;
/// the push must succeed.
fn push_bytes(net: &Network, root: &Path, name: &str, bytes: &[u8], extra: &[&str]) {
    let file = root.join(name.replace('/', "-"));
    std::fs::write(&file, bytes).unwrap();
    let mut args = vec!["--as", name];
    args.extend_from_slice(extra);
    let out = push(net, &file, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_pushed_file_lands_on_k_boxes_and_is_fetched_through_a_redirect() {
    let root = tempfile::tempdir().unwrap();
    let net = start(root.path(), 3);
    let boxes_url = format!("{}/api/boxes", net.entrance.origin());
    wait_for(
        "three active boxes at the entrance",
        Duration::from_secs(30),
        || {
            let list = net.json(&boxes_url);
            let active = list
                .as_array()?
                .iter()
                .filter(|b| b["state"] == "active")
                .count();
            (active == 3).then_some(())
        },
    );
    // The publisher ranks what the entrance listed, every factor shown.
    let ranking_url = format!("{}/api/ranking", net.publisher.origin());
    let ranking = wait_for(
        "the publisher to rank three boxes",
        Duration::from_secs(30),
        || {
            let v = net.json(&ranking_url);
            (v.as_array()?.len() == 3).then_some(v)
        },
    );
    for row in ranking.as_array().unwrap() {
        let score = row["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0, "{row}");
        assert!(
            row["reliability"].as_f64().is_some() && row["nearness"].as_f64().is_some(),
            "{row}"
        );
    }

    let bytes = content(300_000, 42);
    let file = root.path().join("seg1.ts");
    std::fs::write(&file, &bytes).unwrap();
    let out = push(&net, &file, &["--replicas", "2", "--ttl", "120s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With no public_url, players are given the address the push reached.
    let queued = format!(
        "queued seg1.ts (300000 bytes); players: {}/seg1.ts",
        net.publisher.origin()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&queued),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let status_url = format!("{}/api/files/seg1.ts", net.publisher.origin());
    let status = wait_for(
        "the file to be placed on 2 boxes",
        Duration::from_secs(30),
        || {
            let v = net.json(&status_url);
            (v["state"] == "placed" && v["placements"].as_array()?.len() == 2).then_some(v)
        },
    );
    let holders: Vec<&str> = status["placements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["box"].as_str().unwrap())
        .collect();
    assert_ne!(holders[0], holders[1], "two distinct boxes");
    assert!(
        status["placements"][0]["why"]
            .as_str()
            .unwrap()
            .contains("scored")
    );

    let response = net.get(&format!("{}/seg1.ts", net.publisher.origin()));
    assert_eq!(response.status, 302);
    assert!(response.headers.get("repr-digest").is_some());
    assert_eq!(response.headers["access-control-allow-origin"], "*");
    let location = response.headers["location"].to_str().unwrap().to_owned();
    assert!(
        net.boxes.iter().any(|b| location.starts_with(&b.origin())),
        "{location}"
    );
    let fetched = net.get(&location);
    assert_eq!(fetched.status, 200);
    assert!(
        fetched.body == bytes,
        "the box serves exactly the pushed bytes"
    );

    let missing = net.get(&format!("{}/nope.ts", net.publisher.origin()));
    assert_eq!(missing.status, 404);
}

#[test]
fn bad_pushes_are_refused_and_queue_nothing() {
    let root = tempfile::tempdir().unwrap();
    let net = start(root.path(), 1);
    let out = push(&net, &root.path().join("missing.ts"), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = root.path().join("ok.ts");
    std::fs::write(&file, b"x").unwrap();
    let out = push(&net, &file, &["--as", "../escape.ts"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = push(&net, &file, &["--ttl", "0s"]);
    assert!(!out.status.success());
    let listed = net.json(&format!("{}/api/files", net.publisher.origin()));
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "nothing was queued: {listed}"
    );
}

fn admin_token(net: &Network) -> String {
    std::fs::read_to_string(net.publisher.data_dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Waits until `n` boxes are active at the entrance and live at the publisher:
/// a push now has boxes to go to.
fn wait_active_boxes(net: &Network, n: usize) {
    wait_entrance_active(net, n);
    // Active at the entrance is not yet chosen by the publisher: SEARCH hands a
    // box out only once its reachability check passed, and the publisher
    // learns it at its next search. A push before then finds no box.
    wait_publisher_knows(net, n);
}

/// Waits until the entrance lists `n` boxes as active.
fn wait_entrance_active(net: &Network, n: usize) {
    let boxes_url = format!("{}/api/boxes", net.entrance.origin());
    wait_for(
        &format!("{n} active boxes at the entrance"),
        Duration::from_secs(30),
        || {
            let list = net.json(&boxes_url);
            let active = list
                .as_array()?
                .iter()
                .filter(|b| b["state"] == "active")
                .count();
            (active == n).then_some(())
        },
    );
}

/// Where the publisher redirects a viewer asking for `name`, if it redirects.
fn redirect_location(net: &Network, name: &str) -> Option<String> {
    let url = format!("{}/{name}", net.publisher.origin());
    let response = net.rt.block_on(net.http.get(&url, &[])).ok()?;
    if response.status != 302 {
        return None;
    }
    Some(response.headers.get("location")?.to_str().ok()?.to_owned())
}

/// Fetches `name` through the publisher: a 302 to a box, then the bytes from
/// that box. Returns the box's URL and the body.
fn fetch_via_redirect(net: &Network, name: &str) -> Option<(String, Vec<u8>)> {
    let location = redirect_location(net, name)?;
    fetch_from(net, location)
}

fn fetch_from(net: &Network, location: String) -> Option<(String, Vec<u8>)> {
    let fetched = net.rt.block_on(net.http.get(&location, &[])).ok()?;
    (fetched.status == 200).then(|| (location, fetched.body.to_vec()))
}

#[test]
fn a_publisher_killed_in_the_middle_of_100_pushes_loses_no_acknowledged_file() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const FILES: usize = 100;
    let root = tempfile::tempdir().unwrap();
    let mut net = start(root.path(), 3);
    wait_active_boxes(&net, 3);
    let token = admin_token(&net);
    let origin = net.publisher.origin();
    // Every tenth file is over one piece (1 MiB): it is cut through, recorded
    // in flight rather than queued, and must come back from a crash as well.
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            let len = if i % 10 == 5 {
                1_500_000 + i
            } else {
                4_000 + i * 37
            };
            (format!("crash/seg{i:03}.ts"), content(len, i as u64 + 1000))
        })
        .collect();

    // The pusher sends the files one after another, as a client would, and keeps
    // which ones were acknowledged. A push that finds nobody listening is tried
    // again for a while (a client retries); one cut off mid-answer is not.
    let answered = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let files = files.clone();
        let answered = answered.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let http = HttpClient::new(Duration::from_secs(5));
            let auth = format!("Bearer {token}");
            let mut acked = Vec::new();
            let mut refused = Vec::new();
            let mut retries = 0;
            for (name, bytes) in &files {
                let url = format!("{origin}/api/files/{name}?ttl=300s&replicas=2");
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    let result = rt.block_on(http.request(
                        http::Method::PUT,
                        &url,
                        &[("authorization", &auth)],
                        bytes.clone().into(),
                    ));
                    match result {
                        Ok(r) if r.status == 202 => {
                            acked.push(name.clone());
                            break;
                        }
                        Ok(r) => {
                            refused.push(format!("{name}: {} {}", r.status, r.text()));
                            break;
                        }
                        // Connection refused while the publisher is down: retry.
                        Err(_) if std::time::Instant::now() < deadline => {
                            retries += 1;
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(_) => break,
                    }
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            (acked, refused, retries)
        })
    };

    wait_for(
        "a third of the pushes to be answered",
        Duration::from_secs(60),
        || (answered.load(Ordering::SeqCst) >= FILES / 3).then_some(()),
    );
    // kill -9 in the middle: pushes are arriving and files are being sent.
    net.publisher.restart();
    let (acked, refused, retries) = pusher.join().unwrap();
    assert!(refused.is_empty(), "pushes refused: {refused:?}");
    // Otherwise the kill came after the last push and proved nothing.
    assert!(retries > 0, "no push found the publisher down");
    assert!(
        acked.len() >= FILES / 2,
        "most pushes should be acknowledged, got {}",
        acked.len()
    );

    eprintln!(
        "{} of {FILES} pushes acknowledged, {retries} retried while the publisher was down",
        acked.len()
    );
    let by_name: std::collections::HashMap<&str, &Vec<u8>> =
        files.iter().map(|(n, b)| (n.as_str(), b)).collect();
    for name in &acked {
        let status_url = format!("{}/api/files/{name}", net.publisher.origin());
        wait_for(
            &format!("{name} to be placed after the crash"),
            Duration::from_secs(60),
            || {
                let auth = net.publisher.admin_auth();
                let v = net
                    .rt
                    .block_on(net.http.get(&status_url, &[("authorization", &auth)]))
                    .ok()?;
                let v: Value = v.json().ok()?;
                (v["state"] == "placed").then_some(())
            },
        );
        // "Ends up" fetchable: a redirect may briefly lack a live holder while the
        // restarted publisher re-learns its boxes.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let fetched = loop {
            match fetch_via_redirect(&net, name) {
                Some(got) => break Some(got),
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                None => break None,
            }
        };
        let (location, body) = fetched.unwrap_or_else(|| {
            let log = net.publisher.log();
            let notes: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("lost") || l.contains("ended"))
                .collect();
            panic!(
                "{name} is not served through a redirect: {}\n{}",
                net.json(&status_url),
                notes.join("\n")
            )
        });
        assert!(
            net.boxes.iter().any(|b| location.starts_with(&b.origin())),
            "{location}"
        );
        assert!(
            body == *by_name[name.as_str()],
            "{name}: the box serves other bytes than were pushed"
        );
    }
}

/// How the box holding files goes away.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loss {
    /// `kill -9`: the kernel resets its connections, so the publisher notices
    /// at once on its open publish session.
    Killed,
    /// SIGSTOP: a hung device or a cut cable — connections stay open and say
    /// nothing, so only the publisher's serve probes and the entrance expiring
    /// it (expire_box_time = 10 s) tell.
    Frozen,
}

#[test]
fn files_on_a_killed_box_are_placed_again_and_viewers_follow() {
    box_goes_away(Loss::Killed);
}

#[test]
fn files_on_a_frozen_box_are_placed_again_once_the_entrance_expires_it() {
    box_goes_away(Loss::Frozen);
}

fn box_goes_away(loss: Loss) {
    let root = tempfile::tempdir().unwrap();
    let mut net = start(root.path(), 3);
    wait_active_boxes(&net, 3);
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("moving/seg{i}.ts"),
                content(50_000 + i * 11, i as u64 + 7),
            )
        })
        .collect();
    for (name, bytes) in &files {
        push_bytes(
            &net,
            root.path(),
            name,
            bytes,
            &["--replicas", "1", "--ttl", "300s"],
        );
    }
    let holder_of = |net: &Network, name: &str| -> Option<String> {
        let v = net.json(&format!("{}/api/files/{name}", net.publisher.origin()));
        (v["state"] == "placed")
            .then(|| v["placements"][0]["url"].as_str().map(str::to_owned))
            .flatten()
    };
    let before: Vec<String> = files
        .iter()
        .map(|(name, _)| {
            wait_for(
                &format!("{name} to be placed"),
                Duration::from_secs(30),
                || holder_of(&net, name),
            )
        })
        .collect();
    // Kill the box holding the first file, with whatever else it holds.
    let victim = net
        .boxes
        .iter()
        .position(|b| before[0].starts_with(&b.origin()))
        .expect("the first file is on one of the boxes");
    let victim_origin = net.boxes[victim].origin();
    let on_victim: Vec<usize> = (0..files.len())
        .filter(|&i| before[i].starts_with(&victim_origin))
        .collect();
    match loss {
        Loss::Killed => net.boxes[victim].kill9(),
        Loss::Frozen => {
            let pid = net.boxes[victim].pid().unwrap();
            let status = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    // The entrance expires it (expire_box_time = 10 s); the publisher re-places
    // what it held and redirects viewers to the new copies.
    for &i in &on_victim {
        let (name, bytes) = &files[i];
        let (location, body) = wait_for(
            &format!("{name} to be re-placed off the lost box"),
            Duration::from_secs(45),
            || {
                // Never fetch from the frozen box: the request would hang.
                let location = redirect_location(&net, name)?;
                if location.starts_with(&victim_origin) {
                    return None;
                }
                fetch_from(&net, location)
            },
        );
        assert!(
            net.boxes
                .iter()
                .enumerate()
                .any(|(j, b)| j != victim && location.starts_with(&b.origin())),
            "{location}"
        );
        assert!(body == *bytes, "{name}: the new copy has other bytes");
        let v = net.json(&format!("{}/api/files/{name}", net.publisher.origin()));
        assert_eq!(v["state"], "placed", "{v}");
        assert!(
            v["placements"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| !p["url"].as_str().unwrap().starts_with(&victim_origin)),
            "{v}"
        );
    }
    // Files on the other boxes stayed where they were.
    for i in (0..files.len()).filter(|i| !on_victim.contains(i)) {
        assert_eq!(
            holder_of(&net, &files[i].0).as_deref(),
            Some(before[i].as_str())
        );
    }
}

/// A box that stops serving leaves viewers' redirects within 3 s, killed (its
/// sessions drop, and its entrance tells the watching publisher at once) or
/// frozen (only the publisher's serve probes can tell: every second, for a box
/// viewers are being sent to). Prints the times, for docs/performance.md.
#[test]
fn a_killed_or_frozen_box_leaves_redirects_within_three_seconds() {
    let root = tempfile::tempdir().unwrap();
    let mut net = start(root.path(), 3);
    wait_active_boxes(&net, 3);
    let name = "steady/all.ts";
    let bytes = content(40_000, 71);
    push_bytes(
        &net,
        root.path(),
        name,
        &bytes,
        &["--replicas", "3", "--ttl", "300s"],
    );
    wait_for("three copies", Duration::from_secs(30), || {
        let v = net.json(&format!("{}/api/files/{name}", net.publisher.origin()));
        (v["placements"].as_array()?.len() == 3).then_some(())
    });
    for loss in [Loss::Killed, Loss::Frozen] {
        // Viewers keep asking, as players do, and are sent to one box.
        let location = wait_for("a redirect", Duration::from_secs(10), || {
            redirect_location(&net, name)
        });
        let victim = net
            .boxes
            .iter()
            .position(|b| location.starts_with(&b.origin()))
            .expect("the redirect names a box");
        let victim_origin = net.boxes[victim].origin();
        match loss {
            Loss::Killed => net.boxes[victim].kill9(),
            Loss::Frozen => {
                let pid = net.boxes[victim].pid().unwrap();
                assert!(
                    Command::new("kill")
                        .args(["-STOP", &pid.to_string()])
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
        let stopped = std::time::Instant::now();
        let away = wait_for(
            "redirects to avoid the stopped box",
            Duration::from_secs(15),
            || {
                let l = redirect_location(&net, name)?;
                (!l.starts_with(&victim_origin)).then(|| stopped.elapsed())
            },
        );
        eprintln!("{loss:?}: redirects avoided the box after {away:?}");
        assert!(
            away <= Duration::from_secs(3),
            "{loss:?}: viewers were sent to the stopped box for {away:?}"
        );
        for _ in 0..20 {
            let l = redirect_location(&net, name).expect("a redirect");
            assert!(
                !l.starts_with(&victim_origin),
                "{loss:?}: sent back to it: {l}"
            );
            let (_, body) = fetch_from(&net, l).expect("the other box serves it");
            assert!(body == bytes);
        }
    }
}

/// Copies confirmed stored by boxes, ever (`dandelion_placements_total`).
fn placements_made(net: &Network) -> u64 {
    let text = net
        .get(&format!("{}/metrics", net.publisher.origin()))
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix("dandelion_placements_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// A box that crashes and comes back within `replace_after` keeps its files:
/// once a serve probe shows it serving them, viewers are sent to it again and
/// nothing is sent anew. One that stays away has its files placed elsewhere,
/// but not before `replace_after` has passed.
#[test]
fn a_box_back_within_the_grace_period_keeps_its_files_and_one_gone_longer_loses_them() {
    const GRACE: Duration = Duration::from_secs(8);
    let root = tempfile::tempdir().unwrap();
    let mut net = start_with(root.path(), 3, false, &["replace_after = 8"]);
    wait_active_boxes(&net, 3);
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                format!("kept/seg{i}.ts"),
                content(30_000 + i * 7, i as u64 + 40),
            )
        })
        .collect();
    for (name, bytes) in &files {
        push_bytes(
            &net,
            root.path(),
            name,
            bytes,
            &["--replicas", "1", "--ttl", "300s"],
        );
    }
    let urls = |net: &Network| -> Option<Vec<String>> {
        files
            .iter()
            .map(|(name, _)| {
                let v = net.json(&format!("{}/api/files/{name}", net.publisher.origin()));
                let p = v["placements"].as_array()?;
                (v["state"] == "placed" && p.len() == 1)
                    .then(|| p[0]["url"].as_str().map(str::to_owned))
                    .flatten()
            })
            .collect()
    };
    let before = wait_for("six files placed", Duration::from_secs(30), || urls(&net));
    let victim = net
        .boxes
        .iter()
        .position(|b| before[0].starts_with(&b.origin()))
        .unwrap();
    let victim_origin = net.boxes[victim].origin();
    let theirs: Vec<usize> = (0..files.len())
        .filter(|&i| before[i].starts_with(&victim_origin))
        .collect();
    let sent = placements_made(&net);

    // A crash and a restart on the same address, the files still on its disk.
    net.boxes[victim].restart();
    for &i in &theirs {
        let (name, bytes) = &files[i];
        let (location, body) = wait_for(
            &format!("viewers of {name} to be sent to the restarted box"),
            Duration::from_secs(20),
            || {
                let (l, b) = fetch_via_redirect(&net, name)?;
                l.starts_with(&victim_origin).then_some((l, b))
            },
        );
        assert_eq!(location, before[i]);
        assert!(
            body == *bytes,
            "{name}: the restarted box serves other bytes"
        );
    }
    assert_eq!(urls(&net).unwrap(), before, "a placement moved");
    assert_eq!(placements_made(&net), sent, "a file was sent again");

    // Gone for good: its files move, after the grace period and not before.
    net.boxes[victim].kill9();
    let killed = std::time::Instant::now();
    let moved = wait_for(
        "the dead box's files placed elsewhere",
        Duration::from_secs(40),
        || {
            let now = urls(&net)?;
            theirs
                .iter()
                .all(|&i| !now[i].starts_with(&victim_origin))
                .then(|| killed.elapsed())
        },
    );
    assert!(
        moved >= GRACE,
        "re-placed after {moved:?}, before the grace period"
    );
    for &i in &theirs {
        let (name, bytes) = &files[i];
        let (_, body) = fetch_via_redirect(&net, name).expect("served from its new box");
        assert!(body == *bytes);
    }
}

/// The offload ledger adds up to the bytes viewers really fetched: from the
/// boxes (their counters, collected every 10 s), from the publisher itself (a
/// playlist), and what was uploaded to boxes — per stream and in total, in
/// `/api/ledger`, `/metrics` and `dandelion stats`.
#[test]
fn the_offload_ledger_counts_the_bytes_viewers_fetched() {
    let root = tempfile::tempdir().unwrap();
    let net = start(root.path(), 2);
    wait_active_boxes(&net, 2);
    let files = [
        ("show/a.ts", content(100_000, 81), "2"),
        ("show/b.ts", content(60_000, 82), "2"),
        ("other.bin", content(30_000, 83), "1"),
        (
            "show/index.m3u8",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\na.ts\nb.ts\n".to_vec(),
            "1",
        ),
    ];
    for (name, bytes, replicas) in &files {
        push_bytes(
            &net,
            root.path(),
            name,
            bytes,
            &["--replicas", replicas, "--ttl", "300s"],
        );
    }
    let mut uploaded = 0;
    for (name, bytes, replicas) in &files {
        let copies: usize = replicas.parse().unwrap();
        wait_for(&format!("{name} placed"), Duration::from_secs(30), || {
            let v = net.json(&format!("{}/api/files/{name}", net.publisher.origin()));
            (v["state"] == "placed" && v["placements"].as_array()?.len() == copies).then_some(())
        });
        uploaded += bytes.len() * copies;
    }
    // Viewers: segments from boxes, the playlist from the publisher.
    let mut from_boxes = std::collections::HashMap::<&str, usize>::new();
    for (name, times) in [("show/a.ts", 3), ("show/b.ts", 2), ("other.bin", 1)] {
        for _ in 0..times {
            let (_, body) = fetch_via_redirect(&net, name).expect("served by a box");
            let stream = name.rsplit_once('/').map_or("", |(d, _)| d);
            *from_boxes.entry(stream).or_default() += body.len();
        }
    }
    let mut from_publisher = 0;
    for _ in 0..2 {
        let r = net.get(&format!("{}/show/index.m3u8", net.publisher.origin()));
        assert_eq!(r.status, 200);
        from_publisher += r.body.len();
    }
    let boxes_total: usize = from_boxes.values().sum();
    let ledger = wait_for(
        "the ledger to count what the boxes served",
        Duration::from_secs(40),
        || {
            let v = net.json(&format!("{}/api/ledger", net.publisher.origin()));
            (v["total"]["box_bytes"] == boxes_total).then_some(v)
        },
    );
    // Audience figures are the operator's: no token, no ledger.
    let anonymous = net
        .rt
        .block_on(
            net.http
                .get(&format!("{}/api/ledger", net.publisher.origin()), &[]),
        )
        .unwrap();
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let stream = |name: &str| {
        ledger["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no stream {name:?} in {ledger}"))
    };
    assert_eq!(stream("show")["box_bytes"], from_boxes["show"], "{ledger}");
    assert_eq!(stream("")["box_bytes"], from_boxes[""], "{ledger}");
    assert_eq!(stream("show")["origin_bytes"], from_publisher, "{ledger}");
    assert_eq!(ledger["total"]["origin_bytes"], from_publisher, "{ledger}");
    assert_eq!(ledger["total"]["uploaded_bytes"], uploaded, "{ledger}");
    assert!(ledger["total"]["box_requests"].as_u64().unwrap() >= 6);
    let share = ledger["box_share"].as_f64().unwrap();
    let expected = boxes_total as f64 / (boxes_total + from_publisher) as f64;
    assert!((share - expected).abs() < 1e-9, "{ledger}");

    let metrics = net
        .get(&format!("{}/metrics", net.publisher.origin()))
        .text();
    assert!(
        metrics.contains(&format!(
            "dandelion_offload_box_bytes_total{{stream=\"show\"}} {}",
            from_boxes["show"]
        )),
        "{metrics}"
    );
    let out = run(Command::new(binary("dandelion"))
        .arg("stats")
        .args([
            "--to",
            &net.publisher.origin(),
            "--token",
            &admin_token(&net),
        ])
        .env_remove("DANDELION_CONFIG"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "viewer bytes served by boxes: {:.1}%",
            expected * 100.0
        )),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("show ")), "{text}");
}

/// Where a viewer at `source` (127.0.0.x) is redirected for `name`: curl can
/// leave from a chosen loopback address, which the publisher's GeoIP locates.
fn redirect_from(net: &Network, source: &str, name: &str) -> String {
    redirect_from_with(net, source, name, &[])
}

/// [`redirect_from`] with extra request headers (`Name: value`).
fn redirect_from_with(net: &Network, source: &str, name: &str, headers: &[&str]) -> String {
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{redirect_url}",
        "--interface",
        source,
    ]);
    for h in headers {
        curl.args(["-H", h]);
    }
    let out = run(curl.arg(format!("{}/{name}", net.publisher.origin())));
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn viewers_are_sent_to_the_box_nearest_them() {
    let root = tempfile::tempdir().unwrap();
    let net = start_located(root.path(), 3, true);
    let file = root.path().join("near.ts");
    std::fs::write(&file, content(50_000, 7)).unwrap();
    let out = push(&net, &file, &["--replicas", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status_url = format!("{}/api/files/near.ts", net.publisher.origin());
    wait_for(
        "the file on all three boxes",
        Duration::from_secs(30),
        || {
            let v = net.json(&status_url);
            (v["state"] == "placed" && v["placements"].as_array()?.len() == 3).then_some(())
        },
    );
    // Box i left from 127.0.0.(2+i): Taipei, Tokyo, London.
    for (i, source) in ["127.0.0.2", "127.0.0.3", "127.0.0.4"].iter().enumerate() {
        let expected = net.boxes[i].origin();
        let location = wait_for(
            &format!("a redirect from {source} to its own city"),
            Duration::from_secs(15),
            || {
                let l = redirect_from(&net, source, "near.ts");
                l.starts_with(&expected).then_some(l)
            },
        );
        assert!(location.ends_with("/near.ts"), "{location}");
    }
}

/// Behind a TLS-terminating proxy the publisher sees the proxy's address: it
/// places the viewer by the proxy's `X-Forwarded-For` when the proxy is in its
/// `trusted_proxies`, and by the socket's address when anyone else sends one.
#[test]
fn a_trusted_proxy_says_where_the_viewer_is_and_no_one_else_does() {
    let root = tempfile::tempdir().unwrap();
    let net = start_with(root.path(), 3, true, &["trusted_proxies = [\"127.0.0.5\"]"]);
    let file = root.path().join("proxied.ts");
    std::fs::write(&file, content(50_000, 11)).unwrap();
    let out = push(&net, &file, &["--replicas", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status_url = format!("{}/api/files/proxied.ts", net.publisher.origin());
    wait_for(
        "the file on all three boxes",
        Duration::from_secs(30),
        || {
            let v = net.json(&status_url);
            (v["state"] == "placed" && v["placements"].as_array()?.len() == 3).then_some(())
        },
    );
    // Through the proxy (127.0.0.5, nowhere in the GeoIP database), a viewer
    // in London (127.0.0.4) goes to the London box.
    let london = net.boxes[2].origin();
    wait_for(
        "a proxied viewer in London sent to the London box",
        Duration::from_secs(15),
        || {
            let l = redirect_from_with(
                &net,
                "127.0.0.5",
                "proxied.ts",
                &["X-Forwarded-For: 127.0.0.4", "X-Forwarded-Proto: https"],
            );
            l.starts_with(&london).then_some(l)
        },
    );
    // A viewer in Taipei claiming London is placed by its own address.
    let taipei = net.boxes[0].origin();
    let claimed = redirect_from_with(
        &net,
        "127.0.0.2",
        "proxied.ts",
        &["X-Forwarded-For: 127.0.0.4"],
    );
    assert!(claimed.starts_with(&taipei), "{claimed}");
}

/// The publisher's `public_url` is the address players are given: `push`
/// prints it for each file, its path escaped.
#[test]
fn players_are_given_the_publishers_public_url() {
    let root = tempfile::tempdir().unwrap();
    let net = start_with(
        root.path(),
        1,
        false,
        &["public_url = \"https://live.example.test/tv/\""],
    );
    let file = root.path().join("seg.ts");
    std::fs::write(&file, content(1_000, 3)).unwrap();
    let out = push(&net, &file, &["--as", "live/seg 1.ts"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("queued live/seg 1.ts (1000 bytes); players: https://live.example.test/tv/live/seg%201.ts\n"),
        "{stdout}"
    );
}

/// The publisher's view of its boxes (`GET /api/boxes`).
fn publisher_boxes(net: &Network) -> Vec<Value> {
    let v = net.json(&format!("{}/api/boxes", net.publisher.origin()));
    v.as_array().cloned().unwrap_or_default()
}

/// The boxes the publisher has a publish session open to, by ID.
fn open_sessions(net: &Network) -> Vec<String> {
    publisher_boxes(net)
        .iter()
        .filter(|b| b["session"]["state"] == "open")
        .filter_map(|b| b["box"].as_str().map(str::to_owned))
        .collect()
}

/// Which of the network's boxes a box ID is, by the data URL the publisher knows.
fn box_index(net: &Network, box_id: &str) -> usize {
    let row = publisher_boxes(net)
        .into_iter()
        .find(|b| b["box"] == box_id)
        .unwrap_or_else(|| panic!("the publisher does not know {box_id}"));
    let data_url = row["data_url"].as_str().unwrap().to_owned();
    net.boxes
        .iter()
        .position(|b| data_url.starts_with(&b.origin()))
        .unwrap_or_else(|| panic!("no box serves {data_url}"))
}

#[test]
fn sessions_are_kept_open_to_the_best_boxes_and_move_when_one_dies() {
    let root = tempfile::tempdir().unwrap();
    let mut net = start_with(root.path(), 4, false, &["keep_sessions = 2"]);
    wait_active_boxes(&net, 4);
    // Nothing is pushed: the sessions are opened ahead of any file.
    let first = wait_for(
        "sessions to the two best boxes",
        Duration::from_secs(30),
        || {
            let open = open_sessions(&net);
            (open.len() == 2).then_some(open)
        },
    );
    let listed = net.json(&format!("{}/api/files", net.publisher.origin()));
    assert_eq!(listed.as_array().unwrap().len(), 0, "{listed}");
    let victim_id = first[0].clone();
    let victim = box_index(&net, &victim_id);
    net.boxes[victim].kill9();
    let after = wait_for(
        "the dead box's session to be replaced by one to another box",
        Duration::from_secs(30),
        || {
            let open = open_sessions(&net);
            (open.len() == 2
                && !open.contains(&victim_id)
                && open.iter().any(|b| !first.contains(b)))
            .then_some(open)
        },
    );
    assert!(
        after.contains(&first[1]),
        "the live session stays: {after:?}"
    );
    // The dead box is still listed (until the entrance expires it), with no session.
    let row = publisher_boxes(&net)
        .into_iter()
        .find(|b| b["box"] == victim_id.as_str())
        .unwrap();
    assert!(row["session"].is_null(), "{row}");
}

/// What a viewer asking the publisher for `name` gets: the box it was sent to
/// (`None` when the publisher served the bytes itself) and the bytes, when the
/// answer was a success.
fn view(net: &Network, name: &str) -> Option<(Option<String>, Vec<u8>)> {
    let url = format!("{}/{name}", net.publisher.origin());
    let response = net.rt.block_on(net.http.get(&url, &[])).ok()?;
    match response.status.as_u16() {
        200 => Some((None, response.body.to_vec())),
        302 => {
            let location = response.headers.get("location")?.to_str().ok()?.to_owned();
            let (location, body) = fetch_from(net, location)?;
            Some((Some(location), body))
        }
        _ => None,
    }
}

/// Where a box keeps the copy it serves at `url`: `files/` in its data
/// directory, then the URL's path (`<publisher-id>/<name>`).
fn copy_on_disk(net: &Network, url: &str) -> std::path::PathBuf {
    let i = net
        .boxes
        .iter()
        .position(|b| url.starts_with(&b.origin()))
        .unwrap_or_else(|| panic!("no box serves {url}"));
    let path = url.strip_prefix(&net.boxes[i].origin()).unwrap();
    net.boxes[i]
        .data_dir()
        .join("files")
        .join(path.trim_start_matches('/'))
}

#[test]
fn a_box_that_fails_to_serve_is_skipped_and_what_it_held_is_placed_again() {
    let root = tempfile::tempdir().unwrap();
    let net = start_with(
        root.path(),
        3,
        false,
        &["serve_probe_interval = 1", "serve_probe_timeout = 1"],
    );
    wait_active_boxes(&net, 3);
    let everywhere = content(80_000, 31);
    let single = content(60_000, 32);
    for (name, bytes, replicas) in [
        ("everywhere.ts", &everywhere, "3"),
        ("single.ts", &single, "1"),
    ] {
        let file = root.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = push(&net, &file, &["--replicas", replicas, "--ttl", "300s"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = |name: &str| net.json(&format!("{}/api/files/{name}", net.publisher.origin()));
    let placed = |name: &str, copies: usize| {
        wait_for(
            &format!("{name} on {copies} boxes"),
            Duration::from_secs(30),
            || {
                let v = status(name);
                (v["state"] == "placed" && v["placements"].as_array()?.len() == copies).then_some(v)
            },
        )
    };
    placed("everywhere.ts", 3);
    let single_status = placed("single.ts", 1);
    // The box holding the only copy of single.ts loses both its files from
    // disk. It keeps its session and heartbeats, and answers 404 for them.
    let failing_id = single_status["placements"][0]["box"]
        .as_str()
        .unwrap()
        .to_owned();
    let failing = box_index(&net, &failing_id);
    let failing_origin = net.boxes[failing].origin();
    for name in ["everywhere.ts", "single.ts"] {
        let v = status(name);
        let url = v["placements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["box"] == failing_id.as_str())
            .and_then(|p| p["url"].as_str())
            .unwrap()
            .to_owned();
        let path = copy_on_disk(&net, &url);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    // While the publisher holds the box as not serving, viewers of both files
    // get the bytes, never from that box: everywhere.ts from another holder,
    // single.ts from the origin or a new copy.
    wait_for(
        "the publisher to skip the box that fails to serve",
        Duration::from_secs(30),
        || {
            let row = publisher_boxes(&net)
                .into_iter()
                .find(|b| b["box"] == failing_id.as_str())?;
            if row["serving"] != false || !row["probe"]["error"].as_str()?.contains("404") {
                return None;
            }
            let (location, body) = view(&net, "everywhere.ts")?;
            let location = location?;
            assert!(
                !location.starts_with(&failing_origin),
                "redirected to a box that fails to serve: {row}"
            );
            assert!(body == everywhere);
            let (location, body) = view(&net, "single.ts")?;
            assert!(
                location.is_none_or(|l| !l.starts_with(&failing_origin)),
                "redirected to a box that fails to serve: {row}"
            );
            assert!(body == single);
            Some(())
        },
    );

    // Its copies count as lost: both files are placed again (possibly on the
    // same box, which then stores them anew), and every copy is really there.
    for (name, bytes, copies) in [("everywhere.ts", &everywhere, 3), ("single.ts", &single, 1)] {
        wait_for(
            &format!("{name} placed again on {copies} boxes that hold it"),
            Duration::from_secs(30),
            || {
                let v = status(name);
                let placements = v["placements"].as_array()?;
                let all_there = placements.len() == copies
                    && placements.iter().all(|p| {
                        p["url"]
                            .as_str()
                            .is_some_and(|u| copy_on_disk(&net, u).is_file())
                    });
                if v["state"] != "placed" || !all_there {
                    return None;
                }
                let (location, body) = view(&net, name)?;
                (location.is_some() && body == *bytes).then_some(())
            },
        );
    }
    wait_for("the box to serve again", Duration::from_secs(30), || {
        let row = publisher_boxes(&net)
            .into_iter()
            .find(|b| b["box"] == failing_id.as_str())?;
        (row["serving"] == true).then_some(())
    });
    let metrics = net
        .get(&format!("{}/metrics", net.publisher.origin()))
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dandelion_serve_probe_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// An upload written by hand, so that a test can pause it half way or cut it
/// off: `PUT /api/files/{target}` with a `Content-Length` of `size`.
struct RawPut(std::net::TcpStream);

impl RawPut {
    fn begin(net: &Network, target: &str, size: usize) -> RawPut {
        use std::io::Write;
        let address = net.publisher.origin().replace("http://", "");
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "PUT /api/files/{target} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {}\r\n\
             Content-Length: {size}\r\n\r\n",
            net.publisher.admin_auth()
        );
        stream.write_all(head.as_bytes()).unwrap();
        RawPut(stream)
    }

    fn write(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.0.write_all(bytes).unwrap();
    }

    /// The response's status line, once the whole body was written.
    fn status(mut self) -> String {
        use std::io::Read;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n") && self.0.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).trim_end().to_owned()
    }
}

/// Waits until the publisher counts `n` live boxes: it will choose them.
fn wait_publisher_knows(net: &Network, n: usize) {
    wait_for(
        &format!("the publisher to know {n} live boxes"),
        Duration::from_secs(30),
        || {
            let live = publisher_boxes(net)
                .iter()
                .filter(|b| b["live"] == true)
                .count();
            (live == n).then_some(())
        },
    );
}

/// Waits until `name` has `n` copies recorded, then fetches each from its box
/// and checks it is `bytes`.
fn assert_copies(net: &Network, name: &str, n: usize, bytes: &[u8]) {
    let file_url = format!("{}/api/files/{name}", net.publisher.origin());
    let placements = wait_for(
        &format!("{n} copies of {name} recorded"),
        Duration::from_secs(30),
        || {
            let status = net.json(&file_url);
            let placements = status["placements"].as_array()?.clone();
            (placements.len() == n).then_some(placements)
        },
    );
    for placement in placements {
        let url = placement["url"].as_str().unwrap().to_owned();
        let (_, body) = fetch_from(net, url.clone()).unwrap();
        assert!(body == bytes, "the copy at {url} is not the upload");
    }
}

/// Bytes of transfers under way on each box (`files/.partial/`).
fn partial_bytes(net: &Network) -> Vec<u64> {
    net.boxes
        .iter()
        .map(|b| {
            std::fs::read_dir(b.data_dir().join("files").join(".partial"))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok()?.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0)
        })
        .collect()
}

/// When the publisher's session to each box opened, by box ID.
fn sessions_opened_at(net: &Network) -> Vec<(String, Value)> {
    let mut rows: Vec<(String, Value)> = publisher_boxes(net)
        .iter()
        .map(|b| {
            (
                b["box"].as_str().unwrap_or_default().to_owned(),
                b["session"]["opened_at"].clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// Cut-through: a big upload is on its boxes before it has finished arriving
/// at the publisher, the copies are whole and verified once it has; an upload
/// cut off half way leaves nothing anywhere, and the publish sessions it used
/// carry on.
#[test]
fn a_big_upload_reaches_the_boxes_while_it_arrives_and_one_cut_off_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let net = start(root.path(), 2);
    wait_active_boxes(&net, 2);
    let size = 6 << 20;
    let bytes = content(size, 61);

    let mut upload = RawPut::begin(&net, "film.bin?replicas=2", size);
    upload.write(&bytes[..size / 2]);
    wait_for(
        "both boxes to hold part of the file while its upload is paused",
        Duration::from_secs(30),
        || {
            let partial = partial_bytes(&net);
            partial.iter().all(|b| *b >= 1 << 20).then_some(())
        },
    );
    upload.write(&bytes[size / 2..]);
    let status = upload.status();
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    assert_copies(&net, "film.bin", 2, &bytes);

    let sessions = sessions_opened_at(&net);
    let mut upload = RawPut::begin(&net, "cut.bin?replicas=2", size);
    upload.write(&bytes[..size / 2]);
    wait_for(
        "both boxes to hold part of the second file",
        Duration::from_secs(30),
        || {
            partial_bytes(&net)
                .iter()
                .all(|b| *b >= 1 << 20)
                .then_some(())
        },
    );
    drop(upload);
    wait_for(
        "the boxes to drop what they had of the cut-off upload",
        Duration::from_secs(30),
        || partial_bytes(&net).iter().all(|b| *b == 0).then_some(()),
    );
    let cut = net.get(&format!("{}/api/files/cut.bin", net.publisher.origin()));
    assert_eq!(cut.status, 404, "the cut-off upload is not a file");
    for b in &net.boxes {
        let stored = files_under(&b.data_dir().join("files"));
        assert!(!stored.iter().any(|p| p.ends_with("cut.bin")), "{stored:?}");
    }
    assert_eq!(
        sessions_opened_at(&net),
        sessions,
        "the publish sessions carry on"
    );
}

/// An upload that stalls half way lets go of its boxes after
/// `upload_stall_timeout` (their partial copies go, the publish sessions stay
/// free for other files), and when it completes after all, the boxes get the
/// file from the publisher's copy.
#[test]
fn a_stalled_upload_lets_go_of_its_boxes_and_they_get_it_once_it_completes() {
    let root = tempfile::tempdir().unwrap();
    let net = start_with(root.path(), 2, false, &["upload_stall_timeout = 1"]);
    wait_active_boxes(&net, 2);
    let size = 4 << 20;
    let bytes = content(size, 67);
    let mut upload = RawPut::begin(&net, "slow.bin?replicas=2", size);
    upload.write(&bytes[..size / 2]);
    wait_for(
        "both boxes to hold part of the file",
        Duration::from_secs(30),
        || partial_bytes(&net).iter().all(|b| *b > 0).then_some(()),
    );
    // The upload says nothing more, and its connection stays open.
    wait_for(
        "the boxes to let go of the stalled upload",
        Duration::from_secs(30),
        || partial_bytes(&net).iter().all(|b| *b == 0).then_some(()),
    );
    upload.write(&bytes[size / 2..]);
    let status = upload.status();
    assert!(status.starts_with("HTTP/1.1 202"), "{status}");
    assert_copies(&net, "slow.bin", 2, &bytes);
}

/// The names whose bytes the publisher keeps in its store (its own redb file;
/// the publisher must be stopped for another process to open it).
fn names_in_store(net: &Network) -> Vec<String> {
    use dandelion_core::store::{EmbeddedStore, Store};
    let path = net.publisher.data_dir().join("dandelion.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    let keys = net.rt.block_on(store.scan_prefix("")).unwrap();
    keys.iter()
        .filter_map(|k| k.split_once(":FILE:ORIGIN:").map(|(_, n)| n.to_owned()))
        .collect()
}

#[test]
fn small_files_are_kept_in_the_store_and_served_from_it_until_they_expire() {
    let root = tempfile::tempdir().unwrap();
    let mut net = start(root.path(), 1);
    wait_active_boxes(&net, 1);
    let origin_dir = net.publisher.data_dir().join("origin");
    let put = |name: &str, bytes: &[u8], ttl: &str| {
        let file = root.path().join("upload");
        std::fs::write(&file, bytes).unwrap();
        let out = push(&net, &file, &["--as", name, "--ttl", ttl]);
        assert!(out.status.success(), "{out:?}");
    };
    let placed_bytes = |name: &str, want: &[u8]| {
        wait_for(
            &format!("{name} served from a box with the bytes pushed last"),
            Duration::from_secs(30),
            || {
                let (box_url, body) = view(&net, name)?;
                (box_url.is_some() && body == want).then_some(())
            },
        );
    };

    // A playlist is served by the publisher itself: from the store, with the
    // type players pick their demuxer by, and no file written for it.
    let playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n".to_vec();
    put("live/index.m3u8", &playlist, "10m");
    let url = format!("{}/live/index.m3u8", net.publisher.origin());
    let served = net.rt.block_on(net.http.get(&url, &[])).unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.body.to_vec(), playlist);
    assert_eq!(
        served.headers["content-type"],
        "application/vnd.apple.mpegurl"
    );
    // Players read parts of what the publisher serves from memory, as they do
    // of files on disk: one range is a 206 of those bytes, one past the end a
    // 416 saying how long the file is.
    let part = net
        .rt
        .block_on(net.http.get(&url, &[("range", "bytes=0-6")]))
        .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(&part.body[..], b"#EXTM3U");
    assert_eq!(
        part.headers["content-range"],
        format!("bytes 0-6/{}", playlist.len())
    );
    assert_eq!(part.headers["accept-ranges"], "bytes");
    let past = net
        .rt
        .block_on(net.http.get(&url, &[("range", "bytes=5000-")]))
        .unwrap();
    assert_eq!(past.status, 416);
    assert_eq!(
        past.headers["content-range"],
        format!("bytes */{}", playlist.len())
    );
    // A segment goes from the store to its box, byte for byte.
    let segment = content(100 * 1024, 71);
    put("live/seg0.ts", &segment, "10m");
    placed_bytes("live/seg0.ts", &segment);
    assert_eq!(
        files_under(&origin_dir),
        Vec::<std::path::PathBuf>::new(),
        "small files leave no file in the origin directory"
    );

    // One name, pushed big (a file), then small (the store), then big again:
    // each time the newest bytes are what viewers get.
    let big = content(1_500_000, 72);
    put("vod/movie.mp4", &big, "10m");
    placed_bytes("vod/movie.mp4", &big);
    let small = content(20_000, 73);
    put("vod/movie.mp4", &small, "10m");
    placed_bytes("vod/movie.mp4", &small);
    let big_again = content(1_200_000, 74);
    put("vod/movie.mp4", &big_again, "10m");
    placed_bytes("vod/movie.mp4", &big_again);

    // A small file whose TTL runs out goes with its job.
    put("live/old.ts", &content(5_000, 75), "2s");
    wait_for(
        "live/old.ts forgotten after its TTL",
        Duration::from_secs(30),
        || {
            let url = format!("{}/live/old.ts", net.publisher.origin());
            let r = net.rt.block_on(net.http.get(&url, &[])).ok()?;
            (r.status == 404).then_some(())
        },
    );

    // What is left in the store is exactly the small files still alive.
    assert!(net.publisher.terminate(Duration::from_secs(20)));
    let mut kept = names_in_store(&net);
    kept.sort();
    assert_eq!(kept, ["live/index.m3u8", "live/seg0.ts"]);
}

/// Pushes a small file and waits until a box serves it; how many files the
/// publisher's origin directory then holds.
fn push_small_and_count_origin_files(net: &Network, root: &Path, seed: u64) -> usize {
    let file = root.join("seg.ts");
    let bytes = content(30_000, seed);
    std::fs::write(&file, &bytes).unwrap();
    let name = format!("a/seg{seed}.ts");
    assert!(push(net, &file, &["--as", &name]).status.success());
    wait_for(
        &format!("{name} on its box"),
        Duration::from_secs(30),
        || {
            let (box_url, body) = view(net, &name)?;
            (box_url.is_some() && body == bytes).then_some(())
        },
    );
    let on_disk = files_under(&net.publisher.data_dir().join("origin"));
    for path in &on_disk {
        assert_eq!(std::fs::read(path).unwrap(), bytes);
    }
    on_disk.len()
}

#[test]
fn with_store_files_up_to_0_every_copy_is_a_file() {
    let root = tempfile::tempdir().unwrap();
    let net = start_with(root.path(), 1, false, &["store_files_up_to = 0"]);
    wait_active_boxes(&net, 1);
    assert_eq!(push_small_and_count_origin_files(&net, root.path(), 76), 1);
    // Not even an empty one goes into the store.
    let empty = root.path().join("empty.ts");
    std::fs::write(&empty, b"").unwrap();
    assert!(push(&net, &empty, &["--as", "a/empty.ts"]).status.success());
    let on_disk = files_under(&net.publisher.data_dir().join("origin"));
    assert_eq!(on_disk.len(), 2, "{on_disk:?}");
}

/// On Redis, small files stay on disk unless the operator says otherwise (they
/// would take Redis's memory); when told, they live in Redis and come back
/// from it after the publisher is killed.
#[test]
fn on_redis_small_files_are_files_unless_the_store_is_asked_to_keep_them() {
    use dandelion_testkit::redis::RedisServer;
    let redis = RedisServer::start();
    let store = format!("store = {:?}", redis.url());

    let root = tempfile::tempdir().unwrap();
    let started = NetworkBuilder::new(root.path(), 1)
        .publisher_top(store.clone())
        .start();
    let net = network(started);
    wait_active_boxes(&net, 1);
    assert_eq!(push_small_and_count_origin_files(&net, root.path(), 77), 1);
    drop(net);

    let root = tempfile::tempdir().unwrap();
    let started = NetworkBuilder::new(root.path(), 1)
        .publisher_top(store)
        .publisher_top("store_prefix = \"second\"")
        .publisher_setting("store_files_up_to = \"1 MiB\"")
        .start();
    let mut net = network(started);
    wait_active_boxes(&net, 1);
    assert_eq!(push_small_and_count_origin_files(&net, root.path(), 78), 0);
    let playlist = root.path().join("index.m3u8");
    std::fs::write(&playlist, b"#EXTM3U\n").unwrap();
    assert!(
        push(&net, &playlist, &["--as", "a/index.m3u8"])
            .status
            .success()
    );
    net.publisher.restart();
    let url = format!("{}/a/index.m3u8", net.publisher.origin());
    let served = net.rt.block_on(net.http.get(&url, &[])).unwrap();
    assert_eq!(
        (served.status.as_u16(), &served.body[..]),
        (200, &b"#EXTM3U\n"[..])
    );
}

/// On a shared store a push is acknowledged only once a box holds a copy. A
/// publisher that knows no box (just started, or its boxes just came) asks the
/// entrance again at once instead of refusing: the push waits a few seconds
/// for a box. (Refused when none comes:
/// `front_ends::a_file_no_box_can_take_is_not_acknowledged_on_a_shared_store`.)
#[test]
fn on_a_shared_store_a_push_waits_a_few_seconds_for_a_first_box() {
    use dandelion_testkit::redis::RedisServer;
    let redis = RedisServer::start();
    let root = tempfile::tempdir().unwrap();
    // No box yet, and the publisher's next regular search a minute away.
    let started = NetworkBuilder::new(root.path(), 0)
        .publisher_top(format!("store = {:?}", redis.url()))
        .publisher_setting("search_interval = 60")
        .start();
    let mut net = network(started);
    let file = root.path().join("seg.ts");
    let bytes = content(40_000, 79);
    std::fs::write(&file, &bytes).unwrap();

    // A box joins after the publisher's search at start, which found none.
    // The push is taken.
    net.boxes
        .push(dandelion_testkit::network::box_joining(root.path(), &net.entrance, "box-0").spawn());
    wait_entrance_active(&net, 1);
    let taken = push(&net, &file, &["--as", "a/first.ts"]);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    let (box_url, body) = view(&net, "a/first.ts").expect("a redirect to the box");
    assert!(box_url.is_some());
    assert_eq!(body, bytes);
}

/// `GET url` within `limit`: what a load balancer's health check or a viewer
/// would give up after.
fn get_within(net: &Network, url: &str, limit: Duration) -> dandelion_core::http::Response {
    let started = std::time::Instant::now();
    let response = net
        .rt
        .block_on(async { tokio::time::timeout(limit, net.http.get(url, &[])).await })
        .unwrap_or_else(|_| panic!("{url} did not answer within {limit:?}"))
        .unwrap();
    assert!(
        started.elapsed() < limit,
        "{url} took {:?}",
        started.elapsed()
    );
    response
}

/// A daemon's `/healthz`, which must answer within a second.
fn health_of(net: &Network, origin: &str) -> Value {
    let r = get_within(net, &format!("{origin}/healthz"), Duration::from_secs(1));
    assert_eq!(r.status, 200, "degraded or not, /healthz answers 200");
    r.json().unwrap()
}

#[test]
fn viewers_are_redirected_and_health_says_degraded_while_the_store_is_frozen() {
    use dandelion_testkit::redis::RedisServer;
    let redis = RedisServer::start();
    let store = format!("store = {:?}", redis.url());
    let root = tempfile::tempdir().unwrap();
    let started = NetworkBuilder::new(root.path(), 1)
        .entrance_top(store.clone())
        .publisher_top(store)
        .start();
    let net = network(started);
    wait_active_boxes(&net, 1);
    let body = content(64 * 1024, 97);
    let file = root.path().join("frozen.bin");
    std::fs::write(&file, &body).unwrap();
    assert!(
        push(&net, &file, &["--as", "a/frozen.bin", "--ttl", "10m"])
            .status
            .success()
    );
    wait_for("a/frozen.bin on its box", Duration::from_secs(30), || {
        redirect_location(&net, "a/frozen.bin")
    });
    assert_eq!(health_of(&net, &net.publisher.origin())["status"], "ok");
    assert_eq!(health_of(&net, &net.entrance.origin())["status"], "ok");

    let frozen = redis.freeze();
    for origin in [net.publisher.origin(), net.entrance.origin()] {
        let said = wait_for(
            &format!("{origin}/healthz to say the store is away"),
            Duration::from_secs(10),
            || {
                let h = health_of(&net, &origin);
                (h["status"] == "degraded").then_some(h)
            },
        );
        let problems = said["problems"].to_string();
        assert!(problems.contains("store: "), "{said}");
    }
    for _ in 0..5 {
        let r = get_within(
            &net,
            &format!("{}/a/frozen.bin", net.publisher.origin()),
            Duration::from_secs(1),
        );
        assert_eq!(r.status, 302, "a viewer is still sent to the box");
        let location = r.headers["location"].to_str().unwrap().to_owned();
        let (_, served) = fetch_from(&net, location).unwrap();
        assert!(served == body, "the box serves the file's bytes");
    }

    drop(frozen);
    for origin in [net.publisher.origin(), net.entrance.origin()] {
        wait_for(
            &format!("{origin}/healthz to say ok again"),
            Duration::from_secs(20),
            || (health_of(&net, &origin)["status"] == "ok").then_some(()),
        );
    }
}

#[test]
fn a_redirect_says_the_same_on_the_fast_path_as_through_hyper() {
    let root = tempfile::tempdir().unwrap();
    let net = start(root.path(), 1);
    wait_active_boxes(&net, 1);
    let file = root.path().join("same.ts");
    std::fs::write(&file, content(4096, 98)).unwrap();
    assert!(
        push(&net, &file, &["--as", "a/same seg.ts"])
            .status
            .success()
    );
    let fast = wait_for("a/same seg.ts placed", Duration::from_secs(30), || {
        let url = format!("{}/a/same%20seg.ts", net.publisher.origin());
        let r = net.rt.block_on(net.http.get(&url, &[])).ok()?;
        (r.status == 302).then_some(r)
    });
    // A proxy's header (from an address that is not a trusted proxy) sends
    // the request through hyper, which decides alone what it means.
    let url = format!("{}/a/same%20seg.ts", net.publisher.origin());
    let hyper = net
        .rt
        .block_on(net.http.get(&url, &[("x-forwarded-for", "192.0.2.1")]))
        .unwrap();
    assert_eq!(hyper.status, 302);
    for name in [
        "location",
        "cache-control",
        "repr-digest",
        "access-control-allow-origin",
        "access-control-expose-headers",
        "content-length",
    ] {
        assert_eq!(
            fast.headers.get(name),
            hyper.headers.get(name),
            "{name} differs"
        );
        assert!(fast.headers.contains_key(name), "{name} is missing");
    }
    assert!(fast.headers.contains_key("date"));
    let (_, served) =
        fetch_from(&net, fast.headers["location"].to_str().unwrap().to_owned()).unwrap();
    assert_eq!(served, content(4096, 98));

    // A playlist: hyper reads it from the store once, then the fast path
    // answers from memory, with the same headers and bytes.
    let playlist = root.path().join("index.m3u8");
    let text = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\nsame%20seg.ts\n";
    std::fs::write(&playlist, text).unwrap();
    assert!(
        push(&net, &playlist, &["--as", "a/index.m3u8"])
            .status
            .success()
    );
    let url = format!("{}/a/index.m3u8", net.publisher.origin());
    let through_hyper = net
        .rt
        .block_on(net.http.get(&url, &[("x-forwarded-for", "192.0.2.1")]))
        .unwrap();
    let fast = net.rt.block_on(net.http.get(&url, &[])).unwrap();
    for r in [&through_hyper, &fast] {
        assert_eq!(r.status, 200);
        assert_eq!(&r.body[..], &text[..]);
    }
    for name in [
        "content-type",
        "content-length",
        "cache-control",
        "repr-digest",
        "access-control-allow-origin",
        "access-control-expose-headers",
    ] {
        assert_eq!(
            fast.headers.get(name),
            through_hyper.headers.get(name),
            "{name} differs"
        );
        assert!(fast.headers.contains_key(name), "{name} is missing");
    }
}

#[test]
fn a_box_and_a_publisher_say_degraded_while_their_entrance_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let mut net = start(root.path(), 1);
    wait_active_boxes(&net, 1);
    let (box_origin, publisher_origin) = (net.boxes[0].origin(), net.publisher.origin());
    for origin in [&box_origin, &publisher_origin] {
        wait_for(&format!("{origin} ok"), Duration::from_secs(30), || {
            (health_of(&net, origin)["status"] == "ok").then_some(())
        });
    }

    net.entrance.kill9();
    for origin in [&box_origin, &publisher_origin] {
        let said = wait_for(
            &format!("{origin} to say its entrance is gone"),
            Duration::from_secs(15),
            || {
                let h = health_of(&net, origin);
                (h["status"] == "degraded").then_some(h)
            },
        );
        assert!(said["problems"].to_string().contains("entrance "), "{said}");
    }

    net.entrance.restart();
    for origin in [&box_origin, &publisher_origin] {
        wait_for(
            &format!("{origin} ok again"),
            Duration::from_secs(40),
            || (health_of(&net, origin)["status"] == "ok").then_some(()),
        );
    }
}
