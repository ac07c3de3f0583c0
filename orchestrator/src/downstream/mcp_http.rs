//! The client of a downstream MCP server over Streamable HTTP, kept lean because it is on every
//! forwarded call: pooled keep-alive connections, each request serialized once, the answer read as
//! one JSON body or as an event stream up to the response it waits for, nothing else per call.
//!
//! One session per server, opened (`initialize`, then `notifications/initialized`) on first use and
//! shared by concurrent calls. A session the server has forgotten (`404` to a request that named it)
//! is opened again and the request sent once more: the server did not process it. A server that
//! cannot be reached costs the calls in flight, never the orchestrator.
//!
//! A server's own requests on a request's stream (sampling, elicitation, roots) go to the client of
//! the call that made the request and its answer back to the server (refused at once when that
//! client cannot answer them); notifications on the stream (progress, log messages) go to that
//! client when it wants them, and are read past otherwise.

use super::{
    Ask, AskRefused, Heard, InFlight, Progress, RelaySink, Relayed, SessionFree, ToolInfo, deadline,
};
use crate::config::ServerConfig;
use crate::error::Error;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use rmcp::model::{CallToolResult, ListToolsResult, RequestId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// The version asked for; the server's answer is the one used.
const PROTOCOL_VERSION: &str = "2025-11-25";
/// The session-free era (SEP-2575), spoken to a server that offers it for a client that speaks it.
const SESSION_FREE_VERSION: &str = "2026-07-28";
/// The header naming a request's method in the session-free era (SEP-2243).
const METHOD_HEADER: &str = "mcp-method";
/// The header naming a request's tool, prompt or resource in the session-free era (SEP-2243).
const NAME_HEADER: &str = "mcp-name";
/// Answers larger than this are refused (a tool result is data for a model, not a bulk transfer).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The open session with one server: what every request of it carries.
struct Session {
    headers: HeaderMap,
    /// The session's own event stream (`GET`), read while the session lasts.
    _listening: Option<Listening>,
}

/// The task reading a session's `GET` stream, stopped with the session.
struct Listening(tokio::task::AbortHandle);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a request got no result.
enum Failure {
    /// The server answered with a JSON-RPC error.
    Rpc {
        code: i32,
        message: String,
        data: Option<Value>,
    },
    /// The server no longer knows the session the request named.
    SessionGone,
    /// Anything else: unreachable, refused, unreadable.
    Transport(String),
}

pub(super) struct HttpTools {
    http: reqwest::Client,
    /// The server's credential, put on every request.
    pub(super) credentials: super::credentials::Credentials,
    url: String,
    current: Mutex<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
    ids: AtomicI64,
    inflight: Arc<InFlight>,
    /// Which protocol eras the server speaks, as its `server/discover` said; none: not asked yet
    /// (or asked again after the server could not be reached).
    eras: Mutex<Option<Eras>>,
    /// Where the server's resource updates go, with its name.
    updates: Option<(String, super::Updates)>,
    /// The arguments its tools ask to see in `Mcp-Param-*` headers (SEP-2243), by tool, as its
    /// last `tools/list` said (only tools that ask for any); none: not listed yet.
    param_headers: Mutex<Option<std::collections::HashMap<String, Vec<ParamHeader>>>>,
}

/// An argument a tool's input schema asks to travel in a header too (`x-mcp-header`, SEP-2243): its
/// path through the arguments, and the header's name after `Mcp-Param-`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParamHeader {
    path: Vec<String>,
    header: String,
}

/// The `x-mcp-header` annotations of an input schema, along `properties` from its root.
fn param_headers(schema: &Value) -> Vec<ParamHeader> {
    fn collect(properties: Option<&Value>, path: &mut Vec<String>, out: &mut Vec<ParamHeader>) {
        let Some(Value::Object(properties)) = properties else {
            return;
        };
        for (name, schema) in properties {
            path.push(name.clone());
            if let Some(Value::String(header)) = schema.get("x-mcp-header")
                && !header.is_empty()
            {
                out.push(ParamHeader {
                    path: path.clone(),
                    header: header.clone(),
                });
            }
            collect(schema.get("properties"), path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    collect(schema.get("properties"), &mut Vec::new(), &mut out);
    out
}

/// The protocol eras a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Eras {
    /// 2026-07-28, without sessions.
    session_free: bool,
    /// The `initialize` eras, with sessions.
    sessions: bool,
}

/// How many rounds of input a server may ask for before one request of a caller without an era
/// of its own is given up (what the official SDKs allow).
const MAX_INPUT_ROUNDS: usize = 10;

impl HttpTools {
    pub(super) fn new(
        server: &ServerConfig,
        url: &str,
        presented: Arc<super::credentials::PresentedTokens>,
    ) -> Result<Self, Error> {
        crate::auth::install_tls_provider();
        // TLS with the server's own CA bundle and client certificate, where configured.
        let http =
            super::credentials::http_client(server, url).map_err(|message| Error::Unavailable {
                server: server.name.clone(),
                message,
            })?;
        Ok(HttpTools {
            http,
            credentials: super::credentials::Credentials::new(server, presented),
            url: url.to_owned(),
            current: Mutex::default(),
            opening: tokio::sync::Mutex::default(),
            ids: AtomicI64::new(1),
            inflight: Arc::default(),
            eras: Mutex::default(),
            updates: None,
            param_headers: Mutex::default(),
        })
    }

    /// The same client, its server's resource updates going to `updates`.
    pub(super) fn announcing(mut self, server: &str, updates: super::Updates) -> Self {
        self.updates = Some((server.to_owned(), updates));
        self
    }

    /// A server's `notifications/resources/updated`, on to the fronts.
    fn announce(&self, message: &Message) {
        if let (Some((server, updates)), Some("notifications/resources/updated"), Some(params)) =
            (&self.updates, message.method.as_deref(), &message.params)
            && let Ok(params) = serde_json::from_str::<Value>(params.get())
        {
            updates.announce(server, &params);
        }
    }

    /// Calls one tool within the server's time-out (opening a session first within its own limit).
    pub(super) async fn call(
        &self,
        server: &ServerConfig,
        tool: &str,
        arguments: &Value,
        relay: Option<&RelaySink>,
        cancel: Option<&tokio_util::sync::CancellationToken>,
        client: Option<&SessionFree>,
    ) -> Result<super::ToolReply, Error> {
        if !matches!(arguments, Value::Object(_) | Value::Null) {
            return Err(Error::InvalidArgument(format!(
                "the arguments of {tool} must be a JSON object, not {arguments}"
            )));
        }
        // A session-free client's call goes to a server that speaks its era in that era: what the
        // server needs of the client comes back as an `input_required` result, passed on.
        if let Some(client) = client
            && self.speaks_session_free(server).await?
        {
            let params = json!({ "name": tool, "arguments": arguments });
            let _in_flight = self.inflight.enter(relay);
            let answer: Value = self
                .session_free_request(server, tool, "tools/call", &params, relay, cancel, client)
                .await?;
            if let Some(summary) = super::input_required_summary(&answer) {
                return Ok(super::ToolReply {
                    outcome: Ok(summary),
                    served: Some(Arc::new(answer)),
                });
            }
            let result: CallToolResult =
                serde_json::from_value(answer).map_err(|e| Error::Downstream {
                    server: server.name.clone(),
                    tool: tool.to_owned(),
                    message: format!("the answer to tools/call is not what MCP says: {e}"),
                })?;
            return Ok(super::mcp::reply(result));
        }
        // A caller that wants progress gets the server's: the request asks for it under a token of
        // ours (what the server sends on this request's stream is this request's).
        let mut params = match relay {
            Some(_) => json!({
                "name": tool,
                "arguments": arguments,
                "_meta": { "progressToken": PROGRESS_TOKEN },
            }),
            None => json!({ "name": tool, "arguments": arguments }),
        };
        crate::telemetry::propagation::inject_params(&mut params);
        let _in_flight = self.inflight.enter(relay);
        let result: CallToolResult = self
            .request(
                server,
                tool,
                "tools/call",
                &params,
                server.timeout,
                relay,
                cancel,
            )
            .await?;
        Ok(super::mcp::reply(result))
    }

    /// One request other than `tools/call` (see [`super::Downstream::request`]), its answer as
    /// the server gave it.
    pub(super) async fn forward(
        &self,
        server: &ServerConfig,
        method: &str,
        params: &Value,
        relay: Option<&RelaySink>,
    ) -> Result<Value, Error> {
        self.request(server, method, method, params, server.timeout, relay, None)
            .await
    }

    /// [`HttpTools::forward`] for a session-free client: in its era, when the server speaks it.
    pub(super) async fn forward_for(
        &self,
        server: &ServerConfig,
        method: &str,
        params: &Value,
        relay: Option<&RelaySink>,
        client: &SessionFree,
    ) -> Result<Value, Error> {
        if self.speaks_session_free(server).await? {
            let _in_flight = self.inflight.enter(relay);
            return self
                .session_free_request(server, method, method, params, relay, None, client)
                .await;
        }
        self.forward(server, method, params, relay).await
    }

    /// The server's announcements for a session-free client: `subscriptions/listen` with `filter`,
    /// each notification on the stream to `heard` (the acknowledgment is the client's own, sent
    /// by this front), until the server ends the stream or nobody hears any more.
    pub(super) async fn listen_for(
        &self,
        server: &ServerConfig,
        filter: &Value,
        client: &SessionFree,
        heard: &tokio::sync::mpsc::Sender<Heard>,
    ) -> Result<(), Error> {
        if !self.speaks_session_free(server).await? {
            return Ok(());
        }
        self.credentials.ready()?;
        let params = json!({ "_meta": own_meta(&client.capabilities), "notifications": filter });
        let headers = session_free_headers("subscriptions/listen", &params);
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": params });
        let unavailable = |message: String| Error::Unavailable {
            server: server.name.clone(),
            message: format!("subscriptions/listen at {}: {message}", self.url),
        };
        let mut response = self.post(&headers, &body).await.map_err(unavailable)?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let mut events = EventStream::default();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(format!("the stream broke: {e}")))?
        {
            events.push(&chunk).map_err(|f| unavailable(describe(&f)))?;
            while let Some(data) = events.next_data() {
                let Ok(message) = serde_json::from_str::<Value>(&data) else {
                    continue;
                };
                let announced = match message.get("method").and_then(Value::as_str) {
                    Some("notifications/tools/list_changed") => Heard::ToolsChanged,
                    Some("notifications/prompts/list_changed") => Heard::PromptsChanged,
                    Some("notifications/resources/list_changed") => Heard::ResourcesChanged,
                    Some("notifications/resources/updated") => {
                        match message.pointer("/params/uri").and_then(Value::as_str) {
                            Some(uri) => Heard::ResourceUpdated(uri.to_owned()),
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                if heard.send(announced).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Whether the server speaks the session-free era (see [`HttpTools::eras`]).
    async fn speaks_session_free(&self, server: &ServerConfig) -> Result<bool, Error> {
        Ok(self.eras(server).await?.session_free)
    }

    /// The eras the server speaks: asked once with `server/discover` (SEP-2575) and remembered.
    /// A server that answers it with anything but a result naming its versions (an error, a
    /// refusal for want of a session) speaks only the session eras; one that cannot be reached is
    /// asked again next time.
    async fn eras(&self, server: &ServerConfig) -> Result<Eras, Error> {
        if let Some(known) = *self.eras.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(known);
        }
        self.credentials.ready()?;
        let discover = json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "server/discover",
            "params": { "_meta": own_meta(&json!({})) },
        });
        let headers = session_free_headers("server/discover", &json!({}));
        let asked = async {
            let response = self.post(&headers, &discover).await?;
            let answer = read_answer(response, Some(0), false, None, None).await;
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Discovered {
                supported_versions: Vec<String>,
            }
            let versions = answer
                .ok()
                .and_then(|result| serde_json::from_str::<Discovered>(result.get()).ok())
                .map(|d| d.supported_versions);
            Ok::<_, String>(match versions {
                Some(versions) => Eras {
                    session_free: versions.iter().any(|v| v == SESSION_FREE_VERSION),
                    sessions: versions.iter().any(|v| v.as_str() < SESSION_FREE_VERSION),
                },
                None => Eras {
                    session_free: false,
                    sessions: true,
                },
            })
        };
        let eras = tokio::time::timeout(server.timeout, asked)
            .await
            .map_err(|_| deadline("server/discover", server.timeout))?
            .map_err(|message| Error::Unavailable {
                server: server.name.clone(),
                message: format!("server/discover at {}: {message}", self.url),
            })?;
        tracing::info!(server = %server.name, url = %self.url, session_free = eras.session_free, sessions = eras.sessions, "asked the MCP server which protocol eras it speaks");
        *self.eras.lock().unwrap_or_else(|e| e.into_inner()) = Some(eras);
        Ok(eras)
    }

    /// Whether a request of a caller without an era of its own (a session-era client, a gRPC
    /// caller, a listing) goes in a session: unless the server speaks only the session-free era.
    /// The server is asked which eras it speaks only when a session cannot be opened, so a server
    /// of the session eras costs nothing more.
    async fn in_session(&self, server: &ServerConfig) -> Result<bool, Error> {
        if let Some(eras) = *self.eras.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(eras.sessions || !eras.session_free);
        }
        if self.current().is_some() {
            return Ok(true);
        }
        match self.session(server).await {
            Ok(_) => Ok(true),
            Err(refused) => match self.eras(server).await {
                Ok(eras) if eras.session_free && !eras.sessions => Ok(false),
                _ => Err(refused),
            },
        }
    }

    /// One request of a caller without an era of its own to a server that speaks only the
    /// session-free era: with Conductorio's own capabilities (what a caller with a stream can be
    /// asked), and each round of input the server asks for put to the caller as a server's request
    /// on its stream (recorded as one), its answers sent back with the retry.
    #[allow(clippy::too_many_arguments)]
    async fn in_rounds<T: DeserializeOwned>(
        &self,
        server: &ServerConfig,
        what: &str,
        method: &str,
        params: &Value,
        relay: Option<&RelaySink>,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<T, Error> {
        let mut own = SessionFree {
            capabilities: match relay {
                Some(_) => json!({ "sampling": {}, "elicitation": {}, "roots": {} }),
                None => json!({}),
            },
            ..SessionFree::default()
        };
        for _ in 0..MAX_INPUT_ROUNDS {
            let answer: Value = self
                .session_free_request(server, what, method, params, relay, cancel, &own)
                .await?;
            if answer.get("resultType").and_then(Value::as_str) != Some("input_required") {
                return serde_json::from_value(answer).map_err(|e| Error::Downstream {
                    server: server.name.clone(),
                    tool: what.to_owned(),
                    message: format!("the answer to {method} is not what MCP says: {e}"),
                });
            }
            let mut responses = serde_json::Map::new();
            for (key, asked) in answer
                .get("inputRequests")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let method = asked.get("method").and_then(Value::as_str).unwrap_or("");
                let params = asked.get("params").cloned().unwrap_or(Value::Null);
                let response = match ask(relay, method, params).await {
                    Ok(result) => result,
                    Err(refused) => json!({ "code": refused.code, "message": refused.message }),
                };
                responses.insert(key.clone(), response);
            }
            own.input_responses = Some(Value::Object(responses));
            own.request_state = answer.get("requestState").cloned();
        }
        Err(Error::Downstream {
            server: server.name.clone(),
            tool: what.to_owned(),
            message: format!(
                "the server asked for input more than {MAX_INPUT_ROUNDS} rounds in a row; the request was given up"
            ),
        })
    }

    /// One request of the session-free era, for `client`: no session, the era's headers, and in
    /// `_meta` the client's capabilities and log level (so the server asks only what the client can
    /// answer, and logs only as it asked), with its answers to the last round's input requests.
    #[allow(clippy::too_many_arguments)]
    async fn session_free_request<T: DeserializeOwned>(
        &self,
        server: &ServerConfig,
        what: &str,
        method: &str,
        params: &Value,
        relay: Option<&RelaySink>,
        cancel: Option<&tokio_util::sync::CancellationToken>,
        client: &SessionFree,
    ) -> Result<T, Error> {
        self.credentials.ready()?;
        let mut params = match params {
            Value::Object(params) => params.clone(),
            _ => serde_json::Map::new(),
        };
        let mut meta = own_meta(&client.capabilities);
        if let Some(level) = &client.log_level {
            meta["io.modelcontextprotocol/logLevel"] = level.clone();
        }
        if relay.is_some() {
            meta["progressToken"] = json!(PROGRESS_TOKEN);
        }
        params.insert("_meta".to_owned(), meta);
        if let Some(responses) = &client.input_responses {
            params.insert("inputResponses".to_owned(), responses.clone());
        }
        if let Some(state) = &client.request_state {
            params.insert("requestState".to_owned(), state.clone());
        }
        let mut params = Value::Object(params);
        crate::telemetry::propagation::inject_params(&mut params);
        let mut headers = session_free_headers(method, &params);
        if method == "tools/call" {
            self.add_param_headers(server, &params, &mut headers, client)
                .await;
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let exchange = async {
            let response = self
                .post(&headers, &body)
                .await
                .map_err(Failure::Transport)?;
            read_answer(response, Some(id), false, relay, None).await
        };
        let work = async {
            match cancel {
                // The era has no session to send `notifications/cancelled` in: the request's
                // stream is closed, which tells the server.
                Some(cancel) => tokio::select! {
                    answer = exchange => Ok(answer),
                    () = cancel.cancelled() => Err(Error::Cancelled {
                        server: server.name.clone(),
                        tool: what.to_owned(),
                    }),
                },
                None => Ok(exchange.await),
            }
        };
        let answer = tokio::time::timeout(server.timeout, work)
            .await
            .map_err(|_| deadline(what, server.timeout))??;
        match answer {
            Ok(result) => serde_json::from_str::<T>(result.get()).map_err(|e| Error::Downstream {
                server: server.name.clone(),
                tool: what.to_owned(),
                message: format!("the answer to {method} is not what MCP says: {e}"),
            }),
            Err(failure) => {
                let unsupported = matches!(
                    failure,
                    Failure::Rpc { code, .. } if code == rmcp::model::ErrorCode::UNSUPPORTED_PROTOCOL_VERSION.0
                );
                if unsupported || matches!(failure, Failure::Transport(_)) {
                    // Asked again next time: the server may have been replaced by another.
                    *self.eras.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Err(self.error(server, what, failure))
            }
        }
    }

    /// The `Mcp-Param-*` headers a tool's schema asks for (SEP-2243), each argument's value as it
    /// travels in a header; the server's tools are listed first (in the era of the call) if they are
    /// not known yet, and a listing that fails is not tried again before the next one.
    async fn add_param_headers(
        &self,
        server: &ServerConfig,
        params: &Value,
        headers: &mut HeaderMap,
        client: &SessionFree,
    ) {
        let known = self
            .param_headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !known {
            let listed: Result<ListToolsResult, Error> = Box::pin(self.session_free_request(
                server,
                "tools/list",
                "tools/list",
                &json!({}),
                None,
                None,
                client,
            ))
            .await;
            let asked = match listed {
                Ok(page) => page
                    .tools
                    .iter()
                    .map(|t| {
                        let schema = Value::Object((*t.input_schema).clone());
                        (t.name.to_string(), param_headers(&schema))
                    })
                    .filter(|(_, headers)| !headers.is_empty())
                    .collect(),
                Err(e) => {
                    tracing::debug!(server = %server.name, error = %e, "the tools could not be listed for their Mcp-Param headers");
                    std::collections::HashMap::new()
                }
            };
            let mut known = self.param_headers.lock().unwrap_or_else(|e| e.into_inner());
            known.get_or_insert(asked);
        }
        let asked = self
            .param_headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|tools| tools.get(params.get("name")?.as_str()?).cloned())
            .unwrap_or_default();
        let arguments = params.get("arguments").unwrap_or(&Value::Null);
        for ParamHeader { path, header } in asked {
            let value = path.iter().try_fold(arguments, |value, key| value.get(key));
            let value = match value {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Bool(flag)) => flag.to_string(),
                Some(Value::Number(number)) => number.to_string(),
                _ => continue,
            };
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(format!("mcp-param-{header}").as_bytes()),
                HeaderValue::from_str(&header_value(&value)),
            ) {
                headers.insert(name, value);
            }
        }
    }

    /// One MCP `ping` in the open session (the background health check, [`super::health`]).
    pub(super) async fn ping(&self, server: &ServerConfig) -> Result<(), Error> {
        if !self.in_session(server).await? {
            // The session-free era has no ping: the server is asked which eras it speaks.
            *self.eras.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return self.eras(server).await.map(|_| ());
        }
        self.request::<Value>(
            server,
            "ping",
            "ping",
            &json!({}),
            server.timeout,
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    /// The server's own list of tools, every page of it.
    pub(super) async fn list(&self, server: &ServerConfig) -> Result<Vec<ToolInfo>, Error> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({ "cursor": cursor }),
                None => json!({}),
            };
            let page: ListToolsResult = self
                .request(
                    server,
                    "tools/list",
                    "tools/list",
                    &params,
                    server.timeout,
                    None,
                    None,
                )
                .await?;
            tools.extend(
                page.tools
                    .into_iter()
                    .map(|t| super::mcp::tool_info(server, t)),
            );
            match page.next_cursor {
                Some(next) if !next.is_empty() && cursor.as_deref() != Some(next.as_str()) => {
                    cursor = Some(next);
                }
                _ => {
                    let asked = tools
                        .iter()
                        .map(|t| (t.name.clone(), param_headers(&t.input_schema)))
                        .filter(|(_, headers)| !headers.is_empty())
                        .collect();
                    *self.param_headers.lock().unwrap_or_else(|e| e.into_inner()) = Some(asked);
                    return Ok(tools);
                }
            }
        }
    }

    /// One request in the open session, within `limit`; a forgotten session is opened again once.
    /// What the server sends on its stream goes to `relay`; when `cancel` is cancelled the request
    /// is withdrawn: the server is sent `notifications/cancelled` for it, and no longer waited for.
    #[allow(clippy::too_many_arguments)]
    async fn request<T: DeserializeOwned>(
        &self,
        server: &ServerConfig,
        what: &str,
        method: &str,
        params: &Value,
        limit: Duration,
        relay: Option<&RelaySink>,
        cancel: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<T, Error> {
        // A caller the server cannot be sent a credential for never touches the shared session.
        self.credentials.ready()?;
        if !self.in_session(server).await? {
            return self
                .in_rounds(server, what, method, params, relay, cancel)
                .await;
        }
        let work = async {
            for attempt in 0..2 {
                let session = self.session(server).await?;
                let id = self.ids.fetch_add(1, Ordering::Relaxed);
                let body =
                    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
                let exchange = self.exchange(&session.headers, &body, Some(id), relay);
                let answer = match cancel {
                    Some(cancel) => tokio::select! {
                        answer = exchange => answer,
                        () = cancel.cancelled() => {
                            self.withdraw(&session.headers, id).await;
                            return Err(Error::Cancelled {
                                server: server.name.clone(),
                                tool: what.to_owned(),
                            });
                        }
                    },
                    None => exchange.await,
                };
                match answer {
                    Ok(result) => {
                        return serde_json::from_str::<T>(result.get()).map_err(|e| {
                            Error::Downstream {
                                server: server.name.clone(),
                                tool: what.to_owned(),
                                message: format!(
                                    "the answer to {method} is not what MCP says: {e}"
                                ),
                            }
                        });
                    }
                    Err(Failure::SessionGone) if attempt == 0 => {
                        tracing::warn!(server = %server.name, "the MCP server forgot the session; opening a new one");
                        self.discard(&session);
                    }
                    Err(failure) => {
                        if matches!(failure, Failure::Transport(_) | Failure::SessionGone) {
                            self.discard(&session);
                        }
                        return Err(self.error(server, what, failure));
                    }
                }
            }
            Err(self.error(server, what, Failure::SessionGone))
        };
        let limit = limit + self.open_allowance();
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| deadline(what, limit))?
    }

    /// The time a call may spend opening a session on top of its own limit, when there is none.
    fn open_allowance(&self) -> Duration {
        if self.current().is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(10)
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Session>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open session, or a new one.
    async fn session(&self, server: &ServerConfig) -> Result<Arc<Session>, Error> {
        if let Some(session) = self.current().clone() {
            return Ok(session);
        }
        let _opening = self.opening.lock().await;
        // Another call may have opened one while this one waited.
        if let Some(session) = self.current().clone() {
            return Ok(session);
        }
        let mut session = self.open(server).await?;
        session._listening = self.listen(&session.headers).await;
        let session = Arc::new(session);
        *self.current() = Some(session.clone());
        Ok(session)
    }

    /// Opens the session's own event stream (`GET`), on which a server sends what belongs to no
    /// request's stream (log messages, progress), and reads it in a task of its own while the
    /// session lasts. A server that offers none (`405`), or does not answer at once, is not read.
    async fn listen(&self, headers: &HeaderMap) -> Option<Listening> {
        let opened = self.credentials.send(|| {
            self.http
                .get(&self.url)
                .headers(headers.clone())
                .header(ACCEPT, "text/event-stream")
        });
        let mut response = match tokio::time::timeout(Duration::from_secs(2), opened).await {
            Ok(Ok(response)) if response.status().is_success() => response,
            Ok(Ok(response)) => {
                tracing::debug!(url = %self.url, status = %response.status(), "the MCP server offers no event stream of its own");
                return None;
            }
            Ok(Err(e)) => {
                tracing::debug!(url = %self.url, error = %e, "the MCP server's event stream could not be opened");
                return None;
            }
            Err(_) => return None,
        };
        let inflight = Arc::clone(&self.inflight);
        let updates = self.updates.clone();
        let task = tokio::spawn(async move {
            let mut events = EventStream::default();
            while let Ok(Some(chunk)) = response.chunk().await {
                if events.push(&chunk).is_err() {
                    return;
                }
                while let Some(data) = events.next_data() {
                    let Ok(message) = serde_json::from_str::<Message>(&data) else {
                        continue;
                    };
                    if message.method.as_deref() == Some("notifications/resources/updated") {
                        // To every session subscribed to the resource, whoever's call runs.
                        if let (Some((server, updates)), Some(params)) = (&updates, &message.params)
                            && let Ok(params) = serde_json::from_str::<Value>(params.get())
                        {
                            updates.announce(server, &params);
                        }
                    } else if message.id.is_none()
                        && let Some(relay) = inflight.lone()
                    {
                        relay_notification(&message, &relay);
                    }
                }
            }
        });
        Some(Listening(task.abort_handle()))
    }

    fn discard(&self, session: &Arc<Session>) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *current = None;
        }
    }

    /// The handshake: `initialize`, then `notifications/initialized` in the session it opened.
    async fn open(&self, server: &ServerConfig) -> Result<Session, Error> {
        let unavailable = |message: String| Error::Unavailable {
            server: server.name.clone(),
            message,
        };
        let initialize = json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                // What a server may ask of the client of a call (relayed to it, see above).
                "capabilities": { "sampling": {}, "elicitation": {}, "roots": {} },
                "clientInfo": { "name": "conductorio", "version": env!("CARGO_PKG_VERSION") }
            }
        });
        let response = self
            .post(&HeaderMap::new(), &initialize)
            .await
            .map_err(|e| unavailable(format!("the MCP handshake with {} failed: {e}", self.url)))?;
        let mut headers = HeaderMap::new();
        if let Some(id) = response.headers().get(SESSION_HEADER) {
            headers.insert(SESSION_HEADER, id.clone());
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Initialized {
            protocol_version: String,
        }
        let result = read_answer(response, Some(0), false, None, None)
            .await
            .map_err(|f| {
                unavailable(format!(
                    "the MCP handshake with {} failed: {}",
                    self.url,
                    describe(&f)
                ))
            })?;
        let initialized: Initialized = serde_json::from_str(result.get()).map_err(|e| {
            unavailable(format!(
                "the MCP handshake with {} failed: its initialize result is not MCP: {e}",
                self.url
            ))
        })?;
        let version = HeaderValue::from_str(&initialized.protocol_version).map_err(|_| {
            unavailable(format!(
                "{} answered an unusable protocol version {:?}",
                self.url, initialized.protocol_version
            ))
        })?;
        headers.insert(VERSION_HEADER, version);
        let notified = self
            .post(
                &headers,
                &json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
            )
            .await
            .map_err(|e| unavailable(format!("the MCP handshake with {} failed: {e}", self.url)))?;
        if !notified.status().is_success() {
            return Err(unavailable(format!(
                "the MCP handshake with {} failed: notifications/initialized got HTTP {}",
                self.url,
                notified.status()
            )));
        }
        tracing::info!(server = %server.name, url = %self.url, version = %initialized.protocol_version, "MCP session opened");
        Ok(Session {
            headers,
            _listening: None,
        })
    }

    async fn post(&self, headers: &HeaderMap, body: &Value) -> Result<reqwest::Response, String> {
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        // With the server's credential; a token it refuses is fetched again and the request resent.
        self.credentials
            .send(|| {
                self.http
                    .post(&self.url)
                    .headers(headers.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .header(ACCEPT, "application/json, text/event-stream")
                    .body(body.clone())
            })
            .await
    }

    /// Sends one request and reads its result.
    async fn exchange(
        &self,
        headers: &HeaderMap,
        body: &Value,
        id: Option<i64>,
        relay: Option<&RelaySink>,
    ) -> Result<Box<RawValue>, Failure> {
        let response = self.post(headers, body).await.map_err(Failure::Transport)?;
        read_answer(response, id, true, relay, Some((self, headers))).await
    }

    /// Tells the server its caller withdrew request `id` (MCP's `notifications/cancelled`).
    async fn withdraw(&self, headers: &HeaderMap, id: i64) {
        let cancelled = json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": id, "reason": "the caller cancelled the call" },
        });
        if let Err(e) = self.post(headers, &cancelled).await {
            tracing::warn!(url = %self.url, error = %e, "the server could not be told that a call was cancelled");
        }
    }

    /// Answers a request the server sent on a request's stream.
    async fn respond(
        &self,
        headers: &HeaderMap,
        id: &RequestId,
        answer: Result<Value, AskRefused>,
    ) {
        let body = match answer {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(refused) => json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": { "code": refused.code, "message": refused.message },
            }),
        };
        match self.post(headers, &body).await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(url = %self.url, status = %response.status(), "the server did not take the answer to its request");
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "the answer to the server's request could not be sent");
            }
        }
    }

    fn error(&self, server: &ServerConfig, what: &str, failure: Failure) -> Error {
        match failure {
            Failure::Rpc {
                code,
                message,
                data,
            } => Error::ServerError {
                server: server.name.clone(),
                method: what.to_owned(),
                code,
                message,
                data: data.map(Box::new),
            },
            other => Error::Unavailable {
                server: server.name.clone(),
                message: format!("{what} at {}: {}", self.url, describe(&other)),
            },
        }
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Rpc { code, message, .. } => format!("JSON-RPC error {code}: {message}"),
        Failure::SessionGone => "the server no longer knows the session".to_owned(),
        Failure::Transport(message) => message.clone(),
    }
}

/// The `_meta` every session-free request carries: the era, who Conductorio is, and what the
/// client it speaks for can answer.
fn own_meta(capabilities: &Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": SESSION_FREE_VERSION,
        "io.modelcontextprotocol/clientInfo": {
            "name": "conductorio",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    })
}

/// The headers of a session-free request (SEP-2243): the era, the method, and the name of the
/// tool, prompt or resource it is about, so that what stands between routes it unread.
fn session_free_headers(method: &str, params: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        VERSION_HEADER,
        HeaderValue::from_static(SESSION_FREE_VERSION),
    );
    if let Ok(value) = HeaderValue::from_str(method) {
        headers.insert(METHOD_HEADER, value);
    }
    let named = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => None,
    };
    if let Some(value) = named
        .and_then(Value::as_str)
        .and_then(|name| HeaderValue::from_str(&header_value(name)).ok())
    {
        headers.insert(NAME_HEADER, value);
    }
    headers
}

/// A value as SEP-2243 carries it in a header: as it is when it is plain visible ASCII, else
/// Base64 between `=?base64?` and `?=`.
fn header_value(value: &str) -> String {
    let visible = value.chars().all(|c| (' '..='~').contains(&c));
    let padded = value.starts_with(' ') || value.ends_with(' ');
    let quoted = value.starts_with("=?base64?") && value.ends_with("?=");
    if visible && !padded && !quoted {
        return value.to_owned();
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::from("=?base64?");
    for chunk in value.as_bytes().chunks(3) {
        let bytes = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                encoded.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded.push_str("?=");
    encoded
}

/// A JSON-RPC message as read from an answer: what finds the response to a request, and the
/// notifications sent before it.
#[derive(Deserialize)]
struct Message {
    id: Option<RequestId>,
    result: Option<Box<RawValue>>,
    error: Option<RpcError>,
    method: Option<String>,
    params: Option<Box<RawValue>>,
}

/// The progress token every relayed request carries: the request's own stream tells whose it is.
const PROGRESS_TOKEN: &str = "conductorio";

/// A notification on a request's stream, to its caller: progress and log messages; others are
/// read past.
#[allow(deprecated)] // log messages are of the session eras (SEP-2577)
fn relay_notification(message: &Message, relay: &RelaySink) {
    let (Some(method), Some(params)) = (&message.method, &message.params) else {
        return;
    };
    let relayed = match method.as_str() {
        "notifications/progress" => {
            serde_json::from_str::<rmcp::model::ProgressNotificationParam>(params.get())
                .ok()
                .map(|p| {
                    Relayed::Progress(Progress {
                        progress: p.progress,
                        total: p.total,
                        message: p.message,
                    })
                })
        }
        "notifications/message" => {
            serde_json::from_str::<rmcp::model::LoggingMessageNotificationParam>(params.get())
                .ok()
                .map(Relayed::Log)
        }
        _ => None,
    };
    if let Some(relayed) = relayed {
        let _ = relay.try_send(relayed);
    }
}

#[derive(Deserialize)]
struct RpcError {
    code: i32,
    message: String,
    #[serde(default)]
    data: Option<Value>,
}

/// The result of request `id` from its HTTP answer: one JSON body, or an event stream read until the
/// response arrives (notifications and other messages before it are read past). A `404` to a request
/// `in_session` means the server has ended the session.
async fn read_answer(
    mut response: reqwest::Response,
    id: Option<i64>,
    in_session: bool,
    relay: Option<&RelaySink>,
    back: Option<(&HttpTools, &HeaderMap)>,
) -> Result<Box<RawValue>, Failure> {
    let status = response.status();
    if status == StatusCode::NOT_FOUND && in_session {
        return Err(Failure::SessionGone);
    }
    let streamed = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        // A JSON-RPC error with an HTTP error status is still the server's answer.
        if let Ok(message) = serde_json::from_str::<Message>(&text)
            && let Some(error) = message.error
        {
            return Err(Failure::Rpc {
                code: error.code,
                message: error.message,
                data: error.data,
            });
        }
        return Err(Failure::Transport(format!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        )));
    }
    if !streamed {
        // Read up to the limit, never past it: a server cannot make the orchestrator buffer more.
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure::Transport(format!("the answer could not be read: {e}")))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Failure::Transport(format!(
                    "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let message: Message = serde_json::from_slice(&body).map_err(|e| {
            Failure::Transport(format!("the answer is not a JSON-RPC message: {e}"))
        })?;
        return settle(message);
    }
    let mut events = EventStream::default();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| Failure::Transport(format!("the answer's event stream broke: {e}")))?;
        let Some(chunk) = chunk else {
            return Err(Failure::Transport(
                "the answer's event stream ended without the response".to_owned(),
            ));
        };
        events.push(&chunk)?;
        while let Some(data) = events.next_data() {
            let Ok(message) = serde_json::from_str::<Message>(&data) else {
                continue;
            };
            let answers = match (&message.id, id) {
                (Some(RequestId::Number(got)), Some(want)) => *got == want,
                (Some(_), None) => true,
                _ => false,
            };
            if let (Some(method), Some(asked)) = (&message.method, &message.id)
                && let Some((client, headers)) = back
            {
                // The server asks the client of this call something before it answers.
                let params = message
                    .params
                    .as_deref()
                    .and_then(|p| serde_json::from_str(p.get()).ok())
                    .unwrap_or(Value::Null);
                let answer = ask(relay, method, params).await;
                client.respond(headers, asked, answer).await;
                continue;
            }
            if answers && (message.result.is_some() || message.error.is_some()) {
                return settle(message);
            }
            if let Some((client, _)) = back {
                client.announce(&message);
            }
            if message.id.is_none()
                && let Some(relay) = relay
            {
                relay_notification(&message, relay);
            }
        }
    }
}

/// A server's request to the client of the call: relayed to it, or refused when there is no way
/// to it.
async fn ask(relay: Option<&RelaySink>, method: &str, params: Value) -> Result<Value, AskRefused> {
    let Some(relay) = relay else {
        super::note_refused(method);
        return Err(AskRefused::cannot_answer(method));
    };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let asked = Ask {
        method: method.to_owned(),
        params,
        answer,
    };
    if relay.send(Relayed::Ask(asked)).await.is_err() {
        return Err(AskRefused::cannot_answer(method));
    }
    answered
        .await
        .unwrap_or_else(|_| Err(AskRefused::cannot_answer(method)))
}

fn settle(message: Message) -> Result<Box<RawValue>, Failure> {
    match (message.result, message.error) {
        (Some(result), None) => Ok(result),
        (_, Some(error)) => Err(Failure::Rpc {
            code: error.code,
            message: error.message,
            data: error.data,
        }),
        (None, None) => Err(Failure::Transport(
            "the answer is neither a result nor an error".to_owned(),
        )),
    }
}

/// An incremental reader of `text/event-stream`: events are separated by a blank line; an event's
/// `data:` lines, joined by newlines, are its data.
#[derive(Default)]
struct EventStream {
    buffer: String,
    read: usize,
}

impl EventStream {
    fn push(&mut self, chunk: &[u8]) -> Result<(), Failure> {
        if self.buffer.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Failure::Transport(format!(
                "the answer's event stream exceeds {MAX_ANSWER_BYTES} bytes"
            )));
        }
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        Ok(())
    }

    /// The data of the next complete event that has any.
    fn next_data(&mut self) -> Option<String> {
        loop {
            let rest = &self.buffer[self.read..];
            let (end, gap) = [("\r\n\r\n", 4), ("\n\n", 2), ("\r\r", 2)]
                .into_iter()
                .filter_map(|(sep, len)| rest.find(sep).map(|at| (at, len)))
                .min_by_key(|(at, _)| *at)?;
            let event = &rest[..end];
            let mut data = String::new();
            for line in event.lines() {
                if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            self.read += end + gap;
            if self.read > 64 * 1024 {
                self.buffer.drain(..self.read);
                self.read = 0;
            }
            if !data.is_empty() {
                return Some(data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers with more than the limit is refused with the limit named, after reading
    /// no more than the limit.
    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(|| async {
                let id = r#"{"jsonrpc":"2.0","id":1,"result":{"pad":""#;
                let mut body = id.as_bytes().to_vec();
                body.resize(MAX_ANSWER_BYTES + 1024, b'x');
                body.extend_from_slice(b"\"}}");
                ([(CONTENT_TYPE, "application/json")], body)
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        crate::auth::install_tls_provider();
        let response = reqwest::Client::new()
            .post(format!("http://{addr}/mcp"))
            .send()
            .await
            .expect("an answer");
        match read_answer(response, Some(1), true, None, None).await {
            Err(Failure::Transport(message)) => {
                assert!(message.contains("larger than"), "{message}");
            }
            Ok(_) => panic!("an answer over the limit was read"),
            Err(other) => panic!("another failure: {}", describe(&other)),
        }
        server.abort();
    }

    /// A server on a loopback port whose `/mcp` answers each POST with `answer(headers, body)`;
    /// every request it got is kept, in order.
    async fn fake_server(
        answer: fn(&axum::http::HeaderMap, &Value) -> axum::response::Response,
    ) -> (
        String,
        Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>,
        tokio::task::JoinHandle<()>,
    ) {
        use axum::response::IntoResponse;
        let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>> = Arc::default();
        let kept = Arc::clone(&seen);
        let app = axum::Router::new().route(
            "/mcp",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let response = answer(&headers, &body);
                        kept.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((headers, body));
                        response.into_response()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        crate::auth::install_tls_provider();
        (url, seen, server)
    }

    /// A client of a fake server answering with `answer`: the client, its server's configuration,
    /// what the server was sent, and the server's task.
    async fn fake_client(
        answer: fn(&axum::http::HeaderMap, &Value) -> axum::response::Response,
    ) -> (
        HttpTools,
        ServerConfig,
        Arc<Mutex<Vec<(axum::http::HeaderMap, Value)>>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (url, seen, server) = fake_server(answer).await;
        let config = server_at(&url);
        let tools = HttpTools::new(&config, &url, Arc::default()).expect("a client");
        (tools, config, seen, server)
    }

    fn server_at(url: &str) -> ServerConfig {
        ServerConfig {
            name: "fake".into(),
            transport: crate::config::Transport::McpHttp { url: url.into() },
            tools: vec![],
            timeout: Duration::from_secs(5),
            tls: None,
            auth: None,
        }
    }

    fn json_answer(status: StatusCode, body: Value) -> axum::response::Response {
        use axum::response::IntoResponse;
        (
            status,
            [(CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    fn capable_client() -> SessionFree {
        SessionFree {
            capabilities: json!({ "elicitation": {} }),
            ..SessionFree::default()
        }
    }

    /// A server that speaks the session-free era is asked in it for a session-free client: no
    /// session, the era's headers, the client's own capabilities; its `input_required` result
    /// comes back as it gave it, and the retry carries the client's answers and the state.
    #[tokio::test]
    async fn a_session_free_client_is_served_in_its_era_by_a_server_that_speaks_it() {
        fn answer(_: &axum::http::HeaderMap, body: &Value) -> axum::response::Response {
            let id = body["id"].clone();
            match body["method"].as_str() {
                Some("server/discover") => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": {
                        "supportedVersions": ["2025-11-25", "2026-07-28"], "capabilities": {}
                    } }),
                ),
                _ if body.pointer("/params/inputResponses/name").is_some() => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": {
                        "resultType": "complete",
                        "content": [{ "type": "text", "text": "thank you" }]
                    } }),
                ),
                _ => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": {
                        "resultType": "input_required",
                        "inputRequests": { "name": { "method": "elicitation/create", "params": {
                            "message": "Your name?", "requestedSchema": { "type": "object" }
                        } } },
                        "requestState": "opaque"
                    } }),
                ),
            }
        }
        let (tools, config, seen, server) = fake_client(answer).await;
        let client = capable_client();
        let first = tools
            .call(&config, "greet", &json!({}), None, None, Some(&client))
            .await
            .expect("an answer");
        assert_eq!(
            first.outcome,
            Ok(
                json!({ "resultType": "input_required", "inputRequests": { "name": "elicitation/create" } })
            ),
            "the recorded outcome names the method only"
        );
        let served = first.served.expect("the result as served");
        assert_eq!(served["requestState"], "opaque");
        assert_eq!(
            served["inputRequests"]["name"]["params"]["message"],
            "Your name?"
        );
        let retry = SessionFree {
            input_responses: Some(
                json!({ "name": { "action": "accept", "content": { "n": "Ada" } } }),
            ),
            request_state: Some(json!("opaque")),
            ..capable_client()
        };
        let second = tools
            .call(&config, "greet", &json!({}), None, None, Some(&retry))
            .await
            .expect("an answer");
        assert!(second.outcome.is_ok(), "{:?}", second.outcome);
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let methods: Vec<&str> = seen
            .iter()
            .filter_map(|(_, b)| b["method"].as_str())
            .collect();
        assert_eq!(
            methods,
            ["server/discover", "tools/list", "tools/call", "tools/call"],
            "asked once, its tools listed once (for the headers their schemas may ask for)"
        );
        for (headers, body) in &seen[2..] {
            assert!(headers.get(SESSION_HEADER).is_none(), "no session");
            assert_eq!(headers[VERSION_HEADER], SESSION_FREE_VERSION);
            assert_eq!(headers[METHOD_HEADER], "tools/call");
            assert_eq!(headers[NAME_HEADER], "greet");
            let meta = &body["params"]["_meta"];
            assert_eq!(
                meta["io.modelcontextprotocol/protocolVersion"],
                SESSION_FREE_VERSION
            );
            assert_eq!(
                meta["io.modelcontextprotocol/clientCapabilities"],
                json!({ "elicitation": {} }),
                "the client's own capabilities"
            );
        }
        assert_eq!(seen[3].1["params"]["requestState"], "opaque");
        assert_eq!(
            seen[3].1["params"]["inputResponses"]["name"]["action"],
            "accept"
        );
        server.abort();
    }

    /// A server that knows only the session eras (it refuses `server/discover` for want of a
    /// session) is asked in a session for a session-free client too.
    #[tokio::test]
    async fn a_server_of_the_session_eras_is_asked_in_a_session() {
        fn answer(headers: &axum::http::HeaderMap, body: &Value) -> axum::response::Response {
            use axum::response::IntoResponse;
            let id = body["id"].clone();
            match (body["method"].as_str(), headers.get(SESSION_HEADER)) {
                (Some("initialize"), _) => {
                    let mut response = json_answer(
                        StatusCode::OK,
                        json!({ "jsonrpc": "2.0", "id": id, "result": {
                            "protocolVersion": "2025-11-25", "capabilities": {},
                            "serverInfo": { "name": "old", "version": "1" }
                        } }),
                    );
                    response
                        .headers_mut()
                        .insert(SESSION_HEADER, HeaderValue::from_static("s-1"));
                    response
                }
                (Some("notifications/initialized"), Some(_)) => {
                    StatusCode::ACCEPTED.into_response()
                }
                (Some("tools/call"), Some(_)) => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": {
                        "content": [{ "type": "text", "text": "from a session" }]
                    } }),
                ),
                (_, _) => json_answer(
                    StatusCode::BAD_REQUEST,
                    json!({ "jsonrpc": "2.0", "id": id, "error": {
                        "code": -32600, "message": "Bad Request: Missing session ID"
                    } }),
                ),
            }
        }
        let (tools, config, seen, server) = fake_client(answer).await;
        let reply = tools
            .call(
                &config,
                "greet",
                &json!({}),
                None,
                None,
                Some(&capable_client()),
            )
            .await
            .expect("an answer");
        assert_eq!(reply.outcome, Ok(json!("from a session")));
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let methods: Vec<&str> = seen
            .iter()
            .filter_map(|(_, b)| b["method"].as_str())
            .collect();
        assert_eq!(
            methods,
            [
                "server/discover",
                "initialize",
                "notifications/initialized",
                "tools/call"
            ]
        );
        assert_eq!(seen[3].0[SESSION_HEADER], "s-1");
        server.abort();
    }

    /// A server that speaks only the session-free era (it refuses `initialize`) serves a caller
    /// without an era of its own too: its input requests are put to the caller on its stream and
    /// the answers sent back with the retry; its tools are listed in its era.
    #[tokio::test]
    async fn a_server_of_the_session_free_era_only_serves_every_caller() {
        fn answer(headers: &axum::http::HeaderMap, body: &Value) -> axum::response::Response {
            let id = body["id"].clone();
            let modern = headers
                .get(VERSION_HEADER)
                .is_some_and(|v| v == SESSION_FREE_VERSION);
            match body["method"].as_str() {
                Some("server/discover") => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": {
                        "supportedVersions": ["2026-07-28"], "capabilities": {}
                    } }),
                ),
                Some("tools/list") if modern => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": { "resultType": "complete",
                        "tools": [{ "name": "greet", "inputSchema": { "type": "object" } }] } }),
                ),
                Some("tools/call") if modern => match body.pointer("/params/inputResponses/who") {
                    Some(who) => json_answer(
                        StatusCode::OK,
                        json!({ "jsonrpc": "2.0", "id": id, "result": { "resultType": "complete",
                            "content": [{ "type": "text", "text": format!("hello {}", who["content"]["name"]) }] } }),
                    ),
                    None => json_answer(
                        StatusCode::OK,
                        json!({ "jsonrpc": "2.0", "id": id, "result": {
                            "resultType": "input_required",
                            "inputRequests": { "who": { "method": "elicitation/create", "params": {
                                "message": "Who?", "requestedSchema": { "type": "object" } } } },
                            "requestState": "r1"
                        } }),
                    ),
                },
                _ => json_answer(
                    StatusCode::NOT_FOUND,
                    json!({ "jsonrpc": "2.0", "id": id, "error": {
                        "code": -32601, "message": "Method not found"
                    } }),
                ),
            }
        }
        let (tools, config, seen, server) = fake_client(answer).await;
        let listed = tools
            .list(&config)
            .await
            .expect("the tools, in the server's era");
        assert_eq!(listed.len(), 1);
        let (relay, mut relayed) = tokio::sync::mpsc::channel(4);
        let caller = tokio::spawn(async move {
            while let Some(update) = relayed.recv().await {
                if let Relayed::Ask(ask) = update {
                    assert_eq!(ask.method, "elicitation/create");
                    let _ = ask.answer.send(Ok(
                        json!({ "action": "accept", "content": { "name": "Ada" } }),
                    ));
                }
            }
        });
        let reply = tools
            .call(&config, "greet", &json!({}), Some(&relay), None, None)
            .await
            .expect("an answer");
        assert_eq!(reply.outcome, Ok(json!("hello \"Ada\"")));
        drop(relay);
        let _ = caller.await;
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let calls: Vec<&Value> = seen
            .iter()
            .map(|(_, body)| body)
            .filter(|body| body["method"] == "tools/call")
            .collect();
        assert_eq!(calls.len(), 2, "one round of input, then the answer");
        assert_eq!(
            calls[0]["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"],
            json!({ "sampling": {}, "elicitation": {}, "roots": {} }),
            "a caller with a stream can be asked"
        );
        assert_eq!(calls[1]["params"]["requestState"], "r1");
        server.abort();
    }

    /// A tool whose schema asks for an argument in a header (`x-mcp-header`, SEP-2243) is called
    /// with it, as the server's tools list said (listed first, since it was not known yet).
    #[tokio::test]
    async fn an_argument_a_tools_schema_asks_for_travels_in_its_header() {
        fn answer(_: &axum::http::HeaderMap, body: &Value) -> axum::response::Response {
            let id = body["id"].clone();
            match body["method"].as_str() {
                Some("server/discover") => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": {
                        "supportedVersions": ["2026-07-28"], "capabilities": {}
                    } }),
                ),
                Some("tools/list") => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": { "resultType": "complete",
                        "tools": [{ "name": "route", "inputSchema": { "type": "object", "properties": {
                            "region": { "type": "string", "x-mcp-header": "Region" },
                            "options": { "type": "object", "properties": {
                                "dry": { "type": "boolean", "x-mcp-header": "Dry" } } }
                        } } }] } }),
                ),
                _ => json_answer(
                    StatusCode::OK,
                    json!({ "jsonrpc": "2.0", "id": id, "result": { "resultType": "complete",
                        "content": [{ "type": "text", "text": "routed" }] } }),
                ),
            }
        }
        let (tools, config, seen, server) = fake_client(answer).await;
        let arguments = json!({ "region": "eu-wést", "options": { "dry": true } });
        let reply = tools
            .call(
                &config,
                "route",
                &arguments,
                None,
                None,
                Some(&capable_client()),
            )
            .await
            .expect("an answer");
        assert_eq!(reply.outcome, Ok(json!("routed")));
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (headers, _) = seen
            .iter()
            .find(|(_, body)| body["method"] == "tools/call")
            .expect("the call");
        assert_eq!(headers["mcp-param-region"], "=?base64?ZXUtd8Opc3Q=?=");
        assert_eq!(headers["mcp-param-dry"], "true");
        server.abort();
    }

    #[test]
    fn a_name_that_is_no_plain_header_value_travels_as_base64() {
        assert_eq!(header_value("test_simple_text"), "test_simple_text");
        assert_eq!(header_value("caf\u{e9}"), "=?base64?Y2Fmw6k=?=");
        assert_eq!(header_value(" a"), "=?base64?IGE=?=");
        assert_eq!(header_value("=?base64?x?="), "=?base64?PT9iYXNlNjQ/eD89?=");
        let headers =
            session_free_headers("resources/read", &json!({ "uri": "test://static-text" }));
        assert_eq!(headers[NAME_HEADER], "test://static-text");
        assert_eq!(headers[METHOD_HEADER], "resources/read");
        assert_eq!(headers[VERSION_HEADER], SESSION_FREE_VERSION);
    }

    #[test]
    fn events_are_split_across_chunks_and_line_endings() {
        let mut events = EventStream::default();
        events.push(b"data: \nid: 0\nretry: 3000\n\nda").ok();
        assert_eq!(events.next_data(), None, "a priming event has no data");
        events.push(b"ta: {\"a\":\r\ndata: 1}\r\n\r\n").ok();
        assert_eq!(events.next_data().as_deref(), Some("{\"a\":\n1}"));
        events
            .push(b"event: message\ndata:{\"b\":2}\n\n: comment\n\n")
            .ok();
        assert_eq!(events.next_data().as_deref(), Some("{\"b\":2}"));
        assert_eq!(events.next_data(), None);
    }
}
