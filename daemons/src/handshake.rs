//! The server side of the session handshake: who is this peer, and may it in?
//!
//! A peer proves its key-derived ID with headers on the upgrade request (see
//! `dandelion_core::auth`). Checking the proof is the same for every role; the
//! role decides afterwards whether that ID, key and bearer token are admitted.
//! Refusals are HTTP answers (401: no valid proof; 403: proven but not allowed)
//! with the reason in the body, counted by reason and logged once per peer and
//! reason so a client retrying in a loop cannot flood the log.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dandelion_core::auth::{AuthError, Channel, Proof};
use dandelion_core::ids::{NodeId, Role};
use dandelion_core::nonces::NonceBook;

use crate::metrics::Metrics;

/// A peer whose proof checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    /// Hex public key, for allow-lists.
    pub public_key: String,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub reason: String,
}

impl Refusal {
    pub fn unauthorized(code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code,
            reason: reason.into(),
        }
    }

    /// Full: try again later (503).
    pub fn busy(code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            reason: reason.into(),
        }
    }

    pub fn forbidden(code: &'static str, reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            code,
            reason: reason.into(),
        }
    }
}

impl From<AuthError> for Refusal {
    /// A proof that failed is 401; a verifier that could not check it (too many
    /// handshakes at once, the used-nonce set unreachable) is 503, so the peer
    /// retries rather than doubting its credentials.
    fn from(e: AuthError) -> Refusal {
        match e {
            AuthError::Busy | AuthError::UsedSetUnavailable => {
                Refusal::busy(e.reason_code(), e.to_string())
            }
            _ => Refusal::unauthorized(e.reason_code(), e.to_string()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, format!("{}\n", self.reason)).into_response()
    }
}

/// Checks the proof in `headers`. `Ok(None)` means the peer sent none (the
/// original's clients); whether that is acceptable is the role's decision.
/// `channel` is what the connection the headers came on binds a proof to
/// (`Remote::channel`).
pub async fn verify_proof(
    headers: &HeaderMap,
    nonces: &NonceBook,
    verifier: &NodeId,
    channel: Channel,
) -> Result<Option<Peer>, Refusal> {
    let get = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(proof) = Proof::from_headers(get)? else {
        return Ok(None);
    };
    let (id, public_key) = nonces.check(&proof, verifier, channel).await?;
    Ok(Some(Peer { id, public_key }))
}

/// Requires the proven peer to be of `role`.
pub fn require_role(peer: &Peer, role: Role) -> Result<(), Refusal> {
    if peer.id.role() == role {
        Ok(())
    } else {
        Err(Refusal::forbidden(
            "wrong_role",
            AuthError::WrongRole {
                expected: role.to_string(),
                found: peer.id.role().to_string(),
            }
            .to_string(),
        ))
    }
}

/// The bearer token of an `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub use dandelion_core::tokens::matches as token_matches;

/// Remembers which (peer, reason) pairs were already logged. Bounded: when full it
/// starts over, which at worst logs a repeat.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: Mutex<HashSet<(IpAddr, &'static str)>>,
}

const REFUSAL_LOG_CAPACITY: usize = 10_000;

impl RefusalLog {
    /// Counts the refusal and logs it unless this peer was refused for this reason before.
    pub fn record(&self, metrics: &Metrics, peer: IpAddr, refusal: &Refusal) {
        metrics.refuse(refusal.code);
        let first = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= REFUSAL_LOG_CAPACITY {
                seen.clear();
            }
            seen.insert((peer, refusal.code))
        };
        if first {
            tracing::warn!(%peer, code = refusal.code, status = refusal.status.as_u16(), "refused: {}", refusal.reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_parse_and_compare() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc123".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc123"));
        h.insert(header::AUTHORIZATION, "Basic abc123".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert!(token_matches("abc", "abc"));
        assert!(!token_matches("abd", "abc"));
        assert!(!token_matches("ab", "abc"));
    }
}
