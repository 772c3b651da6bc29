//! The nonce-signing proof that opens every WebSocket session.
//!
//! The verifier hands out a fresh random nonce; the peer signs it together with the
//! verifier's own ID, and sends its public key and ID along. Binding the verifier's
//! ID into the signed text stops a proof made for one daemon from being replayed to
//! another; redeeming each nonce exactly once stops it being replayed to the same one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::identity::{self, Identity};
use crate::ids::NodeId;
use crate::secrets;

/// Domain separation: these bytes never start any other message we sign.
const CONTEXT: &[u8] = b"dandelion-auth-v1\0";

/// How long an issued nonce may wait for its proof.
pub const DEFAULT_NONCE_TTL: Duration = Duration::from_secs(60);

/// Outstanding nonces a verifier keeps at most; a flood of handshake openers must
/// not be able to grow its memory without bound.
pub const DEFAULT_MAX_PENDING: usize = 100_000;

/// A challenge: 32 random bytes as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nonce(String);

impl Nonce {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts a nonce received from the other side; only the shape is checked.
    pub fn parse(text: &str) -> Result<Nonce, AuthError> {
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Nonce(text.to_ascii_lowercase()))
        } else {
            Err(AuthError::MalformedNonce)
        }
    }
}

/// Where a verifier hands out nonces: `GET` answers a [`Challenge`].
pub const NONCE_PATH: &str = "/dandelion/nonce";

/// Below a box's data URL: the entrance's reachability check,
/// `GET {DATA_URL}/dandelion/reachability?nonce=<64 hex>&verifier=<entrance-id>`,
/// which the box answers with the JSON of `identity.prove(verifier, nonce)` (a
/// [`Proof`]). Here so that the box and the entrance share one spelling.
pub const REACHABILITY_PATH: &str = "/dandelion/reachability";

/// Handshake headers carrying a [`Proof`] on the WebSocket upgrade request, so a
/// bad proof is refused with 401/403 before any WebSocket exists.
pub mod header {
    pub const ID: &str = "x-dandelion-id";
    pub const PUBLIC_KEY: &str = "x-dandelion-key";
    pub const NONCE: &str = "x-dandelion-nonce";
    pub const SIGNATURE: &str = "x-dandelion-signature";
}

/// The answer to `GET /dandelion/nonce`: who is asking for the proof, and the nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(rename = "ID")]
    pub id: NodeId,
    #[serde(rename = "NONCE")]
    pub nonce: Nonce,
}

/// What a peer sends to prove it holds the key behind its ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "PUBLIC_KEY")]
    pub public_key: String,
    #[serde(rename = "NONCE")]
    pub nonce: String,
    #[serde(rename = "SIGNATURE")]
    pub signature: String,
}

impl Proof {
    /// The proof as upgrade-request headers.
    pub fn headers(&self) -> [(&'static str, &str); 4] {
        [
            (header::ID, &self.id),
            (header::PUBLIC_KEY, &self.public_key),
            (header::NONCE, &self.nonce),
            (header::SIGNATURE, &self.signature),
        ]
    }

    /// Reads a proof from request headers. `Ok(None)` when none of them is
    /// present (an unauthenticated peer, such as the original's clients).
    pub fn from_headers<'a>(
        get: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Option<Proof>, AuthError> {
        let fields = [
            header::ID,
            header::PUBLIC_KEY,
            header::NONCE,
            header::SIGNATURE,
        ]
        .map(get);
        match fields {
            [None, None, None, None] => Ok(None),
            [Some(id), Some(public_key), Some(nonce), Some(signature)] => Ok(Some(Proof {
                id: id.to_owned(),
                public_key: public_key.to_owned(),
                nonce: nonce.to_owned(),
                signature: signature.to_owned(),
            })),
            _ => Err(AuthError::IncompleteProof),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the handshake carries only part of a proof (x-dandelion-id, -key, -nonce and -signature go together)"
    )]
    IncompleteProof,
    #[error("the nonce is not 64 hex digits")]
    MalformedNonce,
    #[error("unknown or expired nonce; ask for a new one")]
    UnknownNonce,
    #[error("this nonce was already used; a proof is good for one session only")]
    ReplayedNonce,
    #[error("too many handshakes in progress; try again shortly")]
    Busy,
    #[error("the public key is not a valid Ed25519 key")]
    BadPublicKey,
    #[error("ID {claimed} does not belong to the public key presented (it implies {derived})")]
    IdMismatch { claimed: String, derived: String },
    #[error("a {found} may not connect here as that role; expected a {expected}")]
    WrongRole { expected: String, found: String },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("{0}")]
    Random(String),
}

impl AuthError {
    /// A short stable label for metrics (`refused_total{reason=…}`).
    pub fn reason_code(&self) -> &'static str {
        match self {
            AuthError::IncompleteProof => "incomplete_proof",
            AuthError::MalformedNonce => "malformed_nonce",
            AuthError::UnknownNonce => "unknown_nonce",
            AuthError::ReplayedNonce => "replayed_nonce",
            AuthError::Busy => "busy",
            AuthError::BadPublicKey => "bad_public_key",
            AuthError::IdMismatch { .. } => "id_mismatch",
            AuthError::WrongRole { .. } => "wrong_role",
            AuthError::BadSignature => "bad_signature",
            AuthError::Random(_) => "internal",
        }
    }
}

fn signed_text(verifier: &NodeId, nonce: &Nonce) -> Vec<u8> {
    let mut text = Vec::with_capacity(CONTEXT.len() + verifier.as_str().len() + 65);
    text.extend_from_slice(CONTEXT);
    text.extend_from_slice(verifier.as_str().as_bytes());
    text.push(0);
    text.extend_from_slice(nonce.as_str().as_bytes());
    text
}

impl Identity {
    /// Answers `verifier`'s challenge.
    pub fn prove(&self, verifier: &NodeId, nonce: &Nonce) -> Proof {
        let signature = self.sign(&signed_text(verifier, nonce));
        Proof {
            id: self.id().to_string(),
            public_key: self.public_key_hex(),
            nonce: nonce.as_str().to_owned(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// Checks `proof` against a nonce the caller already redeemed. Returns the proven ID
/// and the public key, which a publisher allow-list compares against.
pub fn verify(
    proof: &Proof,
    verifier: &NodeId,
    nonce: &Nonce,
) -> Result<(NodeId, String), AuthError> {
    let key = identity::parse_public_key(&proof.public_key).map_err(|_| AuthError::BadPublicKey)?;
    let claimed = NodeId::parse(&proof.id).map_err(|_| AuthError::IdMismatch {
        claimed: proof.id.escape_debug().to_string(),
        derived: "a valid ID".into(),
    })?;
    let derived = identity::derive_id(claimed.role(), &key);
    if derived != claimed {
        return Err(AuthError::IdMismatch {
            claimed: claimed.to_string(),
            derived: derived.to_string(),
        });
    }
    let signature = hex::decode(&proof.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or(AuthError::BadSignature)?;
    key.verify_strict(&signed_text(verifier, nonce), &signature)
        .map_err(|_| AuthError::BadSignature)?;
    Ok((claimed, hex::encode(key.as_bytes())))
}

#[derive(Debug, Clone, Copy)]
enum NonceState {
    Issued,
    Redeemed,
}

/// The verifier's side: issues nonces and redeems each at most once.
#[derive(Debug)]
pub struct NonceBook {
    ttl: Duration,
    max_pending: usize,
    // A std Mutex: every critical section is a hash-map operation, never held
    // across an await.
    entries: Mutex<HashMap<Nonce, (NonceState, Instant)>>,
}

impl Default for NonceBook {
    fn default() -> Self {
        NonceBook::new(DEFAULT_NONCE_TTL, DEFAULT_MAX_PENDING)
    }
}

impl NonceBook {
    pub fn new(ttl: Duration, max_pending: usize) -> NonceBook {
        NonceBook {
            ttl,
            max_pending,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn issue(&self) -> Result<Nonce, AuthError> {
        let nonce = Nonce(secrets::random_hex(32).map_err(|e| AuthError::Random(e.to_string()))?);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max_pending {
            // Redeemed entries are only kept to name replays; expired ones are dead.
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.max_pending {
                return Err(AuthError::Busy);
            }
        }
        entries.insert(nonce.clone(), (NonceState::Issued, now + self.ttl));
        Ok(nonce)
    }

    /// Marks the nonce used. Redeeming burns it even if the proof then fails, so a
    /// peer cannot try signatures against one nonce.
    pub fn redeem(&self, nonce: &Nonce) -> Result<(), AuthError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get_mut(nonce) {
            Some((_, expires)) if *expires <= now => {
                entries.remove(nonce);
                Err(AuthError::UnknownNonce)
            }
            Some((state @ NonceState::Issued, _)) => {
                *state = NonceState::Redeemed;
                Ok(())
            }
            Some((NonceState::Redeemed, _)) => Err(AuthError::ReplayedNonce),
            None => Err(AuthError::UnknownNonce),
        }
    }

    /// Redeems the proof's nonce and verifies the proof; the usual one-call check.
    pub fn check(&self, proof: &Proof, verifier: &NodeId) -> Result<(NodeId, String), AuthError> {
        let nonce = Nonce::parse(&proof.nonce)?;
        self.redeem(&nonce)?;
        verify(proof, verifier, &nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;

    fn entrance() -> Identity {
        Identity::from_seed(Role::Entrance, [1; 32])
    }

    #[test]
    fn a_signed_nonce_verifies_once() {
        let verifier = entrance();
        let book = NonceBook::default();
        let boxy = Identity::from_seed(Role::Box, [2; 32]);
        let nonce = book.issue().unwrap();
        let proof = boxy.prove(verifier.id(), &nonce);
        let (id, key) = book.check(&proof, verifier.id()).unwrap();
        assert_eq!(&id, boxy.id());
        assert_eq!(key, boxy.public_key_hex());
        assert_eq!(
            book.check(&proof, verifier.id()),
            Err(AuthError::ReplayedNonce)
        );
    }

    #[test]
    fn a_nonce_never_issued_is_refused() {
        let verifier = entrance();
        let book = NonceBook::default();
        let boxy = Identity::from_seed(Role::Box, [2; 32]);
        let forged = Nonce::parse(&"ab".repeat(32)).unwrap();
        let proof = boxy.prove(verifier.id(), &forged);
        assert_eq!(
            book.check(&proof, verifier.id()),
            Err(AuthError::UnknownNonce)
        );
    }

    #[test]
    fn a_proof_for_another_verifier_is_refused() {
        let book = NonceBook::default();
        let boxy = Identity::from_seed(Role::Box, [2; 32]);
        let other = Identity::from_seed(Role::Entrance, [3; 32]);
        let nonce = book.issue().unwrap();
        let proof = boxy.prove(other.id(), &nonce);
        assert_eq!(
            book.check(&proof, entrance().id()),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn claiming_another_boxs_id_is_refused() {
        let verifier = entrance();
        let book = NonceBook::default();
        let victim = Identity::from_seed(Role::Box, [4; 32]);
        let attacker = Identity::from_seed(Role::Box, [5; 32]);
        let nonce = book.issue().unwrap();
        let mut proof = attacker.prove(verifier.id(), &nonce);
        proof.id = victim.id().to_string();
        let err = book.check(&proof, verifier.id()).unwrap_err();
        assert_eq!(err.reason_code(), "id_mismatch");
        assert_eq!(
            err.to_string(),
            format!(
                "ID {} does not belong to the public key presented (it implies {})",
                victim.id(),
                attacker.id()
            )
        );
    }

    #[test]
    fn a_tampered_signature_is_refused() {
        let verifier = entrance();
        let book = NonceBook::default();
        let boxy = Identity::from_seed(Role::Box, [2; 32]);
        let nonce = book.issue().unwrap();
        let mut proof = boxy.prove(verifier.id(), &nonce);
        let flipped = if proof.signature.starts_with('0') {
            "1"
        } else {
            "0"
        };
        proof.signature.replace_range(0..1, flipped);
        assert_eq!(
            book.check(&proof, verifier.id()),
            Err(AuthError::BadSignature)
        );
        proof.signature = "zz".into();
        assert_eq!(
            verify(&proof, verifier.id(), &nonce),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn nonces_expire() {
        let book = NonceBook::new(Duration::ZERO, 10);
        let nonce = book.issue().unwrap();
        assert_eq!(book.redeem(&nonce), Err(AuthError::UnknownNonce));
    }

    #[test]
    fn pending_nonces_are_bounded() {
        let book = NonceBook::new(Duration::from_secs(60), 2);
        book.issue().unwrap();
        book.issue().unwrap();
        assert_eq!(book.issue(), Err(AuthError::Busy));
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        assert_eq!(Nonce::parse("short"), Err(AuthError::MalformedNonce));
        let verifier = entrance();
        let nonce = Nonce::parse(&"cd".repeat(32)).unwrap();
        let proof = Proof {
            id: "box-nope".into(),
            public_key: "00".into(),
            nonce: nonce.as_str().into(),
            signature: String::new(),
        };
        assert_eq!(
            verify(&proof, verifier.id(), &nonce),
            Err(AuthError::BadPublicKey)
        );
    }
}
