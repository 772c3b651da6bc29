//! The entrance in-process on 127.0.0.1:0, with simulated boxes (each its own key
//! pair, connecting from its own 127.0.0.x address and answering reachability
//! checks) and publishers, over real sockets and a real store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use bytes::Bytes;
use dandelion_core::auth::{Claim, Nonce, Proof};
use dandelion_core::config::Config;
use dandelion_core::connection::{
    ClientConnection, ConnectOptions, Incoming, connect, connect_as, connect_as_with,
};
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::protocol::{
    Exchange, GeoIp, Goodbye, Header, Message, Search, SearchOrder, SearchReply,
};
use dandelion_daemons::entrance::{self, api::BoxView};
use dandelion_daemons::shutdown::Shutdown;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const JOIN: &str = "join-the-network";
const DEADLINE: Duration = Duration::from_secs(15);

/// Polls an async check until it gives `Some`, or fails the test at the deadline.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

struct TestEntrance {
    id: NodeId,
    origin: String,
    url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    publisher: Arc<Identity>,
    /// `Bearer <admin token>` (the entrance writes it before it listens).
    admin_auth: String,
}

impl TestEntrance {
    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }

    /// The entrance's `/metrics` text.
    async fn metrics(&self) -> String {
        HttpClient::default()
            .get(&format!("{}/metrics", self.origin), &[])
            .await
            .unwrap()
            .text()
    }

    async fn api_boxes(&self, query: &str) -> Vec<BoxView> {
        HttpClient::default()
            .get(
                &format!("{}/api/boxes{query}", self.origin),
                &[("authorization", &self.admin_auth)],
            )
            .await
            .unwrap()
            .json()
            .unwrap()
    }

    async fn state_of(&self, id: &NodeId) -> Option<BoxView> {
        self.api_boxes("")
            .await
            .into_iter()
            .find(|b| b.id == id.as_str())
    }

    async fn search(&self, search: impl FnOnce(&mut Search)) -> SearchReply {
        let mut conn = connect_as(&self.url, &self.id, &self.publisher, None)
            .await
            .unwrap();
        let mut s = Search {
            header: Header::new(self.publisher.id().clone()),
            geoip: None,
            count: None,
            order: None,
            unverified: None,
            watch: None,
            extra: Default::default(),
        };
        search(&mut s);
        conn.send(&Message::Search(s)).await.unwrap();
        match conn.recv().await.unwrap() {
            Some(Incoming::Message(Message::SearchReply(r))) => r,
            other => panic!("expected a SEARCH reply, got {other:?}"),
        }
    }

    async fn search_ids(&self) -> Vec<String> {
        self.search(|_| {})
            .await
            .boxes
            .iter()
            .map(|b| b.header.id.to_string())
            .collect()
    }
}

fn base_config(dir: &Path, publisher: &Identity) -> Config {
    let mut c = Config {
        data_dir: dir.to_owned(),
        log_file: false,
        ..Config::default()
    };
    c.entrance.join_token = Some(JOIN.into());
    // Simulated boxes serve on this machine's loopback addresses.
    c.entrance.reachability_private = true;
    // Many simulated boxes come from one address.
    c.entrance.new_boxes_per_address_per_hour = 0;
    c.entrance.new_boxes_per_prefix_per_hour = 0;
    c.entrance.publisher_keys = vec![publisher.public_key_hex()];
    c.entrance.heartbeat_interval = Duration::from_secs(1);
    c.entrance.expire_box_time = Duration::from_secs(30);
    c.entrance.geoip_db = Some(dandelion_testkit::geo::write_city_db(dir));
    c
}

/// The content of a file another task is about to write.
async fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = tokio::fs::read_to_string(path).await
            && !text.trim().is_empty()
        {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} was not written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_with(config: &Config, publisher: &Arc<Identity>) -> TestEntrance {
    let listener = dandelion_daemons::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let config = config.clone();
    let token_file = config.admin_token_file(Role::Entrance);
    let id = Identity::load_or_create(&config.data_dir, Role::Entrance)
        .unwrap()
        .id()
        .clone();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { entrance::run(listener, &config, shutdown).await }
    });
    let admin_auth = wait_for_file(&token_file).await;
    TestEntrance {
        admin_auth: format!("Bearer {}", admin_auth.trim()),
        id,
        origin: format!("http://{addr}"),
        url: format!("ws://{addr}/dandelion/ws"),
        shutdown,
        task,
        publisher: publisher.clone(),
    }
}

/// What a simulated box's reachability endpoint signs with.
#[derive(Clone)]
struct Signer(Arc<Identity>);

#[derive(Deserialize)]
struct ReachQuery {
    nonce: String,
    verifier: String,
}

async fn reachability(
    State((signer, signed_url)): State<(Signer, String)>,
    Query(q): Query<ReachQuery>,
) -> axum::Json<Proof> {
    let verifier = NodeId::parse(&q.verifier).unwrap();
    let nonce = Nonce::parse(&q.nonce).unwrap();
    let claim = Claim::reachability(&verifier, &nonce, &signed_url).unwrap();
    axum::Json(signer.0.prove(&claim))
}

/// A simulated box: its key pair, its source address and a data URL that
/// answers reachability checks (signed by `signer`, normally itself).
struct SimBox {
    identity: Arc<Identity>,
    local: IpAddr,
    data_url: String,
}

impl SimBox {
    async fn new(last_octet: u8) -> SimBox {
        let identity = Arc::new(Identity::generate(Role::Box).unwrap());
        let signer = Signer(identity.clone());
        SimBox::serving(identity, last_octet, Some(signer)).await
    }

    async fn serving(identity: Arc<Identity>, last_octet: u8, signer: Option<Signer>) -> SimBox {
        SimBox::serving_as(identity, last_octet, signer, None).await
    }

    /// [`SimBox::serving`], the reachability answer naming `signed_url` instead
    /// of the data URL the box advertises, when given.
    async fn serving_as(
        identity: Arc<Identity>,
        last_octet: u8,
        signer: Option<Signer>,
        signed_url: Option<&str>,
    ) -> SimBox {
        let local = IpAddr::from([127, 0, 0, last_octet]);
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(local, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let data_url = format!("http://{addr}");
        if let Some(signer) = signer {
            let app = Router::new()
                .route(dandelion_core::auth::REACHABILITY_PATH, get(reachability))
                .with_state((
                    signer,
                    signed_url.map_or_else(|| data_url.clone(), str::to_owned),
                ));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        // Without a signer the listener is dropped: nothing answers there.
        SimBox {
            identity,
            local,
            data_url,
        }
    }

    fn id(&self) -> &NodeId {
        self.identity.id()
    }

    fn exchange(&self) -> Message {
        Message::Exchange(Exchange {
            header: Header::new(self.id().clone()),
            connect_ws: Some(format!("{}/dandelion/{}/ws", self.data_url, self.id())),
            data_url: Some(self.data_url.clone()),
            system_info: None,
            geoip: None,
            traffic_flow: None,
            extra: Default::default(),
        })
    }

    async fn connect(&self, e: &TestEntrance) -> ClientConnection {
        let options = ConnectOptions {
            local_addr: Some(self.local),
        };
        connect_as_with(&e.url, &e.id, &self.identity, Some(JOIN), options)
            .await
            .unwrap()
    }

    /// One heartbeat, returning the entrance's reply.
    async fn beat(&self, conn: &mut ClientConnection) -> Message {
        conn.send(&self.exchange()).await.unwrap();
        match conn.recv().await.unwrap() {
            Some(Incoming::Message(m)) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    async fn register(&self, e: &TestEntrance) -> ClientConnection {
        let mut conn = self.connect(e).await;
        let reply = self.beat(&mut conn).await;
        assert!(matches!(reply, Message::ExchangeReply(_)), "{reply:?}");
        conn
    }
}

#[tokio::test]
async fn boxes_register_and_appear_with_their_cities_in_search_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let e = start_with(&base_config(dir.path(), &publisher), &publisher).await;
    let boxes = [
        SimBox::new(2).await,
        SimBox::new(3).await,
        SimBox::new(4).await,
    ];
    let mut conns = Vec::new();
    for b in &boxes {
        let mut conn = b.connect(&e).await;
        match b.beat(&mut conn).await {
            Message::ExchangeReply(r) => {
                assert_eq!(r.entrance_urls[0], format!("{}/", e.url));
                assert_eq!(r.publisher_keys, Some(vec![publisher.public_key_hex()]));
                assert_eq!(r.heartbeat_interval, Some(1));
            }
            other => panic!("{other:?}"),
        }
        conns.push(conn);
    }
    let reply = e.search(|_| {}).await;
    let mut cities: Vec<_> = reply
        .boxes
        .iter()
        .map(|b| {
            assert_eq!(
                b.extra.get("STATE").and_then(|s| s.as_str()),
                Some("active")
            );
            b.geoip.as_ref().unwrap().city.clone().unwrap()
        })
        .collect();
    cities.sort();
    assert_eq!(cities, ["London", "Taipei", "Tokyo"]);
    // Nearest to Seoul: Tokyo, then Taipei, then London; COUNT is honoured.
    let seoul = GeoIp {
        loc: Some("37.5665,126.9780".into()),
        ..GeoIp::default()
    };
    let reply = e
        .search(|s| {
            s.geoip = Some(seoul);
            s.order = Some(SearchOrder::Nearest);
            s.count = Some(2);
        })
        .await;
    let near: Vec<_> = reply.boxes.iter().map(|b| b.header.id.clone()).collect();
    assert_eq!(near, [boxes[1].id().clone(), boxes[0].id().clone()]);

    let api = e.api_boxes("").await;
    assert_eq!(api.len(), 3);
    let london = api.iter().find(|b| b.id == boxes[2].id().as_str()).unwrap();
    assert_eq!(london.geo.city.as_deref(), Some("London"));
    assert_eq!(london.geo_source, "geoip");
    assert_eq!(london.observed_ip.as_deref(), Some("127.0.0.4"));
    assert_eq!(london.state.as_str(), "active");
    assert_eq!(london.reason, "reachability check passed");
    let jp = e.api_boxes("?country=JP&state=active").await;
    assert_eq!(jp.len(), 1);
    assert_eq!(jp[0].id, boxes[1].id().as_str());
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("dandelion_heartbeats_total 3"),
        "{metrics}"
    );
    eventually("the boxes gauge", || {
        let origin = e.origin.clone();
        async move {
            let m = HttpClient::default()
                .get(&format!("{origin}/metrics"), &[])
                .await
                .ok()?
                .text();
            m.contains("dandelion_boxes{state=\"active\"} 3")
                .then_some(())
        }
    })
    .await;
    drop(conns);
    e.stop().await;
}

#[tokio::test]
async fn a_silent_box_goes_stale_then_expires_and_goodbye_removes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let mut config = base_config(dir.path(), &publisher);
    config.entrance.heartbeat_interval = Duration::from_millis(300);
    config.entrance.expire_box_time = Duration::from_secs(2);
    let e = start_with(&config, &publisher).await;
    let silent = SimBox::new(2).await;
    let leaving = SimBox::new(3).await;
    let _conn = silent.register(&e).await;
    let mut conn = leaving.register(&e).await;
    assert_eq!(e.search_ids().await.len(), 2);

    conn.send(&Message::Goodbye(Goodbye {
        header: Header::new(leaving.id().clone()),
        reason: Some("SIGTERM".into()),
    }))
    .await
    .unwrap();
    assert_eq!(
        conn.recv().await.unwrap(),
        None,
        "the entrance closes after a goodbye"
    );
    assert!(
        e.state_of(leaving.id()).await.is_none(),
        "goodbye removes at once"
    );

    let stale = eventually("the silent box to go stale", || async {
        e.state_of(silent.id())
            .await
            .filter(|b| b.state.as_str() == "stale")
    })
    .await;
    assert!(stale.reason.contains("3 missed"), "{}", stale.reason);
    assert!(
        e.search_ids().await.is_empty(),
        "stale boxes are not handed out"
    );
    eventually("the silent box to expire", || async {
        e.state_of(silent.id()).await.is_none().then_some(())
    })
    .await;
    e.stop().await;
}

#[tokio::test]
async fn an_evicted_box_is_removed_told_why_and_refused_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let e = start_with(&base_config(dir.path(), &publisher), &publisher).await;
    let b = SimBox::new(2).await;
    let mut conn = b.register(&e).await;
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let http = HttpClient::default();
    let url = format!("{}/api/boxes/{}/evict", e.origin, b.id());
    let body = Bytes::from_static(br#"{"reason": "serving corrupt files"}"#);
    let denied = http
        .request(
            http::Method::POST,
            &url,
            &[("content-type", "application/json")],
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(denied.status, 401);
    let auth = format!("Bearer {}", token.trim());
    let ok = http
        .request(
            http::Method::POST,
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    match conn.recv().await.unwrap() {
        Some(Incoming::Message(Message::Error(err))) => {
            assert_eq!(err.code.as_deref(), Some("evicted"));
            assert!(err.error.contains("serving corrupt files"), "{}", err.error);
        }
        other => panic!("expected the eviction notice, got {other:?}"),
    }
    assert!(e.search_ids().await.is_empty());
    let listed = e.state_of(b.id()).await.unwrap();
    assert_eq!(listed.state.as_str(), "evicted");
    assert_eq!(listed.reason, "serving corrupt files");
    let options = ConnectOptions {
        local_addr: Some(b.local),
    };
    let err = connect_as_with(&e.url, &e.id, &b.identity, Some(JOIN), options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refused with 403 Forbidden: evicted: serving corrupt files; banned until"),
        "{err}"
    );
    let metrics = e.metrics().await;
    assert!(metrics.contains("dandelion_evictions_total 1"), "{metrics}");
    assert!(
        metrics.contains("dandelion_refused_total{reason=\"evicted\"} 1"),
        "{metrics}"
    );
    e.stop().await;
}

#[tokio::test]
async fn an_unreachable_box_is_never_handed_to_publishers() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let e = start_with(&base_config(dir.path(), &publisher), &publisher).await;
    let good = SimBox::new(2).await;
    let dark = SimBox::serving(Arc::new(Identity::generate(Role::Box).unwrap()), 3, None).await;
    // Answers, but signs as another box: someone else's data URL.
    let impostor = {
        let other = Arc::new(Identity::generate(Role::Box).unwrap());
        SimBox::serving(
            Arc::new(Identity::generate(Role::Box).unwrap()),
            4,
            Some(Signer(other)),
        )
        .await
    };
    // Its own key, but a proof that it answers at another URL: a proof collected
    // at one address vouches for no other.
    let elsewhere = {
        let own = Arc::new(Identity::generate(Role::Box).unwrap());
        let signer = Signer(own.clone());
        SimBox::serving_as(own, 5, Some(signer), Some("http://127.0.0.1:9")).await
    };
    let _c1 = good.register(&e).await;
    let _c2 = dark.register(&e).await;
    let _c3 = impostor.register(&e).await;
    let _c4 = elsewhere.register(&e).await;
    let dark_view = e.state_of(dark.id()).await.unwrap();
    assert_eq!(dark_view.state.as_str(), "unreachable");
    assert!(
        dark_view.reason.starts_with("reachability check failed"),
        "{}",
        dark_view.reason
    );
    let imp_view = e.state_of(impostor.id()).await.unwrap();
    assert_eq!(imp_view.state.as_str(), "unreachable");
    assert!(
        imp_view.reason.contains("not by this box"),
        "{}",
        imp_view.reason
    );
    let moved = e.state_of(elsewhere.id()).await.unwrap();
    assert_eq!(moved.state.as_str(), "unreachable");
    assert!(
        moved.reason.contains("the signature does not verify"),
        "{}",
        moved.reason
    );
    assert_eq!(e.search_ids().await, [good.id().to_string()]);
    assert_eq!(e.api_boxes("?state=unreachable").await.len(), 3);
    e.stop().await;
}

#[tokio::test]
async fn a_box_cannot_use_another_boxs_id() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let e = start_with(&base_config(dir.path(), &publisher), &publisher).await;
    let victim = SimBox::new(2).await;
    let _v = victim.register(&e).await;
    let attacker = SimBox::new(3).await;
    // At the handshake: a proof under the victim's ID with the attacker's key.
    let http = HttpClient::default();
    let challenge: dandelion_core::auth::Challenge = http
        .get(
            &format!("{}{}", e.origin, dandelion_core::auth::NONCE_PATH),
            &[],
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let mut proof = attacker
        .identity
        .prove(&Claim::session_client(&challenge.id, &challenge.nonce));
    proof.id = victim.id().to_string();
    let auth = format!("Bearer {JOIN}");
    let mut headers = proof.headers().to_vec();
    headers.push(("authorization", &auth));
    let err = connect(&e.url, &headers).await.unwrap_err().to_string();
    assert!(err.contains("401 Unauthorized: ID box-"), "{err}");
    // Inside its own session: a heartbeat or goodbye naming the victim.
    let mut conn = attacker.connect(&e).await;
    let forged = victim.exchange();
    conn.send(&forged).await.unwrap();
    match conn.recv().await.unwrap() {
        Some(Incoming::Message(Message::Error(err))) => {
            assert_eq!(err.code.as_deref(), Some("id_mismatch"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.recv().await.unwrap(), None);
    assert_eq!(
        e.state_of(victim.id()).await.unwrap().state.as_str(),
        "active"
    );
    // Without the join token, or as a publisher that is not configured.
    let err = connect_as(&e.url, &e.id, &attacker.identity, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("403 Forbidden: wrong or missing join token"),
        "{err}"
    );
    let stranger = Identity::generate(Role::Publisher).unwrap();
    let err = connect_as(&e.url, &e.id, &stranger, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not one of this entrance's publisher_keys"),
        "{err}"
    );
    e.stop().await;
}

#[tokio::test]
async fn a_restarted_entrance_has_its_boxes_back() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let config = base_config(dir.path(), &publisher);
    let e = start_with(&config, &publisher).await;
    let b = SimBox::new(2).await;
    let conn = b.register(&e).await;
    drop(conn);
    e.stop().await;
    let e = start_with(&config, &publisher).await;
    assert_eq!(e.search_ids().await, [b.id().to_string()]);
    assert_eq!(
        e.state_of(b.id()).await.unwrap().geo.city.as_deref(),
        Some("Taipei")
    );
    let _conn = b.register(&e).await;
    e.stop().await;
}

#[tokio::test]
async fn two_entrances_on_one_redis_namespace_return_the_same_boxes() {
    let redis = dandelion_testkit::redis::RedisServer::start();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut c1 = base_config(d1.path(), &publisher);
    let mut c2 = base_config(d2.path(), &publisher);
    for c in [&mut c1, &mut c2] {
        c.store = redis.url();
        c.entrance.namespace = Some("test-net".into());
    }
    let e1 = start_with(&c1, &publisher).await;
    let e2 = start_with(&c2, &publisher).await;
    let a = SimBox::new(2).await;
    let b = SimBox::new(3).await;
    let _ca = a.register(&e1).await;
    let mut cb = b.register(&e2).await;
    let mut s1 = e1.search_ids().await;
    let mut s2 = e2.search_ids().await;
    s1.sort();
    s2.sort();
    assert_eq!(s1.len(), 2);
    assert_eq!(s1, s2);
    // An eviction on one entrance reaches a box heartbeating to the other.
    let token = std::fs::read_to_string(d1.path().join("admin.token")).unwrap();
    let auth = format!("Bearer {}", token.trim());
    let ok = HttpClient::default()
        .request(
            http::Method::POST,
            &format!("{}/api/boxes/{}/evict", e1.origin, b.id()),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(br#"{"reason": "misbehaving"}"#),
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    match b.beat(&mut cb).await {
        Message::Error(err) => {
            assert_eq!(err.code.as_deref(), Some("evicted"));
            assert!(err.error.contains("misbehaving"), "{}", err.error);
        }
        other => panic!("expected the eviction notice, got {other:?}"),
    }
    assert_eq!(e2.search_ids().await, [a.id().to_string()]);
    e1.stop().await;
    e2.stop().await;
}

#[tokio::test]
async fn self_preservation_holds_expiry_back_when_most_boxes_go_silent() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let mut config = base_config(dir.path(), &publisher);
    config.entrance.heartbeat_interval = Duration::from_millis(200);
    config.entrance.expire_box_time = Duration::from_secs(2);
    let e = start_with(&config, &publisher).await;
    let mut conns = Vec::new();
    let boxes = [
        SimBox::new(2).await,
        SimBox::new(3).await,
        SimBox::new(4).await,
    ];
    for b in &boxes {
        conns.push(b.register(&e).await);
    }
    let health = eventually("self-preservation on /healthz", || async {
        let h: serde_json::Value = HttpClient::default()
            .get(&format!("{}/healthz", e.origin), &[])
            .await
            .ok()?
            .json()
            .ok()?;
        (h["self_preservation"] == true).then_some(h)
    })
    .await;
    // Two of three is past the 50 % threshold already; which the sweep sees
    // first depends on when each box's last heartbeat fell silent.
    let reason = health["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2 of 3 boxes") || reason.starts_with("3 of 3 boxes"),
        "{health}"
    );
    // What an alert rule watches (deploy/prometheus/alerts.yml).
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("\ndandelion_self_preservation 1\n"),
        "{metrics}"
    );
    // Well past the expiry time, the boxes are still there (stale).
    let start = Instant::now();
    eventually("three expiry periods to pass", || async {
        (start.elapsed() > Duration::from_secs(3)).then_some(())
    })
    .await;
    let listed = e.api_boxes("?state=stale").await;
    assert_eq!(listed.len(), 3);
    // Heartbeats return: self-preservation ends.
    for (b, c) in boxes.iter().zip(&mut conns) {
        b.beat(c).await;
    }
    eventually("self-preservation to end", || async {
        let h: serde_json::Value = HttpClient::default()
            .get(&format!("{}/healthz", e.origin), &[])
            .await
            .ok()?
            .json()
            .ok()?;
        (h["status"] == "ok").then_some(())
    })
    .await;
    e.stop().await;
}

macro_rules! original {
    ($name:literal) => {
        include_str!(concat!(
            "../../core/tests/fixtures/original-messages/",
            $name
        ))
    };
}

const FIXTURE_EXCHANGE: &str = original!("01-box-to-entrance-EXCHANGE.json");
const FIXTURE_EXCHANGE_WITH_TRAFFIC: &str =
    original!("02-box-to-entrance-EXCHANGE-with-TRAFFIC_FLOW.json");
const FIXTURE_SEARCH: &str = original!("05-publisher-to-entrance-SEARCH.json");
const FIXTURE_PUBLISH: &str = original!("09-publisher-to-box-PUBLISH.json");
/// The box of fixtures 01 and 02.
const LEGACY_BOX: &str = "box-b1c394d6e16244c8950fa7ee24dfd7d6";

/// One original-style exchange from `from`: connect without credentials, send
/// the text, read one reply, and the entrance closes.
async fn legacy_round_from(
    from: IpAddr,
    url: &str,
    text: &str,
) -> Result<serde_json::Value, String> {
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let (mut raw, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| e.to_string())?;
    raw.send(WsMessage::text(text)).await.unwrap();
    loop {
        match raw.next().await {
            Some(Ok(WsMessage::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(_)) => continue,
            other => return Err(format!("no reply: {other:?}")),
        }
    }
}

async fn legacy_round(url: &str, text: &str) -> Result<serde_json::Value, String> {
    legacy_round_from(IpAddr::from([127, 0, 0, 1]), url, text).await
}

/// The original's URL check (`utils.check_is_valid_url`), as its regex: the
/// original dials nothing else. Python's `re.match` anchors at the start only.
fn original_would_dial(url: &str) -> bool {
    regex_lite::Regex::new(
        r"^https?://((\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})|(localhost))(:\d{1,5})?/.+",
    )
    .unwrap()
    .is_match(url)
}

/// What an original peer does with a message, by its rules: it stores
/// `BOX_SET` entries with aioredis `hmset_dict` (strings and numbers only; ours
/// are all strings, as the original's were after their trip through Redis; an
/// empty entry fails too), dials only URLs its check passes, and treats a
/// message with `COMMAND` as an answer to act on.
fn assert_original_can_take(reply: &serde_json::Value) {
    let map = reply
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {reply}"));
    for (key, value) in map {
        match key.as_str() {
            "ENTRANCE_URLS" => {
                for url in value.as_array().unwrap() {
                    let url = url.as_str().unwrap();
                    assert!(original_would_dial(url), "ENTRANCE_URLS holds {url}");
                }
            }
            "BOX_SET" => {
                for (id, entry) in value.as_object().unwrap() {
                    let entry = entry.as_object().unwrap();
                    assert!(!entry.is_empty(), "{id}: an empty entry fails HMSET");
                    for (field, v) in entry {
                        assert!(v.is_string(), "{id}.{field} = {v}: not a string");
                    }
                    assert_eq!(entry["ID"], id.as_str());
                    let ws = entry["CONNECT_WS"].as_str().unwrap();
                    assert!(original_would_dial(ws), "{id} CONNECT_WS {ws}");
                }
            }
            _ => assert!(value.is_string(), "{key} = {value}: not a string"),
        }
    }
    if map.contains_key("ERROR") {
        assert!(
            !map.contains_key("COMMAND"),
            "an ERROR in the original's shape has no COMMAND: {reply}"
        );
    }
}

#[tokio::test]
async fn the_originals_box_is_told_in_a_message_when_legacy_peers_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let off = start_with(&base_config(dir.path(), &publisher), &publisher).await;
    // What the original box logs: a message with no COMMAND, whole.
    let reply = legacy_round(&off.url, FIXTURE_EXCHANGE).await.unwrap();
    assert_original_can_take(&reply);
    let error = reply["ERROR"].as_str().unwrap();
    assert!(
        error.contains("does not admit the original 2017 peers"),
        "{error}"
    );
    assert!(error.contains("legacy_peers = true"), "{error}");
    assert_eq!(reply["CODE"], "legacy_off");
    // Nothing was registered, and the refusal is counted.
    assert!(off.api_boxes("").await.is_empty());
    let metrics = HttpClient::default()
        .get(&format!("{}/metrics", off.origin), &[])
        .await
        .unwrap()
        .text();
    assert!(metrics.contains(r#"reason="legacy_off""#), "{metrics}");
    off.stop().await;
}

#[tokio::test]
async fn the_originals_clients_get_answers_they_can_store_and_dial() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let mut config = base_config(dir.path(), &publisher);
    config.entrance.legacy_peers = true;
    config.entrance.legacy_publishers = vec!["127.0.0.1/32".parse().unwrap()];
    // Peers as an operator writes them: one the original can dial, one by name.
    config.entrance.peers = vec![
        "wss://127.0.0.9:7443/dandelion/ws#entrance-0123456789abcdef0123456789abcdef"
            .parse()
            .unwrap(),
        "wss://entrance.invalid/dandelion/ws#entrance-fedcba9876543210fedcba9876543210"
            .parse()
            .unwrap(),
    ];
    let on = start_with(&config, &publisher).await;

    // An original box, with its traffic log entries (objects) along, on an
    // address the test's GeoIP database knows.
    let taipei = IpAddr::from([127, 0, 0, 2]);
    let exchange = FIXTURE_EXCHANGE_WITH_TRAFFIC.replace("127.0.0.1", "127.0.0.2");
    let reply = legacy_round_from(taipei, &on.url, &exchange).await.unwrap();
    assert_original_can_take(&reply);
    assert_eq!(reply["MESSAGE"], "ACCEPTED");
    assert_eq!(reply["COMMAND"], "EXCHANGE");
    let port = on.url.split(':').nth(2).unwrap().split('/').next().unwrap();
    assert_eq!(
        reply["ENTRANCE_URLS"],
        serde_json::json!([
            format!("http://127.0.0.1:{port}/dandelion/ws/"),
            "https://127.0.0.9:7443/dandelion/ws/"
        ]),
        "ws:// said as http://, the entrance known by name left out"
    );
    for ours in ["ENTRANCES", "PUBLISHER_KEYS", "HEARTBEAT_INTERVAL"] {
        assert!(reply.get(ours).is_none(), "{ours} in {reply}");
    }
    // Another original box, from elsewhere, naming the first one's address.
    let pretender = "box-0000000000000000000000000000dead";
    let claim = exchange.replace(LEGACY_BOX, pretender);
    let reply = legacy_round_from(IpAddr::from([127, 0, 0, 3]), &on.url, &claim)
        .await
        .unwrap();
    assert_eq!(reply["MESSAGE"], "ACCEPTED", "{reply}");
    let mut listed: Vec<_> = on
        .api_boxes("?state=legacy")
        .await
        .into_iter()
        .map(|b| b.id)
        .collect();
    listed.sort();
    assert_eq!(listed, [pretender, LEGACY_BOX]);

    // A verified box on the same entrance, which Dandelion publishers are given.
    let verified = SimBox::new(2).await;
    let _session = verified.register(&on).await;
    eventually("the verified box in search", || async {
        on.search_ids()
            .await
            .contains(&verified.id().to_string())
            .then_some(())
    })
    .await;
    // A migration's progress: two original boxes among three.
    eventually("the legacy boxes gauge", || {
        let origin = on.origin.clone();
        async move {
            let m = HttpClient::default()
                .get(&format!("{origin}/metrics"), &[])
                .await
                .ok()?
                .text();
            (m.contains("dandelion_legacy_boxes{state=\"active\"} 2")
                && m.contains("dandelion_boxes{state=\"active\"} 3"))
            .then_some(())
        }
    })
    .await;
    // A Dandelion publisher gets the legacy box only when it asks for unverified boxes.
    assert!(!on.search_ids().await.contains(&LEGACY_BOX.to_owned()));
    let r = on.search(|s| s.unverified = Some(true)).await;
    assert_eq!(r.boxes.len(), 3);

    // The original publisher's SEARCH, as captured: the legacy box only, in strings.
    let reply = legacy_round(&on.url, FIXTURE_SEARCH).await.unwrap();
    assert_original_can_take(&reply);
    assert_eq!(reply["COMMAND"], "SEARCH");
    let box_set = reply["BOX_SET"].as_object().unwrap();
    assert_eq!(box_set.keys().collect::<Vec<_>>(), [LEGACY_BOX], "{reply}");
    let entry = &box_set[LEGACY_BOX];
    assert_eq!(entry["PORT"], "17270");
    assert_eq!(entry["CPU-NUM"], "2");
    assert_eq!(entry["COMMAND"], "EXCHANGE");
    assert_eq!(entry["IP"], "127.0.0.2");
    assert_eq!(entry["GEOIP-CITY"], "Taipei");
    assert!(
        !entry
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("TRAFFIC_FLOW")),
        "{entry}"
    );
    assert!(!reply.to_string().contains(verified.id().as_str()));

    // From an address not in legacy_publishers: refused in a message it can log.
    let reply = legacy_round_from(IpAddr::from([127, 0, 0, 2]), &on.url, FIXTURE_SEARCH)
        .await
        .unwrap();
    assert_original_can_take(&reply);
    assert!(reply.get("BOX_SET").is_none(), "{reply}");
    let error = reply["ERROR"].as_str().unwrap();
    assert!(error.contains("127.0.0.2 is not admitted"), "{error}");
    assert!(error.contains("legacy_publishers"), "{error}");

    // Every other answer an original peer can get here is one it can take.
    let missing_port = r#"{"ID": "box-00000000000000000000000000000001", "IP": "127.0.0.1", "TYPE": "BOX", "COMMAND": "EXCHANGE", "PORT": {"not": "a port"}}"#;
    let taken_id = FIXTURE_EXCHANGE.replace(LEGACY_BOX, verified.id().as_str());
    for (what, text) in [
        ("a PUBLISH sent to the entrance", FIXTURE_PUBLISH),
        ("a malformed EXCHANGE", missing_port),
        ("an EXCHANGE under a verified box's ID", taken_id.as_str()),
    ] {
        let reply = legacy_round(&on.url, text).await.unwrap();
        assert_original_can_take(&reply);
        assert!(reply["ERROR"].is_string(), "{what}: {reply}");
    }
    on.stop().await;
}

#[tokio::test]
async fn registration_and_expiry_work_on_redis_too() {
    let redis = dandelion_testkit::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let mut config = base_config(dir.path(), &publisher);
    config.store = redis.url();
    config.entrance.heartbeat_interval = Duration::from_millis(300);
    config.entrance.expire_box_time = Duration::from_secs(2);
    let e = start_with(&config, &publisher).await;
    let boxes = [SimBox::new(2).await, SimBox::new(3).await];
    let _c0 = boxes[0].register(&e).await;
    let mut c1 = boxes[1].register(&e).await;
    let reply = e.search(|_| {}).await;
    let mut cities: Vec<_> = reply
        .boxes
        .iter()
        .map(|b| b.geoip.as_ref().unwrap().city.clone().unwrap())
        .collect();
    cities.sort();
    assert_eq!(cities, ["Taipei", "Tokyo"]);
    // The silent box goes stale and expires; the other is kept alive meanwhile.
    let deadline = Instant::now() + DEADLINE;
    let mut beats = 0u32;
    while e.state_of(boxes[0].id()).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the silent box to expire"
        );
        boxes[1].beat(&mut c1).await;
        beats += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(beats > 1);
    assert_eq!(e.search_ids().await, [boxes[1].id().to_string()]);
    e.stop().await;
}

#[tokio::test]
async fn garbage_gets_an_error_reply_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let publisher = Arc::new(Identity::generate(Role::Publisher).unwrap());
    let e = start_with(&base_config(dir.path(), &publisher), &publisher).await;
    let b = SimBox::new(2).await;
    let conn = b.register(&e).await;
    let mut raw = conn.into_inner();
    raw.send(WsMessage::text("{not json")).await.unwrap();
    let reply = loop {
        match raw.next().await {
            Some(Ok(WsMessage::Text(t))) => {
                break serde_json::from_str::<serde_json::Value>(&t).unwrap();
            }
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(reply["CODE"], "not_json", "{reply}");
    assert!(
        reply["ERROR"]
            .as_str()
            .unwrap()
            .starts_with("bad message: not valid JSON"),
        "{reply}"
    );
    let metrics = e.metrics().await;
    assert!(
        metrics.contains("dandelion_refused_total{reason=\"not_json\"} 1"),
        "{metrics}"
    );
    // The session survives one bad message: a heartbeat still works.
    raw.send(WsMessage::text(b.exchange().encode()))
        .await
        .unwrap();
    let reply = loop {
        match raw.next().await {
            Some(Ok(WsMessage::Text(t))) => break Message::decode(&t).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(reply, Message::ExchangeReply(_)), "{reply:?}");
    e.stop().await;
}
