//! Content steering over HTTP ([`super::steering`] decides): the multivariant
//! playlist, the steering manifest computed for each viewer, and a stream's
//! media playlist as each box's pathway.
//!
//! Viewers need no token, as for the playlist itself: each answer shows only
//! boxes holding the stream asked for, as redirects do. Each is computed from
//! memory (the records and the directory) and the playlist's bytes; nothing a
//! viewer sends is fetched, stored or signed, and a box ID or name that is not
//! known only gets a `404`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dandelion_core::ids::NodeId;
use dandelion_core::paths::url_path;
use dandelion_core::proxies;

use super::api::{cors, error, is_playlist, viewer_base};
use super::directory::Directory;
use super::jobs::{Known, Origin};
use super::pathway_cache::{Sources, Which};
use super::redirect::holders;
use super::steering::{
    Asking, Held, MAX_WINDOW, Pathway, bandwidth, choose_pathways, durations, manifest_path,
    multivariant as multivariant_text, pathway_path, resolve, rewrite, segment_uris,
};
use super::{Publisher, now_secs};
use crate::listener::Remote;

/// Larger playlists are not steered: a live window is a few kilobytes.
const MAX_PLAYLIST_BYTES: u64 = 1 << 20;
/// The query parameter hls.js names its current pathway in when it reloads
/// the manifest.
pub(super) const PATHWAY_QUERY: &str = "_HLS_pathway";

/// Who asks, as far as steering cares.
pub(super) struct Viewer {
    /// The publisher's origin as this viewer reaches it.
    pub(super) base: String,
    pub(super) ip: IpAddr,
    /// Whether the viewer's page is https (no plain-http box for it).
    pub(super) tls: bool,
}

fn viewer(p: &Publisher, headers: &HeaderMap, remote: &Remote) -> Result<Viewer, Refused> {
    let base = viewer_base(p, headers, remote).ok_or_else(|| {
        Refused(
            StatusCode::BAD_REQUEST,
            "the request names no usable Host (or set publisher.public_url)".into(),
        )
    })?;
    let proxies = &p.config.trusted_proxies;
    Ok(Viewer {
        base,
        ip: proxies::client_ip(remote.addr.ip(), headers, proxies),
        tls: proxies::client_used_tls(remote.tls, remote.addr.ip(), headers, proxies),
    })
}

/// A request steering cannot answer, and why; a browser may read why.
#[derive(Debug)]
pub struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut r = error(self.0, self.1);
        cors(r.headers_mut());
        r
    }
}

/// The record of `name` if it is a playlist small enough to steer.
fn steerable(p: &Publisher, name: &str) -> Result<Arc<Known>, Refused> {
    let known = p
        .records
        .known(name)
        .filter(|_| is_playlist(name))
        .ok_or_else(|| not_found(name))?;
    if known.job.size > MAX_PLAYLIST_BYTES {
        return Err(Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("`{}` is too big to steer", name.escape_debug()),
        ));
    }
    Ok(known)
}

fn not_found(name: &str) -> Refused {
    Refused(
        StatusCode::NOT_FOUND,
        format!("no playlist named `{}`", name.escape_debug()),
    )
}

/// The text of a steerable playlist, with its record, when its bytes are in
/// memory: the viewers' path ([`super::front`]) never waits for the store.
pub(super) fn text_in_memory(p: &Publisher, name: &str) -> Option<(Arc<Known>, String)> {
    let known = steerable(p, name).ok()?;
    if known.job.origin != Origin::Store {
        return None;
    }
    let bytes = p.origin_cache.get(name, &known.job.sha256)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some((known, text))
}

/// A media playlist the publisher holds: the record its text is of, and the text.
async fn playlist(p: &Publisher, name: &str) -> Result<(Arc<Known>, String), Refused> {
    let known = steerable(p, name)?;
    let bytes = match known.job.origin {
        Origin::Store => match p.origin_cache.get(name, &known.job.sha256) {
            Some(b) => b,
            None => match p.records.origin(name).await {
                Ok(Some(b)) => {
                    p.origin_cache.put(name, &known.job.sha256, b.clone());
                    b
                }
                Ok(None) => return Err(not_found(name)),
                Err(e) => return Err(Refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
            },
        },
        Origin::File => match tokio::fs::read(p.origin_path(name)).await {
            Ok(b) => Bytes::from(b),
            Err(_) => return Err(not_found(name)),
        },
    };
    Ok((known, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Counts a playlist the publisher wrote for one viewer as the playlists it
/// serves itself are.
pub(super) fn count_playlist(p: &Publisher, name: &str, sent: usize) {
    let sent = u64::try_from(sent).unwrap_or(u64::MAX);
    p.metrics.playlist_bytes.inc_by(sent);
    p.served_itself(name, sent);
}

fn playlist_response(p: &Publisher, name: &str, body: String) -> Response {
    count_playlist(p, name, body.len());
    steering_response(body, "application/vnd.apple.mpegurl")
}

/// A steering answer through hyper: changes with every placement, so never
/// cached, and read by players on other origins.
fn steering_response(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    cors(h);
    r
}

/// The multivariant playlist of `name`, whose media playlist reads `text`.
/// Kept for the next viewer, as pathway playlists are ([`multivariant_kept`]).
pub(super) fn multivariant_body(
    p: &Publisher,
    v: &Viewer,
    name: &str,
    (playlist, text): (Arc<Known>, &str),
) -> Arc<str> {
    let mut segments = Vec::new();
    let sizes: Vec<(f64, u64)> = durations(text)
        .into_iter()
        .filter_map(|(d, uri)| {
            let segment = resolve(name, uri)?;
            let known = p.records.known(&segment);
            let size = known.as_ref().map(|k| k.job.size);
            segments.push((segment, known));
            Some((d, size?))
        })
        .collect();
    let body: Arc<str> = multivariant_text(
        &format!("{}/{}", v.base, url_path(name)),
        &format!("{}{}", v.base, manifest_path(name)),
        bandwidth(&sizes),
    )
    .into();
    let which = Which {
        playlist: name,
        box_id: None,
        base: &v.base,
        tls: v.tls,
    };
    let sources = Sources {
        from: playlist,
        segments,
        until: u64::MAX,
    };
    p.pathways.put(&which, body.clone(), false, sources);
    body
}

/// The multivariant playlist of `name` as written for an earlier viewer, if
/// the playlist and the sizes of its segments it was written from are
/// unchanged ([`super::pathway_cache`]).
pub(super) fn multivariant_kept(p: &Publisher, v: &Viewer, name: &str) -> Option<Arc<str>> {
    let which = Which {
        playlist: name,
        box_id: None,
        base: &v.base,
        tls: v.tls,
    };
    let kept = p.pathways.get(&which, &p.records, now_secs())?;
    Some(kept.body.clone())
}

/// The steering manifest of `name` for viewer `v`, now on pathway `current`.
pub(super) fn manifest_body(
    p: &Publisher,
    v: &Viewer,
    name: &str,
    text: &str,
    current: Option<&str>,
    dir: &Directory,
) -> String {
    let now = now_secs();
    // A steered stream keeps its segments together from now on.
    p.homes().steered(name, now);
    let mut window: Vec<String> = segment_uris(text)
        .filter_map(|u| resolve(name, u))
        .collect();
    window.drain(..window.len().saturating_sub(MAX_WINDOW));
    let viewer_at = p.locate(v.ip);
    let per_segment: Vec<_> = window
        .iter()
        .map(|seg| {
            p.records
                .known(seg)
                .map(|k| holders(dir, &k.placements, viewer_at, now))
                .unwrap_or_default()
        })
        .collect();
    let ordered = choose_pathways(
        &per_segment,
        &Asking {
            now,
            https: v.tls,
            admit_probation: p.admit_probation(),
            ip: v.ip,
            current,
        },
    );
    let pathways: Vec<Pathway> = ordered
        .into_iter()
        .map(|h| Pathway {
            playlist_url: format!("{}{}", v.base, pathway_path(&h.box_id, name)),
            box_id: h.box_id,
        })
        .collect();
    super::steering::manifest(&pathways, &format!("{}{}", v.base, manifest_path(name))).to_string()
}

/// The pathway playlist of `name` on box `box_id` as written for an earlier
/// viewer, if it is still true ([`super::pathway_cache`]); `None` also when the
/// directory does not know the box.
pub(super) fn pathway_kept(
    p: &Publisher,
    v: &Viewer,
    box_id: &NodeId,
    name: &str,
    dir: &Directory,
) -> Option<Arc<str>> {
    let on_dir = dir.get(box_id)?;
    let now = now_secs();
    let which = Which {
        playlist: name,
        box_id: Some(box_id),
        base: &v.base,
        tls: v.tls,
    };
    let kept = p.pathways.get(&which, &p.records, now)?;
    if kept.to_box {
        // Viewers fetch from it directly now: keep it probed every second.
        on_dir.redirected_at.set(now);
    }
    Some(kept.body.clone())
}

/// The media playlist `text` of `name` (whose record is `playlist`) as the
/// pathway of box `box_id`: every segment it holds as its URL there and the
/// rest as the publisher's own. Kept for the next viewer ([`pathway_kept`]).
/// `None` when the directory does not know the box: only a box the publisher
/// knows is a pathway, and one it forgot answers `404`, which makes a player
/// on it move to another.
pub(super) fn pathway_body(
    p: &Publisher,
    v: &Viewer,
    box_id: &NodeId,
    name: &str,
    (playlist, text): (Arc<Known>, &str),
    dir: &Directory,
) -> Option<Arc<str>> {
    let on_dir = dir.get(box_id)?;
    let now = now_secs();
    let box_text = box_id.to_string();
    let mut to_box = false;
    let mut segments = Vec::new();
    let mut until = u64::MAX;
    let dir_of = name.rsplit_once('/').map_or("", |(d, _)| d);
    let body = rewrite(text, &mut |uri| {
        let Some(segment) = resolve(name, uri) else {
            if uri.contains("://") || uri.starts_with("//") {
                return (uri.to_owned(), Held::Foreign);
            }
            // Not a name the publisher could hold; kept where it pointed.
            return (
                format!("{}/{}/{uri}", v.base, url_path(dir_of)),
                Held::Foreign,
            );
        };
        // Whether the box holds it, not whether the box is well now: a URI
        // must not change while the segment is listed. The manifest steers
        // players away from a box that fails, and a dead box fails their
        // fetches, which moves them too.
        let known = p.records.known(&segment);
        let on_box = known.as_ref().and_then(|k| {
            k.placements.iter().find(|pl| {
                pl.box_id == box_text
                    && pl.expires_at > now
                    && (!v.tls || pl.url.starts_with("https://"))
            })
        });
        let written = match on_box {
            Some(pl) => {
                to_box = true;
                until = until.min(pl.expires_at);
                (pl.url.clone(), Held::OnBox)
            }
            None => (
                format!("{}/{}", v.base, url_path(&segment)),
                Held::Publisher,
            ),
        };
        segments.push((segment, known));
        written
    });
    if to_box {
        // Viewers fetch from it directly now: keep it probed every second.
        on_dir.redirected_at.set(now);
    }
    let body: Arc<str> = body.into();
    let which = Which {
        playlist: name,
        box_id: Some(box_id),
        base: &v.base,
        tls: v.tls,
    };
    let sources = Sources {
        from: playlist,
        segments,
        until,
    };
    p.pathways.put(&which, body.clone(), to_box, sources);
    Some(body)
}

/// `GET /dandelion/steer/<playlist>`: the multivariant playlist a steering
/// player opens instead of the playlist itself.
pub async fn multivariant(
    State(p): State<Arc<Publisher>>,
    Path(name): Path<String>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let v = viewer(&p, &headers, &remote)?;
    if let Some(kept) = multivariant_kept(&p, &v, &name) {
        return Ok(playlist_response(&p, &name, kept.to_string()));
    }
    let (known, text) = playlist(&p, &name).await?;
    let body = multivariant_body(&p, &v, &name, (known, &text));
    Ok(playlist_response(&p, &name, body.to_string()))
}

/// `GET /dandelion/steering/<playlist>`: this viewer's steering manifest.
pub async fn manifest(
    State(p): State<Arc<Publisher>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let v = viewer(&p, &headers, &remote)?;
    let (_, text) = playlist(&p, &name).await?;
    let current = query.get(PATHWAY_QUERY).map(String::as_str);
    let body = manifest_body(&p, &v, &name, &text, current, &*p.directory.read().await);
    Ok(steering_response(body, "application/json"))
}

/// `GET /dandelion/pathway/<box>/<playlist>`: the media playlist as the
/// pathway of one box ([`pathway_body`]).
pub async fn pathway(
    State(p): State<Arc<Publisher>>,
    Path((box_id, name)): Path<(String, String)>,
    ConnectInfo(remote): ConnectInfo<Remote>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let v = viewer(&p, &headers, &remote)?;
    let no_such = || Refused(StatusCode::NOT_FOUND, "no such pathway".into());
    let box_id = box_id.parse::<NodeId>().map_err(|_| no_such())?;
    {
        let dir = p.directory.read().await;
        if dir.get(&box_id).is_none() {
            return Err(no_such());
        }
        if let Some(kept) = pathway_kept(&p, &v, &box_id, &name, &dir) {
            return Ok(playlist_response(&p, &name, kept.to_string()));
        }
    }
    let (known, text) = playlist(&p, &name).await?;
    let dir = p.directory.read().await;
    let body = pathway_body(&p, &v, &box_id, &name, (known, &text), &dir).ok_or_else(no_such)?;
    Ok(playlist_response(&p, &name, body.to_string()))
}
