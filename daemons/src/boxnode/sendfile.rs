//! Plain-HTTP `GET` and `HEAD` of whole stored files, answered with sendfile(2).
//!
//! Almost every request a box sees is a viewer's plain `GET` of a segment. Through
//! hyper, each body byte is copied from the file (or the memory cache) into the
//! socket: on the bench's 1 MiB files that copy alone was 40 % of the box's CPU
//! and left it at 2.4× nginx's CPU per request. nginx sends files with
//! sendfile(2), which moves pages from the page cache to the socket without the
//! copy; hyper owns its writes and cannot. So the box reads the request heads of
//! a plain connection itself ([`Front`]) and answers the simple ones here:
//!
//! - HTTP/1.1 `GET` or `HEAD` of a stored, unexpired file, with no `Range`, no
//!   conditional header, no credentials, no body and no upgrade;
//! - while a download slot is free and the file opens.
//!
//! Everything else — the first request that is not simple, TLS connections, a
//! head that does not parse or does not fit — goes to hyper with the bytes read
//! so far ([`crate::rewind`]), and hyper serves the connection from then on. So
//! 404s, 503s, ranges, conditionals, errors and the box's own endpoints keep
//! exactly one implementation; this path only ever answers `200` with the same
//! headers the hyper path sends ([`cache::validators`], [`rules`], CORS).
//!
//! The household controls hold as on the hyper path: the download slot is held
//! until the last byte went out, the upload cap is taken in [`serve::CHUNK`]
//! grants before each is sent, and the traffic counters count what the kernel
//! reports sent. Request heads are read within `limits.header_read_timeout`, which
//! is also how long an idle keep-alive connection waits, and none is read after
//! shutdown began.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::BoxState;
use super::cache;
use super::rules;
use super::serve;
use super::storage::now_secs;
use crate::listener::Io;
use crate::server::Front;

/// Longest request head read here; a longer one goes to hyper, which has its own
/// limit and answers `431`.
const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request answered here; more go to hyper.
const MAX_HEADERS: usize = 32;

/// The box's [`Front`]: answers simple file requests with sendfile.
#[derive(Debug)]
pub struct FileFront {
    state: Arc<BoxState>,
}

impl FileFront {
    pub fn new(state: Arc<BoxState>) -> FileFront {
        FileFront { state }
    }
}

impl Front for FileFront {
    fn serve(
        self: Arc<Self>,
        io: Io,
        stop: CancellationToken,
        header_timeout: Duration,
    ) -> BoxFuture<'static, Option<(Io, Bytes)>> {
        Box::pin(async move { self.connection(io, stop, header_timeout).await })
    }
}

/// What a complete request head asks for, as far as this path cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not complete yet: read more.
    Partial,
    /// A request this path answers; its head is `len` bytes.
    File { len: usize, request: FileRequest },
    /// Anything else, including heads that do not parse: hyper's.
    Other,
}

/// A whole-file request.
#[derive(Debug, PartialEq, Eq)]
pub struct FileRequest {
    pub member: String,
    pub head_only: bool,
    /// The client asked to close after this response.
    pub close: bool,
}

/// Decides what the head at the start of `buf` asks for.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => match file_request(&request) {
            Some(request) => Parsed::File { len, request },
            None => Parsed::Other,
        },
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => Parsed::Other,
    }
}

fn file_request(request: &httparse::Request<'_, '_>) -> Option<FileRequest> {
    if request.version != Some(1) {
        return None;
    }
    let head_only = match request.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = request.path?;
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    if !path.starts_with('/') {
        return None;
    }
    let member = serve::member_of(path)?;
    let mut close = false;
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
        } else if name.eq_ignore_ascii_case("content-length") {
            if value.trim() != "0" {
                return None;
            }
        } else if passes_to_hyper(name) {
            return None;
        }
    }
    Some(FileRequest {
        member,
        head_only,
        close,
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

/// A file this path committed to answering.
struct Opened {
    file: std::fs::File,
    len: u64,
    head: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

impl FileFront {
    async fn connection(
        &self,
        mut io: Io,
        stop: CancellationToken,
        header_timeout: Duration,
    ) -> Option<(Io, Bytes)> {
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            let deadline = tokio::time::Instant::now() + header_timeout;
            let (len, request) = loop {
                match parse(&buf) {
                    Parsed::File { len, request } => break (len, request),
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
            let Some(opened) = self.open(&request) else {
                // Not stored, no slot free, or gone meanwhile: hyper's answer.
                return Some((io, buf.freeze()));
            };
            buf.advance(len);
            if let Err(e) = self.send(&mut io, &request, opened).await {
                tracing::debug!(member = %request.member, "download ended early: {e}");
                return None;
            }
            if request.close || stop.is_cancelled() {
                let _ = io.shutdown().await;
                return None;
            }
        }
    }

    /// The file and the head of its `200`, or `None` for hyper to answer. The
    /// open and fstat are a file on the box's own disk, done inline as nginx
    /// does them: a few microseconds, less than the hop to tokio's blocking pool.
    fn open(&self, request: &FileRequest) -> Option<Opened> {
        let state = &self.state;
        let entry = state.storage.get(&request.member)?;
        let slot = state.limits.try_download()?;
        let file = std::fs::File::open(state.storage.root().join(&request.member)).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let (etag, last_modified) = cache::validators(&meta).ok()?;
        let ttl_left = entry.expires.saturating_sub(now_secs());
        let head = response_head(&Head {
            content_type: rules::content_type(&request.member),
            len: meta.len(),
            etag: &etag,
            last_modified: &last_modified,
            cache_control: &rules::cache_control(&request.member, ttl_left),
            date: &httpdate::fmt_http_date(std::time::SystemTime::now()),
            close: request.close,
        });
        state.traffic.request(&request.member);
        Some(Opened {
            file,
            len: meta.len(),
            head,
            _slot: slot,
        })
    }

    /// Sends the head, then the body under the upload cap.
    async fn send(&self, io: &mut Io, request: &FileRequest, opened: Opened) -> io::Result<()> {
        let body = if request.head_only { 0 } else { opened.len };
        let mut head = opened.head.as_slice();
        while !head.is_empty() {
            let n = if body > 0 {
                io.send_more(head).await?
            } else {
                io.write(head).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            head = head.get(n..).unwrap_or_default();
        }
        let limits = &self.state.limits;
        let grant = if limits.upload_cap.is_some() {
            serve::CHUNK as u64
        } else {
            u64::MAX
        };
        let mut offset = 0u64;
        while offset < body {
            let end = offset + (body - offset).min(grant);
            limits.wait_for(end - offset).await;
            while offset < end {
                let count = usize::try_from(end - offset).unwrap_or(usize::MAX);
                let n = io.send_file(&opened.file, &mut offset, count).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file became shorter while it was sent",
                    ));
                }
                self.state
                    .traffic
                    .bytes(&request.member, u64::try_from(n).unwrap_or(u64::MAX));
            }
        }
        Ok(())
    }
}

/// What a `200` for a whole file says.
struct Head<'a> {
    content_type: &'a str,
    len: u64,
    etag: &'a str,
    last_modified: &'a str,
    cache_control: &'a str,
    date: &'a str,
    close: bool,
}

/// The same headers as the hyper path's cached-file answer and CORS.
fn response_head(h: &Head<'_>) -> Vec<u8> {
    use std::fmt::Write;
    let mut head = String::with_capacity(512);
    let _ = write!(
        head,
        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\naccept-ranges: bytes\r\n\
         etag: {}\r\nlast-modified: {}\r\ncache-control: {}\r\naccess-control-allow-origin: *\r\n\
         access-control-expose-headers: {}\r\ndate: {}\r\n",
        h.content_type,
        h.len,
        h.etag,
        h.last_modified,
        h.cache_control,
        serve::EXPOSE_HEADERS,
        h.date,
    );
    if h.close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "publisher-0123456789abcdef0123456789abcdef";

    fn file(head: &str) -> Parsed {
        parse(head.replace("{ID}", ID).as_bytes())
    }

    #[test]
    fn plain_gets_and_heads_of_viewer_urls_are_answered_here() {
        let member = format!("{ID}/live/seg 1.ts");
        let get = "GET /{ID}/live/seg%201.ts?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: hls\r\n\r\n";
        assert_eq!(
            file(&format!("{get}GET /next")),
            Parsed::File {
                len: get.replace("{ID}", ID).len(),
                request: FileRequest {
                    member: member.clone(),
                    head_only: false,
                    close: false
                }
            }
        );
        assert!(matches!(
            file(
                "HEAD /{ID}/live/seg%201.ts HTTP/1.1\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
            ),
            Parsed::File {
                request: FileRequest {
                    head_only: true,
                    close: true,
                    ..
                },
                ..
            }
        ));
        assert_eq!(
            file("GET /{ID}/live/seg.ts HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        );
    }

    #[test]
    fn everything_with_more_meaning_goes_to_hyper() {
        for head in [
            "GET /{ID}/a.ts HTTP/1.0\r\n\r\n",
            "POST /{ID}/a.ts HTTP/1.1\r\n\r\n",
            "OPTIONS /{ID}/a.ts HTTP/1.1\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nif-none-match: \"x\"\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nIf-Modified-Since: Sun, 06 Dec 2026 00:00:00 GMT\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nX-Dandelion-ID: x\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /{ID}/a.ts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://host/{ID}/a.ts HTTP/1.1\r\n\r\n",
            "GET /{ID}/../etc/passwd HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /box-0123456789abcdef0123456789abcdef/a.ts HTTP/1.1\r\n\r\n",
            "GET /{ID}/a.ts HTTP/1.1\r\nBad Header\r\n\r\n",
            "\u{16}\u{3}\u{1}garbage",
        ] {
            assert_eq!(file(head), Parsed::Other, "{head}");
        }
        let many = format!("GET /{ID}/a.ts HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(40));
        assert_eq!(parse(many.as_bytes()), Parsed::Other, "too many headers");
        let long = format!("GET /{ID}/a.ts HTTP/1.1\r\nX-A: {}", "b".repeat(MAX_HEAD));
        assert_eq!(parse(long.as_bytes()), Parsed::Other, "too long");
    }

    #[test]
    fn the_head_says_what_the_hyper_path_says() {
        let head = response_head(&Head {
            content_type: "video/mp2t",
            len: 102_400,
            etag: "\"1.0-19000\"",
            last_modified: "Sun, 06 Dec 2026 00:00:00 GMT",
            cache_control: "public, max-age=60",
            date: "Sun, 06 Dec 2026 00:00:01 GMT",
            close: true,
        });
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.ends_with("connection: close\r\n\r\n"));
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        assert!(response.parse(text.as_bytes()).unwrap().is_complete());
        let get = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name == name)
                .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
        };
        assert_eq!(get("content-length").as_deref(), Some("102400"));
        assert_eq!(get("access-control-allow-origin").as_deref(), Some("*"));
        assert_eq!(get("etag").as_deref(), Some("\"1.0-19000\""));
    }
}
