//! The console feed: what a daemon tells `dandelion-console` over
//! `/dandelion/console`, and the client side of it.
//!
//! A console attaches with the daemon's admin token and receives [`Update`]s: a
//! [`Hello`], one full view of what the role knows, then changes as they happen
//! (a box's heartbeat, a box gone, a fresh publisher or box view, an event for
//! the log). The daemon pushes; the console never polls, so its cost does not
//! grow with the fleet. Actions (evict a box, push a file) go through the
//! daemons' ordinary HTTP API, the same one `dandelion evict` and `push` use,
//! so there is one way to do each.
//!
//! The views here are also what the daemons' JSON APIs answer (`GET /api/boxes`
//! on an entrance, `GET /api/files` on a box), so the API, the CLI tables and
//! the console cannot drift apart. Unlike the wire protocol these are new
//! messages, so their fields are snake_case like the rest of the HTTP API.

pub mod client;
pub mod contexts;
pub mod local;
mod views;

pub use client::{ConsoleError, Feed, attach, console_url, evict, push_file};
pub use local::{LocalNetwork, NETWORK_FILE};
pub use views::*;

use serde::{Deserialize, Serialize};

/// Where every daemon serves its console feed.
pub const CONSOLE_PATH: &str = "/dandelion/console";

/// One message of the feed, as a JSON text frame tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// First on every feed: which daemon this is.
    Hello(Hello),
    /// An entrance's whole view; replaces what the console had.
    Entrance(EntranceView),
    /// The entrance's own state changed (self-preservation on or off).
    EntranceStatus(EntranceStatus),
    /// One box, new or changed (a heartbeat, a state change, an eviction).
    BoxRow(Box<BoxView>),
    /// A box left the registry.
    BoxGone { id: String, reason: String },
    /// A publisher's whole view; replaces what the console had.
    Publisher(PublisherView),
    /// A box's whole view of itself; replaces what the console had.
    BoxNode(BoxNodeView),
    /// A line for the event log.
    Event(Event),
}

impl Update {
    pub fn encode(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Update, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Who is speaking, and its clock (TTL countdowns and ages are drawn against it,
/// so a console on a machine with a skewed clock still shows true ages).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// `entrance`, `box` or `publisher`.
    pub role: String,
    pub id: String,
    pub version: String,
    /// The daemon's Unix time in seconds when it sent this.
    pub now: f64,
}

/// How much an event matters; the console's log filters on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Something that happened: a registration, an expiry, an eviction, a placement,
/// a refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix seconds.
    pub at: f64,
    pub level: Level,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_round_trip_tagged_by_type() {
        let updates = [
            Update::Hello(Hello {
                role: "entrance".into(),
                id: "entrance-00".into(),
                version: "0.1.0".into(),
                now: 1.5,
            }),
            Update::BoxGone {
                id: "box-1".into(),
                reason: "expired".into(),
            },
            Update::Event(Event {
                at: 2.0,
                level: Level::Warn,
                text: "box-1 expired".into(),
            }),
            Update::EntranceStatus(EntranceStatus {
                self_preservation: Some("half the boxes went silent".into()),
                heartbeat_interval: 5.0,
            }),
        ];
        for u in updates {
            let text = u.encode();
            assert!(text.contains("\"type\":"), "{text}");
            assert_eq!(Update::decode(&text).unwrap(), u);
        }
        let gone = Update::decode(r#"{"type":"box_gone","id":"b","reason":"r"}"#).unwrap();
        assert!(matches!(gone, Update::BoxGone { .. }));
    }

    #[test]
    fn an_unknown_type_is_an_error_not_a_panic() {
        assert!(Update::decode(r#"{"type":"nonsense"}"#).is_err());
        assert!(Update::decode("not json").is_err());
        assert!(Update::decode("[]").is_err());
    }
}
