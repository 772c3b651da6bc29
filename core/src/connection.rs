//! A WebSocket connection that speaks [`Message`]s instead of raw frames.
//!
//! Both sides of every session — box and publisher clients, entrance and box
//! servers — go through this wrapper, so handlers never see JSON strings. It also
//! keeps the protocol's one policy about misbehaving peers: a bad message is
//! reported to the caller (who answers it with an error), and a peer that keeps
//! sending garbage is cut off rather than allowed to occupy the daemon.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, WebSocketConfig, frame::coding::CloseCode,
};
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::auth::{
    self, AuthError, CHANNEL_TLS_EXPORTER, Challenge, Channel, Claim, NONCE_PATH, Nonce,
};
use crate::idcert::WrongIdentity;
use crate::identity::Identity;
use crate::ids::NodeId;
use crate::protocol::{Message, ProtocolError};

/// Consecutive malformed messages after which a peer is disconnected.
pub const MAX_CONSECUTIVE_ERRORS: u32 = 5;

/// Largest text message accepted. Control messages are small; a `SEARCH` reply with
/// a few hundred boxes is the largest legitimate one.
pub const MAX_TEXT_MESSAGE: usize = 4 << 20;

/// Largest message a box or publisher sends an entrance (`EXCHANGE`, `SEARCH`),
/// and so the largest an entrance reads on its control sessions. A heartbeat
/// is 1-2 KiB; 16 KiB leaves room for metadata while keeping what one box puts
/// into every publisher's `SEARCH` answer small.
pub const MAX_CONTROL_MESSAGE: usize = 16 << 10;

/// What an entrance puts into one `SEARCH` answer at most: it lists fewer boxes
/// rather than build an answer near a publisher's [`MAX_TEXT_MESSAGE`].
pub const MAX_SEARCH_REPLY: usize = 1 << 20;

/// Largest binary message (one file frame) accepted: the chunked transfer keeps
/// frames well under this, and one-frame originals rarely exceed it.
pub const MAX_BINARY_MESSAGE: usize = 64 << 20;

/// How long closing waits for the peer to acknowledge.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a client waits for the TCP + WebSocket handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits shared by both sides, so neither sends what the other would drop.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_BINARY_MESSAGE))
        .max_frame_size(Some(MAX_BINARY_MESSAGE))
}

/// Read buffer of a control-only session (see [`control_ws_config`]).
pub const CONTROL_READ_BUFFER: usize = 4 << 10;

/// For servers holding many sessions that carry only small text messages (an
/// entrance with thousands of boxes): tungstenite allocates its read buffer per
/// connection (128 KiB by default), which alone made 5 000 box sessions cost
/// 700 MiB. Messages are bounded by [`MAX_CONTROL_MESSAGE`]: a larger one is
/// refused at its frame header and ends the session.
pub fn control_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(CONTROL_READ_BUFFER)
        .max_message_size(Some(MAX_CONTROL_MESSAGE))
        .max_frame_size(Some(MAX_CONTROL_MESSAGE))
}

/// What a peer sent.
// One value per received frame, moved straight to its handler: boxing the message
// would only add an allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(Message),
    /// A binary frame: file data, decoded by [`crate::frame`].
    Binary(Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer sent a message that does not decode; answer it and go on.
    #[error("bad message: {0}")]
    BadMessage(#[from] ProtocolError),
    #[error("peer sent {0} malformed messages in a row; disconnecting")]
    TooManyErrors(u32),
    #[error("a message of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("cannot connect to {url}: {cause}")]
    Connect { url: String, cause: String },
    #[error("`{0}` is not a ws://, wss://, http:// or https:// URL")]
    BadUrl(String),
    /// The daemon at the URL did not prove it is the one expected; nothing was
    /// signed for it and no token was sent.
    #[error("{url} did not prove it is {expected}: {cause}; nothing was signed or sent")]
    Unproven {
        url: String,
        expected: NodeId,
        cause: AuthError,
    },
    /// A token would have crossed a network in clear; nothing was sent.
    #[error("{0}")]
    PlainToken(String),
    #[error("WebSocket error: {0}")]
    Ws(#[from] tungstenite::Error),
    /// Nothing came from the peer, not even a pong, for this long.
    #[error("the peer sent nothing, not even a pong, for {}s", .0.as_secs())]
    Silent(Duration),
}

impl ConnectionError {
    /// Errors after which the connection is unusable.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, ConnectionError::BadMessage(_))
    }
}

/// A message encoded once, to be sent many times as it is: an answer that is
/// the same for every peer (an entrance's heartbeat answer, thousands a
/// second) need not be built and serialised again for each.
#[derive(Debug, Clone)]
pub struct Encoded(tungstenite::Utf8Bytes);

impl Encoded {
    pub fn new(message: &Message) -> Encoded {
        Encoded(message.encode().into())
    }
}

/// A typed message connection over any byte stream.
#[derive(Debug)]
pub struct Connection<S> {
    ws: WebSocketStream<S>,
    strikes: u32,
    keepalive: Option<Keepalive>,
}

/// When the peer was last heard from, for [`Connection::with_keepalive`].
#[derive(Debug, Clone, Copy)]
struct Keepalive {
    interval: Duration,
    heard: tokio::time::Instant,
    pinged: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Connection {
            ws,
            strikes: 0,
            keepalive: None,
        }
    }

    /// Pings the peer after `interval` without a frame from it, and ends the
    /// session ([`ConnectionError::Silent`]) when nothing, not even the pong,
    /// arrives within another `interval`: a peer whose network vanished
    /// without a FIN does not hold a session (and its memory) forever.
    /// Takes effect while [`Connection::recv`] is waited on.
    pub fn with_keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = Some(Keepalive {
            interval,
            heard: tokio::time::Instant::now(),
            pinged: false,
        });
        self
    }

    /// The next frame, pinging a quiet peer when a keepalive is set. Cancel
    /// safe: what was heard and whether a ping went out live in `self`.
    async fn next_frame(
        &mut self,
    ) -> Result<Option<Result<WsMessage, tungstenite::Error>>, ConnectionError> {
        loop {
            let Some(keepalive) = self.keepalive else {
                return Ok(self.ws.next().await);
            };
            let wait = if keepalive.pinged { 2 } else { 1 };
            let deadline = keepalive.heard + keepalive.interval * wait;
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(frame) => {
                    self.keepalive = Some(Keepalive {
                        heard: tokio::time::Instant::now(),
                        pinged: false,
                        ..keepalive
                    });
                    return Ok(frame);
                }
                Err(_) if !keepalive.pinged => {
                    self.keepalive = Some(Keepalive {
                        pinged: true,
                        ..keepalive
                    });
                    self.ws.send(WsMessage::Ping(Bytes::new())).await?;
                }
                Err(_) => {
                    self.close_with(CloseCode::Away, "no answer to ping").await;
                    return Err(ConnectionError::Silent(keepalive.interval * 2));
                }
            }
        }
    }

    /// The next message. `Ok(None)` is a clean close by the peer.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, ConnectionError> {
        loop {
            let Some(frame) = self.next_frame().await? else {
                return Ok(None);
            };
            let decoded = match frame {
                Ok(WsMessage::Text(text)) if text.len() > MAX_TEXT_MESSAGE => {
                    Err(ConnectionError::TooLarge {
                        size: text.len(),
                        max: MAX_TEXT_MESSAGE,
                    })
                }
                Ok(WsMessage::Text(text)) => Message::decode(&text)
                    .map(|m| Some(Incoming::Message(m)))
                    .map_err(ConnectionError::from),
                Ok(WsMessage::Binary(bytes)) => Ok(Some(Incoming::Binary(bytes))),
                Ok(WsMessage::Close(_)) => Ok(None),
                // tungstenite answers pings itself.
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    Ok(None)
                }
                Err(tungstenite::Error::Capacity(
                    tungstenite::error::CapacityError::MessageTooLong { size, max_size },
                )) => {
                    // Refused at its frame header: the rest is never read, so
                    // the stream is unusable; say why before closing.
                    self.close_with(CloseCode::Size, "message too large").await;
                    Err(ConnectionError::TooLarge {
                        size,
                        max: max_size,
                    })
                }
                Err(e) => Err(ConnectionError::Ws(e)),
            };
            return match decoded {
                Err(ConnectionError::BadMessage(e)) => {
                    self.strikes += 1;
                    if self.strikes >= MAX_CONSECUTIVE_ERRORS {
                        self.close_with(CloseCode::Policy, "too many malformed messages")
                            .await;
                        Err(ConnectionError::TooManyErrors(self.strikes))
                    } else {
                        Err(ConnectionError::BadMessage(e))
                    }
                }
                other => {
                    if matches!(other, Ok(Some(_))) {
                        self.strikes = 0;
                    }
                    other
                }
            };
        }
    }

    pub async fn send(&mut self, message: &Message) -> Result<(), ConnectionError> {
        self.ws.send(WsMessage::text(message.encode())).await?;
        Ok(())
    }

    /// Sends a message encoded beforehand with [`Encoded::new`].
    pub async fn send_encoded(&mut self, message: &Encoded) -> Result<(), ConnectionError> {
        self.ws.send(WsMessage::Text(message.0.clone())).await?;
        Ok(())
    }

    /// Sends a message built outside [`Message`]: the answers shaped for the
    /// original 2017 peers (`crate::protocol::legacy`).
    pub async fn send_value(&mut self, message: &serde_json::Value) -> Result<(), ConnectionError> {
        self.ws.send(WsMessage::text(message.to_string())).await?;
        Ok(())
    }

    /// Sends one binary frame (a file frame).
    pub async fn send_binary(&mut self, frame: Bytes) -> Result<(), ConnectionError> {
        self.ws.send(WsMessage::Binary(frame)).await?;
        Ok(())
    }

    /// Closes with a reason the peer can log. Errors are ignored: the peer may
    /// already be gone, and there is nothing left to do about it.
    pub async fn close_with(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        // Bounded: when both ends close at once (a whole network stopping in one
        // process), each could otherwise wait for the other's acknowledgement.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(Some(frame))).await;
    }

    pub async fn close(&mut self) {
        self.close_with(CloseCode::Normal, "bye").await;
    }

    pub fn into_inner(self) -> WebSocketStream<S> {
        self.ws
    }
}

/// A client connection to a daemon.
pub type ClientConnection = Connection<MaybeTlsStream<TcpStream>>;

/// Turns the URL forms found in messages into a WebSocket URL: the original wrote
/// `http(s)://` for WebSocket endpoints, and we accept `ws(s)://` too.
pub fn websocket_url(url: &str) -> Result<String, ConnectionError> {
    let url = url.trim();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| ConnectionError::BadUrl(url.escape_debug().to_string()))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(ConnectionError::BadUrl(url.escape_debug().to_string())),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ConnectionError::BadUrl(url.escape_debug().to_string()));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// How a client connection is opened, beyond its URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The local address to connect from. Tests run many simulated peers on one
    /// machine from distinct loopback addresses (127.0.0.x), which the server
    /// locates and tells apart like real households.
    pub local_addr: Option<IpAddr>,
}

/// Opens a WebSocket to `url` with extra handshake headers (credentials), within
/// [`CONNECT_TIMEOUT`].
pub async fn connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<ClientConnection, ConnectionError> {
    connect_with(url, headers, ConnectOptions::default()).await
}

/// [`connect`] with [`ConnectOptions`].
pub async fn connect_with(
    url: &str,
    headers: &[(&str, &str)],
    options: ConnectOptions,
) -> Result<ClientConnection, ConnectionError> {
    open_upgraded(url, None, headers, options).await
}

/// [`connect`] to the daemon `expect`: over `wss://` it may prove itself with
/// its identity certificate instead of one a CA signed (a household box).
pub async fn connect_pinned(
    url: &str,
    expect: &NodeId,
    headers: &[(&str, &str)],
) -> Result<ClientConnection, ConnectionError> {
    open_upgraded(url, Some(expect), headers, ConnectOptions::default()).await
}

async fn open_upgraded(
    url: &str,
    expect: Option<&NodeId>,
    headers: &[(&str, &str)],
    options: ConnectOptions,
) -> Result<ClientConnection, ConnectionError> {
    let carries_token = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"));
    let dialled = dial(url, expect, options, carries_token).await?;
    let headers = headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    upgrade(url, dialled, headers).await
}

/// A connection opened for an upgrade: the request to send on it and the
/// connection's channel binding.
struct Dialled {
    request: tungstenite::handshake::client::Request,
    stream: MaybeTlsStream<TcpStream>,
    channel: Channel,
}

/// Opens the connection (TCP, then TLS for `wss://`) within [`CONNECT_TIMEOUT`],
/// to the daemon `expect` when the caller knows whom it dials (it may then
/// present its identity certificate). A token for another machine over a
/// plain connection is refused before anything is opened.
async fn dial(
    url: &str,
    expect: Option<&NodeId>,
    options: ConnectOptions,
    carries_token: bool,
) -> Result<Dialled, ConnectionError> {
    let ws_url = websocket_url(url)?;
    let fail = |cause: String| ConnectionError::Connect {
        url: url.to_owned(),
        cause,
    };
    let request = ws_url
        .as_str()
        .into_client_request()
        .map_err(|e| fail(e.to_string()))?;
    let tls = request.uri().scheme_str() == Some("wss");
    if carries_token && !crate::tokens::may_send(tls, request.uri().host().unwrap_or_default()) {
        return Err(ConnectionError::PlainToken(crate::tokens::refusal_to_send(
            url,
        )));
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, open(request.uri(), expect, options)).await {
        Err(_) => Err(fail(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(OpenFailure::Failed(e))) => Err(fail(e)),
        Ok(Err(OpenFailure::WrongIdentity(wrong))) => Err(ConnectionError::Unproven {
            url: url.to_owned(),
            expected: wrong.expected.clone(),
            cause: AuthError::WrongPeer {
                expected: wrong.expected.to_string(),
                found: wrong.found.to_string(),
            },
        }),
        Ok(Ok((stream, channel))) => Ok(Dialled {
            request,
            stream,
            channel,
        }),
    }
}

/// Upgrades a dialled connection to a WebSocket with `headers` on the upgrade
/// request, within [`CONNECT_TIMEOUT`].
async fn upgrade(
    url: &str,
    dialled: Dialled,
    headers: Vec<(String, String)>,
) -> Result<ClientConnection, ConnectionError> {
    let fail = |cause: String| ConnectionError::Connect {
        url: url.to_owned(),
        cause,
    };
    let Dialled {
        mut request,
        stream,
        ..
    } = dialled;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let value = HeaderValue::from_str(&value).map_err(|e| fail(e.to_string()))?;
        request.headers_mut().insert(name, value);
    }
    let upgrade = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()));
    match tokio::time::timeout(CONNECT_TIMEOUT, upgrade).await {
        Err(_) => Err(fail(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        Ok(Err(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .filter(|b| !b.is_empty());
            Err(fail(match body {
                Some(body) => format!("refused with {status}: {body}"),
                None => format!("refused with {status}"),
            }))
        }
        Ok(Err(e)) => Err(fail(e.to_string())),
        Ok(Ok((ws, _response))) => Ok(Connection::new(ws)),
    }
}

/// Why a connection did not open.
enum OpenFailure {
    Failed(String),
    /// TLS met the identity certificate of another daemon than the one dialled.
    WrongIdentity(WrongIdentity),
}

impl From<String> for OpenFailure {
    fn from(cause: String) -> OpenFailure {
        OpenFailure::Failed(cause)
    }
}

/// TCP to the URI's host (from `options.local_addr` when set), then TLS with the
/// process's trust (`core::tls`) for `wss://` — also accepting `expect`'s
/// identity certificate when given; with the TLS connection's RFC 9266
/// exporter value as its channel binding.
async fn open(
    uri: &tungstenite::http::Uri,
    expect: Option<&NodeId>,
    options: ConnectOptions,
) -> Result<(MaybeTlsStream<TcpStream>, Channel), OpenFailure> {
    let tls = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = match options.local_addr {
        Some(local) => connect_from(local, host, port).await,
        None => TcpStream::connect((host, port)).await,
    }
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok((MaybeTlsStream::Plain(tcp), Channel::Unbound));
    }
    let config = match expect {
        Some(expect) => crate::tls::client_config_for(expect),
        None => crate::tls::client_config(),
    }
    .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("`{host}` is not a name TLS can check: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| match wrong_identity(&e) {
            Some(wrong) => OpenFailure::WrongIdentity(wrong),
            None => OpenFailure::Failed(format!("TLS: {e}")),
        })?;
    let exporter = crate::tls::exporter(std::ops::Deref::deref(stream.get_ref().1))
        .map_err(|e| format!("TLS exporter: {e}"))?;
    Ok((
        MaybeTlsStream::Rustls(stream),
        Channel::TlsExporter(exporter),
    ))
}

/// The [`WrongIdentity`] a failed TLS handshake carries, if that is why.
fn wrong_identity(e: &std::io::Error) -> Option<WrongIdentity> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    let inner: &(dyn std::error::Error + 'static) = &*other.0;
    inner.downcast_ref::<WrongIdentity>().cloned()
}

/// A TCP connection to `host`:`port`, from `local`.
async fn connect_from(local: IpAddr, host: &str, port: u16) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address found");
    for remote in tokio::net::lookup_host((host, port)).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        match socket.connect(remote).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Largest nonce answer read: a challenge with its proof is well under 2 KiB.
const MAX_CHALLENGE: usize = 16 << 10;

/// `GET /dandelion/nonce?peer=&nonce=` on the very connection that will be
/// upgraded (HTTP/1.1 keep-alive), so a daemon whose TLS ends in itself signs
/// this connection's exporter: a relay that forwards the request gets a proof
/// bound to its own connection, which the client rejects. Hands the connection
/// back for the upgrade.
async fn ask_nonce(
    dialled: Dialled,
    me: &NodeId,
    ours: &Nonce,
) -> Result<(Dialled, Challenge), String> {
    use http_body_util::BodyExt;
    let Dialled {
        request,
        stream,
        channel,
    } = dialled;
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn.without_shutdown());
    let ask = hyper::Request::get(format!("{NONCE_PATH}?peer={me}&nonce={}", ours.as_str()))
        .header(hyper::header::HOST, authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(ask).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_CHALLENGE)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    drop(sender);
    let parts = conn
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    if !parts.read_buf.is_empty() {
        return Err("the daemon sent more than its nonce".to_owned());
    }
    let challenge: Challenge =
        serde_json::from_slice(&body).map_err(|e| format!("the nonce does not decode: {e}"))?;
    let dialled = Dialled {
        request,
        stream: parts.io.into_inner(),
        channel,
    };
    Ok((dialled, challenge))
}

/// Opens a mutually authenticated WebSocket to the daemon `expect` at `url`, on
/// one connection: asks for the daemon's nonce while sending one of our own,
/// checks the daemon's proof that it is `expect` — bound to this connection
/// when TLS ends in the daemon — and only then signs the daemon's nonce for
/// `expect` and upgrades, presenting that proof (and `bearer`, a join or admin
/// token, when given). A daemon that cannot prove it is `expect` gets no
/// signature and no token: [`ConnectionError::Unproven`].
pub async fn connect_as(
    url: &str,
    expect: &NodeId,
    identity: &Identity,
    bearer: Option<&str>,
) -> Result<ClientConnection, ConnectionError> {
    connect_as_with(url, expect, identity, bearer, ConnectOptions::default()).await
}

/// [`connect_as`] with [`ConnectOptions`].
pub async fn connect_as_with(
    url: &str,
    expect: &NodeId,
    identity: &Identity,
    bearer: Option<&str>,
    options: ConnectOptions,
) -> Result<ClientConnection, ConnectionError> {
    let fail = |cause: String| ConnectionError::Connect {
        url: url.to_owned(),
        cause,
    };
    let unproven = |cause: AuthError| ConnectionError::Unproven {
        url: url.to_owned(),
        expected: expect.clone(),
        cause,
    };
    let ours = Nonce::random().map_err(|e| fail(e.to_string()))?;
    let dialled = dial(url, Some(expect), options, bearer.is_some()).await?;
    let asked = tokio::time::timeout(CONNECT_TIMEOUT, ask_nonce(dialled, identity.id(), &ours));
    let (dialled, challenge) = match asked.await {
        Err(_) => {
            return Err(fail(format!(
                "fetching a handshake nonce: no answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(fail(format!("fetching a handshake nonce: {e}"))),
        Ok(Ok(asked)) => asked,
    };
    if &challenge.id != expect {
        return Err(unproven(AuthError::WrongPeer {
            expected: expect.to_string(),
            found: challenge.id.to_string(),
        }));
    }
    // Both proofs sign this connection when TLS ends in the daemon (it says
    // so, and its proof shows it); behind a TLS-terminating proxy the nonces
    // alone.
    let channel = match challenge.channel.as_deref() {
        Some(CHANNEL_TLS_EXPORTER) => dialled.channel,
        _ => Channel::Unbound,
    };
    let theirs = challenge
        .proof
        .as_ref()
        .ok_or_else(|| unproven(AuthError::NoServerProof))?;
    auth::verify_from(
        theirs,
        expect,
        &Claim::session_server(identity.id(), &ours).on(channel),
    )
    .map_err(unproven)?;
    let proof = identity.prove(&Claim::session_client(expect, &challenge.nonce).on(channel));
    let mut headers: Vec<(String, String)> = proof
        .headers()
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(token) = bearer {
        headers.push(("authorization".to_owned(), format!("Bearer {token}")));
    }
    upgrade(url, dialled, headers).await
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;
    use crate::protocol::{Goodbye, Header};

    fn goodbye() -> Message {
        Message::Goodbye(Goodbye {
            header: Header::new(NodeId::parse("box-f4090467bdc047eb9c35080fa9ed6291").unwrap()),
            reason: Some("test".into()),
        })
    }

    async fn pair() -> (ClientConnection, Connection<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            Connection::new(
                tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config()))
                    .await
                    .unwrap(),
            )
        });
        let client = connect(&format!("http://{addr}/dandelion/ws/"), &[("x-test", "1")])
            .await
            .unwrap();
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn typed_messages_and_binary_frames_cross_a_real_socket() {
        let (mut client, mut server) = pair().await;
        client.send(&goodbye()).await.unwrap();
        client
            .send_binary(Bytes::from_static(b"<Dandelion>{}</Dandelion>"))
            .await
            .unwrap();
        assert_eq!(
            server.recv().await.unwrap(),
            Some(Incoming::Message(goodbye()))
        );
        assert_eq!(
            server.recv().await.unwrap(),
            Some(Incoming::Binary(Bytes::from_static(
                b"<Dandelion>{}</Dandelion>"
            )))
        );
        client.close().await;
        assert_eq!(
            server.recv().await.unwrap(),
            None,
            "a clean close is Ok(None)"
        );
    }

    #[tokio::test]
    async fn garbage_is_reported_then_the_peer_is_cut_off() {
        let (client, mut server) = pair().await;
        let mut raw = client.into_inner();
        for _ in 0..MAX_CONSECUTIVE_ERRORS {
            raw.send(WsMessage::text("not json")).await.unwrap();
        }
        for _ in 1..MAX_CONSECUTIVE_ERRORS {
            let err = server.recv().await.unwrap_err();
            assert!(!err.is_fatal(), "{err}");
            assert_eq!(
                err.to_string(),
                "bad message: not valid JSON: expected ident at line 1 column 2"
            );
        }
        let err = server.recv().await.unwrap_err();
        assert!(err.is_fatal());
        assert_eq!(
            err.to_string(),
            "peer sent 5 malformed messages in a row; disconnecting"
        );
        // The client sees the policy close with its reason.
        let mut reason = None;
        while let Some(Ok(m)) = raw.next().await {
            if let WsMessage::Close(frame) = m {
                reason = frame.map(|f| f.reason.to_string());
                break;
            }
        }
        assert_eq!(reason.as_deref(), Some("too many malformed messages"));
    }

    #[test]
    fn urls_in_the_originals_forms_are_accepted() {
        assert_eq!(
            websocket_url("http://127.0.0.1:7070/dandelion/ws/").unwrap(),
            "ws://127.0.0.1:7070/dandelion/ws/"
        );
        assert_eq!(websocket_url("https://h:1/x").unwrap(), "wss://h:1/x");
        assert_eq!(websocket_url("wss://h/x").unwrap(), "wss://h/x");
        for bad in ["ftp://h/x", "127.0.0.1:7070", "http:///x", ""] {
            assert!(websocket_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_refused_handshake_says_why() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let body = "join token missing";
            let reply = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            tcp.write_all(reply.as_bytes()).await.unwrap();
        });
        let err = connect(&format!("ws://{addr}/dandelion/ws"), &[])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot connect to ws://{addr}/dandelion/ws: refused with 401 Unauthorized: join token missing"
            )
        );
    }
}
