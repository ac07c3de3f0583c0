//! TLS for every Conductorio process: the one place that reads PEM certificates, keys and CA bundles
//! and builds rustls configurations from them (the orchestrator's listeners and its clients of tool
//! and MCP servers, the tool servers, `conductorctl`).
//!
//! Everything runs on rustls's ring provider ([`install_provider`]); no other TLS stack is linked.
//! Every error names the file it is about and what is wrong with it ([`TlsError`]). This module never
//! logs, never holds a key beyond the configuration it builds, and never weakens verification: there
//! is no "accept any certificate" switch.

mod client;
mod server;
mod subject;

pub use client::ClientTls;
pub use server::{ClientCerts, RELOAD_CHECK_INTERVAL, ReloadReport, ServerTls};
pub use subject::common_name;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ALPN protocol of gRPC (HTTP/2).
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol of the HTTP listener (HTTP/1.1).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Makes rustls's ring provider the process's default. Idempotent: a provider already installed stays.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process's provider (installing ring first if none is).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_provider();
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// A TLS set-up that cannot be used: the file concerned (if any) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The file the problem is in; `None` for a problem of the combination (e.g. a key without a
    /// certificate).
    pub file: Option<PathBuf>,
    pub message: String,
}

impl TlsError {
    fn in_file(file: &Path, message: impl Into<String>) -> Self {
        TlsError {
            file: Some(file.to_path_buf()),
            message: message.into(),
        }
    }

    fn setup(message: impl Into<String>) -> Self {
        TlsError {
            file: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for TlsError {}

/// Every certificate of a PEM file, in order; an error when there is none.
pub fn load_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(file)?;
    let mut certificates = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        match item {
            Ok(certificate) => certificates.push(certificate),
            Err(e) => {
                return Err(TlsError::in_file(
                    file,
                    format!("not a readable PEM certificate file ({e})"),
                ));
            }
        }
    }
    if certificates.is_empty() {
        return Err(TlsError::in_file(
            file,
            "holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\")",
        ));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(file)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::in_file(
            file,
            "holds no PEM private key (\"-----BEGIN PRIVATE KEY-----\", RSA or EC)",
        ),
        other => TlsError::in_file(file, format!("not a readable PEM private key ({other})")),
    })
}

/// A CA bundle as trust anchors; an error when a certificate in it cannot be a trust anchor.
pub fn load_roots(file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, certificate) in load_certificates(file)?.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| {
            TlsError::in_file(
                file,
                format!("certificate {} is not a usable CA certificate ({e})", i + 1),
            )
        })?;
    }
    Ok(roots)
}

/// A certificate chain and its key, checked to belong together.
fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = load_certificates(cert_file)?;
    let key = load_private_key(key_file)?;
    rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::in_file(
            key_file,
            format!(
                "cannot be used with the certificate in {} ({e})",
                cert_file.display()
            ),
        )
    })
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| TlsError::in_file(file, format!("cannot be read ({e})")))
}

#[cfg(test)]
mod tests;
