//! TLS on the orchestrator's listeners and towards its tool servers, on top of `conductor_proto::tls`
//! (which reads every certificate and key): the configuration's TLS settings turned into rustls
//! configurations, the gRPC listener's stream of accepted TLS connections, and the subject of a
//! verified client certificate ([`PeerCertificate`]), which `crate::auth` maps to a client.
//!
//! Handshakes run in their own tasks with a time-out, never in the accept loop, so a client that
//! stalls its handshake holds up nobody else. A refused handshake (no certificate where one is
//! required, one from an unknown CA) is logged with the peer's address and never reaches a service.
//! This module never logs key material.

use crate::config::{ClientCertMode, ClientTlsFiles, Config, ListenTls};
use conductor_proto::tls::{ALPN_H2, ALPN_HTTP1, ClientCerts, ClientTls, ServerTls, TlsError};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client has for its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken gRPC connections waiting for tonic to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Marks a request that came over TLS (in its extensions), so URLs the server gives out about
/// itself (the protected-resource metadata) say `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secure;

/// A verified client certificate: the common name of its subject (`None` when it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    pub subject: Option<String>,
}

impl PeerCertificate {
    /// The peer's certificate as the handshake verified it (the end entity comes first).
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Option<Self> {
        let leaf = chain.first()?;
        Some(PeerCertificate {
            subject: conductor_proto::tls::common_name(leaf),
        })
    }
}

/// A server's TLS client settings as `conductor_proto::tls` takes them.
pub fn client_tls(files: &ClientTlsFiles) -> ClientTls {
    ClientTls {
        ca_file: files.ca_file.clone(),
        cert_file: files.cert_file.clone(),
        key_file: files.key_file.clone(),
    }
}

/// `endpoint` of a gRPC server at `url` with TLS when the address is `https://`: the server's CA
/// bundle (else the system's roots) and its client certificate, from `files`.
pub fn grpc_endpoint(
    endpoint: tonic::transport::Endpoint,
    url: &str,
    files: Option<&ClientTlsFiles>,
) -> Result<tonic::transport::Endpoint, String> {
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let tls = client_tls(&files.cloned().unwrap_or_default())
        .tonic_config()
        .map_err(|e| e.to_string())?;
    endpoint.tls_config(tls).map_err(|e| e.to_string())
}

/// The listeners' TLS settings as `conductor_proto::tls` takes them.
pub fn server_tls(listen: &ListenTls) -> ServerTls {
    ServerTls {
        cert_file: listen.cert_file.clone(),
        key_file: listen.key_file.clone(),
        client_ca_file: listen.client_ca_file.clone(),
        client_certs: match listen.client_certs {
            ClientCertMode::None => ClientCerts::None,
            ClientCertMode::Optional => ClientCerts::Optional,
            ClientCertMode::Required => ClientCerts::Required,
        },
    }
}

/// The TLS acceptors of both listeners (gRPC speaks HTTP/2, the HTTP listener HTTP/1.1), each
/// following the certificate files as they change.
#[derive(Clone)]
pub struct ListenerTls {
    pub grpc: TlsAcceptor,
    pub http: TlsAcceptor,
}

impl ListenerTls {
    /// `None` when `listen.tls` is not configured; an error naming the file when a file is unusable.
    pub fn from_config(config: &Config) -> Result<Option<Self>, TlsError> {
        let Some(listen) = &config.listen.tls else {
            return Ok(None);
        };
        let settings = server_tls(listen);
        let report: conductor_proto::tls::ReloadReport = Arc::new(|outcome| match outcome {
            Ok(file) => tracing::info!(file = %file.display(), "TLS certificate reloaded"),
            Err(error) => tracing::error!(
                %error,
                "TLS certificate files changed but cannot be used; the previous certificate stays in use"
            ),
        });
        Ok(Some(ListenerTls {
            grpc: TlsAcceptor::from(settings.server_config(&[ALPN_H2], report.clone())?),
            http: TlsAcceptor::from(settings.server_config(&[ALPN_HTTP1], report)?),
        }))
    }
}

/// The gRPC listener's connections after their TLS handshake, for tonic's `serve_with_incoming`.
/// Accepting stops when tonic drops the stream.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = sender.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    // Out of descriptors or similar: give the system a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                if let Some(tls) = handshake(&acceptor, tcp, peer, "gRPC").await {
                    let _ = sender.send(Ok(tls)).await;
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// The server side of a TLS handshake within [`HANDSHAKE_TIMEOUT`]; a refusal is logged.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    peer: std::net::SocketAddr,
    listener: &str,
) -> Option<TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "{listener} TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "{listener} TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}");
            None
        }
    }
}
