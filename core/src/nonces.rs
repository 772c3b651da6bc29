//! The server's side of a session handshake: nonces that cost the server no
//! memory until a proof redeems them.
//!
//! A nonce carries its own issue time and a MAC under the verifier's secret
//! (`time ‖ random ‖ HMAC-SHA256(secret, verifier ‖ time ‖ random)[..16]`, the
//! 64 hex digits the protocol always had), so handing one out stores nothing:
//! a flood of `GET /dandelion/nonce` can no longer fill a table and lock real
//! peers out. Checking a nonce needs only the secret and the clock, so several
//! processes of one role that share the secret (`nonce_secret_file`) accept
//! each other's nonces.
//!
//! A nonce is remembered as used only after the proof that redeems it has been
//! verified, and only where replay is possible at all: a proof bound to a TLS
//! connection ([`Channel::TlsExporter`]) holds on that connection alone, so it
//! needs no memory. For unbound proofs (loopback, behind a TLS-terminating
//! proxy) the used set is bounded and fails closed: when it is full of
//! unexpired nonces, handshakes are refused as `busy` rather than forgetting
//! one and letting a replay through. Processes sharing a Redis store share the
//! used set too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use subtle::ConstantTimeEq;

use crate::auth::{AuthError, Channel, Claim, Nonce, Proof, verify};
use crate::ids::NodeId;
use crate::store::Store;

/// How long an issued nonce may wait for its proof.
pub const DEFAULT_NONCE_TTL: Duration = Duration::from_secs(60);

/// Redeemed, unexpired unbound nonces remembered at most: at the default TTL,
/// 1 600 unbound handshakes a second, each with a valid signature.
pub const DEFAULT_MAX_USED: usize = 100_000;

/// Shortest secret accepted: 256 bits, the MAC's own strength.
pub const MIN_SECRET_LEN: usize = 32;

/// How far in the future an issue time may lie (clocks of processes sharing a
/// secret differ a little).
const CLOCK_SKEW: u64 = 5;

const TAG_LEN: usize = 16;

/// Issues and redeems the nonces of one verifier (or of several processes
/// sharing its secret).
#[derive(Debug)]
pub struct NonceBook {
    key: Key,
    ttl: Duration,
    used: Used,
}

/// `ring`'s key does not say what it holds in `Debug`, and neither do we.
struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

#[derive(Debug)]
enum Used {
    /// Nonce bytes → expiry (Unix seconds). A std Mutex: every critical
    /// section is a map operation, never held across an await.
    Memory {
        max: usize,
        entries: Mutex<HashMap<[u8; 32], u64>>,
    },
    /// A sorted set in a shared store: member the nonce, score its expiry.
    Store {
        store: Arc<dyn Store>,
        key: String,
        max: u64,
    },
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NonceBook {
    /// A book under `secret`, which must be at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(secret: &[u8]) -> Result<NonceBook, AuthError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::WeakSecret {
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(NonceBook {
            key: Key(hmac::Key::new(hmac::HMAC_SHA256, secret)),
            ttl: DEFAULT_NONCE_TTL,
            used: Used::Memory {
                max: DEFAULT_MAX_USED,
                entries: Mutex::new(HashMap::new()),
            },
        })
    }

    /// A book under a fresh random secret: nonces it issues are good for this
    /// process only.
    pub fn generate() -> Result<NonceBook, AuthError> {
        let secret =
            crate::secrets::random_bytes::<32>().map_err(|e| AuthError::Random(e.to_string()))?;
        NonceBook::new(&secret)
    }

    pub fn with_ttl(mut self, ttl: Duration) -> NonceBook {
        self.ttl = ttl;
        self
    }

    /// Remembers at most `max` redeemed nonces in this process.
    pub fn with_max_used(mut self, max: usize) -> NonceBook {
        self.used = Used::Memory {
            max,
            entries: Mutex::new(HashMap::new()),
        };
        self
    }

    /// Keeps the used set at `key` in a store several processes share.
    pub fn shared_through(mut self, store: Arc<dyn Store>, key: String) -> NonceBook {
        self.used = Used::Store {
            store,
            key,
            max: DEFAULT_MAX_USED as u64,
        };
        self
    }

    /// A nonce for a client of `verifier` (this server) to sign. Stores nothing.
    pub fn issue(&self, verifier: &NodeId) -> Result<Nonce, AuthError> {
        let random =
            crate::secrets::random_bytes::<8>().map_err(|e| AuthError::Random(e.to_string()))?;
        Ok(self.issue_at(verifier, now_unix(), random))
    }

    fn issue_at(&self, verifier: &NodeId, time: u64, random: [u8; 8]) -> Nonce {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&time.to_be_bytes());
        bytes[8..16].copy_from_slice(&random);
        let tag = self.tag(verifier, &bytes[..16]);
        bytes[16..].copy_from_slice(&tag);
        Nonce::from_bytes(&bytes)
    }

    fn tag(&self, verifier: &NodeId, body: &[u8]) -> [u8; TAG_LEN] {
        let mut context = hmac::Context::with_key(&self.key.0);
        context.update(b"dandelion-nonce-v1\n");
        context.update(verifier.as_str().as_bytes());
        context.update(b"\n");
        context.update(body);
        let full = context.sign();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        tag
    }

    /// Whether `nonce` was issued under this secret for `verifier` and is
    /// still fresh at `now`; its expiry (Unix seconds) when it is.
    fn open(&self, nonce: &Nonce, verifier: &NodeId, now: u64) -> Result<u64, AuthError> {
        let bytes = nonce.to_bytes();
        let expected = self.tag(verifier, &bytes[..16]);
        if !bool::from(expected.ct_eq(&bytes[16..])) {
            return Err(AuthError::UnknownNonce);
        }
        let mut time = [0u8; 8];
        time.copy_from_slice(&bytes[..8]);
        let issued = u64::from_be_bytes(time);
        let expires = issued.saturating_add(self.ttl.as_secs());
        if issued > now.saturating_add(CLOCK_SKEW) || expires <= now {
            return Err(AuthError::UnknownNonce);
        }
        Ok(expires)
    }

    /// Checks a client's session proof for `verifier` (this server) presented
    /// on `channel`: the nonce is one of ours and fresh, the signature holds,
    /// and an unbound nonce was not redeemed before (it is then remembered).
    /// Returns the proven ID and public key.
    pub async fn check(
        &self,
        proof: &Proof,
        verifier: &NodeId,
        channel: Channel,
    ) -> Result<(NodeId, String), AuthError> {
        let nonce = Nonce::parse(&proof.nonce)?;
        let now = now_unix();
        let expires = self.open(&nonce, verifier, now)?;
        let proven = verify(proof, &Claim::session_client(verifier, &nonce).on(channel))?;
        if channel == Channel::Unbound {
            self.remember(&nonce, expires, now).await?;
        }
        Ok(proven)
    }

    /// Marks `nonce` used until `expires`: `ReplayedNonce` if it already was,
    /// `Busy` if the set is full of unexpired nonces (closed, not forgetful).
    async fn remember(&self, nonce: &Nonce, expires: u64, now: u64) -> Result<(), AuthError> {
        match &self.used {
            Used::Memory { max, entries } => {
                let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
                let bytes = nonce.to_bytes();
                if entries.get(&bytes).is_some_and(|e| *e > now) {
                    return Err(AuthError::ReplayedNonce);
                }
                if entries.len() >= *max {
                    entries.retain(|_, e| *e > now);
                    if entries.len() >= *max {
                        return Err(AuthError::Busy);
                    }
                }
                entries.insert(bytes, expires);
                Ok(())
            }
            Used::Store { store, key, max } => {
                let unavailable = |e: crate::store::StoreError| {
                    tracing::warn!("cannot check a nonce against the used set: {e}");
                    AuthError::UsedSetUnavailable
                };
                #[allow(clippy::cast_precision_loss)]
                let (now_f, expires_f) = (now as f64, expires as f64);
                store
                    .zrem_range_by_score(key, f64::NEG_INFINITY, now_f)
                    .await
                    .map_err(unavailable)?;
                if store.zcard(key).await.map_err(unavailable)? >= *max {
                    return Err(AuthError::Busy);
                }
                if store
                    .zadd(key, nonce.as_str(), expires_f)
                    .await
                    .map_err(unavailable)?
                {
                    Ok(())
                } else {
                    Err(AuthError::ReplayedNonce)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::ids::Role;

    fn entrance() -> Identity {
        Identity::from_seed(Role::Entrance, [1; 32])
    }

    fn boxy() -> Identity {
        Identity::from_seed(Role::Box, [2; 32])
    }

    fn book() -> NonceBook {
        NonceBook::new(&[7; 32]).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn an_unbound_nonce_verifies_once() {
        let verifier = entrance();
        let book = book();
        let nonce = book.issue(verifier.id()).unwrap();
        let proof = boxy().prove(&Claim::session_client(verifier.id(), &nonce));
        let (id, key) = block_on(book.check(&proof, verifier.id(), Channel::Unbound)).unwrap();
        assert_eq!(&id, boxy().id());
        assert_eq!(key, boxy().public_key_hex());
        assert_eq!(
            block_on(book.check(&proof, verifier.id(), Channel::Unbound)),
            Err(AuthError::ReplayedNonce)
        );
    }

    #[test]
    fn a_proof_bound_to_its_connection_needs_no_memory() {
        let verifier = entrance();
        let book = book().with_max_used(0);
        let nonce = book.issue(verifier.id()).unwrap();
        let channel = Channel::TlsExporter([9; 32]);
        let proof = boxy().prove(&Claim::session_client(verifier.id(), &nonce).on(channel));
        assert!(block_on(book.check(&proof, verifier.id(), channel)).is_ok());
        // Not even a full (here: empty) used set stops a bound proof.
        let Used::Memory { entries, .. } = &book.used else {
            unreachable!()
        };
        assert!(entries.lock().unwrap().is_empty());
    }

    #[test]
    fn issuing_stores_nothing_and_forged_or_foreign_nonces_are_unknown() {
        let verifier = entrance();
        let book = book();
        for _ in 0..10_000 {
            book.issue(verifier.id()).unwrap();
        }
        let Used::Memory { entries, .. } = &book.used else {
            unreachable!()
        };
        assert!(entries.lock().unwrap().is_empty());
        let forged = Nonce::parse(&"ab".repeat(32)).unwrap();
        let proof = boxy().prove(&Claim::session_client(verifier.id(), &forged));
        assert_eq!(
            block_on(book.check(&proof, verifier.id(), Channel::Unbound)),
            Err(AuthError::UnknownNonce)
        );
        // Issued under another secret, or for another verifier.
        let other = NonceBook::new(&[8; 32]).unwrap();
        let theirs = other.issue(verifier.id()).unwrap();
        let proof = boxy().prove(&Claim::session_client(verifier.id(), &theirs));
        assert_eq!(
            block_on(book.check(&proof, verifier.id(), Channel::Unbound)),
            Err(AuthError::UnknownNonce)
        );
        let elsewhere = Identity::from_seed(Role::Entrance, [3; 32]);
        let for_them = book.issue(elsewhere.id()).unwrap();
        let proof = boxy().prove(&Claim::session_client(verifier.id(), &for_them));
        assert_eq!(
            block_on(book.check(&proof, verifier.id(), Channel::Unbound)),
            Err(AuthError::UnknownNonce)
        );
    }

    #[test]
    fn processes_sharing_the_secret_accept_each_others_nonces() {
        let verifier = entrance();
        let (a, b) = (book(), book());
        let nonce = a.issue(verifier.id()).unwrap();
        let proof = boxy().prove(&Claim::session_client(verifier.id(), &nonce));
        assert!(block_on(b.check(&proof, verifier.id(), Channel::Unbound)).is_ok());
    }

    #[test]
    fn nonces_expire_and_future_ones_are_refused() {
        let verifier = entrance();
        let book = book();
        let now = now_unix();
        let old = book.issue_at(verifier.id(), now - 61, [1; 8]);
        assert_eq!(
            book.open(&old, verifier.id(), now),
            Err(AuthError::UnknownNonce)
        );
        let fresh = book.issue_at(verifier.id(), now - 59, [1; 8]);
        assert_eq!(book.open(&fresh, verifier.id(), now), Ok(now + 1));
        let future = book.issue_at(verifier.id(), now + 60, [1; 8]);
        assert_eq!(
            book.open(&future, verifier.id(), now),
            Err(AuthError::UnknownNonce)
        );
    }

    #[test]
    fn a_full_used_set_fails_closed() {
        let verifier = entrance();
        let book = book().with_max_used(2);
        let prove = || {
            let nonce = book.issue(verifier.id()).unwrap();
            boxy().prove(&Claim::session_client(verifier.id(), &nonce))
        };
        for _ in 0..2 {
            assert!(block_on(book.check(&prove(), verifier.id(), Channel::Unbound)).is_ok());
        }
        assert_eq!(
            block_on(book.check(&prove(), verifier.id(), Channel::Unbound)),
            Err(AuthError::Busy)
        );
    }

    #[test]
    fn a_bad_signature_is_not_remembered() {
        let verifier = entrance();
        let book = book().with_max_used(1);
        let nonce = book.issue(verifier.id()).unwrap();
        let mut proof = boxy().prove(&Claim::session_client(verifier.id(), &nonce));
        let good = proof.clone();
        proof.signature.replace_range(0..2, "00");
        proof.signature.replace_range(2..4, "ff");
        assert_eq!(
            block_on(book.check(&proof, verifier.id(), Channel::Unbound)),
            Err(AuthError::BadSignature)
        );
        // The set stayed empty: the honest proof over the same nonce still works.
        assert!(block_on(book.check(&good, verifier.id(), Channel::Unbound)).is_ok());
    }

    #[test]
    fn weak_secrets_are_refused() {
        assert!(NonceBook::new(b"short").is_err());
    }
}
