//! Viewers' redirects and playlists answered before hyper ([`crate::heads`]).
//!
//! A live stream's viewers ask the publisher for every segment; through hyper
//! and axum each `302` cost 2.3 times nginx's CPU for `return 302` even with
//! the records in memory (docs/performance.md, "Sixth pass"). Here a simple
//! `GET` or `HEAD` of a placed file on a plain connection is answered with one
//! write of a head built from memory, with the same decision and headers as
//! [`super::api`]'s `view`; so is a file the publisher serves itself — a
//! playlist, or a file no box holds yet — when its body is in memory
//! ([`super::origin_cache`]), with one write of head and body. Everything else
//! goes to hyper: origin files not read since they were pushed or too big to
//! keep, requests through proxies (what they say of the viewer is
//! `trusted_proxies`' business), names hyper routes elsewhere, and any moment
//! the directory is being written. Content steering's playlists and
//! manifests ([`super::steering_api`]) are answered here too, from the same
//! memory, when the playlist they are made from is in it.

use std::io;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use dandelion_core::ids::NodeId;

use super::api::{EXPOSE_HEADERS, base_for, is_playlist, repr_digest_text};
use super::redirect::choose_url;
use super::steering_api::{
    PATHWAY_QUERY, Viewer, count_playlist, manifest_body, multivariant_body, multivariant_kept,
    pathway_body, pathway_kept, text_in_memory,
};
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

    /// The whole response of a file the publisher serves itself, head and
    /// body, when its body is in memory for the job's current hash; the same
    /// headers as hyper's `from_store`.
    fn served_from_memory(
        &self,
        name: &str,
        job: &super::jobs::Job,
        request: &SimpleGet,
    ) -> Option<Vec<u8>> {
        if job.origin != super::jobs::Origin::Store {
            return None;
        }
        let body = self.p.origin_cache.get(name, &job.sha256)?;
        let playlist = is_playlist(name);
        let content_type = if playlist {
            PLAYLIST
        } else {
            dandelion_core::media::content_type(name)
        };
        let mut out = ok_head(content_type, body.len());
        end_head(&mut out, Some(&job.sha256), request);
        let mut out = out.into_bytes();
        let sent = u64::try_from(body.len()).unwrap_or(u64::MAX);
        if playlist {
            self.p.metrics.playlist_bytes.inc_by(sent);
        } else {
            self.p.metrics.origin_bytes.inc_by(sent);
        }
        self.p.served_itself(name, sent);
        if !request.head_only {
            out.extend_from_slice(&body);
        }
        Some(out)
    }

    /// A content-steering answer ([`super::steering_api`]) when the
    /// playlist it is made from is in memory; `rest` is the request's path
    /// after `/dandelion/`, not decoded. Everything it cannot answer (an
    /// unknown name or box, a playlist not in memory, the directory being
    /// written) goes to hyper, which answers it or says why not.
    fn steering(&self, rest: &str, request: &SimpleGet, remote: &Remote) -> Option<Vec<u8>> {
        let p = &self.p;
        let v = Viewer {
            base: base_for(p, request.host.as_deref(), remote.tls)?,
            ip: remote.addr.ip(),
            tls: remote.tls,
        };
        let (content_type, body, name): (_, Arc<str>, _) =
            if let Some(raw) = rest.strip_prefix("steer/") {
                let name = heads::percent_decode(raw)?;
                let body = match multivariant_kept(p, &v, &name) {
                    Some(kept) => kept,
                    None => {
                        let (known, text) = text_in_memory(p, &name)?;
                        multivariant_body(p, &v, &name, (known, &text))
                    }
                };
                (PLAYLIST, body, Some(name))
            } else if let Some(raw) = rest.strip_prefix("steering/") {
                let name = heads::percent_decode(raw)?;
                let (_, text) = text_in_memory(p, &name)?;
                let current = request.query.as_deref().and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == PATHWAY_QUERY)
                        .map(|(_, v)| v.into_owned())
                });
                let dir = p.directory.try_read().ok()?;
                let body = manifest_body(p, &v, &name, &text, current.as_deref(), &dir);
                ("application/json", body.into(), None)
            } else if let Some(raw) = rest.strip_prefix("pathway/") {
                let (box_id, name) = raw.split_once('/')?;
                let box_id = heads::percent_decode(box_id)?.parse::<NodeId>().ok()?;
                let name = heads::percent_decode(name)?;
                let dir = p.directory.try_read().ok()?;
                let body = match pathway_kept(p, &v, &box_id, &name, &dir) {
                    Some(kept) => kept,
                    None => {
                        let (known, text) = text_in_memory(p, &name)?;
                        pathway_body(p, &v, &box_id, &name, (known, &text), &dir)?
                    }
                };
                (PLAYLIST, body, Some(name))
            } else {
                return None;
            };
        if let Some(name) = name {
            count_playlist(p, &name, body.len());
        }
        let mut out = ok_head(content_type, body.len());
        end_head(&mut out, None, request);
        let mut out = out.into_bytes();
        if !request.head_only {
            out.extend_from_slice(body.as_bytes());
        }
        Some(out)
    }
}

const PLAYLIST: &str = "application/vnd.apple.mpegurl";

/// The start of a `200` head this path writes, with the headers hyper's
/// answers to viewers carry.
fn ok_head(content_type: &str, len: usize) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\
         content-length: {len}\r\ncache-control: no-cache\r\n\
         access-control-allow-origin: *\r\naccess-control-expose-headers: {EXPOSE_HEADERS}\r\n\
         date: {}\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    )
}

/// The end of every head this path writes: the file's `Repr-Digest` if it is
/// a file, the close the client asked for, and the blank line.
fn end_head(head: &mut String, sha256: Option<&str>, request: &SimpleGet) {
    if let Some(digest) = sha256.and_then(repr_digest_text) {
        head.push_str("repr-digest: ");
        head.push_str(&digest);
        head.push_str("\r\n");
    }
    if request.close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
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
        let read_at = std::time::Instant::now();
        if request.forwarded {
            return None;
        }
        // Routed on the path as sent, as hyper does.
        if let Some(rest) = request.path.strip_prefix("/dandelion/") {
            return self.steering(rest, request, remote);
        }
        let name = heads::percent_decode(request.path.strip_prefix('/')?)?;
        if routed_elsewhere(&name) {
            return None;
        }
        let p = &self.p;
        let known = p.records.known(&name)?;
        if is_playlist(&name) {
            return self.served_from_memory(&name, &known.job, request);
        }
        let now = now_secs();
        let viewer_at = p.locate(remote.addr.ip());
        let admit_probation = p.admit_probation();
        let chosen = {
            let dir = p.directory.try_read().ok()?;
            choose_url(
                &dir,
                &known.placements,
                viewer_at,
                now,
                remote.tls,
                admit_probation,
            )
        };
        let Some(location) = chosen else {
            // No box may serve it: the origin of last resort.
            return self.served_from_memory(&name, &known.job, request);
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
        end_head(&mut head, Some(&known.job.sha256), request);
        p.metrics.redirect.observe_since(read_at);
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
