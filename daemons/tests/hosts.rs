//! Daemons on separate hosts (network namespaces on a test LAN,
//! `dandelion_testkit::hosts`): what only shows across machines. A box on
//! another host never sends its join token over plain `ws://`, an entrance
//! refuses a token that reaches it in clear from another host, and the box
//! joins over `wss://` once the entrance has a certificate for its address and
//! the box trusts the CA that issued it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::hosts::{Host, Lan};
use dandelion_testkit::network::{JOIN_TOKEN, entrance_id};
use dandelion_testkit::process::run;
use dandelion_testkit::tls::TestCa;
use dandelion_testkit::wait_for;

const SOON: Duration = Duration::from_secs(30);

/// The entrance's box list as an operator on `host` sees it over the LAN
/// (curl on that host): with the admin token over TLS (`ca`), else the public
/// summary (a token would not cross the LAN in clear).
fn boxes_seen_from(host: &Host, entrance: &Daemon, ca: Option<&std::path::Path>) -> String {
    let mut curl = host.command("curl");
    curl.args(["-sS", "--max-time", "5"]);
    let path = match ca {
        Some(ca) => {
            curl.arg("--cacert").arg(ca);
            curl.args(["-H", &format!("Authorization: {}", entrance.admin_auth())]);
            "/api/boxes"
        }
        None => "/api/summary",
    };
    let out = run(curl.arg(format!("{}{path}", entrance.origin())));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn start_box(
    lan_host: &Host,
    dir: &std::path::Path,
    entrance_url: &str,
    ca: Option<&std::path::Path>,
) -> Daemon {
    let mut b = DaemonBuilder::new("box", dir)
        .on(lan_host)
        .set(format!("entrances = [{entrance_url:?}]"))
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set("heartbeat_interval = 1");
    if let Some(ca) = ca {
        b = b.top(format!("ca_file = {:?}", ca.display().to_string()));
    }
    b.alone().spawn()
}

#[test]
fn a_box_on_another_host_joins_over_tls_and_never_sends_its_token_in_clear() {
    let Some(mut lan) = Lan::new("box-joins") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (e_host, b_host) = (lan.host("entrance"), lan.host("box"));
    let entrance_dir = root.path().join("entrance");
    let id = entrance_id(&entrance_dir);

    // Plain ws:// across hosts: the box refuses to send the token, so it never
    // joins, and says what to configure.
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .on(&e_host)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .spawn();
    let plain_url = format!("ws://{}/dandelion/ws#{id}", entrance.addr());
    let plain_box = start_box(&b_host, &root.path().join("box-plain"), &plain_url, None);
    wait_for("the box to refuse to send its token in clear", SOON, || {
        plain_box
            .log()
            .contains("refusing to send a token in clear")
            .then_some(())
    });
    let seen = boxes_seen_from(&b_host, &entrance, None);
    assert!(
        seen.contains("\"boxes\":0,"),
        "a box joined without TLS: {seen}"
    );
    // And the entrance refuses a token that reaches it in clear from another
    // host, before looking at it (here an admin call with a made-up token).
    let out = run(b_host
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer made-up",
        ])
        .arg(format!(
            "{}/api/boxes/box-0123456789abcdef0123456789abcdef/evict",
            entrance.origin()
        )));
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(
        answer.contains("a token sent in clear from another machine is refused"),
        "{answer}"
    );
    drop(plain_box);
    drop(entrance);

    // The same entrance on TLS, with a certificate for its LAN address from a
    // CA the box trusts: the box joins, proves reachable, and is active.
    let ca = TestCa::new(&root.path().join("pki"), "lan-ca");
    let (cert, key) = ca.issue_for("entrance", &[e_host.ip().to_string()]);
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .on(&e_host)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .tls(&cert, &key)
        .spawn();
    let tls_url = format!("wss://{}/dandelion/ws#{id}", entrance.addr());
    let _box = start_box(
        &b_host,
        &root.path().join("box-tls"),
        &tls_url,
        Some(&ca.ca_file),
    );
    let listed = wait_for("the box on the other host to be active", SOON, || {
        let seen = boxes_seen_from(&b_host, &entrance, Some(&ca.ca_file));
        seen.contains("\"active\"").then_some(seen)
    });
    assert!(listed.contains(&b_host.ip().to_string()), "{listed}");
}
