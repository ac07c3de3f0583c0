//! The behaviour of the fixture's tools that answer within their request, as the suite's reference
//! server has it: content of every type, log messages and progress while they run, a tool error,
//! and the server's own requests to the client (sampling, elicitation), whose answer they report.
//! The multi round-trip tools are `input_required.rs`; what the tools are, `catalog.rs`.

// Logging and sampling, which the 2025-era suite tests, are deprecated in rmcp (SEP-2577).
#![allow(deprecated)]

use super::catalog::{self, TEST_AUDIO_BASE64, TEST_IMAGE_BASE64};
use super::fixture::ConformanceServer;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, CustomRequest, LoggingLevel,
    LoggingMessageNotificationParam, ProgressNotificationParam, ServerRequest,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};
use std::time::Duration;

/// The pause between the notifications of the logging and progress tools, as the reference has it.
const STEP: Duration = Duration::from_millis(50);

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
    pub(super) async fn log(
        &self,
        context: &RequestContext<RoleServer>,
        level: LoggingLevel,
        data: &str,
    ) {
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

    pub(super) async fn run_tool(
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
