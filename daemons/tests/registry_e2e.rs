//! Issue 4's "Done when", with real `dandelion` processes: an entrance (with a
//! GeoIP database of its own) and boxes, each a child process with its own port,
//! data directory and 127.0.0.x source address, on both store backends.
//!
//! `daemons/tests/entrance.rs` proves the same behaviour in-process with simulated
//! boxes; this file proves that the real binaries, wired by their config files,
//! signals and the `evict` command, do it too. Every scenario runs once on the
//! embedded store and once on a private `redis-server`; timings are shortened by
//! config so the whole file stays quick.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dandelion_core::auth::{Challenge, Claim, NONCE_PATH};
use dandelion_core::connection::{Incoming, connect, connect_as};
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::Role;
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{Header, Message, Search, SearchReply};
use dandelion_daemons::entrance::api::BoxView;
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::process::{binary, run};
use dandelion_testkit::redis::RedisServer;
use dandelion_testkit::{free_port, wait_for};

const JOIN_TOKEN: &str = "registry-e2e-join-token";
/// Entrance and box heartbeat interval: boxes go stale after three of these.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// `expire_box_time`, shortened so expiry is observable in a test.
const EXPIRE: Duration = Duration::from_secs(6);
/// Generous bound for things that happen within a heartbeat or two.
const SOON: Duration = Duration::from_secs(15);
/// "At once": well under the three heartbeat intervals after which a silent box
/// would go stale anyway, so passing cannot be explained by expiry.
const AT_ONCE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Embedded,
    Redis,
}

/// The cities the test GeoIP database puts at each box's source address.
const CITIES: [(u8, &str); 3] = [(2, "Taipei"), (3, "Tokyo"), (4, "London")];

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A box process and the ID its key gives it.
struct BoxProc {
    daemon: Daemon,
    id: String,
}

/// One test's network: a store, an entrance process, a publisher identity the
/// entrance trusts, and the boxes started so far.
struct Net {
    root: tempfile::TempDir,
    redis: Option<RedisServer>,
    geo_db: PathBuf,
    publisher: Identity,
    entrance: Daemon,
    rt: tokio::runtime::Runtime,
    http: HttpClient,
}

impl Net {
    fn start(backend: Backend) -> Net {
        Net::start_with(backend, None)
    }

    /// `namespace`: the entrance's registry namespace (several entrances on one
    /// Redis share one).
    fn start_with(backend: Backend, namespace: Option<&str>) -> Net {
        let root = tempfile::tempdir().unwrap();
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        let geo_db = dandelion_testkit::geo::write_city_db(root.path());
        let publisher_dir = root.path().join("publisher");
        std::fs::create_dir_all(&publisher_dir).unwrap();
        let publisher = Identity::load_or_create(&publisher_dir, Role::Publisher).unwrap();
        let net = Net {
            entrance: entrance_builder(
                &root.path().join("entrance"),
                redis.as_ref(),
                &geo_db,
                &publisher,
                namespace,
            )
            .spawn(),
            root,
            redis,
            geo_db,
            publisher,
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: HttpClient::default(),
        };
        net.wait_entrance_ready(&net.entrance.origin());
        net
    }

    /// A second entrance process on the same store and namespace.
    fn second_entrance(&self, namespace: Option<&str>) -> Daemon {
        let e = entrance_builder(
            &self.root.path().join("entrance-2"),
            self.redis.as_ref(),
            &self.geo_db,
            &self.publisher,
            namespace,
        )
        .spawn();
        self.wait_entrance_ready(&e.origin());
        e
    }

    fn wait_entrance_ready(&self, origin: &str) {
        let url = format!("{origin}/healthz");
        wait_for("the entrance's /healthz", SOON, || {
            let r = self.rt.block_on(self.http.get(&url, &[])).ok()?;
            (r.status == 200).then_some(())
        });
    }

    /// The entrance's URL pinned to its ID, as boxes are configured with it.
    fn pin(entrance: &Daemon) -> PinnedUrl {
        let id = Identity::load_or_create(entrance.data_dir(), Role::Entrance)
            .unwrap()
            .id()
            .clone();
        PinnedUrl::new(
            &format!("ws://127.0.0.1:{}/dandelion/ws", entrance.port()),
            id,
        )
        .unwrap()
    }

    /// A box process heartbeating to `entrance`, leaving from 127.0.0.`octet`.
    fn spawn_box_to(&self, entrance: &Daemon, name: &str, octet: u8, extra: &[String]) -> BoxProc {
        let dir = self.root.path().join(name);
        let mut b = DaemonBuilder::new("box", &dir)
            .set(format!("entrances = [\"{}\"]", Net::pin(entrance)))
            .set(format!("join_token = {JOIN_TOKEN:?}"))
            .set(format!("heartbeat_interval = {}", HEARTBEAT.as_secs()))
            .set(format!("bind_outgoing = \"127.0.0.{octet}\""));
        for line in extra {
            b = b.set(line.clone());
        }
        let daemon = b.spawn();
        let id = Identity::load_or_create(&dir, Role::Box)
            .unwrap()
            .id()
            .to_string();
        BoxProc { daemon, id }
    }

    fn spawn_box(&self, name: &str, octet: u8) -> BoxProc {
        self.spawn_box_to(&self.entrance, name, octet, &[])
    }

    fn api_boxes_at(&self, entrance: &Daemon) -> Vec<BoxView> {
        let r = self
            .rt
            .block_on(self.http.get(
                &format!("{}/api/boxes", entrance.origin()),
                &[("authorization", &entrance.admin_auth())],
            ))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().unwrap()
    }

    fn api_boxes(&self) -> Vec<BoxView> {
        self.api_boxes_at(&self.entrance)
    }

    fn view(&self, id: &str) -> Option<BoxView> {
        self.api_boxes().into_iter().find(|b| b.id == id)
    }

    fn state(&self, id: &str) -> Option<String> {
        self.view(id).map(|v| v.state.as_str().to_owned())
    }

    /// SEARCH as the trusted publisher, over a real WebSocket session.
    fn search_at(&self, entrance: &Daemon) -> SearchReply {
        self.rt.block_on(async {
            let pin = Net::pin(entrance);
            let mut conn = connect_as(pin.url(), pin.id(), &self.publisher, None)
                .await
                .unwrap();
            let search = Search {
                header: Header::new(self.publisher.id().clone()),
                geoip: None,
                count: None,
                order: None,
                unverified: None,
                watch: None,
                extra: Default::default(),
            };
            conn.send(&Message::Search(search)).await.unwrap();
            match conn.recv().await.unwrap() {
                Some(Incoming::Message(Message::SearchReply(r))) => r,
                other => panic!("expected a SEARCH reply, got {other:?}"),
            }
        })
    }

    fn search_ids_at(&self, entrance: &Daemon) -> Vec<String> {
        let mut ids: Vec<String> = self
            .search_at(entrance)
            .boxes
            .iter()
            .map(|b| b.header.id.to_string())
            .collect();
        ids.sort();
        ids
    }

    fn search_ids(&self) -> Vec<String> {
        self.search_ids_at(&self.entrance)
    }

    fn metrics(&self) -> String {
        self.rt
            .block_on(
                self.http
                    .get(&format!("{}/metrics", self.entrance.origin()), &[]),
            )
            .unwrap()
            .text()
    }

    /// The value of one Prometheus sample line (`name{labels}`), 0 when absent.
    fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Waits until every box in `ids` is `active` at `entrance` and handed out
    /// by its SEARCH. A box is `active` from its first heartbeat but handed to
    /// publishers only once a reachability check has found it at its data URL,
    /// a moment later; a test that searches right after must wait for both.
    fn wait_active_at<S: AsRef<str> + std::fmt::Debug>(&self, entrance: &Daemon, ids: &[S]) {
        wait_for(&format!("{ids:?} active"), SOON, || {
            let list = self.api_boxes_at(entrance);
            ids.iter()
                .all(|id| {
                    list.iter()
                        .any(|b| b.id == id.as_ref() && b.state.as_str() == "active")
                })
                .then_some(())
        });
        self.wait_searchable_at(entrance, ids);
    }

    fn wait_active<S: AsRef<str> + std::fmt::Debug>(&self, ids: &[S]) {
        self.wait_active_at(&self.entrance, ids);
    }

    /// Waits until a SEARCH at `entrance` hands out every box in `ids`.
    fn wait_searchable_at<S: AsRef<str> + std::fmt::Debug>(&self, entrance: &Daemon, ids: &[S]) {
        wait_for(&format!("a SEARCH listing {ids:?}"), SOON, || {
            let found = self.search_ids_at(entrance);
            ids.iter()
                .all(|id| found.iter().any(|f| f == id.as_ref()))
                .then_some(())
        });
    }
}

fn entrance_builder(
    dir: &Path,
    redis: Option<&RedisServer>,
    geo_db: &Path,
    publisher: &Identity,
    namespace: Option<&str>,
) -> DaemonBuilder {
    let mut b = DaemonBuilder::new("entrance", dir)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!(
            "publisher_keys = [{:?}]",
            publisher.public_key_hex()
        ))
        .set(format!("heartbeat_interval = {}", HEARTBEAT.as_secs()))
        .set(format!("expire_box_time = {}", EXPIRE.as_secs()))
        .set("reachability_interval = \"2s\"")
        .set("reachability_timeout = \"1s\"")
        .set(format!("geoip_db = {:?}", geo_db.display().to_string()));
    if let Some(redis) = redis {
        b = b
            .top(format!("store = {:?}", redis.url()))
            .top("store_prefix = \"e2e\"");
    }
    if let Some(ns) = namespace {
        b = b.set(format!("namespace = {ns:?}"));
    }
    b
}

fn sorted<S: AsRef<str>>(ids: &[S]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.as_ref().to_owned()).collect();
    v.sort();
    v
}

/// Scenario 1: Three boxes register and appear with their cities in SEARCH and /api/boxes.
fn three_boxes_appear_with_their_cities(backend: Backend) {
    let net = Net::start(backend);
    let boxes: Vec<BoxProc> = CITIES
        .iter()
        .map(|(octet, _)| net.spawn_box(&format!("box-{octet}"), *octet))
        .collect();
    let ids: Vec<&str> = boxes.iter().map(|b| b.id.as_str()).collect();
    net.wait_active(&ids);

    let reply = net.search_at(&net.entrance);
    let mut found: Vec<(String, String)> = reply
        .boxes
        .iter()
        .map(|b| {
            assert_eq!(
                b.extra.get("STATE").and_then(|s| s.as_str()),
                Some("active")
            );
            let city = b.geoip.as_ref().and_then(|g| g.city.clone());
            (b.header.id.to_string(), city.unwrap_or_default())
        })
        .collect();
    found.sort();
    let mut expected: Vec<(String, String)> = boxes
        .iter()
        .zip(CITIES)
        .map(|(b, (_, city))| (b.id.clone(), city.to_owned()))
        .collect();
    expected.sort();
    assert_eq!(found, expected, "SEARCH names each box with its city");

    let api = net.api_boxes();
    assert_eq!(api.len(), 3, "{api:?}");
    for (b, (octet, city)) in boxes.iter().zip(CITIES) {
        let v = api.iter().find(|v| v.id == b.id).unwrap();
        assert_eq!(v.geo.city.as_deref(), Some(city), "{v:?}");
        assert_eq!(v.geo_source, "geoip");
        assert_eq!(
            v.observed_ip.as_deref(),
            Some(format!("127.0.0.{octet}").as_str())
        );
        assert_eq!(v.reason, "reachability check passed");
    }
}

/// Scenario 2: A box killed with `kill -9` (no GOODBYE) goes stale, then expires.
fn a_killed_box_goes_stale_then_expires(backend: Backend) {
    let net = Net::start(backend);
    let mut victim = net.spawn_box("victim", 2);
    let survivor = net.spawn_box("survivor", 3);
    net.wait_active(&[&victim.id, &survivor.id]);
    victim.daemon.kill9();
    let killed = Instant::now();
    wait_for("the killed box to go stale", SOON, || {
        (net.state(&victim.id)? == "stale").then_some(())
    });
    // The last heartbeat came at most 1.2 intervals (jitter) before the kill, and
    // stale needs three missed ones: not before 1.8 intervals after the kill.
    let stale_after = killed.elapsed();
    assert!(
        stale_after >= HEARTBEAT.mul_f64(1.5),
        "stale only after missed heartbeats, not after {stale_after:?}"
    );
    assert_eq!(
        net.search_ids(),
        std::slice::from_ref(&survivor.id),
        "stale is not handed out"
    );
    wait_for("the killed box to expire", EXPIRE + SOON, || {
        net.view(&victim.id).is_none().then_some(())
    });
    let gone_after = killed.elapsed();
    assert!(
        gone_after >= EXPIRE - 2 * HEARTBEAT && gone_after <= EXPIRE + 4 * HEARTBEAT,
        "expired after {gone_after:?}, expire_box_time is {EXPIRE:?}"
    );
    assert_eq!(net.state(&survivor.id).as_deref(), Some("active"));
    assert!(
        net.metric("dandelion_expired_total") >= 1.0,
        "{}",
        net.metrics()
    );
}

/// Scenario 3: A box stopped with SIGTERM says GOODBYE and is gone at once.
fn a_terminated_box_is_gone_at_once(backend: Backend) {
    let net = Net::start(backend);
    let mut leaving = net.spawn_box("leaving", 2);
    let staying = net.spawn_box("staying", 3);
    net.wait_active(&[&leaving.id, &staying.id]);
    assert!(
        leaving.daemon.terminate(Duration::from_secs(10)),
        "the box exits cleanly on SIGTERM:\n{}",
        leaving.daemon.log()
    );
    wait_for("the terminated box to be removed", AT_ONCE, || {
        net.view(&leaving.id).is_none().then_some(())
    });
    assert_eq!(net.search_ids(), std::slice::from_ref(&staying.id));
}

/// Scenario 4: `dandelion evict` removes a box at once; its heartbeats are refused while
/// it is banned, even after the box process starts again.
fn an_evicted_box_is_refused(backend: Backend) {
    let net = Net::start(backend);
    let mut bad = net.spawn_box("bad", 2);
    let good = net.spawn_box("good", 3);
    net.wait_active(&[&bad.id, &good.id]);
    let token = std::fs::read_to_string(net.entrance.data_dir().join("admin.token")).unwrap();
    let out = run(Command::new(binary("dandelion"))
        .args(["evict", &bad.id, "--reason", "serving corrupt files"])
        .args([
            "--entrance",
            &net.entrance.origin(),
            "--token",
            token.trim(),
        ])
        .env_remove("DANDELION_CONFIG")
        .env_remove("DANDELION_ADMIN_TOKEN")
        .env_remove("DANDELION_ENTRANCE"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // At once: no waiting between the command's answer and these reads.
    let v = net.view(&bad.id).unwrap();
    assert_eq!(v.state.as_str(), "evicted");
    assert!(v.reason.contains("serving corrupt files"), "{v:?}");
    assert_eq!(net.search_ids(), std::slice::from_ref(&good.id));
    wait_for("the box to be told it was evicted", SOON, || {
        let log = bad.daemon.log();
        (log.contains("evicted") && log.contains("serving corrupt files")).then_some(())
    });
    // A fresh box process under the same key tries again and is refused with 403.
    let refused_before = net.metric("dandelion_refused_total{reason=\"evicted\"}");
    bad.daemon.restart();
    wait_for("two refused reconnections of the banned box", SOON, || {
        (net.metric("dandelion_refused_total{reason=\"evicted\"}") >= refused_before + 2.0)
            .then_some(())
    });
    assert!(
        bad.daemon.log().contains("403"),
        "the box logs the refusal:\n{}",
        bad.daemon.log()
    );
    assert_eq!(net.state(&bad.id).as_deref(), Some("evicted"));
    assert_eq!(net.search_ids(), std::slice::from_ref(&good.id));
}

/// Scenario 5: A box whose public URL leads nowhere fails the reachability check, is
/// listed as unreachable with the reason, and is never handed to a publisher.
fn an_unreachable_box_is_never_handed_out(backend: Backend) {
    let net = Net::start(backend);
    let closed = free_port().unwrap();
    let hidden = net.spawn_box_to(
        &net.entrance,
        "hidden",
        2,
        &[format!("public_url = \"http://127.0.0.1:{closed}\"")],
    );
    let visible = net.spawn_box("visible", 3);
    net.wait_active(&[&visible.id]);
    let v = wait_for("the hidden box to be unreachable", SOON, || {
        net.view(&hidden.id)
            .filter(|v| v.state.as_str() == "unreachable")
    });
    assert!(
        v.reason.starts_with("reachability check failed")
            && v.reason.contains(&format!("127.0.0.1:{closed}")),
        "the reason says what failed: {v:?}"
    );
    // Through several heartbeats and reachability rounds it is never handed
    // out. Every search is checked for it; the visible box may miss one
    // search (stale for a moment on a loaded machine: heartbeats come every
    // second), so each round waits for a search that lists it.
    let listed_alone = || {
        wait_for("a search listing the visible box", SOON, || {
            let ids = net.search_ids();
            assert!(
                !ids.contains(&hidden.id),
                "the unreachable box was handed out: {ids:?}"
            );
            ids.contains(&visible.id).then_some(ids)
        })
    };
    let first = v.last_heartbeat;
    for _ in 0..3 {
        assert_eq!(listed_alone(), std::slice::from_ref(&visible.id));
        let v = wait_for("another heartbeat of the hidden box", SOON, || {
            net.view(&hidden.id).filter(|v| v.last_heartbeat > first)
        });
        assert_eq!(v.state.as_str(), "unreachable", "{v:?}");
    }
    assert_eq!(listed_alone(), std::slice::from_ref(&visible.id));
}

/// Scenario 6: After an entrance restart (same port and data directory) every box is
/// back, heartbeating to the new process, within two heartbeat intervals.
fn boxes_are_back_after_an_entrance_restart(backend: Backend) {
    let mut net = Net::start(backend);
    let boxes: Vec<BoxProc> = CITIES
        .iter()
        .map(|(octet, _)| net.spawn_box(&format!("box-{octet}"), *octet))
        .collect();
    let ids: Vec<&str> = boxes.iter().map(|b| b.id.as_str()).collect();
    net.wait_active(&ids);
    net.entrance.restart();
    let listening = Instant::now();
    let restarted_at = unix_now();
    net.wait_entrance_ready(&net.entrance.origin());
    wait_for(
        "every box heartbeating to the restarted entrance",
        4 * HEARTBEAT,
        || {
            let list = net.api_boxes();
            ids.iter()
                .all(|id| {
                    list.iter().any(|b| {
                        b.id == *id
                            && b.state.as_str() == "active"
                            && b.last_heartbeat > restarted_at
                    })
                })
                .then_some(())
        },
    );
    let back_after = listening.elapsed();
    assert!(
        back_after <= 2 * HEARTBEAT,
        "boxes back after {back_after:?}, more than two heartbeat intervals"
    );
    net.wait_searchable_at(&net.entrance, &ids);
    assert_eq!(net.search_ids(), sorted(&ids));
}

/// Scenario 7: Two entrances sharing one Redis namespace return the same boxes, whichever
/// of them each box heartbeats to.
fn two_entrances_on_one_redis_return_the_same_boxes(backend: Backend) {
    assert_eq!(backend, Backend::Redis);
    let net = Net::start_with(backend, Some("e2e-net"));
    let second = net.second_entrance(Some("e2e-net"));
    let a = net.spawn_box("a", 2);
    let b = net.spawn_box_to(&second, "b", 3, &[]);
    let c = net.spawn_box("c", 4);
    let all = sorted(&[&a.id, &b.id, &c.id]);
    net.wait_active(&[&a.id, &b.id, &c.id]);
    net.wait_active_at(&second, &[&a.id, &b.id, &c.id]);
    assert_eq!(net.search_ids_at(&net.entrance), all);
    assert_eq!(net.search_ids_at(&second), all);
}

/// Scenario 8: A client holding the join token but presenting another box's ID (with its
/// own key) is refused at the handshake with 401 and the reason.
fn another_boxs_id_is_refused(backend: Backend) {
    let net = Net::start(backend);
    let victim = net.spawn_box("victim", 2);
    net.wait_active(&[&victim.id]);
    let attacker = Identity::generate(Role::Box).unwrap();
    let refused_before = net.metric("dandelion_refused_total{reason=\"id_mismatch\"}");
    let err = net.rt.block_on(async {
        let challenge: Challenge = net
            .http
            .get(&format!("{}{NONCE_PATH}", net.entrance.origin()), &[])
            .await
            .unwrap()
            .json()
            .unwrap();
        let mut proof = attacker.prove(&Claim::session_client(&challenge.id, &challenge.nonce));
        proof.id = victim.id.clone();
        let auth = format!("Bearer {JOIN_TOKEN}");
        let mut headers = proof.headers().to_vec();
        headers.push(("authorization", &auth));
        connect(Net::pin(&net.entrance).url(), &headers)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    assert!(
        err.contains(&format!("401 Unauthorized: ID {}", victim.id)),
        "{err}"
    );
    assert_eq!(
        net.metric("dandelion_refused_total{reason=\"id_mismatch\"}"),
        refused_before + 1.0,
        "the refusal is counted by reason:\n{}",
        net.metrics()
    );
    assert_eq!(net.state(&victim.id).as_deref(), Some("active"));
    assert_eq!(net.search_ids(), std::slice::from_ref(&victim.id));
}

/// A box measures its uplink against the entrance (a bounded, timed upload) and
/// reports it in its heartbeat, so publishers see it in SEARCH.
#[test]
fn a_box_reports_its_measured_uplink() {
    let net = Net::start(Backend::Embedded);
    let b = net.spawn_box_to(
        &net.entrance,
        "uplink",
        2,
        &["uplink_test_size = \"256 KiB\"".to_owned()],
    );
    let uplink = wait_for(
        "the box's uplink in SEARCH",
        Duration::from_secs(20),
        || {
            net.search_at(&net.entrance)
                .boxes
                .into_iter()
                .find(|x| x.header.id.as_str() == b.id)
                .and_then(|x| x.system_info?.uplink)
        },
    );
    assert!(uplink > 0, "{uplink}");
    let silent = net.spawn_box_to(
        &net.entrance,
        "no-uplink",
        3,
        &["uplink_test_size = 0".to_owned()],
    );
    net.wait_active(&[&silent.id]);
    let reported = net
        .search_at(&net.entrance)
        .boxes
        .into_iter()
        .find(|x| x.header.id.as_str() == silent.id)
        .expect("the box without an uplink test is handed out");
    assert_eq!(
        reported.system_info.and_then(|i| i.uplink),
        None,
        "switched off, nothing measured"
    );
}

/// Each scenario as a test per backend.
macro_rules! on_backends {
    ($mod:ident, $backend:expr, [$($scenario:ident),* $(,)?]) => {
        mod $mod {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($backend);
                }
            )*
        }
    };
}

on_backends!(
    embedded,
    super::Backend::Embedded,
    [
        three_boxes_appear_with_their_cities,
        a_killed_box_goes_stale_then_expires,
        a_terminated_box_is_gone_at_once,
        an_evicted_box_is_refused,
        an_unreachable_box_is_never_handed_out,
        boxes_are_back_after_an_entrance_restart,
        another_boxs_id_is_refused,
    ]
);

on_backends!(
    redis,
    super::Backend::Redis,
    [
        three_boxes_appear_with_their_cities,
        a_killed_box_goes_stale_then_expires,
        a_terminated_box_is_gone_at_once,
        an_evicted_box_is_refused,
        an_unreachable_box_is_never_handed_out,
        boxes_are_back_after_an_entrance_restart,
        two_entrances_on_one_redis_return_the_same_boxes,
        another_boxs_id_is_refused,
    ]
);
