//! A small HTTP/1.1 client for talking to daemons: handshake nonces, the admin
//! API, reachability checks and the client commands, over `http://` or
//! `https://` (TLS with the process's trust, [`crate::tls::client_config`]).
//!
//! It wraps hyper's pooled client with what every caller needs and hyper leaves
//! out: a deadline on the whole exchange and a cap on the body read, so a slow or
//! hostile peer cannot hold a task or its memory.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Default deadline for a whole request, connect to last body byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default cap on a response body.
pub const DEFAULT_BODY_LIMIT: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    #[error("{url}: {cause}")]
    Failed { url: String, cause: String },
    #[error("{url}: no answer within {secs}s")]
    Timeout { url: String, secs: u64 },
    /// A token would have crossed a network in clear; nothing was sent.
    #[error("{0}")]
    PlainToken(String),
}

/// Request bodies: whole buffers, or streams for uploads of any size.
type Body = BoxBody<Bytes, std::io::Error>;

/// A response with its whole body read.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

type Plain = Client<HttpConnector, Body>;
type Secure = Client<HttpsConnector<HttpConnector>, Body>;

/// Cheap to clone; clones share one connection pool per scheme.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Plain,
    /// Made at the first `https://` request, so that a process that never
    /// dials TLS never loads a root store.
    secure: Arc<OnceLock<Secure>>,
    timeout: Duration,
    body_limit: usize,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new(DEFAULT_TIMEOUT)
    }
}

impl HttpClient {
    pub fn new(timeout: Duration) -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(tcp_connector(timeout)),
            secure: Arc::default(),
            timeout,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }

    fn secure(&self) -> Result<&Secure, String> {
        if let Some(client) = self.secure.get() {
            return Ok(client);
        }
        let config = crate::tls::client_config().map_err(|e| e.to_string())?;
        let mut tcp = tcp_connector(self.timeout);
        tcp.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(self
            .secure
            .get_or_init(|| Client::builder(TokioExecutor::new()).build(connector)))
    }

    pub fn with_body_limit(mut self, limit: usize) -> HttpClient {
        self.body_limit = limit;
        self
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, HttpError> {
        let body = Full::new(body).map_err(|never| match never {}).boxed();
        let exchange = self.exchange(method, url, headers, body);
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_owned(),
                secs: self.timeout.as_secs(),
            })?
    }

    /// Sends a streamed body (an upload of any size, read as it goes). No overall
    /// deadline: a large upload takes as long as it takes, and the caller shows
    /// progress; connecting is still bounded.
    pub async fn request_stream<S>(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: S,
    ) -> Result<Response, HttpError>
    where
        S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    {
        use futures_util::TryStreamExt;
        let body = StreamBody::new(body.map_ok(http_body::Frame::data)).boxed();
        self.exchange(method, url, headers, body).await
    }

    /// `GET url` with its body left to the caller, to read as it comes: a
    /// download of any size. The answer's head is bounded by the client's
    /// timeout; the body is not, so the caller bounds its reading.
    pub async fn get_streamed(
        &self,
        url: &str,
    ) -> Result<http::Response<hyper::body::Incoming>, HttpError> {
        let body = Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed();
        let exchange = self.send(Method::GET, url, &[], body);
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_owned(),
                secs: self.timeout.as_secs(),
            })?
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Response, HttpError> {
        let response = self.send(method, url, headers, body).await?;
        self.read(url, response).await
    }

    /// Sends a request and waits for the answer's head.
    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<http::Response<hyper::body::Incoming>, HttpError> {
        let fail = |cause: String| HttpError::Failed {
            url: url.to_owned(),
            cause,
        };
        let (uri, tls) = parse_url(url)?;
        let Some(host) = uri.host() else {
            return Err(bad_url(url));
        };
        let carries_token = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
        if carries_token && !crate::tokens::may_send(tls, host) {
            return Err(HttpError::PlainToken(crate::tokens::refusal_to_send(url)));
        }
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).map_err(|e| fail(e.to_string()))?;
        if tls {
            self.secure().map_err(fail)?.request(request).await
        } else {
            self.inner.request(request).await
        }
        .map_err(|e| fail(error_chain(&e)))
    }
}

impl HttpClient {
    /// `GET url` from exactly `addr`, whatever the URL's host resolves to by
    /// now: the caller resolved it once and decided `addr` may be dialled (a
    /// name that resolves elsewhere the second time cannot move the request).
    /// One connection, no pool; the URL's host goes in `Host` and TLS's server
    /// name. No redirect is followed: a 3xx comes back as it is.
    pub async fn get_at(
        &self,
        url: &str,
        addr: std::net::SocketAddr,
    ) -> Result<Response, HttpError> {
        tokio::time::timeout(self.timeout, self.get_at_inner(url, addr))
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_owned(),
                secs: self.timeout.as_secs(),
            })?
    }

    async fn get_at_inner(
        &self,
        url: &str,
        addr: std::net::SocketAddr,
    ) -> Result<Response, HttpError> {
        use hyper_util::rt::TokioIo;
        let fail = |cause: String| HttpError::Failed {
            url: url.to_owned(),
            cause,
        };
        let bad = || bad_url(url);
        let (uri, tls) = parse_url(url)?;
        let (Some(host), Some(authority)) = (uri.host(), uri.authority()) else {
            return Err(bad());
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request::get(path)
            .header(http::header::HOST, authority.as_str())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let response = if tls {
            let config = crate::tls::client_config().map_err(|e| fail(e.to_string()))?;
            let name = rustls_pki_types::ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
            .map_err(|_| bad())?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| fail(format!("TLS: {e}")))?;
            send_once(TokioIo::new(stream), request).await
        } else {
            send_once(TokioIo::new(tcp), request).await
        }
        .map_err(|e| fail(error_chain(&e)))?;
        self.read(url, response).await
    }
}

impl HttpClient {
    /// A response with its body read, up to the client's body limit.
    async fn read(
        &self,
        url: &str,
        response: http::Response<hyper::body::Incoming>,
    ) -> Result<Response, HttpError> {
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.body_limit)
            .collect()
            .await
            .map_err(|e| HttpError::Failed {
                url: url.to_owned(),
                cause: format!("reading the body: {e}"),
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

fn bad_url(url: &str) -> HttpError {
    HttpError::BadUrl(url.escape_debug().to_string())
}

/// An `http://` or `https://` URL, and whether it is the latter.
fn parse_url(url: &str) -> Result<(http::Uri, bool), HttpError> {
    let uri: http::Uri = url.parse().map_err(|_| bad_url(url))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad_url(url)),
    };
    Ok((uri, tls))
}

/// One request on a fresh HTTP/1.1 connection over `io`.
async fn send_once<T>(
    io: T,
    request: Request<http_body_util::Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    // Ends with the exchange: when the response is read and the sender dropped.
    tokio::spawn(connection);
    sender.send_request(request).await
}

fn tcp_connector(timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    connector.set_nodelay(true);
    connector
}

/// What went wrong, in one line an operator can act on. hyper's errors wrap
/// the useful part ("client error (Connect): tcp connect error: Connection
/// refused"): the innermost cause is kept, and the usual ones get what to
/// check.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut innermost = e.to_string();
    let mut all = innermost.clone();
    let mut source = e.source();
    while let Some(s) = source {
        innermost = s.to_string();
        all.push_str(": ");
        all.push_str(&innermost);
        source = s.source();
    }
    match hint(&all) {
        Some(hint) => format!("{innermost} ({hint})"),
        None => innermost,
    }
}

/// What to check for the failures operators meet most, read from the whole
/// chain of causes.
fn hint(chain: &str) -> Option<&'static str> {
    if chain.contains("Connection refused") {
        Some("nothing listens there: is the daemon running, on that port?")
    } else if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        Some("it does not speak TLS there: for a daemon without TLS, write http://")
    } else if chain.contains("UnknownIssuer") {
        Some(
            "its certificate is not signed by a CA trusted here: give the CA with --ca-file or ca_file",
        )
    } else if chain.contains("dns error") || chain.contains("failed to lookup address") {
        Some("the host name does not resolve")
    } else {
        None
    }
}

/// `ws://host:port/path` or `http://host:port/path` → `http://host:port`: the HTTP
/// origin of a daemon whose WebSocket URL is known.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        _ => return None,
    };
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(format!("{scheme}://{authority}"))
}

/// A daemon URL as an operator typed it, with `https://` put in front of a
/// bare `host[:port]` (`127.0.0.1:7072`, `publisher.example.net`): tokens
/// cross the network only over TLS, and `dandelion up` is on TLS too. A
/// scheme already there is kept, so `http://` still reaches a plain daemon.
pub fn with_scheme(url: &str) -> String {
    let url = url.trim();
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("https://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_means_https_and_a_given_scheme_stays() {
        assert_eq!(with_scheme("127.0.0.1:7072"), "https://127.0.0.1:7072");
        assert_eq!(with_scheme(" pub.example.net "), "https://pub.example.net");
        assert_eq!(
            with_scheme("http://127.0.0.1:7072"),
            "http://127.0.0.1:7072"
        );
        assert_eq!(
            with_scheme("wss://e:7070/dandelion/ws"),
            "wss://e:7070/dandelion/ws"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("ws://127.0.0.1:7070/dandelion/ws").as_deref(),
            Some("http://127.0.0.1:7070")
        );
        assert_eq!(
            origin_of("https://h/dandelion/ws/").as_deref(),
            Some("https://h")
        );
        assert_eq!(origin_of("ftp://h/x"), None);
        assert_eq!(origin_of("http:///x"), None);
    }

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let url = format!("http://127.0.0.1:{port}/healthz");
        let err = HttpClient::default()
            .get(&url, &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{url}: ")) && err.contains("Connection refused"),
            "{err}"
        );
        assert!(err.contains("nothing listens there"), "{err}");
        assert!(
            !err.contains("client error"),
            "hyper's wrapper is shown: {err}"
        );
    }

    #[tokio::test]
    async fn tls_to_a_plain_port_says_to_write_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let err = HttpClient::default()
            .get(&format!("https://127.0.0.1:{port}/"), &[])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("write http://"), "{err}");
    }
}
