//! Daemon identities as they appear on the wire and in store keys.
//!
//! An ID is the role prefix plus 32 lowercase hex digits (`box-…`, `publisher-…`,
//! `entrance-…`), the shape the original used. Ours are derived from the daemon's
//! public key (see [`crate::identity`]); the original's were random UUIDs of the
//! same shape, which is why legacy peers still parse here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The three kinds of daemon. The wire `TYPE` field uses the upper-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "ENTRANCE")]
    Entrance,
    #[serde(rename = "BOX")]
    Box,
    #[serde(rename = "PUBLISHER")]
    Publisher,
}

impl Role {
    /// The lower-case prefix of IDs of this role.
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Entrance => "entrance",
            Role::Box => "box",
            Role::Publisher => "publisher",
        }
    }

    /// The upper-case name used in the wire `TYPE` field.
    pub fn wire_name(self) -> &'static str {
        match self {
            Role::Entrance => "ENTRANCE",
            Role::Box => "BOX",
            Role::Publisher => "PUBLISHER",
        }
    }

    pub const ALL: [Role; 3] = [Role::Entrance, Role::Box, Role::Publisher];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

impl FromStr for Role {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| s.eq_ignore_ascii_case(r.prefix()))
            .ok_or_else(|| IdError::UnknownRole(s.to_owned()))
    }
}

/// Number of hex digits after the role prefix.
pub const ID_HEX_LEN: usize = 32;

/// A validated daemon ID. Validation matters beyond tidiness: IDs become store key
/// segments (so no `:`), directory names on boxes (so no `/` or `..`) and metric
/// labels, and they arrive from the network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId {
    role: Role,
    text: String,
}

impl NodeId {
    /// Builds an ID from a role and its 32 hex digits.
    pub fn from_hex(role: Role, hex_digits: &str) -> Result<Self, IdError> {
        Self::parse(&format!("{}-{hex_digits}", role.prefix()))
    }

    pub fn parse(text: &str) -> Result<Self, IdError> {
        let (prefix, digits) = text
            .split_once('-')
            .ok_or_else(|| IdError::Malformed(text.to_owned()))?;
        let role = Role::ALL
            .into_iter()
            .find(|r| r.prefix() == prefix)
            .ok_or_else(|| IdError::Malformed(text.to_owned()))?;
        let well_formed = digits.len() == ID_HEX_LEN
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !well_formed {
            return Err(IdError::Malformed(text.to_owned()));
        }
        Ok(NodeId {
            role,
            text: text.to_owned(),
        })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for NodeId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::parse(s)
    }
}

impl TryFrom<String> for NodeId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        NodeId::parse(&value)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.text
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "`{}` is not a Dandelion ID (expected box-, publisher- or entrance- and 32 lowercase hex digits)",
        .0.escape_debug()
    )]
    Malformed(String),
    #[error("unknown role `{}` (expected entrance, box or publisher)", .0.escape_debug())]
    UnknownRole(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_shape() {
        let id = NodeId::parse("box-f4090467bdc047eb9c35080fa9ed6291").unwrap();
        assert_eq!(id.role(), Role::Box);
        assert_eq!(id.to_string(), "box-f4090467bdc047eb9c35080fa9ed6291");
        let p = NodeId::parse("publisher-a44279a3521240d7913ddc4aef3dcc0b").unwrap();
        assert_eq!(p.role(), Role::Publisher);
    }

    #[test]
    fn refuses_ids_that_could_escape_keys_or_paths() {
        for bad in [
            "",
            "box",
            "box-",
            "box-x",
            "boxes-f4090467bdc047eb9c35080fa9ed6291",
            "box-F4090467BDC047EB9C35080FA9ED6291",
            "box-f4090467bdc047eb9c35080fa9ed629",
            "box-f4090467bdc047eb9c35080fa9ed62911",
            "box-../../etc/passwdxxxxxxxxxxxxxxxxxx",
            "box-f4090467bdc047eb9c35080fa9ed62:1",
            "publisher-probe",
        ] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn error_names_the_input() {
        let err = NodeId::parse("box-x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`box-x` is not a Dandelion ID (expected box-, publisher- or entrance- and 32 lowercase hex digits)"
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: NodeId =
            serde_json::from_str("\"entrance-3eb958e0f96b4464b0341a714ed0c5bc\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"entrance-3eb958e0f96b4464b0341a714ed0c5bc\""
        );
        assert!(serde_json::from_str::<NodeId>("\"entrance-nope\"").is_err());
    }

    #[test]
    fn roles_parse_case_insensitively() {
        assert_eq!("BOX".parse::<Role>().unwrap(), Role::Box);
        assert_eq!("publisher".parse::<Role>().unwrap(), Role::Publisher);
        assert!("viewer".parse::<Role>().is_err());
    }
}
