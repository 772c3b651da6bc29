//! HLS Content Steering with a real player: hls.js in headless Chromium opens
//! the publisher's steered multivariant playlist of a live stream, fetches its
//! segments straight from the boxes of its pathways (no redirect per segment),
//! and when the box of its pathway is killed, moves to another box by itself
//! and plays on.
//!
//! Needs ffmpeg (the encoder), and Chromium with the npm packages in
//! `tests/browser` (`.ci/run` installs all of them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::process::Command;
use std::time::Duration;

use dandelion_core::http::HttpClient;
use dandelion_testkit::browser::{finished, hls_js, require_hls_js};
use dandelion_testkit::media::{ffmpeg, live_encoder, push_watch, require_ffmpeg};
use dandelion_testkit::network::NetworkBuilder;
use dandelion_testkit::process::{Running, binary};
use dandelion_testkit::{counter_sum, wait_for};
use serde_json::Value;

/// How long hls.js plays: long enough to settle on a box, lose it and play on.
const PLAY_SECONDS: u32 = 40;

#[test]
fn a_steered_player_fetches_from_boxes_directly_and_leaves_a_dead_pathway_by_itself() {
    require_ffmpeg();
    require_hls_js();
    let root = tempfile::tempdir().unwrap();
    let mut net = NetworkBuilder::new(root.path(), 3).start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let get = |url: &str| {
        rt.block_on(http.get(url, &[]))
            .ok()
            .filter(|r| r.status == 200)
    };
    let origin = net.publisher.origin();
    wait_for(
        "the publisher to know three boxes",
        Duration::from_secs(30),
        || {
            let h: Value = get(&format!("{origin}/healthz"))?.json().ok()?;
            (h["known_boxes"] == 3).then_some(())
        },
    );

    let live = root.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let mut encoder = ffmpeg();
    live_encoder(&mut encoder, &live, &root.path().join("encoder.log"));
    let _encoder = Running::spawn(&mut encoder);
    let token = std::fs::read_to_string(net.publisher.data_dir().join("admin.token")).unwrap();
    let mut watcher = push_watch(&live, &origin, &token, Some(2), root.path());
    let _watcher = Running::spawn(&mut watcher);

    // The stream lives on two boxes, each holding the whole window: the
    // manifest offers both as pathways, before the origin.
    let manifest_url = format!("{origin}/dandelion/steering/live/index.m3u8");
    let pathways = |m: &Value| -> Vec<String> {
        m["PATHWAY-PRIORITY"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = wait_for(
        "the manifest to offer two box pathways",
        Duration::from_secs(40),
        || {
            let m: Value = get(&manifest_url)?.json().ok()?;
            let p = pathways(&m);
            (p.len() == 3 && p[2] == "origin").then_some(m)
        },
    );
    let pathway_playlist =
        first["PATHWAY-CLONES"][0]["URI-REPLACEMENT"]["PER-VARIANT-URIS"]["main"]
            .as_str()
            .unwrap()
            .to_owned();
    let listed = get(&pathway_playlist).unwrap().text();
    assert!(
        net.boxes
            .iter()
            .any(|b| listed.lines().any(|l| l.starts_with(&b.origin()))),
        "a pathway playlist lists no segment on a box:\n{listed}"
    );
    let multivariant = get(&format!("{origin}/dandelion/steer/live/index.m3u8"))
        .unwrap()
        .text();
    assert!(
        multivariant.contains("#EXT-X-CONTENT-STEERING:SERVER-URI=")
            && multivariant.contains("PATHWAY-ID=\"origin\""),
        "{multivariant}"
    );
    let box_origins: Vec<String> = net.boxes.iter().map(|b| b.origin()).collect();
    // Bytes each box served: viewers' fetches (the publisher's serve probes
    // are HEADs, without a body).
    let served = |i: usize| {
        counter_sum(
            &get(&format!("{}/metrics", box_origins[i]))
                .map(|r| r.text())
                .unwrap_or_default(),
            "dandelion_box_served_bytes_total",
        )
    };
    let all_served = || (0..box_origins.len()).map(served).collect::<Vec<f64>>();
    let redirects = || {
        counter_sum(
            &get(&format!("{origin}/metrics")).unwrap().text(),
            "dandelion_redirects_total",
        )
    };
    let redirects_before = redirects();
    let served_before = all_served();

    let browser_out = root.path().join("hls.js.out");
    let mut browser = Command::new("node");
    hls_js(
        &mut browser,
        &format!("{origin}/dandelion/steer/live/index.m3u8"),
        PLAY_SECONDS,
    )
    .stdout(File::create(&browser_out).unwrap())
    .stderr(File::create(root.path().join("hls.js.err")).unwrap());
    let mut browser = Running::spawn(&mut browser);

    // Once the player fetches from its pathway's box (a few segments' worth
    // of bytes), that box dies.
    const SEGMENTS_WORTH: f64 = 150_000.0;
    let victim = wait_for(
        "the player to fetch segments from a box",
        Duration::from_secs(30),
        || {
            let now = all_served();
            (0..now.len()).find(|i| now[*i] >= served_before[*i] + SEGMENTS_WORTH)
        },
    );
    let victim_origin = box_origins[victim].clone();
    net.boxes[victim].kill9();
    let others: Vec<usize> = (0..box_origins.len()).filter(|i| *i != victim).collect();
    let others_before: f64 = others.iter().map(|i| served(*i)).sum();
    wait_for(
        "the player to fetch from another box",
        Duration::from_secs(20),
        || {
            let now: f64 = others.iter().map(|i| served(*i)).sum();
            (now >= others_before + SEGMENTS_WORTH).then_some(())
        },
    );

    let watched = finished(
        &mut browser,
        &browser_out,
        &root.path().join("hls.js.err"),
        Duration::from_secs(u64::from(PLAY_SECONDS) + 60),
    );
    let redirected = redirects() - redirects_before;
    eprintln!("hls.js: {watched:?}; {redirected} redirects");
    assert_eq!(watched.fatal, None, "hls.js gave up: {watched:?}");
    assert!(
        watched.stalls <= 1,
        "more than one stall for one dead pathway: {watched:?}"
    );
    assert!(
        watched.played >= f64::from(PLAY_SECONDS) - 10.0,
        "hls.js played only {:.1} s of {PLAY_SECONDS}: {watched:?}",
        watched.played
    );
    // Steered: nearly every segment came from a box's own URL, the victim's
    // until it died and another's after; redirects only while the first
    // manifest was on its way.
    let from_boxes: u64 = watched
        .origins
        .iter()
        .filter(|(o, _)| **o != origin)
        .map(|(_, n)| n)
        .sum();
    assert!(
        from_boxes * 10 >= watched.loaded * 8,
        "only {from_boxes} of {} segments came straight from boxes: {watched:?}",
        watched.loaded
    );
    assert!(
        watched.origins.get(&victim_origin).copied().unwrap_or(0) >= 3,
        "the player never used its first pathway: {watched:?}"
    );
    let last = watched.switches.last().unwrap();
    assert!(
        !last.ends_with(&victim_origin) && !last.ends_with(&origin),
        "the player did not end on another box: {watched:?}"
    );
    assert!(
        redirected * 4.0 <= watched.loaded as f64,
        "{redirected} redirects for {} segments: {watched:?}",
        watched.loaded
    );
}

/// What a viewer controls in a steering request — the `Host` it names, the
/// pathway and playlist it asks for, `_HLS_pathway` — changes only its own
/// answer, and never makes the publisher write a URL it did not derive.
#[test]
fn steering_answers_only_about_known_streams_and_boxes_and_never_echo_a_bad_host() {
    let root = tempfile::tempdir().unwrap();
    let net = NetworkBuilder::new(root.path(), 1).start();
    let origin = net.publisher.origin();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = HttpClient::default();
    let get = |url: &str, headers: &[(&str, &str)]| rt.block_on(http.get(url, headers)).unwrap();
    wait_for(
        "the publisher to know the box",
        Duration::from_secs(30),
        || {
            let h: Value = get(&format!("{origin}/healthz"), &[]).json().ok()?;
            (h["known_boxes"] == 1).then_some(())
        },
    );
    let live = root.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(
        live.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXTINF:2.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n#EXTINF:2.0,\nhttp://elsewhere.example/x.ts\n",
    )
    .unwrap();
    std::fs::write(live.join("seg0.ts"), vec![1u8; 5000]).unwrap();
    std::fs::write(live.join("seg1.ts"), vec![2u8; 5000]).unwrap();
    let token = std::fs::read_to_string(net.publisher.data_dir().join("admin.token")).unwrap();
    let pushed = dandelion_testkit::process::run(
        Command::new(binary("dandelion"))
            .arg("push")
            .arg(&live)
            .args(["--to", &origin, "--token", token.trim()])
            .env_remove("DANDELION_CONFIG"),
    );
    assert!(pushed.status.success(), "{pushed:?}");
    let manifest_url = format!("{origin}/dandelion/steering/live/index.m3u8");
    let manifest: Value = wait_for("the box to be a pathway", Duration::from_secs(30), || {
        let m: Value = get(&manifest_url, &[]).json().ok()?;
        (m["PATHWAY-PRIORITY"].as_array()?.len() == 2).then_some(m)
    });
    let box_id = manifest["PATHWAY-PRIORITY"][0].as_str().unwrap().to_owned();
    let box_origin = net.boxes[0].origin();

    // The box's pathway: its own URLs for what it holds, the foreign URL as
    // written, nothing else.
    // Until the box holds seg1 too, the playlist ends before it (its URI must
    // not change once listed).
    let pathway_url = format!("{origin}/dandelion/pathway/{box_id}/live/index.m3u8");
    let urls: Vec<String> = wait_for(
        "the pathway playlist to list both segments on the box",
        Duration::from_secs(20),
        || {
            let pathway = get(&pathway_url, &[]);
            assert_eq!(pathway.status, 200);
            let urls: Vec<String> = pathway
                .text()
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(str::to_owned)
                .collect();
            (urls.len() == 3).then_some(urls)
        },
    );
    assert!(
        urls[0].starts_with(&box_origin) && urls[1].starts_with(&box_origin),
        "{urls:?}"
    );
    assert_eq!(urls[2], "http://elsewhere.example/x.ts");

    // Plain requests are answered before hyper, from memory; a proxy's header
    // (from an address that is not a trusted proxy) sends the same request
    // through hyper. Both say the same.
    for path in [
        "/dandelion/steer/live/index.m3u8".to_owned(),
        format!("/dandelion/steering/live/index.m3u8?_HLS_pathway={box_id}"),
        format!("/dandelion/pathway/{box_id}/live/index.m3u8"),
    ] {
        let url = format!("{origin}{path}");
        let through_hyper = get(&url, &[("x-forwarded-for", "192.0.2.1")]);
        let fast = get(&url, &[]);
        assert_eq!(fast.status, 200, "{path}: {}", fast.text());
        assert_eq!(through_hyper.status, 200, "{path}");
        assert_eq!(fast.text(), through_hyper.text(), "{path}");
        for name in [
            "content-type",
            "content-length",
            "cache-control",
            "access-control-allow-origin",
            "access-control-expose-headers",
        ] {
            assert_eq!(
                fast.headers.get(name),
                through_hyper.headers.get(name),
                "{path}: {name} differs"
            );
            assert!(fast.headers.contains_key(name), "{path}: {name} is missing");
        }
    }

    // A pathway playlist is kept for the next viewer; a new playlist (the
    // stream moved on) is in the very next answer, on either path.
    std::fs::write(
        live.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
         #EXTINF:2.0,\nseg1.ts\n#EXTINF:2.0,\nseg2.ts\n",
    )
    .unwrap();
    let pushed = dandelion_testkit::process::run(
        Command::new(binary("dandelion"))
            .arg("push")
            .arg(live.join("index.m3u8"))
            .args(["--as", "live/index.m3u8"])
            .args(["--to", &origin, "--token", token.trim()])
            .env_remove("DANDELION_CONFIG"),
    );
    assert!(pushed.status.success(), "{pushed:?}");
    for headers in [&[][..], &[("x-forwarded-for", "192.0.2.1")][..]] {
        let text = get(&pathway_url, headers).text();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("seg0.ts"), "{text}");
        assert!(text.contains(&format!("{box_origin}/")), "{text}");
        assert!(
            !text.contains("seg2.ts"),
            "the box does not hold seg2: the pathway ends before it\n{text}"
        );
    }

    // A kept text is only ever the asker's own: one written for another
    // Host (another origin) is not served to it, whichever asked first.
    let steer_url = format!("{origin}/dandelion/steer/live/index.m3u8");
    for (host, other) in [
        ("a.example", "b.example:8080"),
        ("b.example:8080", "a.example"),
        ("a.example", "b.example:8080"),
    ] {
        let text = get(&steer_url, &[("host", host)]).text();
        assert!(
            text.contains(&format!("http://{host}/live/index.m3u8")),
            "{host}: {text}"
        );
        assert!(
            !text.contains(other),
            "{host} was sent {other}'s text: {text}"
        );
    }

    // A Host that would break out of a URL or a quoted attribute: refused.
    for host in ["evil\"x", "a b", "evil.example/path"] {
        for path in [
            "/dandelion/steer/live/index.m3u8",
            "/dandelion/steering/live/index.m3u8",
        ] {
            let r = get(&format!("{origin}{path}"), &[("host", host)]);
            assert_eq!(r.status, 400, "{host:?} {path}: {}", r.text());
            assert!(!r.text().contains("evil"), "{}", r.text());
        }
    }
    // Boxes the publisher does not know, names that are not playlists or not
    // known, traversal: refused.
    for path in [
        "/dandelion/pathway/box-00000000000000000000000000000000/live/index.m3u8",
        "/dandelion/pathway/not-a-box/live/index.m3u8",
        "/dandelion/steer/live/seg0.ts",
        "/dandelion/steering/live/missing.m3u8",
        "/dandelion/steer/../live/index.m3u8",
    ] {
        let r = get(&format!("{origin}{path}"), &[]);
        assert!(r.status == 404 || r.status == 400, "{path}: {}", r.status);
    }
    // `_HLS_pathway` naming anything: the same pathways, no echo.
    let m: Value = get(&format!("{manifest_url}?_HLS_pathway=%22evil"), &[])
        .json()
        .unwrap();
    assert_eq!(m["PATHWAY-PRIORITY"], manifest["PATHWAY-PRIORITY"]);
    assert!(!m.to_string().contains("evil"));
}
