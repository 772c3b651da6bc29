//! Plain-HTTP `GET` and `HEAD` of whole stored files, answered with sendfile(2).
//!
//! Almost every request a box sees is a viewer's plain `GET` of a segment. Through
//! hyper, each body byte is copied from the file (or the memory cache) into the
//! socket: on the bench's 1 MiB files that copy alone was 40 % of the box's CPU
//! and left it at 2.4× nginx's CPU per request. nginx sends files with
//! sendfile(2), which moves pages from the page cache to the socket without the
//! copy; hyper owns its writes and cannot. So the box answers the simple
//! requests of a plain connection itself ([`crate::heads`]) when they ask for a
//! stored, unexpired file, a download slot is free and the file opens; it only
//! ever answers `200` with the same headers the hyper path sends
//! ([`cache::validators`], [`rules`], CORS).
//!
//! The household controls hold as on the hyper path: the download slot is held
//! until the last byte went out, the upload cap is taken in [`serve::CHUNK`]
//! grants before each is sent, and the traffic counters count what the kernel
//! reports sent.

use std::io;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

use super::BoxState;
use super::cache;
use super::rules;
use super::serve;
use super::storage::now_secs;
use crate::heads::{Answer, SimpleGet};
use crate::listener::{Io, Remote};

/// The box's [`crate::server::Front`]: answers simple file requests with sendfile.
#[derive(Debug)]
pub struct FileFront {
    state: Arc<BoxState>,
}

impl FileFront {
    pub fn new(state: Arc<BoxState>) -> FileFront {
        FileFront { state }
    }
}

/// A file this path committed to answering.
#[derive(Debug)]
pub struct Opened {
    member: String,
    file: std::fs::File,
    len: u64,
    head: Vec<u8>,
    _slot: OwnedSemaphorePermit,
}

impl Answer for FileFront {
    type Ready = Opened;

    /// The file and the head of its `200`, or `None` for hyper to answer
    /// (not a viewer URL, not stored, no slot free). The open and fstat are
    /// a file on the box's own disk, done inline as nginx does them: a few
    /// microseconds, less than the hop to tokio's blocking pool.
    fn prepare(&self, request: &SimpleGet, _remote: &Remote) -> Option<Opened> {
        let state = &self.state;
        let member = serve::member_of(&request.path)?;
        let entry = state.storage.get(&member)?;
        let slot = state.limits.try_download()?;
        let file = std::fs::File::open(state.storage.root().join(&member)).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() {
            return None;
        }
        let (etag, last_modified) = cache::validators(&meta).ok()?;
        let ttl_left = entry.expires.saturating_sub(now_secs());
        let head = response_head(&Head {
            content_type: rules::content_type(&member),
            len: meta.len(),
            etag: &etag,
            last_modified: &last_modified,
            cache_control: &rules::cache_control(&member, ttl_left),
            date: &httpdate::fmt_http_date(std::time::SystemTime::now()),
            close: request.close,
        });
        // As in serve.rs: a HEAD (a serve probe) is not a viewer's request.
        if !request.head_only {
            state.traffic.request(&member);
        }
        Some(Opened {
            member,
            file,
            len: meta.len(),
            head,
            _slot: slot,
        })
    }

    fn send<'a>(
        &'a self,
        io: &'a mut Io,
        request: &'a SimpleGet,
        opened: Opened,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.send_file(io, request, opened))
    }
}

impl FileFront {
    /// Sends the head, then the body under the upload cap.
    async fn send_file(&self, io: &mut Io, request: &SimpleGet, opened: Opened) -> io::Result<()> {
        let body = if request.head_only { 0 } else { opened.len };
        let mut head = opened.head.as_slice();
        while !head.is_empty() {
            let n = if body > 0 {
                io.send_more(head).await?
            } else {
                tokio::io::AsyncWriteExt::write(io, head).await?
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
                    .bytes(&opened.member, u64::try_from(n).unwrap_or(u64::MAX));
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
