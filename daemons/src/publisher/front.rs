//! Viewers' redirects answered before hyper ([`crate::heads`]).
//!
//! A live stream's viewers ask the publisher for every segment; through hyper
//! and axum each `302` cost 2.3 times nginx's CPU for `return 302` even with
//! the records in memory (docs/performance.md, "Sixth pass"). Here a simple
//! `GET` or `HEAD` of a placed file on a plain connection is answered with one
//! write of a head built from memory, with the same decision and headers as
//! [`super::api`]'s `view`. Everything else goes to hyper: playlists and files
//! the origin serves, requests through proxies (what they say of the viewer is
//! `trusted_proxies`' business), names hyper routes elsewhere, and any moment
//! the directory is being written.

use std::io;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::api::{EXPOSE_HEADERS, is_playlist, repr_digest_text};
use super::redirect::choose_url;
use super::{Publisher, now_secs};
use crate::heads::{self, Answer, SimpleGet};
use crate::listener::{Io, Remote};

/// The publisher's [`crate::server::Front`]: answers viewers' redirects.
#[derive(Debug)]
pub struct RedirectFront {
    p: Arc<Publisher>,
}

impl RedirectFront {
    pub fn new(p: Arc<Publisher>) -> RedirectFront {
        RedirectFront { p }
    }
}

/// Names whose paths hyper routes to something else than a file.
fn routed_elsewhere(name: &str) -> bool {
    matches!(name, "healthz" | "metrics")
        || name.starts_with("api/")
        || name.starts_with("dandelion/")
}

impl Answer for RedirectFront {
    /// The whole response.
    type Ready = Vec<u8>;

    fn prepare(&self, request: &SimpleGet, remote: &Remote) -> Option<Vec<u8>> {
        if request.forwarded {
            return None;
        }
        let name = heads::percent_decode(request.path.strip_prefix('/')?)?;
        if routed_elsewhere(&name) || is_playlist(&name) {
            return None;
        }
        let p = &self.p;
        let known = p.records.known(&name)?;
        let now = now_secs();
        let viewer_at = p.locate(remote.addr.ip());
        let admit_probation = p.admit_probation();
        let location = {
            let dir = p.directory.try_read().ok()?;
            choose_url(
                &dir,
                &known.placements,
                viewer_at,
                now,
                remote.tls,
                admit_probation,
            )?
        };
        // As the hyper path: a URL that is no header value is not sent.
        if location.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return None;
        }
        p.metrics.redirects.inc();
        let mut head = format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncache-control: no-cache\r\n\
             access-control-allow-origin: *\r\naccess-control-expose-headers: {EXPOSE_HEADERS}\r\n\
             content-length: 0\r\ndate: {}\r\n",
            httpdate::fmt_http_date(std::time::SystemTime::now())
        );
        if let Some(digest) = repr_digest_text(&known.job.sha256) {
            head.push_str("repr-digest: ");
            head.push_str(&digest);
            head.push_str("\r\n");
        }
        if request.close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        Some(head.into_bytes())
    }

    fn send<'a>(
        &'a self,
        io: &'a mut Io,
        _request: &'a SimpleGet,
        head: Vec<u8>,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { heads::write_all(io, &head).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_keeps_its_own_routes() {
        for name in ["healthz", "metrics", "api/files", "dandelion/console"] {
            assert!(routed_elsewhere(name), "{name}");
        }
        for name in ["live/seg1.ts", "healthz.ts", "apis/x", "metrics/seg.ts"] {
            assert!(!routed_elsewhere(name), "{name}");
        }
    }
}
