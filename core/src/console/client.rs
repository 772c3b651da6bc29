//! The console's side of a daemon: attach to its feed, and the two actions an
//! operator takes from the keyboard (evict a box, push a file), over the same
//! HTTP API the `dandelion` commands use.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use http::{Method, StatusCode};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

use super::{CONSOLE_PATH, Update};
use crate::connection::{self, ConnectionError, MAX_TEXT_MESSAGE};
use crate::http::{HttpClient, HttpError, origin_of};
use crate::ids::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("`{0}` is not a daemon URL like http://host:7070")]
    BadUrl(String),
    #[error(transparent)]
    Connect(#[from] ConnectionError),
    #[error("the feed broke: {0}")]
    Feed(String),
    #[error("the daemon sent an update this console cannot read: {0}")]
    BadUpdate(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("refused ({status}): {detail}")]
    Refused { status: StatusCode, detail: String },
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// The HTTP origin of a daemon given as `http(s)://` or `ws(s)://`, with or
/// without a path.
pub fn daemon_origin(url: &str) -> Result<String, ConsoleError> {
    origin_of(url).ok_or_else(|| ConsoleError::BadUrl(url.escape_debug().to_string()))
}

/// A daemon URL as an operator names it, optionally pinned after `#` to the
/// daemon's ID (`https://box.example:7071#box-…`: a household box serving TLS
/// with its identity certificate, which no CA signed): the URL and the ID.
pub fn split_pin(url: &str) -> Result<(&str, Option<NodeId>), ConsoleError> {
    match url.split_once('#') {
        None => Ok((url, None)),
        Some((bare, id)) => NodeId::parse(id)
            .map(|id| (bare, Some(id)))
            .map_err(|e| ConsoleError::BadUrl(format!("{}: {e}", url.escape_debug()))),
    }
}

/// The feed URL of a daemon: `http://host:7070` → `ws://host:7070/dandelion/console`.
pub fn console_url(url: &str) -> Result<String, ConsoleError> {
    let origin = daemon_origin(split_pin(url)?.0)?;
    Ok(connection::websocket_url(&format!(
        "{origin}{CONSOLE_PATH}"
    ))?)
}

/// A daemon's live feed.
#[derive(Debug)]
pub struct Feed {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    heard: std::time::Instant,
}

/// Opens a daemon's feed with its admin token (within the connect timeout).
/// A wrong token is refused before anything is sent, with the daemon's reason.
pub async fn attach(url: &str, token: &str) -> Result<Feed, ConsoleError> {
    let auth = format!("Bearer {}", token.trim());
    let headers = [("authorization", auth.as_str())];
    let feed_url = console_url(url)?;
    let conn = match split_pin(url)?.1 {
        Some(id) => connection::connect_pinned(&feed_url, &id, &headers).await?,
        None => connection::connect(&feed_url, &headers).await?,
    };
    Ok(Feed {
        ws: conn.into_inner(),
        heard: std::time::Instant::now(),
    })
}

impl Feed {
    /// The next update; `Ok(None)` when the daemon closed the feed.
    pub async fn next(&mut self) -> Result<Option<Update>, ConsoleError> {
        loop {
            let frame = match self.ws.next().await {
                None => return Ok(None),
                Some(Ok(frame)) => {
                    self.heard = std::time::Instant::now();
                    frame
                }
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(None),
                Some(Err(e)) => return Err(ConsoleError::Feed(e.to_string())),
            };
            match frame {
                WsMessage::Text(text) if text.len() > MAX_TEXT_MESSAGE * 8 => {
                    return Err(ConsoleError::BadUpdate(format!(
                        "a message of {} bytes",
                        text.len()
                    )));
                }
                WsMessage::Text(text) => {
                    return Update::decode(&text)
                        .map(Some)
                        .map_err(|e| ConsoleError::BadUpdate(e.to_string()));
                }
                WsMessage::Close(_) => return Ok(None),
                _ => continue,
            }
        }
    }
}

impl Feed {
    /// Asks the daemon for a sign of life; its pong (or any update) counts.
    /// A daemon that is gone without closing (a frozen machine, a cut cable)
    /// is only noticed this way.
    pub async fn ping(&mut self) -> Result<(), ConsoleError> {
        use futures_util::SinkExt;
        self.ws
            .send(WsMessage::Ping(Default::default()))
            .await
            .map_err(|e| ConsoleError::Feed(e.to_string()))
    }

    /// How long since the daemon last sent anything.
    pub fn silent_for(&self) -> std::time::Duration {
        self.heard.elapsed()
    }
}

fn refused(response: &crate::http::Response) -> ConsoleError {
    let body = response.text();
    // The publisher answers {"error": …}, the others plain text.
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    ConsoleError::Refused {
        status: response.status,
        detail: detail.trim().to_owned(),
    }
}

/// Evicts a box on an entrance, with the operator's reason.
pub async fn evict(
    http: &HttpClient,
    entrance: &str,
    token: &str,
    box_id: &str,
    reason: &str,
) -> Result<(), ConsoleError> {
    let url = format!("{}/api/boxes/{box_id}/evict", daemon_origin(entrance)?);
    let auth = format!("Bearer {}", token.trim());
    let body = serde_json::to_vec(&serde_json::json!({ "reason": reason }))
        .map_err(|e| ConsoleError::BadUpdate(e.to_string()))?;
    let response = http
        .request(
            Method::POST,
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.into(),
        )
        .await?;
    if response.status.is_success() {
        Ok(())
    } else {
        Err(refused(&response))
    }
}

/// What a publisher answered to an accepted push.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Accepted {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Streams a file to a publisher under `name`, calling `progress` with the
/// bytes sent so far; done when the publisher acknowledged it (`202`: durable).
/// `query` is appended as is (`ttl=60&replicas=2`), or empty.
pub async fn push_file(
    http: &HttpClient,
    publisher: &str,
    token: &str,
    path: &Path,
    name: &str,
    query: &str,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<Accepted, ConsoleError> {
    let mut url = format!(
        "{}/api/files/{}",
        daemon_origin(publisher)?,
        crate::paths::url_path(name)
    );
    if !query.is_empty() {
        url = format!("{url}?{query}");
    }
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|cause| ConsoleError::Read {
            path: path.to_owned(),
            cause,
        })?;
    let mut sent = 0u64;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |c| {
        if let Ok(c) = c {
            sent += c.len() as u64;
            progress(sent);
        }
    });
    let auth = format!("Bearer {}", token.trim());
    let response = http
        .request_stream(Method::PUT, &url, &[("authorization", &auth)], body)
        .await?;
    if response.status != StatusCode::ACCEPTED {
        return Err(refused(&response));
    }
    response
        .json()
        .map_err(|e| ConsoleError::BadUpdate(format!("the publisher's answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_urls_from_the_forms_operators_type() {
        for (given, want) in [
            (
                "http://127.0.0.1:7070",
                "ws://127.0.0.1:7070/dandelion/console",
            ),
            ("127.0.0.1:7070", ""),
            (
                "ws://10.0.0.1:7071/dandelion/ws",
                "ws://10.0.0.1:7071/dandelion/console",
            ),
            (
                "https://entrance.example:443/",
                "wss://entrance.example:443/dandelion/console",
            ),
        ] {
            match console_url(given) {
                Ok(url) => assert_eq!(url, want, "{given}"),
                Err(e) => assert!(want.is_empty(), "{given}: {e}"),
            }
        }
        assert!(matches!(
            console_url("ftp://x"),
            Err(ConsoleError::BadUrl(_))
        ));
    }
}
