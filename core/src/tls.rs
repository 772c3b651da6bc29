//! TLS for every listener and every client: rustls with the ring provider.
//!
//! - **Servers** ([`ServerTls`]): a certificate chain and its key, read from PEM
//!   files per listener and read again when the files change or the daemon gets
//!   SIGHUP, so a renewed certificate (certbot, any ACME client) takes effect
//!   without a restart. A renewal that does not load (a half-written file, a key
//!   that does not fit) keeps the certificate in use and says why.
//! - **Clients** ([`client_config`]): the system's roots plus every CA bundle the
//!   configuration names ([`trust`]). One process-wide configuration serves every
//!   HTTP and WebSocket client, so no code path can dial `https://` or `wss://`
//!   with a trust store of its own. It is built at the first TLS connection: a
//!   process that never dials TLS (a box talking to a plain local entrance) never
//!   pays for the system's root store.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the key in {key} does not fit the certificate in {cert}: {cause}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        cause: String,
    },
    #[error("TLS set-up failed: {0}")]
    Rustls(String),
}

/// The one crypto provider of the process: ring.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.to_owned(),
        cause: e.to_string(),
    }
}

/// A TLS connection's RFC 9266 `tls-exporter` value, the same at both ends:
/// what a session proof presented on the connection signs
/// (`crate::auth::Channel::TlsExporter`).
pub fn exporter<D>(connection: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], rustls::Error> {
    connection.export_keying_material([0u8; 32], crate::auth::EXPORTER_LABEL, None)
}

/// Every certificate in a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|e| read_error(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|e| read_error(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => read_error(path, other),
    })
}

/// The certificate a listener presents, swapped in place on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// When the files were last read, to tell a renewal from nothing.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// A listener's TLS: its certificate files (none for an identity
/// certificate) and the rustls configuration that presents what they hold.
#[derive(Debug)]
pub struct ServerTls {
    files: Option<(PathBuf, PathBuf)>,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
    loaded: Mutex<Stamp>,
}

impl ServerTls {
    /// Reads `cert` (the chain, leaf first) and `key`; fails, naming the file,
    /// if either does not load or they do not fit together.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let loaded = stamp(cert, key);
        let certified = certified_key(cert, key)?;
        let mut tls = ServerTls::presenting(certified)?;
        tls.files = Some((cert.to_owned(), key.to_owned()));
        tls.loaded = Mutex::new(loaded);
        Ok(tls)
    }

    /// Presents `identity`'s own certificate (`crate::idcert`): for a
    /// listener no CA vouches for, dialled only by peers that know its ID.
    pub fn identity(identity: &crate::identity::Identity) -> Result<ServerTls, TlsError> {
        ServerTls::presenting(crate::idcert::certificate(identity)?)
    }

    fn presenting(certified: CertifiedKey) -> Result<ServerTls, TlsError> {
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // RFC 9266: the exporter identifies a TLS 1.2 connection only with the
        // extended master secret; TLS 1.3 always does.
        config.require_ems = true;
        Ok(ServerTls {
            files: None,
            current,
            config: Arc::new(config),
            loaded: Mutex::new((None, None)),
        })
    }

    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The certificate and key files this listener reads, if any.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))
    }

    /// Reads the files again and presents what they hold from the next
    /// handshake on; on error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = self.files() else {
            return Ok(());
        };
        let seen = stamp(cert, key);
        let certified = certified_key(cert, key)?;
        *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        Ok(())
    }

    /// [`ServerTls::reload`] if either file changed since it was last read.
    /// `Ok(true)` when a new certificate was loaded.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some((cert, key)) = self.files() else {
            return Ok(false);
        };
        let now = stamp(cert, key);
        if *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return Ok(false);
        }
        match self.reload() {
            Ok(()) => Ok(true),
            Err(e) => {
                // Not again until the files change once more: a renewal being
                // written is retried at the next change, not at every poll.
                *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = now;
                Err(e)
            }
        }
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert)?;
    let private = read_key(key)?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        cause: e.to_string(),
    })
}

/// CA bundles trusted besides the system's roots, and the client configuration
/// built from them (`None` until the first TLS connection, or after a change).
#[derive(Debug, Default)]
struct Trust {
    extra: Vec<CertificateDer<'static>>,
    config: Option<Built>,
}

#[derive(Debug, Clone)]
struct Built {
    config: Arc<ClientConfig>,
    roots: Arc<WebPkiServerVerifier>,
}

fn trust_store() -> &'static RwLock<Trust> {
    static TRUST: OnceLock<RwLock<Trust>> = OnceLock::new();
    TRUST.get_or_init(RwLock::default)
}

/// Trusts the CA certificates in the PEM bundle `ca_file` for every TLS client
/// of the process, besides the system's roots.
pub fn trust(ca_file: &Path) -> Result<(), TlsError> {
    let certs = read_certificates(ca_file)?;
    let mut trust = trust_store().write().unwrap_or_else(|p| p.into_inner());
    let before = trust.extra.len();
    for cert in certs {
        if !trust.extra.contains(&cert) {
            trust.extra.push(cert);
        }
    }
    // A bundle trusted again (each test, each console tab) changes nothing.
    if trust.extra.len() != before {
        trust.config = None;
    }
    Ok(())
}

/// The client configuration every `https://` and `wss://` connection uses.
pub fn client_config() -> Result<Arc<ClientConfig>, TlsError> {
    built().map(|b| b.config)
}

/// The client configuration for dialling the daemon `expect`: it also
/// accepts that daemon's identity certificate (`crate::idcert`).
pub fn client_config_for(expect: &crate::ids::NodeId) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = built()?.roots;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::idcert::Verifier::new(
            expect.clone(),
            roots,
        )))
        .with_no_client_auth();
    config.require_ems = true;
    Ok(Arc::new(config))
}

fn built() -> Result<Built, TlsError> {
    if let Some(built) = &trust_store()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .config
    {
        return Ok(built.clone());
    }
    let mut trust = trust_store().write().unwrap_or_else(|p| p.into_inner());
    if let Some(built) = &trust.config {
        return Ok(built.clone());
    }
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped: a device without any still
    // trusts the configured bundles.
    let system = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(system.certs);
    let (_added, ignored) = roots.add_parsable_certificates(trust.extra.iter().cloned());
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "some configured CA certificates could not be used as roots"
        );
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // As the servers do (RFC 9266): no TLS 1.2 without the extended master secret.
    config.require_ems = true;
    let built = Built {
        config: Arc::new(config),
        roots: verifier,
    };
    trust.config = Some(built.clone());
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        fs::write(&c, cert.cert.pem()).unwrap();
        fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_certificate_and_its_key_load_and_reload_when_the_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let tls = ServerTls::load(&cert, &key).unwrap();
        let first = tls.current.0.read().unwrap().cert[0].clone();
        assert_eq!(tls.reload_if_changed(), Ok(false));
        // A renewal: new files written over the old ones (with a later mtime).
        let (cert2, key2) = self_signed(dir.path(), "b");
        fs::rename(&cert2, &cert).unwrap();
        fs::rename(&key2, &key).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        for p in [&cert, &key] {
            fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert_eq!(tls.reload_if_changed(), Ok(true));
        assert_ne!(tls.current.0.read().unwrap().cert[0], first);
    }

    #[test]
    fn a_bad_renewal_keeps_the_certificate_in_use_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "a");
        let (_, other_key) = self_signed(dir.path(), "b");
        let tls = ServerTls::load(&cert, &key).unwrap();
        let in_use = tls.current.0.read().unwrap().cert[0].clone();
        fs::copy(&other_key, &key).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        assert_eq!(tls.current.0.read().unwrap().cert[0], in_use);
        fs::write(&key, "not a key").unwrap();
        assert_eq!(
            tls.reload().unwrap_err(),
            TlsError::NoKey { path: key.clone() }
        );
    }

    #[test]
    fn missing_or_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let err = ServerTls::load(&missing, &missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, "").unwrap();
        assert_eq!(
            trust(&empty).unwrap_err(),
            TlsError::NoCertificate { path: empty }
        );
    }
}
