//! HLS Content Steering (the "Content Steering" section of
//! draft-pantos-hls-rfc8216bis): what lets a player fetch a live stream's
//! segments straight from boxes, without a redirect per segment, and move to
//! another box by itself when one fails.
//!
//! A steered viewer opens `/dandelion/steer/<playlist>`, a multivariant
//! playlist the publisher writes around the stream's media playlist. Its one
//! variant is the **origin** pathway: the publisher's own media playlist, whose
//! segments redirect as for any player. Its `EXT-X-CONTENT-STEERING` names the
//! steering manifest, `/dandelion/steering/<playlist>`, which the player
//! reloads every [`TTL_SECS`]. The manifest is computed for the viewer asking:
//! one pathway per box that holds the stream's whole window
//! ([`whole_window`]), nearest and least loaded first, then the origin. Each
//! box pathway is a `PATHWAY-CLONES` entry of the origin whose
//! `PER-VARIANT-URIS` points at `/dandelion/pathway/<box>/<playlist>`: the
//! media playlist with every segment the box holds written as its absolute
//! URL on that box ([`rewrite`]), and any it does not (a segment still on its
//! way, or every one once the box fails its serve probes) as the publisher's
//! redirect URL, so a stale pathway still plays.
//!
//! Placement keeps a steered stream on the same boxes ([`super::homes`]), so
//! the boxes its newest segment went to hold the whole window once it has
//! rolled over. Players without steering (ffmpeg) keep using the plain
//! playlist and its redirects; nothing here changes them.

use std::collections::{BTreeSet, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use dandelion_core::ids::NodeId;
use dandelion_core::paths::{relative_path, url_path};
use serde_json::{Value, json};

use super::redirect::{Holder, in_order};

/// The pathway of the publisher itself: its media playlist, segments by
/// redirect. Always last, so a player that has penalised every box still plays.
pub const ORIGIN_PATHWAY: &str = "origin";
/// `STABLE-VARIANT-ID` of the one variant, the key of `PER-VARIANT-URIS`.
pub const VARIANT_ID: &str = "main";
/// How often players reload the steering manifest. A dead box is noticed by
/// the publisher within 3 s; a player on its pathway learns at the next
/// reload (and sooner from its own failed request, which makes it penalise
/// the pathway).
pub const TTL_SECS: u64 = 4;
/// Most box pathways in one manifest.
pub const MAX_PATHWAYS: usize = 4;
/// Most segments, the newest, a manifest looks at: a live window is a handful,
/// and a manifest is computed for every viewer every [`TTL_SECS`], so a long
/// (or ended) playlist must not cost a lookup per segment each time.
pub const MAX_WINDOW: usize = 32;
/// Used when no segment of the window says how many bits a second it needs.
const DEFAULT_BANDWIDTH: u64 = 2_000_000;

/// Under the publisher's origin: the multivariant playlist of `playlist`.
pub fn multivariant_path(playlist: &str) -> String {
    format!("/dandelion/steer/{}", url_path(playlist))
}

/// Under the publisher's origin: the steering manifest of `playlist`.
pub fn manifest_path(playlist: &str) -> String {
    format!("/dandelion/steering/{}", url_path(playlist))
}

/// Under the publisher's origin: `playlist` as the pathway of `box_id`.
pub fn pathway_path(box_id: &NodeId, playlist: &str) -> String {
    format!("/dandelion/pathway/{box_id}/{}", url_path(playlist))
}

/// The multivariant playlist a steered viewer opens: the stream's media
/// playlist as the origin pathway, and where the steering manifest is. The
/// URLs are absolute: the steering manifest may be loaded without a base.
pub fn multivariant(media_url: &str, manifest_url: &str, bandwidth: u64) -> String {
    format!(
        "#EXTM3U\n\
         #EXT-X-CONTENT-STEERING:SERVER-URI=\"{manifest_url}\",PATHWAY-ID=\"{ORIGIN_PATHWAY}\"\n\
         #EXT-X-STREAM-INF:BANDWIDTH={bandwidth},PATHWAY-ID=\"{ORIGIN_PATHWAY}\",STABLE-VARIANT-ID=\"{VARIANT_ID}\"\n\
         {media_url}\n"
    )
}

/// A box pathway of one viewer's manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Pathway {
    pub box_id: NodeId,
    /// The absolute URL of the stream's media playlist on this pathway.
    pub playlist_url: String,
}

/// The steering manifest: `pathways` in the viewer's order, then the origin.
pub fn manifest(pathways: &[Pathway], reload_url: &str) -> Value {
    let mut priority: Vec<String> = pathways.iter().map(|p| p.box_id.to_string()).collect();
    priority.push(ORIGIN_PATHWAY.to_owned());
    let clones: Vec<Value> = pathways
        .iter()
        .map(|p| {
            json!({
                "BASE-ID": ORIGIN_PATHWAY,
                "ID": p.box_id.to_string(),
                "URI-REPLACEMENT": { "PER-VARIANT-URIS": { VARIANT_ID: p.playlist_url } },
            })
        })
        .collect();
    json!({
        "VERSION": 1,
        "TTL": TTL_SECS,
        "RELOAD-URI": reload_url,
        "PATHWAY-PRIORITY": priority,
        "PATHWAY-CLONES": clones,
    })
}

/// The published name a URI in the playlist `playlist` refers to, when it is
/// one of the publisher's (relative, or an absolute path): query and fragment
/// dropped, percent-decoding undone, `..` resolved against the playlist's
/// directory.
pub fn resolve(playlist: &str, uri: &str) -> Option<String> {
    if uri.contains("://") || uri.starts_with("//") {
        return None;
    }
    let path = uri.split(['?', '#']).next()?;
    let path = crate::heads::percent_decode(path)?;
    let mut parts: Vec<&str> = Vec::new();
    if let Some(rest) = path.strip_prefix('/') {
        parts.extend(rest.split('/'));
    } else {
        parts.extend(
            playlist
                .rsplit_once('/')
                .map(|(d, _)| d)
                .into_iter()
                .flat_map(|d| d.split('/')),
        );
        parts.extend(path.split('/'));
    }
    let mut out: Vec<&str> = Vec::new();
    for part in parts {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    relative_path(&out.join("/")).ok()
}

/// The segment URIs of a media playlist, in order: its lines that are not
/// tags or blank.
pub fn segment_uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Where a pathway playlist sends a player for one URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// To the pathway's box, which holds it.
    OnBox,
    /// Where the playlist already pointed, outside the publisher.
    Foreign,
    /// To the publisher: the box does not hold it (yet).
    Publisher,
}

/// `text` as one box's pathway: every URI replaced by the URL `url_of` gives
/// for it — segment lines and the `URI="…"` of tags (`EXT-X-MAP`'s init
/// segment, keys, parts). The pathway playlist is served from another path
/// than the original, so a relative URI left as it was would resolve to
/// nothing.
///
/// A player reloading a live playlist requires each media sequence number to
/// keep its URI (hls.js fails the playlist otherwise). So the newest segments
/// the box does not hold yet are left out until it does, rather than listed
/// at the publisher's URL first and the box's later: the playlist ends before
/// the first [`Held::Publisher`] segment after the last [`Held::OnBox`] one.
/// A segment the box lacks before one it holds stays, at the publisher's URL.
/// A box that holds none (it died) keeps every segment, each at the
/// publisher's URL: the player's next reload sees every URI change, fails the
/// pathway and moves to another. An ended playlist (`EXT-X-ENDLIST`) is not
/// reloaded and keeps all its segments.
pub fn rewrite(text: &str, url_of: &mut dyn FnMut(&str) -> (String, Held)) -> String {
    let ended = text.lines().any(|l| l.trim() == "#EXT-X-ENDLIST");
    let mut out = String::with_capacity(text.len() * 2);
    // Where the output stood after each segment's line, and where its URL
    // sends the player.
    let mut segments: Vec<(usize, Held)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            out.push_str(line);
        } else if !trimmed.starts_with('#') {
            let (url, held) = url_of(trimmed);
            out.push_str(&url);
            out.push('\n');
            segments.push((out.len(), held));
            continue;
        } else {
            out.push_str(&rewrite_attribute(line, &mut |u| url_of(u).0));
        }
        out.push('\n');
    }
    if !ended && let Some(last) = segments.iter().rposition(|(_, h)| *h == Held::OnBox) {
        // Cut at the end of the segment before the first one held back, so
        // its tags go with it.
        let held_back = segments[last + 1..]
            .iter()
            .position(|(_, h)| *h == Held::Publisher);
        if let Some(k) = held_back {
            out.truncate(segments[last + k].0);
        }
    }
    out
}

/// A tag line with its `URI="…"` attributes replaced.
fn rewrite_attribute(line: &str, url_of: &mut dyn FnMut(&str) -> String) -> String {
    const KEY: &str = "URI=\"";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(KEY) {
        // Only a whole attribute name: `URI=` after `:` or `,`.
        let whole = at == 0 || matches!(rest.as_bytes().get(at - 1), Some(b':' | b','));
        let start = at + KEY.len();
        let Some(len) = rest[start..].find('"') else {
            break;
        };
        out.push_str(&rest[..start]);
        let uri = &rest[start..start + len];
        if whole {
            out.push_str(&url_of(uri));
        } else {
            out.push_str(uri);
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    out
}

/// The boxes that hold a stream's whole window: `holders[i]` serve the
/// window's segment `i`, oldest first. The newest segment does not count
/// unless it is the only one: it may still be on its way to its boxes, and a
/// pathway playlist sends a viewer the publisher's way for a segment its box
/// lacks.
pub fn whole_window(holders: &[Vec<NodeId>]) -> Vec<NodeId> {
    let counted = match holders.len() {
        0 => return Vec::new(),
        1 => holders,
        n => &holders[..n - 1],
    };
    let mut boxes: BTreeSet<NodeId> = counted[0].iter().cloned().collect();
    for segment in &counted[1..] {
        let here: HashSet<&NodeId> = segment.iter().collect();
        boxes.retain(|b| here.contains(b));
    }
    boxes.into_iter().collect()
}

/// The peak bits per second of the window's segments: `(duration, size)` per
/// segment where both are known. `BANDWIDTH` is required in a variant; with
/// one variant a player uses it for nothing but its first estimate.
pub fn bandwidth(segments: &[(f64, u64)]) -> u64 {
    segments
        .iter()
        .filter(|(d, _)| d.is_finite() && *d > 0.0)
        .map(|(d, size)| ((*size as f64) * 8.0 / d) as u64)
        .max()
        .filter(|b| *b > 0)
        .unwrap_or(DEFAULT_BANDWIDTH)
}

/// Each segment URI with its `#EXTINF` duration.
pub fn durations(text: &str) -> Vec<(f64, &str)> {
    let mut out = Vec::new();
    let mut duration = None;
    for line in text.lines().map(str::trim) {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            out.push((duration.take().unwrap_or(0.0), line));
        }
    }
    out
}

/// Who asks for a manifest, and when.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    pub now: u64,
    /// Whether the viewer's page is https: no plain-http box for it.
    pub https: bool,
    /// Whether this viewer may go to a box on probation although a measured
    /// one holds the stream (drawn as for redirects).
    pub admit_probation: bool,
    pub ip: std::net::IpAddr,
    /// The pathway the player says it is on (`_HLS_pathway`).
    pub current: Option<&'a str>,
}

/// The box pathways for one viewer, best first, at most [`MAX_PATHWAYS`]:
/// `per_segment[i]` are the holders of the window's segment `i`, oldest
/// first. A box is a pathway when it holds the whole window
/// ([`whole_window`], among copies viewers may be sent to); pathways are
/// ordered as redirects choose boxes, by their copies of the newest segment
/// the window counted, equal boxes in an order of the viewer's own
/// ([`spread`]), and the player's current pathway first while offered.
pub fn choose_pathways(per_segment: &[Vec<Holder>], asking: &Asking<'_>) -> Vec<Holder> {
    let now = asking.now;
    let usable: Vec<Vec<NodeId>> = per_segment
        .iter()
        .map(|hs| {
            hs.iter()
                .filter(|h| h.usable(now))
                .map(|h| h.box_id.clone())
                .collect()
        })
        .collect();
    let boxes = whole_window(&usable);
    let reference = match per_segment.len() {
        0 | 1 => 0,
        n => n - 2,
    };
    let candidates: Vec<Holder> = per_segment
        .get(reference)
        .map(|hs| {
            hs.iter()
                .filter(|h| boxes.contains(&h.box_id))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut ordered = in_order(
        &candidates,
        now,
        asking.https,
        asking.admit_probation,
        &|id| spread(asking.ip, id),
    );
    if let Some(current) = asking.current {
        current_first(&mut ordered, |h| h.box_id.as_str() == current);
    }
    ordered.truncate(MAX_PATHWAYS);
    ordered
}

/// The player's current pathway first (`_HLS_pathway`, which players add to
/// the manifest's URL), when it is still offered: a player moves when its box
/// fails or stops holding the stream, not each time the boxes' loads shift.
pub fn current_first<T>(ordered: &mut [T], is_current: impl Fn(&T) -> bool) {
    if let Some(i) = ordered.iter().position(is_current) {
        ordered[..=i].rotate_right(1);
    }
}

/// A number standing for one viewer, so boxes equal in every other respect
/// are tried in a different order by different viewers.
pub fn spread(viewer: std::net::IpAddr, box_id: &NodeId) -> u64 {
    let mut h = DefaultHasher::new();
    viewer.hash(&mut h);
    box_id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::parse(&format!("box-{n:032x}")).unwrap()
    }

    #[test]
    fn uris_resolve_against_the_playlist_and_foreign_ones_do_not() {
        assert_eq!(
            resolve("live/index.m3u8", "seg1.ts").as_deref(),
            Some("live/seg1.ts")
        );
        assert_eq!(
            resolve("live/index.m3u8", "seg%201.ts?x=1").as_deref(),
            Some("live/seg 1.ts")
        );
        assert_eq!(
            resolve("live/hd/index.m3u8", "../seg1.ts").as_deref(),
            Some("live/seg1.ts")
        );
        assert_eq!(
            resolve("live/index.m3u8", "/other/seg1.ts").as_deref(),
            Some("other/seg1.ts")
        );
        assert_eq!(resolve("index.m3u8", "seg1.ts").as_deref(), Some("seg1.ts"));
        assert_eq!(resolve("live/index.m3u8", "../../etc/passwd"), None);
        assert_eq!(resolve("live/index.m3u8", "http://cdn/seg1.ts"), None);
        assert_eq!(resolve("live/index.m3u8", "//cdn/seg1.ts"), None);
    }

    #[test]
    fn a_pathway_playlist_rewrites_segments_and_tag_uris_and_nothing_else() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MAP:URI=\"init.mp4\"\n\
                    #EXT-X-KEY:METHOD=AES-128,URI=\"k.key\",IV=0x1\n#EXT-X-DATERANGE:ID=\"a\",X-URI=\"keep\"\n\
                    #EXTINF:1.0,\nseg1.ts\n\n#EXTINF:1.0,\nseg2.ts\n";
        let out = rewrite(text, &mut |u| (format!("http://b/{u}"), Held::OnBox));
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MAP:URI=\"http://b/init.mp4\"\n\
             #EXT-X-KEY:METHOD=AES-128,URI=\"http://b/k.key\",IV=0x1\n#EXT-X-DATERANGE:ID=\"a\",X-URI=\"keep\"\n\
             #EXTINF:1.0,\nhttp://b/seg1.ts\n\n#EXTINF:1.0,\nhttp://b/seg2.ts\n"
        );
        assert_eq!(
            segment_uris(text).collect::<Vec<_>>(),
            ["seg1.ts", "seg2.ts"]
        );
    }

    #[test]
    fn a_segment_keeps_its_uri_from_one_reload_to_the_next() {
        let text = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:1,\na.ts\n#EXTINF:1,\nb.ts\n\
                    #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\n#EXTINF:1,\nc.ts\n#EXTINF:1,\nd.ts\n";
        let on = |held: &'static [&'static str]| {
            move |u: &str| {
                if held.contains(&u) {
                    (format!("http://box/{u}"), Held::OnBox)
                } else if u.starts_with("http") {
                    (u.to_owned(), Held::Foreign)
                } else {
                    (format!("http://pub/{u}"), Held::Publisher)
                }
            }
        };
        // The newest not on the box yet: left out, with their tags.
        assert_eq!(
            rewrite(text, &mut on(&["b.ts"])),
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:4\n#EXTINF:1,\nhttp://pub/a.ts\n#EXTINF:1,\nhttp://box/b.ts\n"
        );
        // A foreign URL never changes: it stays, up to the first held back.
        let foreign = "#EXTM3U\n#EXTINF:1,\na.ts\n#EXTINF:1,\nhttp://cdn/x.ts\n#EXTINF:1,\nb.ts\n#EXTINF:1,\nhttp://cdn/y.ts\n";
        assert_eq!(
            rewrite(foreign, &mut on(&["a.ts"])),
            "#EXTM3U\n#EXTINF:1,\nhttp://box/a.ts\n#EXTINF:1,\nhttp://cdn/x.ts\n"
        );
        // A box holding nothing: every segment, each at the publisher's URL.
        let dead = rewrite(text, &mut on(&[]));
        assert_eq!(dead.matches("http://pub/").count(), 4, "{dead}");
        // An ended playlist keeps its end.
        let ended = format!("{text}#EXT-X-ENDLIST\n");
        let out = rewrite(&ended, &mut on(&["a.ts"]));
        assert!(out.ends_with("http://pub/d.ts\n#EXT-X-ENDLIST\n"), "{out}");
    }

    #[test]
    fn a_pathway_is_a_box_that_holds_the_whole_window_but_the_newest() {
        assert!(whole_window(&[]).is_empty());
        assert_eq!(whole_window(&[vec![id(2), id(1)]]), [id(1), id(2)]);
        let window = [
            vec![id(1), id(2), id(3)],
            vec![id(2), id(1)],
            vec![id(1), id(2), id(4)],
            vec![id(4)],
        ];
        assert_eq!(whole_window(&window), [id(1), id(2)]);
        let window = [vec![id(1)], vec![id(2)], vec![id(1), id(2)]];
        assert!(whole_window(&window).is_empty());
    }

    #[test]
    fn the_manifest_lists_box_pathways_first_each_a_clone_of_the_origin() {
        let pathways = [Pathway {
            box_id: id(1),
            playlist_url: "http://pub/dandelion/pathway/b/live/index.m3u8".into(),
        }];
        let m = manifest(&pathways, "http://pub/dandelion/steering/live/index.m3u8");
        assert_eq!(m["VERSION"], 1);
        assert_eq!(m["TTL"], TTL_SECS);
        assert_eq!(m["PATHWAY-PRIORITY"], json!([id(1).to_string(), "origin"]));
        assert_eq!(m["PATHWAY-CLONES"][0]["BASE-ID"], "origin");
        assert_eq!(
            m["PATHWAY-CLONES"][0]["URI-REPLACEMENT"]["PER-VARIANT-URIS"][VARIANT_ID],
            pathways[0].playlist_url
        );
        let alone = manifest(&[], "u");
        assert_eq!(alone["PATHWAY-PRIORITY"], json!(["origin"]));
    }

    #[test]
    fn the_multivariant_playlist_names_the_origin_pathway_and_the_manifest() {
        let text = multivariant("http://pub/live/index.m3u8", "http://pub/m", 1_000);
        assert!(text.starts_with("#EXTM3U\n"));
        assert!(text.contains("SERVER-URI=\"http://pub/m\",PATHWAY-ID=\"origin\""));
        assert!(text.contains("BANDWIDTH=1000,PATHWAY-ID=\"origin\",STABLE-VARIANT-ID=\"main\""));
        assert!(text.ends_with("\nhttp://pub/live/index.m3u8\n"));
    }

    #[test]
    fn bandwidth_is_the_window_s_peak_and_durations_come_from_extinf() {
        assert_eq!(
            bandwidth(&[(2.0, 250_000), (1.0, 200_000), (0.0, 9)]),
            1_600_000
        );
        assert_eq!(bandwidth(&[]), DEFAULT_BANDWIDTH);
        let text =
            "#EXTM3U\n#EXTINF:1.5,title\na.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nb.ts\nc.ts\n";
        assert_eq!(
            durations(text),
            [(1.5, "a.ts"), (2.0, "b.ts"), (0.0, "c.ts")]
        );
    }

    fn holder(n: u8, url: &str) -> Holder {
        Holder {
            box_id: id(n),
            url: format!("{url}/f{n}"),
            live: true,
            serve: super::super::redirect::Serve::Serving,
            distance_km: None,
            load: 0.0,
            expires_at: 1_000,
            probation: false,
        }
    }

    #[test]
    fn pathways_are_boxes_with_the_whole_window_that_this_viewer_can_fetch() {
        let plain = |n| holder(n, "http://b");
        let tls = |n| holder(n, "https://b");
        let mut failing = plain(4);
        failing.serve = super::super::redirect::Serve::Failing;
        // Box 1 holds everything, box 2 misses the middle segment, box 3
        // everything over https, box 4 everything but fails its probes, box 5
        // only the newest (still on its way to the others).
        let window = vec![
            vec![plain(1), plain(2), tls(3), failing.clone()],
            vec![plain(1), tls(3), failing.clone()],
            vec![plain(1), plain(2), tls(3), failing, plain(5)],
        ];
        let asking = Asking {
            now: 10,
            https: false,
            admit_probation: false,
            ip: std::net::IpAddr::from([10, 0, 0, 1]),
            current: None,
        };
        let ids = |hs: Vec<Holder>| hs.into_iter().map(|h| h.box_id).collect::<Vec<_>>();
        let mut got = ids(choose_pathways(&window, &asking));
        got.sort();
        assert_eq!(got, [id(1), id(3)]);
        // An https page cannot fetch from a plain-http box.
        let https = Asking {
            https: true,
            ..asking
        };
        assert_eq!(ids(choose_pathways(&window, &https)), [id(3)]);
        // The player's pathway stays first while offered.
        for current in [id(1), id(3)] {
            let text = current.to_string();
            let sticky = Asking {
                current: Some(&text),
                ..asking
            };
            assert_eq!(ids(choose_pathways(&window, &sticky))[0], current);
        }
        // No more than MAX_PATHWAYS.
        let many: Vec<Vec<Holder>> = (0..3).map(|_| (1..=9).map(plain).collect()).collect();
        assert_eq!(choose_pathways(&many, &asking).len(), MAX_PATHWAYS);
    }

    #[test]
    fn a_player_stays_on_its_pathway_while_it_is_offered() {
        let mut order = [1, 2, 3, 4];
        current_first(&mut order, |n| *n == 3);
        assert_eq!(order, [3, 1, 2, 4]);
        current_first(&mut order, |n| *n == 9);
        assert_eq!(order, [3, 1, 2, 4]);
    }

    #[test]
    fn viewers_spread_over_equal_boxes() {
        let firsts: HashSet<u8> = (0..64u8)
            .map(|v| {
                let viewer = std::net::IpAddr::from([10, 0, 0, v]);
                (1..=3).min_by_key(|n| spread(viewer, &id(*n))).unwrap()
            })
            .collect();
        assert_eq!(firsts.len(), 3);
    }
}
