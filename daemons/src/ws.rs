//! Accepting WebSocket sessions on an axum route, as [`Connection`]s.
//!
//! axum's own WebSocket type hides the tungstenite stream, and the daemons speak
//! through `dandelion_core::connection` on both sides; so the upgrade is done here
//! with hyper's upgrade mechanism and handed to tungstenite directly. The HTTP
//! request is checked (and may be refused with 401/403) before it is upgraded.

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dandelion_core::connection::{Connection, ws_config};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::server::Common;
use crate::shutdown::Shutdown;

/// A server-side session.
pub type ServerConnection = Connection<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether the request asks for a WebSocket upgrade at all.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Answers `101 Switching Protocols` and runs `session` on the upgraded connection,
/// as a task the daemon's shutdown waits for, with no keepalive: the tests'
/// stand-in servers. The roles use [`upgrade_for`].
pub fn upgrade<F, Fut>(request: Request, shutdown: &Shutdown, session: F) -> Response
where
    F: FnOnce(ServerConnection) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    upgrade_with(request, shutdown, ws_config(), None, session)
}

/// A role's session: [`upgrade`] with a WebSocket configuration of the role's
/// choosing (an entrance's thousands of control sessions want small buffers),
/// pinging a quiet peer every `limits.ws_ping_interval` and ending the session
/// when nothing comes back.
pub fn upgrade_for<F, Fut>(
    request: Request,
    common: &Common,
    config: WebSocketConfig,
    session: F,
) -> Response
where
    F: FnOnce(ServerConnection) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let keepalive = Some(common.limits.ws_ping_interval);
    upgrade_with(request, &common.shutdown, config, keepalive, session)
}

fn upgrade_with<F, Fut>(
    mut request: Request,
    shutdown: &Shutdown,
    config: WebSocketConfig,
    keepalive: Option<std::time::Duration>,
    session: F,
) -> Response
where
    F: FnOnce(ServerConnection) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let headers = request.headers();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_upgrade(headers) && version_ok)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "this endpoint speaks WebSocket (version 13) only\n",
        )
            .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    shutdown.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let conn = Connection::new(ws);
                session(match keepalive {
                    Some(interval) => conn.with_keepalive(interval),
                    None => conn,
                })
                .await;
            }
            Err(e) => tracing::debug!("WebSocket upgrade did not complete: {e}"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
