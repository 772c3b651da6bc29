//! Attacks on identity, played end to end: real `dandelion` processes (an
//! entrance, boxes, a publisher), and the attacker in this process, speaking the
//! wire protocol with core's own primitives on 127.0.0.1. Each attack is one that
//! worked before proofs named their purpose and both sides of a session proved
//! their IDs; each test asserts what a user would notice and the refusal counter
//! an operator would see.
//!
//! - **Borrowing a signature by relay**
//!   (`a_box_cannot_relay_another_boxs_challenge_to_borrow_the_publishers_signature`).
//!   A registered box wants to publish on an honest box as a publisher it is not.
//!   When the publisher dials it, it hands back the honest box's challenge (as it
//!   is, or under its own ID), hoping the publisher signs for the honest box, then
//!   replays whatever the publisher signed to the honest box and uploads a file
//!   under the publisher's name. The old publisher signed for whatever ID the
//!   challenge named; now it signs only for the box it meant to dial, after that
//!   box proved its ID.
//! - **A reachability proof as a session proof**
//!   (`a_reachability_proof_cannot_open_a_session_as_that_box`). A box's
//!   reachability endpoint signs any nonce for any verifier without asking who
//!   calls. The attacker asks it to sign the entrance's handshake nonce and
//!   presents that as the box's handshake, then says GOODBYE in its name. The old
//!   endpoint signed the same text as a handshake proof; now its text names its
//!   purpose and the box's data URL.
//! - **A rogue entrance** (`a_rogue_entrance_cannot_feed_a_box_publisher_keys`).
//!   A URL the box was given — configured, or handed out by an honest entrance —
//!   leads to an "entrance" that cannot prove the ID pinned to it. It wants the
//!   network's join token and to make the box trust its own publisher key. The
//!   old box trusted whatever answered; now it sends its token to, and believes
//!   keys from, only an entrance that proved its pinned ID. The rogue records
//!   every request, so a token sent on any of them (the session upgrade, or the
//!   uplink measurement, which carries the token too) fails the test.
//! - **Choosing where viewers go** (`a_box_cannot_choose_where_viewers_are_sent`).
//!   A box that stores files honestly confirms each at a URL of its choosing (a
//!   phishing page). The old publisher recorded that URL and redirected viewers to
//!   it; now it records only the URL it derives from the box's verified data URL.
//! - **Switching the data URL after the check**
//!   (`a_box_cannot_move_its_data_url_after_passing_the_check`). A box passes the
//!   reachability check at an honest URL, then advertises another (the phishing
//!   host) and confirms files there. The old entrance kept it `active` at the new
//!   URL until its next periodic check (5 minutes), and the publisher derived
//!   viewers' URLs from it; now a changed URL is checked at once and publishers
//!   are handed a box only at a URL a check passed at.
//!
//! The attacker's servers run on a tokio runtime of their own while the test
//! thread waits on conditions with deadlines (`wait_for`), never on sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use dandelion_core::auth::{
    Challenge, Channel, Claim, NONCE_PATH, Nonce, Proof, REACHABILITY_PATH,
};
use dandelion_core::connection::{Incoming, connect, connect_as};
use dandelion_core::frame::{Frame, FrameHeader, Limits, StartHeader};
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::nonces::NonceBook;
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::protocol::{
    Exchange, ExchangeReply, Goodbye, Header, Message, PROTOCOL_VERSION, Publish, PublishReply,
    TransferOutcome, TransferResult,
};
use dandelion_daemons::handshake;
use dandelion_daemons::shutdown::Shutdown;
use dandelion_daemons::ws::{self, ServerConnection};
use dandelion_testkit::daemon::{Daemon, DaemonBuilder};
use dandelion_testkit::network::{JOIN_TOKEN, Network, NetworkBuilder};
use dandelion_testkit::wait_for;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

/// The heartbeat interval of the testkit's entrance, which fake boxes keep to.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Bound for anything that takes a few heartbeats or search rounds.
const SOON: Duration = Duration::from_secs(20);
/// The phrase a box logs when an entrance fails to prove its pinned ID.
const NOT_TRUSTING: &str = "not trusting this entrance";

// ---------------------------------------------------------------------------
// What the attacker saw and did.
// ---------------------------------------------------------------------------

/// One thing an attacker's server saw or did, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// `GET /dandelion/nonce`, with the `peer` it named: someone is dialling us.
    NonceAsked { peer: Option<String> },
    /// A WebSocket upgrade request: the ID of the proof it carried, if any, and
    /// its `Authorization` header.
    Upgrade {
        proof_id: Option<String>,
        authorization: Option<String>,
    },
    /// A proof replayed to the honest box: what it answered.
    Replayed(Result<String, String>),
    /// An `EXCHANGE` answered with the attacker's publisher key.
    KeysFed,
    /// A file confirmed to the publisher, at the URL the attacker chose.
    Confirmed { path: String, url: String },
    /// Any other request, with its `Authorization` header.
    Request {
        path: String,
        authorization: Option<String>,
    },
    /// A file frame received by a fake box: `start` (with `+sha256` when it
    /// named the hash), `continue`, `final` or `abort`.
    Frame(String),
    /// Something of the attacker's own went wrong (for failure messages).
    Trouble(String),
}

/// An attacker's record, shared by its handlers and read by the test thread.
#[derive(Debug, Clone, Default)]
struct Journal(Arc<Mutex<Vec<Seen>>>);

impl Journal {
    fn note(&self, seen: Seen) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(seen);
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `peer`s of every nonce request: who dialled us.
    fn dialled_by(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::NonceAsked { peer } => peer,
                _ => None,
            })
            .collect()
    }

    fn upgrades(&self) -> Vec<(Option<String>, Option<String>)> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Upgrade {
                    proof_id,
                    authorization,
                } => Some((proof_id, authorization)),
                _ => None,
            })
            .collect()
    }

    fn replays(&self) -> Vec<Result<String, String>> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Replayed(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Every `Authorization` header that reached the attacker, on any request.
    fn authorizations(&self) -> Vec<(String, String)> {
        self.all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Upgrade {
                    authorization: Some(a),
                    ..
                } => Some(("WebSocket upgrade".to_owned(), a)),
                Seen::Request {
                    path,
                    authorization: Some(a),
                } => Some((path, a)),
                _ => None,
            })
            .collect()
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn proof_in(headers: &HeaderMap) -> Option<Proof> {
    Proof::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
        .ok()
        .flatten()
}

/// Records any request no route took, as a server that logs everything would.
async fn record_any(State(journal): State<Journal>, request: Request) -> StatusCode {
    journal.note(Seen::Request {
        path: format!("{} {}", request.method(), request.uri().path()),
        authorization: header_text(request.headers(), "authorization"),
    });
    StatusCode::NOT_FOUND
}

/// A router that only records: merged last into an attacker's server, it takes
/// every request the other routes do not.
fn recorder(journal: &Journal) -> Router {
    Router::new()
        .fallback(record_any)
        .with_state(journal.clone())
}

// ---------------------------------------------------------------------------
// The lab: the attacker's runtime, and how the test thread looks at daemons.
// ---------------------------------------------------------------------------

struct Lab {
    rt: Runtime,
    http: HttpClient,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            rt: Runtime::new().expect("a tokio runtime for the attacker"),
            http: HttpClient::default(),
        }
    }

    /// Serves the router `app` builds for its own origin on a free port of
    /// 127.0.0.1, on the attacker's runtime; returns that origin.
    fn serve(&self, app: impl FnOnce(&str) -> Router) -> String {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("a free port on 127.0.0.1");
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let router = app(&origin);
        self.rt.spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        origin
    }

    fn get(&self, url: &str, headers: &[(&str, &str)]) -> dandelion_core::http::Response {
        self.rt
            .block_on(self.http.get(url, headers))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// `GET {daemon}{path}` with the daemon's admin token, as JSON.
    fn json(&self, daemon: &Daemon, path: &str) -> Value {
        let url = format!("{}{path}", daemon.origin());
        let r = self.get(&url, &[("authorization", &daemon.admin_auth())]);
        r.json()
            .unwrap_or_else(|e| panic!("GET {url}: {e}: {}", r.text()))
    }

    /// `dandelion_refused_total{reason=…}` at a daemon, 0 when absent.
    fn refused(&self, daemon: &Daemon, reason: &str) -> f64 {
        let sample = format!("dandelion_refused_total{{reason=\"{reason}\"}}");
        self.get(&format!("{}/metrics", daemon.origin()), &[])
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The entrance's `/api/boxes` entry for `id`.
    fn listed(&self, entrance: &Daemon, id: &NodeId) -> Option<Value> {
        self.json(entrance, "/api/boxes")
            .as_array()?
            .iter()
            .find(|b| b["id"] == id.as_str())
            .cloned()
    }

    /// Waits until the entrance lists `id` as active; a fake box whose own
    /// side went wrong (its `journal` says) fails the test at once.
    fn wait_active(&self, entrance: &Daemon, id: &NodeId, journal: &Journal) {
        wait_for(&format!("{id} active at the entrance"), SOON, || {
            let seen = journal.all();
            assert!(
                !seen.iter().any(|s| matches!(s, Seen::Trouble(_))),
                "{seen:?}"
            );
            let b = self.listed(entrance, id)?;
            (b["state"] == "active").then_some(())
        });
    }

    /// Waits until the publisher ranks every box in `ids`: it will send to them.
    fn wait_ranked(&self, publisher: &Daemon, ids: &[&NodeId]) {
        wait_for("the publisher to rank the attacker's boxes", SOON, || {
            let ranking = self.json(publisher, "/api/ranking");
            let ranked = ranking.as_array()?;
            ids.iter()
                .all(|id| ranked.iter().any(|r| r["box"] == id.as_str()))
                .then_some(())
        });
    }

    /// `PUT /api/files/{name}` with the publisher's admin token, as
    /// `dandelion push` does.
    fn push(&self, publisher: &Daemon, name: &str, bytes: &[u8], query: &str) {
        let token = Network::admin_token(publisher);
        let auth = format!("Bearer {token}");
        let url = format!("{}/api/files/{name}?{query}", publisher.origin());
        let r = self
            .rt
            .block_on(self.http.request(
                http::Method::PUT,
                &url,
                &[("authorization", &auth)],
                Bytes::copy_from_slice(bytes),
            ))
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert_eq!(r.status, 202, "the push is accepted: {}", r.text());
    }

    /// The publisher's `GET /api/files/{name}` (placements and failures).
    fn file_status(&self, publisher: &Daemon, name: &str) -> Value {
        let token = Network::admin_token(publisher);
        let auth = format!("Bearer {token}");
        let url = format!("{}/api/files/{name}", publisher.origin());
        let r = self.get(&url, &[("authorization", &auth)]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().unwrap()
    }
}

/// The ID a daemon's data directory holds (the daemon created its key).
fn id_of(daemon: &Daemon, role: Role) -> Identity {
    Identity::load_or_create(daemon.data_dir(), role).expect("the daemon's key")
}

/// The entrance's WebSocket URL pinned to its ID, as boxes are configured.
fn pin(entrance: &Daemon) -> PinnedUrl {
    PinnedUrl::new(
        &format!("ws://127.0.0.1:{}/dandelion/ws", entrance.port()),
        id_of(entrance, Role::Entrance).id().clone(),
    )
    .unwrap()
}

fn ws_origin(origin: &str) -> String {
    origin.replacen("http://", "ws://", 1)
}

/// Deterministic bytes.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A fake box: registered at the real entrance under its own key, reachable.
// ---------------------------------------------------------------------------

/// Answers the entrance's reachability check honestly, with the attacker's own
/// key: the fake box is a box in every way the entrance can check.
async fn reachable(
    State((me, data_url)): State<(Arc<Identity>, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(nonce), Some(verifier)) = (
        q.get("nonce").and_then(|n| Nonce::parse(n).ok()),
        q.get("verifier").and_then(|v| NodeId::parse(v).ok()),
    ) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let claim = Claim::reachability(&verifier, &nonce, &data_url).unwrap();
    axum::Json(me.prove(&claim)).into_response()
}

fn reachability_route(me: &Arc<Identity>, data_url: &str) -> Router {
    Router::new()
        .route(REACHABILITY_PATH, get(reachable))
        .with_state((me.clone(), data_url.to_owned()))
}

/// Registers `me` at the entrance as a box answering at `origin`, proving its
/// own ID with the join token, and heartbeats as a real box does for as long as
/// the runtime runs.
fn heartbeat(lab: &Lab, me: &Arc<Identity>, entrance: PinnedUrl, origin: &str, journal: &Journal) {
    let advertised = Arc::new(Mutex::new(origin.to_owned()));
    heartbeat_advertising(lab, me, entrance, origin, &advertised, journal);
}

/// [`heartbeat`], each beat advertising whatever `DATA_URL` `advertised` holds
/// then, so a test can switch it under a registered box.
fn heartbeat_advertising(
    lab: &Lab,
    me: &Arc<Identity>,
    entrance: PinnedUrl,
    origin: &str,
    advertised: &Arc<Mutex<String>>,
    journal: &Journal,
) {
    let connect_ws = format!("{}/dandelion/{}/ws", ws_origin(origin), me.id());
    let advertised = advertised.clone();
    let me = me.clone();
    let journal = journal.clone();
    lab.rt.spawn(async move {
        let opened = connect_as(entrance.url(), entrance.id(), &me, Some(JOIN_TOKEN)).await;
        let mut conn = match opened {
            Ok(conn) => conn,
            Err(e) => return journal.note(Seen::Trouble(format!("registering: {e}"))),
        };
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let exchange = Message::Exchange(Exchange {
                header: Header::new(me.id().clone()),
                connect_ws: Some(connect_ws.clone()),
                data_url: Some(advertised.lock().unwrap_or_else(|p| p.into_inner()).clone()),
                system_info: None,
                geoip: None,
                traffic_flow: None,
                extra: Default::default(),
            });
            if let Err(e) = conn.send(&exchange).await {
                return journal.note(Seen::Trouble(format!("heartbeat: {e}")));
            }
            match conn.recv().await {
                Ok(Some(Incoming::Message(Message::ExchangeReply(_)))) => {}
                other => {
                    return journal.note(Seen::Trouble(format!("heartbeat reply: {other:?}")));
                }
            }
        }
    });
}

// ---------------------------------------------------------------------------
// 1. Relaying another box's challenge.
// ---------------------------------------------------------------------------

/// How the relaying box answers the publisher's nonce request with the honest
/// box's challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// The honest box's challenge as it is: its ID, nonce and proof (what
    /// worked against the publisher that signed for `challenge.id`).
    Verbatim,
    /// The relaying box's own ID over the honest box's nonce and proof.
    OwnIdTheirProof,
    /// The relaying box's own ID and its own valid server proof, over the
    /// honest box's nonce: the publisher then signs, and the relay hopes the
    /// signature serves at the honest box.
    OwnIdOwnProof,
}

#[derive(Clone)]
struct Relayer {
    me: Arc<Identity>,
    relay: Relay,
    /// The honest box: its origin and ID.
    honest: String,
    honest_id: NodeId,
    http: HttpClient,
    journal: Journal,
}

async fn relay_nonce(
    State(r): State<Relayer>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    r.journal.note(Seen::NonceAsked {
        peer: q.get("peer").cloned(),
    });
    let (Some(peer), Some(theirs)) = (q.get("peer"), q.get("nonce")) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // The publisher's own query, passed through: the honest box proves itself
    // to the publisher, for the publisher's nonce.
    let url = format!("{}{NONCE_PATH}?peer={peer}&nonce={theirs}", r.honest);
    let challenge: Challenge = match r.http.get(&url, &[]).await.map(|a| a.json()) {
        Ok(Ok(c)) => c,
        other => {
            r.journal
                .note(Seen::Trouble(format!("fetching {url}: {other:?}")));
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let answer = match r.relay {
        Relay::Verbatim => challenge,
        Relay::OwnIdTheirProof => Challenge {
            id: r.me.id().clone(),
            ..challenge
        },
        Relay::OwnIdOwnProof => {
            let peer = NodeId::parse(peer).unwrap();
            let theirs = Nonce::parse(theirs).unwrap();
            Challenge {
                id: r.me.id().clone(),
                proof: Some(r.me.prove(&Claim::session_server(&peer, &theirs))),
                nonce: challenge.nonce,
                channel: None,
            }
        }
    };
    axum::Json(answer).into_response()
}

/// Whatever proof the publisher presents here goes straight to the honest box.
async fn relay_upgrade(State(r): State<Relayer>, headers: HeaderMap) -> Response {
    let proof = proof_in(&headers);
    let authorization = header_text(&headers, "authorization");
    r.journal.note(Seen::Upgrade {
        proof_id: proof.as_ref().map(|p| p.id.clone()),
        authorization: authorization.clone(),
    });
    if let Some(proof) = proof {
        let outcome = replay(&r, &proof, authorization.as_deref()).await;
        r.journal.note(Seen::Replayed(outcome));
    }
    (StatusCode::BAD_GATEWAY, "relayed elsewhere\n").into_response()
}

/// Presents `proof` on the honest box's upgrade and, if admitted, publishes
/// `/evil.ts` there under the publisher's name.
async fn replay(r: &Relayer, proof: &Proof, authorization: Option<&str>) -> Result<String, String> {
    let url = format!("{}/dandelion/{}/ws", ws_origin(&r.honest), r.honest_id);
    let mut headers = proof.headers().to_vec();
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    let mut conn = connect(&url, &headers).await.map_err(|e| e.to_string())?;
    let publisher = NodeId::parse(&proof.id).map_err(|e| e.to_string())?;
    conn.send(&Message::Publish(Publish {
        header: Header::new(publisher),
        extra: Default::default(),
    }))
    .await
    .map_err(|e| e.to_string())?;
    let published = conn.recv().await;
    let evil = Frame {
        header: FrameHeader::Start(StartHeader {
            path: "/evil.ts".into(),
            ttl: Some(600),
            chunked: None,
            extra: Map::new(),
        }),
        payload: Bytes::from_static(b"not what the publisher published"),
    };
    conn.send_binary(evil.encode())
        .await
        .map_err(|e| e.to_string())?;
    let verdict = conn.recv().await;
    Ok(format!(
        "ADMITTED as the publisher; PUBLISH: {published:?}; /evil.ts: {verdict:?}"
    ))
}

/// Starts a relaying box: its server, and its registration at the entrance.
fn start_relayer(
    lab: &Lab,
    entrance: &PinnedUrl,
    honest: &Daemon,
    honest_id: &NodeId,
    relay: Relay,
) -> (Arc<Identity>, Journal) {
    let me = Arc::new(Identity::generate(Role::Box).unwrap());
    let journal = Journal::default();
    let relayer = Relayer {
        me: me.clone(),
        relay,
        honest: honest.origin(),
        honest_id: honest_id.clone(),
        http: lab.http.clone(),
        journal: journal.clone(),
    };
    let origin = lab.serve(|origin| {
        Router::new()
            .route(NONCE_PATH, get(relay_nonce))
            .route("/dandelion/ws", any(relay_upgrade))
            .route("/dandelion/{box_id}/ws", any(relay_upgrade))
            .with_state(relayer)
            .merge(reachability_route(&me, origin))
            .merge(recorder(&journal))
    });
    heartbeat(lab, &me, entrance.clone(), &origin, &journal);
    (me, journal)
}

#[test]
fn a_box_cannot_relay_another_boxs_challenge_to_borrow_the_publishers_signature() {
    let root = tempfile::tempdir().unwrap();
    // keep_sessions = 0: the publisher dials a box only to send it a file, so
    // the push below is what brings it to the attacker.
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_setting("keep_sessions = 0")
        .start();
    let lab = Lab::new();
    let publisher = id_of(&net.publisher, Role::Publisher);
    // The honest box trusts the publisher by configuration and is known to no
    // entrance: the publisher's directory holds only the attacker's boxes.
    let honest = DaemonBuilder::new("box", &root.path().join("honest"))
        .set(format!(
            "publisher_keys = [{:?}]",
            publisher.public_key_hex()
        ))
        .spawn();
    let honest_id = id_of(&honest, Role::Box).id().clone();
    let entrance = pin(&net.entrance);
    let relays = [
        Relay::Verbatim,
        Relay::OwnIdTheirProof,
        Relay::OwnIdOwnProof,
    ];
    let attackers: Vec<(Relay, Arc<Identity>, Journal)> = relays
        .iter()
        .map(|&relay| {
            let (me, journal) = start_relayer(&lab, &entrance, &honest, &honest_id, relay);
            (relay, me, journal)
        })
        .collect();
    for (_, me, journal) in &attackers {
        lab.wait_active(&net.entrance, me.id(), journal);
    }
    let ids: Vec<&NodeId> = attackers.iter().map(|(_, me, _)| me.id()).collect();
    lab.wait_ranked(&net.publisher, &ids);
    let bad_signatures_before = lab.refused(&honest, "bad_signature");

    // One copy on each of the three: the publisher dials every attacker.
    lab.push(&net.publisher, "bait.ts", &content(4096, 1), "replicas=3");
    let own_proof = &attackers[2].2;
    let status = wait_for(
        "the publisher to dial every attacker and give up on each",
        SOON,
        || {
            let dialled = attackers
                .iter()
                .all(|(_, _, j)| j.dialled_by().contains(&publisher.id().to_string()));
            let status = lab.file_status(&net.publisher, "bait.ts");
            let failed_on = |id: &NodeId| {
                status["failures"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["box_id"] == id.as_str()))
            };
            (dialled && ids.iter().all(|id| failed_on(id)) && !own_proof.replays().is_empty())
                .then_some(status)
        },
    );

    // The publisher signed nothing for the relays it could not trust: it
    // refused to go on when the box it dialled did not prove its own ID.
    for (relay, me, journal) in &attackers[..2] {
        assert_eq!(
            journal.upgrades(),
            [],
            "{relay:?}: the publisher presented no proof to a box that did not prove it is {}",
            me.id()
        );
        let reason = status["failures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["box_id"] == me.id().as_str())
            .and_then(|f| f["reason"].as_str())
            .unwrap()
            .to_owned();
        assert!(
            reason.contains(&format!("did not prove it is {}", me.id()))
                && reason.contains("nothing was signed or sent"),
            "{relay:?}: {reason}"
        );
    }
    assert!(
        lab.refused(&net.publisher, "box_unproven") >= 2.0,
        "both relays are counted"
    );
    // The relay that proved its own ID got a signature — for itself only, so
    // the honest box refused it.
    let upgrades = own_proof.upgrades();
    assert_eq!(
        upgrades,
        [(Some(publisher.id().to_string()), None)],
        "the publisher signed for the box that proved its ID, and sent no token"
    );
    let replays = own_proof.replays();
    assert_eq!(replays.len(), 1, "{replays:?}");
    let refusal = replays[0].clone().unwrap_err();
    assert!(
        refusal.contains("refused with 401") && refusal.contains("signature does not verify"),
        "{refusal}"
    );
    assert_eq!(
        lab.refused(&honest, "bad_signature"),
        bad_signatures_before + 1.0,
        "the honest box counted the replay"
    );

    // Nothing under the publisher's name on the honest box, and the bait file
    // is placed on no attacker.
    let evil = lab.get(
        &format!("{}/{}/evil.ts", honest.origin(), publisher.id()),
        &[],
    );
    assert_eq!(evil.status, 404, "{}", evil.text());
    let placements = lab.file_status(&net.publisher, "bait.ts")["placements"].clone();
    assert_eq!(placements, Value::Array(vec![]), "placed nowhere");
}

// ---------------------------------------------------------------------------
// 2. A reachability proof as a handshake.
// ---------------------------------------------------------------------------

#[test]
fn a_reachability_proof_cannot_open_a_session_as_that_box() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 1).start();
    let lab = Lab::new();
    let victim = &net.boxes[0];
    let victim_id = id_of(victim, Role::Box).id().clone();
    lab.wait_active(&net.entrance, &victim_id, &Journal::default());
    let bad_signatures_before = lab.refused(&net.entrance, "bad_signature");

    // The entrance's handshake nonce, signed by the victim's own reachability
    // endpoint for the entrance: no key of the victim needed.
    let challenge: Challenge = lab
        .get(&format!("{}{NONCE_PATH}", net.entrance.origin()), &[])
        .json()
        .unwrap();
    let oracle = format!(
        "{}{REACHABILITY_PATH}?nonce={}&verifier={}",
        victim.origin(),
        challenge.nonce.as_str(),
        challenge.id
    );
    let signed = lab.get(&oracle, &[]);
    assert_eq!(signed.status, 200, "{}", signed.text());
    let proof: Proof = signed.json().unwrap();
    assert_eq!(proof.id, victim_id.as_str(), "the box signed on request");
    assert_eq!(proof.nonce, challenge.nonce.as_str());

    let entrance = pin(&net.entrance);
    let outcome = lab.rt.block_on(async {
        let auth = format!("Bearer {JOIN_TOKEN}");
        let mut headers = proof.headers().to_vec();
        headers.push(("authorization", &auth));
        let mut conn = connect(entrance.url(), &headers)
            .await
            .map_err(|e| e.to_string())?;
        conn.send(&Message::Goodbye(Goodbye {
            header: Header::new(victim_id.clone()),
            reason: Some("leaving (not really)".into()),
        }))
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>(format!(
            "ADMITTED as {victim_id}; GOODBYE answered {:?}",
            conn.recv().await
        ))
    });
    let refusal = outcome.unwrap_err();
    assert!(
        refusal.contains("refused with 401") && refusal.contains("signature does not verify"),
        "{refusal}"
    );
    let listed = lab.listed(&net.entrance, &victim_id);
    assert_eq!(
        listed.as_ref().map(|b| b["state"].clone()),
        Some(Value::from("active")),
        "the victim stays listed: {listed:?}"
    );
    assert_eq!(
        lab.refused(&net.entrance, "bad_signature"),
        bad_signatures_before + 1.0,
        "the refusal is counted by reason"
    );
}

// ---------------------------------------------------------------------------
// 3. A rogue entrance.
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Rogue {
    me: Arc<Identity>,
    /// The key of the publisher the rogue wants boxes to trust.
    rogue_key: String,
    shutdown: Shutdown,
    journal: Journal,
}

/// Proves the rogue's own ID, honestly: it has no other.
async fn rogue_nonce(State(r): State<Rogue>, Query(q): Query<HashMap<String, String>>) -> Response {
    r.journal.note(Seen::NonceAsked {
        peer: q.get("peer").cloned(),
    });
    let proof = match (
        q.get("peer").and_then(|p| NodeId::parse(p).ok()),
        q.get("nonce").and_then(|n| Nonce::parse(n).ok()),
    ) {
        (Some(peer), Some(theirs)) => Some(r.me.prove(&Claim::session_server(&peer, &theirs))),
        _ => None,
    };
    axum::Json(Challenge {
        id: r.me.id().clone(),
        nonce: Nonce::random().unwrap(),
        proof,
        channel: None,
    })
    .into_response()
}

/// Takes any box that comes, keeps its token, and answers each heartbeat with
/// the rogue publisher's key.
async fn rogue_ws(State(r): State<Rogue>, request: Request) -> Response {
    r.journal.note(Seen::Upgrade {
        proof_id: proof_in(request.headers()).map(|p| p.id),
        authorization: header_text(request.headers(), "authorization"),
    });
    let shutdown = r.shutdown.clone();
    ws::upgrade(
        request,
        &shutdown,
        move |mut conn: ServerConnection| async move {
            while let Ok(Some(incoming)) = conn.recv().await {
                if let Incoming::Message(Message::Exchange(_)) = incoming {
                    let reply = Message::ExchangeReply(ExchangeReply {
                        header: Header::new(r.me.id().clone()),
                        entrance_urls: Vec::new(),
                        entrances: Some(Vec::new()),
                        publisher_keys: Some(vec![r.rogue_key.clone()]),
                        heartbeat_interval: Some(1),
                        extra: Default::default(),
                    });
                    if conn.send(&reply).await.is_err() {
                        break;
                    }
                    r.journal.note(Seen::KeysFed);
                }
            }
        },
    )
}

/// Whether a publisher can open a publish session on `b` (PUBLISH answered).
fn try_publish(lab: &Lab, b: &Daemon, b_id: &NodeId, who: &Identity) -> Result<(), String> {
    let url = format!("ws://127.0.0.1:{}/dandelion/{b_id}/ws", b.port());
    lab.rt.block_on(async {
        let mut conn = connect_as(&url, b_id, who, None)
            .await
            .map_err(|e| e.to_string())?;
        conn.send(&Message::Publish(Publish {
            header: Header::new(who.id().clone()),
            extra: Default::default(),
        }))
        .await
        .map_err(|e| e.to_string())?;
        match conn.recv().await {
            Ok(Some(Incoming::Message(Message::PublishReply(_)))) => Ok(()),
            other => Err(format!("PUBLISH answered {other:?}")),
        }
    })
}

#[test]
fn a_rogue_entrance_cannot_feed_a_box_publisher_keys() {
    let root = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    let rogue_publisher = Identity::generate(Role::Publisher).unwrap();
    let rogue = Rogue {
        me: Arc::new(Identity::generate(Role::Entrance).unwrap()),
        rogue_key: rogue_publisher.public_key_hex(),
        shutdown: Shutdown::new(),
        journal: Journal::default(),
    };
    let journal = rogue.journal.clone();
    let rogue_origin = lab.serve(|_| {
        Router::new()
            .route(NONCE_PATH, get(rogue_nonce))
            .route("/dandelion/ws", any(rogue_ws))
            .route("/dandelion/ws/", any(rogue_ws))
            .with_state(rogue)
            .merge(recorder(&journal))
    });
    let rogue_ws_url = format!("{}/dandelion/ws", ws_origin(&rogue_origin));
    // An entrance ID the rogue cannot prove: handed out with the rogue's URL by
    // an honest entrance whose operator mistyped, or was misled about, the URL.
    let elsewhere = Identity::generate(Role::Entrance).unwrap();
    let honest_publisher = Identity::generate(Role::Publisher).unwrap();

    let entrance_dir = root.path().join("entrance");
    let entrance = DaemonBuilder::new("entrance", &entrance_dir)
        .set(format!("join_token = {JOIN_TOKEN:?}"))
        .set(format!(
            "publisher_keys = [{:?}]",
            honest_publisher.public_key_hex()
        ))
        .set("heartbeat_interval = 1")
        .set("expire_box_time = 10")
        .set(format!("peers = [\"{rogue_ws_url}#{}\"]", elsewhere.id()))
        .spawn();
    let entrance_pin = pin(&entrance);
    let start_box = |name: &str, pinned: &str| {
        let b = DaemonBuilder::new("box", &root.path().join(name))
            .set(format!("entrances = [{pinned:?}]"))
            .set(format!("join_token = {JOIN_TOKEN:?}"))
            .set("heartbeat_interval = 1")
            .spawn();
        let id = id_of(&b, Role::Box).id().clone();
        (b, id)
    };
    // Configured with the rogue's URL pinned to the real entrance's ID.
    let (misled, misled_id) = start_box("misled", &format!("{rogue_ws_url}#{}", entrance_pin.id()));
    // Configured rightly; learns the rogue's URL from the real entrance.
    let (learner, learner_id) = start_box("learner", &entrance_pin.to_string());

    let boxes = [(&misled, &misled_id), (&learner, &learner_id)];
    wait_for(
        "both boxes to dial the rogue and refuse it twice",
        SOON,
        || {
            let dialled = journal.dialled_by();
            boxes
                .iter()
                .all(|(b, id)| {
                    dialled.contains(&id.to_string()) && lab.refused(b, "entrance_unproven") >= 2.0
                })
                .then_some(())
        },
    );
    lab.wait_active(&entrance, &learner_id, &Journal::default());

    // The rogue got no session, so no signature, no heartbeat and no token on
    // an upgrade, and fed no keys.
    assert_eq!(journal.upgrades(), [], "{:?}", journal.all());
    assert!(!journal.all().contains(&Seen::KeysFed));
    // The rogue publisher is trusted by neither box.
    for (b, id) in boxes {
        let refusal = try_publish(&lab, b, id, &rogue_publisher).unwrap_err();
        assert!(
            refusal.contains("403") && refusal.contains("not trusted by this box"),
            "{refusal}"
        );
        // Written by the box's log writer, which may lag the counter a little.
        let log = wait_for("the refusal in the box's log", SOON, || {
            let log = b.log();
            log.contains(NOT_TRUSTING).then_some(log)
        });
        assert_eq!(
            log.matches(NOT_TRUSTING).count(),
            1,
            "the refusal is logged once, however often it is retried:\n{log}"
        );
    }
    // Keys from the entrance that proved its ID are believed: the refusal above
    // is the rogue's, not a box that trusts nobody.
    wait_for(
        "the learner to trust the real entrance's publisher",
        SOON,
        || try_publish(&lab, &learner, &learner_id, &honest_publisher).ok(),
    );
    // Not on any request at all did the join token reach the rogue.
    assert_eq!(
        journal.authorizations(),
        [],
        "a box sent its join token to an entrance that never proved its ID"
    );
}

// ---------------------------------------------------------------------------
// 4. A box choosing where viewers go.
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Liar {
    me: Arc<Identity>,
    nonces: Arc<NonceBook>,
    /// Where it tells the publisher the file is.
    phish: String,
    data_url: String,
    shutdown: Shutdown,
    journal: Journal,
    /// The `VERSION` it answers `PUBLISH` with.
    version: &'static str,
    /// Confirms a file as soon as its start frame came, before its bytes.
    eager: bool,
}

/// A fake box at `origin` as [`Liar`] (the box `me`, confirming files at
/// `phish`, answering `PUBLISH` with `version`, confirming files before their
/// bytes came when `eager`), with the reachability proof and a recorder of
/// every other request in `journal`.
fn liar_box(
    me: &Arc<Identity>,
    journal: &Journal,
    phish: String,
    origin: &str,
    version: &'static str,
    eager: bool,
) -> Router {
    let liar = Liar {
        me: me.clone(),
        nonces: Arc::new(NonceBook::generate().unwrap()),
        phish,
        data_url: origin.to_owned(),
        shutdown: Shutdown::new(),
        journal: journal.clone(),
        version,
        eager,
    };
    Router::new()
        .route(NONCE_PATH, get(liar_nonce))
        .route("/dandelion/ws", any(liar_ws))
        .route("/dandelion/{box_id}/ws", any(liar_ws))
        .with_state(liar)
        .merge(reachability_route(me, origin))
        .merge(recorder(journal))
}

/// An honest nonce and server proof: the liar is the box it says it is.
async fn liar_nonce(State(l): State<Liar>, Query(q): Query<HashMap<String, String>>) -> Response {
    l.journal.note(Seen::NonceAsked {
        peer: q.get("peer").cloned(),
    });
    let proof = match (
        q.get("peer").and_then(|p| NodeId::parse(p).ok()),
        q.get("nonce").and_then(|n| Nonce::parse(n).ok()),
    ) {
        (Some(peer), Some(theirs)) => Some(l.me.prove(&Claim::session_server(&peer, &theirs))),
        _ => None,
    };
    axum::Json(Challenge {
        id: l.me.id().clone(),
        nonce: l.nonces.issue(l.me.id()).unwrap(),
        proof,
        channel: None,
    })
    .into_response()
}

/// Checks the publisher's proof as a real box does, then takes its files.
async fn liar_ws(State(l): State<Liar>, request: Request) -> Response {
    let headers = request.headers().clone();
    let peer = handshake::verify_proof(&headers, &l.nonces, l.me.id(), Channel::Unbound).await;
    l.journal.note(Seen::Upgrade {
        proof_id: proof_in(request.headers()).map(|p| p.id),
        authorization: header_text(request.headers(), "authorization"),
    });
    let Ok(Some(peer)) = peer else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let shutdown = l.shutdown.clone();
    ws::upgrade(request, &shutdown, move |conn| {
        liar_session(l, peer.id, conn)
    })
}

/// A file being received.
struct Upload {
    path: String,
    transfer: u64,
    size: u64,
    bytes: Vec<u8>,
    /// From the start frame or, `dandelion/2`, the final frame.
    hash_known: bool,
}

/// Receives files as a box does and confirms each, with its true size and
/// SHA-256, at the phishing URL.
async fn liar_session(l: Liar, publisher: NodeId, mut conn: ServerConnection) {
    let mut upload: Option<Upload> = None;
    while let Ok(Some(incoming)) = conn.recv().await {
        let frame = match incoming {
            Incoming::Message(Message::Publish(_)) => {
                let mut header = Header::new(l.me.id().clone());
                header.version = Some(l.version.to_owned());
                let reply = Message::PublishReply(PublishReply {
                    header,
                    data_url: Some(format!("{}/{publisher}/", l.data_url)),
                    max_file_size: Some(1 << 30),
                    max_frame: Some(1 << 20),
                    quota_free: None,
                    extra: Default::default(),
                });
                if conn.send(&reply).await.is_err() {
                    return;
                }
                continue;
            }
            Incoming::Binary(bytes) => match Frame::decode(bytes, &Limits::default()) {
                Ok(frame) => frame,
                Err(e) => return l.journal.note(Seen::Trouble(format!("frame: {e}"))),
            },
            Incoming::Message(_) => continue,
        };
        let kind = match &frame.header {
            FrameHeader::Start(StartHeader {
                chunked: Some(c), ..
            }) if c.sha256.is_some() => "start+sha256",
            FrameHeader::Start(_) => "start",
            FrameHeader::Continue { .. } => "continue",
            FrameHeader::Finish { .. } => "final",
            FrameHeader::Abort { .. } => "abort",
        };
        l.journal.note(Seen::Frame(kind.to_owned()));
        match frame.header {
            FrameHeader::Start(StartHeader {
                path,
                chunked: Some(chunked),
                ..
            }) => {
                upload = Some(Upload {
                    path,
                    transfer: chunked.transfer,
                    size: chunked.size,
                    bytes: frame.payload.to_vec(),
                    hash_known: chunked.sha256.is_some(),
                });
            }
            FrameHeader::Continue { transfer, .. } => {
                if let Some(u) = upload.as_mut().filter(|u| u.transfer == transfer) {
                    u.bytes.extend_from_slice(&frame.payload);
                }
            }
            FrameHeader::Finish { transfer, .. } => {
                if let Some(u) = upload.as_mut().filter(|u| u.transfer == transfer) {
                    u.bytes.extend_from_slice(&frame.payload);
                    u.hash_known = true;
                }
            }
            FrameHeader::Abort { .. } => upload = None,
            FrameHeader::Start(_) => {
                return l.journal.note(Seen::Trouble("a one-shot frame".into()));
            }
        }
        let Some(done) =
            upload.take_if(|u| l.eager || (u.hash_known && u.bytes.len() as u64 >= u.size))
        else {
            continue;
        };
        let confirmation = Message::Transfer(TransferResult {
            header: Header::new(l.me.id().clone()),
            transfer: Some(done.transfer),
            file_path: done.path.clone(),
            outcome: TransferOutcome::Stored {
                // An eager box claims the size it was told.
                size: done.size,
                sha256: format!("{:x}", Sha256::digest(&done.bytes)),
                url: l.phish.clone(),
            },
            headers: Map::new(),
        });
        if conn.send(&confirmation).await.is_err() {
            return;
        }
        l.journal.note(Seen::Confirmed {
            path: done.path,
            url: l.phish.clone(),
        });
    }
}

#[test]
fn a_box_cannot_choose_where_viewers_are_sent() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_setting("keep_sessions = 0")
        .start();
    let lab = Lab::new();
    let publisher = id_of(&net.publisher, Role::Publisher);

    // The page viewers would be sent to, on another port of the attacker's.
    let phish_journal = Journal::default();
    let phish_origin = lab.serve(|_| recorder(&phish_journal));
    let phish = format!("{phish_origin}/phish.ts");

    let me = Arc::new(Identity::generate(Role::Box).unwrap());
    let journal = Journal::default();
    let mut data_url = String::new();
    let origin = lab.serve(|origin| {
        data_url = origin.to_owned();
        liar_box(
            &me,
            &journal,
            phish.clone(),
            origin,
            PROTOCOL_VERSION,
            false,
        )
    });
    heartbeat(&lab, &me, pin(&net.entrance), &origin, &journal);
    lab.wait_active(&net.entrance, me.id(), &journal);
    lab.wait_ranked(&net.publisher, &[me.id()]);

    let name = "seg7.ts";
    let bytes = content(10_000, 7);
    lab.push(&net.publisher, name, &bytes, "replicas=1&ttl=120s");
    // The round's verdict is written with the job in one write, placements and
    // failures together: once the attacker's box shows in either, it is final.
    let status = wait_for(
        "the attacker to confirm the file at its URL and the publisher to judge it",
        SOON,
        || {
            let confirmed = journal
                .all()
                .iter()
                .any(|s| matches!(s, Seen::Confirmed { .. }));
            let status = lab.file_status(&net.publisher, name);
            let judged = ["failures", "placements"].iter().any(|list| {
                status[*list].as_array().is_some_and(|l| {
                    l.iter()
                        .any(|e| e["box_id"] == me.id().as_str() || e["box"] == me.id().as_str())
                })
            });
            (confirmed && judged).then_some(status)
        },
    );
    assert_eq!(
        journal.upgrades(),
        [(Some(publisher.id().to_string()), None)],
        "the publisher dialled the attacker and proved itself"
    );

    // Viewers get the publisher's own copy (or the URL the publisher derives),
    // never the attacker's page.
    let derived = dandelion_core::paths::file_url(&data_url, &format!("{}/{name}", publisher.id()));
    let viewer = lab.get(&format!("{}/{name}", net.publisher.origin()), &[]);
    let location = header_text(&viewer.headers, "location");
    assert_ne!(
        location.as_deref(),
        Some(phish.as_str()),
        "a viewer was sent to the attacker's page"
    );
    match viewer.status.as_u16() {
        200 => assert!(
            viewer.body == bytes,
            "the publisher serves the pushed bytes"
        ),
        302 => assert_eq!(location.as_deref(), Some(derived.as_str())),
        other => panic!("GET /{name} answered {other}: {}", viewer.text()),
    }
    // What `dandelion where` shows: no copy at the attacker's URL, and why.
    let placements = status["placements"].as_array().unwrap();
    assert!(
        placements.iter().all(|p| p["url"] != phish.as_str()),
        "the phish URL is a placement: {status}"
    );
    let refused = status["failures"].as_array().is_some_and(|f| {
        f.iter()
            .filter_map(|f| f["reason"].as_str())
            .any(|r| r.contains(&phish) && r.contains("not recorded"))
    });
    assert!(refused, "the failure names the URL it refused: {status}");
    assert!(
        lab.refused(&net.publisher, "placement_url") >= 1.0,
        "the refusal is counted"
    );
    assert_eq!(phish_journal.all(), [], "nobody was sent to the phish");
}

// ---------------------------------------------------------------------------
// 4b. Not an attack: the same fake box speaking an older protocol version.
// ---------------------------------------------------------------------------

/// Older boxes keep working: a box that speaks `dandelion/1` cannot take a
/// file's hash last, so it gets the file from the publisher's copy with the
/// hash first, while a `dandelion/2` box gets the upload as it arrives
/// (cut-through: no hash in the start frame, a final frame with it). Both
/// copies count once the boxes confirmed them.
#[test]
fn a_dandelion_1_box_gets_the_hash_first_and_a_dandelion_2_box_gets_the_upload_as_it_arrives() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_setting("keep_sessions = 0")
        .start();
    let lab = Lab::new();
    let publisher = id_of(&net.publisher, Role::Publisher);
    let name = "film.bin";
    let bytes = content(3 << 20, 11);

    let mut boxes = Vec::new();
    for version in ["dandelion/1", PROTOCOL_VERSION] {
        let me = Arc::new(Identity::generate(Role::Box).unwrap());
        let journal = Journal::default();
        let mut honest = String::new();
        let origin = lab.serve(|origin| {
            honest = dandelion_core::paths::file_url(origin, &format!("{}/{name}", publisher.id()));
            liar_box(&me, &journal, honest.clone(), origin, version, false)
        });
        heartbeat(&lab, &me, pin(&net.entrance), &origin, &journal);
        lab.wait_active(&net.entrance, me.id(), &journal);
        boxes.push((me, journal, version, honest));
    }
    let ids: Vec<&NodeId> = boxes.iter().map(|(me, ..)| me.id()).collect();
    lab.wait_ranked(&net.publisher, &ids);

    lab.push(&net.publisher, name, &bytes, "replicas=2&ttl=120s");
    let status = wait_for("both copies recorded", SOON, || {
        let status = lab.file_status(&net.publisher, name);
        let placed = status["placements"].as_array()?.len();
        (placed == 2).then_some(status)
    });
    for (me, journal, version, honest) in &boxes {
        let frames: Vec<String> = journal
            .all()
            .into_iter()
            .filter_map(|s| match s {
                Seen::Frame(kind) => Some(kind),
                _ => None,
            })
            .collect();
        let (first, middle, last) = match version {
            &"dandelion/1" => ("start+sha256", "continue", "continue"),
            _ => ("start", "continue", "final"),
        };
        assert_eq!(
            frames.first().map(String::as_str),
            Some(first),
            "{version}: {frames:?}"
        );
        assert_eq!(
            frames.last().map(String::as_str),
            Some(last),
            "{version}: {frames:?}"
        );
        assert!(
            frames[1..frames.len() - 1].iter().all(|f| f == middle),
            "{version}: {frames:?}"
        );
        let placement = status["placements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["box"] == me.id().as_str())
            .unwrap_or_else(|| panic!("no copy on the {version} box: {status}"));
        assert_eq!(placement["url"], honest.as_str());
    }
}

/// The attack: a box confirms a file the moment its transfer opens, with the
/// size it was told, before a byte of a cut-through upload reached it — a copy
/// the publisher would send viewers to and that does not exist. A verdict
/// before the final frame is a refusal, whatever it says, and one after it
/// must name the hash the publisher computed: the copy is not recorded.
#[test]
fn a_box_confirming_a_cut_through_upload_before_its_last_byte_places_nothing() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_setting("keep_sessions = 0")
        .start();
    let lab = Lab::new();
    let publisher = id_of(&net.publisher, Role::Publisher);
    let name = "early.bin";
    let bytes = content(3 << 20, 13);
    let me = Arc::new(Identity::generate(Role::Box).unwrap());
    let journal = Journal::default();
    let origin = lab.serve(|origin| {
        let url = dandelion_core::paths::file_url(origin, &format!("{}/{name}", publisher.id()));
        liar_box(&me, &journal, url, origin, PROTOCOL_VERSION, true)
    });
    heartbeat(&lab, &me, pin(&net.entrance), &origin, &journal);
    lab.wait_active(&net.entrance, me.id(), &journal);
    lab.wait_ranked(&net.publisher, &[me.id()]);

    lab.push(&net.publisher, name, &bytes, "replicas=1&ttl=120s");
    let status = wait_for("the early confirmation to be judged", SOON, || {
        let status = lab.file_status(&net.publisher, name);
        let judged = status["failures"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f["box_id"] == me.id().as_str()));
        judged.then_some(status)
    });
    assert!(
        journal.all().contains(&Seen::Frame("start".into())),
        "the upload was cut through: {:?}",
        journal.all()
    );
    let reasons: Vec<&str> = status["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["reason"].as_str())
        .collect();
    // Whether the confirmation overtakes the last frames on loopback is a
    // race: refused as early, or as not matching the hash sent after it.
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("before its last byte") || r.contains("not what was sent")),
        "{reasons:?}"
    );
    assert_eq!(status["placements"], serde_json::json!([]), "{status}");
}

// ---------------------------------------------------------------------------
// 5. A box moving its data URL once it passed the reachability check.
// ---------------------------------------------------------------------------

#[test]
fn a_box_cannot_move_its_data_url_after_passing_the_check() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 0)
        .publisher_setting("keep_sessions = 0")
        .start();
    let lab = Lab::new();
    let publisher = id_of(&net.publisher, Role::Publisher);
    let name = "seg9.ts";

    // The host the box moves to: it answers nothing but records every request.
    let phish_journal = Journal::default();
    let phish_origin = lab.serve(|_| recorder(&phish_journal));
    let phish =
        dandelion_core::paths::file_url(&phish_origin, &format!("{}/{name}", publisher.id()));

    // A box honest at its first URL, which confirms files at the moved-to host.
    let me = Arc::new(Identity::generate(Role::Box).unwrap());
    let journal = Journal::default();
    let origin = lab.serve(|origin| {
        liar_box(
            &me,
            &journal,
            phish.clone(),
            origin,
            PROTOCOL_VERSION,
            false,
        )
    });
    let advertised = Arc::new(Mutex::new(origin.clone()));
    heartbeat_advertising(
        &lab,
        &me,
        pin(&net.entrance),
        &origin,
        &advertised,
        &journal,
    );
    lab.wait_active(&net.entrance, me.id(), &journal);
    lab.wait_ranked(&net.publisher, &[me.id()]);

    // It moves. The entrance checks the new URL at once (not at its next
    // periodic round, minutes away), and nothing answers there as the box.
    *advertised.lock().unwrap() = phish_origin.clone();
    let listed = wait_for("the entrance to check the moved-to URL", SOON, || {
        let b = lab.listed(&net.entrance, me.id())?;
        (b["state"] == "unreachable").then_some(b)
    });
    let reason = listed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&phish_origin), "{listed}");

    // Meanwhile and after, the publisher was never handed the moved-to URL.
    let publisher_view = || {
        lab.json(&net.publisher, "/api/boxes")
            .as_array()
            .and_then(|a| a.iter().find(|b| b["box"] == me.id().as_str()).cloned())
    };
    if let Some(b) = publisher_view() {
        assert_ne!(b["data_url"], phish_origin.as_str(), "{b}");
    }

    // A file pushed now is not placed at the moved-to host, whether the
    // publisher still tries the box at its checked URL or has let it go.
    lab.push(
        &net.publisher,
        name,
        &content(5_000, 9),
        "replicas=1&ttl=120s",
    );
    let status = wait_for("the publisher to judge the box or let it go", SOON, || {
        let status = lab.file_status(&net.publisher, name);
        let judged = ["failures", "placements"].iter().any(|list| {
            status[*list].as_array().is_some_and(|l| {
                l.iter()
                    .any(|e| e["box_id"] == me.id().as_str() || e["box"] == me.id().as_str())
            })
        });
        let gone = publisher_view().is_none_or(|b| b["live"] == false);
        (judged || gone).then_some(status)
    });
    let placements = status["placements"].as_array().unwrap();
    assert!(
        placements.iter().all(|p| p["url"] != phish.as_str()),
        "a copy is recorded at the moved-to host: {status}"
    );
    let viewer = lab.get(&format!("{}/{name}", net.publisher.origin()), &[]);
    assert_ne!(
        header_text(&viewer.headers, "location").as_deref(),
        Some(phish.as_str()),
        "a viewer was sent to the moved-to host"
    );
    // The only caller of the moved-to host was the entrance's check.
    for seen in phish_journal.all() {
        assert!(
            matches!(&seen, Seen::Request { path, .. } if path.starts_with("GET /dandelion/reachability")),
            "the moved-to host was called for {seen:?}"
        );
    }
}
