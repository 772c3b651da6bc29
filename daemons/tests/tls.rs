//! TLS on every listener and client, with real processes: a whole network on
//! `https://` and `wss://` under a private CA (`ca_file`), clients that do not
//! trust a listener's certificate refused and counted, and a renewed certificate
//! served without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::network::{JOIN_TOKEN, entrance_id, publisher_key};
use dandelion_testkit::tls::TestCa;
use dandelion_testkit::wait_for;
use rustls_pki_types::{CertificateDer, ServerName};

const SOON: Duration = Duration::from_secs(30);

fn https(daemon: &Daemon) -> String {
    format!("https://127.0.0.1:{}", daemon.port())
}

fn admin_token(daemon: &Daemon) -> String {
    std::fs::read_to_string(daemon.data_dir().join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

fn refused(rt: &tokio::runtime::Runtime, http: &HttpClient, daemon: &Daemon, reason: &str) -> f64 {
    let sample = format!("dandelion_refused_total{{reason=\"{reason}\"}}");
    rt.block_on(http.get(&format!("{}/metrics", https(daemon)), &[]))
        .unwrap()
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The certificate a TLS listener presents now, read with a client of the test's
/// own that trusts `ca`.
fn presented(rt: &tokio::runtime::Runtime, port: u16, ca: &Path) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in dandelion_core::tls::read_certificates(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(dandelion_core::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    })
}

/// Entrance, box and publisher each on its own certificate; every client trusts
/// the private CA through `ca_file`; the box heartbeats over `wss://`, the
/// publisher searches and publishes over `wss://`, and a viewer is redirected to
/// the box's `https://` URL and fetches the bytes there.
#[test]
fn a_whole_network_runs_on_https_and_wss() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "dandelion-test-ca");
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let ca_line = format!("ca_file = {:?}", ca.ca_file.display().to_string());
    let publisher_dir = root.path().join("publisher");
    let key = publisher_key(&publisher_dir);
    let entrance_dir = root.path().join("entrance");
    let entrance_id = entrance_id(&entrance_dir);

    let (cert, cert_key) = ca.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .top(ca_line.clone())
        .tls(&cert, &cert_key)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
        .spawn();
    let pin = format!(
        "wss://127.0.0.1:{}/dandelion/ws#{entrance_id}",
        entrance.port()
    );
    let (cert, cert_key) = ca.issue("box");
    let boxy = DaemonBuilder::new("box", &root.path().join("box"))
        .top(ca_line.clone())
        .tls(&cert, &cert_key)
        .set(format!("entrances = [{pin:?}]"))
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("publisher_keys = [{key:?}]"))
        .set("heartbeat_interval = 1")
        .spawn();
    let (cert, cert_key) = ca.issue("publisher");
    let publisher = DaemonBuilder::new("publisher", &publisher_dir)
        .top(ca_line)
        .tls(&cert, &cert_key)
        .set(format!("entrances = [{pin:?}]"))
        .set("search_interval = 1")
        .spawn();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    // The box registered over wss:// and passed the reachability check at its
    // https:// data URL.
    let boxes_url = format!("{}/api/boxes", https(&entrance));
    let active = || {
        let auth = entrance.admin_auth();
        let boxes: serde_json::Value = rt
            .block_on(http.get(&boxes_url, &[("authorization", &auth)]))
            .ok()?
            .json()
            .ok()?;
        let b = boxes.as_array()?.first()?.clone();
        (b["state"] == "active").then_some(b)
    };
    let deadline = std::time::Instant::now() + SOON;
    let listed = loop {
        if let Some(b) = active() {
            break b;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the box is not active at the entrance:\n--- box\n{}\n--- entrance\n{}",
            boxy.log(),
            entrance.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed["data_url"], https(&boxy), "{listed}");

    // A push over https://, placed over wss://, fetched from the box over https://.
    let bytes = Bytes::from((0..200_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let auth = format!("Bearer {}", admin_token(&publisher));
    let put = rt
        .block_on(http.request(
            http::Method::PUT,
            &format!("{}/api/files/live/seg1.ts?replicas=1", https(&publisher)),
            &[("authorization", &auth)],
            bytes.clone(),
        ))
        .unwrap();
    assert_eq!(put.status, 202, "{}", put.text());
    let status_url = format!("{}/api/files/live/seg1.ts", https(&publisher));
    let placed = wait_for("the file to be placed", SOON, || {
        let s: serde_json::Value = rt
            .block_on(http.get(&status_url, &[("authorization", &auth)]))
            .ok()?
            .json()
            .ok()?;
        (s["state"] == "placed").then_some(s)
    });
    let redirect = rt
        .block_on(http.get(&format!("{}/live/seg1.ts", https(&publisher)), &[]))
        .unwrap();
    assert_eq!(redirect.status, 302, "{placed}");
    let location = redirect.headers["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/publisher-", https(&boxy))),
        "{location}"
    );
    let fetched = rt.block_on(http.get(&location, &[])).unwrap();
    assert_eq!(fetched.status, 200);
    assert!(fetched.body == bytes, "the box serves the pushed bytes");

    // The client verbs trust a private CA with --ca-file, and only with it.
    let file = root.path().join("seg2.ts");
    std::fs::write(&file, &bytes[..1000]).unwrap();
    let push = |ca: Option<&std::path::Path>| {
        let mut c = std::process::Command::new(dandelion_testkit::process::binary("dandelion"));
        c.args(["--data-dir"])
            .arg(root.path().join("client"))
            .args(
                ca.map(|ca| vec!["--ca-file".into(), ca.as_os_str().to_owned()])
                    .unwrap_or_default(),
            )
            .args([
                "push",
                "--to",
                &https(&publisher),
                "--token",
                &admin_token(&publisher),
            ])
            .arg(&file);
        dandelion_testkit::process::run(&mut c)
    };
    let refused = push(None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    let pushed = push(Some(&ca.ca_file));
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
}

/// A client that does not trust the listener's certificate, one shown an
/// expired certificate, and a plain-HTTP client on a TLS port get nothing; the
/// listener counts each refusal.
#[test]
fn clients_that_do_not_speak_or_trust_tls_are_refused_and_counted() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "trusted-ca");
    let stranger = TestCa::new(&root.path().join("other"), "stranger-ca");
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let (cert, key) = stranger.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .tls(&cert, &key)
        .spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();

    // This process trusts only `trusted-ca`: the entrance's certificate is
    // refused before any request is sent.
    let err = rt
        .block_on(http.get(&format!("{}/healthz", https(&entrance)), &[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid peer certificate"), "{err}");

    // An expired certificate from a trusted CA.
    let (old_cert, old_key) = ca.issue_expired("expired");
    let expired = DaemonBuilder::new("entrance", &root.path().join("expired"))
        .tls(&old_cert, &old_key)
        .spawn();
    let err = rt
        .block_on(http.get(&format!("{}/healthz", https(&expired)), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid peer certificate: certificate expired"),
        "{err}"
    );

    // Plain HTTP on the TLS port.
    let plain = rt.block_on(http.get(
        &format!("http://127.0.0.1:{}/healthz", entrance.port()),
        &[],
    ));
    assert!(plain.is_err(), "{plain:?}");

    // The refusals are counted (read with a client that trusts the stranger CA).
    let presented_cert = presented(&rt, entrance.port(), &stranger.ca_file);
    assert!(!presented_cert.is_empty());
    dandelion_core::tls::trust(&stranger.ca_file).unwrap();
    let http = HttpClient::default();
    wait_for("both refusals to be counted", SOON, || {
        (refused(&rt, &http, &entrance, "tls_handshake") >= 2.0).then_some(())
    });
}

/// A renewed certificate is served from the next handshake on after SIGHUP,
/// without a restart.
#[test]
fn a_renewed_certificate_is_served_after_sighup_without_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "renewing-ca");
    let (cert, key) = ca.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .tls(&cert, &key)
        .spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = presented(&rt, entrance.port(), &ca.ca_file);
    assert_eq!(
        first,
        dandelion_core::tls::read_certificates(&cert).unwrap()[0]
    );

    // The renewal lands where the configuration points, then the daemon is told.
    let (renewed_cert, renewed_key) = ca.issue("entrance-renewed");
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    let renewed = dandelion_core::tls::read_certificates(&cert).unwrap()[0].clone();
    assert_ne!(renewed, first);
    let pid = entrance.pid().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the renewed certificate to be presented", SOON, || {
        (presented(&rt, entrance.port(), &ca.ca_file) == renewed).then_some(())
    });
    assert_eq!(entrance.pid().unwrap().to_string(), pid, "no restart");
    assert!(
        entrance.log().contains("TLS certificate loaded again"),
        "{}",
        entrance.log()
    );
}

/// `systemctl reload` sends SIGHUP: it reloads certificates and stops nothing,
/// on a daemon without TLS too.
#[test]
fn sighup_stops_no_daemon() {
    let root = tempfile::tempdir().unwrap();
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance")).spawn();
    let pid = entrance.pid().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("the SIGHUP to be logged", SOON, || {
        entrance.log().contains("SIGHUP received").then_some(())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let health = rt
        .block_on(HttpClient::default().get(&format!("{}/healthz", entrance.origin()), &[]))
        .unwrap();
    assert_eq!(health.status, 200);
}

/// This machine's address on its outgoing interface, found without sending
/// anything (a UDP socket's `connect` only picks a route); `None` without one.
fn non_loopback_address() -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// One raw HTTP/1.1 request from this machine to `to`, carrying a token; the
/// status line it gets back.
fn raw_request_with_token(to: std::net::SocketAddr, token: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(to).unwrap();
    tcp.set_read_timeout(Some(SOON)).unwrap();
    write!(
        tcp,
        "GET /api/boxes HTTP/1.1\r\nHost: {to}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer
}

/// Tokens cross a network only over TLS: a client will not send one to another
/// machine over plain HTTP or WebSocket, and a daemon refuses one that arrives
/// that way, before any handler sees it. On this machine (loopback) plain works.
#[test]
fn tokens_never_cross_a_network_in_clear() {
    let Some(lan) = non_loopback_address() else {
        eprintln!("SKIPPED: this machine has no non-loopback IPv4 address to play another host");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .listen_on(std::net::Ipv4Addr::UNSPECIFIED)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .spawn();
    let token = admin_token(&entrance);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let over_lan = format!("http://{lan}:{}", entrance.port());
    let metrics = || {
        rt.block_on(http.get(&format!("{}/metrics", entrance.origin()), &[]))
            .unwrap()
            .text()
    };

    // The client side: nothing leaves.
    let auth = format!("Bearer {token}");
    let err = rt
        .block_on(http.get(
            &format!("{over_lan}/api/boxes"),
            &[("authorization", &auth)],
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("refusing to send a token in clear to http://"),
        "{err}"
    );
    let boxy =
        dandelion_core::identity::Identity::generate(dandelion_core::ids::Role::Box).unwrap();
    let entrance_id =
        dandelion_core::ids::NodeId::parse(&entrance_id(entrance.data_dir())).unwrap();
    let err = rt
        .block_on(dandelion_core::connection::connect_as(
            &format!("ws://{lan}:{}/dandelion/ws", entrance.port()),
            &entrance_id,
            &boxy,
            Some(JOIN_TOKEN),
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to send a token in clear to ws://"),
        "{err}"
    );
    assert!(
        !metrics().contains("plain_token"),
        "nothing reached the entrance"
    );

    // The server side: a token that arrives in clear from another address is
    // refused, and counted; the same request on loopback is served.
    let from_lan =
        raw_request_with_token(std::net::SocketAddr::from((lan, entrance.port())), &token);
    assert!(from_lan.starts_with("HTTP/1.1 403"), "{from_lan}");
    assert!(
        from_lan.contains("a token sent in clear from another machine is refused"),
        "{from_lan}"
    );
    assert!(
        metrics().contains("dandelion_refused_total{reason=\"plain_token\"} 1"),
        "{}",
        metrics()
    );
    let from_here = raw_request_with_token(entrance.addr(), &token);
    assert!(from_here.starts_with("HTTP/1.1 200"), "{from_here}");
}

/// `dandelion up` runs the local network on TLS under a CA of its own, and the
/// client commands trust that CA from the data directory without flags: a push,
/// `where`, and a viewer fetch through the publisher's redirect to a box.
/// `up --port-base` puts it on ports free here, so it runs beside a
/// developer's own `dandelion up`, and every URL it writes follows.
#[test]
fn dandelion_up_runs_the_local_network_on_tls() {
    use dandelion_testkit::process::{Running, binary, run};
    let base = wait_for("three free ports at a base", SOON, || {
        let base = dandelion_testkit::free_port().ok()?;
        // The entrance, the publisher (base + 2) and the one box (base + 11).
        [base, base.checked_add(2)?, base.checked_add(11)?]
            .iter()
            .all(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
            .then_some(base)
    });
    let (e, p, b) = (base, base + 2, base + 11);
    let base_arg = base.to_string();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("net");
    let dandelion = |args: &[&str]| {
        let mut c = std::process::Command::new(binary("dandelion"));
        c.arg("--data-dir")
            .arg(&data)
            .args(args)
            .current_dir(root.path());
        c
    };
    let log = std::fs::File::create(root.path().join("up.log")).unwrap();
    let _up = Running::spawn(
        dandelion(&[
            "--log-level",
            "warn",
            "up",
            "--boxes",
            "1",
            "--port-base",
            &base_arg,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log),
    );
    let network = data.join("network.json");
    wait_for("network.json", SOON, || network.exists().then_some(()));
    let net: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&network).unwrap()).unwrap();
    assert_eq!(net["publisher"], format!("https://127.0.0.1:{p}"), "{net}");
    assert_eq!(net["entrance"], format!("https://127.0.0.1:{e}"), "{net}");
    assert_eq!(
        net["boxes"],
        serde_json::json!([format!("https://127.0.0.1:{b}")]),
        "{net}"
    );
    let ca = std::path::PathBuf::from(net["ca_file"].as_str().unwrap());
    dandelion_core::tls::trust(&ca).unwrap();
    // The console context `local`: every daemon with its own token and the CA.
    let contexts = dandelion_core::console::contexts::Contexts::load(
        &data.join(dandelion_core::console::contexts::CONTEXTS_FILE),
    )
    .unwrap();
    let local = contexts.get("local", &data).unwrap();
    assert_eq!(local.ca_file.as_deref(), Some(ca.as_path()));
    let urls: Vec<&str> = local.daemons.iter().map(|d| d.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            format!("https://127.0.0.1:{e}"),
            format!("https://127.0.0.1:{p}"),
            format!("https://127.0.0.1:{b}")
        ]
    );
    for daemon in &local.daemons {
        assert!(daemon.token().is_ok_and(|t| t.len() == 64), "{daemon:?}");
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let auth = format!("Bearer {}", local.daemons[0].token().unwrap());
    wait_for("the box to be active", SOON, || {
        let boxes: serde_json::Value = rt
            .block_on(http.get(
                &format!("https://127.0.0.1:{e}/api/boxes"),
                &[("authorization", &auth)],
            ))
            .ok()?
            .json()
            .ok()?;
        (boxes.as_array()?.first()?["state"] == "active").then_some(())
    });
    // Enrolled as an operator's box is, by an invitation under an owner: no
    // join token anywhere.
    let owners = run(&mut dandelion(&["owners", "--json"]));
    let owners: serde_json::Value = serde_json::from_slice(&owners.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&owners.stderr)));
    assert_eq!(owners[0]["owner"], "local", "{owners}");
    assert_eq!(owners[0]["boxes"].as_array().unwrap().len(), 1, "{owners}");
    assert!(!data.join("join.token").exists() && !data.join("entrance/join.token").exists());

    let file = root.path().join("seg.ts");
    std::fs::write(&file, vec![7u8; 50_000]).unwrap();
    let pushed = run(&mut dandelion(&["push", file.to_str().unwrap()]));
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    wait_for(
        "`dandelion where` to show the copy on https://",
        SOON,
        || {
            let out = run(&mut dandelion(&["where", "seg.ts"]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(&format!("https://127.0.0.1:{b}/publisher-"))
                .then_some(())
        },
    );
    // An address as typed, without a scheme, is the https:// daemon there.
    let token = std::fs::read_to_string(data.join("publisher/admin.token")).unwrap();
    let typed = format!("127.0.0.1:{p}");
    let again = run(&mut dandelion(&[
        "push",
        file.to_str().unwrap(),
        "--as",
        "typed.ts",
        "--to",
        &typed,
        "--token",
        token.trim(),
    ]));
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Without the token, the error says how to give it, not which file was missing.
    let tokenless = run(&mut dandelion(&[
        "push",
        file.to_str().unwrap(),
        "--to",
        &typed,
    ]));
    let said = String::from_utf8_lossy(&tokenless.stderr);
    assert!(
        said.contains(&format!(
            "the publisher at https://{typed} needs its admin token: pass --token"
        )) && !said.contains("No such file"),
        "{said}"
    );
    // An entrance takes no pushes, and the error says so.
    let wrong = run(&mut dandelion(&[
        "push",
        file.to_str().unwrap(),
        "--to",
        &format!("127.0.0.1:{e}"),
        "--token",
        token.trim(),
    ]));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && said.contains("no publisher answers there"),
        "{said}"
    );
    let redirect = rt
        .block_on(http.get(&format!("https://127.0.0.1:{p}/seg.ts"), &[]))
        .unwrap();
    assert_eq!(redirect.status, 302);
    let location = redirect.headers["location"].to_str().unwrap().to_owned();
    let fetched = rt.block_on(http.get(&location, &[])).unwrap();
    assert_eq!(fetched.body.len(), 50_000);

    // From anywhere else, the context alone says where, with which token and CA.
    let elsewhere = root.path().join("elsewhere");
    let with_context = |context: &str, args: &[&str]| {
        let mut c = std::process::Command::new(binary("dandelion"));
        c.arg("--data-dir")
            .arg(&elsewhere)
            .args(args)
            .arg("--contexts")
            .arg(data.join("contexts.toml"))
            .args(["--context", context])
            .current_dir(root.path());
        c
    };
    let pushed = run(&mut with_context(
        "local",
        &["push", file.to_str().unwrap(), "--as", "again.ts"],
    ));
    assert!(
        String::from_utf8_lossy(&pushed.stdout)
            .contains(&format!("players: https://127.0.0.1:{p}/again.ts")),
        "{}{}",
        String::from_utf8_lossy(&pushed.stdout),
        String::from_utf8_lossy(&pushed.stderr)
    );
    let listed = run(&mut with_context("local", &["boxes", "--json"]));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("\"active\""),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let unknown = run(&mut with_context("prod", &["boxes"]));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no context named `prod`"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

/// Every upgrade request that reached the relay, with the credentials on it.
#[derive(Clone, Default)]
struct RelayLog(Arc<std::sync::Mutex<Vec<Vec<String>>>>);

#[derive(Clone)]
struct Relay {
    entrance: String,
    http: HttpClient,
    log: RelayLog,
}

/// Passes the client's nonce request through to the real entrance, so the
/// client gets the entrance's own challenge and proof.
async fn relay_nonce(
    axum::extract::State(r): axum::extract::State<Relay>,
    uri: http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let query = uri.query().unwrap_or_default();
    let url = format!("{}{}?{query}", r.entrance, dandelion_core::auth::NONCE_PATH);
    match r.http.get(&url, &[]).await {
        Ok(answer) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            answer.body,
        )
            .into_response(),
        Err(e) => (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

/// Records what a client presented on its upgrade request.
async fn relay_upgrade(
    axum::extract::State(r): axum::extract::State<Relay>,
    headers: http::HeaderMap,
) -> http::StatusCode {
    let credentials = headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("x-dandelion-") || *name == http::header::AUTHORIZATION
        })
        .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap_or("?")))
        .collect();
    r.log.0.lock().unwrap().push(credentials);
    http::StatusCode::BAD_GATEWAY
}

/// A relay that ends TLS with a certificate the client trusts, at a URL the
/// client pinned to the real entrance's ID, forwards the nonce exchange to the
/// entrance. The entrance's proof signs the relay's own TLS connection to it,
/// so the client, checking it against its connection to the relay, refuses:
/// the relay never sees the join token or a signature it could present.
#[test]
fn a_relay_at_a_pinned_url_gets_no_token_and_no_signature() {
    use dandelion_daemons::listener::Listener;
    use dandelion_daemons::server::{Common, serve_on};
    use dandelion_daemons::shutdown::Shutdown;
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "relay-test-ca");
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let entrance_dir = root.path().join("entrance");
    let entrance_id = dandelion_core::ids::NodeId::parse(&entrance_id(&entrance_dir)).unwrap();
    let (cert, key) = ca.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .tls(&cert, &key)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .spawn();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let log = RelayLog::default();
    let (relay_cert, relay_key) = ca.issue("relay");
    let shutdown = Shutdown::new();
    let relay_url = rt.block_on(async {
        let config = dandelion_core::config::Config {
            data_dir: root.path().join("relay"),
            ..Default::default()
        };
        let common = Arc::new(
            Common::open(
                &config,
                dandelion_core::ids::Role::Entrance,
                shutdown.clone(),
            )
            .await
            .unwrap(),
        );
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let tls = Arc::new(dandelion_core::tls::ServerTls::load(&relay_cert, &relay_key).unwrap());
        let listener = Listener::tls(tcp, tls, common).unwrap();
        let relay = Relay {
            entrance: https(&entrance),
            http: http.clone(),
            log: log.clone(),
        };
        let router = axum::Router::new()
            .route(
                dandelion_core::auth::NONCE_PATH,
                axum::routing::get(relay_nonce),
            )
            .route("/dandelion/ws", axum::routing::any(relay_upgrade))
            .with_state(relay);
        tokio::spawn(serve_on(listener, router, shutdown.clone(), None));
        format!("wss://{addr}/dandelion/ws")
    });

    let boxy =
        dandelion_core::identity::Identity::generate(dandelion_core::ids::Role::Box).unwrap();
    let err = rt
        .block_on(dandelion_core::connection::connect_as(
            &relay_url,
            &entrance_id,
            &boxy,
            Some(JOIN_TOKEN),
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            dandelion_core::connection::ConnectionError::Unproven { .. }
        ) && err.to_string().contains("signature does not verify"),
        "the client took the relayed proof: {err}"
    );
    let seen = log.0.lock().unwrap().clone();
    assert!(seen.is_empty(), "the relay got credentials: {seen:?}");
    shutdown.trigger();
}

/// A client proof signed for another TLS connection (as a relay would hold)
/// is refused on this one, and counted.
#[test]
fn a_session_proof_for_another_tls_connection_is_refused() {
    use dandelion_core::auth::{Challenge, Channel, Claim};
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "moved-proof-ca");
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let entrance_dir = root.path().join("entrance");
    let entrance_id = dandelion_core::ids::NodeId::parse(&entrance_id(&entrance_dir)).unwrap();
    let (cert, key) = ca.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .tls(&cert, &key)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let boxy =
        dandelion_core::identity::Identity::generate(dandelion_core::ids::Role::Box).unwrap();
    let challenge: Challenge = rt
        .block_on(http.get(
            &format!("{}{}", https(&entrance), dandelion_core::auth::NONCE_PATH),
            &[],
        ))
        .unwrap()
        .json()
        .unwrap();
    let elsewhere = Channel::TlsExporter([7; 32]);
    let proof = boxy.prove(&Claim::session_client(&entrance_id, &challenge.nonce).on(elsewhere));
    let token = format!("Bearer {JOIN_TOKEN}");
    let mut headers = proof.headers().to_vec();
    headers.push(("authorization", &token));
    let err = rt
        .block_on(dandelion_core::connection::connect(
            &format!("wss://127.0.0.1:{}/dandelion/ws", entrance.port()),
            &headers,
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused with 401") && err.contains("signature does not verify"),
        "{err}"
    );
    assert!(refused(&rt, &http, &entrance, "bad_signature") >= 1.0);
}

/// A flood of connections that never finish their TLS handshake holds at most
/// `MAX_HANDSHAKES` of them, each for at most `HANDSHAKE_TIMEOUT`: the rest are
/// closed at once and counted, and once the flood's handshakes time out a real
/// client is served again.
#[test]
fn a_tls_handshake_flood_is_bounded_and_passes() {
    use dandelion_daemons::listener::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
    use std::io::Read;
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "flood-ca");
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let (cert, key) = ca.issue("entrance");
    // The flood comes from one address: lift that cap, so the handshake bound
    // is what stops it (the per-address cap is abuse.rs's).
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .top("[limits]")
        .top("max_connections_per_address = 4096")
        .top("tls_handshakes_per_minute = 0")
        .tls(&cert, &key)
        .spawn();
    let extra = 40;
    let flood: Vec<std::net::TcpStream> = (0..MAX_HANDSHAKES + extra)
        .map(|_| std::net::TcpStream::connect(entrance.addr()).unwrap())
        .collect();
    // The connections beyond the bound are closed without a word; the first
    // ones are still held, waiting for a ClientHello.
    let closed_now = |tcp: &std::net::TcpStream| {
        let mut tcp = tcp;
        tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        match tcp.read(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        }
    };
    let closed = flood
        .iter()
        .rev()
        .take(extra)
        .filter(|t| closed_now(t))
        .count();
    assert_eq!(closed, extra, "every connection beyond the bound is closed");
    assert!(!closed_now(&flood[0]), "the first ones are held");
    // Once the held handshakes time out, a real client is served.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let started = std::time::Instant::now();
    wait_for(
        "the entrance to serve again",
        HANDSHAKE_TIMEOUT + SOON,
        || {
            let r = rt.block_on(http.get(&format!("{}/healthz", https(&entrance)), &[]));
            r.ok().filter(|r| r.status == 200).map(|_| ())
        },
    );
    assert!(started.elapsed() < HANDSHAKE_TIMEOUT + SOON);
    assert!(refused(&rt, &http, &entrance, "tls_busy") >= extra as f64);
    assert!(refused(&rt, &http, &entrance, "tls_timeout") >= 1.0);
    drop(flood);
}

/// TLS 1.2 without the extended master secret (RFC 7627) lets a relay make two
/// connections share keying material, which would undo the channel binding of
/// the session proofs: a listener refuses such a client. The same client with
/// the extension gets through, so the refusal is the missing extension's.
#[test]
fn tls_1_2_without_the_extended_master_secret_is_refused() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no openssl binary to play a TLS 1.2 client without EMS");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "trusted-ca");
    let (cert, key) = ca.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .tls(&cert, &key)
        .spawn();
    // OpenSSL has no s_client flag for it; its configuration turns EMS off.
    let no_ems = root.path().join("no-ems.cnf");
    std::fs::write(
        &no_ems,
        "openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n[d]\nOptions = -ExtendedMasterSecret\n",
    )
    .unwrap();
    let handshake = |config: Option<&Path>| {
        let mut command = std::process::Command::new("openssl");
        command
            .args(["s_client", "-tls1_2", "-brief", "-connect"])
            .arg(format!("127.0.0.1:{}", entrance.port()))
            .arg("-CAfile")
            .arg(&ca.ca_file)
            .stdin(std::process::Stdio::null());
        if let Some(config) = config {
            command.env("OPENSSL_CONF", config);
        }
        let out = dandelion_testkit::process::run(&mut command);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let with_ems = handshake(None);
    assert!(
        with_ems.contains("Protocol version: TLSv1.2") && with_ems.contains("Verification: OK"),
        "a TLS 1.2 client with EMS should get through:\n{with_ems}"
    );
    let without = handshake(Some(&no_ems));
    assert!(
        !without.contains("Protocol version: TLSv1.2"),
        "a TLS 1.2 client without EMS got a session:\n{without}"
    );
    assert!(without.contains("alert"), "no TLS alert:\n{without}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let http = HttpClient::default();
    wait_for("the refusal to be counted", SOON, || {
        (refused(&rt, &http, &entrance, "tls_handshake") >= 1.0).then_some(())
    });
}

/// Each TLS handshake costs the listener a key exchange: one address may start
/// `tls_handshakes_per_minute` of them, and its connections past that are
/// closed before any handshake, while another address is served as usual.
#[test]
fn tls_handshakes_are_rate_limited_per_address() {
    let root = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&root.path().join("pki"), "rate-ca");
    dandelion_core::tls::trust(&ca.ca_file).unwrap();
    let (cert, key) = ca.issue("entrance");
    let entrance = DaemonBuilder::new("entrance", &root.path().join("entrance"))
        .top("[limits]")
        .top("tls_handshakes_per_minute = 5")
        .tls(&cert, &key)
        .spawn();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let flood: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            rt.block_on(async {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(([127, 0, 0, 7], 0).into()).unwrap();
                let stream = socket.connect(entrance.addr()).await.unwrap();
                stream.into_std().unwrap()
            })
        })
        .collect();
    // Handshakes start in tasks of their own, in no set order: which three
    // are closed is the scheduler's choice, that three are is the limit's.
    let closed = |tcp: &std::net::TcpStream| {
        tcp.set_nonblocking(true).unwrap();
        match tcp.peek(&mut [0u8; 1]) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    };
    wait_for("three connections closed", Duration::from_secs(5), || {
        (flood.iter().filter(|t| closed(t)).count() >= 3).then_some(())
    });
    assert_eq!(
        flood.iter().filter(|t| closed(t)).count(),
        3,
        "the five within the rate wait for their ClientHello"
    );
    let http = HttpClient::default();
    let health = rt.block_on(http.get(&format!("{}/healthz", https(&entrance)), &[]));
    assert_eq!(health.unwrap().status, 200, "another address is served");
    assert_eq!(refused(&rt, &http, &entrance, "tls_rate"), 3.0);
}
