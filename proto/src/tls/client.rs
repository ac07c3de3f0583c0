//! The client side: a CA bundle to trust (else the system's roots) and, for servers that want mutual
//! TLS, a client certificate with its key.

use super::{
    TlsError, load_certificates, load_certified_key, load_private_key, load_roots, provider, read,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};

/// Where the system keeps its CA bundle on the common Linux and BSD distributions; `SSL_CERT_FILE`
/// comes first, as OpenSSL and rustls-native-certs read it.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// How a client verifies a server and proves itself: `ca_file` replaces the system roots; `cert_file`
/// and `key_file` (both or neither) are the client certificate for servers that require mTLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl ClientTls {
    /// The client certificate and key files, or `None`; an error when only one of them is given.
    fn identity_files(&self) -> Result<Option<(&Path, &Path)>, TlsError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(cert), None) => Err(TlsError::setup(format!(
                "a client certificate ({}) needs its key file too",
                cert.display()
            ))),
            (None, Some(key)) => Err(TlsError::setup(format!(
                "a client key ({}) needs its certificate file too",
                key.display()
            ))),
        }
    }

    /// A rustls client configuration (no ALPN set: the caller adds what its protocol speaks).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let roots = match &self.ca_file {
            Some(file) => load_roots(file)?,
            None => system_roots()?,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::setup(format!("no usable TLS protocol version ({e})")))?
            .with_root_certificates(roots);
        match self.identity_files()? {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certificates(cert)?, load_private_key(key)?)
                .map_err(|e| {
                    TlsError::in_file(
                        key,
                        format!(
                            "cannot be used with the certificate in {} ({e})",
                            cert.display()
                        ),
                    )
                }),
        }
    }

    /// The same as tonic's client TLS settings, for a gRPC channel: the CA bundle (checked here, so a
    /// bad file is named before any connection) or the system's roots, and the client certificate.
    pub fn tonic_config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        super::install_provider();
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca_file {
            Some(file) => {
                load_roots(file)?;
                config.ca_certificate(tonic::transport::Certificate::from_pem(read(file)?))
            }
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = self.identity_files()? {
            load_certified_key(cert, key)?;
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        Ok(config)
    }
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first bundle found where distributions keep it.
fn system_roots() -> Result<rustls::RootCertStore, TlsError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for file in candidates {
        if !file.is_file() {
            continue;
        }
        let mut roots = rustls::RootCertStore::empty();
        let bytes = read(&file)?;
        let certificates = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok);
        roots.add_parsable_certificates(certificates);
        if !roots.is_empty() {
            return Ok(roots);
        }
    }
    Err(TlsError::setup(format!(
        "no system CA bundle found (SSL_CERT_FILE unset, none of {} present): give a CA file",
        SYSTEM_BUNDLES.join(", ")
    )))
}
