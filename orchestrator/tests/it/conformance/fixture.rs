//! The conformance fixture: an MCP server written with rmcp that offers what the official conformance
//! suite's server scenarios (npm `@modelcontextprotocol/conformance`) expect of the server under test,
//! after the suite's own TypeScript "everything server": its `test_*` tools (text, image, audio,
//! embedded resource, mixed content, logging, progress, error, sampling, elicitation), resources
//! (static text and binary, a template, subscriptions), prompts, completions and `logging/setLevel`.
//!
//! It is an instrument, not a product: every answer is the suite's expected fixture data, built from
//! JSON as the reference server writes it, so a difference seen through Conductorio is Conductorio's.
//! It never fakes a pass: sampling and elicitation really ask the client and report its answer.

// The 2025-era suite tests logging, sampling and resource subscriptions, which rmcp marks deprecated
// (SEP-2577); the fixture must offer them all the same.
#![allow(deprecated)]

use super::catalog::{self, TEST_AUDIO_BASE64, TEST_IMAGE_BASE64};
use super::input_required::{self, Answer};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult, CustomRequest,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, LoggingLevel,
    LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    ServerRequest, SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::model::{ClientCapabilities, SubscriptionFilter};
use rmcp::service::{RequestContext, SubscriptionContext, SubscriptionSink};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The pause between the notifications of the logging and progress tools, as the reference has it.
const STEP: Duration = Duration::from_millis(50);

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
struct Listeners(Arc<Mutex<Vec<SubscriptionSink>>>);

impl Listeners {
    fn add(&self, sink: SubscriptionSink) {
        if let Ok(mut sinks) = self.0.lock() {
            sinks.push(sink);
        }
    }

    /// Tells every open stream that `list` (tools or prompts) changed; a stream whose filter did
    /// not ask for it is left out by rmcp's sink.
    async fn changed(&self, list: &str) {
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
    min_level: Arc<Mutex<LoggingLevel>>,
    subscriptions: Arc<Mutex<BTreeSet<String>>>,
    listeners: Listeners,
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
fn complete<T: serde::de::DeserializeOwned>(mut value: Value) -> Result<T, ErrorData> {
    if let Some(object) = value.as_object_mut() {
        object.insert("resultType".into(), json!("complete"));
    }
    from_json(value)
}

/// A typed rmcp value from the JSON the reference server writes.
fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ErrorData> {
    serde_json::from_value(value).map_err(|e| {
        ErrorData::internal_error(format!("fixture data does not fit rmcp: {e}"), None)
    })
}

fn rank(level: &LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn text_result(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }] })
}

impl ConformanceServer {
    /// Sends a log message if the client's level lets it through.
    async fn log(&self, context: &RequestContext<RoleServer>, level: LoggingLevel, data: &str) {
        let wanted = self.min_level.lock().map(|l| rank(&l)).unwrap_or(0);
        if rank(&level) < wanted {
            return;
        }
        let param = LoggingMessageNotificationParam::new(level, Value::String(data.into()))
            .with_logger("conformance-test-server");
        let _ = context.peer.notify_logging_message(param).await;
    }

    /// Asks the client for something (`sampling/createMessage`, `elicitation/create`) and returns
    /// its answer as JSON, or what went wrong.
    async fn ask_client(
        context: &RequestContext<RoleServer>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let request = ServerRequest::CustomRequest(CustomRequest::new(method, Some(params)));
        let answer = context
            .peer
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::to_value(answer).map_err(|e| e.to_string())
    }

    async fn elicit(context: &RequestContext<RoleServer>, message: &str, schema: Value) -> Value {
        let params = json!({ "message": message, "requestedSchema": schema });
        match Self::ask_client(context, "elicitation/create", params).await {
            Ok(answer) => {
                let content = answer.get("content").cloned().unwrap_or(json!({}));
                text_result(format!(
                    "Elicitation completed: action={}, content={content}",
                    answer["action"].as_str().unwrap_or("unknown")
                ))
            }
            Err(e) => text_result(format!("Elicitation not supported or error: {e}")),
        }
    }

    async fn run_tool(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, ErrorData> {
        let argument = |name: &str| {
            request
                .arguments
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(match request.name.as_ref() {
            "test_simple_text" => text_result("This is a simple text response for testing."),
            "test_image_content" => json!({ "content": [
                { "type": "image", "data": TEST_IMAGE_BASE64, "mimeType": "image/png" }
            ] }),
            "test_audio_content" => json!({ "content": [
                { "type": "audio", "data": TEST_AUDIO_BASE64, "mimeType": "audio/wav" }
            ] }),
            "test_embedded_resource" => json!({ "content": [{ "type": "resource", "resource": {
                "uri": "test://embedded-resource",
                "mimeType": "text/plain",
                "text": "This is an embedded resource content."
            } }] }),
            "test_multiple_content_types" => json!({ "content": [
                { "type": "text", "text": "Multiple content types test:" },
                { "type": "image", "data": TEST_IMAGE_BASE64, "mimeType": "image/png" },
                { "type": "resource", "resource": {
                    "uri": "test://mixed-content-resource",
                    "mimeType": "application/json",
                    "text": json!({ "test": "data", "value": 123 }).to_string()
                } }
            ] }),
            "test_tool_with_logging" => {
                for (i, message) in [
                    "Tool execution started",
                    "Tool processing data",
                    "Tool execution completed",
                ]
                .into_iter()
                .enumerate()
                {
                    if i > 0 {
                        tokio::time::sleep(STEP).await;
                    }
                    self.log(context, LoggingLevel::Info, message).await;
                }
                text_result("Tool with logging executed successfully")
            }
            "test_tool_with_progress" => {
                let token = context.meta.get_progress_token();
                for (i, progress) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(STEP).await;
                    }
                    if let Some(token) = &token {
                        let mut param = ProgressNotificationParam::new(token.clone(), progress);
                        param.total = Some(100.0);
                        param.message = Some(format!("Completed step {progress} of 100"));
                        let _ = context.peer.notify_progress(param).await;
                    }
                }
                let echoed = token
                    .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                    .unwrap_or(json!(0));
                text_result(match echoed {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            "test_error_handling" => json!({
                "content": [{ "type": "text", "text": "This tool intentionally returns an error for testing" }],
                "isError": true
            }),
            "test_missing_capability" => {
                let declared = context
                    .client_capabilities()
                    .is_some_and(|c| c.sampling.is_some());
                if !declared {
                    return Err(ErrorData::missing_required_client_capability(
                        ClientCapabilities::builder().enable_sampling().build(),
                    ));
                }
                text_result("The client declared sampling")
            }
            "test_logging_tool" => {
                // Session-free requests get log messages only when they name a level (SEP-2575).
                let named = context.meta.log_level();
                if named.is_some_and(|level| rank(&LoggingLevel::Info) >= rank(&level)) {
                    self.log(context, LoggingLevel::Info, "test_logging_tool ran")
                        .await;
                }
                text_result("Logged only as asked")
            }
            "test_trigger_tool_change" | "test_trigger_prompt_change" => {
                let list = if request.name == "test_trigger_tool_change" {
                    "tools"
                } else {
                    "prompts"
                };
                self.listeners.changed(list).await;
                text_result(format!("The {list} list changed"))
            }
            "test_reconnection" => text_result(
                "Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.",
            ),
            "test_sampling" => {
                let prompt = argument("prompt").unwrap_or_default();
                let params = json!({
                    "messages": [{ "role": "user", "content": { "type": "text", "text": prompt } }],
                    "maxTokens": 100
                });
                match Self::ask_client(context, "sampling/createMessage", params).await {
                    Ok(answer) => {
                        let response = answer["content"]["text"]
                            .as_str()
                            .or_else(|| answer["message"]["content"]["text"].as_str())
                            .unwrap_or("No response")
                            .to_owned();
                        text_result(format!("LLM response: {response}"))
                    }
                    Err(e) => text_result(format!("Sampling not supported or error: {e}")),
                }
            }
            "test_elicitation" => {
                let message = argument("message").unwrap_or_default();
                let schema = json!({
                    "type": "object",
                    "properties": { "response": { "type": "string", "description": "User's response" } },
                    "required": ["response"]
                });
                Self::elicit(context, &message, schema).await
            }
            "test_elicitation_sep1034_defaults" => {
                Self::elicit(
                    context,
                    "Please review and update the form fields with defaults",
                    catalog::sep1034_schema(),
                )
                .await
            }
            "test_elicitation_sep1330_enums" => {
                Self::elicit(
                    context,
                    "Please select options from the enum fields",
                    catalog::sep1330_schema(),
                )
                .await
            }
            "json_schema_2020_12_tool" => {
                let arguments = request.arguments.clone().unwrap_or_default();
                text_result(format!(
                    "JSON Schema 2020-12 tool called with: {}",
                    Value::Object(arguments)
                ))
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other}"),
                    None,
                ));
            }
        })
    }
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
