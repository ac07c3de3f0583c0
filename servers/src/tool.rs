//! The [`Tool`] trait and [`ToolSet`], which serves a server's tools as the gRPC `ToolService`.
//!
//! `ToolSet` owns everything every tool call has in common: parsing the JSON arguments, checking them
//! against the tool's JSON Schema (compiled once at start-up), finding the tool, turning a tool's own
//! failure into a `ToolError` response and logging the call. Tools therefore receive arguments that
//! already match their schema. It must never decide anything about a tool's domain.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use conductor_proto::v1::tool_service_server::ToolService;
use conductor_proto::v1::{
    CallToolRequest, CallToolResponse, ListToolsRequest, ListToolsResponse, ToolDescriptor,
    ToolError, call_tool_response::Outcome,
};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::ServerKind;
use crate::call_log::CallLog;
use crate::error::{ServeError, ServiceError, ToolFailure};

/// At most this many schema problems are listed in one error, so a batch of a million bad records
/// cannot produce a status message larger than what HTTP/2 trailers carry.
const MAX_LISTED_PROBLEMS: usize = 20;
/// Each listed problem is cut to this many characters (a schema error quotes the offending value).
const MAX_PROBLEM_CHARS: usize = 300;

/// What a tool tells clients about itself: its name, what it is for, and the JSON Schema (draft
/// 2020-12) its arguments must match.
#[derive(Clone, Debug)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
}

/// Correlation ids of one call, passed to tools that record them (the outbox, for instance).
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    pub workflow_id: String,
    pub call_id: String,
}

/// One tool: it describes itself and runs with arguments that already match its schema.
#[tonic::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The tool's name, description and argument schema.
    fn spec(&self) -> ToolSpec;

    /// Runs the tool. `Err` is the tool's own failure, reported to the caller as a `ToolError`.
    async fn call(&self, args: Value, ctx: &CallContext) -> Result<Value, ToolFailure>;
}

/// A JSON Schema for an arguments object: the listed properties and nothing else.
pub fn object_schema(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

struct RegisteredTool {
    tool: Box<dyn Tool>,
    spec: ToolSpec,
    validator: jsonschema::Validator,
}

/// The tools of one server, served as the gRPC `ToolService`. Cheap to clone.
#[derive(Clone)]
pub struct ToolSet {
    server: ServerKind,
    tools: Arc<BTreeMap<&'static str, RegisteredTool>>,
    call_log: Option<Arc<CallLog>>,
}

impl ToolSet {
    /// Compiles every tool's argument schema; a schema that does not compile stops start-up.
    pub fn new(server: ServerKind, tools: Vec<Box<dyn Tool>>) -> Result<Self, ServeError> {
        let mut registered = BTreeMap::new();
        for tool in tools {
            let spec = tool.spec();
            let validator = jsonschema::validator_for(&spec.input_schema).map_err(|error| {
                ServeError::ToolSchema {
                    tool: spec.name.to_owned(),
                    reason: error.to_string(),
                }
            })?;
            registered.insert(
                spec.name,
                RegisteredTool {
                    tool,
                    spec,
                    validator,
                },
            );
        }
        Ok(ToolSet {
            server,
            tools: Arc::new(registered),
            call_log: None,
        })
    }

    /// Writes a line per call to `log` as the call ends (see the `call_log` module).
    #[must_use]
    pub fn with_call_log(mut self, log: Option<Arc<CallLog>>) -> Self {
        self.call_log = log;
        self
    }

    /// The tools' descriptions, sorted by name.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.values().map(|t| t.spec.clone()).collect()
    }

    /// Parses, checks and runs one call: the outer `Err` means the call could not be made, the inner
    /// one is the tool's own failure.
    pub async fn call(
        &self,
        tool: &str,
        arguments_json: &str,
        ctx: &CallContext,
    ) -> Result<Result<Value, ToolFailure>, ServiceError> {
        let registered = self
            .tools
            .get(tool)
            .ok_or_else(|| ServiceError::UnknownTool {
                tool: tool.to_owned(),
                available: self.tools.keys().map(|name| (*name).to_owned()).collect(),
            })?;
        let text = if arguments_json.trim().is_empty() {
            "{}"
        } else {
            arguments_json
        };
        let args: Value =
            serde_json::from_str(text).map_err(|error| ServiceError::ArgumentsNotJson {
                reason: error.to_string(),
            })?;
        let problems = schema_problems(&registered.validator, &args);
        if !problems.is_empty() {
            return Err(ServiceError::InvalidArguments {
                tool: tool.to_owned(),
                problems,
            });
        }
        Ok(registered.tool.call(args, ctx).await)
    }
}

/// Every way `instance` fails the schema, each as `at <path>: <reason>` (or just the reason at the
/// root), capped so the list stays readable.
pub(crate) fn schema_problems(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut total = 0usize;
    for error in validator.iter_errors(instance) {
        total += 1;
        if problems.len() < MAX_LISTED_PROBLEMS {
            let reason = truncate(&error.to_string(), MAX_PROBLEM_CHARS);
            let path = error.instance_path().as_str();
            problems.push(if path.is_empty() {
                reason
            } else {
                format!("at {path}: {reason}")
            });
        }
    }
    if total > problems.len() {
        problems.push(format!("and {} more", total - problems.len()));
    }
    problems
}

/// `text` cut to at most `max` characters, marked with an ellipsis when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[tonic::async_trait]
impl ToolService for ToolSet {
    async fn list_tools(
        &self,
        _request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        let tools = self
            .tools
            .values()
            .map(|t| ToolDescriptor {
                name: t.spec.name.to_owned(),
                description: t.spec.description.to_owned(),
                input_schema_json: t.spec.input_schema.to_string(),
                server: self.server.name().to_owned(),
            })
            .collect();
        Ok(Response::new(ListToolsResponse { tools }))
    }

    async fn call_tool(
        &self,
        request: Request<CallToolRequest>,
    ) -> Result<Response<CallToolResponse>, Status> {
        let span = crate::telemetry::call_span(
            self.server.name(),
            &request.get_ref().tool,
            request.metadata(),
        );
        let request = request.into_inner();
        let ctx = CallContext {
            workflow_id: request.workflow_id,
            call_id: request.call_id,
        };
        let started = Instant::now();
        let logged = self
            .call_log
            .as_ref()
            .map(|log| log.begin(&request.tool, &ctx));
        let result = self
            .call(&request.tool, &request.arguments_json, &ctx)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(Ok(_)) => {}
            Ok(Err(failure)) => crate::telemetry::failed(&span, failure.code),
            Err(_) => crate::telemetry::failed(&span, "rejected"),
        }
        let outcome = match &result {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(failure)) => format!("tool_error:{}", failure.code),
            Err(error) => format!("rejected: {error}"),
        };
        if let Some(entry) = logged {
            entry.end(match &result {
                Err(_) => "rejected".to_owned(),
                Ok(_) => outcome.clone(),
            });
        }
        tracing::info!(
            server = self.server.name(),
            tool = %request.tool,
            workflow_id = %ctx.workflow_id,
            call_id = %ctx.call_id,
            duration_us = started.elapsed().as_micros() as u64,
            outcome = %truncate(&outcome, MAX_PROBLEM_CHARS),
            "tool call"
        );
        let outcome = match result? {
            Ok(value) => Outcome::ResultJson(value.to_string()),
            Err(failure) => Outcome::Error(ToolError {
                code: failure.code.to_owned(),
                message: failure.message,
                details_json: failure.details.map(|d| d.to_string()).unwrap_or_default(),
            }),
        };
        Ok(Response::new(CallToolResponse {
            outcome: Some(outcome),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_path_and_are_capped() {
        let schema = object_schema(
            json!({"items": {"type": "array", "items": {"type": "integer"}}}),
            &["items"],
        );
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert_eq!(
            schema_problems(&validator, &json!({})),
            [r#""items" is a required property"#]
        );
        let bad: Vec<Value> = (0..30).map(|i| json!(format!("s{i}"))).collect();
        let problems = schema_problems(&validator, &json!({"items": bad}));
        assert_eq!(problems.len(), MAX_LISTED_PROBLEMS + 1);
        assert!(problems[0].starts_with("at /items/0: "), "{}", problems[0]);
        assert_eq!(problems[MAX_LISTED_PROBLEMS], "and 10 more");
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 2), "hi");
    }
}
