//! Files flow end to end through real processes: an entrance, three boxes and a
//! publisher, each a `dandelion` process with its own port and data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::process::{binary, run};
use dandelion_testkit::wait_for;
use serde_json::Value;

const JOIN_TOKEN: &str = "flow-test-join-token";

struct Network {
    entrance: Daemon,
    boxes: Vec<Daemon>,
    publisher: Daemon,
    rt: tokio::runtime::Runtime,
    http: HttpClient,
}

impl Network {
    fn get(&self, url: &str) -> dandelion_core::http::Response {
        self.rt.block_on(self.http.get(url, &[])).unwrap()
    }

    fn json(&self, url: &str) -> Value {
        self.get(url).json().unwrap()
    }
}

fn publisher_key(dir: &Path) -> String {
    let out = run(Command::new(binary("dandelion"))
        .arg("--data-dir")
        .arg(dir)
        .args(["id", "publisher"]));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .unwrap()
        .trim()
        .to_owned()
}

fn start(root: &Path, boxes: usize) -> Network {
    let publisher_dir = root.join("publisher");
    let key = publisher_key(&publisher_dir);
    let entrance = DaemonBuilder::new("entrance", &root.join("entrance"))
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
        .set("expire_box_time = 10")
        .spawn();
    let entrance_ws = format!("ws://127.0.0.1:{}/dandelion/ws", entrance.port());
    let boxes = (0..boxes)
        .map(|i| {
            DaemonBuilder::new("box", &root.join(format!("box-{i}")))
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
    Network {
        entrance,
        boxes,
        publisher,
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

    let bytes = content(300_000, 42);
    let file = root.path().join("seg1.ts");
    std::fs::write(&file, &bytes).unwrap();
    let out = push(&net, &file, &["--replicas", "2", "--ttl", "120s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("queued seg1.ts (300000 bytes)"));

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
