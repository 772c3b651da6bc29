//! The session handshake over real sockets: the daemon proves its ID to the
//! dialling peer first, the peer proves its key-derived ID on the upgrade
//! request, and every wrong or missing credential is refused with 401/403 and
//! the reason, before any WebSocket exists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use dandelion_core::auth::{Challenge, Channel, Claim, NONCE_PATH};
use dandelion_core::config::Config;
use dandelion_core::connection::{Incoming, connect, connect_as};
use dandelion_core::http::HttpClient;
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::protocol::{Goodbye, Header, Message};
use dandelion_daemons::handshake::{self, Refusal};
use dandelion_daemons::listener::Remote;
use dandelion_daemons::server::{self, Common};
use dandelion_daemons::shutdown::Shutdown;

const JOIN_TOKEN: &str = "let-me-in";

struct TestDaemon {
    id: NodeId,
    url: String,
    origin: String,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A daemon that admits boxes holding the join token and echoes what they send.
async fn start() -> TestDaemon {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let shutdown = Shutdown::new();
    let common = Arc::new(
        Common::open(&config, Role::Entrance, shutdown.clone())
            .await
            .unwrap(),
    );
    let id = common.identity.id().clone();
    let router = Router::new()
        .route("/dandelion/ws", any(session))
        .with_state(common.clone())
        .merge(server::common_routes(common));
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, router, shutdown.clone()));
    TestDaemon {
        id,
        url: format!("ws://{addr}/dandelion/ws"),
        origin: format!("http://{addr}"),
        shutdown,
        _dir: dir,
    }
}

async fn session(
    State(common): State<Arc<Common>>,
    ConnectInfo(Remote {
        addr: peer_addr, ..
    }): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    let headers = request.headers().clone();
    let admitted = async {
        let peer = handshake::verify_proof(
            &headers,
            &common.nonces,
            common.identity.id(),
            Channel::Unbound,
        )
        .await?
        .ok_or_else(|| Refusal::unauthorized("no_proof", "prove your ID first"))?;
        handshake::require_role(&peer, Role::Box)?;
        match handshake::bearer(&headers) {
            Some(t) if handshake::token_matches(t, JOIN_TOKEN) => Ok(peer),
            _ => Err(Refusal::forbidden(
                "join_token",
                "wrong or missing join token",
            )),
        }
    }
    .await;
    match admitted {
        Ok(_peer) => {
            let shutdown = common.shutdown.clone();
            dandelion_daemons::ws::upgrade(request, &shutdown, |mut conn| async move {
                while let Ok(Some(Incoming::Message(m))) = conn.recv().await {
                    if conn.send(&m).await.is_err() {
                        break;
                    }
                }
            })
        }
        Err(refusal) => {
            common
                .refusals
                .record(&common.metrics, peer_addr.ip(), &refusal);
            refusal.into_response()
        }
    }
}

fn goodbye(identity: &Identity) -> Message {
    Message::Goodbye(Goodbye {
        header: Header::new(identity.id().clone()),
        reason: None,
    })
}

#[tokio::test]
async fn a_box_with_its_key_and_the_join_token_gets_in() {
    let daemon = start().await;
    let boxy = Identity::generate(Role::Box).unwrap();
    let mut conn = connect_as(&daemon.url, &daemon.id, &boxy, Some(JOIN_TOKEN))
        .await
        .unwrap();
    conn.send(&goodbye(&boxy)).await.unwrap();
    assert_eq!(
        conn.recv().await.unwrap(),
        Some(Incoming::Message(goodbye(&boxy)))
    );
}

#[tokio::test]
async fn every_wrong_credential_is_refused_with_its_reason_and_counted() {
    let daemon = start().await;
    let http = HttpClient::default();
    let boxy = Identity::generate(Role::Box).unwrap();

    let err = connect(&daemon.url, &[]).await.unwrap_err().to_string();
    assert!(
        err.ends_with("refused with 401 Unauthorized: prove your ID first"),
        "{err}"
    );

    let err = connect_as(&daemon.url, &daemon.id, &boxy, Some("guess"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("refused with 403 Forbidden: wrong or missing join token"),
        "{err}"
    );

    let publisher = Identity::generate(Role::Publisher).unwrap();
    let err = connect_as(&daemon.url, &daemon.id, &publisher, Some(JOIN_TOKEN))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("refused with 403 Forbidden: a publisher may not connect here as that role; expected a box"), "{err}");

    // Holding the join token but claiming another box's ID.
    let victim = Identity::generate(Role::Box).unwrap();
    let challenge: Challenge = http
        .get(&format!("{}{NONCE_PATH}", daemon.origin), &[])
        .await
        .unwrap()
        .json()
        .unwrap();
    let mut proof = boxy.prove(&Claim::session_client(&challenge.id, &challenge.nonce));
    proof.id = victim.id().to_string();
    let auth = format!("Bearer {JOIN_TOKEN}");
    let mut headers = proof.headers().to_vec();
    headers.push(("authorization", &auth));
    let err = connect(&daemon.url, &headers)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "401 Unauthorized: ID {} does not belong to the public key presented",
            victim.id()
        )),
        "{err}"
    );

    // A proof is good for one session only.
    let challenge: Challenge = http
        .get(&format!("{}{NONCE_PATH}", daemon.origin), &[])
        .await
        .unwrap()
        .json()
        .unwrap();
    let proof = boxy.prove(&Claim::session_client(&challenge.id, &challenge.nonce));
    let mut headers = proof.headers().to_vec();
    headers.push(("authorization", &auth));
    connect(&daemon.url, &headers).await.unwrap();
    let err = connect(&daemon.url, &headers)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "401 Unauthorized: this nonce was already used; a proof is good for one session only"
        ),
        "{err}"
    );

    let metrics = http
        .get(&format!("{}/metrics", daemon.origin), &[])
        .await
        .unwrap()
        .text();
    for reason in [
        "no_proof",
        "join_token",
        "wrong_role",
        "id_mismatch",
        "replayed_nonce",
    ] {
        assert!(
            metrics.contains(&format!("dandelion_refused_total{{reason=\"{reason}\"}} 1")),
            "{reason}:\n{metrics}"
        );
    }
}

/// The dialling side checks the daemon is the one it meant before it signs or
/// sends a token: a daemon answering as another ID gets neither.
#[tokio::test]
async fn a_client_signs_nothing_for_a_daemon_it_did_not_mean_to_reach() {
    let daemon = start().await;
    let http = HttpClient::default();
    let boxy = Identity::generate(Role::Box).unwrap();
    let meant = Identity::generate(Role::Entrance).unwrap();
    let err = connect_as(&daemon.url, meant.id(), &boxy, Some(JOIN_TOKEN))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{} did not prove it is {}: the proof comes from {}, not from {}; nothing was \
             signed or sent",
            daemon.url,
            meant.id(),
            daemon.id,
            meant.id()
        )
    );
    // Nothing reached the upgrade: no refusal was even counted.
    let metrics = http
        .get(&format!("{}/metrics", daemon.origin), &[])
        .await
        .unwrap()
        .text();
    assert_eq!(
        dandelion_testkit::counter_sum(&metrics, "dandelion_refused_total"),
        0.0,
        "{metrics}"
    );
}

/// The daemon's own proof answers only the client and nonce asked for.
#[tokio::test]
async fn the_daemon_proves_its_id_for_the_clients_nonce() {
    let daemon = start().await;
    let http = HttpClient::default();
    let boxy = Identity::generate(Role::Box).unwrap();
    let ours = dandelion_core::auth::Nonce::random().unwrap();
    let challenge: Challenge = http
        .get(
            &format!(
                "{}{NONCE_PATH}?peer={}&nonce={}",
                daemon.origin,
                boxy.id(),
                ours.as_str()
            ),
            &[],
        )
        .await
        .unwrap()
        .json()
        .unwrap();
    let proof = challenge
        .proof
        .expect("a proof when asked with peer and nonce");
    let claim = Claim::session_server(boxy.id(), &ours);
    assert!(dandelion_core::auth::verify_from(&proof, &daemon.id, &claim).is_ok());
    // Not for anyone else, and not as a client's proof.
    let other = Identity::generate(Role::Box).unwrap();
    assert!(
        dandelion_core::auth::verify(&proof, &Claim::session_server(other.id(), &ours)).is_err()
    );
    assert!(
        dandelion_core::auth::verify(&proof, &Claim::session_client(boxy.id(), &ours)).is_err()
    );
    // Half a query is a clear error.
    let half = http
        .get(
            &format!("{}{NONCE_PATH}?peer={}", daemon.origin, boxy.id()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(half.status.as_u16(), 400);
    assert_eq!(half.text(), "`peer` and `nonce` go together\n");
}

#[tokio::test]
async fn index_says_who_the_daemon_is() {
    let daemon = start().await;
    let text = HttpClient::default()
        .get(&format!("{}/", daemon.origin), &[])
        .await
        .unwrap()
        .text();
    assert!(text.starts_with("HI entrance-"), "{text}");
}
