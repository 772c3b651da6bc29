//! A peer's URL together with the ID that must answer there.
//!
//! Boxes and publishers sign for, and send tokens to, only the entrance they
//! meant to reach; an entrance hands out its peers the same way. So every
//! configured or learned entrance is a URL *and* an ID, written as one string,
//! `ws://host:7070/dandelion/ws#entrance-<32 hex>`: the fragment never reaches the
//! server, it only tells the dialler whom to expect.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::connection::websocket_url;
use crate::ids::{NodeId, Role};

/// A URL and the ID proven at it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PinnedUrl {
    url: String,
    id: NodeId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error(
        "`{0}` names no peer ID: write it as `{0}#entrance-<32 hex>` (an entrance prints its ID \
         when it starts, at `GET /`, and with `dandelion id entrance`)"
    )]
    MissingId(String),
    #[error("`{url}`: `{id}` is not an ID like entrance-<32 hex>")]
    BadId { url: String, id: String },
    #[error("`{0}` is not a ws://, wss://, http:// or https:// URL")]
    BadUrl(String),
    #[error("`{url}` is pinned to {id}; expected an ID starting `{expected}-`")]
    WrongRole {
        url: String,
        id: NodeId,
        expected: Role,
    },
}

impl PinnedUrl {
    pub fn new(url: &str, id: NodeId) -> Result<PinnedUrl, PinError> {
        let url = url.trim();
        websocket_url(url).map_err(|_| PinError::BadUrl(url.escape_debug().to_string()))?;
        if url.contains('#') {
            return Err(PinError::BadUrl(url.escape_debug().to_string()));
        }
        Ok(PinnedUrl {
            url: url.to_owned(),
            id,
        })
    }

    /// Reads `URL#ID`.
    pub fn parse(text: &str) -> Result<PinnedUrl, PinError> {
        let text = text.trim();
        let Some((url, id)) = text.rsplit_once('#') else {
            return Err(PinError::MissingId(text.escape_debug().to_string()));
        };
        let id = NodeId::parse(id).map_err(|_| PinError::BadId {
            url: url.escape_debug().to_string(),
            id: id.escape_debug().to_string(),
        })?;
        PinnedUrl::new(url, id)
    }

    /// The URL to dial, without the ID.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// Whether the URL reaches another machine without TLS: there the pin
    /// holds only as far as the path is honest (anyone on it can answer with
    /// the real daemon's proofs, see `docs/security.md`).
    pub fn is_plain_remote(&self) -> bool {
        let (scheme, rest) = self.url.split_once("://").unwrap_or_default();
        let plain = matches!(scheme.to_ascii_lowercase().as_str(), "ws" | "http");
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                host
            }
            _ => authority,
        };
        plain && !crate::tokens::is_local_host(host)
    }

    /// Refuses a pin to a daemon of another role than `expected`.
    pub fn require_role(&self, expected: Role) -> Result<(), PinError> {
        if self.id.role() == expected {
            Ok(())
        } else {
            Err(PinError::WrongRole {
                url: self.url.clone(),
                id: self.id.clone(),
                expected,
            })
        }
    }
}

impl fmt::Display for PinnedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.url, self.id)
    }
}

impl std::str::FromStr for PinnedUrl {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PinnedUrl::parse(s)
    }
}

impl TryFrom<String> for PinnedUrl {
    type Error = PinError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        PinnedUrl::parse(&s)
    }
}

impl From<PinnedUrl> for String {
    fn from(p: PinnedUrl) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "entrance-0123456789abcdef0123456789abcdef";

    #[test]
    fn a_url_and_id_round_trip() {
        let text = format!("ws://10.0.0.1:7070/dandelion/ws#{ID}");
        let pin = PinnedUrl::parse(&format!(" {text} ")).unwrap();
        assert_eq!(pin.url(), "ws://10.0.0.1:7070/dandelion/ws");
        assert_eq!(pin.id().as_str(), ID);
        assert_eq!(pin.to_string(), text);
        assert!(pin.require_role(Role::Entrance).is_ok());
        assert_eq!(
            pin.require_role(Role::Box).unwrap_err().to_string(),
            format!(
                "`ws://10.0.0.1:7070/dandelion/ws` is pinned to {ID}; expected an ID starting `box-`"
            )
        );
    }

    #[test]
    fn only_plain_urls_to_other_machines_are_plain_remote() {
        for (url, remote) in [
            ("ws://10.0.0.1:7070/dandelion/ws", true),
            ("http://entrance.example/dandelion/ws", true),
            ("wss://10.0.0.1:7070/dandelion/ws", false),
            ("https://entrance.example/dandelion/ws", false),
            ("ws://127.0.0.1:7070/dandelion/ws", false),
            ("ws://localhost/dandelion/ws", false),
            ("ws://[::1]:7070/dandelion/ws", false),
            ("ws://[2001:db8::1]:7070/dandelion/ws", true),
        ] {
            let pin = PinnedUrl::parse(&format!("{url}#{ID}")).unwrap();
            assert_eq!(pin.is_plain_remote(), remote, "{url}");
        }
    }

    #[test]
    fn a_url_without_an_id_says_how_to_write_one() {
        let err = PinnedUrl::parse("ws://e:7070/dandelion/ws").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ws://e:7070/dandelion/ws` names no peer ID: write it as \
             `ws://e:7070/dandelion/ws#entrance-<32 hex>` (an entrance prints its ID when it \
             starts, at `GET /`, and with `dandelion id entrance`)"
        );
        assert!(matches!(
            PinnedUrl::parse("ws://e/x#entrance-nothex"),
            Err(PinError::BadId { .. })
        ));
        assert!(matches!(
            PinnedUrl::parse(&format!("ftp://e/x#{ID}")),
            Err(PinError::BadUrl(_))
        ));
    }
}
