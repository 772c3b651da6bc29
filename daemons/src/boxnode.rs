//! The box (`dandelion box`): receives files from trusted publishers, keeps them
//! for their TTL, serves them to viewers, and tells its entrances what it can give.
//!
//! `box` is a Rust keyword, hence the module name; users only ever see "box".
//! The modules split by concern, with the decisions as plain functions:
//! `dandelion_core::paths` (which file names are safe), [`rules`] (TTL, quotas, serving
//! headers), [`storage`] (files on disk and the expiry index, crash repair),
//! [`session`] (publisher connections and transfers), [`serve`] (HTTP for
//! viewers, with a [`cache`] of hot small files and [`sendfile`] for plain GETs), [`limits`] (upload cap, concurrent downloads), [`traffic`]
//! (accounting), [`heartbeat`] (the entrances) and [`api`] (reachability,
//! admin listing). [`run`] wires them together.

pub mod api;
pub mod cache;
pub mod console;
pub mod heartbeat;
pub mod limits;
pub mod rules;
pub mod sendfile;
pub mod serve;
pub mod session;
pub mod storage;
pub mod traffic;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::{any, get};
use dandelion_core::config::{BoxConfig, Config};
use dandelion_core::frame;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::probe::Probe;
use dandelion_core::protocol::{Header, SystemInfo};
use dandelion_core::store::keys::Keys;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;

use crate::listener::Listener;
use crate::server::{self, Common};
use crate::shutdown::{GRACE_PERIOD, Shutdown};

/// How often expired files are looked for. Serving already answers 404 at the
/// second a file expires; the sweep only frees the disk.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the box's tasks share; behind an `Arc`.
#[derive(Debug)]
pub struct BoxState {
    pub common: Arc<Common>,
    pub config: BoxConfig,
    pub storage: storage::Storage,
    pub limits: limits::Limits,
    pub traffic: traffic::Traffic,
    pub cache: cache::Cache,
    pub entrances: heartbeat::Entrances,
    stored_files: Gauge,
    stored_bytes: Gauge,
    sampler: heartbeat::Sampler,
    configured_keys: HashSet<String>,
    /// Publisher keys each proven entrance named in its latest reply; one
    /// entrance's list never replaces another's or the configured ones. An
    /// RwLock: read on every publisher handshake, written once per heartbeat reply.
    learned_keys: RwLock<HashMap<NodeId, HashSet<String>>>,
    /// Where viewers reach this box, without a trailing `/`.
    pub public_base: String,
    /// Where publishers open sessions: `ws://<public>/dandelion/<box-id>/ws`.
    pub connect_ws: String,
    /// What the box presents to entrances: the join token, or its invitation
    /// (which, once redeemed, only its uplink test still needs).
    credential: Option<String>,
    host: String,
    port: u16,
    /// The last uplink measurement, bytes per second (0: none yet).
    pub uplink: std::sync::atomic::AtomicU64,
    /// Publishers with a session open, and how many sessions each. A std Mutex:
    /// touched when a session opens or ends, never across an await.
    publishers: std::sync::Mutex<std::collections::BTreeMap<String, usize>>,
    /// One permit per publisher session that may be open (`max_publisher_sessions`).
    pub sessions: Arc<tokio::sync::Semaphore>,
    /// One permit per byte of file frames received and not yet on disk
    /// (`upload_memory`).
    pub upload_memory: Arc<tokio::sync::Semaphore>,
}

impl BoxState {
    /// Whether a publisher's key is in the configuration or in the latest list
    /// of an entrance that proved its ID.
    pub fn trusts(&self, public_key: &str) -> bool {
        let key = public_key.to_ascii_lowercase();
        self.configured_keys.contains(&key)
            || self
                .learned_keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|keys| keys.contains(&key))
    }

    /// Replaces what `entrance` (proven in its session's handshake) says.
    fn set_learned_keys(&self, entrance: &NodeId, keys: Vec<String>) {
        let keys = keys
            .into_iter()
            .map(|k| k.trim().to_ascii_lowercase())
            .collect();
        self.learned_keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entrance.clone(), keys);
    }

    /// Publishers connected now.
    pub fn publishers(&self) -> Vec<String> {
        let open = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        open.keys().cloned().collect()
    }

    /// Counts a publisher's session in (`+1`) or out (`-1`) for the console.
    fn publisher_session(&self, id: &str, opened: bool) {
        {
            let mut open = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(id.to_owned()).or_default();
            if opened {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(id);
                }
            }
        }
        self.common.console.touch();
    }

    /// The header of every message the box sends.
    pub fn header(&self) -> Header {
        Header::new(self.common.identity.id().clone()).with_address(self.host.clone(), self.port)
    }

    /// What a publisher session may send: chunked transfers, and one-shot
    /// frames no larger than a chunk, so that no message is over
    /// [`frame::Limits::max_chunked_message`], the session's WebSocket limit.
    fn frame_limits(&self) -> frame::Limits {
        let defaults = frame::Limits::default();
        frame::Limits {
            max_file_size: self.config.max_file_size.as_u64(),
            max_oneshot_bytes: defaults.max_chunk_bytes,
            ..defaults
        }
    }

    fn sample(&self) -> SystemInfo {
        self.sampler.sample(self.config.heartbeat_interval / 2)
    }
}

/// Runs a box on `listener` until `shutdown`, then says goodbye to its entrances
/// and waits (bounded) for its tasks.
pub async fn run(listener: TcpListener, config: &Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let common = Arc::new(Common::open(config, Role::Box, shutdown.clone()).await?);
    let box_config = config.boxnode.clone();
    let local = listener
        .local_addr()
        .context("the listener has no address")?;
    let tls = server::load_tls(
        "box",
        box_config.tls_cert.as_deref(),
        box_config.tls_key.as_deref(),
    )?;
    // Without a certificate of its own, the box still speaks TLS to its
    // publishers, with its identity certificate on the same port.
    let listener = match tls {
        Some(tls) => Listener::tls(listener, tls, common.clone()),
        None => {
            let identity = dandelion_core::tls::ServerTls::identity(&common.identity)
                .context("the box's identity certificate")?;
            Listener::plain_and_tls(listener, Arc::new(identity), common.clone())
        }
    }
    .context("the box's listener")?;
    let public_base = public_base(&box_config, local, listener.scheme());
    let (host, port) = host_port(&public_base).unwrap_or((local.ip().to_string(), local.port()));
    let connect_ws = format!(
        "{}/dandelion/{}/ws",
        public_base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "wss://", 1),
        common.identity.id()
    );
    let credential = credential(&box_config)?;
    let storage = storage::Storage::open(
        &config.data_dir,
        common.store.clone(),
        Keys::new(common.identity.id().as_str()).expire_files(),
        rules::Quotas {
            storage: box_config.storage_quota.map(|q| q.as_u64()),
            publisher: box_config.publisher_quota.map(|q| q.as_u64()),
            disk_available: None,
        },
    )
    .await?;
    // The household's limits as set, beside what is used of them
    // (box_stored_bytes, rate(box_served_bytes_total)): 0 where none is set.
    let as_gauge = |v: Option<bytesize::ByteSize>| {
        i64::try_from(v.map_or(0, |v| v.as_u64())).unwrap_or(i64::MAX)
    };
    gauge(
        &common.metrics,
        "box_upload_cap_bytes_per_second",
        "Upload cap across all viewers, in bytes per second (0: none)",
    )
    .set(as_gauge(box_config.upload_cap));
    gauge(
        &common.metrics,
        "box_storage_quota_bytes",
        "Disk space the box may use for stored files (0: none)",
    )
    .set(as_gauge(box_config.storage_quota));
    let state = Arc::new(BoxState {
        limits: limits::Limits::new(
            box_config.upload_cap.map(|c| c.as_u64()),
            box_config.max_downloads,
        ),
        traffic: traffic::Traffic::new(&common.metrics),
        cache: cache::Cache::default(),
        entrances: heartbeat::Entrances::default(),
        stored_files: gauge(
            &common.metrics,
            "box_stored_files",
            "Files stored on this box",
        ),
        stored_bytes: gauge(
            &common.metrics,
            "box_stored_bytes",
            "Bytes of files stored on this box",
        ),
        sampler: heartbeat::Sampler::new(Probe::new(&config.data_dir)),
        configured_keys: box_config
            .publisher_keys
            .iter()
            .map(|k| k.trim().to_ascii_lowercase())
            .collect(),
        learned_keys: RwLock::new(HashMap::new()),
        public_base,
        connect_ws,
        credential,
        host,
        port,
        uplink: std::sync::atomic::AtomicU64::new(0),
        publishers: std::sync::Mutex::default(),
        sessions: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(box_config.max_publisher_sessions).unwrap_or(1),
        )),
        upload_memory: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(box_config.upload_memory.as_u64()).unwrap_or(usize::MAX >> 4),
        )),
        storage,
        config: box_config,
        common: common.clone(),
    });
    tracing::info!(
        id = %common.identity.id(),
        %local,
        data_url = %state.public_base,
        "box listening"
    );
    heartbeat::start(&state);
    shutdown.spawn(heartbeat::measure_uplink(state.clone()));
    shutdown.spawn(sweeper(state.clone()));
    // Graceful shutdown waits for responses in flight; a viewer downloading
    // slowly under the upload cap must not hold the box up past the grace period.
    let front: Arc<dyn server::Front> = Arc::new(sendfile::FileFront::new(state.clone()));
    let serving = server::serve_role(listener, routes(state), &common, Some(front));
    tokio::select! {
        served = serving => served.context("serving HTTP")?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(GRACE_PERIOD).await;
        } => tracing::warn!("downloads still open after the grace period were cut off"),
    }
    if !shutdown.drain(GRACE_PERIOD).await {
        tracing::warn!("some tasks did not finish within the grace period");
    }
    Ok(())
}

/// Every route of a box. File serving is the fallback, so it can never shadow
/// `/dandelion/*`, `/api/*`, `/metrics`, `/healthz` or `/`.
pub fn routes(state: Arc<BoxState>) -> Router {
    let common = state.common.clone();
    Router::new()
        .route("/dandelion/ws", any(session::publisher_ws))
        .route("/dandelion/ws/", any(session::publisher_ws))
        .route("/dandelion/{box_id}/ws", any(session::publisher_ws_with_id))
        .route(
            "/dandelion/{box_id}/ws/",
            any(session::publisher_ws_with_id),
        )
        .route("/dandelion/{box_id}/", get(api::hello))
        .route(
            dandelion_core::auth::REACHABILITY_PATH,
            get(api::reachability),
        )
        .route("/api/files", get(api::files))
        .route("/healthz", get(api::healthz))
        .fallback(serve::file)
        .with_state(state.clone())
        .merge(crate::console::routes(
            common.clone(),
            Arc::new(console::Feed(state)),
        ))
        .merge(server::common_routes(common))
}

fn gauge(metrics: &crate::metrics::Metrics, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    metrics.register(name, help, gauge.clone());
    gauge
}

async fn sweeper(state: Arc<BoxState>) {
    let shutdown = state.common.shutdown.clone();
    let mut served = (0, 0);
    loop {
        // Consoles see traffic move at the sweep's rhythm too.
        let totals = state.traffic.totals();
        if (totals.bytes, totals.requests) != served {
            served = (totals.bytes, totals.requests);
            state.common.console.touch();
        }
        // The gauges follow the sweep's rhythm: a second old at most, and no
        // bookkeeping on the transfer path.
        let (files, bytes) = state.storage.counts();
        state
            .stored_files
            .set(i64::try_from(files).unwrap_or(i64::MAX));
        state
            .stored_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        match state.storage.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(files = n, "expired files deleted");
                let console = &state.common.console;
                console.event(
                    dandelion_core::console::Level::Info,
                    format!("{n} file(s) expired"),
                );
                console.touch();
                state.traffic.retain(|m| state.storage.get(m).is_some());
            }
            Err(e) => tracing::warn!("expiry sweep failed: {e:#}"),
        }
    }
}

/// `box.public_url` without a trailing `/`, else `<scheme>://<listen address>`,
/// with `box.bind_outgoing` standing in for an unspecified (0.0.0.0) address.
fn public_base(config: &BoxConfig, local: SocketAddr, scheme: &str) -> String {
    if let Some(url) = &config.public_url {
        return url.trim().trim_end_matches('/').to_owned();
    }
    let mut addr = local;
    if addr.ip().is_unspecified()
        && let Some(ip) = config.bind_outgoing
    {
        addr.set_ip(ip);
    }
    format!("{scheme}://{addr}")
}

fn host_port(base: &str) -> Option<(String, u16)> {
    let uri: axum::http::Uri = base.parse().ok()?;
    let host = uri.host()?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Some((host, port))
}

/// The box's credential: its join token or its invitation, inline or from a file.
fn credential(b: &dandelion_core::config::BoxConfig) -> anyhow::Result<Option<String>> {
    use dandelion_core::secrets::read_token_file;
    Ok(
        match (
            &b.join_token,
            &b.join_token_file,
            &b.invitation,
            &b.invitation_file,
        ) {
            (Some(token), ..) => Some(token.trim().to_owned()),
            (None, Some(file), ..) => Some(read_token_file(file).context("box.join_token_file")?),
            (None, None, Some(code), _) => Some(code.trim().to_owned()),
            (None, None, None, Some(file)) => {
                Some(read_token_file(file).context("box.invitation_file")?)
            }
            (None, None, None, None) => None,
        },
    )
}
