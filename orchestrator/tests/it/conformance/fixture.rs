//! The conformance fixture: an MCP server written with rmcp that offers what the official conformance
//! suite's server scenarios (npm `@modelcontextprotocol/conformance`) expect of the server under test,
//! after the suite's own TypeScript "everything server": its `test_*` tools (text, image, audio,
//! embedded resource, mixed content, logging, progress, error, sampling, elicitation), resources
//! (static text and binary, a template, subscriptions: a subscribed resource "changes" once),
//! prompts, completions and `logging/setLevel`.
//!
//! It is an instrument, not a product: every answer is the suite's expected fixture data, built from
//! JSON as the reference server writes it, so a difference seen through Conductorio is Conductorio's.
//! It never fakes a pass: sampling and elicitation really ask the client and report its answer.

// The 2025-era suite tests logging, sampling and resource subscriptions, which rmcp marks deprecated
// (SEP-2577); the fixture must offer them all the same.
#![allow(deprecated)]

use super::catalog;
use super::input_required::{self, Answer};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext, SubscriptionSink};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// The fixture served on a loopback port: its `/mcp` URL; the server stops when this is dropped.
pub struct Fixture {
    pub url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves a fresh [`ConformanceServer`] per session (per request in the session-free era) over
/// Streamable HTTP on `127.0.0.1:0`; all of them share the open `subscriptions/listen` streams.
pub async fn serve() -> Fixture {
    let listeners = Listeners::default();
    let service = StreamableHttpService::new(
        move || Ok(ConformanceServer::new(listeners.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("the fixture binds a loopback port");
    let addr: SocketAddr = listener.local_addr().expect("the fixture's address");
    let server = tokio::spawn(async move {
        let app = axum::Router::new().nest_service("/mcp", service);
        let _ = axum::serve(listener, app).await;
    });
    Fixture {
        url: format!("http://{addr}/mcp"),
        server,
    }
}

/// The open `subscriptions/listen` streams (2026-07-28), which the `test_trigger_*` tools notify.
#[derive(Clone, Default)]
pub(super) struct Listeners(Arc<Mutex<Vec<SubscriptionSink>>>);

impl Listeners {
    fn add(&self, sink: SubscriptionSink) {
        if let Ok(mut sinks) = self.0.lock() {
            sinks.push(sink);
        }
    }

    /// Tells every open stream that `list` (tools or prompts) changed; a stream whose filter did
    /// not ask for it is left out by rmcp's sink.
    pub(super) async fn changed(&self, list: &str) {
        let sinks = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        for sink in sinks {
            let _ = match list {
                "tools" => sink.notify_tool_list_changed().await,
                _ => sink.notify_prompt_list_changed().await,
            };
        }
    }

    fn remove(&self, id: &rmcp::model::RequestId) {
        if let Ok(mut sinks) = self.0.lock() {
            sinks.retain(|sink| sink.id() != id);
        }
    }
}

/// One session's server: the log level the client set and the resources it subscribed to.
#[derive(Clone)]
pub struct ConformanceServer {
    pub(super) min_level: Arc<Mutex<LoggingLevel>>,
    subscriptions: Arc<Mutex<BTreeSet<String>>>,
    pub(super) listeners: Listeners,
}

impl ConformanceServer {
    fn new(listeners: Listeners) -> Self {
        ConformanceServer {
            min_level: Arc::new(Mutex::new(LoggingLevel::Debug)),
            subscriptions: Arc::default(),
            listeners,
        }
    }
}

/// A result of the 2026-07-28 revision, which names its type (`resultType`; rmcp leaves it out for
/// peers of an older revision), from the JSON the reference server writes.
pub(super) fn complete<T: serde::de::DeserializeOwned>(mut value: Value) -> Result<T, ErrorData> {
    if let Some(object) = value.as_object_mut() {
        object.insert("resultType".into(), json!("complete"));
    }
    from_json(value)
}

/// A typed rmcp value from the JSON the reference server writes.
pub(super) fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value).map_err(|e| {
        ErrorData::internal_error(format!("fixture data does not fit rmcp: {e}"), None)
    })
}

impl ServerHandler for ConformanceServer {
    fn get_info(&self) -> ServerConfig {
        let capabilities: ServerCapabilities = serde_json::from_value(json!({
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "logging": {},
            "completions": {}
        }))
        .unwrap_or_default();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mcp-conformance-test-server", "1.0.0"))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let id = context.sink().id().clone();
        self.listeners.add(context.sink().clone());
        context.cancelled().await;
        self.listeners.remove(&id);
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        complete(catalog::tools())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match input_required::call(&request, context.client_capabilities()) {
            Some(Ok(Answer::Complete(result))) => Ok(CallToolResponse::Complete(complete(result)?)),
            Some(Ok(Answer::InputRequired(needs))) => {
                Ok(CallToolResponse::InputRequired(from_json(needs)?))
            }
            Some(Err(refused)) => Err(refused),
            None => {
                let result = self.run_tool(&request, &context).await?;
                Ok(CallToolResponse::Complete(complete(result)?))
            }
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        complete(catalog::resources())
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        complete(catalog::resource_templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match catalog::read(&request.uri) {
            Some(contents) => Ok(ReadResourceResponse::Complete(complete(contents)?)),
            None => Err(ErrorData::resource_not_found(
                format!("Resource {} not found", request.uri),
                Some(json!({ "uri": request.uri })),
            )),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.insert(request.uri.clone());
        }
        let message = format!("Subscribed to resource: {}", request.uri);
        self.log(&context, LoggingLevel::Info, &message).await;
        // The resource "changes" once, after the subscription is answered: a subscriber hears of it
        // (on its session's own stream, or the request's when it comes first).
        let (peer, uri) = (context.peer.clone(), request.uri.clone());
        tokio::spawn(async move {
            let _ = peer
                .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(uri))
                .await;
        });
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        if let Ok(mut subscriptions) = self.subscriptions.lock() {
            subscriptions.remove(&request.uri);
        }
        let message = format!("Unsubscribed from resource: {}", request.uri);
        self.log(&context, LoggingLevel::Info, &message).await;
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        complete(catalog::prompts())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        match input_required::prompt(&request) {
            Some(Ok(Answer::Complete(result))) => {
                return Ok(GetPromptResponse::Complete(complete(result)?));
            }
            Some(Ok(Answer::InputRequired(needs))) => {
                return Ok(GetPromptResponse::InputRequired(from_json(needs)?));
            }
            Some(Err(refused)) => return Err(refused),
            None => {}
        }
        let arguments = request.arguments.clone().unwrap_or_default();
        match catalog::prompt(&request.name, &arguments) {
            Some(result) => Ok(GetPromptResponse::Complete(complete(result)?)),
            None => Err(ErrorData::invalid_params(
                format!("Prompt {} not found", request.name),
                None,
            )),
        }
    }

    async fn complete(
        &self,
        _request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        complete(json!({ "completion": { "values": [], "total": 0, "hasMore": false } }))
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let level = request.level;
        let name = serde_json::to_value(level)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Ok(mut min) = self.min_level.lock() {
            *min = level;
        }
        self.log(
            &context,
            LoggingLevel::Info,
            &format!("Log level set to: {name}"),
        )
        .await;
        Ok(())
    }
}
