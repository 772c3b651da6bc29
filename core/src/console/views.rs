//! What each role shows: plain data, shared by the daemons' JSON APIs and the
//! console feed.

use serde::{Deserialize, Serialize};

use crate::protocol::GeoIp;

/// A box's state as the API, the console and `SEARCH` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxState {
    Active,
    Stale,
    Unreachable,
    Evicted,
}

impl BoxState {
    pub const ALL: [BoxState; 4] = [
        BoxState::Active,
        BoxState::Stale,
        BoxState::Unreachable,
        BoxState::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BoxState::Active => "active",
            BoxState::Stale => "stale",
            BoxState::Unreachable => "unreachable",
            BoxState::Evicted => "evicted",
        }
    }

    /// Parses a stored or user-given state name.
    pub fn parse(text: &str) -> Option<BoxState> {
        BoxState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// One box as an entrance lists it (`GET /api/boxes`, `dandelion boxes`, the console).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxView {
    pub id: String,
    pub state: BoxState,
    /// Why the state last changed.
    pub reason: String,
    /// Unix seconds of the last state change.
    pub since: f64,
    pub legacy: bool,
    pub first_seen: f64,
    pub last_heartbeat: f64,
    pub expires_at: Option<f64>,
    pub ban_until: Option<f64>,
    pub observed_ip: Option<String>,
    pub geo: GeoIp,
    /// Where `geo` came from: `override`, `geoip` or `box`.
    pub geo_source: String,
    pub version: Option<String>,
    pub data_url: Option<String>,
    pub connect_ws: Option<String>,
    /// Bytes per second served recently.
    pub upload_rate: Option<u64>,
    pub upload_cap: Option<u64>,
    /// Bytes of storage free for files: quota minus use, else the disk's free space.
    pub free_storage: Option<u64>,
    /// Bytes served since the box started, from its heartbeat's traffic counters.
    #[serde(default)]
    pub bytes_served: Option<u64>,
}

impl BoxView {
    /// Upload the box could still give: its cap minus what it serves.
    pub fn spare_upload(&self) -> Option<u64> {
        Some(
            self.upload_cap?
                .saturating_sub(self.upload_rate.unwrap_or(0)),
        )
    }

    /// Where the box is, for maps: (latitude, longitude).
    pub fn lat_lon(&self) -> Option<(f64, f64)> {
        self.geo.lat_lon()
    }
}

/// What anyone may learn of an entrance's boxes (`GET /api/summary`): counts and
/// capacity per country and region, never a household's address, exact place
/// or data URL. Those stay behind the admin token (`GET /api/boxes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub boxes: u64,
    /// Boxes per state, every state present.
    pub states: std::collections::BTreeMap<String, u64>,
    /// Upload the active boxes may give, bytes per second (their caps added up).
    pub upload_capacity: u64,
    /// Storage the active boxes have free, bytes.
    pub free_storage: u64,
    /// Active boxes per country and region, most boxes first.
    pub regions: Vec<RegionSummary>,
}

/// Active boxes of one country and region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionSummary {
    pub country: String,
    pub region: String,
    pub boxes: u64,
    pub upload_capacity: u64,
}

impl Summary {
    /// Adds up `boxes`: every box counts in `states`; only active ones count as
    /// capacity and in `regions`, which is what a publisher could use.
    pub fn of(boxes: &[BoxView]) -> Summary {
        let mut summary = Summary {
            boxes: boxes.len() as u64,
            states: BoxState::ALL
                .iter()
                .map(|s| (s.as_str().to_owned(), 0))
                .collect(),
            ..Summary::default()
        };
        let mut regions: std::collections::BTreeMap<(String, String), (u64, u64)> =
            std::collections::BTreeMap::new();
        for b in boxes {
            *summary
                .states
                .entry(b.state.as_str().to_owned())
                .or_default() += 1;
            if b.state != BoxState::Active {
                continue;
            }
            let cap = b.upload_cap.unwrap_or(0);
            summary.upload_capacity = summary.upload_capacity.saturating_add(cap);
            summary.free_storage = summary
                .free_storage
                .saturating_add(b.free_storage.unwrap_or(0));
            let unknown = || "unknown".to_owned();
            let key = (
                b.geo.country.clone().unwrap_or_else(unknown),
                b.geo.region.clone().unwrap_or_else(unknown),
            );
            let entry = regions.entry(key).or_default();
            entry.0 += 1;
            entry.1 = entry.1.saturating_add(cap);
        }
        summary.regions = regions
            .into_iter()
            .map(
                |((country, region), (boxes, upload_capacity))| RegionSummary {
                    country,
                    region,
                    boxes,
                    upload_capacity,
                },
            )
            .collect();
        summary.regions.sort_by(|a, b| {
            b.boxes
                .cmp(&a.boxes)
                .then_with(|| a.country.cmp(&b.country))
        });
        summary
    }
}

/// The entrance's own condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntranceStatus {
    /// Why expiry is held back, while it is.
    pub self_preservation: Option<String>,
    /// Seconds between a box's heartbeats.
    pub heartbeat_interval: f64,
}

/// Everything an entrance knows, as one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntranceView {
    pub status: EntranceStatus,
    pub boxes: Vec<BoxView>,
}

/// A copy of a file a box confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementView {
    #[serde(rename = "box")]
    pub box_id: String,
    pub url: String,
    pub ttl_left: u64,
    /// Why this box won, and which came next.
    pub why: String,
}

/// One failed attempt to place a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureView {
    pub box_id: Option<String>,
    pub reason: String,
    pub at: u64,
}

/// One published name, as the publisher reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileView {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// `queued`, `placed` or `failed`.
    pub state: String,
    pub ttl_left: u64,
    pub replicas: u32,
    pub attempts: u32,
    pub failures: Vec<FailureView>,
    pub placements: Vec<PlacementView>,
}

/// One box in the publisher's ranking, with each factor of its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankRow {
    #[serde(rename = "box")]
    pub box_id: String,
    pub score: f64,
    pub nearness: f64,
    pub spare_upload: f64,
    pub storage: f64,
    pub reliability: f64,
    pub throughput: f64,
    /// Not yet measured: a small share of placements and viewers.
    #[serde(default)]
    pub probation: bool,
}

/// Everything a publisher knows, as one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublisherView {
    pub files: Vec<FileView>,
    pub ranking: Vec<RankRow>,
    /// Names waiting in the sending queue, in order, then those being sent.
    pub queue: Vec<String>,
    pub sending: Vec<String>,
    pub known_boxes: usize,
    /// Who served viewers what (absent from publishers before the ledger).
    #[serde(default)]
    pub offload: Option<OffloadView>,
}

/// One stream's offload figures, or the total's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadRow {
    /// Viewer bytes and requests the boxes say they served.
    pub box_bytes: u64,
    pub box_requests: u64,
    /// Bytes the publisher served viewers itself: fallbacks and playlists.
    pub origin_bytes: u64,
    /// Bytes of copies boxes confirmed storing.
    pub uploaded_bytes: u64,
}

impl OffloadRow {
    /// The share of viewer bytes served by boxes, when any were served.
    pub fn box_share(&self) -> Option<f64> {
        let viewers = self.box_bytes.saturating_add(self.origin_bytes);
        #[allow(clippy::cast_precision_loss)]
        (viewers > 0).then(|| self.box_bytes as f64 / viewers as f64)
    }

    pub fn add(&mut self, other: &OffloadRow) {
        self.box_bytes = self.box_bytes.saturating_add(other.box_bytes);
        self.box_requests = self.box_requests.saturating_add(other.box_requests);
        self.origin_bytes = self.origin_bytes.saturating_add(other.origin_bytes);
        self.uploaded_bytes = self.uploaded_bytes.saturating_add(other.uploaded_bytes);
    }
}

/// A publisher's offload ledger: the total, then each stream, most viewer
/// bytes first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OffloadView {
    pub total: OffloadRow,
    pub box_share: Option<f64>,
    pub streams: Vec<OffloadStream>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OffloadStream {
    pub stream: String,
    #[serde(flatten)]
    pub row: OffloadRow,
    pub box_share: Option<f64>,
}

/// One file a box holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    pub path: String,
    pub url: String,
    pub size: u64,
    pub ttl_left: u64,
    pub bytes_served: u64,
    pub requests: u64,
}

/// Everything a box knows about itself (`GET /api/files` on a box, and its
/// console view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxNodeView {
    pub files: Vec<StoredFile>,
    pub storage_used: u64,
    pub storage_quota: Option<u64>,
    pub bytes_served: u64,
    pub requests: u64,
    /// Bytes per second served recently, and the owner's cap.
    #[serde(default)]
    pub upload_rate: u64,
    #[serde(default)]
    pub upload_cap: Option<u64>,
    /// Publishers with a session open now.
    #[serde(default)]
    pub publishers: Vec<String>,
}
