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
use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, GeneralSubtree, IsCa, Issuer, KeyPair,
    NameConstraints,
};

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
        // Whoever trusts this CA (every client verb run beside the data
        // directory) trusts it for this machine only: were ca.key ever read
        // by someone else, it could not vouch for another host.
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![
                GeneralSubtree::DnsName("localhost".to_owned()),
                GeneralSubtree::IpAddress(CidrSubnet::V4([127, 0, 0, 0], [255, 0, 0, 0])),
                GeneralSubtree::IpAddress(CidrSubnet::V6(
                    std::net::Ipv6Addr::LOCALHOST.octets(),
                    [0xff; 16],
                )),
            ],
            excluded_subtrees: Vec::new(),
        });
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
        self.issue_for(dir, &["127.0.0.1", "localhost"])
    }

    fn issue_for(&self, dir: &Path, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let key = KeyPair::generate()?;
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let params = CertificateParams::new(names)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;

    use super::*;

    /// Whether a client trusting only the CA accepts `cert` for `name`.
    fn accepted(ca: &Path, cert: &Path, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for c in dandelion_core::tls::read_certificates(ca).unwrap() {
            roots.add(c).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            dandelion_core::tls::provider(),
        )
        .build()
        .unwrap();
        let leaf = dandelion_core::tls::read_certificates(cert).unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(
                &leaf[0],
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn the_local_ca_vouches_for_this_machine_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let (local, _) = ca.issue(dir.path()).unwrap();
        assert!(accepted(&ca.ca_file, &local, "127.0.0.1"));
        assert!(accepted(&ca.ca_file, &local, "localhost"));
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let (other, _) = ca
            .issue_for(&elsewhere, &["publisher.example", "192.0.2.7"])
            .unwrap();
        assert!(!accepted(&ca.ca_file, &other, "publisher.example"));
        assert!(!accepted(&ca.ca_file, &other, "192.0.2.7"));
    }
}
