//! The private CA of a local network (`dandelion up`): made once in the base
//! data directory (its key in `ca.key`, mode 0600), it signs a certificate for
//! 127.0.0.1 and localhost for every daemon at each start. So the local network
//! runs on `https://` and `wss://` like a real one, and the client commands and
//! the console trust it from `ca.pem` (named in `network.json`) without flags.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use dandelion_core::secrets;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The CA certificate clients trust, in the base data directory.
pub const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";

#[derive(Debug)]
pub struct LocalCa {
    params: CertificateParams,
    key: KeyPair,
    pub ca_file: PathBuf,
}

impl LocalCa {
    /// The CA of `root`, made now if it has none. The certificate is written
    /// again at each start from the same key, which keeps every certificate it
    /// signed before valid.
    pub fn load_or_create(root: &Path) -> anyhow::Result<LocalCa> {
        let key_path = root.join(CA_KEY_FILE);
        let fresh = KeyPair::generate().context("making the local CA's key")?;
        let (pem, _) = secrets::load_or_create(&key_path, || Ok(fresh.serialize_pem()))?;
        let key = KeyPair::from_pem(&pem).with_context(|| {
            format!(
                "{} is not a key; move it away to make a new CA",
                key_path.display()
            )
        })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Dandelion local network CA");
        let cert = params.self_signed(&key)?;
        let ca_file = root.join(CA_FILE);
        fs::write(&ca_file, cert.pem())
            .with_context(|| format!("cannot write {}", ca_file.display()))?;
        Ok(LocalCa {
            params,
            key,
            ca_file,
        })
    }

    /// A certificate for 127.0.0.1 and localhost, as `tls.crt` and `tls.key`
    /// (mode 0600) in a daemon's data directory; returns their paths.
    pub fn issue(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let cert = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        fs::write(&cert_path, cert.pem())
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(secrets::SECRET_MODE)
            .open(&key_path)
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        file.write_all(key.serialize_pem().as_bytes())
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        Ok((cert_path, key_path))
    }
}
