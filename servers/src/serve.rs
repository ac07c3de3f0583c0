//! The plumbing every tool server shares: one gRPC server with the ToolService (plus the
//! ApprovalLedger for the approval server), health, reflection and graceful shutdown.
//!
//! Owns start-up order (data directory, the server's state, then the listener is served) and shutdown
//! (health turns NOT_SERVING, in-flight calls finish, then `serve` returns). It never binds an address
//! itself: callers pass a bound listener, so tests can use port 0 without races. With TLS options it
//! serves TLS (certificate and key read once at start, client certificates required when a client CA
//! is given), through `conductor_proto::tls` like every other process.

use std::future::Future;
use std::sync::Arc;

use conductor_proto::v1::approval_ledger_server::ApprovalLedgerServer;
use conductor_proto::v1::tool_service_server::ToolServiceServer;
use tokio::net::TcpListener;
// tonic sets TCP_NODELAY only on listeners it binds itself; ours come bound, so say it here (without it
// every small response waits ~40 ms for the peer's delayed ACK).
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::approval::{self, ApprovalLedgerService, Ledger};
use crate::backup::{self, BackupStore};
use crate::error::ServeError;
use crate::notification::{self, Outbox};
use crate::tool::ToolSet;
use crate::validation::{self, SchemaRegistry};
use crate::{ServerKind, ServerOptions, processing};

/// The largest request or response message accepted: big enough for a sizeable batch of records,
/// small enough that one call cannot exhaust memory. Larger messages get a clear `OutOfRange` /
/// `ResourceExhausted` error from tonic instead of being processed.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The gRPC name of the ToolService, as health checks and reflection list it.
pub const TOOL_SERVICE_NAME: &str = "conductor.v1.ToolService";

const APPROVAL_LEDGER_NAME: &str = "conductor.v1.ApprovalLedger";
const HEALTH_SERVICE_NAME: &str = "grpc.health.v1.Health";
const REFLECTION_V1_NAME: &str = "grpc.reflection.v1.ServerReflection";
const REFLECTION_V1ALPHA_NAME: &str = "grpc.reflection.v1alpha.ServerReflection";

/// What a server serves besides health and reflection.
struct Services {
    tools: ToolSet,
    ledger: Option<ApprovalLedgerService>,
}

/// Builds the server's state (opening its files) and its tools.
fn build(kind: ServerKind, options: &ServerOptions) -> Result<Services, ServeError> {
    let data_dir = &options.data_dir;
    let mut ledger = None;
    let tools = match kind {
        ServerKind::Validation => {
            let registry = SchemaRegistry::load(options.schemas.as_deref())?;
            validation::tools(Arc::new(registry))
        }
        ServerKind::Processing => processing::tools(),
        ServerKind::Backup => backup::tools(Arc::new(BackupStore::open(data_dir)?)),
        ServerKind::Notification => notification::tools(Arc::new(Outbox::open(data_dir)?)),
        ServerKind::Approval => {
            let shared = Arc::new(Ledger::open(data_dir)?);
            ledger = Some(ApprovalLedgerService::new(Arc::clone(&shared)));
            approval::tools(shared)
        }
    };
    let call_log = options
        .call_log
        .as_deref()
        .map(crate::call_log::CallLog::open)
        .transpose()?;
    Ok(Services {
        tools: ToolSet::new(kind, tools)?.with_call_log(call_log),
        ledger,
    })
}

/// Serves `kind` on `listener` until `shutdown` completes, then lets in-flight calls finish and
/// returns. Fails before serving if the data directory or the server's files cannot be used.
pub async fn serve(
    kind: ServerKind,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&options.data_dir).map_err(|source| ServeError::DataDir {
        path: options.data_dir.clone(),
        source,
    })?;
    let services = build(kind, &options)?;
    let addr = listener.local_addr().map_err(ServeError::Listener)?;
    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        builder = builder.tls_config(tls.tonic_config()?)?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(TOOL_SERVICE_NAME, ServingStatus::Serving)
        .await;
    if services.ledger.is_some() {
        health
            .set_service_status(APPROVAL_LEDGER_NAME, ServingStatus::Serving)
            .await;
    }

    // Advertise exactly the services this server answers, not every service in the descriptors.
    let mut served = vec![
        TOOL_SERVICE_NAME,
        HEALTH_SERVICE_NAME,
        REFLECTION_V1_NAME,
        REFLECTION_V1ALPHA_NAME,
    ];
    if services.ledger.is_some() {
        served.push(APPROVAL_LEDGER_NAME);
    }
    let reflection = || {
        served.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(conductor_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let tool_service = ToolServiceServer::new(services.tools)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ledger_service = services.ledger.map(|ledger| {
        ApprovalLedgerServer::new(ledger)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    });

    let stopping = async move {
        shutdown.await;
        tracing::info!(
            server = kind.name(),
            "shutting down: finishing in-flight calls"
        );
        for service in ["", TOOL_SERVICE_NAME] {
            health
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
    };

    // Scripts and tests read the bound address from this line: keep its wording.
    tracing::info!(server = kind.name(), data_dir = %options.data_dir.display(), tls = options.tls.is_some(), "listening on {addr}");
    builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tool_service)
        .add_optional_service(ledger_service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stopping,
        )
        .await?;
    tracing::info!(server = kind.name(), "stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn advertised_names_match_the_generated_services() {
        assert_eq!(
            <ToolServiceServer<ToolSet> as NamedService>::NAME,
            TOOL_SERVICE_NAME
        );
        assert_eq!(
            <ApprovalLedgerServer<ApprovalLedgerService> as NamedService>::NAME,
            APPROVAL_LEDGER_NAME
        );
    }
}
