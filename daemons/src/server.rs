//! What every daemon's HTTP side shares: start-up (data directory, identity,
//! admin token, store), the routes every role answers (`/`, `/metrics`, the
//! handshake nonce), admin-token checks, and serving with graceful shutdown.

use crate::health::Health;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dandelion_core::admintoken::AdminToken;
use dandelion_core::auth::{CHANNEL_TLS_EXPORTER, Challenge, Channel, Claim, NONCE_PATH, Nonce};
use dandelion_core::config::{self, Config, Limits};
use dandelion_core::identity::Identity;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::nonces::NonceBook;
use dandelion_core::protocol::PROTOCOL_VERSION;
use dandelion_core::store::{self, Store};
use dandelion_core::tls::ServerTls;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::admission::{self, Admission};
use crate::console::Hub;
use crate::handshake::{Refusal, RefusalLog, bearer};
use crate::listener::{Io, Listener, Remote};
use crate::metrics::Metrics;
use crate::ratelimit::{Kind, RateLimits};
use crate::shutdown::Shutdown;

/// State every role holds; roles wrap it in their own shared state.
#[derive(Debug)]
pub struct Common {
    pub identity: Identity,
    pub store: Arc<dyn Store>,
    pub nonces: NonceBook,
    pub metrics: Metrics,
    pub refusals: RefusalLog,
    pub admin_token: Arc<AdminToken>,
    pub data_dir: PathBuf,
    pub shutdown: Shutdown,
    pub started: Instant,
    /// What attached consoles are told.
    pub console: Hub,
    /// TLS-terminating proxies in front of this daemon: they may forward tokens
    /// in clear (the role's `trusted_proxies`).
    pub token_proxies: Vec<std::net::IpAddr>,
    /// The `[limits]` every listener of this daemon serves under.
    pub limits: Limits,
    /// Connection counts against `limits` (see [`crate::admission`]).
    pub admission: Arc<Admission>,
    /// Handshakes and failed credentials per address (see [`crate::ratelimit`]).
    pub rates: RateLimits,
    /// What `/healthz` reports beyond answering (see [`crate::health`]).
    pub health: Arc<Health>,
}

pub use dandelion_core::secrets::admin_token_path;

impl Common {
    /// The start-up path shared by every role. Fails with the offending path,
    /// URL or setting named.
    pub async fn open(config: &Config, role: Role, shutdown: Shutdown) -> anyhow::Result<Common> {
        config::prepare_data_dir(&config.data_dir)?;
        let identity = Identity::load_or_create(&config.data_dir, role)?;
        let provisioned = match role {
            Role::Entrance => config.entrance.admin_token_file.as_deref(),
            Role::Box => config.boxnode.admin_token_file.as_deref(),
            Role::Publisher => config.publisher.admin_token_file.as_deref(),
        };
        let (admin_token, created) = AdminToken::open(&config.data_dir, provisioned)
            .context("the admin token (admin_token_file)")?;
        if created {
            tracing::info!(path = %admin_token.path().display(), "created the admin token");
        }
        let admin_token = Arc::new(admin_token);
        tokio::spawn(reload_admin_token(admin_token.clone(), shutdown.clone()));
        let store = store::open_configured(config).await?;
        let nonces = nonce_book(config, role, &store)?;
        if config.insecure_plain_tokens {
            tracing::warn!(
                "INSECURE PLAIN TOKENS ON: join and admin tokens are sent and accepted over plain \
                 HTTP to and from other machines, where anyone on the path can read them"
            );
        }
        let token_proxies = match role {
            Role::Entrance => config.entrance.trusted_proxies.clone(),
            Role::Box => config.boxnode.trusted_proxies.clone(),
            Role::Publisher => config.publisher.trusted_proxies.clone(),
        };
        let limits = config.limits.clone();
        let nofile = dandelion_core::probe::open_files_limit();
        let (max_connections, lowered) =
            admission::cap_below_descriptors(limits.max_connections, nofile);
        if lowered {
            tracing::warn!(
                wanted = limits.max_connections,
                open_files_limit = nofile.unwrap_or_default(),
                "limits.max_connections lowered to {max_connections}: the process may open only \
                 {} files (raise LimitNOFILE or ulimit -n for more)",
                nofile.unwrap_or_default()
            );
        }
        let admission = Admission::new(
            max_connections,
            limits.max_connections_per_address,
            &token_proxies,
        );
        let health = Arc::new(Health::default());
        if store.shared() {
            shutdown.spawn(crate::health::watch_store(
                store.clone(),
                health.clone(),
                shutdown.clone(),
            ));
        }
        Ok(Common {
            identity,
            store,
            nonces,
            metrics: Metrics::new(),
            refusals: RefusalLog::default(),
            admin_token,
            data_dir: config.data_dir.clone(),
            shutdown,
            started: Instant::now(),
            console: Hub::default(),
            rates: RateLimits::new(&limits, &token_proxies),
            token_proxies,
            limits,
            admission,
            health,
        })
    }

    /// Checks the admin bearer token of a request.
    pub fn require_admin(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match bearer(headers) {
            None => Err(Refusal::unauthorized(
                "admin_token_missing",
                "this needs the admin token (Authorization: Bearer …)",
            )),
            Some(t) if self.admin_token.matches(t) => Ok(()),
            Some(_) => Err(Refusal::forbidden("admin_token_wrong", "wrong admin token")),
        }
    }
}

/// The handshake's nonces: under the configured shared secret, or a random one
/// of this process's own; remembered as used in the store when it is shared
/// (Redis), so front ends of one role refuse each other's replays too.
fn nonce_book(config: &Config, role: Role, store: &Arc<dyn Store>) -> anyhow::Result<NonceBook> {
    let book = match &config.nonce_secret_file {
        Some(path) => {
            let secret = dandelion_core::secrets::read_secret(path)
                .with_context(|| format!("nonce_secret_file {}", path.display()))?;
            NonceBook::new(secret.as_bytes()).with_context(|| {
                format!(
                    "nonce_secret_file {}: write at least 32 random bytes into it \
                     (openssl rand -hex 32)",
                    path.display()
                )
            })?
        }
        None => NonceBook::generate()?,
    };
    Ok(if store.shared() {
        book.shared_through(store.clone(), format!("{role}:USED_NONCES"))
    } else {
        book
    })
}

/// Reads the admin token file again when it changes (polled, as TLS
/// certificates are) or on SIGHUP, until shutdown: a rotated token takes effect
/// without a restart.
async fn reload_admin_token(token: Arc<AdminToken>, shutdown: Shutdown) {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut poll = tokio::time::interval(crate::listener::RELOAD_POLL);
    poll.tick().await;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            Some(()) = async {
                match hangups.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => token.reload(true),
            _ = poll.tick() => token.reload(false),
        };
        match outcome {
            Ok(true) => tracing::info!(path = %token.path().display(), "admin token loaded again"),
            Ok(false) => {}
            Err(e) => tracing::error!("the admin token in use stays: {e}"),
        }
    }
}

/// Routes every role answers: `GET /` (who am I, as the original's index page),
/// `/metrics`, and the handshake nonce.
pub fn common_routes<S: Clone + Send + Sync + 'static>(common: Arc<Common>) -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/dandelion/", get(index))
        .route("/metrics", get(metrics))
        .route(NONCE_PATH, get(nonce))
        .with_state(common)
}

async fn index(State(common): State<Arc<Common>>) -> String {
    format!(
        "HI {}\n{} {} ({PROTOCOL_VERSION}), up {}s\n",
        common.identity.id(),
        common.identity.role(),
        env!("CARGO_PKG_VERSION"),
        common.started.elapsed().as_secs()
    )
}

/// `GET /metrics`: OpenMetrics to a scraper that asks for it (Prometheus
/// does), the Prometheus text format to everything else, each said as such.
async fn metrics(State(common): State<Arc<Common>>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let text = common.metrics.render();
    if crate::metrics::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                crate::metrics::PROMETHEUS_CONTENT_TYPE,
            )],
            crate::metrics::prometheus_text(&text),
        )
            .into_response()
    }
}

/// `GET /dandelion/nonce[?peer=<client-id>&nonce=<64 hex>]`: this server's nonce,
/// and with the query its own session proof for that client and nonce, so the
/// client knows whom it is about to sign for (see `dandelion_core::auth`).
/// Clients ask on the connection they then upgrade (`connect_as`).
async fn nonce(
    State(common): State<Arc<Common>>,
    // Optional: the tests' stand-in servers may run without connect info.
    remote: Option<axum::Extension<axum::extract::ConnectInfo<Remote>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let asked = match (query.get("peer"), query.get("nonce")) {
        (None, None) => None,
        (Some(peer), Some(theirs)) => match (NodeId::parse(peer), Nonce::parse(theirs)) {
            (Ok(peer), Ok(theirs)) => Some((peer, theirs)),
            (Err(e), _) => {
                return (StatusCode::BAD_REQUEST, format!("peer: {e}\n")).into_response();
            }
            (_, Err(e)) => {
                return (StatusCode::BAD_REQUEST, format!("nonce: {e}\n")).into_response();
            }
        },
        _ => {
            return (StatusCode::BAD_REQUEST, "`peer` and `nonce` go together\n").into_response();
        }
    };
    if let Some(remote) = remote.as_ref().map(|r| r.0.0) {
        let client =
            dandelion_core::proxies::client_ip(remote.addr.ip(), &headers, &common.token_proxies);
        if !common.rates.allow(Kind::Handshake, client) {
            let refusal = Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "handshake_rate",
                reason: format!(
                    "too many handshakes from this address (limits.handshakes_per_minute = {}); \
                     try again shortly",
                    common.limits.handshakes_per_minute
                ),
            };
            common.refusals.record(&common.metrics, client, &refusal);
            return refusal.into_response();
        }
    }
    // TLS ends here: both proofs sign this connection, the one the client
    // upgrades next, so neither can be relayed to another.
    let channel = remote.map_or(Channel::Unbound, |r| r.0.0.channel());
    match common.nonces.issue(common.identity.id()) {
        Ok(nonce) => axum::Json(Challenge {
            id: common.identity.id().clone(),
            nonce,
            proof: asked.map(|(peer, theirs)| {
                common
                    .identity
                    .prove(&Claim::session_server(&peer, &theirs).on(channel))
            }),
            channel: (channel != Channel::Unbound).then(|| CHANNEL_TLS_EXPORTER.to_owned()),
        })
        .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// The body length a request declares (`Content-Length`), when it declares one:
/// a handler refuses a body over its limit with 413 before reading a byte of it.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Binds `addr`, naming it in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Serves `router` on plain TCP until shutdown, with no policy of its own (the
/// tests' stand-in daemons); the roles use [`serve_role`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_on(Listener::plain(listener)?, router, shutdown, None).await
}

/// Serves a role's `router` until its shutdown, every request with credentials
/// through [`guard_credentials`], plain connections through `front` first when
/// the role has one.
pub async fn serve_role(
    listener: Listener,
    router: Router,
    common: &Arc<Common>,
    front: Option<Arc<dyn Front>>,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(
        common.clone(),
        guard_credentials,
    ));
    let pruning = common.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_RATE_LIMITS);
        loop {
            tokio::select! {
                () = pruning.shutdown.cancelled() => return,
                _ = every.tick() => { pruning.rates.prune(); }
            }
        }
    });
    serve_on(listener, router, common.shutdown.clone(), front).await
}

/// How often the rate limiters forget addresses that went quiet.
const PRUNE_RATE_LIMITS: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a request carries credentials: a bearer token or a session proof.
fn carries_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key(dandelion_core::auth::header::ID)
}

/// What every request with credentials goes through, before and after its
/// handler:
///
/// - from an address shut out for failed credentials
///   ([`crate::ratelimit`]), it is refused (429) before anything is checked;
/// - a token over plain HTTP from another machine is refused (403) before any
///   handler sees it: it has already crossed the network readable, and
///   accepting it would teach clients that this works (loopback, TLS, the
///   configured TLS proxies and `insecure_plain_tokens` pass);
/// - a request the handler refused with 401 or 403 counts as a failed
///   credential of its client address (taken through `trusted_proxies`).
async fn guard_credentials(
    State(common): State<Arc<Common>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(remote) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Remote>>()
        .map(|c| c.0)
    else {
        return next.run(request).await;
    };
    if !carries_credentials(request.headers()) {
        return next.run(request).await;
    }
    let client = dandelion_core::proxies::client_ip(
        remote.addr.ip(),
        request.headers(),
        &common.token_proxies,
    );
    if common.rates.shut_out(client) {
        let refusal = Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "credentials_rate",
            reason: format!(
                "too many failed credentials from this address (limits.failed_credentials_per_minute \
                 = {}); try again shortly",
                common.limits.failed_credentials_per_minute
            ),
        };
        common.refusals.record(&common.metrics, client, &refusal);
        return refusal.into_response();
    }
    if request.headers().contains_key(header::AUTHORIZATION)
        && !dandelion_core::tokens::may_receive(remote.tls, remote.addr.ip(), &common.token_proxies)
    {
        let refusal = Refusal::forbidden(
            "plain_token",
            "a token sent in clear from another machine is refused: connect with https:// or \
             wss:// (this daemon needs tls_cert and tls_key, or a TLS proxy listed in \
             trusted_proxies), or set insecure_plain_tokens = true on both sides on a network you \
             trust",
        );
        common
            .refusals
            .record(&common.metrics, remote.addr.ip(), &refusal);
        return refusal.into_response();
    }
    let response = next.run(request).await;
    if matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) && common.rates.failed(client)
    {
        tracing::warn!(%client, "too many failed credentials: refusing this address's credentials for a while");
    }
    response
}

/// What a role answers on plain-TCP connections before hyper sees them
/// ([`crate::heads`]): the box's zero-copy file path, the publisher's redirects.
pub trait Front: Send + Sync + 'static {
    /// Answers what it can of the requests on `io`, reading each head within
    /// `header_timeout` and none after `stop`. Gives the connection back with
    /// the bytes it read but did not answer, for hyper to serve from there, or
    /// `None` when the connection is done.
    fn serve(
        self: Arc<Self>,
        io: Io,
        remote: Remote,
        stop: tokio_util::sync::CancellationToken,
        header_timeout: std::time::Duration,
    ) -> futures_util::future::BoxFuture<'static, Option<(Io, bytes::Bytes)>>;
}

/// Serves `router` until shutdown, passing each connection's peer to handlers
/// (`ConnectInfo<Remote>`), under the listener's limits: the request headers
/// within `header_read_timeout`, which is also how long an idle keep-alive
/// connection stays. Shutdown lets requests in flight finish and waits for
/// every connection to end.
///
/// hyper's own connection loop rather than `axum::serve`, which sets no timer
/// and so can have no header timeout.
pub async fn serve_on(
    mut listener: Listener,
    router: Router,
    shutdown: Shutdown,
    front: Option<Arc<dyn Front>>,
) -> std::io::Result<()> {
    let token = shutdown.token();
    // Everything a role loads at start (keys, store, recovery) is done and the
    // listener is bound: under systemd's Type=notify this is what lets
    // `systemctl start` return and dependent units start. A no-op elsewhere.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd the daemon is ready: {e}");
    }
    let stopping = shutdown.token();
    tokio::spawn(async move {
        stopping.cancelled().await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(listener.limits().header_read_timeout)
        .keep_alive(true);
    let header_timeout = listener.limits().header_read_timeout;
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (io, remote) = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let http = http.clone();
        let front = front.clone();
        let token = token.clone();
        connections.spawn(async move {
            let (io, read) = match front {
                Some(front) if io.is_plain_tcp() => {
                    match front.serve(io, remote, token.clone(), header_timeout).await {
                        Some(handed) => handed,
                        None => return,
                    }
                }
                _ => (io, bytes::Bytes::new()),
            };
            let io = hyper_util::rt::TokioIo::new(crate::rewind::Rewind::new(read, io));
            let connection = http.serve_connection(io, service).with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = token.cancelled() => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A role's TLS, when its section names a certificate and key: read now, so a
/// bad file stops the start with its name.
pub fn load_tls(
    role: &str,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<ServerTls>>> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let tls = ServerTls::load(cert, key).with_context(|| format!("{role}.tls_cert"))?;
            tracing::info!(cert = %cert.display(), "TLS on: serving https:// and wss://");
            Ok(Some(Arc::new(tls)))
        }
        _ => Ok(None),
    }
}
