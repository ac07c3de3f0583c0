//! Serving the orchestrator: the gRPC listener (Orchestrator, health, reflection v1 and v1alpha) and the
//! HTTP listener, until a shutdown signal; then in-flight calls finish and the audit log is flushed.

use crate::downstream::MAX_MESSAGE_BYTES;
use crate::gateway::Gateway;
use crate::grpc::OrchestratorService;
use conductor_proto::v1::orchestrator_server::OrchestratorServer;
use std::future::Future;
use tokio::net::TcpListener;
// tonic sets TCP_NODELAY only on listeners it binds itself; ours come bound, so say it here (without it
// every small response waits ~40 ms for the peer's delayed ACK).
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

/// Bound listeners: `main` binds the configured addresses, tests bind port 0.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
    /// TLS on both (from `listen.tls`, [`crate::tls::ListenerTls::from_config`]); `None`: plaintext.
    pub tls: Option<crate::tls::ListenerTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("forwarding to the active node: {0}")]
    Forward(#[from] crate::cluster::forward::ForwardSetupError),
}

/// Serves until `shutdown` resolves, then drains: in-flight calls finish, the audit log is flushed.
pub async fn serve(
    gateway: Gateway,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    let draining = gateway.clone();
    tokio::spawn(async move {
        shutdown.await;
        // First end what would keep connections open (waits for approvals, Watch streams), then stop
        // accepting; calls already forwarded finish and are recorded.
        draining.begin_shutdown();
        trigger.cancel();
    });
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(gateway.clone(), stop.clone()));
    tokio::spawn(end_idle_workflows(gateway.clone(), stop.clone()));
    tokio::spawn(check_downstream(gateway.clone(), stop.clone()));
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // Health says what the audit log allows from the first answer on: an orchestrator started on
    // a log it cannot write (a full disk) is NOT_SERVING from the start, never SERVING for a moment.
    let initial = audit_serving_status(&gateway);
    set_health(&health_reporter, initial).await;
    tokio::spawn(follow_audit_health(
        gateway.clone(),
        health_reporter.clone(),
        initial,
        stop.clone(),
    ));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(conductor_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(conductor_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let service = OrchestratorServer::new(OrchestratorService::new(gateway.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // A standby passes what would append on to the active node (nothing to do alone, on files).
    let forwarder =
        crate::cluster::forward::Forwarder::for_config(gateway.clone(), &gateway.config())?;
    let grpc_stop = stop.clone();
    let routes = tonic::transport::Server::builder()
        .layer(crate::telemetry::GrpcTracing)
        .layer(crate::cluster::forward::GrpcForwarding(forwarder.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let grpc_tls = listeners.tls.as_ref().map(|tls| tls.grpc.clone());
    let grpc = async move {
        let stopped = async move { grpc_stop.cancelled().await };
        match grpc_tls {
            Some(acceptor) => {
                routes
                    .serve_with_incoming_shutdown(
                        crate::tls::incoming(listeners.grpc, acceptor),
                        stopped,
                    )
                    .await
            }
            None => {
                routes
                    .serve_with_incoming_shutdown(
                        TcpIncoming::from(listeners.grpc).with_nodelay(Some(true)),
                        stopped,
                    )
                    .await
            }
        }
    };
    let http = {
        let stop = stop.clone();
        let router = crate::http::router(gateway.clone(), forwarder);
        let limits = gateway.config().listen.http_limits;
        let tls = listeners.tls.map(|tls| tls.http);
        async move {
            match listeners.http {
                Some(listener) => {
                    crate::http::serve(listener, router, limits, tls, async move {
                        stop.cancelled().await
                    })
                    .await
                }
                None => Ok(()),
            }
        }
    };
    let (grpc, http) = tokio::join!(grpc, http);
    gateway.begin_shutdown();
    gateway.shutdown().await;
    grpc?;
    http?;
    Ok(())
}

/// `NOT_SERVING` while the audit log cannot be written (every new call is refused then).
fn audit_serving_status(gateway: &Gateway) -> tonic_health::ServingStatus {
    match gateway.audit().health().unwritable {
        None => tonic_health::ServingStatus::Serving,
        Some(unwritable) => {
            tracing::warn!(reason = %unwritable.reason, "health: NOT_SERVING while the audit log cannot be written");
            tonic_health::ServingStatus::NotServing
        }
    }
}

/// Sets the orchestrator's health and the whole server's (the empty name, what probes ask by
/// default) together.
async fn set_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    reporter
        .set_service_status(
            <OrchestratorServer<OrchestratorService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    reporter.set_service_status("", status).await;
}

/// Health follows the audit log from `last` on: `NOT_SERVING` while it cannot be written,
/// `SERVING` again as soon as it can.
async fn follow_audit_health(
    gateway: Gateway,
    reporter: tonic_health::server::HealthReporter,
    last: tonic_health::ServingStatus,
    stop: CancellationToken,
) {
    let mut writable = gateway.audit().watch_writable();
    let mut last = last;
    loop {
        // A failed write is announced; a stalled disk is not (the writer is stuck in it), so the
        // log is also asked every second.
        writable.borrow_and_update();
        let status = match gateway.audit().health().unwritable {
            None => tonic_health::ServingStatus::Serving,
            Some(_) => tonic_health::ServingStatus::NotServing,
        };
        if last != status {
            if status == tonic_health::ServingStatus::NotServing {
                tracing::warn!("health: NOT_SERVING while the audit log cannot be written");
            } else {
                tracing::info!("health: SERVING, the audit log can be written");
            }
            set_health(&reporter, status).await;
            last = status;
        }
        tokio::select! {
            changed = writable.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Ad-hoc workflows nobody has used for `workflows.idle_timeout` end by themselves, recorded with
/// the reason; looked for every quarter of that time (at most every minute).
async fn end_idle_workflows(gateway: Gateway, stop: CancellationToken) {
    loop {
        let every = (gateway.config().ad_hoc_idle_timeout / 4).clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(60),
        );
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        let ended = gateway.end_idle_workflows().await;
        if ended > 0 {
            tracing::info!(ended, "idle ad-hoc workflows ended");
        }
    }
}

/// Checks in the background whether each downstream server can be reached (status, /metrics).
async fn check_downstream(gateway: Gateway, stop: CancellationToken) {
    let downstream = &gateway.inner.downstream;
    crate::downstream::health::keep_checking(downstream, || gateway.config(), stop).await;
}

/// SIGHUP reloads the configuration file, as `conductorctl config reload` does; a bad file is refused
/// (and logged) and the running configuration stays.
#[cfg(unix)]
async fn reload_on_hangup(gateway: Gateway, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            received = hangups.recv() => if received.is_none() { return },
            () = stop.cancelled() => return,
        }
        match gateway.reload_config().await {
            Ok((config, previous, on_previous)) => tracing::info!(
                version = %config.version, %previous, workflows_on_previous = on_previous, "SIGHUP: configuration reloaded"
            ),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: configuration refused; the running one stays")
            }
        }
    }
}
