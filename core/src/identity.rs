//! A daemon's key pair and the ID derived from it.
//!
//! The ID is the role prefix plus the first 32 hex digits of SHA-256 of the Ed25519
//! public key, so anyone holding the public key can check an ID, and nobody can
//! claim an ID without the private key (DESIGN.md, "Trust").

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::ids::{ID_HEX_LEN, IdError, NodeId, Role};
use crate::secrets::{self, SecretError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(
        "{path} does not hold an Ed25519 key (expected 64 hex digits); move it away to create a new identity"
    )]
    BadKeyFile { path: PathBuf },
    #[error("`{0}` is not an Ed25519 public key (expected 64 hex digits)")]
    BadPublicKey(String),
}

/// A daemon's own identity: its signing key and the ID it implies.
pub struct Identity {
    key: SigningKey,
    id: NodeId,
}

impl std::fmt::Debug for Identity {
    // Never print the private key, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The file that holds a role's key seed inside a data directory.
    pub fn key_path(data_dir: &Path, role: Role) -> PathBuf {
        data_dir.join(format!("{}.key", role.prefix()))
    }

    /// Loads the role's key from `data_dir`, creating it (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path, role: Role) -> Result<Identity, IdentityError> {
        let path = Self::key_path(data_dir, role);
        let (seed_hex, _) = secrets::load_or_create(&path, || secrets::random_hex(32))?;
        let seed: [u8; 32] = hex::decode(&seed_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(IdentityError::BadKeyFile { path })?;
        Ok(Identity::from_seed(role, seed))
    }

    /// An identity from a fixed seed: for tests and load generators that need many.
    pub fn from_seed(role: Role, seed: [u8; 32]) -> Identity {
        let key = SigningKey::from_bytes(&seed);
        let id = derive_id(role, &key.verifying_key());
        Identity { key, id }
    }

    /// A fresh random identity that is never written to disk.
    pub fn generate(role: Role) -> Result<Identity, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SecretError::Random(e.to_string()))?;
        Ok(Identity::from_seed(role, seed))
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    pub fn role(&self) -> Role {
        self.id.role()
    }

    /// The public key as 64 hex digits, the form used on the wire and in config files.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// The private key's seed, for the identity certificate (`crate::idcert`).
    pub(crate) fn seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.key.to_bytes())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.key.sign(message)
    }
}

/// The ID that a public key of `role` implies.
pub fn derive_id(role: Role, key: &VerifyingKey) -> NodeId {
    let digest = Sha256::digest(key.as_bytes());
    let hex_digits = hex::encode(digest);
    let short = hex_digits.get(..ID_HEX_LEN).unwrap_or(&hex_digits);
    match NodeId::from_hex(role, short) {
        Ok(id) => id,
        // SHA-256 hex is always 64 lower-case digits, so this cannot happen; the
        // match only keeps the function total without an unwrap.
        Err(IdError::Malformed(_) | IdError::UnknownRole(_)) => {
            unreachable!("sha-256 hex is a valid id")
        }
    }
}

/// Parses a public key given as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, IdentityError> {
    let bad = || IdentityError::BadPublicKey(text.escape_debug().to_string());
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn key_is_created_once_with_mode_600_and_keeps_the_id() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path(), Role::Box).unwrap();
        assert!(first.id().as_str().starts_with("box-"));
        let path = Identity::key_path(dir.path(), Role::Box);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Identity::load_or_create(dir.path(), Role::Box).unwrap();
        assert_eq!(first.id(), again.id());
        let other_role = Identity::load_or_create(dir.path(), Role::Publisher).unwrap();
        assert!(other_role.id().as_str().starts_with("publisher-"));
    }

    #[test]
    fn id_is_derived_from_the_public_key() {
        let ident = Identity::from_seed(Role::Entrance, [7; 32]);
        let key = parse_public_key(&ident.public_key_hex()).unwrap();
        assert_eq!(&derive_id(Role::Entrance, &key), ident.id());
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        assert_eq!(ident.id().as_str(), format!("entrance-{}", &digest[..32]));
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = Identity::key_path(dir.path(), Role::Box);
        std::fs::write(&path, "not hex\n").unwrap();
        let err = Identity::load_or_create(dir.path(), Role::Box).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} does not hold an Ed25519 key (expected 64 hex digits); move it away to create a new identity",
                path.display()
            )
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let ident = Identity::from_seed(Role::Box, [9; 32]);
        let shown = format!("{ident:?}");
        assert!(shown.contains(ident.id().as_str()));
        assert!(!shown.contains(&hex::encode([9u8; 32])));
    }
}
