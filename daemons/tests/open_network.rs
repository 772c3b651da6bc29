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

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use dandelion_core::http::HttpClient;
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::network::{JOIN_TOKEN, NetworkBuilder, entrance_id};
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
