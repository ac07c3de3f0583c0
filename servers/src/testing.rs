//! Real tool servers for integration tests, in this crate and in others (the orchestrator, the CLI).
//!
//! Each server is the real one, served by [`crate::serve()`] on `127.0.0.1:0` in the test's runtime, with
//! its files in a temporary directory. [`spawn`] returns only once the server answers a health check,
//! and [`RunningServer::stop`] shuts it down gracefully and waits for it, so tests never sleep.
//! These helpers panic with a clear message when a server cannot start: they are for tests only.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use conductor_proto::tls::ClientTls;
use conductor_proto::v1::tool_service_client::ToolServiceClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{ServeError, ServerKind, ServerOptions, serve};

/// How long a server may take to start answering before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A tool server running in the current runtime.
#[derive(Debug)]
pub struct RunningServer {
    pub kind: ServerKind,
    pub addr: SocketAddr,
    /// How a client reaches it over TLS (`None`: plaintext).
    pub client_tls: Option<ClientTls>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The server's gRPC endpoint, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// A fresh channel to the server.
    pub async fn channel(&self) -> Channel {
        match endpoint(self.addr, self.client_tls.as_ref()) {
            Ok(endpoint) => match endpoint.connect().await {
                Ok(channel) => channel,
                Err(error) => panic!("cannot connect to the {} server: {error}", self.kind),
            },
            Err(error) => panic!("bad server url {}: {error}", self.url()),
        }
    }

    /// A ToolService client connected to the server.
    pub async fn tool_client(&self) -> ToolServiceClient<Channel> {
        ToolServiceClient::new(self.channel().await)
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the {} server failed: {error}", self.kind),
            Err(error) => panic!("the {} server's task failed: {error}", self.kind),
        }
    }
}

/// Starts `kind` on `127.0.0.1:0` with its files in `data_dir`, and waits until it answers.
pub async fn spawn(kind: ServerKind, data_dir: &Path) -> RunningServer {
    spawn_with(kind, ServerOptions::new(data_dir)).await
}

/// Like [`spawn`], with full options (e.g. a schemas file for the validation server).
pub async fn spawn_with(kind: ServerKind, options: ServerOptions) -> RunningServer {
    start(kind, options, None).await
}

/// Like [`spawn_with`] for a server with `options.tls`; `client` is how the test (its health check
/// and [`RunningServer::channel`]) reaches it: the CA to trust and, for mTLS, a client certificate.
pub async fn spawn_tls(
    kind: ServerKind,
    options: ServerOptions,
    client: ClientTls,
) -> RunningServer {
    start(kind, options, Some(client)).await
}

async fn start(
    kind: ServerKind,
    options: ServerOptions,
    client_tls: Option<ClientTls>,
) -> RunningServer {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("cannot bind 127.0.0.1:0 for the {kind} server: {error}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => panic!("cannot read the {kind} server's address: {error}"),
    };
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(kind, listener, options, async move {
        // A dropped sender (the RunningServer was dropped) stops the server too.
        let _ = stopped.await;
    }));
    let mut server = RunningServer {
        kind,
        addr,
        client_tls: client_tls.clone(),
        shutdown: Some(shutdown),
        task,
    };
    let ready = tokio::time::timeout(START_DEADLINE, async {
        tokio::select! {
            finished = &mut server.task => match finished {
                Ok(Ok(())) => panic!("the {kind} server stopped before serving"),
                Ok(Err(error)) => panic!("the {kind} server could not start: {error}"),
                Err(error) => panic!("the {kind} server's task failed: {error}"),
            },
            status = health_status(addr, client_tls.as_ref()) => status,
        }
    })
    .await;
    match ready {
        Ok(Ok(ServingStatus::Serving)) => server,
        Ok(Ok(status)) => panic!("the {kind} server reports {status:?} instead of SERVING"),
        Ok(Err(error)) => panic!("the {kind} server does not answer health checks: {error}"),
        Err(_) => panic!("the {kind} server did not answer within {START_DEADLINE:?}"),
    }
}

/// The endpoint of the server at `addr`, over TLS with `tls`.
fn endpoint(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
) -> Result<Endpoint, Box<dyn std::error::Error>> {
    Ok(match tls {
        None => Endpoint::from_shared(format!("http://{addr}"))?,
        Some(tls) => {
            Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.tonic_config()?)?
        }
    })
}

/// The overall health status the server at `addr` reports.
async fn health_status(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
) -> Result<ServingStatus, Box<dyn std::error::Error>> {
    let channel = endpoint(addr, tls)?.connect().await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// All five tool servers, each with its own sub-directory of one temporary directory.
#[derive(Debug)]
pub struct ToolServers {
    pub data_dir: tempfile::TempDir,
    pub servers: Vec<RunningServer>,
}

impl ToolServers {
    /// The running server of `kind`.
    pub fn get(&self, kind: ServerKind) -> &RunningServer {
        match self.servers.iter().find(|s| s.kind == kind) {
            Some(server) => server,
            None => panic!("no {kind} server among the running ones"),
        }
    }

    /// The lines of the call log of the server of `kind` so far (see `crate::call_log`).
    pub fn calls(&self, kind: ServerKind) -> Vec<serde_json::Value> {
        let path = call_log_path(self.data_dir.path(), kind);
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(|line| match serde_json::from_str(line) {
                    Ok(value) => value,
                    Err(error) => panic!(
                        "{}: a line that is not JSON ({error}): {line}",
                        path.display()
                    ),
                })
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("cannot read {}: {error}", path.display()),
        }
    }

    /// Stops every server gracefully, then removes the temporary directory.
    pub async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// Starts all five servers, each in `<temp dir>/<server name>`.
pub async fn spawn_all() -> ToolServers {
    let data_dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("cannot create a temporary directory: {error}"),
    };
    let mut servers = Vec::with_capacity(ServerKind::ALL.len());
    for kind in ServerKind::ALL {
        let options = ServerOptions {
            call_log: Some(call_log_path(data_dir.path(), kind)),
            ..ServerOptions::new(data_dir.path().join(kind.name()))
        };
        servers.push(spawn_with(kind, options).await);
    }
    ToolServers { data_dir, servers }
}

/// Where [`spawn_all`] has the server of `kind` keep its call log.
fn call_log_path(dir: &Path, kind: ServerKind) -> std::path::PathBuf {
    dir.join(format!("{}-calls.jsonl", kind.name()))
}

/// Defines a function that lists a server's services over one version of the reflection protocol: the
/// two versions' generated types have the same shape but are distinct, so one body serves both.
macro_rules! reflection_services {
    ($(#[$doc:meta])* $name:ident, $version:ident) => {
        $(#[$doc])*
        pub async fn $name(channel: Channel) -> Vec<String> {
            use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
            let request = tonic_reflection::pb::$version::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .expect("reflection answers")
                .into_inner();
            let response = responses.message().await.expect("a reflection message").expect("a reflection response");
            match response.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
                    names.sort();
                    names
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
    };
}

reflection_services!(
    /// The services a server lists over gRPC reflection v1 (sorted).
    reflection_services_v1,
    v1
);
reflection_services!(
    /// The services a server lists over gRPC reflection v1alpha, the protocol older clients (grpcurl
    /// 1.8) speak (sorted).
    reflection_services_v1alpha,
    v1alpha
);
