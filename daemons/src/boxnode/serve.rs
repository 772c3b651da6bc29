//! Serving stored files to viewers at `/<publisher-id>/<path>`, as the original's
//! nginx did: tower-http's `ServeFile` does ranges, conditional requests and HEAD;
//! this module adds what a browser video player needs on top (content type by
//! extension, CORS, `Cache-Control`), refuses expired files, and passes the body
//! through the household controls and the traffic counters.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dandelion_core::ids::{NodeId, Role};
use futures_util::StreamExt;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::BoxState;
use super::cache::{self, Cache};
use super::rules;
use super::storage::now_secs;
use dandelion_core::paths;

/// Response body chunk size: 64 KiB matches the upload cap's burst, so one chunk
/// is one wait on the bucket.
pub const CHUNK: usize = 64 * 1024;

/// The fallback route: everything that is not one of the box's own endpoints.
pub async fn file(State(state): State<Arc<BoxState>>, request: Request) -> Response {
    let method = request.method().clone();
    if method == Method::OPTIONS {
        return with_cors(StatusCode::NO_CONTENT.into_response(), true);
    }
    if method != Method::GET && method != Method::HEAD {
        return with_cors(
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD, OPTIONS")],
            )
                .into_response(),
            false,
        );
    }
    let Some(member) = member_of(request.uri().path()) else {
        return not_found();
    };
    let Some(entry) = state.storage.get(&member) else {
        return not_found();
    };
    let Some(permit) = state.limits.try_download() else {
        return with_cors(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "too many downloads at once; try again\n",
            )
                .into_response(),
            false,
        );
    };
    // A HEAD sends no file: the publisher's serve probes are HEADs, and a
    // viewer count that includes them says "served 0 B in 2 requests".
    if method != Method::HEAD {
        state.traffic.request(&member);
    }
    let path = state.storage.root().join(&member);
    let ttl_left = entry.expires.saturating_sub(now_secs());
    let cache_control = HeaderValue::from_str(&rules::cache_control(&member, ttl_left)).ok();
    if method == Method::GET
        && entry.size <= cache::MAX_CACHED_FILE
        && !is_conditional_or_range(request.headers())
    {
        let cached = match state.cache.get(&member, entry.version) {
            Some(hit) => Some(hit),
            None => match Cache::load(path.clone(), entry.version).await {
                Ok(loaded) => {
                    state.cache.insert(&member, loaded.clone());
                    Some(loaded)
                }
                // Gone meanwhile (swept, replaced): ServeFile gives the right answer.
                Err(_) => None,
            },
        };
        if let Some(cached) = cached {
            let len = cached.body.len();
            let mut response = Response::new(Body::from(cached.body));
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(rules::content_type(&member)),
            );
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            // The metered stream has no size of its own: without this hyper
            // would send the file chunked and players could show no progress.
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            if let Ok(v) = HeaderValue::from_str(&cached.etag) {
                h.insert(header::ETAG, v);
            }
            if let Ok(v) = HeaderValue::from_str(&cached.last_modified) {
                h.insert(header::LAST_MODIFIED, v);
            }
            if let Some(v) = cache_control {
                h.insert(header::CACHE_CONTROL, v);
            }
            let (parts, body) = response.into_parts();
            return with_cors(
                Response::from_parts(parts, metered(body, permit, state, member)),
                false,
            );
        }
    }
    let served = match ServeFile::new(&path)
        .with_buf_chunk_size(CHUNK)
        .ignore_multi_range_requests(true)
        .oneshot(request)
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (mut parts, body) = served.into_parts();
    if parts.status.is_success() {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(rules::content_type(&member)),
        );
    }
    if let Some(v) = cache_control {
        parts.headers.insert(header::CACHE_CONTROL, v);
    }
    let body = metered(Body::new(body), permit, state, member);
    with_cors(Response::from_parts(parts, body), false)
}

/// Requests whose answer depends on more than the file: left to `ServeFile`.
fn is_conditional_or_range(headers: &axum::http::HeaderMap) -> bool {
    [
        header::RANGE,
        header::IF_NONE_MATCH,
        header::IF_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| headers.contains_key(name))
}

/// Passes a response body through the upload cap and the traffic counters. The
/// body holds the download slot until the last byte went out (or the viewer left).
fn metered(
    body: Body,
    permit: tokio::sync::OwnedSemaphorePermit,
    state: Arc<BoxState>,
    member: String,
) -> Body {
    let limits = state.limits.clone();
    let stream = body.into_data_stream();
    let body = futures_util::stream::unfold(
        (stream, permit, limits, state, member),
        |(mut stream, permit, limits, state, member)| async move {
            let chunk = stream.next().await?;
            if let Ok(bytes) = &chunk {
                let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
                limits.wait_for(n).await;
                state.traffic.bytes(&member, n);
            }
            Some((chunk, (stream, permit, limits, state, member)))
        },
    );
    Body::from_stream(body)
}

/// `/<publisher-id>/<path>` → `<publisher-id>/<path>`, if both parts are valid.
pub fn member_of(uri_path: &str) -> Option<String> {
    let decoded = crate::heads::percent_decode(uri_path.strip_prefix('/')?)?;
    let (publisher, rest) = decoded.split_once('/')?;
    let id = NodeId::parse(publisher).ok()?;
    if id.role() != Role::Publisher {
        return None;
    }
    let rel = paths::relative_path(rest).ok()?;
    Some(format!("{id}/{rel}"))
}

fn not_found() -> Response {
    with_cors(
        (
            StatusCode::NOT_FOUND,
            "no such file on this box (expired or never stored)\n",
        )
            .into_response(),
        false,
    )
}

/// What a player's script may read of a file response.
pub const EXPOSE_HEADERS: &str = "Content-Range, Accept-Ranges, Content-Length, ETag";

/// The original nginx's CORS headers, plus what players need to read ranges.
fn with_cors(mut response: Response, preflight: bool) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Range, If-None-Match, If-Modified-Since, If-Range"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_urls_map_to_members() {
        let id = "publisher-0123456789abcdef0123456789abcdef";
        assert_eq!(
            member_of(&format!("/{id}/tmp/hls/seg%201.ts")),
            Some(format!("{id}/tmp/hls/seg 1.ts"))
        );
        assert_eq!(member_of(&format!("/{id}/a/../b")), None);
        assert_eq!(member_of(&format!("/{id}/a/%2e%2e/b")), None);
        assert_eq!(
            member_of("/box-0123456789abcdef0123456789abcdef/a.ts"),
            None
        );
        assert_eq!(member_of("/metrics"), None);
        assert_eq!(member_of(&format!("/{id}/bad%zz")), None);
    }
}
