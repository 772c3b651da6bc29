//! The box's small HTTP API besides file serving: the answer to an entrance's
//! reachability check, the admin listing of stored files, and `/healthz`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dandelion_core::auth::{Claim, Nonce};
use dandelion_core::console::{BoxNodeView, StoredFile};
use dandelion_core::ids::NodeId;
use dandelion_core::paths;

use super::BoxState;
use super::storage::now_secs;

/// `GET /dandelion/reachability?nonce=<64 hex>&verifier=<entrance-id>`: an
/// entrance that reached this URL from outside learns it reached *this* box,
/// because only this box can sign the nonce for that verifier. Answers a
/// reachability `dandelion_core::auth::Proof` as JSON, which names the box's own
/// data URL: it says "this box answers here" and can open no session.
pub async fn reachability(
    State(state): State<Arc<BoxState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let nonce = match query.get("nonce").map(|n| Nonce::parse(n)) {
        Some(Ok(nonce)) => nonce,
        Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("nonce: {e}\n")).into_response(),
        None => return (StatusCode::BAD_REQUEST, "missing `nonce`\n").into_response(),
    };
    let verifier = match query.get("verifier").map(|v| NodeId::parse(v)) {
        Some(Ok(id)) => id,
        Some(Err(e)) => {
            return (StatusCode::BAD_REQUEST, format!("verifier: {e}\n")).into_response();
        }
        None => return (StatusCode::BAD_REQUEST, "missing `verifier`\n").into_response(),
    };
    match Claim::reachability(&verifier, &nonce, &state.public_base) {
        Ok(claim) => Json(state.common.identity.prove(&claim)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `GET /api/files` (admin token): every live file with size, TTL left and traffic.
pub async fn files(State(state): State<Arc<BoxState>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = state.common.require_admin(&headers) {
        return refusal.into_response();
    }
    Json(view(&state)).into_response()
}

/// Everything the box knows about itself: its files with TTL left and traffic,
/// storage, upload, and the publishers connected now.
pub fn view(state: &BoxState) -> BoxNodeView {
    let now = now_secs();
    let files = state
        .storage
        .list()
        .into_iter()
        .map(|(member, entry)| {
            let served = state.traffic.of(&member);
            StoredFile {
                url: paths::file_url(&state.public_base, &member),
                path: member,
                size: entry.size,
                ttl_left: entry.expires.saturating_sub(now),
                bytes_served: served.bytes,
                requests: served.requests,
            }
        })
        .collect();
    let totals = state.traffic.totals();
    BoxNodeView {
        files,
        storage_used: state.storage.used(None),
        storage_quota: state.config.storage_quota.map(|q| q.as_u64()),
        bytes_served: totals.bytes,
        requests: totals.requests,
        upload_rate: state.traffic.recent_rate(),
        upload_cap: state
            .config
            .upload_cap
            .map(|c| c.as_u64())
            .filter(|c| *c > 0),
        publishers: state.publishers(),
    }
}

/// `GET /dandelion/<box-id>/`: the original box answered `HI <box-id>` here, and
/// its tools used that to check a box was up.
pub async fn hello(State(state): State<Arc<BoxState>>, Path(box_id): Path<String>) -> Response {
    let id = state.common.identity.id();
    if box_id == id.as_str() {
        format!("HI {id}").into_response()
    } else {
        (StatusCode::NOT_FOUND, "this is another box\n").into_response()
    }
}

/// `ok`, or `degraded` with the reasons while an entrance session is down:
/// the box still serves its files meanwhile, so it answers `200` either way.
pub async fn healthz(State(state): State<Arc<BoxState>>) -> Response {
    let report = state.common.health.report();
    Json(serde_json::json!({
        "status": report.status,
        "role": "box",
        "problems": report.problems,
    }))
    .into_response()
}
