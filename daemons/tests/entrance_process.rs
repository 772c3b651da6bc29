//! The real `dandelion entrance` process, driven by the real `dandelion boxes` and
//! `dandelion evict` commands, with a box registering over a real socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dandelion_core::connection::{Incoming, connect_as};
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::protocol::{Exchange, Header, Message};
use dandelion_testkit::network::identity;
use dandelion_testkit::process::{Running, binary, run};
use dandelion_testkit::{free_port, wait_for};

const JOIN: &str = "process-test-join-token";

fn dandelion(data_dir: &Path) -> Command {
    let mut c = Command::new(binary("dandelion"));
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DANDELION_DATA_DIR", data_dir)
        .arg("--config")
        .arg(data_dir.join("dandelion.toml"));
    c
}

#[test]
fn boxes_and_evict_work_against_a_running_entrance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::write(
        data.join("dandelion.toml"),
        format!(
            "log_file = false\n[entrance]\njoin_token = \"{JOIN}\"\nreachability_check = false\n"
        ),
    )
    .unwrap();
    let port = free_port().unwrap();
    let origin = format!("http://127.0.0.1:{port}");
    let _entrance = Running::spawn(
        dandelion(data)
            .arg("entrance")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}")),
    );
    let http_probe = origin.clone();
    wait_for("the entrance to answer", Duration::from_secs(20), || {
        std::net::TcpStream::connect(http_probe.trim_start_matches("http://")).ok()
    });

    let entrance_id = NodeId::parse(&identity(data, "entrance").0).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let boxy = Identity::generate(Role::Box).unwrap();
    let id = boxy.id().to_string();
    let mut conn = runtime.block_on(async {
        let url = format!("ws://127.0.0.1:{port}/dandelion/ws/");
        let mut conn = connect_as(&url, &entrance_id, &boxy, Some(JOIN))
            .await
            .unwrap();
        let exchange = Message::Exchange(Exchange {
            header: Header::new(boxy.id().clone()),
            connect_ws: None,
            data_url: Some("http://127.0.0.1:1".into()),
            system_info: None,
            geoip: None,
            traffic_flow: None,
            extra: Default::default(),
        });
        conn.send(&exchange).await.unwrap();
        let reply = conn.recv().await.unwrap();
        assert!(
            matches!(reply, Some(Incoming::Message(Message::ExchangeReply(_)))),
            "{reply:?}"
        );
        conn
    });

    let out = run(dandelion(data).args(["boxes", "--entrance", &origin]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(table.starts_with("ID "), "{table}");
    let row = table.lines().find(|l| l.starts_with(&id)).expect(&table);
    assert!(row.contains("active"), "{table}");

    let out = run(dandelion(data).args([
        "evict",
        &id,
        "--reason",
        "test eviction",
        "--entrance",
        &origin,
    ]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("evicted {id}: test eviction\n")
    );
    runtime.block_on(async {
        match conn.recv().await.unwrap() {
            Some(Incoming::Message(Message::Error(e))) => {
                assert_eq!(e.code.as_deref(), Some("evicted"));
            }
            other => panic!("{other:?}"),
        }
    });

    let out = run(dandelion(data).args([
        "boxes",
        "--entrance",
        &origin,
        "--state",
        "evicted",
        "--json",
    ]));
    assert!(out.status.success(), "{out:?}");
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["reason"], "test eviction");

    // A wrong token is refused with the entrance's reason.
    let out = run(dandelion(data).args([
        "evict",
        &id,
        "--reason",
        "x",
        "--entrance",
        &origin,
        "--token",
        "wrong",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403 Forbidden: wrong admin token"),
        "{out:?}"
    );
}
