//! A certificate authority made by the tests (rcgen), writing PEM files into a directory: server
//! certificates for `localhost` and 127.0.0.1, client certificates with a chosen common name. Shared
//! with the CLI's TLS tests (`cli/tests/tls.rs` includes this file), so there is one copy.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A CA whose certificate is written to `<dir>/<name>-ca.pem`.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    name: String,
    dir: PathBuf,
    pub ca_file: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, issuer.pem()).expect("write the CA certificate");
        TestCa {
            issuer,
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            ca_file,
        }
    }

    /// Client TLS settings that trust this CA (and present no certificate).
    pub fn trusted(&self) -> conductor_proto::tls::ClientTls {
        conductor_proto::tls::ClientTls {
            ca_file: Some(self.ca_file.clone()),
            ..Default::default()
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with common name `name`, as
    /// `<dir>/<ca>-<name>.pem` and `<dir>/<ca>-<name>.key`.
    pub fn server(&self, name: &str) -> CertFiles {
        self.server_named(name, name)
    }

    /// A server certificate with common name `common_name` in the files of `stem` (replacing what
    /// they held, as a certificate rotation does).
    pub fn server_named(&self, stem: &str, common_name: &str) -> CertFiles {
        self.issue(
            stem,
            common_name,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose subject's common name is `name`.
    pub fn client(&self, name: &str) -> CertFiles {
        self.issue(name, name, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        stem: &str,
        common_name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let certificate = params.signed_by(&key, &self.issuer).expect("certificate");
        let files = CertFiles {
            cert_file: self.dir.join(format!("{}-{stem}.pem", self.name)),
            key_file: self.dir.join(format!("{}-{stem}.key", self.name)),
        };
        std::fs::write(&files.key_file, key.serialize_pem()).expect("write the key");
        std::fs::write(&files.cert_file, certificate.pem()).expect("write the certificate");
        files
    }
}
