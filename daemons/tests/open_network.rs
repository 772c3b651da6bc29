//! The network on the open internet, where boxes belong to strangers: who may
//! join, how many identities one household may make, what the entrance can be
//! made to fetch and what anyone may read. Real `dandelion` processes on
//! 127.0.0.1; the attacker is this process.
//!
//! - **Households in public** (`households_are_admin_only_and_the_public_sees_aggregates`).
//!   Anyone could list every box's household address, location and data URL
//!   from the entrance, and every placement from the publisher. Now those lists
//!   need the admin token; the public sees counts per region and capacity.
//! - **Reachability as a port scanner**
//!   (`the_entrance_calls_no_address_a_box_names_but_its_own`). A box's
//!   `DATA_URL` made the entrance fetch any URL — a service on the entrance's own
//!   machine or network — and follow redirects. Now it calls only the address
//!   the box connects from, never a loopback or private one on an entrance on
//!   the internet, and follows nothing.
//! - **Sybil boxes** (`boxes_join_by_invitation_once_and_a_revoked_owner_stays_out`,
//!   `new_identities_from_one_address_are_limited_per_hour`). One join token
//!   shared by every owner let anyone mint identities without end, and evicting
//!   one banned only that key. Now a box joins with a one-time invitation bound
//!   to an owner, who can be capped and revoked for good, and new identities
//!   from one address or network are few an hour.
//! - **Capacity claimed, not measured**
//!   (`boxes_that_only_claim_capacity_get_a_small_share_until_measured`). A box's
//!   self-reported upload and storage made new boxes out-rank proven ones. Now
//!   a claim never scores above neutral, measurements replace it, and boxes on
//!   probation share a tenth of the placements and viewers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::network::{JOIN_TOKEN, Network, NetworkBuilder, entrance_id, identity};
use dandelion_testkit::process::{binary, run};
use dandelion_testkit::wait_for;
use serde_json::Value;

const SOON: Duration = Duration::from_secs(30);

struct Client {
    rt: tokio::runtime::Runtime,
    http: HttpClient,
}

impl Client {
    fn new() -> Client {
        Client {
            rt: tokio::runtime::Runtime::new().expect("a tokio runtime"),
            http: HttpClient::default(),
        }
    }

    /// `GET {daemon}{path}`, as the admin when `admin`; status and body.
    fn get(&self, daemon: &Daemon, path: &str, admin: bool) -> (u16, String) {
        let auth = daemon.admin_auth();
        let headers: &[(&str, &str)] = if admin {
            &[("authorization", &auth)]
        } else {
            &[]
        };
        let url = format!("{}{path}", daemon.origin());
        let r = self
            .rt
            .block_on(self.http.get(&url, headers))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (r.status.as_u16(), r.text())
    }

    /// Serves `router` on a free port of 127.0.0.1; returns its origin.
    fn serve(&self, router: Router) -> String {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a free port");
        let origin = format!("http://{}", listener.local_addr().unwrap());
        self.rt.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        origin
    }

    fn json(&self, daemon: &Daemon, path: &str, admin: bool) -> Option<Value> {
        let (status, body) = self.get(daemon, path, admin);
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }
}

#[test]
fn households_are_admin_only_and_the_public_sees_aggregates() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 1).start();
    let c = Client::new();
    let listed = wait_for("the box to be active and ranked", SOON, || {
        let boxes = c.json(&net.entrance, "/api/boxes", true)?;
        let b = boxes.as_array()?.first()?.clone();
        let ranked = c.json(&net.publisher, "/api/ranking", true)?;
        (b["state"] == "active" && !ranked.as_array()?.is_empty()).then_some(b)
    });
    let household = listed["observed_ip"].as_str().unwrap().to_owned();
    let data_url = listed["data_url"].as_str().unwrap().to_owned();
    let id = listed["id"].as_str().unwrap().to_owned();

    // Without the token: refused, and the refusal names nothing of a household.
    for (daemon, path) in [
        (&net.entrance, "/api/boxes"),
        (&net.entrance, "/api/boxes?state=active"),
        (&net.publisher, "/api/boxes"),
        (&net.publisher, "/api/ranking"),
        (&net.publisher, "/api/files"),
        (&net.publisher, "/api/files/some.ts"),
    ] {
        let (status, body) = c.get(daemon, path, false);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            !body.contains(&id) && !body.contains(&data_url),
            "{path}: {body}"
        );
    }

    // The public view: how many, where by region, how much, and nothing else.
    let (status, body) = c.get(&net.entrance, "/api/summary", false);
    assert_eq!(status, 200, "{body}");
    for secret in [&household, &data_url, &id] {
        assert!(!body.contains(secret.as_str()), "{secret} in {body}");
    }
    let summary: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["boxes"], 1, "{summary}");
    assert_eq!(summary["states"]["active"], 1, "{summary}");
    assert_eq!(summary["regions"][0]["boxes"], 1, "{summary}");
}

/// Counts requests, answering each with `answer`.
fn counting(
    hits: &Arc<AtomicUsize>,
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> Router {
    let hits = hits.clone();
    Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { answer() }
    })
}

/// An entrance and one box whose `DATA_URL` is `data_url`; the entrance as on
/// the internet when `internet`.
fn entrance_with_box(root: &std::path::Path, internet: bool, data_url: &str) -> (Daemon, Daemon) {
    let entrance_dir = root.join("entrance");
    let id = entrance_id(&entrance_dir);
    let mut entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set("heartbeat_interval = 1");
    if internet {
        entrance = entrance.internet();
    }
    let entrance = entrance.spawn();
    let pin = format!("ws://127.0.0.1:{}/dandelion/ws#{id}", entrance.port());
    let boxd = DaemonBuilder::new("box", &root.join("box"))
        .set(format!("entrances = [{pin:?}]"))
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!("public_url = {data_url:?}"))
        .set("heartbeat_interval = 1")
        .spawn();
    (entrance, boxd)
}

/// The entrance's verdict on its only box, once it has one other than `active`.
fn unreachable_reason(c: &Client, entrance: &Daemon) -> String {
    wait_for("the box judged unreachable", SOON, || {
        let boxes = c.json(entrance, "/api/boxes", true)?;
        let b = boxes.as_array()?.first()?.clone();
        (b["state"] == "unreachable").then(|| b["reason"].as_str().unwrap_or("").to_owned())
    })
}

#[test]
fn the_entrance_calls_no_address_a_box_names_but_its_own() {
    let c = Client::new();
    // A service on the entrance's machine that nobody outside should reach.
    let inside = Arc::new(AtomicUsize::new(0));
    let service = c.serve(counting(&inside, || "internal\n".into_response()));

    // An entrance on the internet: a box naming a loopback service is never
    // called there, and is told nothing but "unreachable".
    let root = tempfile::tempdir().unwrap();
    let (entrance, _box) = entrance_with_box(root.path(), true, &service);
    let reason = unreachable_reason(&c, &entrance);
    assert!(reason.contains("loopback address"), "{reason}");
    assert_eq!(
        inside.load(Ordering::SeqCst),
        0,
        "the entrance called {service}"
    );
    let (status, summary) = c.get(&entrance, "/api/summary", false);
    assert_eq!(status, 200);
    assert!(
        !summary.contains("loopback") && !summary.contains(&service),
        "{summary}"
    );

    // A private network's entrance calls the box's own address, but follows
    // no redirect from there into the network.
    let redirects = Arc::new(AtomicUsize::new(0));
    let target = format!("{service}/admin");
    let redirector = c.serve(counting(&redirects, move || {
        (StatusCode::FOUND, [("location", target.clone())]).into_response()
    }));
    let root = tempfile::tempdir().unwrap();
    let (entrance, _box) = entrance_with_box(root.path(), false, &redirector);
    let reason = unreachable_reason(&c, &entrance);
    assert!(reason.contains("302"), "{reason}");
    assert!(
        redirects.load(Ordering::SeqCst) >= 1,
        "the box's own address was never called"
    );
    assert_eq!(inside.load(Ordering::SeqCst), 0, "a redirect was followed");
}

/// Runs `dandelion ARGS` against `entrance` as its operator; stdout, or the
/// failure's stderr as `Err`.
fn operator(scratch: &std::path::Path, entrance: &Daemon, args: &[&str]) -> Result<String, String> {
    let out = run(std::process::Command::new(binary("dandelion"))
        .env_remove("DANDELION_CONFIG")
        .env_remove("DANDELION_ADMIN_TOKEN")
        .env_remove("DANDELION_ENTRANCE")
        .arg("--data-dir")
        .arg(scratch)
        .args(args)
        .args(["--entrance", &entrance.origin()])
        .args(["--token", &Network::admin_token(entrance)]));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn invite(scratch: &std::path::Path, entrance: &Daemon, owner: &str) -> String {
    let code = operator(scratch, entrance, &["invite", owner]).unwrap();
    assert!(
        code.starts_with("dinv-") && !code.contains('\n'),
        "{code:?}"
    );
    code
}

/// The state the entrance lists box `id` in, if it lists it.
fn box_state(c: &Client, entrance: &Daemon, id: &str) -> Option<String> {
    let boxes = c.json(entrance, "/api/boxes", true)?;
    boxes
        .as_array()?
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| b["state"].as_str().unwrap_or("").to_owned())
}

#[test]
fn boxes_join_by_invitation_once_and_a_revoked_owner_stays_out() {
    let root = tempfile::tempdir().unwrap();
    let scratch = root.path().join("operator");
    let entrance_dir = root.path().join("entrance");
    let pin_id = entrance_id(&entrance_dir);
    // No join token: the default of a new install.
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .set("heartbeat_interval = 1")
        .set("max_boxes_per_owner = 2")
        .spawn();
    let pin = format!("ws://127.0.0.1:{}/dandelion/ws#{pin_id}", entrance.port());
    // Each box from its own household (address), as on the internet: the
    // refused ones' retries spend their own address's failure budget.
    let start_box = |name: &str, host: u8, credential: Option<&str>| {
        let dir = root.path().join(name);
        let (id, _) = identity(&dir, "box");
        let mut b = DaemonBuilder::new("box", &dir)
            .set(format!("entrances = [{pin:?}]"))
            .set(format!("bind_outgoing = \"127.0.0.{host}\""))
            .set("heartbeat_interval = 1");
        if let Some(code) = credential {
            b = b.set(format!("invitation = {code:?}"));
        }
        (id, b.spawn())
    };
    let told = |b: &Daemon, what: &str| {
        wait_for(&format!("the box to be told {what:?}"), SOON, || {
            b.log().contains(what).then_some(())
        });
    };
    let c = Client::new();

    // A box with no invitation is refused and told how to get one.
    let (stranger_id, stranger) = start_box("stranger", 11, None);
    told(&stranger, "not enrolled");

    // An invitation enrols one box, once.
    let code = invite(&scratch, &entrance, "alice");
    let (a_id, a) = start_box("a", 12, Some(&code));
    wait_for("box a active", SOON, || {
        (box_state(&c, &entrance, &a_id)? == "active").then_some(())
    });
    let (copy_id, copy) = start_box("copy", 13, Some(&code));
    told(&copy, "already used");

    // The cap: alice's third box is refused, her invitation left unused.
    let second = invite(&scratch, &entrance, "alice");
    let third = invite(&scratch, &entrance, "alice");
    let (b_id, _b) = start_box("b", 14, Some(&second));
    wait_for("box b active", SOON, || {
        (box_state(&c, &entrance, &b_id)? == "active").then_some(())
    });
    let (over_id, over) = start_box("over", 15, Some(&third));
    told(&over, "the most allowed (2)");
    for id in [&stranger_id, &copy_id, &over_id] {
        assert_eq!(box_state(&c, &entrance, id), None, "{id} was admitted");
    }
    // Owners and their boxes are the operator's business.
    let (status, body) = c.get(&entrance, "/api/owners", false);
    assert_eq!(status, 401, "{body}");
    let owners: Value =
        serde_json::from_str(&operator(&scratch, &entrance, &["owners", "--json"]).unwrap())
            .unwrap();
    let alice = &owners[0];
    assert_eq!(alice["owner"], "alice", "{owners}");
    assert_eq!(alice["boxes"].as_array().unwrap().len(), 2, "{owners}");
    assert_eq!(alice["pending_invitations"], 1, "{owners}");
    drop((stranger, copy, over));

    // Revoking alice removes both her boxes at once...
    operator(
        &scratch,
        &entrance,
        &["owners", "revoke", "alice", "--reason", "ran a sybil farm"],
    )
    .unwrap();
    for id in [&a_id, &b_id] {
        wait_for("alice's boxes gone", SOON, || {
            (box_state(&c, &entrance, id).as_deref() != Some("active")).then_some(())
        });
    }
    // ...and her keys cannot come back under another owner's invitation,
    // which is not used up by the attempt.
    drop(a);
    let bob = invite(&scratch, &entrance, "bob");
    let a_dir = root.path().join("a");
    let again = DaemonBuilder::new("box", &a_dir)
        .set(format!("entrances = [{pin:?}]"))
        .set("bind_outgoing = \"127.0.0.12\"")
        .set("heartbeat_interval = 1")
        .set(format!("invitation = {bob:?}"))
        .spawn();
    told(&again, "revoked owner `alice`: ran a sybil farm");
    assert_ne!(box_state(&c, &entrance, &a_id).as_deref(), Some("active"));
    let owners = operator(&scratch, &entrance, &["owners"]).unwrap();
    let bob_line = owners.lines().find(|l| l.starts_with("bob ")).unwrap();
    assert!(bob_line.split_whitespace().nth(3) == Some("1"), "{owners}");
    // No new invitations for a revoked owner.
    let refused = operator(&scratch, &entrance, &["invite", "alice"]).unwrap_err();
    assert!(refused.contains("was revoked"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_identities_from_one_address_are_limited_per_hour() {
    use dandelion_core::connection::{ConnectOptions, connect_as_with};
    use dandelion_core::console::Update;
    use dandelion_core::identity::Identity;
    use dandelion_core::ids::{NodeId, Role};

    let root = tempfile::tempdir().unwrap();
    let entrance_dir = root.path().join("entrance");
    let (entrance, pin_id) = tokio::task::spawn_blocking({
        let dir = entrance_dir.clone();
        move || {
            let id = entrance_id(&dir);
            // As on the internet: the default limits, 5 new boxes an hour per
            // address and 20 per /24.
            let e = DaemonBuilder::new("entrance", &dir)
                .set(format!("join_token = {JOIN_TOKEN:?}"))
                .internet()
                .spawn();
            (e, id)
        }
    })
    .await
    .unwrap();
    let url = format!("ws://127.0.0.1:{}/dandelion/ws", entrance.port());
    let expect = NodeId::parse(&pin_id).unwrap();
    let mut events =
        dandelion_core::console::attach(&entrance.origin(), &Network::admin_token(&entrance))
            .await
            .unwrap();

    // Twenty invented identities from one address, all holding the join token.
    let join_from = |ip: [u8; 4]| {
        let (url, expect) = (url.clone(), expect.clone());
        async move {
            let me = Identity::generate(Role::Box).unwrap();
            let options = ConnectOptions {
                local_addr: Some(ip.into()),
            };
            connect_as_with(&url, &expect, &me, Some(JOIN_TOKEN), options)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..20 {
        match join_from([127, 0, 0, 1]).await {
            Ok(conn) => admitted.push(conn),
            Err(e) => refused.push(e),
        }
    }
    assert_eq!(admitted.len(), 5, "refused: {refused:?}");
    for e in &refused {
        assert!(
            e.contains("429") && e.contains("too many new boxes from your address"),
            "{e}"
        );
    }
    // A neighbour on another address still joins: the /24 has room left.
    assert!(join_from([127, 0, 0, 2]).await.is_ok());

    // The operator sees it: counted, and one event per address.
    let metrics = c_get(&entrance, "/metrics").await;
    let counted = metrics
        .lines()
        .find(|l| l.contains("reason=\"new_identity_rate\""))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(counted >= 15.0, "{metrics}");
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let next = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("no console event about the refused identities")
            .unwrap()
            .unwrap();
        if let Update::Event(e) = next
            && e.text.contains("new boxes from address 127.0.0.1 refused")
        {
            break;
        }
    }
}

/// `GET {daemon}{path}` as its operator.
async fn c_get(daemon: &Daemon, path: &str) -> String {
    let auth = daemon.admin_auth();
    HttpClient::default()
        .get(
            &format!("{}{path}", daemon.origin()),
            &[("authorization", &auth)],
        )
        .await
        .unwrap()
        .text()
}

/// Pushes `count` small files named `{prefix}-N.ts` to the network's publisher.
fn push_files(net: &Network, dir: &std::path::Path, prefix: &str, count: usize) {
    let files = dir.join(prefix);
    std::fs::create_dir_all(&files).unwrap();
    for i in 0..count {
        std::fs::write(
            files.join(format!("{prefix}-{i}.ts")),
            format!("segment {i} of {prefix}\n"),
        )
        .unwrap();
    }
    let token = Network::admin_token(&net.publisher);
    let out = run(std::process::Command::new(binary("dandelion"))
        .env_remove("DANDELION_CONFIG")
        .arg("push")
        .arg(&files)
        .args([
            "--to",
            &net.publisher.origin(),
            "--token",
            &token,
            "--replicas",
            "1",
        ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Which box holds each placed file whose name starts with `prefix`, once all
/// `count` are placed.
fn placements(c: &Client, net: &Network, prefix: &str, count: usize) -> Vec<String> {
    wait_for(&format!("{count} files of {prefix} placed"), SOON, || {
        let files = c.json(&net.publisher, "/api/files", true)?;
        let placed: Vec<String> = files
            .as_array()?
            .iter()
            .filter(|f| f["name"].as_str().is_some_and(|n| n.contains(prefix)))
            .filter_map(|f| f["placements"][0]["box"].as_str().map(str::to_owned))
            .collect();
        (placed.len() == count).then_some(placed)
    })
}

#[test]
fn boxes_that_only_claim_capacity_get_a_small_share_until_measured() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 2)
        .publisher_setting("serve_probe_interval = 1")
        .start();
    let c = Client::new();
    let ranking = |c: &Client| c.json(&net.publisher, "/api/ranking", true);
    // Two honest boxes carry some files and answer serve probes: measured.
    wait_for("two boxes ranked", SOON, || {
        (ranking(&c)?.as_array()?.len() == 2).then_some(())
    });
    // Rounds until both are: the first one measured takes most of the next
    // round's files, as a measured box should.
    let measured = |c: &Client| -> Option<Vec<String>> {
        let r = ranking(c)?;
        let rows = r.as_array()?;
        rows.iter().all(|b| b["probation"] == false).then(|| {
            rows.iter()
                .map(|b| b["box"].as_str().unwrap().to_owned())
                .collect()
        })
    };
    let mut honest = None;
    for round in 0..8 {
        let prefix = format!("warmup{round}");
        push_files(&net, root.path(), &prefix, 10);
        placements(&c, &net, &prefix, 10);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while honest.is_none() && std::time::Instant::now() < deadline {
            honest = measured(&c);
            std::thread::sleep(Duration::from_millis(100));
        }
        if honest.is_some() {
            break;
        }
    }
    let honest = honest.expect("the honest boxes were never measured");

    // Three new boxes claim a gigabit of spare upload and a petabyte of disk.
    let entrance_ws = format!(
        "ws://127.0.0.1:{}/dandelion/ws#{}",
        net.entrance.port(),
        entrance_id(net.entrance.data_dir())
    );
    let key = dandelion_testkit::network::publisher_key(net.publisher.data_dir());
    let _boasters: Vec<Daemon> = (0..3)
        .map(|i| {
            DaemonBuilder::new("box", &root.path().join(format!("boaster-{i}")))
                .set(format!("entrances = [{entrance_ws:?}]"))
                .set(format!("join_token = {JOIN_TOKEN:?}"))
                .set(format!("publisher_keys = [{key:?}]"))
                .set("heartbeat_interval = 1")
                .set("upload_cap = \"1 GB\"")
                .set("storage_quota = \"1 PB\"")
                .spawn()
        })
        .collect();
    let table = wait_for("the boasters ranked", SOON, || {
        let r = ranking(&c)?;
        (r.as_array()?.len() == 5).then_some(r)
    });
    let score = |id: &str| {
        table
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["box"] == id)
            .map(|b| b["score"].as_f64().unwrap())
    };
    let best_honest = honest.iter().filter_map(|id| score(id)).fold(0.0, f64::max);
    for b in table.as_array().unwrap() {
        if !honest.iter().any(|h| b["box"] == h.as_str()) {
            assert_eq!(b["probation"], true, "{table}");
            assert!(
                b["score"].as_f64().unwrap() < best_honest,
                "a claim out-ranked a measured box: {table}"
            );
        }
    }

    // Placements: the three together get about a tenth, not the lion's share.
    push_files(&net, root.path(), "live", 40);
    let placed = placements(&c, &net, "live", 40);
    let to_boasters = placed.iter().filter(|b| !honest.contains(b)).count();
    assert!(
        to_boasters <= 12,
        "{to_boasters} of 40 files went to boxes that only claimed capacity"
    );
}
