//! The server side: a certificate and key that are read again when their files change (certificates
//! rotate without a restart), and optional verification of client certificates against a CA.

use super::{TlsError, load_certified_key, load_roots, provider, read};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// How often, at most, a handshake looks whether the certificate or key file changed.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Whether clients are asked for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientCerts {
    /// Not asked for.
    #[default]
    None,
    /// Asked for; a client without one is let in (and proves itself otherwise), one with a
    /// certificate the CA did not sign is refused at the handshake.
    Optional,
    /// Required: a client without a certificate the CA signed is refused at the handshake.
    Required,
}

/// A listener's TLS: its certificate chain and key, and how client certificates are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA bundle client certificates must chain to; needed unless `client_certs` is `None`.
    pub client_ca_file: Option<PathBuf>,
    pub client_certs: ClientCerts,
}

/// What a reload reports: the new certificate was taken, or the files could not be used (the
/// previous certificate stays in use and the files are tried again on a later handshake).
pub type ReloadReport = Arc<dyn Fn(Result<&Path, &TlsError>) + Send + Sync>;

impl ServerTls {
    /// A rustls server configuration offering `alpn`, whose certificate follows its files: a
    /// handshake looks at most every [`RELOAD_CHECK_INTERVAL`] whether either file changed and
    /// reads them again if so; `report` hears of each reload and each failed one. Fails when the
    /// files cannot be used now.
    pub fn server_config(
        &self,
        alpn: &[&[u8]],
        report: ReloadReport,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let resolver = ReloadingCert::load(
            &self.cert_file,
            &self.key_file,
            report,
            RELOAD_CHECK_INTERVAL,
        )?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::setup(format!("no usable TLS protocol version ({e})")))?;
        let builder = match self.client_verifier()? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// tonic's server TLS settings from the same files (read once), for servers that let tonic
    /// accept connections itself.
    pub fn tonic_config(&self) -> Result<tonic::transport::ServerTlsConfig, TlsError> {
        super::install_provider();
        load_certified_key(&self.cert_file, &self.key_file)?;
        let mut config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(read(&self.cert_file)?, read(&self.key_file)?),
        );
        if let Some(ca) = self.client_ca()? {
            load_roots(ca)?;
            config = config
                .client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?))
                .client_auth_optional(self.client_certs == ClientCerts::Optional);
        }
        Ok(config)
    }

    /// The client CA file when client certificates are asked for; an error when it is missing.
    fn client_ca(&self) -> Result<Option<&Path>, TlsError> {
        match (self.client_certs, &self.client_ca_file) {
            (ClientCerts::None, _) => Ok(None),
            (_, Some(ca)) => Ok(Some(ca)),
            (_, None) => Err(TlsError::setup(
                "client certificates are asked for, but no client CA file says which to accept",
            )),
        }
    }

    fn client_verifier(
        &self,
    ) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
        let Some(ca) = self.client_ca()? else {
            return Ok(None);
        };
        let roots = Arc::new(load_roots(ca)?);
        let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
        if self.client_certs == ClientCerts::Optional {
            builder = builder.allow_unauthenticated();
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| TlsError::in_file(ca, format!("cannot verify clients with it ({e})")))
    }
}

/// The certificate in use, read again when its files change.
pub(super) struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    report: ReloadReport,
    /// How often, at most, the files are looked at.
    interval: Duration,
    state: Mutex<Loaded>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files as they were when `key` was read from them.
    stamp: [Stamp; 2],
    /// The files as they were when reading them last failed: reported once, not at every check.
    failed: Option<[Stamp; 2]>,
    checked: Instant,
}

/// What tells a file's versions apart: modification time, length, and (on Unix) the inode, which a
/// rename into place changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(Option<SystemTime>, u64, u64)>);

fn stamp(file: &Path) -> Stamp {
    Stamp(std::fs::metadata(file).ok().map(|m| {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        (m.modified().ok(), m.len(), inode)
    }))
}

impl ReloadingCert {
    pub(super) fn load(
        cert_file: &Path,
        key_file: &Path,
        report: ReloadReport,
        interval: Duration,
    ) -> Result<Self, TlsError> {
        let stamps = [stamp(cert_file), stamp(key_file)];
        let key = load_certified_key(cert_file, key_file)?;
        Ok(ReloadingCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            report,
            interval,
            state: Mutex::new(Loaded {
                key: Arc::new(key),
                stamp: stamps,
                failed: None,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to present now, read again first if the files changed since it was read.
    /// A pair that cannot be used (e.g. the new certificate written, its key not yet) keeps the
    /// previous certificate in use, and is tried again at the next check.
    pub(super) fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.interval {
            state.checked = Instant::now();
            let stamps = [stamp(&self.cert_file), stamp(&self.key_file)];
            if stamps != state.stamp {
                match load_certified_key(&self.cert_file, &self.key_file) {
                    Ok(key) => {
                        state.key = Arc::new(key);
                        state.stamp = stamps;
                        (self.report)(Ok(&self.cert_file));
                    }
                    Err(error) => {
                        if state.failed.as_ref() != Some(&stamps) {
                            (self.report)(Err(&error));
                            state.failed = Some(stamps);
                        }
                    }
                }
            }
        }
        state.key.clone()
    }
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
