//! The registry family: boxes announce themselves (`EXCHANGE`), publishers ask for
//! boxes (`SEARCH`), and a leaving box says `GOODBYE`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::common::{GeoIp, Header, SystemInfo, TrafficFlow};
use super::lenient;
use crate::ids::NodeId;

/// A box's heartbeat to an entrance (and, in the original, to a peer box).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    #[serde(flatten)]
    pub header: Header,
    /// Where publishers open their `PUBLISH` WebSocket.
    #[serde(
        rename = "CONNECT_WS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_ws: Option<String>,
    /// Base URL viewers fetch stored files from (new; the original's was implied by
    /// an nginx port).
    #[serde(rename = "DATA_URL", default, skip_serializing_if = "Option::is_none")]
    pub data_url: Option<String>,
    #[serde(
        rename = "SYSTEM_INFO",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_info: Option<Box<SystemInfo>>,
    #[serde(rename = "GEOIP", default, skip_serializing_if = "Option::is_none")]
    pub geoip: Option<GeoIp>,
    #[serde(
        rename = "TRAFFIC_FLOW",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub traffic_flow: Option<TrafficFlow>,
    /// Everything else, kept as sent: the original's flat `CPU-*`/`MEM-*` strings and
    /// its `<box>:TRAFFIC_FLOW:log-…` objects, and any field a newer peer adds.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The entrance's answer to an `EXCHANGE`: `MESSAGE: ACCEPTED` and the entrance URLs
/// the box should also talk to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExchangeReply {
    #[serde(flatten)]
    pub header: Header,
    #[serde(rename = "ENTRANCE_URLS", default)]
    pub entrance_urls: Vec<String>,
    /// The same entrances as `URL#ID` (`crate::pinned::PinnedUrl`): a box dials a
    /// learned entrance only if it proves the ID it was handed out with, so only
    /// these are learned; `ENTRANCE_URLS` stays for the original's peers.
    #[serde(rename = "ENTRANCES", default, skip_serializing_if = "Option::is_none")]
    pub entrances: Option<Vec<String>>,
    /// Public keys (hex) of the publishers this network trusts; boxes accept
    /// `PUBLISH` from these.
    #[serde(
        rename = "PUBLISHER_KEYS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub publisher_keys: Option<Vec<String>>,
    /// The heartbeat interval the entrance expects, in seconds.
    #[serde(
        rename = "HEARTBEAT_INTERVAL",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_interval: Option<u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// How a publisher wants its `SEARCH` answer ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SearchOrder {
    /// Most recently heard first: the original's only order.
    #[default]
    Freshest,
    /// Nearest to the publisher's `GEOIP` first.
    Nearest,
}

/// A publisher's request for boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    #[serde(flatten)]
    pub header: Header,
    #[serde(rename = "GEOIP", default, skip_serializing_if = "Option::is_none")]
    pub geoip: Option<GeoIp>,
    /// How many boxes at most; the entrance's default (20) when absent.
    #[serde(
        rename = "COUNT",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub count: Option<u32>,
    #[serde(rename = "ORDER", default, skip_serializing_if = "Option::is_none")]
    pub order: Option<SearchOrder>,
    /// Whether unverified (legacy) boxes may be returned.
    #[serde(
        rename = "UNVERIFIED",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unverified: Option<bool>,
    /// Keep the session open after the answer and push a [`BoxState`] whenever a
    /// box leaves or rejoins, so a dead box leaves viewers' redirects in
    /// seconds rather than at the next search. Dandelion publishers only.
    #[serde(rename = "WATCH", default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<bool>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What an entrance tells a watching publisher (`SEARCH` with `WATCH`) about one
/// box, as it happens. A hint, not a verdict: the publisher stops sending
/// viewers to a box said to be gone until its own serve probe shows it serving,
/// and probes one said to be back at once. Nothing is lost when one is missed:
/// the next `SEARCH` answer carries the whole list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxState {
    #[serde(flatten)]
    pub header: Header,
    /// The box's ID.
    #[serde(rename = "BOX")]
    pub box_id: NodeId,
    /// `active` (registered a session), `disconnected` (its session ended
    /// without a goodbye), `gone` (said goodbye or expired), `unreachable` (its
    /// reachability check failed), `evicted`.
    #[serde(rename = "STATE")]
    pub state: String,
    #[serde(rename = "REASON", default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The entrance's answer to a `SEARCH`.
///
/// `BOX_SET` maps each box ID to that box's last `EXCHANGE`. The original could
/// send `{}` for a box whose heartbeat it had failed to store, so entries that do
/// not decode are set aside in `undecodable` instead of failing the whole reply.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchReply {
    pub header: Header,
    pub boxes: Vec<Exchange>,
    pub entrance_urls: Option<Vec<String>>,
    /// As in [`ExchangeReply::entrances`].
    pub entrances: Option<Vec<String>>,
    pub undecodable: Vec<String>,
    pub extra: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct SearchReplyWire {
    #[serde(flatten)]
    header: Header,
    #[serde(rename = "BOX_SET")]
    box_set: Map<String, Value>,
    #[serde(
        rename = "ENTRANCE_URLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    entrance_urls: Option<Vec<String>>,
    #[serde(rename = "ENTRANCES", default, skip_serializing_if = "Option::is_none")]
    entrances: Option<Vec<String>>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
}

impl Serialize for SearchReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut box_set = Map::new();
        for b in &self.boxes {
            let mut value = serde_json::to_value(b).map_err(serde::ser::Error::custom)?;
            // The original's entries were whole stored EXCHANGE messages, COMMAND included.
            if let Value::Object(map) = &mut value {
                map.insert("COMMAND".into(), Value::from("EXCHANGE"));
            }
            box_set.insert(b.header.id.to_string(), value);
        }
        SearchReplyWire {
            header: self.header.clone(),
            box_set,
            entrance_urls: self.entrance_urls.clone(),
            entrances: self.entrances.clone(),
            extra: self.extra.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SearchReply {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = SearchReplyWire::deserialize(d)?;
        let mut boxes = Vec::new();
        let mut undecodable = Vec::new();
        for (key, mut value) in wire.box_set {
            if let Value::Object(map) = &mut value {
                map.remove("COMMAND");
            }
            match serde_json::from_value::<Exchange>(value) {
                Ok(b) if b.header.id.as_str() == key => boxes.push(b),
                _ => undecodable.push(key),
            }
        }
        Ok(SearchReply {
            header: wire.header,
            boxes,
            entrance_urls: wire.entrance_urls,
            entrances: wire.entrances,
            undecodable,
            extra: wire.extra,
        })
    }
}

/// A box leaving on purpose (SIGTERM), so the entrance drops it at once instead of
/// waiting out the expiry time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodbye {
    #[serde(flatten)]
    pub header: Header,
    #[serde(rename = "REASON", default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
