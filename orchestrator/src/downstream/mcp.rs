//! The MCP client of one downstream MCP server that is a child process speaking MCP over stdio,
//! through the official SDK (`rmcp`). Streamable HTTP servers have a leaner client of their own
//! (`mcp_http`); the two share the mapping of results and tool lists.
//!
//! One session per server, opened on first use and shared by concurrent calls. A session that breaks
//! (the child exited, the connection dropped, garbage instead of an answer, no answer in time) is
//! cancelled, which also kills the child, and the next call opens a new one: a dead server costs the
//! calls in flight, never the orchestrator.

use super::{
    Ask, AskRefused, InFlight, Progress, RelaySink, Relayed, ToolFailure, ToolInfo, deadline,
};
use crate::config::{ServerConfig, Transport};
use crate::error::Error;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig,
    ClientRequest, Implementation, ServerResult,
};
use rmcp::service::{PeerRequestOptions, RunningService, ServiceError};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

type Session = RunningService<RoleClient, ConductorClient>;

/// Where the progress of the calls in flight goes, by the progress token each was sent with.
type ProgressRoutes = Arc<std::sync::Mutex<std::collections::HashMap<String, RelaySink>>>;

/// How Conductorio introduces itself to the MCP servers it calls, and where it sends the progress
/// they report.
#[derive(Clone, Default)]
pub(super) struct ConductorClient {
    routes: ProgressRoutes,
    /// The tool calls in flight on the session, each counted (with its relay) before its request
    /// goes out. A log message over stdio names no request: it goes to the caller only when
    /// exactly one call is in flight (it is then that call's), and is dropped otherwise (another
    /// caller's log messages are never delivered).
    inflight: Arc<InFlight>,
    /// Where the server's resource updates go, with the server's name.
    updates: Option<(String, super::Updates)>,
}

impl ConductorClient {
    /// The one call in flight's relay, if exactly one call is in flight and its caller wants what
    /// the server sends: what the server sends without naming a request is then that call's.
    fn lone_call(&self) -> Option<RelaySink> {
        self.inflight.lone()
    }

    /// A server's request, relayed to the client of the one call in flight; refused when there
    /// is not exactly one.
    async fn ask<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: impl serde::Serialize,
    ) -> Result<T, rmcp::ErrorData> {
        let refused = |refused: AskRefused| {
            rmcp::ErrorData::new(rmcp::model::ErrorCode(refused.code), refused.message, None)
        };
        let Some(sink) = self.lone_call() else {
            return Err(refused(AskRefused::cannot_answer(method)));
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let asked = Ask {
            method: method.to_owned(),
            params: serde_json::to_value(params).unwrap_or(Value::Null),
            answer,
        };
        if sink.send(Relayed::Ask(asked)).await.is_err() {
            return Err(refused(AskRefused::cannot_answer(method)));
        }
        let answer = answered
            .await
            .unwrap_or_else(|_| Err(AskRefused::cannot_answer(method)))
            .map_err(refused)?;
        serde_json::from_value(answer).map_err(|e| {
            rmcp::ErrorData::internal_error(format!("the client's answer is not MCP: {e}"), None)
        })
    }
}

impl ClientHandler for ConductorClient {
    fn get_info(&self) -> ClientConfig {
        // What a server may ask of the client of a call (relayed to it).
        let mut capabilities = ClientCapabilities::default();
        capabilities.sampling = Some(Default::default());
        capabilities.elicitation = Some(Default::default());
        ClientConfig::new(
            capabilities,
            Implementation::new("conductorio", env!("CARGO_PKG_VERSION")),
        )
    }

    #[allow(deprecated)] // sampling is of the session eras (SEP-2577)
    async fn create_message(
        &self,
        params: rmcp::model::CreateMessageRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        self.ask("sampling/createMessage", params).await
    }

    async fn create_elicitation(
        &self,
        params: rmcp::model::ElicitRequestParams,
        _context: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        self.ask("elicitation/create", params).await
    }
}

impl ConductorClient {
    /// A notification of the server's, relayed as the transport reads it, before the messages
    /// after it (the SDK hands notifications to tasks of their own, which may run after the
    /// answer that followed them): progress to the call whose token it carries, a log message to
    /// the one call in flight.
    #[allow(deprecated)] // log messages are of the session eras (SEP-2577)
    fn relay(&self, notification: &rmcp::model::ServerNotification) {
        use rmcp::model::ServerNotification;
        match notification {
            ServerNotification::ProgressNotification(progress) => {
                let params = &progress.params;
                // By the token its call was sent with; before that call's route is known (the
                // server may answer faster than the request's send returns), the lone call's.
                let sink = self
                    .routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&params.progress_token.0.to_string())
                    .cloned()
                    .or_else(|| self.lone_call());
                if let Some(sink) = sink {
                    let _ = sink.try_send(Relayed::Progress(Progress {
                        progress: params.progress,
                        total: params.total,
                        message: params.message.clone(),
                    }));
                }
            }
            ServerNotification::ResourceUpdatedNotification(updated) => {
                if let Some((server, updates)) = &self.updates {
                    updates.announce(server, &json!({ "uri": updated.params.uri }));
                }
            }
            ServerNotification::LoggingMessageNotification(log) => {
                if let Some(sink) = self.lone_call() {
                    let _ = sink.try_send(Relayed::Log(log.params.clone()));
                }
            }
            _ => {}
        }
    }
}

/// A transport that relays the server's notifications in the order it reads them.
struct InOrder<T> {
    inner: T,
    client: ConductorClient,
}

impl<T: rmcp::transport::Transport<RoleClient>> rmcp::transport::Transport<RoleClient>
    for InOrder<T>
{
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        if let rmcp::model::JsonRpcMessage::Notification(notification) = &message {
            self.client.relay(&notification.notification);
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// A call's progress route, removed when the call ends.
struct Route<'a> {
    routes: &'a ProgressRoutes,
    token: String,
}

impl Drop for Route<'_> {
    fn drop(&mut self) {
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
    }
}

/// The session with one MCP server. Calls read the open session under a plain lock held for a
/// pointer copy; the async `opening` lock serialises opening a new one (so a burst of calls starts
/// one child, not many). Calls themselves run outside both, concurrently.
#[derive(Default)]
pub(super) struct McpTools {
    current: std::sync::Mutex<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
    client: ConductorClient,
}

impl McpTools {
    /// The client of server `name`, whose resource updates go to `updates`.
    pub(super) fn announcing(name: &str, updates: super::Updates) -> Self {
        let tools = McpTools::default();
        McpTools {
            client: ConductorClient {
                updates: Some((name.to_owned(), updates)),
                ..tools.client.clone()
            },
            ..tools
        }
    }

    /// Calls one tool within the server's time-out, once a session is open (see [`open_limit`]).
    pub(super) async fn call(
        &self,
        server: &ServerConfig,
        tool: &str,
        arguments: &Value,
        progress: Option<&RelaySink>,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<super::ToolReply, Error> {
        let arguments = match arguments {
            Value::Object(map) => Some(map.clone()),
            Value::Null => None,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "the arguments of {tool} must be a JSON object, not {other}"
                )));
            }
        };
        let session = tokio::time::timeout(open_limit(server), self.session(server))
            .await
            .map_err(|_| deadline(tool, open_limit(server)))??;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = arguments;
        crate::telemetry::propagation::inject_request_meta(&mut params.meta);
        let _in_flight = self.client.inflight.enter(progress);
        let work = async {
            // Every request carries a progress token of the SDK's; when the caller asked for
            // progress, what the server reports under it goes to the caller.
            let handle = session
                .send_request_with_option(
                    ClientRequest::CallToolRequest(CallToolRequest::new(params)),
                    PeerRequestOptions::no_options(),
                )
                .await?;
            let _route = progress.map(|sink| {
                let token = handle.progress_token.0.to_string();
                self.client
                    .routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token.clone(), sink.clone());
                Route {
                    routes: &self.client.routes,
                    token,
                }
            });
            let (id, peer) = (handle.id.clone(), handle.peer.clone());
            let response = match cancel {
                Some(cancel) => tokio::select! {
                    response = handle.await_response() => response?,
                    () = cancel.cancelled() => {
                        // As MCP says: the server is told, and its answer no longer awaited.
                        let withdrawn = rmcp::model::CancelledNotificationParam::new(
                            Some(id),
                            Some("the caller cancelled the call".to_owned()),
                        );
                        let _ = peer.notify_cancelled(withdrawn).await;
                        return Ok(None);
                    }
                },
                None => handle.await_response().await?,
            };
            match response {
                ServerResult::CallToolResult(result) => Ok(Some(result)),
                _ => Err(ServiceError::UnexpectedResponse),
            }
        };
        match tokio::time::timeout(server.timeout, work).await {
            Ok(Ok(Some(result))) => Ok(reply(result)),
            Ok(Ok(None)) => Err(Error::Cancelled {
                server: server.name.clone(),
                tool: tool.to_owned(),
            }),
            Ok(Err(e)) => Err(self.failed(server, tool, &session, e)),
            Err(_) => {
                self.discard(&session);
                Err(deadline(tool, server.timeout))
            }
        }
    }

    /// One request other than `tools/call`, as the client gave it (see
    /// [`super::Downstream::request`]), within the server's time-out.
    pub(super) async fn request(
        &self,
        server: &ServerConfig,
        method: &str,
        params: Value,
    ) -> Result<Value, Error> {
        let request: ClientRequest =
            serde_json::from_value(json!({ "method": method, "params": params })).map_err(|e| {
                Error::InvalidArgument(format!("{method}: the request is not what MCP says: {e}"))
            })?;
        let session = tokio::time::timeout(open_limit(server), self.session(server))
            .await
            .map_err(|_| deadline(method, open_limit(server)))??;
        match tokio::time::timeout(server.timeout, session.send_request(request)).await {
            Ok(Ok(result)) => serde_json::to_value(result).map_err(|e| Error::Downstream {
                server: server.name.clone(),
                tool: method.to_owned(),
                message: format!("the answer could not be read: {e}"),
            }),
            Ok(Err(e)) => Err(self.failed(server, method, &session, e)),
            Err(_) => Err(deadline(method, server.timeout)),
        }
    }

    /// One MCP `ping` on the open session (the background health check, [`super::health`]).
    pub(super) async fn ping(&self, server: &ServerConfig) -> Result<(), Error> {
        let session = self.session(server).await?;
        let ping = rmcp::model::ClientRequest::PingRequest(Default::default());
        match session.send_request(ping).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(server, "ping", &session, e)),
        }
    }

    /// The server's own list of tools, within its time-out.
    pub(super) async fn list(&self, server: &ServerConfig) -> Result<Vec<ToolInfo>, Error> {
        let work = async {
            let session = self.session(server).await?;
            match session.list_all_tools().await {
                Ok(tools) => Ok(tools),
                Err(e) => Err(self.failed(server, "tools/list", &session, e)),
            }
        };
        let limit = open_limit(server) + server.timeout;
        let tools = tokio::time::timeout(limit, work)
            .await
            .map_err(|_| deadline("tools/list", limit))??;
        Ok(tools
            .into_iter()
            .map(|tool| tool_info(server, tool))
            .collect())
    }

    /// The open session, or a new one when there is none or the last one has ended.
    async fn session(&self, server: &ServerConfig) -> Result<Arc<Session>, Error> {
        if let Some(session) = self.open_session() {
            return Ok(session);
        }
        let _opening = self.opening.lock().await;
        // Another call may have opened one while this one waited.
        if let Some(session) = self.open_session() {
            return Ok(session);
        }
        if self.current().is_some() {
            tracing::warn!(server = %server.name, "the MCP session has ended; opening a new one");
        }
        let session = Arc::new(open(server, self.client.clone()).await?);
        *self.current() = Some(session.clone());
        Ok(session)
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Session>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current session, if it is still open.
    fn open_session(&self) -> Option<Arc<Session>> {
        self.current()
            .as_ref()
            .filter(|s| !s.is_closed() && !s.peer().is_transport_closed())
            .cloned()
    }

    /// Ends `session` (killing its child) unless a newer one has already replaced it.
    fn discard(&self, session: &Arc<Session>) {
        {
            let mut current = self.current();
            if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
                *current = None;
            }
        }
        session.cancellation_token().cancel();
    }

    /// Maps a failed request to our error; a broken transport also ends the session.
    fn failed(
        &self,
        server: &ServerConfig,
        tool: &str,
        session: &Arc<Session>,
        error: ServiceError,
    ) -> Error {
        match error {
            ServiceError::McpError(e) => Error::ServerError {
                server: server.name.clone(),
                method: tool.to_owned(),
                code: e.code.0,
                message: e.message.to_string(),
                data: e.data.map(Box::new),
            },
            ServiceError::Timeout { .. } => {
                self.discard(session);
                deadline(tool, server.timeout)
            }
            ServiceError::TransportClosed
            | ServiceError::TransportSend(_)
            | ServiceError::Cancelled { .. } => {
                self.discard(session);
                Error::Unavailable {
                    server: server.name.clone(),
                    message: format!(
                        "the MCP connection closed during {tool} ({error}); the server may have exited, and it is started again on the next call"
                    ),
                }
            }
            other => {
                self.discard(session);
                Error::Downstream {
                    server: server.name.clone(),
                    tool: tool.to_owned(),
                    message: other.to_string(),
                }
            }
        }
    }
}

/// How long starting a server and its handshake may take: a child process may need longer to start
/// (an interpreter importing its SDK) than a call may take, so at least ten seconds.
fn open_limit(server: &ServerConfig) -> Duration {
    server.timeout.max(Duration::from_secs(10))
}

/// Starts the child or connects, and performs the MCP handshake.
async fn open(server: &ServerConfig, client: ConductorClient) -> Result<Session, Error> {
    let unavailable = |message: String| Error::Unavailable {
        server: server.name.clone(),
        message,
    };
    match &server.transport {
        Transport::McpStdio { command, args, env } => {
            let mut child = tokio::process::Command::new(command);
            child.args(args).envs(env).kill_on_drop(true);
            let (transport, _stderr) = TokioChildProcess::builder(child)
                .spawn()
                .map_err(|e| unavailable(format!("cannot start `{command}`: {e}")))?;
            tracing::info!(server = %server.name, %command, "started MCP server");
            let transport = InOrder {
                inner: transport,
                client: client.clone(),
            };
            client
                .serve(transport)
                .await
                .map_err(|e| unavailable(format!("the MCP handshake with `{command}` failed: {e}")))
        }
        Transport::McpHttp { url } => {
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            client
                .serve(transport)
                .await
                .map_err(|e| unavailable(format!("the MCP handshake with {url} failed: {e}")))
        }
        Transport::Grpc { url } => Err(unavailable(format!(
            "{url} is a gRPC server, not an MCP server"
        ))),
    }
}

/// A tool as its server describes it, in domain terms.
pub(super) fn tool_info(server: &ServerConfig, tool: rmcp::model::Tool) -> ToolInfo {
    let listed = serde_json::to_value(&tool).ok().map(std::sync::Arc::new);
    ToolInfo {
        listed,
        name: tool.name.to_string(),
        description: tool.description.map(|d| d.to_string()).unwrap_or_default(),
        input_schema: Value::Object((*tool.input_schema).clone()),
        server: server.name.clone(),
        hints: conductor_core::config::ToolHints {
            open_world: tool.annotations.as_ref().and_then(|a| a.open_world_hint),
            destructive: tool.annotations.as_ref().and_then(|a| a.destructive_hint),
        },
    }
}

/// A tool's answer: its domain value ([`outcome`]) and the result as the server gave it.
pub(super) fn reply(result: CallToolResult) -> super::ToolReply {
    let served = serde_json::to_value(&result).ok().map(std::sync::Arc::new);
    super::ToolReply {
        outcome: outcome(result),
        served,
    }
}

/// A tool result as a domain value: the structured content when there is one, else the text (parsed as
/// JSON when it is JSON). `isError` results become [`ToolFailure`]s, keeping a `code` and `details` that
/// the server put in its structured content.
pub(super) fn outcome(result: CallToolResult) -> Result<Value, ToolFailure> {
    let texts: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    if result.is_error == Some(true) {
        let structured = result.structured_content.as_ref();
        let field = |name: &str| {
            structured
                .and_then(|s| s.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        return Err(ToolFailure {
            code: field("code").unwrap_or_else(|| "tool_error".to_owned()),
            message: field("message").unwrap_or_else(|| texts.join("\n")),
            details: structured
                .and_then(|s| s.get("details"))
                .cloned()
                .or_else(|| result.structured_content.clone()),
        });
    }
    if let Some(value) = result.structured_content {
        return Ok(value);
    }
    match texts.as_slice() {
        [text] if texts.len() == result.content.len() => {
            Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String((*text).to_owned())))
        }
        _ => Ok(json!({ "content": serde_json::to_value(&result.content).unwrap_or(Value::Null) })),
    }
}
