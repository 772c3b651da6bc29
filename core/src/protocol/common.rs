//! Fields that every message carries, and the nested objects several share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient;
use crate::ids::{NodeId, Role};

/// Who sent a message: the original's `ID`, `IP`, `PORT`, `TYPE`, plus our `VERSION`
/// (absent from the original's messages, which is how legacy peers are told apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    #[serde(rename = "ID")]
    pub id: NodeId,
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(
        rename = "PORT",
        default,
        deserialize_with = "lenient::opt_number",
        serialize_with = "lenient::opt_as_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    #[serde(rename = "TYPE", deserialize_with = "lenient::role")]
    pub role: Role,
    #[serde(rename = "VERSION", default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Header {
    /// A header for a message sent by this build.
    pub fn new(id: NodeId) -> Header {
        Header {
            role: id.role(),
            id,
            ip: None,
            port: None,
            version: Some(super::PROTOCOL_VERSION.to_owned()),
        }
    }

    pub fn with_address(mut self, ip: impl Into<String>, port: u16) -> Header {
        self.ip = Some(ip.into());
        self.port = Some(port);
        self
    }

    /// A peer that did not send `VERSION` is the original 2017 code.
    pub fn is_legacy(&self) -> bool {
        self.version.is_none()
    }

    /// The protocol level the peer speaks: `N` of `dandelion/N`, 0 for the original (no
    /// `VERSION`) and for anything unrecognised, so that a feature is used only with peers that
    /// said they have it.
    pub fn level(&self) -> u32 {
        self.version
            .as_deref()
            .and_then(|v| v.strip_prefix("dandelion/"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// Location of a peer, with the original README's field names. `LOC` is
/// `"latitude,longitude"` as ipinfo-style services write it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GeoIp {
    #[serde(rename = "IP", default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(rename = "HOSTNAME", default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(rename = "COUNTRY", default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(rename = "CITY", default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(rename = "REGION", default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(rename = "ORG", default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(rename = "LOC", default, skip_serializing_if = "Option::is_none")]
    pub loc: Option<String>,
}

impl GeoIp {
    /// Latitude and longitude from `LOC`, if it holds two numbers in range.
    pub fn lat_lon(&self) -> Option<(f64, f64)> {
        let (lat, lon) = self.loc.as_deref()?.split_once(',')?;
        let lat: f64 = lat.trim().parse().ok()?;
        let lon: f64 = lon.trim().parse().ok()?;
        ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some((lat, lon))
    }

    pub fn set_lat_lon(&mut self, lat: f64, lon: f64) {
        self.loc = Some(format!("{lat:.4},{lon:.4}"));
    }
}

/// A box's measurements. The original flattened a few `top` readings into the
/// top level as strings (`CPU-USR`, `MEM-TOTAL`, …; they survive in `extra`); ours
/// are numbers in base units (bytes, bytes per second, percent) under one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    #[serde(
        rename = "CPU_CORES",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_cores: Option<u32>,
    #[serde(
        rename = "CPU_USAGE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpu_usage: Option<f64>,
    #[serde(rename = "LOAD_AVG", default, skip_serializing_if = "Option::is_none")]
    pub load_avg: Option<[f64; 3]>,
    #[serde(
        rename = "MEM_TOTAL",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub mem_total: Option<u64>,
    #[serde(
        rename = "MEM_AVAILABLE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub mem_available: Option<u64>,
    #[serde(
        rename = "DISK_TOTAL",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_total: Option<u64>,
    #[serde(
        rename = "DISK_AVAILABLE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_available: Option<u64>,
    #[serde(
        rename = "STORAGE_QUOTA",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_quota: Option<u64>,
    #[serde(
        rename = "STORAGE_USED",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_used: Option<u64>,
    #[serde(
        rename = "NET_TX_RATE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub net_tx_rate: Option<u64>,
    #[serde(
        rename = "NET_RX_RATE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub net_rx_rate: Option<u64>,
    /// The upload cap the box's owner set; 0 or absent means none.
    #[serde(
        rename = "UPLOAD_CAP",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub upload_cap: Option<u64>,
    /// What the box actually served to viewers recently.
    #[serde(
        rename = "UPLOAD_RATE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub upload_rate: Option<u64>,
    /// Uplink measured against an entrance.
    #[serde(
        rename = "UPLINK",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub uplink: Option<u64>,
    #[serde(
        rename = "MAX_DOWNLOADS",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_downloads: Option<u32>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Bytes and requests a box served, the structured successor of the original's
/// per-request `TRAFFIC_FLOW` log entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficFlow {
    #[serde(
        rename = "BYTES_SERVED",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub bytes_served: Option<u64>,
    #[serde(
        rename = "REQUESTS",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub requests: Option<u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_come_from_version_and_unknown_ones_get_nothing() {
        let id: NodeId = "box-0123456789abcdef0123456789abcdef".parse().unwrap();
        let mut header = Header::new(id);
        assert_eq!(header.level(), 2);
        for (version, level) in [
            (None, 0),
            (Some("dandelion/1"), 1),
            (Some("dandelion/3"), 3),
            (Some("dandelion/x"), 0),
            (Some("other/2"), 0),
        ] {
            header.version = version.map(str::to_owned);
            assert_eq!(header.level(), level, "{version:?}");
        }
    }

    #[test]
    fn loc_parses_and_range_checks() {
        let mut g = GeoIp {
            loc: Some("25.0330, 121.5654".into()),
            ..GeoIp::default()
        };
        assert_eq!(g.lat_lon(), Some((25.033, 121.5654)));
        g.loc = Some("95,0".into());
        assert_eq!(g.lat_lon(), None);
        g.loc = Some("nonsense".into());
        assert_eq!(g.lat_lon(), None);
        g.set_lat_lon(-33.8688, 151.2093);
        assert_eq!(g.loc.as_deref(), Some("-33.8688,151.2093"));
    }
}
