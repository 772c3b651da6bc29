//! The wire protocol (v1): typed messages over WebSocket text frames.
//!
//! Text frames are JSON objects with the original's upper-case field names. Each
//! message family has its own module — [`registry`] (`EXCHANGE`, `SEARCH`,
//! `GOODBYE`), [`publish`] (`PUBLISH`, `TRANSFER`), [`refusal`] (`ERROR`) — and
//! [`Message`] ties them together: decoding decides the kind from `COMMAND`,
//! `MESSAGE`, `ERROR` and `BOX_SET` the way the original's peers did, so every
//! captured original message decodes, and encoding writes what they expect.
//! File data travels in binary frames; see [`crate::frame`].

pub mod common;
pub mod legacy;
pub mod lenient;
pub mod publish;
pub mod records;
pub mod refusal;
pub mod registry;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use common::{GeoIp, Header, SystemInfo, TrafficFlow};
pub use publish::{
    Publish, PublishReply, ServedCount, TrafficQuery, TrafficReply, TransferOutcome, TransferResult,
};
pub use refusal::ErrorReply;
pub use registry::{BoxState, Exchange, ExchangeReply, Goodbye, Search, SearchOrder, SearchReply};

/// Sent in every message's `VERSION`; peers without one are the original's.
///
/// - `dandelion/1`: chunked file frames with `SHA256` in the start frame.
/// - `dandelion/2`: a file's `SHA256` may come in its final frame, and an abort frame drops
///   one transfer (see [`crate::frame`]), so that a publisher can forward a file while it is
///   still being uploaded. A publisher uses them only with a box whose `PUBLISH` reply says 2
///   or more.
pub const PROTOCOL_VERSION: &str = "dandelion/2";

/// The first version in which a box takes a file's hash in its final frame.
pub const HASH_LAST_SINCE: u32 = 2;

/// Where an entrance takes a box's uplink measurement: a bounded upload that it
/// times and answers with `{"BYTES": n, "SECONDS": s}`.
pub const UPLINK_PATH: &str = "/dandelion/uplink";

/// The `MESSAGE` of every acceptance.
pub const ACCEPTED: &str = "ACCEPTED";

/// One decoded text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Exchange(Exchange),
    ExchangeReply(ExchangeReply),
    Search(Search),
    SearchReply(SearchReply),
    BoxState(BoxState),
    Goodbye(Goodbye),
    Publish(Publish),
    PublishReply(PublishReply),
    Transfer(TransferResult),
    Traffic(TrafficQuery),
    TrafficReply(TrafficReply),
    Error(ErrorReply),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not valid JSON: {0}")]
    NotJson(String),
    #[error("a message must be a JSON object")]
    NotAnObject,
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("unknown COMMAND `{0}`")]
    UnknownCommand(String),
    #[error("invalid {command} message: {detail}")]
    Invalid { command: String, detail: String },
}

impl ProtocolError {
    /// A short stable label for metrics and `CODE`.
    /// Every [`ProtocolError::reason_code`], for counting each from the start.
    pub const REASON_CODES: [&'static str; 5] = [
        "not_json",
        "not_an_object",
        "missing_field",
        "unknown_command",
        "invalid_field",
    ];

    pub fn reason_code(&self) -> &'static str {
        match self {
            ProtocolError::NotJson(_) => "not_json",
            ProtocolError::NotAnObject => "not_an_object",
            ProtocolError::MissingField(_) => "missing_field",
            ProtocolError::UnknownCommand(_) => "unknown_command",
            ProtocolError::Invalid { .. } => "invalid_field",
        }
    }
}

impl Message {
    /// The `COMMAND` this message is sent under.
    pub fn command(&self) -> &'static str {
        match self {
            Message::Exchange(_) | Message::ExchangeReply(_) => "EXCHANGE",
            Message::Search(_) | Message::SearchReply(_) => "SEARCH",
            Message::BoxState(_) => "BOX_STATE",
            Message::Goodbye(_) => "GOODBYE",
            Message::Publish(_) | Message::PublishReply(_) => "PUBLISH",
            Message::Transfer(_) => "TRANSFER",
            Message::Traffic(_) | Message::TrafficReply(_) => "TRAFFIC",
            Message::Error(_) => "ERROR",
        }
    }

    /// The sender's header.
    pub fn header(&self) -> &Header {
        match self {
            Message::Exchange(m) => &m.header,
            Message::ExchangeReply(m) => &m.header,
            Message::Search(m) => &m.header,
            Message::SearchReply(m) => &m.header,
            Message::BoxState(m) => &m.header,
            Message::Goodbye(m) => &m.header,
            Message::Publish(m) => &m.header,
            Message::PublishReply(m) => &m.header,
            Message::Transfer(m) => &m.header,
            Message::Traffic(m) => &m.header,
            Message::TrafficReply(m) => &m.header,
            Message::Error(m) => &m.header,
        }
    }

    pub fn decode(text: &str) -> Result<Message, ProtocolError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
        Message::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Message, ProtocolError> {
        let Value::Object(mut map) = value else {
            return Err(ProtocolError::NotAnObject);
        };
        let command = match map.get("COMMAND") {
            Some(Value::String(c)) => Some(c.clone()),
            Some(_) => {
                return Err(ProtocolError::Invalid {
                    command: "?".into(),
                    detail: "COMMAND must be a string".into(),
                });
            }
            None => None,
        };
        for field in ["ID", "TYPE"] {
            if map
                .get(field)
                .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
            {
                return Err(ProtocolError::MissingField(field));
            }
        }
        if command.as_deref() != Some("TRANSFER") && map.contains_key("ERROR") {
            return typed(map, "ERROR").map(Message::Error);
        }
        let command = command.ok_or(ProtocolError::MissingField("COMMAND"))?;
        let is_reply = take_accepted(&mut map, &command)?;
        map.remove("COMMAND");
        match (command.as_str(), is_reply) {
            ("EXCHANGE", true) => typed(map, &command).map(Message::ExchangeReply),
            ("EXCHANGE", false) => typed(map, &command).map(Message::Exchange),
            ("SEARCH", _) if map.contains_key("BOX_SET") => {
                typed(map, &command).map(Message::SearchReply)
            }
            ("SEARCH", _) => typed(map, &command).map(Message::Search),
            ("BOX_STATE", _) => typed(map, &command).map(Message::BoxState),
            ("GOODBYE", _) => typed(map, &command).map(Message::Goodbye),
            ("PUBLISH", true) => typed(map, &command).map(Message::PublishReply),
            ("PUBLISH", false) => typed(map, &command).map(Message::Publish),
            ("TRAFFIC", true) => typed(map, &command).map(Message::TrafficReply),
            ("TRAFFIC", false) => typed(map, &command).map(Message::Traffic),
            ("TRANSFER", _) => {
                map.insert("COMMAND".into(), Value::from("TRANSFER"));
                typed(map, &command).map(Message::Transfer)
            }
            _ => Err(ProtocolError::UnknownCommand(
                command.escape_debug().to_string(),
            )),
        }
    }

    pub fn to_value(&self) -> Value {
        let (mut value, accepted) = match self {
            Message::Exchange(m) => (to_value(m), false),
            Message::ExchangeReply(m) => (to_value(m), true),
            Message::Search(m) => (to_value(m), false),
            Message::SearchReply(m) => (to_value(m), false),
            Message::BoxState(m) => (to_value(m), false),
            Message::Goodbye(m) => (to_value(m), false),
            Message::Publish(m) => (to_value(m), false),
            Message::PublishReply(m) => (to_value(m), true),
            Message::Transfer(m) => (to_value(m), false),
            Message::Traffic(m) => (to_value(m), false),
            Message::TrafficReply(m) => (to_value(m), true),
            Message::Error(m) => (to_value(m), false),
        };
        if let Value::Object(map) = &mut value {
            if !matches!(self, Message::Error(_)) {
                map.insert("COMMAND".into(), Value::from(self.command()));
            }
            if accepted {
                map.insert("MESSAGE".into(), Value::from(ACCEPTED));
            }
        }
        value
    }

    pub fn encode(&self) -> String {
        self.to_value().to_string()
    }
}

/// Replies carry `MESSAGE: ACCEPTED`; anything else in `MESSAGE` is a protocol
/// error rather than a silently misread reply.
fn take_accepted(map: &mut Map<String, Value>, command: &str) -> Result<bool, ProtocolError> {
    if command == "TRANSFER" {
        return Ok(false);
    }
    match map.remove("MESSAGE") {
        None => Ok(false),
        Some(Value::String(m)) if m == ACCEPTED => Ok(true),
        Some(other) => Err(ProtocolError::Invalid {
            command: command.into(),
            detail: format!("MESSAGE must be \"ACCEPTED\", got {other}"),
        }),
    }
}

fn typed<T: DeserializeOwned>(map: Map<String, Value>, command: &str) -> Result<T, ProtocolError> {
    serde_json::from_value(Value::Object(map)).map_err(|e| ProtocolError::Invalid {
        command: command.to_owned(),
        detail: e.to_string(),
    })
}

fn to_value<T: Serialize>(m: &T) -> Value {
    // Our message types hold only strings, numbers, maps and JSON values with
    // string keys, which always serialize; Null would only hide a bug in a test.
    serde_json::to_value(m).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests;
