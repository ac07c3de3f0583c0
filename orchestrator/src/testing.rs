//! Starting a real orchestrator in-process on loopback port 0, for integration tests of this and other
//! crates (the CLI's, the benchmarks'). Not a fake: the same `serve` as the binary.

use crate::config::Config;
use crate::gateway::{Gateway, GatewayOptions};
use crate::server::{Listeners, serve};
use conductor_audit::AuditOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct RunningOrchestrator {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// Whether both listeners serve TLS (`listen.tls`).
    pub tls: bool,
    pub gateway: Gateway,
    pub audit_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningOrchestrator {
    pub fn grpc_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.grpc_addr)
    }

    pub fn http_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.http_addr)
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Stops it the way SIGTERM would: in-flight calls finish, the audit log is flushed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Starts an orchestrator with the configuration text `config_json` and its audit log in `audit_dir`.
pub async fn spawn(
    config_json: &str,
    config_path: Option<&Path>,
    audit_dir: &Path,
) -> Result<RunningOrchestrator, crate::Error> {
    spawn_with_audit(
        config_json,
        config_path,
        AuditOptions {
            dir: audit_dir.to_path_buf(),
            ..AuditOptions::default()
        },
    )
    .await
}

/// Like [`spawn`], with every audit option (e.g. a tiny broadcast buffer to exercise lagging watchers).
pub async fn spawn_with_audit(
    config_json: &str,
    config_path: Option<&Path>,
    audit: AuditOptions,
) -> Result<RunningOrchestrator, crate::Error> {
    spawn_on(
        config_json,
        config_path,
        audit,
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
}

/// Like [`spawn_with_audit`], with gRPC on `grpc_addr`: to restart an orchestrator where its clients
/// expect it (the address of one that was just stopped).
pub async fn spawn_on(
    config_json: &str,
    config_path: Option<&Path>,
    audit: AuditOptions,
    grpc_addr: SocketAddr,
) -> Result<RunningOrchestrator, crate::Error> {
    let config = Config::from_slice(config_json.as_bytes())?;
    // The binary's start-up checks, on the addresses asked for (TLS beyond loopback).
    crate::auth::startup_check(&config, &[grpc_addr]).map_err(crate::Error::InvalidArgument)?;
    let tls = crate::tls::ListenerTls::from_config(&config)
        .map_err(|e| crate::Error::InvalidArgument(format!("listen.tls: {e}")))?;
    let tls_on = tls.is_some();
    // Bound first, so that a node on the PostgreSQL store advertises where it listens.
    let grpc = TcpListener::bind(grpc_addr)
        .await
        .map_err(|e| crate::Error::InvalidArgument(format!("bind: {e}")))?;
    let http = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| crate::Error::InvalidArgument(format!("bind: {e}")))?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    let http_addr = http
        .local_addr()
        .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    let mut audit = audit;
    crate::cluster::apply_store(
        &mut audit,
        &config,
        crate::cluster::Listening {
            grpc: Some(grpc_addr),
            http: Some(http_addr),
        },
    );
    let audit_dir = audit.dir.clone();
    let audit_dir = audit_dir.as_path();
    let gateway = Gateway::start(GatewayOptions {
        config,
        config_path: config_path.map(Path::to_path_buf),
        audit,
    })
    .await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let served = gateway.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(e) = serve(
            served,
            Listeners {
                grpc,
                http: Some(http),
                tls,
            },
            shutdown,
        )
        .await
        {
            tracing::error!(error = %e, "orchestrator stopped with an error");
        }
    });
    Ok(RunningOrchestrator {
        grpc_addr,
        http_addr,
        tls: tls_on,
        gateway,
        audit_dir: audit_dir.to_path_buf(),
        stop: Some(stop),
        task: Some(task),
    })
}
