//! Clients of the downstream tool servers: gRPC `ToolService`s ([`grpc`]) and MCP servers, as child
//! processes over stdio ([`mcp`]) or over Streamable HTTP ([`mcp_http`]). One client per server, created on first use.
//!
//! This module turns protocol types into domain values at the edge: callers get a JSON value or a
//! [`ToolFailure`], and transport problems become [`Error`]s that name the server. A dead server is not
//! fatal: the next call reconnects (gRPC, MCP over HTTP) or starts the child again (MCP over stdio).
//! [`health`] checks in the background whether each server can be reached.

pub mod credentials;
mod grpc;
pub mod health;
mod mcp;
mod mcp_http;

use crate::config::{Config, RouteKind, ServerConfig, Transport};
use crate::error::Error;
use grpc::GrpcTools;
use mcp::McpTools;
use mcp_http::HttpTools;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// gRPC messages larger than this are refused with a clear error, both ways.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A tool's own failure: the call was made and the tool said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFailure {
    pub code: String,
    pub message: String,
    pub details: Option<Value>,
}

/// A tool as its server describes it.
#[derive(Debug, Clone)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub server: String,
    /// What the server's annotations say about the tool (MCP servers; none for gRPC ones).
    pub hints: conductor_core::config::ToolHints,
    /// An MCP server's tool exactly as it listed it (title, annotations, output schema, execution
    /// hints, icons, `_meta`), for the MCP front to pass on under the public name; none for gRPC.
    pub listed: Option<Arc<Value>>,
}

/// What a tool answered: its domain value (what templates, conditions and the audit log read) and,
/// from an MCP server, its result exactly as the server gave it (every content block,
/// `structuredContent`, `isError`, `_meta`), for the MCP front to pass on unchanged.
#[derive(Debug, Clone)]
pub struct ToolReply {
    pub outcome: Result<Value, ToolFailure>,
    pub served: Option<Arc<Value>>,
}

impl From<Result<Value, ToolFailure>> for ToolReply {
    fn from(outcome: Result<Value, ToolFailure>) -> Self {
        ToolReply {
            outcome,
            served: None,
        }
    }
}

/// Progress a tool reports while it runs, on its way to the caller that asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// What a server sends while it answers a request, on its way to the client that made it.
#[derive(Debug)]
#[allow(deprecated)] // log messages are of the session eras (SEP-2577)
pub enum Relayed {
    Progress(Progress),
    /// A log message (`notifications/message`), as the server gave it.
    Log(rmcp::model::LoggingMessageNotificationParam),
    /// A request of the server's own to the client (sampling, elicitation, roots).
    Ask(Ask),
}

/// A server's request to the client of the call it is answering; the client's answer (its result,
/// or why not) goes back on `answer`.
#[derive(Debug)]
pub struct Ask {
    pub method: String,
    pub params: Value,
    pub answer: tokio::sync::oneshot::Sender<Result<Value, AskRefused>>,
}

/// Why a server's request got no result: a JSON-RPC error, the client's or ours.
#[derive(Debug, Clone)]
pub struct AskRefused {
    pub code: i32,
    pub message: String,
}

impl AskRefused {
    /// The client of the call cannot answer `method` (it did not say it can, or there is none).
    pub fn cannot_answer(method: &str) -> Self {
        AskRefused {
            code: rmcp::model::ErrorCode::METHOD_NOT_FOUND.0,
            message: format!(
                "the client of this call cannot answer {method}: it did not declare the capability (Conductorio relays a server's requests only to a client that can answer them)"
            ),
        }
    }
}

/// The client a request is made for, when it speaks the session-free 2026-07-28 era (SEP-2575): a
/// server that speaks that era too is sent the request in it, with what the client said of itself
/// in its own request, so that the server asks only what the client can answer; the server's
/// `input_required` result (SEP-2322) goes back to the client, and the client's answers come with
/// its retry. Never recorded: the answers may hold what the client's user typed.
#[derive(Debug, Clone, Default)]
pub struct SessionFree {
    /// The client's `io.modelcontextprotocol/clientCapabilities`.
    pub capabilities: Value,
    /// The client's `io.modelcontextprotocol/logLevel`, when it asked for log messages.
    pub log_level: Option<Value>,
    /// `inputResponses`: the client's answers to the server's input requests of the last round.
    pub input_responses: Option<Value>,
    /// `requestState`: what the server gave the client to send back with its answers.
    pub request_state: Option<Value>,
}

/// A resource a server says changed (`notifications/resources/updated`), for the clients that
/// subscribed to it through Conductorio in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUpdated {
    pub server: String,
    pub uri: String,
}

/// Where the servers' resource updates go: each MCP front that relays them listens. Bounded: a
/// front that falls behind misses updates (it is told how many), and no server can grow memory.
#[derive(Clone)]
pub struct Updates(tokio::sync::broadcast::Sender<ResourceUpdated>);

impl Default for Updates {
    fn default() -> Self {
        Updates(tokio::sync::broadcast::channel(256).0)
    }
}

impl Updates {
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ResourceUpdated> {
        self.0.subscribe()
    }

    /// A server's `notifications/resources/updated` (its params), on to whoever listens.
    fn announce(&self, server: &str, params: &Value) {
        if let Some(uri) = params.get("uri").and_then(Value::as_str) {
            let _ = self.0.send(ResourceUpdated {
                server: server.to_owned(),
                uri: uri.to_owned(),
            });
        }
    }
}

/// A change a server announced on a subscription stream (`subscriptions/listen`, SEP-2575), on its
/// way to the session-free client that listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    ToolsChanged,
    PromptsChanged,
    ResourcesChanged,
    /// A resource the client subscribed to changed (`notifications/resources/updated`).
    ResourceUpdated(String),
}

tokio::task_local! {
    /// The methods of the server's requests refused, for want of a way to the client, during the
    /// forwarding of a call whose caller has no stream (see [`noting_refusals`]).
    static REFUSED: std::cell::RefCell<Vec<String>>;
}

/// How many of a server's requests to the client (or of the client's answers to them) one call
/// records one by one: a server asking again and again, or a client sending a thousand answers in
/// one retry, grows the log by this many records at most (SPEC §9.6).
pub const MAX_ASKS_RECORDED: usize = 32;

/// Runs `work` (the forwarding of one call whose caller has no stream to answer a server's
/// request on), and returns with its output the methods of the server's requests refused while it
/// ran, so that each is recorded as a request relayed on a stream is. Requests of a server over
/// stdio are answered by the SDK's own task and are not noted here.
pub async fn noting_refusals<F: std::future::Future>(work: F) -> (F::Output, Vec<String>) {
    REFUSED
        .scope(std::cell::RefCell::new(Vec::new()), async {
            let output = work.await;
            (output, REFUSED.with(std::cell::RefCell::take))
        })
        .await
}

/// Notes a server's request refused for want of a way to the client (see [`noting_refusals`]).
fn note_refused(method: &str) {
    let _ = REFUSED.try_with(|refused| {
        let mut refused = refused.borrow_mut();
        if refused.len() < MAX_ASKS_RECORDED {
            refused.push(method.to_owned());
        }
    });
}

/// Where a request's progress and log messages go: a bounded channel to its caller; an update that
/// finds it full is dropped (both are advisory, and a slow caller never slows the tool's answer).
pub type RelaySink = tokio::sync::mpsc::Sender<Relayed>;

/// The calls in flight, and the relays of those whose callers want what the server sends: a
/// message on the session's own stream names no request, so it goes to the caller only when
/// exactly one call is in flight (it is then that call's), and is dropped otherwise (another
/// caller's log messages are never delivered).
#[derive(Default)]
pub(super) struct InFlight {
    calls: std::sync::atomic::AtomicUsize,
    relays: Mutex<Vec<(u64, RelaySink)>>,
    ids: std::sync::atomic::AtomicU64,
}

/// A call in flight, counted (and its relay kept) while it lasts.
pub(super) struct Entered<'a> {
    inflight: &'a InFlight,
    /// The id its relay is kept under; none for a call without one.
    relay: Option<u64>,
}

impl InFlight {
    pub(super) fn enter(&self, relay: Option<&RelaySink>) -> Entered<'_> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        // Only a call whose caller wants what the server sends takes the lock.
        let relay = relay.map(|relay| {
            let id = self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.relays
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((id, relay.clone()));
            id
        });
        Entered {
            inflight: self,
            relay,
        }
    }

    pub(super) fn lone(&self) -> Option<RelaySink> {
        if self.calls.load(std::sync::atomic::Ordering::Acquire) != 1 {
            return None;
        }
        match self
            .relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_slice()
        {
            [(_, relay)] => Some(relay.clone()),
            _ => None,
        }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(relay) = self.relay {
            self.inflight
                .relays
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(id, _)| *id != relay);
        }
        self.inflight
            .calls
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One call to forward.
pub struct Forward<'a> {
    pub server: &'a ServerConfig,
    pub remote_name: &'a str,
    pub arguments: &'a Value,
    pub workflow_id: &'a str,
    pub call_id: &'a str,
    /// Where the tool's progress and log messages go, when the caller wants them (MCP servers
    /// send them).
    pub relay: Option<&'a RelaySink>,
    /// What the call does on the server: a tool call, a resource read, a prompt.
    pub kind: RouteKind,
    /// Cancelled when the caller withdraws the call (an MCP client's `notifications/cancelled`,
    /// a gRPC client gone): the server is then told to stop, as MCP and gRPC say.
    pub cancel: Option<&'a tokio_util::sync::CancellationToken>,
    /// The session-free client the call is made for, if it is one (see [`SessionFree`]).
    pub session_free: Option<&'a SessionFree>,
}

#[derive(Clone)]
enum Client {
    Grpc(GrpcTools),
    Mcp(Arc<McpTools>),
    McpHttp(Arc<HttpTools>),
}

/// The clients of every configured server, created on first use and kept across configuration reloads
/// while the server's transport stays the same.
#[derive(Default)]
pub struct Downstream {
    clients: Mutex<HashMap<String, (Transport, Client)>>,
    catalog: Mutex<HashMap<String, Vec<ToolInfo>>>,
    /// Each server's reachability as the background check last found it, by name.
    health: Mutex<std::collections::BTreeMap<String, health::ServerHealth>>,
    /// The JWTs callers proved themselves with, for servers that exchange them (`token_exchange`).
    pub presented: Arc<credentials::PresentedTokens>,
    /// The resources the servers say changed, for the fronts that relay them.
    pub updates: Updates,
}

impl Downstream {
    fn client(&self, server: &ServerConfig) -> Result<Client, Error> {
        // A server that exchanges callers' tokens has a client (and session) per caller.
        let key = credentials::client_key(server, &self.presented);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((transport, client)) = clients.get(&key)
            && *transport == server.transport
            && !matches!(client, Client::McpHttp(c) if !c.credentials.serve(server))
            && !matches!(client, Client::Grpc(c) if !c.serves(server))
        {
            return Ok(client.clone());
        }
        let client = match &server.transport {
            Transport::Grpc { url } => Client::Grpc(GrpcTools::new(server, url)?),
            Transport::McpStdio { .. } => Client::Mcp(Arc::new(McpTools::announcing(
                &server.name,
                self.updates.clone(),
            ))),
            Transport::McpHttp { url } => Client::McpHttp(Arc::new(
                HttpTools::new(server, url, self.presented.clone())?
                    .announcing(&server.name, self.updates.clone()),
            )),
        };
        credentials::make_room(&mut clients, &server.name);
        clients.insert(key, (server.transport.clone(), client.clone()));
        Ok(client)
    }

    /// Forwards one call, bounded by the server's time-out.
    pub async fn call(&self, forward: Forward<'_>) -> Result<ToolReply, Error> {
        let server = forward.server;
        let method = match forward.kind {
            RouteKind::Tool => None,
            RouteKind::ReadResource => Some("resources/read"),
            RouteKind::GetPrompt => Some("prompts/get"),
        };
        if let Some(method) = method {
            // The answer is the server's result as it gave it: the domain value and what the
            // MCP front passes on.
            let answer = match (self.client(server)?, forward.session_free) {
                (Client::McpHttp(client), Some(session_free)) => {
                    client
                        .forward_for(
                            server,
                            method,
                            forward.arguments,
                            forward.relay,
                            session_free,
                        )
                        .await?
                }
                _ => {
                    self.request(server, method, forward.arguments.clone(), forward.relay)
                        .await?
                }
            };
            let outcome = input_required_summary(&answer).unwrap_or_else(|| answer.clone());
            return Ok(ToolReply {
                outcome: Ok(outcome),
                served: Some(Arc::new(answer)),
            });
        }
        match self.client(server)? {
            // Dropping a gRPC call resets its stream: the server sees it cancelled.
            Client::Grpc(client) => {
                let call = client.call(
                    server,
                    forward.remote_name,
                    forward.arguments,
                    forward.workflow_id,
                    forward.call_id,
                );
                match forward.cancel {
                    Some(cancel) => tokio::select! {
                        answer = call => answer.map(ToolReply::from),
                        () = cancel.cancelled() => Err(Error::Cancelled {
                            server: server.name.clone(),
                            tool: forward.remote_name.to_owned(),
                        }),
                    },
                    None => call.await.map(ToolReply::from),
                }
            }
            // The SDK client's future is three times the others': boxed, so that every call's
            // task does not carry (and copy) its size.
            Client::Mcp(client) => {
                Box::pin(client.call(
                    server,
                    forward.remote_name,
                    forward.arguments,
                    forward.relay,
                    forward.cancel,
                ))
                .await
            }
            Client::McpHttp(client) => {
                client
                    .call(
                        server,
                        forward.remote_name,
                        forward.arguments,
                        forward.relay,
                        forward.cancel,
                        forward.session_free,
                    )
                    .await
            }
        }
    }

    /// One MCP request other than `tools/call` (resources, prompts, completion, logging), sent to
    /// an MCP server as the client gave it; the answer is the server's result. A gRPC server has
    /// none of these.
    pub async fn request(
        &self,
        server: &ServerConfig,
        method: &str,
        params: Value,
        relay: Option<&RelaySink>,
    ) -> Result<Value, Error> {
        match self.client(server)? {
            Client::Grpc(_) => Err(Error::InvalidArgument(format!(
                "server {:?} is a gRPC tool server: it offers tools only, not {method}",
                server.name
            ))),
            Client::Mcp(client) => Box::pin(client.request(server, method, params)).await,
            Client::McpHttp(client) => client.forward(server, method, &params, relay).await,
        }
    }

    /// Listens to `server`'s announcements for a session-free client (`subscriptions/listen` with
    /// the client's `filter`), each on `heard`, until the server ends the stream or nobody hears
    /// any more. A server that does not speak that era (or is no HTTP MCP server) announces
    /// nothing: it returns at once.
    pub async fn listen(
        &self,
        server: &ServerConfig,
        filter: &Value,
        client: &SessionFree,
        heard: &tokio::sync::mpsc::Sender<Heard>,
    ) -> Result<(), Error> {
        match self.client(server)? {
            Client::McpHttp(http) => http.listen_for(server, filter, client, heard).await,
            _ => Ok(()),
        }
    }

    /// Whether `server`'s own list of tools is known (asked for since the last reload).
    pub fn listed(&self, server: &str) -> bool {
        self.catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(server)
    }

    /// The tools of every configured server under their public names, asking each server whose list is not
    /// known yet. A server that cannot be reached contributes its configured names without schemas.
    pub async fn tools(&self, config: &Config) -> Vec<ToolInfo> {
        let mut out = Vec::new();
        for server in config.servers.values() {
            let cached = self
                .catalog
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&server.name)
                .cloned();
            let listed = match cached {
                Some(list) => Some(list),
                None => match self.list_server(server).await {
                    Ok(list) => {
                        self.catalog
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(server.name.clone(), list.clone());
                        Some(list)
                    }
                    Err(e) => {
                        tracing::warn!(server = %server.name, error = %e, "cannot list tools");
                        None
                    }
                },
            };
            for (public, route) in &config.tools {
                if route.server != server.name || !route.is_tool() {
                    continue;
                }
                let found = listed
                    .as_ref()
                    .and_then(|l| l.iter().find(|t| t.name == route.remote_name));
                out.push(ToolInfo {
                    name: public.to_string(),
                    description: found.map(|t| t.description.clone()).unwrap_or_default(),
                    input_schema: found
                        .map(|t| t.input_schema.clone())
                        .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                    server: server.name.clone(),
                    hints: found.map(|t| t.hints).unwrap_or_default(),
                    listed: found.and_then(|t| t.listed.clone()),
                });
            }
        }
        out
    }

    /// Asks one server for its tools and keeps the list, as a listing of every server would.
    pub async fn list_and_keep(&self, server: &ServerConfig) -> Result<Vec<ToolInfo>, Error> {
        let list = self.list_server(server).await?;
        self.catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.name.clone(), list.clone());
        Ok(list)
    }

    /// Asks one server for its tools; warns about configured tools it does not offer.
    pub async fn list_server(&self, server: &ServerConfig) -> Result<Vec<ToolInfo>, Error> {
        let list = match self.client(server)? {
            Client::Grpc(client) => client.list(server).await?,
            Client::Mcp(client) => client.list(server).await?,
            Client::McpHttp(client) => client.list(server).await?,
        };
        for tool in &server.tools {
            if !list.iter().any(|t| &t.name == tool) {
                tracing::warn!(server = %server.name, %tool, "the configuration names a tool the server does not offer");
            }
        }
        Ok(list)
    }

    /// Forgets cached tool lists (after a reload, or when asked to refresh).
    pub fn forget_catalog(&self) {
        self.catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What the audit log keeps of a server's `input_required` result (SEP-2322): which methods it asks
/// the client, by key (`{"resultType": "input_required", "inputRequests": {KEY: METHOD}}`), never
/// what it asks. `None` for any other result.
pub fn input_required_summary(result: &Value) -> Option<Value> {
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let asked: serde_json::Map<String, Value> = result
        .get("inputRequests")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, request)| {
            let method = request.get("method").cloned().unwrap_or(Value::Null);
            (key.clone(), method)
        })
        .collect();
    Some(serde_json::json!({ "resultType": "input_required", "inputRequests": asked }))
}

fn deadline(tool: &str, limit: Duration) -> Error {
    Error::DeadlineExceeded {
        tool: tool.to_owned(),
        limit: humantime::format_duration(limit).to_string(),
    }
}

/// Wraps the shared [`Downstream`] for the gateway.
pub type SharedDownstream = Arc<Downstream>;
