//! Identity certificates: TLS for a daemon no CA vouches for (a household box).
//!
//! A box rarely has a name, let alone a certificate a public CA signed. But
//! whoever dials it already knows the ID it expects there (a publisher dials
//! the box its directory holds for that URL), and the ID is derived from the
//! box's Ed25519 identity key. So the box presents a self-signed certificate
//! over that very key ([`certificate`]), and the dialler accepts a certificate
//! whose key derives the ID it expected ([`Verifier`]) — or else one the usual
//! roots vouch for the name dialled. The TLS handshake itself then proves the
//! peer holds the identity key; the certificate's own signature, names and
//! dates add nothing and are not checked on this path.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::identity::{Identity, derive_id};
use crate::ids::NodeId;
use crate::tls::{TlsError, provider};

/// The DER before the 32-byte key in an Ed25519 SubjectPublicKeyInfo
/// (RFC 8410 §4: algorithm id-Ed25519, no parameters).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER before the 32-byte seed in an Ed25519 PKCS#8 v1 private key
/// (RFC 8410 §7).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A self-signed certificate over `identity`'s own key, naming its ID: what a
/// listener without a configured certificate presents to TLS clients.
pub fn certificate(identity: &Identity) -> Result<CertifiedKey, TlsError> {
    let fail = |e: &dyn std::fmt::Display| TlsError::Rustls(format!("identity certificate: {e}"));
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(identity.seed().as_slice());
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| fail(&e))?;
    let id = identity.id().to_string();
    let mut params = rcgen::CertificateParams::new(vec![id.clone()]).map_err(|e| fail(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    let cert = params.self_signed(&key_pair).map_err(|e| fail(&e))?;
    CertifiedKey::from_der(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(pkcs8),
        &provider(),
    )
    .map_err(|e| fail(&e))
}

/// The ID of `role` that a certificate's key derives, when it is an Ed25519
/// key: what an identity certificate claims to be.
pub fn certificate_id(cert: &CertificateDer<'_>, role: crate::ids::Role) -> Option<NodeId> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    let key = VerifyingKey::from_bytes(key.try_into().ok()?).ok()?;
    Some(derive_id(role, &key))
}

/// The certificate is an identity certificate, but not of the ID expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the certificate belongs to {found}, not to {expected}")]
pub struct WrongIdentity {
    pub expected: NodeId,
    pub found: NodeId,
}

/// Accepts the identity certificate of one expected ID, or a certificate the
/// process's roots vouch for the name dialled.
#[derive(Debug)]
pub struct Verifier {
    expect: NodeId,
    roots: Arc<WebPkiServerVerifier>,
}

impl Verifier {
    pub fn new(expect: NodeId, roots: Arc<WebPkiServerVerifier>) -> Verifier {
        Verifier { expect, roots }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let claimed = certificate_id(end_entity, self.expect.role());
        if claimed.as_ref() == Some(&self.expect) {
            return Ok(ServerCertVerified::assertion());
        }
        let vouched = self.roots.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match (vouched, claimed) {
            (Err(_), Some(found)) => Err(rustls::Error::InvalidCertificate(
                CertificateError::Other(OtherError(Arc::new(WrongIdentity {
                    expected: self.expect.clone(),
                    found,
                }))),
            )),
            (vouched, _) => vouched,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;

    #[test]
    fn an_identity_certificate_names_its_own_id_only() {
        let boxy = Identity::generate(Role::Box).unwrap();
        let other = Identity::generate(Role::Box).unwrap();
        let certified = certificate(&boxy).unwrap();
        let cert = &certified.cert[0];
        assert_eq!(certificate_id(cert, Role::Box).as_ref(), Some(boxy.id()));
        assert_ne!(certificate_id(cert, Role::Box).as_ref(), Some(other.id()));
        assert!(certified.keys_match().is_ok(), "the key is the identity's");
    }
}
