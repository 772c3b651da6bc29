//! The entrance's HTTP side: `/healthz` (with self-preservation and its reason)
//! and `GET /api/summary` for anyone; behind the admin token `GET /api/boxes`
//! (filterable by state and country, with households' addresses), eviction,
//! a box's location override, and enrolment: invitations, owners, their caps
//! and revocation.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dandelion_core::console::Level;
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::protocol::GeoIp;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::book::{Listed, now};
use super::registry::Filter;

pub use dandelion_core::console::{BoxView, Summary};

#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// `degraded` while the store does not answer (`problems` says how), else
    /// `self-preservation` while expiry is held back (`reason` says why), else
    /// `ok`.
    pub status: String,
    pub id: String,
    /// Registered boxes; `None` when the store did not say within
    /// [`HEALTH_STORE_WAIT`].
    pub boxes: Option<usize>,
    pub self_preservation: bool,
    pub reason: Option<String>,
    #[serde(default)]
    pub problems: Vec<String>,
}

/// How long `/healthz` waits for the store's count of boxes: it answers
/// within a second even when the store is frozen, and says so.
const HEALTH_STORE_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

fn store_error(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{}\n",
            super::registry_unavailable("cannot answer an HTTP request", &e)
        ),
    )
        .into_response()
}

/// Largest uplink measurement an entrance accepts: enough for a meaningful
/// reading on a household line, small enough that the endpoint cannot be used
/// to pour arbitrary traffic into the entrance.
pub const MAX_UPLINK_BYTES: u64 = 16 << 20;

/// `POST /dandelion/uplink` (the box's redeemed invitation, or the join
/// token): reads and discards the body, timing it
/// from the first byte to the last, so a box learns what its uplink can carry.
pub async fn uplink(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    use futures_util::StreamExt;
    let member = match crate::handshake::bearer(&headers) {
        Some(code) if super::enrol::is_code(code) => {
            match shared.enrolment.redeemed_by_member(code).await {
                Ok(member) => member,
                Err(e) => return store_error(e),
            }
        }
        Some(token) => shared
            .join_token
            .as_deref()
            .is_some_and(|expected| crate::handshake::token_matches(token, expected)),
        None => {
            return (
                StatusCode::UNAUTHORIZED,
                "the uplink test needs the box's invitation or the join token\n",
            )
                .into_response();
        }
    };
    if !member {
        return (
            StatusCode::FORBIDDEN,
            "not the invitation of an enrolled box, nor the join token\n",
        )
            .into_response();
    }
    if crate::server::declared_length(&headers).is_some_and(|n| n > MAX_UPLINK_BYTES) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_UPLINK_BYTES} bytes\n"),
        )
            .into_response();
    }
    let mut stream = body.into_data_stream();
    let mut bytes: u64 = 0;
    let mut first: Option<std::time::Instant> = None;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return (StatusCode::BAD_REQUEST, "the upload was cut off\n").into_response();
        };
        first.get_or_insert_with(std::time::Instant::now);
        bytes += chunk.len() as u64;
        if bytes > MAX_UPLINK_BYTES {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {MAX_UPLINK_BYTES} bytes\n"),
            )
                .into_response();
        }
    }
    let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Json(serde_json::json!({ "BYTES": bytes, "SECONDS": seconds })).into_response()
}

pub async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let health = &shared.common.health;
    let boxes = if health.failing(crate::health::STORE) {
        None
    } else {
        match tokio::time::timeout(HEALTH_STORE_WAIT, shared.book.members()).await {
            Ok(Ok(m)) => Some(m.len()),
            Ok(Err(e)) => return store_error(e),
            Err(_) => None,
        }
    };
    let report = health.report();
    let reason = shared.preservation();
    let status = if !report.problems.is_empty() {
        report.status
    } else if reason.is_some() {
        "self-preservation"
    } else {
        "ok"
    };
    Json(Health {
        status: status.into(),
        id: shared.common.identity.id().to_string(),
        boxes,
        self_preservation: reason.is_some(),
        reason,
        problems: report.problems,
    })
    .into_response()
}

/// Every box as the entrance sees it now.
async fn views(shared: &Shared) -> Result<Vec<BoxView>, Response> {
    let listed = shared.book.list().await.map_err(store_error)?;
    let now = now();
    Ok(listed
        .into_iter()
        .map(|l| box_view(l, now, shared.config.heartbeat_interval))
        .collect())
}

/// `GET /api/boxes` (admin token): every box with its household's address,
/// location and data URL, which is why it is not public.
pub async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    match views(&shared).await {
        Ok(views) => Json(
            views
                .into_iter()
                .filter(|v| filter.matches(v.state, v.legacy, &v.geo))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(response) => response,
    }
}

/// `GET /api/summary` (public): what the network offers, in aggregates.
pub async fn summary(State(shared): State<Arc<Shared>>) -> Response {
    match views(&shared).await {
        Ok(views) => Json(Summary::of(&views)).into_response(),
        Err(response) => response,
    }
}

/// How a box looks at `now`: its stored record and last exchange, with `stale`
/// derived from the heartbeat interval.
pub fn box_view(l: Listed, now: f64, heartbeat: std::time::Duration) -> BoxView {
    let eff = l.info.effective(now, heartbeat);
    let system = l.exchange.as_ref().and_then(|x| x.system_info.as_deref());
    let free_storage = system.and_then(|s| match (s.storage_quota, s.storage_used) {
        (Some(q), Some(u)) => Some(q.saturating_sub(u)),
        _ => s.disk_available,
    });
    BoxView {
        id: l.id,
        state: eff.state,
        reason: eff.reason,
        since: eff.since,
        legacy: l.info.legacy,
        first_seen: l.info.first_seen,
        last_heartbeat: l.info.last_heartbeat,
        expires_at: l.expires_at,
        ban_until: l.info.ban_until,
        observed_ip: l.info.observed_ip,
        version: l.exchange.as_ref().and_then(|x| x.header.version.clone()),
        data_url: l.exchange.as_ref().and_then(|x| x.data_url.clone()),
        connect_ws: l.exchange.as_ref().and_then(|x| x.connect_ws.clone()),
        upload_rate: system.and_then(|s| s.upload_rate),
        upload_cap: system.and_then(|s| s.upload_cap),
        bytes_served: l
            .exchange
            .as_ref()
            .and_then(|x| x.traffic_flow.as_ref())
            .and_then(|t| t.bytes_served),
        free_storage,
        geo: l.info.geo,
        geo_source: l.info.geo_source,
    }
}

#[derive(Debug, Deserialize)]
pub struct EvictRequest {
    pub reason: String,
}

/// The non-empty reason of an eviction or a revocation; a 400 to answer if none.
fn reason_of(
    body: Result<Json<EvictRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<String, (StatusCode, String)> {
    match body {
        Ok(Json(r)) if !r.reason.trim().is_empty() => Ok(r.reason.trim().to_owned()),
        Ok(_) => Err((
            StatusCode::BAD_REQUEST,
            "the reason must not be empty\n".to_owned(),
        )),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            format!("expected {{\"reason\": \"…\"}}: {e}\n"),
        )),
    }
}

fn box_id(text: &str) -> Result<NodeId, (StatusCode, String)> {
    match NodeId::parse(text) {
        Ok(id) if id.role() == Role::Box => Ok(id),
        _ => Err((
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not a box ID (box-<32 hex digits>)\n",
                text.escape_debug()
            ),
        )),
    }
}

/// `POST /api/boxes/{id}/evict` with `{"reason": …}`: removes the box at once,
/// tells its session why, and refuses it for `ban_time`.
pub async fn evict(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<EvictRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let id = match box_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let reason = match reason_of(body) {
        Ok(reason) => reason,
        Err(refused) => return refused.into_response(),
    };
    let now = now();
    let until = now + shared.config.ban_time.as_secs_f64();
    let known = match shared.book.evict(id.as_str(), &reason, until, now).await {
        Ok(k) => k,
        Err(e) => return store_error(e),
    };
    shared.metrics.evictions.inc();
    let text = super::session::ban_text(&reason, until);
    shared.notify_evicted(id.as_str(), &text);
    shared
        .watchers
        .tell(id.as_str(), super::watch::EVICTED, reason.clone());
    tracing::warn!(box_id = %id, known, "box evicted by an operator: {reason}");
    let text = format!("{id} evicted by an operator: {reason}");
    super::console::changed(&shared, id.as_str(), Level::Warn, text).await;
    Json(serde_json::json!({
        "id": id.as_str(),
        "state": "evicted",
        "reason": reason,
        "ban_until": until,
        "known": known,
    }))
    .into_response()
}

/// `PUT /api/boxes/{id}/location` with a `GEOIP` object: an operator's location
/// for a box, which wins over the database from then on.
pub async fn locate(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<GeoIp>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let id = match box_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let Ok(Json(geo)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a GEOIP object (COUNTRY, CITY, REGION, LOC, …)\n",
        )
            .into_response();
    };
    if geo.loc.is_some() && geo.lat_lon().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "LOC must be \"latitude,longitude\" in range\n",
        )
            .into_response();
    }
    match shared.book.set_location(id.as_str(), &geo).await {
        Ok(true) => Json(geo).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no box {id} here\n")).into_response(),
        Err(e) => store_error(e),
    }
}

fn enrol_error(e: super::enrol::EnrolError) -> Response {
    use super::enrol::EnrolError;
    match e {
        EnrolError::Store(e) => store_error(e),
        EnrolError::Invalid(text) => (StatusCode::BAD_REQUEST, format!("{text}\n")).into_response(),
        other => (StatusCode::INTERNAL_SERVER_ERROR, format!("{other}\n")).into_response(),
    }
}

/// What an invitation is asked with.
#[derive(Debug, Serialize, Deserialize)]
pub struct InviteRequest {
    pub owner: String,
    /// Seconds the invitation stays valid; a week when absent.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// What a new invitation is answered with: its code, shown this once.
#[derive(Debug, Serialize, Deserialize)]
pub struct InviteReply {
    pub code: String,
    pub owner: String,
    pub expires: f64,
}

/// How long an invitation is valid when the operator does not say.
pub const DEFAULT_VALIDITY: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// `POST /api/invitations` with `{"owner": …, "expires_in_secs": …}` (admin
/// token): a one-time code that enrols one box for that owner.
pub async fn invite(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Json<InviteRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected {{\"owner\": \"…\", \"expires_in_secs\": …}}: {e}\n"),
            )
                .into_response();
        }
    };
    let validity = request
        .expires_in_secs
        .map_or(DEFAULT_VALIDITY, std::time::Duration::from_secs);
    match shared
        .enrolment
        .invite(&request.owner, validity, now())
        .await
    {
        Ok((code, invitation)) => {
            tracing::info!(owner = %invitation.owner, "invitation issued");
            Json(InviteReply {
                code,
                owner: invitation.owner,
                expires: invitation.expires,
            })
            .into_response()
        }
        Err(e) => enrol_error(e),
    }
}

/// `GET /api/owners` (admin token): every owner with their boxes, cap,
/// pending invitations and revocation.
pub async fn owners(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    match shared
        .enrolment
        .owners(shared.config.max_boxes_per_owner, now())
        .await
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => store_error(e),
    }
}

/// `POST /api/owners/{owner}/revoke` with `{"reason": …}` (admin token): the
/// owner's boxes are evicted at once, on every entrance sharing the registry,
/// and their keys refused for good; their unused invitations are void.
pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    Path(owner): Path<String>,
    headers: HeaderMap,
    body: Result<Json<EvictRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let reason = match reason_of(body) {
        Ok(reason) => reason,
        Err(refused) => return refused.into_response(),
    };
    let now = now();
    let boxes = match shared.enrolment.revoke(&owner, &reason, now).await {
        Ok(boxes) => boxes,
        Err(e) => return enrol_error(e),
    };
    // Evicted as well as revoked: the ban reaches sessions on every entrance
    // sharing the registry at their next heartbeat; admission refuses the keys
    // after the ban has ended.
    let until = now + shared.config.ban_time.as_secs_f64();
    let text = format!("owner {owner} revoked: {reason}");
    for id in &boxes {
        if let Err(e) = shared.book.evict(id, &text, until, now).await {
            return store_error(e);
        }
        shared.metrics.evictions.inc();
        shared.notify_evicted(id, &super::session::ban_text(&text, until));
    }
    tracing::warn!(%owner, boxes = boxes.len(), "owner revoked by an operator: {reason}");
    shared.common.console.event(
        Level::Warn,
        format!("owner {owner} revoked ({} boxes): {reason}", boxes.len()),
    );
    Json(serde_json::json!({ "owner": owner, "boxes": boxes, "reason": reason })).into_response()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CapRequest {
    /// Boxes this owner may enrol; `null` for the configured default, 0 for no cap.
    pub max_boxes: Option<u32>,
}

/// `PUT /api/owners/{owner}/cap` with `{"max_boxes": n}` (admin token).
pub async fn cap(
    State(shared): State<Arc<Shared>>,
    Path(owner): Path<String>,
    headers: HeaderMap,
    body: Result<Json<CapRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = shared.common.require_admin(&headers) {
        return refusal.into_response();
    }
    let Ok(Json(request)) = body else {
        return (StatusCode::BAD_REQUEST, "expected {\"max_boxes\": n}\n").into_response();
    };
    match shared
        .enrolment
        .set_cap(&owner, request.max_boxes, now())
        .await
    {
        Ok(()) => Json(serde_json::json!({ "owner": owner, "max_boxes": request.max_boxes }))
            .into_response(),
        Err(e) => enrol_error(e),
    }
}
