//! The entrance: the registry that boxes announce themselves to and publishers
//! search (`dandelion entrance`).
//!
//! How the parts fit: [`registry`] holds the decisions (states, staleness,
//! self-preservation, ranking) as plain functions; [`book`] keeps all registry
//! state in the store, so entrances sharing a namespace agree and a restart loses
//! nothing; [`session`] admits WebSocket peers and runs their sessions;
//! [`enrol`] binds boxes to their owners and [`newcomers`] limits how fast
//! new identities arrive; [`reach`] dials boxes back to prove they can be reached; [`locate`] finds
//! where a box is; [`sweep`] expires silent boxes (or holds back when
//! self-preservation says so); [`api`] is the HTTP side for operators.

pub mod api;
pub mod book;
pub mod console;
pub mod enrol;
pub mod locate;
pub mod newcomers;
pub mod reach;
pub mod registry;
pub mod session;
pub mod sweep;
pub mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::routing::{any, get, post, put};
use dandelion_core::config::{Config, EntranceConfig};
use dandelion_core::geo::GeoDb;
use dandelion_core::http::HttpClient;
use dandelion_core::ids::Role;
use dandelion_core::pinned::PinnedUrl;
use dandelion_core::secrets;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::listener::Listener;
use crate::server::{self, Common};
use crate::shutdown::{GRACE_PERIOD, Shutdown};
use book::Book;

/// The WebSocket path, as the original's (with and without the trailing slash).
pub const WS_PATH: &str = "/dandelion/ws";

/// The join token file older installs generated into the data directory; still
/// honoured where it exists, never created.
pub fn join_token_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("join.token")
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// The entrance's own metrics, registered next to the common ones.
#[derive(Debug, Default)]
pub struct EntranceMetrics {
    pub heartbeats: Counter,
    pub evictions: Counter,
    pub expired: Counter,
    pub boxes: Family<StateLabel, Gauge>,
    /// The original 2017 boxes among `boxes`: a migration's progress.
    pub legacy_boxes: Family<StateLabel, Gauge>,
    /// From a heartbeat read to its answer written: what a box waits.
    pub heartbeat_reply: crate::metrics::Latency,
    /// 1 while expiry is held back (most boxes went silent at once), else 0.
    pub self_preservation: Gauge,
}

/// State shared by every task of one entrance; cloned as `Arc<Shared>`.
#[derive(Debug)]
pub struct Shared {
    pub common: Arc<Common>,
    pub config: EntranceConfig,
    pub book: Book,
    pub enrolment: enrol::Enrolment,
    pub newcomers: newcomers::Newcomers,
    /// The shared join token, where this network admits boxes by one.
    pub join_token: Option<String>,
    pub geo: Option<GeoDb>,
    /// This entrance's URL and ID as handed to boxes and publishers.
    pub own: PinnedUrl,
    pub metrics: EntranceMetrics,
    /// Client for reachability checks, with their short timeout.
    pub reach_http: HttpClient,
    /// Live sessions of this entrance by box ID, so an eviction reaches the box at
    /// once. A std Mutex: only inserts and removals, never held across an await.
    sessions: Mutex<HashMap<String, (u64, mpsc::Sender<String>)>>,
    next_session: AtomicU64,
    /// Why expiry is held back, while it is. A std Mutex for the same reason.
    preservation: Mutex<Option<String>>,
    /// Publishers watching for boxes that leave or come back.
    pub watchers: watch::Watchers,
    /// The heartbeat answer, encoded on first use (`session::exchange_reply`).
    exchange_reply: std::sync::OnceLock<dandelion_core::connection::Encoded>,
}

impl Shared {
    pub fn preservation(&self) -> Option<String> {
        self.preservation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_preservation(&self, reason: Option<String>) -> Option<String> {
        std::mem::replace(
            &mut *self.preservation.lock().unwrap_or_else(|p| p.into_inner()),
            reason,
        )
    }

    /// Registers a live box session; returns its number and the eviction receiver.
    fn attach(&self, box_id: &str) -> (u64, mpsc::Receiver<String>) {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(1);
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(box_id.to_owned(), (n, tx));
        (n, rx)
    }

    /// Ends session `n` of `box_id`; true if it was the box's current session
    /// (a box that reconnected before its old session ended has a newer one).
    fn detach(&self, box_id: &str, n: u64) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let current = sessions.get(box_id).is_some_and(|(m, _)| *m == n);
        if current {
            sessions.remove(box_id);
        }
        current
    }

    /// Tells a box's live session (on this entrance) that it was evicted.
    pub fn notify_evicted(&self, box_id: &str, reason: &str) {
        let tx = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(box_id)
            .map(|(_, tx)| tx.clone());
        if let Some(tx) = tx {
            let _ = tx.try_send(reason.to_owned());
        }
    }

    /// This entrance, then its peers.
    fn all_entrances(&self) -> impl Iterator<Item = &PinnedUrl> {
        std::iter::once(&self.own)
            .chain(self.config.peers.iter().filter(|p| p.id() != self.own.id()))
    }

    /// URLs handed out in `ENTRANCE_URLS`, for the original's peers.
    pub fn entrance_urls(&self) -> Vec<String> {
        self.all_entrances().map(|p| p.url().to_owned()).collect()
    }

    /// This entrance and its peers as the original 2017 peers can dial them
    /// (`legacy::original_url`): those with an IPv4 address, or none.
    pub fn legacy_entrance_urls(&self) -> Vec<String> {
        dandelion_core::protocol::legacy::original_urls(self.all_entrances().map(PinnedUrl::url))
    }

    /// `URL#ID`s handed out in `ENTRANCES`: what boxes and publishers learn from.
    pub fn entrances(&self) -> Vec<String> {
        self.all_entrances().map(ToString::to_string).collect()
    }
}

/// What a peer is told when the registry's store fails. The error itself names
/// the store (a Redis host and port), which is nobody's business outside this
/// machine: it goes to the log, and the peer learns only that it should retry.
pub fn registry_unavailable(context: &str, e: &dyn std::fmt::Display) -> String {
    tracing::warn!("{context}: the store failed: {e}");
    "the registry is unavailable (its store does not answer); try again shortly".to_owned()
}

fn load_join_token(config: &Config) -> anyhow::Result<Option<String>> {
    let e = &config.entrance;
    if let Some(token) = e
        .join_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token.to_owned()));
    }
    if let Some(path) = &e.join_token_file {
        return secrets::read_token_file(path)
            .map(Some)
            .context("entrance.join_token_file");
    }
    let path = join_token_path(&config.data_dir);
    if path.exists() {
        tracing::warn!(
            path = %path.display(),
            "using the join token an older version generated: anyone holding it can join boxes \
             under no owner; enrol boxes with `dandelion invite` and delete the file to stop that"
        );
        return secrets::read_token_file(&path)
            .map(Some)
            .context("the generated join token");
    }
    tracing::info!("no join token: boxes join with invitations (`dandelion invite OWNER`)");
    Ok(None)
}

/// Runs the entrance on `listener` until `shutdown` is triggered, then waits
/// for its sessions and background tasks (bounded by the grace period).
pub async fn run(listener: TcpListener, config: &Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let tasks = shutdown;
    let common = Arc::new(Common::open(config, Role::Entrance, tasks.clone()).await?);
    let e = config.entrance.clone();
    let geo = match &e.geoip_db {
        Some(path) => Some(GeoDb::open(path, e.asn_db.as_deref())?),
        None => {
            tracing::info!(
                "no entrance.geoip_db: boxes are located by what they report themselves"
            );
            None
        }
    };
    if e.legacy_peers {
        let publishers = if e.legacy_publishers.is_empty() {
            "no original publisher is answered until its address is in legacy_publishers".to_owned()
        } else {
            let nets: Vec<String> = e
                .legacy_publishers
                .iter()
                .map(ToString::to_string)
                .collect();
            format!(
                "original publishers from {} are shown legacy boxes only",
                nets.join(", ")
            )
        };
        tracing::warn!(
            "LEGACY PEERS ON: the original 2017 boxes are admitted without proving their IDs; \
             their boxes are marked legacy and only handed to publishers that ask for unverified \
             boxes; {publishers}"
        );
    } else if !e.legacy_publishers.is_empty() {
        tracing::warn!(
            "legacy_publishers is set but legacy_peers is off: nobody is admitted by it"
        );
    }
    let local = listener
        .local_addr()
        .context("the listener has no address")?;
    let tls = server::load_tls("entrance", e.tls_cert.as_deref(), e.tls_key.as_deref())?;
    let listener = Listener::new(listener, tls, &common).context("the entrance's listener")?;
    let ws = if listener.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    let own_url = e
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{ws}://{local}{WS_PATH}/"));
    let own =
        PinnedUrl::new(&own_url, common.identity.id().clone()).context("entrance.public_url")?;
    let namespace = e
        .namespace
        .clone()
        .unwrap_or_else(|| common.identity.id().to_string());
    let metrics = EntranceMetrics::default();
    common.metrics.register(
        "heartbeats",
        "Heartbeats (EXCHANGE) received",
        metrics.heartbeats.clone(),
    );
    common.metrics.register(
        "evictions",
        "Boxes evicted by an operator",
        metrics.evictions.clone(),
    );
    common.metrics.register(
        "expired",
        "Boxes expired after going silent",
        metrics.expired.clone(),
    );
    common
        .metrics
        .register("boxes", "Boxes known, by state", metrics.boxes.clone());
    common.metrics.register(
        "legacy_boxes",
        "Original 2017 boxes (unauthenticated) among the boxes known, by state",
        metrics.legacy_boxes.clone(),
    );
    common.metrics.register(
        "self_preservation",
        "1 while expiry is held back because most boxes went silent at once (the entrance's own link, or the store, may be the cause)",
        metrics.self_preservation.clone(),
    );
    common.metrics.register(
        "heartbeat_reply_seconds",
        "From a box's heartbeat read to its answer written",
        metrics.heartbeat_reply.0.clone(),
    );
    let shared = Arc::new(Shared {
        book: Book::new(common.store.clone(), &namespace),
        enrolment: enrol::Enrolment::new(common.store.clone(), &namespace),
        newcomers: newcomers::Newcomers::new(
            e.new_boxes_per_address_per_hour,
            e.new_boxes_per_prefix_per_hour,
        ),
        join_token: load_join_token(config)?,
        reach_http: HttpClient::new(e.reachability_timeout).with_body_limit(16 << 10),
        config: e,
        geo,
        own,
        metrics,
        sessions: Mutex::new(HashMap::new()),
        next_session: AtomicU64::new(0),
        preservation: Mutex::new(None),
        watchers: watch::Watchers::default(),
        exchange_reply: std::sync::OnceLock::new(),
        common: common.clone(),
    });
    tracing::info!(
        id = %common.identity.id(),
        url = %shared.own.url(),
        pin = %shared.own,
        %namespace,
        store = %dandelion_core::store::redact_url(&config.store),
        "entrance listening on {local}"
    );
    tasks.spawn(sweep::run(shared.clone(), tasks.clone()));
    if shared.config.reachability_check {
        tasks.spawn(reach::run_periodic(shared.clone(), tasks.clone()));
    }
    let router = Router::new()
        .route(WS_PATH, any(session::handle))
        .route("/dandelion/ws/", any(session::handle))
        .route("/healthz", get(api::healthz))
        .route(dandelion_core::protocol::UPLINK_PATH, post(api::uplink))
        .route("/api/boxes", get(api::list))
        .route("/api/summary", get(api::summary))
        .route("/api/boxes/{id}/evict", post(api::evict))
        .route("/api/boxes/{id}/location", put(api::locate))
        .route("/api/invitations", post(api::invite))
        .route("/api/owners", get(api::owners))
        .route("/api/owners/{owner}/revoke", post(api::revoke))
        .route("/api/owners/{owner}/cap", put(api::cap))
        .with_state(shared.clone())
        .merge(crate::console::routes(
            common.clone(),
            Arc::new(console::Feed(shared.clone())),
        ))
        .merge(server::common_routes(common.clone()));
    server::serve_role(listener, router, &common, None)
        .await
        .context("the entrance's HTTP server failed")?;
    if !tasks.drain(GRACE_PERIOD).await {
        tracing::warn!("some sessions did not end within the grace period");
    }
    tracing::info!("entrance stopped");
    Ok(())
}
