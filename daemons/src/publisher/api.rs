//! The publisher's HTTP side: users push files (`PUT /api/files/{name}`) and ask
//! where they are; viewers ask for a name (`GET /{name}`) and are redirected to a
//! box holding it, or served by the publisher itself while no box does.
//!
//! Everything under `/api/` needs the admin token: files' placements, the
//! ranking and the box list name households' data URLs. Viewers need none of
//! it; each redirect shows them one box, the one serving them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::Remote;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dandelion_core::config::parse_duration;
use dandelion_core::console::{FileView, Level};
use dandelion_core::ids::NodeId;
use dandelion_core::paths;
use dandelion_core::proxies;
use serde_json::json;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::byte_range::{self, Ranged};
use super::cutthrough::Forwards;
use super::intake;
use super::jobs::{Job, JobState, Origin, Placement};
use super::pool::SessionState;
use super::redirect::choose_url;
use super::sender::{self, Next};
use super::steering_api;
use super::{Publisher, now_secs};

/// Most copies of one file a push may ask for.
pub const MAX_REPLICAS: u32 = 16;

pub fn router(p: Arc<Publisher>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/files", get(list))
        .route("/api/ranking", get(ranking))
        .route("/api/boxes", get(boxes))
        .route("/api/ledger", get(ledger))
        .route("/api/files/{*name}", get(status).put(push))
        .route("/dandelion/steer/{*name}", get(steering_api::multivariant))
        .route("/dandelion/steering/{*name}", get(steering_api::manifest))
        .route(
            "/dandelion/pathway/{box_id}/{*name}",
            get(steering_api::pathway),
        )
        .route("/{*name}", get(view))
        .with_state(p)
}

pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({ "error": message.to_string() }))).into_response()
}

/// A published name: a relative path with the same rules a box applies to it.
pub fn check_name(name: &str) -> Result<String, String> {
    if name.starts_with('/') {
        return Err(format!(
            "name `{}` is absolute; give a relative name like live/seg1.ts",
            name.escape_debug()
        ));
    }
    paths::relative_path(name)
        .map_err(|e| format!("name `{}` is refused: {e}", name.escape_debug()))
}

/// The boxes as the publisher ranks them now, each factor shown: what the console
/// and an operator wondering "why that box?" want to see.
async fn ranking(State(p): State<Arc<Publisher>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = p.common.require_admin(&headers) {
        return refusal.into_response();
    }
    axum::Json(super::console::ranking(&p).await).into_response()
}

/// The offload ledger (`publisher/ledger.rs`): per stream and in total, the
/// viewer bytes boxes served, those the publisher served itself and the bytes
/// it uploaded to boxes.
async fn ledger(State(p): State<Arc<Publisher>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = p.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let view = p.ledger().view();
    axum::Json(view).into_response()
}

/// Every box the publisher knows, as the publisher sees it: what the entrance
/// says, whether it is live, its publish session, and what the serve probes
/// found. What an operator wondering "why is nothing sent to that box?" needs.
async fn boxes(State(p): State<Arc<Publisher>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = p.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let now = now_secs();
    let sessions: HashMap<NodeId, SessionState> = p.links.sessions(now).into_iter().collect();
    let dir = p.directory.read().await;
    let mut rows: Vec<(&NodeId, serde_json::Value)> = dir
        .iter()
        .map(|(id, b)| {
            let session = match sessions.get(id) {
                Some(SessionState::Open {
                    opened_at,
                    in_flight,
                    idle_secs,
                }) => json!({
                    "state": "open",
                    "opened_at": opened_at,
                    "in_flight": in_flight,
                    "idle_secs": idle_secs,
                }),
                Some(SessionState::Opening) => json!({ "state": "opening" }),
                Some(SessionState::Ended) | None => serde_json::Value::Null,
            };
            let row = json!({
                "box": id.as_str(),
                "state": b.state,
                "live": dir.is_live(id, now),
                "data_url": b.exchange.data_url,
                "session": session,
                "serving": b.serve.serving(),
                "probe": {
                    "probed_at": b.serve.probed_at,
                    "failures": b.serve.failures,
                    "error": b.serve.error,
                },
                "successes": b.successes,
                "failures": b.failures,
            });
            (id, row)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    axum::Json(rows.into_iter().map(|(_, r)| r).collect::<Vec<_>>()).into_response()
}

/// Answers from memory: within a second whatever the store and the
/// entrances do, `degraded` with the reasons while either does not answer
/// (redirects go on from memory meanwhile).
async fn healthz(State(p): State<Arc<Publisher>>) -> Response {
    let boxes = p.directory.read().await.len();
    let report = p.common.health.report();
    axum::Json(json!({
        "status": report.status,
        "role": "publisher",
        "known_boxes": boxes,
        "problems": report.problems,
    }))
    .into_response()
}

async fn push(
    State(p): State<Arc<Publisher>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    if let Err(refusal) = p.common.require_admin(request.headers()) {
        return refusal.into_response();
    }
    let name = match check_name(&name) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let ttl = match query.get("ttl").map(|t| parse_duration(t)) {
        None => p.config.default_ttl,
        Some(Ok(d)) if d >= Duration::from_secs(1) && d <= p.config.max_ttl => d,
        Some(Ok(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("ttl must be between 1s and {}s", p.config.max_ttl.as_secs()),
            );
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("ttl: {e}")),
    };
    let replicas = match query.get("replicas").map(|r| r.parse::<u32>()) {
        None => p.config.replicas,
        Some(Ok(r)) if (1..=MAX_REPLICAS).contains(&r) => r,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("replicas must be a number from 1 to {MAX_REPLICAS}"),
            );
        }
    };
    let max = p.config.max_file_size.as_u64();
    let declared = crate::server::declared_length(request.headers());
    if let Some(declared) = declared
        && declared > max
    {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the file ({declared} bytes) is over the {max}-byte limit"),
        );
    }
    let url = viewer_url(&p, request.headers(), &remote, &name);
    // A file of a known size too big to take in one piece goes on to its boxes
    // while it arrives.
    let mut forwards = match declared {
        Some(size) if size > intake::PIECE as u64 => {
            Forwards::open(&p, &name, size, ttl.as_secs(), replicas).await
        }
        _ => Forwards::default(),
    };
    let intake::Received {
        size,
        sha256,
        for_store,
    } = match intake::receive(&p, &name, request.into_body(), &mut forwards).await {
        Ok(done) => done,
        Err(response) => return response,
    };
    let job = Job {
        name: name.clone(),
        size,
        sha256: sha256.clone(),
        ttl: ttl.as_secs(),
        replicas,
        accepted_at: now_secs(),
        accepted_ms: Some(super::now_ms()),
        state: JobState::Queued,
        attempts: 0,
        failures: Vec::new(),
        origin: if for_store.is_some() {
            Origin::Store
        } else {
            Origin::File
        },
        origin_at: p
            .records
            .instance()
            .filter(|_| for_store.is_none())
            .map(str::to_owned),
    };
    // Durable before acknowledged: bytes fsynced and renamed (or in the store),
    // job recorded, queued (or in flight, when boxes are receiving it already).
    // A name pushed again starts afresh: its old copies hold other bytes. The
    // job, its bytes when small and its place in the queue are one commit. A
    // file left by an earlier push of the name as a file goes when this job
    // expires.
    let cut_through = !forwards.is_empty();
    // Several front ends share this publisher's records: a file kept on this
    // front end's disk is acknowledged only once a box holds a copy, or this
    // disk would be its only copy should this front end die.
    let copy_first = p.records.shared() && job.origin == Origin::File;
    let origin_key = p.records.origin_key(&name);
    let recorded = p
        .records
        .save_with(&job, Vec::clear, |batch| {
            match &for_store {
                Some(bytes) => batch.set(&origin_key, bytes.clone()),
                None => batch.del(&origin_key),
            };
            if cut_through || copy_first {
                p.queue.hold_in(batch, &name);
            } else {
                p.queue.push_in(batch, &name);
            }
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(file = %name, "cannot queue an accepted file: {e}");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot queue the file: {e}"),
        );
    }
    if copy_first {
        if let Err(refusal) = first_copy(&p, forwards, &job).await {
            return refusal;
        }
    } else if cut_through {
        forwards.settle_later(p.clone(), job.clone());
    }
    p.metrics.accepted.inc();
    tracing::info!(file = %name, size, ttl = job.ttl, replicas, "accepted");
    p.common.console.event(
        Level::Info,
        format!(
            "accepted {name} ({size} bytes, TTL {}s, {replicas} replica(s))",
            job.ttl
        ),
    );
    p.common.console.touch();
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "name": name,
            "size": size,
            "sha256": sha256,
            "state": "queued",
            "ttl": job.ttl,
            "replicas": replicas,
            "url": url,
        })),
    )
        .into_response()
}

/// How long a push that must be placed before it is acknowledged waits for a
/// box when the publisher knows none it may place on: a publisher just
/// started, or whose boxes have just come, learns them within a round or two
/// of searches asked for at once, where the next regular round may be
/// `search_interval` (10 s) away.
const FIRST_BOX_WAIT: Duration = Duration::from_secs(5);

/// Waits, up to [`FIRST_BOX_WAIT`], until the publisher knows a box it may
/// place on, asking for search rounds meanwhile.
async fn wait_for_a_box(p: &Publisher) {
    let deadline = tokio::time::Instant::now() + FIRST_BOX_WAIT;
    loop {
        // Registered before the look, so a round that ends in between counts.
        let searched = p.searched.notified();
        let any = {
            let dir = p.directory.read().await;
            dir.candidates(p.audience, now_secs())
                .iter()
                .any(|c| c.eligible)
        };
        if any {
            return;
        }
        p.search_now.notify_one();
        if tokio::time::timeout_at(deadline, searched).await.is_err() {
            return;
        }
    }
}

/// Places the first copy of an upload before it is acknowledged: through the
/// boxes receiving it already, else as a sender would, now (waiting a few
/// seconds for a box, when none is known). The job, held in flight
/// meanwhile, is finished or queued again for the copies still missing. With
/// no copy on a box the push is refused (`503`): the job stays queued here,
/// but only this disk holds the file.
async fn first_copy(p: &Arc<Publisher>, forwards: Forwards, job: &Job) -> Result<(), Response> {
    let name = job.name.as_str();
    let next = if forwards.is_empty() {
        wait_for_a_box(p).await;
        sender::place(p, name).await
    } else {
        forwards.settle_now(p, job.clone()).await
    };
    let next = next.unwrap_or_else(|e| {
        tracing::warn!(file = %name, "cannot place the first copy: {e}");
        Next::Retry
    });
    let queued = match next {
        // Queued again at once: the pause between tries is for the senders.
        Next::Retry => p.queue.requeue(name).await,
        Next::Done => p.queue.finish(name).await,
        Next::Finished => Ok(()),
    };
    if let Err(e) = queued {
        tracing::warn!(file = %name, "cannot update the sending queue: {e}");
    }
    let copies = p.records.known(name).map_or(0, |k| k.placements.len());
    if copies == 0 {
        tracing::warn!(file = %name, "no box took a first copy; the push is not acknowledged");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no box took a copy of `{}` yet; with several front ends a file kept on disk \
                 is acknowledged only once a box holds it: push it again",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// The URL players are given for `name`: under the publisher's `public_url`
/// (its address as viewers know it: a proxy, a CDN name), else under the
/// address this request reached it at. `None` when neither is known.
fn viewer_url(p: &Publisher, headers: &HeaderMap, remote: &Remote, name: &str) -> Option<String> {
    Some(format!(
        "{}/{}",
        viewer_base(p, headers, remote)?,
        paths::url_path(name)
    ))
}

/// The publisher's origin as viewers reach it, without a trailing `/`: the
/// `public_url`, or the scheme and `Host` of the request. `None` when the
/// request names no usable host: one that would not stay a host inside a URL
/// or a quoted playlist attribute.
pub(super) fn viewer_base(p: &Publisher, headers: &HeaderMap, remote: &Remote) -> Option<String> {
    let proxies = &p.config.trusted_proxies;
    let tls = proxies::client_used_tls(remote.tls, remote.addr.ip(), headers, proxies);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    base_for(p, host, tls)
}

/// [`viewer_base`] from the `Host` a request named and whether the viewer
/// used TLS.
pub(super) fn base_for(p: &Publisher, host: Option<&str>, tls: bool) -> Option<String> {
    if let Some(url) = &p.config.public_url {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let host = host?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
    {
        return None;
    }
    Some(format!("{}://{host}", if tls { "https" } else { "http" }))
}

/// A job and its placements, read together so the state never contradicts them.
fn describe(job: &Job, placements: &[Placement]) -> FileView {
    super::console::file_view(job, placements, now_secs())
}

async fn status(
    State(p): State<Arc<Publisher>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(refusal) = p.common.require_admin(&headers) {
        return refusal.into_response();
    }
    match p.records.known(&name) {
        Some(k) => axum::Json(describe(&k.job, &k.placements)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no file named `{}`", name.escape_debug()),
        ),
    }
}

async fn list(State(p): State<Arc<Publisher>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = p.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let out: Vec<FileView> = p
        .records
        .all()
        .iter()
        .map(|k| describe(&k.job, &k.placements))
        .collect();
    axum::Json(out).into_response()
}

/// What browser players may read of the publisher's answers.
pub(super) const EXPOSE_HEADERS: &str =
    "Content-Length, Content-Range, Accept-Ranges, ETag, Location, Repr-Digest";

/// CORS for browser players: they check it on every response of a redirect chain.
pub(super) fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

fn repr_digest(sha256_hex: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&repr_digest_text(sha256_hex)?).ok()
}

/// `Repr-Digest` (RFC 9530) of a file whose SHA-256 is `sha256_hex`.
pub(super) fn repr_digest_text(sha256_hex: &str) -> Option<String> {
    let bytes = hex_decode(sha256_hex)?;
    Some(format!(
        "sha-256=:{}:",
        data_encoding::BASE64.encode(&bytes)
    ))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
}

/// A file kept in the store, from its bytes in memory: whole, or the one
/// range the viewer asked for ([`byte_range::ranged`]). `HEAD` gets the same
/// headers without the body (axum drops it).
fn from_store(name: &str, bytes: bytes::Bytes, asked: &HeaderMap) -> Response {
    let len = bytes.len() as u64;
    let unsatisfiable = (
        StatusCode::RANGE_NOT_SATISFIABLE,
        bytes::Bytes::new(),
        Some(None),
    );
    let (status, body, range) = match byte_range::ranged(asked, len) {
        Ranged::Whole => (StatusCode::OK, bytes, None),
        Ranged::Part(part) => {
            // `ranged` keeps a part within the body; checked all the same,
            // since a slice out of bounds would panic.
            let start = usize::try_from(*part.start()).ok();
            let end = usize::try_from(*part.end()).ok();
            match start.zip(end).filter(|&(s, e)| s <= e && e < bytes.len()) {
                Some((s, e)) => (
                    StatusCode::PARTIAL_CONTENT,
                    bytes.slice(s..=e),
                    Some(Some(part)),
                ),
                None => unsatisfiable,
            }
        }
        Ranged::Unsatisfiable => unsatisfiable,
    };
    let sent = body.len();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if status != StatusCode::RANGE_NOT_SATISFIABLE {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(dandelion_core::media::content_type(name)),
        );
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(sent));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(part) = range
        && let Ok(v) = HeaderValue::from_str(&byte_range::content_range(part.as_ref(), len))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

pub(super) use dandelion_core::media::is_playlist;

async fn view(
    State(p): State<Arc<Publisher>>,
    Path(name): Path<String>,
    ConnectInfo(Remote {
        addr: viewer, tls, ..
    }): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    let read_at = std::time::Instant::now();
    let Some(known) = p.records.known(&name) else {
        let mut r = error(
            StatusCode::NOT_FOUND,
            format!("no file named `{}`", name.escape_debug()),
        );
        cors(r.headers_mut());
        return r;
    };
    let job = &known.job;
    let now = now_secs();
    if !is_playlist(&name) {
        // Behind a TLS-terminating proxy (`trusted_proxies`), what it says of
        // the viewer: where they are, and whether their page is https.
        let proxies = &p.config.trusted_proxies;
        let tls = proxies::client_used_tls(tls, viewer.ip(), request.headers(), proxies);
        let viewer_ip = proxies::client_ip(viewer.ip(), request.headers(), proxies);
        let viewer_at = p.locate(viewer_ip);
        let admit_probation = p.admit_probation();
        let best = {
            let dir = p.directory.read().await;
            choose_url(
                &dir,
                &known.placements,
                viewer_at,
                now,
                tls,
                admit_probation,
            )
        };
        if let Some(best) = best
            && let Ok(location) = HeaderValue::from_str(&best)
        {
            p.metrics.redirects.inc();
            p.metrics.redirect.observe_since(read_at);
            let mut r = StatusCode::FOUND.into_response();
            let h = r.headers_mut();
            h.insert(header::LOCATION, location);
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Some(digest) = repr_digest(&job.sha256) {
                h.insert("repr-digest", digest);
            }
            cors(h);
            return r;
        }
    }
    // No box holds it (yet), or it is a playlist: the origin of last resort.
    let mut response = match job.origin {
        Origin::File => match ServeFile::new(p.origin_path(&name)).oneshot(request).await {
            Ok(r) => r.map(Body::new),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Origin::Store => match p.records.origin(&name).await {
            Ok(Some(bytes)) => {
                p.origin_cache.put(&name, &job.sha256, bytes.clone());
                from_store(&name, bytes, request.headers())
            }
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                format!("`{}` is gone from the store", name.escape_debug()),
            ),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
    };
    if response.status().is_success() {
        let sent = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if is_playlist(&name) {
            p.metrics.playlist_bytes.inc_by(sent);
        } else {
            p.metrics.origin_bytes.inc_by(sent);
        }
        p.served_itself(&name, sent);
        let h = response.headers_mut();
        if is_playlist(&name) {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/vnd.apple.mpegurl"),
            );
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Some(digest) = repr_digest(&job.sha256) {
            h.insert("repr-digest", digest);
        }
    }
    cors(response.headers_mut());
    response
}
