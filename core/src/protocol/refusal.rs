//! Error replies: every refused message gets one, never a silent drop.

use serde::{Deserialize, Serialize};

use super::common::Header;

/// The replier's own header plus `ERROR`, as the original's format errors were; we
/// add a stable `CODE` for programs and the refused `COMMAND` when known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    #[serde(flatten)]
    pub header: Header,
    #[serde(rename = "ERROR")]
    pub error: String,
    #[serde(rename = "CODE", default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(rename = "COMMAND", default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The entrance's error replies carried its URLs in the original; kept so a
    /// confused box still learns where to go.
    #[serde(
        rename = "ENTRANCE_URLS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrance_urls: Option<Vec<String>>,
}
