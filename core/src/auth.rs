//! The signed proofs that open every session and answer the reachability check.
//!
//! A proof is an Ed25519 signature over a [`Claim`]: a short text that starts with
//! what the signature is *for* ([`Purpose`]), then names the prover, the verifier,
//! the verifier's fresh nonce and, for reachability, the data URL answered on. A
//! signature made for one purpose, verifier, nonce or URL verifies for no other, so
//! no endpoint that signs on request can be turned into a source of handshake
//! proofs, and a proof handed to one daemon cannot be replayed to another.
//!
//! Sessions are mutual. The dialling side sends its own nonce when it asks for
//! the server's; the server answers with its nonce and a [`Purpose::SessionServer`]
//! proof over the client's nonce; the client checks that proof comes from the ID
//! it meant to reach, and only then signs a [`Purpose::SessionClient`] proof over
//! the server's nonce for exactly that ID. A client therefore never signs for a
//! peer it did not choose, and never sends a bearer token to a peer that did not
//! prove who it is.
//!
//! When TLS ends in the daemon, a session proof also signs the connection's
//! RFC 9266 `tls-exporter` value ([`Channel::TlsExporter`]): the proof then holds
//! on that one TLS connection and nowhere else, so even a relay with a valid
//! certificate for the name the client dialled cannot forward it. Behind a
//! TLS-terminating proxy the daemon sees a plain connection and the nonce alone
//! keeps the proof fresh ([`Channel::Unbound`]); the daemon's challenge says which
//! form it expects.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::identity::{self, Identity};
use crate::ids::NodeId;
use crate::secrets;

/// The first line of every signed text; no other message we sign starts with it.
const VERSION_LINE: &str = "dandelion-proof-v2";

/// What a signature is for: the first thing every signed text names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The dialling side of a WebSocket session proves its ID to the server.
    SessionClient,
    /// The server of a WebSocket session proves its ID to the dialling side.
    SessionServer,
    /// A box proves to an entrance that it answers at its data URL.
    Reachability,
}

impl Purpose {
    pub fn label(self) -> &'static str {
        match self {
            Purpose::SessionClient => "session-client",
            Purpose::SessionServer => "session-server",
            Purpose::Reachability => "reachability",
        }
    }
}

/// The exporter label of RFC 9266 (`tls-exporter` channel binding).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// What the challenge's `CHANNEL` says when the proof must be bound to the TLS
/// connection it is presented on.
pub const CHANNEL_TLS_EXPORTER: &str = "tls-exporter";

/// What a proof is tied to beyond its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Nothing: the nonce alone makes the proof fresh. Used on plain connections
    /// and behind TLS-terminating proxies, and always for reachability.
    Unbound,
    /// The 32-byte `tls-exporter` value of the TLS connection the proof is
    /// presented on, as both ends compute it.
    TlsExporter([u8; 32]),
}

impl Channel {
    fn text(self) -> String {
        match self {
            Channel::Unbound => "none".to_owned(),
            Channel::TlsExporter(value) => format!("tls-exporter:{}", hex::encode(value)),
        }
    }
}

/// Everything a proof signs except the prover, whose ID comes with the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    purpose: Purpose,
    verifier: &'a NodeId,
    nonce: &'a Nonce,
    url: Option<&'a str>,
    channel: Channel,
}

impl<'a> Claim<'a> {
    /// A client's proof for the server `verifier`, over the server's nonce.
    pub fn session_client(verifier: &'a NodeId, nonce: &'a Nonce) -> Claim<'a> {
        Claim::plain(Purpose::SessionClient, verifier, nonce)
    }

    /// A server's proof for the client `verifier`, over the client's nonce.
    pub fn session_server(verifier: &'a NodeId, nonce: &'a Nonce) -> Claim<'a> {
        Claim::plain(Purpose::SessionServer, verifier, nonce)
    }

    /// A box's proof for the entrance `verifier` that it answers at `url`. The URL
    /// must be printable (no control characters), or the text would be ambiguous.
    pub fn reachability(
        verifier: &'a NodeId,
        nonce: &'a Nonce,
        url: &'a str,
    ) -> Result<Claim<'a>, AuthError> {
        if url.is_empty() || url.chars().any(char::is_control) {
            return Err(AuthError::BadUrl);
        }
        Ok(Claim {
            url: Some(url),
            ..Claim::plain(Purpose::Reachability, verifier, nonce)
        })
    }

    fn plain(purpose: Purpose, verifier: &'a NodeId, nonce: &'a Nonce) -> Claim<'a> {
        Claim {
            purpose,
            verifier,
            nonce,
            url: None,
            channel: Channel::Unbound,
        }
    }

    /// The same claim, bound to a TLS connection (or not).
    pub fn on(self, channel: Channel) -> Claim<'a> {
        Claim { channel, ..self }
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// The signed text: one `name: value` line per field, in a fixed order. IDs
    /// and nonces are hex, the URL has no control characters, so no value can
    /// end its line early or forge another field.
    fn text(&self, prover: &NodeId) -> Vec<u8> {
        format!(
            "{VERSION_LINE}\npurpose: {}\nprover: {prover}\nverifier: {}\nnonce: {}\nurl: {}\nchannel: {}\n",
            self.purpose.label(),
            self.verifier,
            self.nonce.as_str(),
            self.url.unwrap_or(""),
            self.channel.text(),
        )
        .into_bytes()
    }
}

/// A challenge: 32 bytes as 64 hex digits (a server's are made by
/// [`crate::nonces::NonceBook`], a client's are random).
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

    /// The nonce's 32 bytes (its hex is checked by [`Nonce::parse`]).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        // Always 64 hex digits by construction.
        let _ = hex::decode_to_slice(&self.0, &mut bytes);
        bytes
    }

    pub fn from_bytes(bytes: &[u8; 32]) -> Nonce {
        Nonce(hex::encode(bytes))
    }

    /// A fresh random nonce.
    pub fn random() -> Result<Nonce, AuthError> {
        secrets::random_hex(32)
            .map(Nonce)
            .map_err(|e| AuthError::Random(e.to_string()))
    }
}

/// Where a server hands out its nonce and proves its own ID:
/// `GET /dandelion/nonce?peer=<client-id>&nonce=<client nonce, 64 hex>` answers a
/// [`Challenge`] whose `PROOF` is the server's [`Purpose::SessionServer`] proof for
/// that client and nonce. Without the query the answer has no `PROOF`.
pub const NONCE_PATH: &str = "/dandelion/nonce";

/// Below a box's data URL: the entrance's reachability check,
/// `GET {DATA_URL}/dandelion/reachability?nonce=<64 hex>&verifier=<entrance-id>`,
/// which the box answers with a [`Purpose::Reachability`] [`Proof`] naming its own
/// data URL. Here so that the box and the entrance share one spelling.
pub const REACHABILITY_PATH: &str = "/dandelion/reachability";

/// Handshake headers carrying a [`Proof`] on the WebSocket upgrade request, so a
/// bad proof is refused with 401/403 before any WebSocket exists.
pub mod header {
    pub const ID: &str = "x-dandelion-id";
    pub const PUBLIC_KEY: &str = "x-dandelion-key";
    pub const NONCE: &str = "x-dandelion-nonce";
    pub const SIGNATURE: &str = "x-dandelion-signature";
}

/// The answer to `GET /dandelion/nonce`: who the server is, its nonce for the
/// client to sign, and (when the client sent its own nonce) the server's proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    #[serde(rename = "ID")]
    pub id: NodeId,
    #[serde(rename = "NONCE")]
    pub nonce: Nonce,
    #[serde(rename = "PROOF", default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
    /// [`CHANNEL_TLS_EXPORTER`] when TLS ends in this daemon: the client's proof
    /// must then sign the upgrade connection's exporter value.
    #[serde(rename = "CHANNEL", default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
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
    #[error("the proof comes from {found}, not from {expected}")]
    WrongPeer { expected: String, found: String },
    #[error(
        "the signature does not verify: it was not made by this key for this purpose, verifier and nonce"
    )]
    BadSignature,
    #[error("a URL in a proof must be non-empty and free of control characters")]
    BadUrl,
    #[error("the server sent no proof of its own ID (an older Dandelion cannot be reached)")]
    NoServerProof,
    #[error("{0}")]
    Random(String),
    #[error("a nonce secret must be at least {min} bytes; this one has {len}")]
    WeakSecret { len: usize, min: usize },
    /// The store's error is logged where it happens: it names the store's host,
    /// and this text goes to an unauthenticated peer.
    #[error("the set of used nonces is unavailable (the store does not answer); try again shortly")]
    UsedSetUnavailable,
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
            AuthError::WrongPeer { .. } => "wrong_peer",
            AuthError::BadSignature => "bad_signature",
            AuthError::BadUrl => "bad_url",
            AuthError::NoServerProof => "no_server_proof",
            AuthError::Random(_) | AuthError::WeakSecret { .. } => "internal",
            AuthError::UsedSetUnavailable => "used_nonces_unavailable",
        }
    }
}

impl Identity {
    /// Signs `claim` as this daemon.
    pub fn prove(&self, claim: &Claim<'_>) -> Proof {
        let signature = self.sign(&claim.text(self.id()));
        Proof {
            id: self.id().to_string(),
            public_key: self.public_key_hex(),
            nonce: claim.nonce.as_str().to_owned(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// Checks that `proof` signs `claim` with the key behind the ID it names. Returns
/// the proven ID and the public key, which allow-lists compare against.
pub fn verify(proof: &Proof, claim: &Claim<'_>) -> Result<(NodeId, String), AuthError> {
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
    key.verify_strict(&claim.text(&claimed), &signature)
        .map_err(|_| AuthError::BadSignature)?;
    Ok((claimed, hex::encode(key.as_bytes())))
}

/// [`verify`], and the prover must be `expected`: what a side that chose its
/// peer (a dialling client, an entrance checking a registered box) uses.
pub fn verify_from(
    proof: &Proof,
    expected: &NodeId,
    claim: &Claim<'_>,
) -> Result<String, AuthError> {
    if proof.id != expected.as_str() {
        return Err(AuthError::WrongPeer {
            expected: expected.to_string(),
            found: proof.id.escape_debug().to_string(),
        });
    }
    verify(proof, claim).map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;

    fn entrance() -> Identity {
        Identity::from_seed(Role::Entrance, [1; 32])
    }

    fn boxy() -> Identity {
        Identity::from_seed(Role::Box, [2; 32])
    }

    #[test]
    fn a_proof_for_another_verifier_is_refused() {
        let other = Identity::from_seed(Role::Entrance, [3; 32]);
        let nonce = Nonce::random().unwrap();
        let proof = boxy().prove(&Claim::session_client(other.id(), &nonce));
        assert_eq!(
            verify(&proof, &Claim::session_client(entrance().id(), &nonce)),
            Err(AuthError::BadSignature)
        );
    }

    /// Every purpose's proof, over the same verifier and nonce, is refused as
    /// every other purpose: no signing endpoint can stand in for another.
    #[test]
    fn a_proof_for_one_purpose_serves_no_other() {
        let verifier = entrance();
        let nonce = Nonce::parse(&"5a".repeat(32)).unwrap();
        let url = "http://127.0.0.1:7081";
        let claims = [
            Claim::session_client(verifier.id(), &nonce),
            Claim::session_server(verifier.id(), &nonce),
            Claim::reachability(verifier.id(), &nonce, url).unwrap(),
        ];
        for made in &claims {
            let proof = boxy().prove(made);
            for checked in &claims {
                let outcome = verify(&proof, checked);
                if made == checked {
                    assert!(outcome.is_ok(), "{:?}", made.purpose());
                } else {
                    assert_eq!(
                        outcome,
                        Err(AuthError::BadSignature),
                        "a {:?} proof accepted as {:?}",
                        made.purpose(),
                        checked.purpose()
                    );
                }
            }
        }
    }

    /// A proof bound to one TLS connection verifies on that connection only,
    /// and never as an unbound one (nor an unbound one as bound).
    #[test]
    fn a_bound_proof_holds_on_its_connection_only() {
        let verifier = entrance();
        let nonce = Nonce::parse(&"5a".repeat(32)).unwrap();
        let here = Claim::session_client(verifier.id(), &nonce).on(Channel::TlsExporter([1; 32]));
        let there = Claim::session_client(verifier.id(), &nonce).on(Channel::TlsExporter([2; 32]));
        let plain = Claim::session_client(verifier.id(), &nonce);
        let proof = boxy().prove(&here);
        assert!(verify(&proof, &here).is_ok());
        assert_eq!(verify(&proof, &there), Err(AuthError::BadSignature));
        assert_eq!(verify(&proof, &plain), Err(AuthError::BadSignature));
        assert_eq!(
            verify(&boxy().prove(&plain), &here),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_reachability_proof_names_its_url() {
        let verifier = entrance();
        let nonce = Nonce::parse(&"5a".repeat(32)).unwrap();
        let here = Claim::reachability(verifier.id(), &nonce, "http://10.0.0.5:7071").unwrap();
        let there = Claim::reachability(verifier.id(), &nonce, "http://10.0.0.6:7071").unwrap();
        let proof = boxy().prove(&here);
        assert!(verify(&proof, &here).is_ok());
        assert_eq!(verify(&proof, &there), Err(AuthError::BadSignature));
        assert_eq!(
            Claim::reachability(verifier.id(), &nonce, "http://a\nurl: x").unwrap_err(),
            AuthError::BadUrl
        );
    }

    #[test]
    fn verify_from_names_the_peer_that_answered_instead() {
        let verifier = entrance();
        let nonce = Nonce::parse(&"5a".repeat(32)).unwrap();
        let claim = Claim::session_server(verifier.id(), &nonce);
        let stranger = Identity::from_seed(Role::Box, [9; 32]);
        let proof = stranger.prove(&claim);
        assert_eq!(
            verify_from(&proof, boxy().id(), &claim),
            Err(AuthError::WrongPeer {
                expected: boxy().id().to_string(),
                found: stranger.id().to_string(),
            })
        );
        assert_eq!(
            verify_from(&boxy().prove(&claim), boxy().id(), &claim),
            Ok(boxy().public_key_hex())
        );
    }

    #[test]
    fn the_signed_text_names_purpose_prover_and_verifier() {
        let nonce = Nonce::parse(&"0f".repeat(32)).unwrap();
        let text = Claim::reachability(entrance().id(), &nonce, "http://h:1")
            .unwrap()
            .text(boxy().id());
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!(
                "dandelion-proof-v2\npurpose: reachability\nprover: {}\nverifier: {}\nnonce: {}\nurl: http://h:1\nchannel: none\n",
                boxy().id(),
                entrance().id(),
                nonce.as_str()
            )
        );
    }

    #[test]
    fn claiming_another_boxs_id_is_refused() {
        let verifier = entrance();
        let victim = Identity::from_seed(Role::Box, [4; 32]);
        let attacker = Identity::from_seed(Role::Box, [5; 32]);
        let nonce = Nonce::random().unwrap();
        let claim = Claim::session_client(verifier.id(), &nonce);
        let mut proof = attacker.prove(&claim);
        proof.id = victim.id().to_string();
        let err = verify(&proof, &claim).unwrap_err();
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
        let nonce = Nonce::random().unwrap();
        let claim = Claim::session_client(verifier.id(), &nonce);
        let mut proof = boxy().prove(&claim);
        let flipped = if proof.signature.starts_with('0') {
            "1"
        } else {
            "0"
        };
        proof.signature.replace_range(0..1, flipped);
        assert_eq!(verify(&proof, &claim), Err(AuthError::BadSignature));
        proof.signature = "zz".into();
        assert_eq!(verify(&proof, &claim), Err(AuthError::BadSignature));
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
            verify(&proof, &Claim::session_client(verifier.id(), &nonce)),
            Err(AuthError::BadPublicKey)
        );
    }
}
