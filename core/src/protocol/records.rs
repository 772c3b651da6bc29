//! Records the original kept in its publisher's Redis rather than sent over a
//! socket: the queue entry `FileManager.push` wrote, and what `FileManager.ask`
//! read back. Users scripted against these shapes, so they still decode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::lenient;

/// An entry of `{ID}:FILE:FILES_SENDING_QUEUE`: a file to send and its TTL, plus
/// whatever metadata the user attached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedFile {
    #[serde(rename = "FILE_PATH")]
    pub file_path: String,
    #[serde(
        rename = "TTL",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<u64>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// The original's record of a send (`{ID}:FILE:PROCESSED_FILES:<path>`), and the
/// answer `FileManager.ask` built by merging it with the box's exchange (which is
/// why the box's `IP`, `PORT` and `CONNECT_WS` may be present).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedFile {
    /// The box the file went to.
    #[serde(rename = "ID")]
    pub box_id: String,
    /// `Success` in the original meant "sent", not "stored".
    #[serde(rename = "MSG")]
    pub msg: String,
    #[serde(rename = "FILE_PATH")]
    pub file_path: String,
    #[serde(
        rename = "TTL",
        default,
        deserialize_with = "lenient::opt_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<u64>,
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
    #[serde(
        rename = "CONNECT_WS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connect_ws: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}
