//! Simple plain-HTTP `GET`s and `HEAD`s answered before hyper sees the
//! connection: the box's files with sendfile(2) ([`crate::boxnode::sendfile`]),
//! the publisher's redirects ([`crate::publisher::front`]).
//!
//! Nearly every request either role sees from viewers is one of those, and
//! hyper and axum cost several times nginx's CPU per request for them (the
//! copy of each body byte on the box, the router, middleware and per-request
//! allocations on the publisher). So a role reads the request heads of a plain
//! connection itself and answers what it can here:
//!
//! - HTTP/1.1 `GET` or `HEAD`, with no `Range`, no conditional header, no
//!   credentials, no body and no upgrade;
//! - that the role's [`Answer`] takes.
//!
//! Everything else — the first request that is not simple, a head that does
//! not parse or does not fit — goes to hyper with the bytes read so far
//! ([`crate::rewind`]), and hyper serves the connection from then on. So
//! errors, ranges, conditionals and every other endpoint keep exactly one
//! implementation; an [`Answer`] only sends what the hyper path would.
//!
//! Request heads are read within `limits.header_read_timeout`, which is also
//! how long an idle keep-alive connection waits, and none is read after
//! shutdown began.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::listener::{Io, Remote};
use crate::server::Front;

/// Longest request head read here; a longer one goes to hyper, which has its own
/// limit and answers `431`.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request answered here; more go to hyper.
const MAX_HEADERS: usize = 32;

/// What a complete request head asks for, as far as this path cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not complete yet: read more.
    Partial,
    /// A simple request; its head is `len` bytes.
    Simple { len: usize, request: SimpleGet },
    /// Anything else, including heads that do not parse: hyper's.
    Other,
}

/// A `GET` or `HEAD` with nothing but the target to it.
#[derive(Debug, PartialEq, Eq)]
pub struct SimpleGet {
    /// The target's path (not decoded), without its query; starts with `/`.
    pub path: String,
    pub head_only: bool,
    /// The client asked to close after this response.
    pub close: bool,
    /// A proxy said who the client is (`Forwarded`, `X-Forwarded-*`,
    /// `X-Real-IP`): an answer that depends on the client is hyper's, which
    /// knows which proxies to believe (`trusted_proxies`).
    pub forwarded: bool,
    /// The `Host` header, as sent.
    pub host: Option<String>,
    /// The target's query, without the `?`, not decoded.
    pub query: Option<String>,
}

/// A role's answers on this path.
pub trait Answer: Send + Sync + 'static {
    /// What was decided and opened for one request.
    type Ready: Send;

    /// What to answer `request` with, or `None` for hyper to answer it. Runs
    /// inline on the connection's task: no waiting here.
    fn prepare(&self, request: &SimpleGet, remote: &Remote) -> Option<Self::Ready>;

    /// Sends the answer. An error ends the connection.
    fn send<'a>(
        &'a self,
        io: &'a mut Io,
        request: &'a SimpleGet,
        ready: Self::Ready,
    ) -> BoxFuture<'a, io::Result<()>>;
}

/// Every [`Answer`] is a role's [`Front`]: the simple requests of a plain
/// connection go through [`serve`] first.
impl<A: Answer> Front for A {
    fn serve(
        self: Arc<Self>,
        io: Io,
        remote: Remote,
        stop: CancellationToken,
        header_timeout: Duration,
    ) -> BoxFuture<'static, Option<(Io, Bytes)>> {
        Box::pin(async move { serve(&*self, io, remote, stop, header_timeout).await })
    }
}

/// Decides what the head at the start of `buf` asks for.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => match simple(&request) {
            Some(request) => Parsed::Simple { len, request },
            None => Parsed::Other,
        },
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => Parsed::Other,
    }
}

fn simple(request: &httparse::Request<'_, '_>) -> Option<SimpleGet> {
    if request.version != Some(1) {
        return None;
    }
    let head_only = match request.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = request.path?;
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return None;
    }
    let (mut close, mut forwarded, mut host) = (false, false, None);
    for header in request.headers.iter() {
        let name = header.name;
        let value = std::str::from_utf8(header.value).ok()?;
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return None;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return None; // two: which one counts is hyper's business
            }
            host = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("content-length") {
            if value.trim() != "0" {
                return None;
            }
        } else if passes_to_hyper(name) {
            return None;
        } else if name.eq_ignore_ascii_case("forwarded")
            || name.eq_ignore_ascii_case("x-real-ip")
            || (name.len() > 12 && name[..12].eq_ignore_ascii_case("x-forwarded-"))
        {
            forwarded = true;
        }
    }
    Some(SimpleGet {
        path: path.to_owned(),
        head_only,
        close,
        forwarded,
        host,
        query,
    })
}

/// Headers whose meaning this path does not implement.
fn passes_to_hyper(name: &str) -> bool {
    let lower = |prefix: &str| {
        name.len() >= prefix.len()
            && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    lower("if-")
        || lower("x-dandelion-")
        || [
            "range",
            "authorization",
            "transfer-encoding",
            "expect",
            "upgrade",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Answers the simple requests on `io` with `answer` until one is not, then
/// gives the connection back with the bytes read but not answered; `None`
/// when the connection is done.
pub async fn serve<A: Answer>(
    answer: &A,
    mut io: Io,
    remote: Remote,
    stop: CancellationToken,
    header_timeout: Duration,
) -> Option<(Io, Bytes)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let deadline = tokio::time::Instant::now() + header_timeout;
        let (len, request) = loop {
            match parse(&buf) {
                Parsed::Simple { len, request } => break (len, request),
                Parsed::Other => return Some((io, buf.freeze())),
                Parsed::Partial => {}
            }
            tokio::select! {
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
                () = tokio::time::sleep_until(deadline) => return None,
                () = stop.cancelled(), if buf.is_empty() => return None,
            }
        };
        let Some(ready) = answer.prepare(&request, &remote) else {
            return Some((io, buf.freeze()));
        };
        buf.advance(len);
        if let Err(e) = answer.send(&mut io, &request, ready).await {
            tracing::debug!(path = %request.path, "answer ended early: {e}");
            return None;
        }
        if request.close || stop.is_cancelled() {
            let _ = io.shutdown().await;
            return None;
        }
    }
}

/// Writes all of `bytes`.
pub async fn write_all(io: &mut Io, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = io.write(bytes).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = bytes.get(n..).unwrap_or_default();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_gets_and_heads_are_simple() {
        let get = "GET /p/live/seg%201.ts?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: hls\r\n\r\n";
        assert_eq!(
            parse(format!("{get}GET /next").as_bytes()),
            Parsed::Simple {
                len: get.len(),
                request: SimpleGet {
                    path: "/p/live/seg%201.ts".into(),
                    head_only: false,
                    close: false,
                    forwarded: false,
                    host: Some("a".into()),
                    query: Some("x=1".into()),
                }
            }
        );
        assert!(matches!(
            parse(
                b"HEAD /a.ts HTTP/1.1\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
            ),
            Parsed::Simple {
                request: SimpleGet {
                    head_only: true,
                    close: true,
                    ..
                },
                ..
            }
        ));
        assert_eq!(parse(b"GET /a.ts HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial);
        for proxy in [
            "X-Forwarded-For: 10.0.0.1",
            "forwarded: for=10.0.0.1",
            "X-Real-IP: 1.2.3.4",
        ] {
            let head = format!("GET /a.ts HTTP/1.1\r\n{proxy}\r\n\r\n");
            assert!(
                matches!(parse(head.as_bytes()), Parsed::Simple { request, .. } if request.forwarded),
                "{proxy}"
            );
        }
        assert_eq!(percent_decode("seg%201.ts").as_deref(), Some("seg 1.ts"));
        assert_eq!(percent_decode("seg%2"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn everything_with_more_meaning_goes_to_hyper() {
        for head in [
            "GET /a.ts HTTP/1.0\r\n\r\n",
            "POST /a.ts HTTP/1.1\r\n\r\n",
            "OPTIONS /a.ts HTTP/1.1\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nif-none-match: \"x\"\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nIf-Modified-Since: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nX-Dandelion-ID: x\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /a.ts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://host/a.ts HTTP/1.1\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nBad Header\r\n\r\n",
            "GET /a.ts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "\u{16}\u{3}\u{1}garbage",
        ] {
            assert_eq!(parse(head.as_bytes()), Parsed::Other, "{head}");
        }
        let many = format!("GET /a.ts HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(40));
        assert_eq!(parse(many.as_bytes()), Parsed::Other, "too many headers");
        let long = format!("GET /a.ts HTTP/1.1\r\nX-A: {}", "b".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()), Parsed::Other, "too long");
    }
}
