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

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    CreateMessageRequestParams, CustomRequest, GetPromptRequestParams, GetPromptResponse,
    Implementation, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, ServerRequest, SetLevelRequestParams, SubscribeRequestParams,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A 1x1 red PNG, the reference server's image.
const TEST_IMAGE_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file, the reference server's audio.
const TEST_AUDIO_BASE64: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
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

/// Serves a fresh [`ConformanceServer`] per session over Streamable HTTP on `127.0.0.1:0`.
pub async fn serve() -> Fixture {
    let service = StreamableHttpService::new(
        || Ok(ConformanceServer::default()),
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

/// One session's server: the log level the client set and the resources it subscribed to.
#[derive(Clone)]
pub struct ConformanceServer {
    min_level: Arc<Mutex<LoggingLevel>>,
    subscriptions: Arc<Mutex<BTreeSet<String>>>,
}

impl Default for ConformanceServer {
    fn default() -> Self {
        ConformanceServer {
            min_level: Arc::new(Mutex::new(LoggingLevel::Debug)),
            subscriptions: Arc::default(),
        }
    }
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
                    sep1034_schema(),
                )
                .await
            }
            "test_elicitation_sep1330_enums" => {
                Self::elicit(
                    context,
                    "Please select options from the enum fields",
                    sep1330_schema(),
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

/// SEP-1034: a form with a default for every primitive type.
fn sep1034_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": { "type": "boolean", "description": "Verification status", "default": true }
        },
        "required": []
    })
}

/// SEP-1330: the five forms of enum a form may hold.
fn sep1330_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Select one option",
                "enum": ["option1", "option2", "option3"]
            },
            "titledSingle": {
                "type": "string",
                "description": "Select one option with titles",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" }
                ]
            },
            "legacyEnum": {
                "type": "string",
                "description": "Select one option (legacy)",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "description": "Select multiple options",
                "minItems": 1,
                "maxItems": 3,
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
            },
            "titledMulti": {
                "type": "array",
                "description": "Select multiple options with titles",
                "minItems": 1,
                "maxItems": 3,
                "items": { "anyOf": [
                    { "const": "value1", "title": "First Choice" },
                    { "const": "value2", "title": "Second Choice" },
                    { "const": "value3", "title": "Third Choice" }
                ] }
            }
        },
        "required": []
    })
}

/// The tools as the reference server lists them.
fn tools() -> Value {
    let none = json!({ "type": "object", "properties": {} });
    let one_string = |name: &str, description: &str| {
        json!({
            "type": "object",
            "properties": { name: { "type": "string", "description": description } },
            "required": [name]
        })
    };
    let tool = |name: &str, description: &str, schema: &Value| json!({ "name": name, "description": description, "inputSchema": schema });
    json!({ "tools": [
        tool("test_simple_text", "Tests simple text content response", &none),
        tool("test_image_content", "Tests image content response", &none),
        tool("test_audio_content", "Tests audio content response", &none),
        tool("test_embedded_resource", "Tests embedded resource content response", &none),
        tool("test_multiple_content_types", "Tests response with multiple content types (text, image, resource)", &none),
        tool("test_tool_with_logging", "Tests tool that emits log messages during execution", &none),
        tool("test_tool_with_progress", "Tests tool that reports progress notifications", &none),
        tool("test_error_handling", "Tests error response handling", &none),
        tool("test_reconnection", "Tests SSE stream disconnection and client reconnection (SEP-1699)", &none),
        tool("test_sampling", "Tests server-initiated sampling (LLM completion request)",
            &one_string("prompt", "The prompt to send to the LLM")),
        tool("test_elicitation", "Tests server-initiated elicitation (user input request)",
            &one_string("message", "The message to show the user")),
        tool("test_elicitation_sep1034_defaults", "Tests elicitation with default values per SEP-1034", &none),
        tool("test_elicitation_sep1330_enums", "Tests elicitation with enum schema improvements per SEP-1330", &none),
        tool("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)", &json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": { "address": { "type": "object", "properties": {
                "street": { "type": "string" }, "city": { "type": "string" }
            } } },
            "properties": { "name": { "type": "string" }, "address": { "$ref": "#/$defs/address" } },
            "additionalProperties": false
        })),
    ] })
}

/// The names of the fixture's tools: what a gateway in front of it must be told it offers.
pub fn tool_names() -> Vec<String> {
    tools()["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

fn read(uri: &str) -> Option<Value> {
    let text = |mime: &str, text: String| json!({ "contents": [{ "uri": uri, "mimeType": mime, "text": text }] });
    match uri {
        "test://static-text" => Some(text(
            "text/plain",
            "This is the content of the static text resource.".into(),
        )),
        "test://static-binary" => Some(json!({ "contents": [
            { "uri": uri, "mimeType": "image/png", "blob": TEST_IMAGE_BASE64 }
        ] })),
        "test://watched-resource" => Some(text("text/plain", "Watched resource content".into())),
        _ => {
            let id = uri
                .strip_prefix("test://template/")?
                .strip_suffix("/data")?;
            let data =
                json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
            Some(text("application/json", data.to_string()))
        }
    }
}

fn prompt(name: &str, arguments: &serde_json::Map<String, Value>) -> Option<Value> {
    let argument = |key: &str| arguments.get(key).and_then(Value::as_str).unwrap_or("");
    let user = |content: Value| json!({ "role": "user", "content": content });
    let text = |text: String| json!({ "type": "text", "text": text });
    let messages = match name {
        "test_simple_prompt" => vec![user(text("This is a simple prompt for testing.".into()))],
        "test_prompt_with_arguments" => vec![user(text(format!(
            "Prompt with arguments: arg1='{}', arg2='{}'",
            argument("arg1"),
            argument("arg2")
        )))],
        "test_prompt_with_embedded_resource" => vec![
            user(json!({ "type": "resource", "resource": {
                "uri": argument("resourceUri"),
                "mimeType": "text/plain",
                "text": "Embedded resource content for testing."
            } })),
            user(text("Please process the embedded resource above.".into())),
        ],
        "test_prompt_with_image" => vec![
            user(json!({ "type": "image", "data": TEST_IMAGE_BASE64, "mimeType": "image/png" })),
            user(text("Please analyze the image above.".into())),
        ],
        _ => return None,
    };
    Some(json!({ "messages": messages }))
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

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        from_json(tools())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = self.run_tool(&request, &context).await?;
        Ok(CallToolResponse::Complete(from_json(result)?))
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resource = |uri: &str, name: &str, title: &str, description: &str, mime: &str| json!({ "uri": uri, "name": name, "title": title, "description": description, "mimeType": mime });
        from_json(json!({ "resources": [
            resource("test://static-text", "static-text", "Static Text Resource", "A static text resource for testing", "text/plain"),
            resource("test://static-binary", "static-binary", "Static Binary Resource", "A static binary resource (image) for testing", "image/png"),
            resource("test://watched-resource", "watched-resource", "Watched Resource", "A resource that auto-updates every 3 seconds", "text/plain"),
        ] }))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        from_json(json!({ "resourceTemplates": [{
            "uriTemplate": "test://template/{id}/data",
            "name": "template",
            "title": "Resource Template",
            "description": "A resource template with parameter substitution",
            "mimeType": "application/json"
        }] }))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        match read(&request.uri) {
            Some(contents) => Ok(ReadResourceResponse::Complete(from_json(contents)?)),
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
        let argument = |name: &str, description: &str| json!({ "name": name, "description": description, "required": true });
        from_json(json!({ "prompts": [
            { "name": "test_simple_prompt", "title": "Simple Test Prompt",
              "description": "A simple prompt without arguments" },
            { "name": "test_prompt_with_arguments", "title": "Prompt With Arguments",
              "description": "A prompt with required arguments",
              "arguments": [argument("arg1", "First test argument"), argument("arg2", "Second test argument")] },
            { "name": "test_prompt_with_embedded_resource", "title": "Prompt With Embedded Resource",
              "description": "A prompt that includes an embedded resource",
              "arguments": [argument("resourceUri", "URI of the resource to embed")] },
            { "name": "test_prompt_with_image", "title": "Prompt With Image",
              "description": "A prompt that includes image content" },
        ] }))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let arguments = request.arguments.clone().unwrap_or_default();
        match prompt(&request.name, &arguments) {
            Some(result) => Ok(GetPromptResponse::Complete(from_json(result)?)),
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
        from_json(json!({ "completion": { "values": [], "total": 0, "hasMore": false } }))
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

/// The JSON the fixture answers with fits rmcp's own types (a misspelt field fails here, naming the
/// answer, rather than as a puzzling failure of the suite).
#[test]
fn fixture_data_fits_rmcp_types() {
    from_json::<ListToolsResult>(tools()).expect("tools");
    from_json::<CreateMessageRequestParams>(json!({
        "messages": [{ "role": "user", "content": { "type": "text", "text": "hi" } }],
        "maxTokens": 100
    }))
    .expect("sampling params");
    for uri in [
        "test://static-text",
        "test://static-binary",
        "test://template/123/data",
    ] {
        from_json::<rmcp::model::ReadResourceResult>(read(uri).expect(uri)).expect(uri);
    }
    for name in [
        "test_simple_prompt",
        "test_prompt_with_arguments",
        "test_prompt_with_embedded_resource",
        "test_prompt_with_image",
    ] {
        let result = prompt(name, &serde_json::Map::new()).expect(name);
        from_json::<rmcp::model::GetPromptResult>(result).expect(name);
    }
}
