//! The publish family: a publisher opens a session on a box (`PUBLISH`), streams
//! file frames over it, and the box answers each finished transfer (`TRANSFER`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::common::Header;
use super::lenient;

/// A publisher's request to publish on a box. The original sent no `PORT` here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    #[serde(flatten)]
    pub header: Header,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The box's acceptance of a publish session, with the limits a publisher must
/// respect (all new; absent from the original's reply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishReply {
    #[serde(flatten)]
    pub header: Header,
    /// Base URL under which this publisher's files are served to viewers.
    #[serde(rename = "DATA_URL", default, skip_serializing_if = "Option::is_none")]
    pub data_url: Option<String>,
    #[serde(
        rename = "MAX_FILE_SIZE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_file_size: Option<u64>,
    #[serde(
        rename = "MAX_FRAME",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_frame: Option<u64>,
    #[serde(
        rename = "QUOTA_FREE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub quota_free: Option<u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// How a transfer ended on the box.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferOutcome {
    /// The exact bytes are on disk and served at `url`.
    Stored {
        size: u64,
        sha256: String,
        url: String,
    },
    /// Nothing was kept; `reason` says why and `code` is a stable label.
    Refused { reason: String, code: String },
}

/// The box's answer to a finished (or failed) transfer. Extra header keys of the
/// file frame come back in `headers`, so the publisher can keep them with the
/// placement.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferResult {
    pub header: Header,
    pub transfer: Option<u64>,
    pub file_path: String,
    pub outcome: TransferOutcome,
    pub headers: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct TransferResultWire {
    #[serde(flatten)]
    header: Header,
    #[serde(rename = "MESSAGE")]
    message: String,
    #[serde(
        rename = "TRANSFER",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    transfer: Option<u64>,
    #[serde(rename = "FILE_PATH")]
    file_path: String,
    #[serde(
        rename = "SIZE",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    size: Option<u64>,
    #[serde(rename = "SHA256", default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(rename = "URL", default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(rename = "ERROR", default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(rename = "CODE", default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(rename = "HEADERS", default, skip_serializing_if = "Map::is_empty")]
    headers: Map<String, Value>,
}

impl Serialize for TransferResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut wire = TransferResultWire {
            header: self.header.clone(),
            message: String::new(),
            transfer: self.transfer,
            file_path: self.file_path.clone(),
            size: None,
            sha256: None,
            url: None,
            error: None,
            code: None,
            headers: self.headers.clone(),
        };
        match &self.outcome {
            TransferOutcome::Stored { size, sha256, url } => {
                wire.message = "STORED".into();
                wire.size = Some(*size);
                wire.sha256 = Some(sha256.clone());
                wire.url = Some(url.clone());
            }
            TransferOutcome::Refused { reason, code } => {
                wire.message = "REFUSED".into();
                wire.error = Some(reason.clone());
                wire.code = Some(code.clone());
            }
        }
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TransferResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = TransferResultWire::deserialize(d)?;
        let outcome = match wire.message.as_str() {
            "STORED" => TransferOutcome::Stored {
                size: wire.size.ok_or_else(|| D::Error::missing_field("SIZE"))?,
                sha256: wire
                    .sha256
                    .ok_or_else(|| D::Error::missing_field("SHA256"))?,
                url: wire.url.ok_or_else(|| D::Error::missing_field("URL"))?,
            },
            "REFUSED" => TransferOutcome::Refused {
                reason: wire.error.ok_or_else(|| D::Error::missing_field("ERROR"))?,
                code: wire.code.unwrap_or_else(|| "refused".into()),
            },
            other => {
                return Err(D::Error::custom(format!(
                    "MESSAGE `{}` is neither STORED nor REFUSED",
                    other.escape_debug()
                )));
            }
        };
        Ok(TransferResult {
            header: wire.header,
            transfer: wire.transfer,
            file_path: wire.file_path,
            outcome,
            headers: wire.headers,
        })
    }
}

/// Served bytes and requests, as a box counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedCount {
    #[serde(rename = "BYTES")]
    pub bytes: u64,
    #[serde(rename = "REQUESTS")]
    pub requests: u64,
}

/// A publisher asking a box what it served of the publisher's files, on a
/// publish session (so only that publisher is answered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficQuery {
    #[serde(flatten)]
    pub header: Header,
}

/// A box's answer to [`TrafficQuery`]: what it served of the asking
/// publisher's files since `SINCE` (when its counters started: its start), per
/// stream (`paths::stream_of`). Counts only grow while `SINCE` stays the same.
/// The box's word: the publisher's offload ledger says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficReply {
    #[serde(flatten)]
    pub header: Header,
    #[serde(rename = "SINCE")]
    pub since: u64,
    #[serde(rename = "STREAMS", default)]
    pub streams: BTreeMap<String, ServedCount>,
}
