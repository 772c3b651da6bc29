//! Fixed state for tests and snapshots: a small network with one box in every
//! state, a publisher with files in every state, a box with files. Times are
//! fixed against [`NOW`] so snapshots never change by themselves.

use dandelion_core::console::{
    BoxNodeView, BoxState, BoxView, EntranceStatus, EntranceView, Event, FailureView, FileView,
    Hello, Level, OffloadRow, OffloadView, PlacementView, PublisherView, RankRow, StoredFile,
    Update,
};
use dandelion_core::protocol::GeoIp;

use crate::app::{App, Input, Net, Tokens};

pub const NOW: f64 = 1_800_000_000.0;

/// An ID shaped like a real one (32 hex digits), distinct in its first digits
/// as real ones are.
pub fn fixture_id(role: &str, n: u32) -> String {
    format!("{role}-{:08x}{:024x}", n.wrapping_mul(0x9e37_79b1), n)
}

pub fn geo(city: &str, region: &str, country: &str, loc: &str) -> GeoIp {
    GeoIp {
        city: Some(city.into()),
        region: Some(region.into()),
        country: Some(country.into()),
        loc: Some(loc.into()),
        ..GeoIp::default()
    }
}

pub fn box_view(n: u32, state: BoxState, geo: GeoIp) -> BoxView {
    BoxView {
        id: fixture_id("box", n),
        state,
        reason: match state {
            BoxState::Active => "heartbeating".into(),
            BoxState::Stale => "no heartbeat for 17s (3 missed)".into(),
            BoxState::Unreachable => "http://198.51.100.7:7071 refused the connection".into(),
            BoxState::Evicted => "flaky uplink".into(),
        },
        since: NOW - 75.0 * f64::from(n),
        legacy: false,
        first_seen: NOW - 3600.0,
        last_heartbeat: NOW - 2.0 * f64::from(n),
        expires_at: Some(NOW + 118.0),
        ban_until: None,
        observed_ip: Some(format!("198.51.100.{n}")),
        geo,
        geo_source: "geoip".into(),
        version: Some("0.1.0".into()),
        data_url: Some(format!("http://198.51.100.{n}:7071")),
        connect_ws: None,
        upload_rate: Some(u64::from(n) * 300_000),
        upload_cap: Some(2_000_000),
        free_storage: Some(8_000_000_000 / u64::from(n)),
        bytes_served: Some(u64::from(n) * 1_234_567_890),
    }
}

pub fn entrance_view(preservation: bool) -> EntranceView {
    EntranceView {
        status: EntranceStatus {
            self_preservation: preservation
                .then(|| "4 of 6 boxes went silent within one expiry period".into()),
            heartbeat_interval: 5.0,
        },
        boxes: vec![
            box_view(
                1,
                BoxState::Active,
                geo("Taipei", "Taipei City", "TW", "25.0330,121.5654"),
            ),
            box_view(
                2,
                BoxState::Stale,
                geo("Tokyo", "Tokyo", "JP", "35.6762,139.6503"),
            ),
            box_view(
                3,
                BoxState::Unreachable,
                geo("London", "England", "GB", "51.5072,-0.1276"),
            ),
            box_view(
                4,
                BoxState::Evicted,
                geo("Frankfurt am Main", "Hesse", "DE", "50.1109,8.6821"),
            ),
            box_view(
                5,
                BoxState::Active,
                geo("Kaohsiung", "Kaohsiung City", "TW", "22.6273,120.3014"),
            ),
        ],
    }
}

fn placement(n: u32, ttl: u64) -> PlacementView {
    PlacementView {
        box_id: fixture_id("box", n),
        url: format!("http://198.51.100.{n}:7071/publisher-00/live/seg.ts"),
        ttl_left: ttl,
        why: format!(
            "{} scored 0.81 (near 0.90, spare upload 0.70, storage 0.98, reliability 0.75, throughput 0.60); next was {} at 0.74; drawn from the 2 best",
            fixture_id("box", n),
            fixture_id("box", n + 4)
        ),
    }
}

pub fn publisher_view() -> PublisherView {
    PublisherView {
        files: vec![
            FileView {
                name: "live/seg41.ts".into(),
                size: 1_048_576,
                sha256: "ab".repeat(32),
                state: "placed".into(),
                ttl_left: 58,
                replicas: 2,
                attempts: 1,
                failures: vec![],
                placements: vec![placement(1, 58), placement(5, 58)],
            },
            FileView {
                name: "live/seg42.ts".into(),
                size: 524_288,
                sha256: "cd".repeat(32),
                state: "queued".into(),
                ttl_left: 60,
                replicas: 2,
                attempts: 0,
                failures: vec![],
                placements: vec![],
            },
            FileView {
                name: "vod/trailer.mp4".into(),
                size: 73_400_320,
                sha256: "ef".repeat(32),
                state: "failed".into(),
                ttl_left: 3000,
                replicas: 1,
                attempts: 5,
                failures: vec![FailureView {
                    box_id: Some(fixture_id("box", 3)),
                    reason: "refused: over the box's storage quota".into(),
                    at: 1_799_999_990,
                }],
                placements: vec![],
            },
        ],
        ranking: vec![
            RankRow {
                box_id: fixture_id("box", 1),
                score: 0.81,
                nearness: 0.9,
                spare_upload: 0.7,
                storage: 0.98,
                reliability: 0.75,
                throughput: 0.6,
                probation: false,
            },
            RankRow {
                box_id: fixture_id("box", 5),
                score: 0.74,
                nearness: 0.8,
                spare_upload: 0.55,
                storage: 0.97,
                reliability: 0.5,
                throughput: 0.5,
                probation: true,
            },
        ],
        queue: vec!["live/seg42.ts".into()],
        sending: vec![],
        known_boxes: 5,
        offload: Some(OffloadView {
            total: OffloadRow {
                box_bytes: 3_250_000_000,
                box_requests: 4_100,
                origin_bytes: 48_000_000,
                uploaded_bytes: 410_000_000,
            },
            box_share: Some(3_250_000_000.0 / 3_298_000_000.0),
            streams: vec![],
        }),
    }
}

pub fn box_node_view() -> BoxNodeView {
    BoxNodeView {
        files: vec![
            StoredFile {
                path: "publisher-00/live/seg41.ts".into(),
                url: "http://198.51.100.1:7071/publisher-00/live/seg41.ts".into(),
                size: 1_048_576,
                ttl_left: 58,
                bytes_served: 52_428_800,
                requests: 50,
            },
            StoredFile {
                path: "publisher-00/live/seg40.ts".into(),
                url: "http://198.51.100.1:7071/publisher-00/live/seg40.ts".into(),
                size: 1_011_002,
                ttl_left: 54,
                bytes_served: 101_100_200,
                requests: 100,
            },
        ],
        storage_used: 2_059_578,
        storage_quota: Some(10_000_000_000),
        bytes_served: 153_529_000,
        requests: 150,
        upload_rate: 1_200_000,
        upload_cap: Some(2_000_000),
        publishers: vec![fixture_id("publisher", 9)],
    }
}

fn hello(role: &str, n: u32) -> Update {
    Update::Hello(Hello {
        role: role.into(),
        id: fixture_id(role, n),
        version: "0.1.0".into(),
        now: NOW,
    })
}

fn event(age: f64, level: Level, text: &str) -> Update {
    Update::Event(Event {
        at: NOW - age,
        level,
        text: text.into(),
    })
}

/// An app attached to an entrance, a publisher and a box, all live.
/// The fixture app, its file picker opening on a folder of `files` segments
/// (`seg00.ts`…): enough of them to need scrolling. Keep the folder as long
/// as the app.
pub fn app_with_segments(files: usize) -> (App, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary folder: {e}"));
    for i in 0..files {
        std::fs::write(root.path().join(format!("seg{i:02}.ts")), b"x")
            .unwrap_or_else(|e| panic!("a segment in the temporary folder: {e}"));
    }
    let mut app = app(false);
    app.start_dir = root.path().to_owned();
    (app, root)
}

pub fn app(preservation: bool) -> App {
    let mut app = App::new(Tokens::default(), std::path::Path::new("/tmp"), NOW);
    app.attach("http://127.0.0.1:7070");
    app.attach("http://127.0.0.1:7072");
    app.attach("http://198.51.100.1:7071");
    let feeds = [
        vec![
            hello("entrance", 7),
            Update::Entrance(entrance_view(preservation)),
            event(300.0, Level::Info, "box-…01 registered in Taipei, TW"),
            event(
                120.0,
                Level::Warn,
                "box-…03 is unreachable: refused the connection",
            ),
            event(
                60.0,
                Level::Warn,
                "box-…04 evicted by an operator: flaky uplink",
            ),
        ],
        vec![
            hello("publisher", 9),
            Update::Publisher(publisher_view()),
            event(
                30.0,
                Level::Info,
                "accepted live/seg41.ts (1048576 bytes, TTL 60s, 2 replica(s))",
            ),
            event(29.0, Level::Info, "placed live/seg41.ts on box-…01"),
            event(
                10.0,
                Level::Error,
                "gave up on vod/trailer.mp4 after 5 failures",
            ),
        ],
        vec![
            hello("box", 1),
            Update::BoxNode(box_node_view()),
            event(
                28.0,
                Level::Info,
                "stored publisher-00/live/seg41.ts (1048576 bytes, TTL 60s)",
            ),
        ],
    ];
    for (tab, updates) in feeds.into_iter().enumerate() {
        for u in updates {
            app.update(Input::Net {
                tab,
                net: Net::Update(u),
            });
        }
    }
    app.active = 0;
    app
}
