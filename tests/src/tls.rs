//! A private CA for tests that run daemons on TLS: a CA certificate in a PEM
//! bundle (what `ca_file` names) and leaf certificates it signs for 127.0.0.1
//! and localhost, as an operator's own CA or an ACME client would provide.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA whose files live in a test's directory.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM: give it to clients as `ca_file`.
    pub ca_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("CA: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        let ca_file = dir.join(format!("{name}.crt"));
        write(&ca_file, &cert.pem());
        TestCa {
            dir: dir.to_owned(),
            params,
            key,
            ca_file,
        }
    }

    /// A certificate for 127.0.0.1 and localhost signed by this CA, written as
    /// `dir/<name>.crt` and `dir/<name>.key`; returns (certificate, key).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue_with(name, |_| {})
    }

    /// A certificate for `names` (host names or IP addresses, such as a test
    /// host's LAN address) signed by this CA; returns (certificate, key).
    pub fn issue_for(&self, name: &str, names: &[String]) -> (PathBuf, PathBuf) {
        let sans = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(
                    n.clone()
                        .try_into()
                        .unwrap_or_else(|e| panic!("name {n}: {e}")),
                ),
            })
            .collect();
        self.issue_with(name, |params| params.subject_alt_names = sans)
    }

    /// [`TestCa::issue`] for a certificate that expired in 2020.
    pub fn issue_expired(&self, name: &str) -> (PathBuf, PathBuf) {
        self.issue_with(name, |params| {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        })
    }

    fn issue_with(
        &self,
        name: &str,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("leaf key: {e}"));
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap_or_else(|e| panic!("leaf: {e}"));
        params.distinguished_name.push(DnType::CommonName, name);
        tweak(&mut params);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("leaf certificate: {e}"));
        let (cert_file, key_file) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        write(&cert_file, &cert.pem());
        write(&key_file, &key.serialize_pem());
        (cert_file, key_file)
    }
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
