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
use bytes::{Bytes, BytesMut};
use dandelion_core::config::parse_duration;
use dandelion_core::console::{FileView, Level};
use dandelion_core::fsio;
use dandelion_core::ids::NodeId;
use dandelion_core::paths;
use dandelion_core::proxies;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::cutthrough::Forwards;
use super::jobs::{Job, JobState, Placement};
use super::pool::SessionState;
use super::redirect::{Holder, Serve, best_holder};
use super::{Publisher, now_secs};

/// Most copies of one file a push may ask for.
pub const MAX_REPLICAS: u32 = 16;

pub fn router(p: Arc<Publisher>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/files", get(list))
        .route("/api/ranking", get(ranking))
        .route("/api/boxes", get(boxes))
        .route("/api/files/{*name}", get(status).put(push))
        .route("/{*name}", get(view))
        .with_state(p)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
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

async fn healthz(State(p): State<Arc<Publisher>>) -> Response {
    let boxes = p.directory.read().await.len();
    axum::Json(json!({ "status": "ok", "role": "publisher", "known_boxes": boxes })).into_response()
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
        Some(size) if size > PIECE as u64 => {
            Forwards::open(&p, &name, size, ttl.as_secs(), replicas).await
        }
        _ => Forwards::default(),
    };
    let (size, sha256) = match receive(&p, &name, request.into_body(), &mut forwards).await {
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
        state: JobState::Queued,
        attempts: 0,
        failures: Vec::new(),
    };
    // Durable before acknowledged: bytes fsynced and renamed, job recorded, queued
    // (or in flight, when boxes are receiving it already). A name pushed again
    // starts afresh: its old copies hold other bytes. The job and its place in
    // the queue are one commit.
    let cut_through = !forwards.is_empty();
    let recorded = p
        .records
        .save_with(&job, Vec::clear, |batch| {
            if cut_through {
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
    if cut_through {
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

/// The URL players are given for `name`: under the publisher's `public_url`
/// (its address as viewers know it: a proxy, a CDN name), else under the
/// address this request reached it at. `None` when neither is known.
fn viewer_url(p: &Publisher, headers: &HeaderMap, remote: &Remote, name: &str) -> Option<String> {
    let base = match &p.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = headers.get(header::HOST)?.to_str().ok()?;
            let proxies = &p.config.trusted_proxies;
            let tls = proxies::client_used_tls(remote.tls, remote.addr.ip(), headers, proxies);
            format!("{}://{host}", if tls { "https" } else { "http" })
        }
    };
    Some(format!("{base}/{}", paths::url_path(name)))
}

/// Bytes gathered from the request body before they go to the file (and, cut
/// through, to the boxes) in one piece: one trip to the blocking pool per
/// piece, and a whole live segment (100 KiB – 1 MiB) in a single trip that
/// also syncs and renames it. The hash is taken on the same trip, off the
/// async threads, while the piece is on its way to the boxes.
const PIECE: usize = 1024 * 1024;

/// The publisher's copy while it is written. Each piece is written and
/// hashed on the blocking pool, the two side by side, while the intake
/// receives the next piece: the network, the disk and the hash each keep
/// going instead of taking turns.
struct Copy {
    file: Arc<std::fs::File>,
    /// `None` while a piece is being hashed.
    hasher: Option<Sha256>,
    behind: fsio::WriteBehind,
    writing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    hashing: Option<tokio::task::JoinHandle<Sha256>>,
    /// Bytes of the piece under way.
    under_way: u64,
}

impl Copy {
    async fn create(tmp: &std::path::Path) -> std::io::Result<Copy> {
        let tmp = tmp.to_owned();
        let file = fsio::blocking(move || std::fs::File::create(tmp)).await?;
        Ok(Copy {
            file: Arc::new(file),
            hasher: Some(Sha256::new()),
            behind: fsio::WriteBehind::default(),
            writing: None,
            hashing: None,
            under_way: 0,
        })
    }

    /// Waits for the previous piece, then starts writing and hashing `piece`.
    async fn push(&mut self, piece: Bytes) -> std::io::Result<()> {
        self.done().await?;
        let mut hasher = self.hasher.take().unwrap_or_default();
        let (file, bytes) = (self.file.clone(), piece.clone());
        self.writing = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            (&*file).write_all(&bytes)
        }));
        self.under_way = piece.len() as u64;
        self.hashing = Some(tokio::task::spawn_blocking(move || {
            hasher.update(&piece);
            hasher
        }));
        Ok(())
    }

    /// Waits for the piece under way.
    async fn done(&mut self) -> std::io::Result<()> {
        if let Some(hashing) = self.hashing.take() {
            self.hasher = Some(hashing.await.map_err(std::io::Error::other)?);
        }
        if let Some(writing) = self.writing.take() {
            writing.await.map_err(std::io::Error::other)??;
            self.behind.wrote(&self.file, self.under_way)?;
        }
        Ok(())
    }

    /// Every piece written: the file, its hash, and no flush under way.
    async fn finish(mut self) -> std::io::Result<(Arc<std::fs::File>, String)> {
        self.done().await?;
        self.behind.settle().await?;
        let hasher = self.hasher.take().unwrap_or_default();
        Ok((self.file, format!("{:x}", hasher.finalize())))
    }
}

/// Streams the request body into the publisher's copy: a temporary file, hashed
/// on the way, fsynced and renamed into place, and into `forwards`. Nothing is
/// left behind on failure.
async fn receive(
    p: &Publisher,
    name: &str,
    body: Body,
    forwards: &mut Forwards,
) -> Result<(u64, String), Response> {
    let max = p.config.max_file_size.as_u64();
    let final_path = p.origin_path(name);
    let tmp = final_path.with_extension(format!("partial-{}", p.draw(usize::MAX)));
    let stored = |e: std::io::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the upload: {e}"),
        )
    };
    let result = async {
        let mut size: u64 = 0;
        // The bytes not in the file yet.
        let mut gathered = BytesMut::new();
        let mut copy: Option<Copy> = None;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("the upload was cut off: {e}"),
                )
            })?;
            size += chunk.len() as u64;
            if size > max {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the file is over the {max}-byte limit"),
                ));
            }
            gathered.extend_from_slice(&chunk);
            if gathered.len() >= PIECE {
                let piece = gathered.split().freeze();
                if copy.is_none() {
                    copy = Some(Copy::create(&tmp).await.map_err(stored)?);
                }
                if let Some(copy) = copy.as_mut() {
                    let (pushed, ()) =
                        tokio::join!(copy.push(piece.clone()), forwards.feed(&piece));
                    pushed.map_err(stored)?;
                }
            }
        }
        let rest = gathered.freeze();
        let (from, to) = (tmp.clone(), final_path.clone());
        let Some(mut copy) = copy else {
            // Small enough for one trip: written, hashed and made durable at once.
            return fsio::blocking(move || {
                use std::io::Write;
                let mut file = std::fs::File::create(&from)?;
                file.write_all(&rest)?;
                make_durable(&file, &from, &to)?;
                Ok((size, format!("{:x}", Sha256::digest(&rest))))
            })
            .await
            .map_err(stored);
        };
        let (pushed, ()) = tokio::join!(copy.push(rest.clone()), forwards.feed(&rest));
        pushed.map_err(stored)?;
        let (file, sha256) = copy.finish().await.map_err(stored)?;
        // The boxes verify and land while the publisher's copy is synced.
        let (durable, ()) = tokio::join!(
            fsio::blocking(move || make_durable(&file, &from, &to)),
            forwards.end(&sha256)
        );
        durable.map_err(stored)?;
        Ok((size, sha256))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// The upload's bytes synced, the file renamed into place and the rename
/// synced too (its directory): only then may the push be acknowledged, or a
/// crash could leave a queued job whose copy is gone. One trip to the blocking
/// pool for all three.
fn make_durable(
    file: &std::fs::File,
    tmp: &std::path::Path,
    target: &std::path::Path,
) -> std::io::Result<()> {
    file.sync_all()?;
    std::fs::rename(tmp, target)?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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
    match p.records.file(&name).await {
        Ok(Some((job, placements))) => axum::Json(describe(&job, &placements)).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!("no file named `{}`", name.escape_debug()),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn list(State(p): State<Arc<Publisher>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = p.common.require_admin(&headers) {
        return refusal.into_response();
    }
    match p.records.files().await {
        Ok(files) => {
            let out: Vec<FileView> = files
                .iter()
                .map(|(job, placements)| describe(job, placements))
                .collect();
            axum::Json(out).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// CORS for browser players: they check it on every response of a redirect chain.
fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Content-Length, Content-Range, Accept-Ranges, ETag, Location, Repr-Digest",
        ),
    );
}

fn repr_digest(sha256_hex: &str) -> Option<HeaderValue> {
    let bytes = hex_decode(sha256_hex)?;
    HeaderValue::from_str(&format!(
        "sha-256=:{}:",
        data_encoding::BASE64.encode(&bytes)
    ))
    .ok()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
}

fn is_playlist(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("m3u8"))
}

async fn view(
    State(p): State<Arc<Publisher>>,
    Path(name): Path<String>,
    ConnectInfo(Remote {
        addr: viewer, tls, ..
    }): ConnectInfo<Remote>,
    request: Request,
) -> Response {
    let job = match p.records.job(&name).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            let mut r = error(
                StatusCode::NOT_FOUND,
                format!("no file named `{}`", name.escape_debug()),
            );
            cors(r.headers_mut());
            return r;
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    let now = now_secs();
    if !is_playlist(&name) {
        // Behind a TLS-terminating proxy (`trusted_proxies`), what it says of
        // the viewer: where they are, and whether their page is https.
        let proxies = &p.config.trusted_proxies;
        let tls = proxies::client_used_tls(tls, viewer.ip(), request.headers(), proxies);
        let viewer_ip = proxies::client_ip(viewer.ip(), request.headers(), proxies);
        let viewer_at = p
            .geo
            .as_ref()
            .and_then(|g| g.lookup(viewer_ip))
            .and_then(|g| g.lat_lon());
        let placements = p.records.placements(&name).await.unwrap_or_default();
        let holders: Vec<Holder> = {
            let dir = p.directory.read().await;
            placements
                .iter()
                .filter_map(|pl| {
                    let id: NodeId = pl.box_id.parse().ok()?;
                    let sys = dir.get(&id).and_then(|b| b.exchange.system_info.clone());
                    let load = sys
                        .and_then(|s| {
                            Some(
                                (s.upload_rate? as f64) / (s.upload_cap.filter(|c| *c > 0)? as f64),
                            )
                        })
                        .unwrap_or(0.0);
                    let distance_km = viewer_at
                        .zip(dir.get(&id).and_then(|b| b.location()))
                        .map(|(v, b)| dandelion_core::geo::haversine_km(v, b));
                    let serve = match dir.get(&id).map(|b| &b.serve) {
                        Some(h) if !h.serving() => Serve::Failing,
                        Some(h) if h.probed_at.is_some() => Serve::Serving,
                        _ => Serve::Unprobed,
                    };
                    Some(Holder {
                        live: dir.is_live(&id, now),
                        probation: dir.get(&id).is_none_or(|b| b.on_probation()),
                        serve,
                        box_id: id,
                        url: pl.url.clone(),
                        distance_km,
                        load,
                        expires_at: pl.expires_at,
                    })
                })
                .collect()
        };
        let admit_probation = p.draw(1000) < super::ranking::PROBATION_PER_MILLE;
        if let Some(best) = best_holder(&holders, now, tls, admit_probation)
            && let Ok(location) = HeaderValue::from_str(&best.url)
        {
            p.metrics.redirects.inc();
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
    let path = p.origin_path(&name);
    let mut response = match ServeFile::new(&path).oneshot(request).await {
        Ok(r) => r.map(Body::new),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
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
