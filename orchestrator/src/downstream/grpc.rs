//! The gRPC `ToolService` client of one downstream server: a lazily connected, shared channel.
//!
//! Generated types stop here: callers get a JSON value, a [`ToolFailure`], or an [`Error`] naming the
//! server. The channel reconnects by itself, so a server that comes back is used again.
//!
//! An `https://` address is reached over TLS: the system's roots, or the server's `tls.ca_file`, and
//! its client certificate where the server requires mutual TLS. A handshake that fails is reported
//! with the server's name and which TLS setting to look at.

use super::{MAX_MESSAGE_BYTES, ToolFailure, ToolInfo, deadline};
use crate::config::{ClientTlsFiles, ServerConfig};
use crate::error::Error;
use conductor_proto::v1::call_tool_response::Outcome as WireOutcome;
use conductor_proto::v1::tool_service_client::ToolServiceClient;
use conductor_proto::v1::{CallToolRequest, ListToolsRequest};
use serde_json::Value;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A cheap, cloneable client of one `ToolService`.
#[derive(Clone)]
pub(super) struct GrpcTools {
    /// The `ToolService` client and the standard gRPC health check ([`super::health`]) share it.
    channel: Channel,
    /// The TLS settings the channel was built with: other settings (a reload) need a new channel.
    tls: Option<ClientTlsFiles>,
}

impl GrpcTools {
    /// Builds the channel without connecting: the first call connects.
    pub(super) fn new(server: &ServerConfig, url: &str) -> Result<Self, Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "server {:?}: bad address {url:?}: {e}",
                    server.name
                ))
            })?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(30));
        let endpoint = crate::tls::grpc_endpoint(endpoint, url, server.tls.as_ref())
            .map_err(|e| Error::InvalidArgument(format!("server {:?}: TLS: {e}", server.name)))?;
        Ok(GrpcTools {
            channel: endpoint.connect_lazy(),
            tls: server.tls.clone(),
        })
    }

    /// Whether this client was built with `server`'s TLS settings.
    pub(super) fn serves(&self, server: &ServerConfig) -> bool {
        self.tls == server.tls
    }

    /// A `ToolService` client on the shared channel (cheap: the channel is a handle).
    fn client(&self) -> ToolServiceClient<Channel> {
        ToolServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The server's answer to the standard gRPC health check (the whole server): Ok when SERVING.
    pub(super) async fn health(&self) -> Result<(), String> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut client = tonic_health::pb::health_client::HealthClient::new(self.channel.clone());
        let answer = client
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .map_err(|status| match std::error::Error::source(&status) {
                Some(cause) => format!("{}: {cause}", status.message()),
                None => status.message().to_owned(),
            })?
            .into_inner();
        match ServingStatus::try_from(answer.status) {
            Ok(ServingStatus::Serving) => Ok(()),
            Ok(other) => Err(format!("its health check says {}", other.as_str_name())),
            Err(_) => Err(format!("its health check says {}", answer.status)),
        }
    }

    /// Calls one tool, bounded by the server's time-out (also sent downstream as the gRPC deadline).
    pub(super) async fn call(
        &self,
        server: &ServerConfig,
        tool: &str,
        arguments: &Value,
        workflow_id: &str,
        call_id: &str,
    ) -> Result<Result<Value, ToolFailure>, Error> {
        let mut client = self.client();
        let mut request = tonic::Request::new(CallToolRequest {
            tool: tool.to_owned(),
            arguments_json: arguments.to_string(),
            workflow_id: workflow_id.to_owned(),
            call_id: call_id.to_owned(),
        });
        request.set_timeout(server.timeout);
        crate::telemetry::propagation::inject_metadata(request.metadata_mut());
        let response = tokio::time::timeout(server.timeout, client.call_tool(request))
            .await
            .map_err(|_| deadline(tool, server.timeout))?
            .map_err(|status| status_error(server, tool, status))?
            .into_inner();
        match response.outcome {
            Some(WireOutcome::ResultJson(text)) => {
                serde_json::from_str(&text)
                    .map(Ok)
                    .map_err(|e| Error::Downstream {
                        server: server.name.clone(),
                        tool: tool.to_owned(),
                        message: format!("the result is not valid JSON: {e}"),
                    })
            }
            Some(WireOutcome::Error(error)) => Ok(Err(ToolFailure {
                code: error.code,
                message: error.message,
                details: (!error.details_json.is_empty())
                    .then(|| serde_json::from_str(&error.details_json).ok())
                    .flatten(),
            })),
            None => Err(Error::Downstream {
                server: server.name.clone(),
                tool: tool.to_owned(),
                message: "the response carries neither a result nor an error".into(),
            }),
        }
    }

    /// The server's own list of tools.
    pub(super) async fn list(&self, server: &ServerConfig) -> Result<Vec<ToolInfo>, Error> {
        let mut client = self.client();
        let mut request = tonic::Request::new(ListToolsRequest {});
        request.set_timeout(Duration::from_secs(5));
        let tools = client
            .list_tools(request)
            .await
            .map_err(|status| status_error(server, "ListTools", status))?
            .into_inner()
            .tools;
        Ok(tools
            .into_iter()
            .map(|t| ToolInfo {
                input_schema: serde_json::from_str(&t.input_schema_json)
                    .unwrap_or_else(|_| serde_json::json!({"type": "object"})),
                name: t.name,
                description: t.description,
                server: server.name.clone(),
                hints: Default::default(),
                listed: None,
            })
            .collect())
    }
}

fn status_error(server: &ServerConfig, tool: &str, status: tonic::Status) -> Error {
    use tonic::Code;
    let message = status.message().to_owned();
    match status.code() {
        Code::InvalidArgument => Error::InvalidArgument(message),
        Code::DeadlineExceeded => deadline(tool, server.timeout),
        // tonic's client enforces the `grpc-timeout` it sends and reports its own expiry this way.
        Code::Cancelled if message.contains("Timeout expired") => deadline(tool, server.timeout),
        // A status made by the client from a broken connection (an h2 error as the server shut down),
        // not one the server sent: the server is going away, and the call's effect is unknown.
        Code::Internal if std::error::Error::source(&status).is_some() => Error::Unavailable {
            server: server.name.clone(),
            message: format!(
                "the connection broke during the call (its effect is unknown): {message}"
            ),
        },
        Code::Unavailable | Code::Unknown | Code::Cancelled => Error::Unavailable {
            server: server.name.clone(),
            message: if message.is_empty() {
                format!("{:?}", status.code())
            } else {
                connection_message(server, &status)
            },
        },
        Code::NotFound => Error::Downstream {
            server: server.name.clone(),
            tool: tool.to_owned(),
            message: format!("the server does not know the tool: {message}"),
        },
        code => Error::Downstream {
            server: server.name.clone(),
            tool: tool.to_owned(),
            message: format!("{code:?}: {message}"),
        },
    }
}

/// A failed connection's message with its causes, and for a TLS handshake that failed on a
/// certificate, which setting decides it: the CA the server's certificate must chain to, or the
/// client certificate a server requiring mutual TLS asked for.
fn connection_message(server: &ServerConfig, status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = error.source();
    }
    let lower = message.to_ascii_lowercase();
    if !lower.contains("certificate") {
        return message;
    }
    let name = &server.name;
    let tls = server.tls.clone().unwrap_or_default();
    let hint = if lower.contains("alert") {
        match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(_)) => format!(
                "the server refused the client certificate {} (servers.{name}.tls.cert_file)",
                cert.display()
            ),
            _ => format!(
                "the server requires a client certificate: set servers.{name}.tls.cert_file and key_file"
            ),
        }
    } else {
        match &tls.ca_file {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in {} (servers.{name}.tls.ca_file)",
                ca.display()
            ),
            None => format!(
                "the server's certificate is not signed by a CA of the system's roots: name its CA in servers.{name}.tls.ca_file"
            ),
        }
    };
    format!("TLS handshake failed: {message}; {hint}")
}
