//! Turning the gateway's answers into MCP results: what a model reads when a call succeeds, fails, or is
//! refused. A refusal is a tool result with `isError: true` (not a protocol error), because MCP clients
//! show tool results to the model and hide protocol errors: the model must read which rule blocked it
//! and what to do first.

use super::handler::WORKFLOW_META_KEY;
use crate::downstream::{ToolFailure, ToolInfo};
use crate::error::Error;
use crate::gateway::{CallReport, CallResult};
use crate::policy::Violation;
use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, Tool};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Arc;

/// A downstream tool as MCP lists it: an MCP server's tool as that server listed it (title,
/// annotations, output schema, execution hints, icons, `_meta`), under its public name; a gRPC tool
/// from its name, description and schema.
pub fn tool(info: ToolInfo) -> Tool {
    if let Some(mut tool) = info
        .listed
        .as_deref()
        .and_then(|listed| serde_json::from_value::<Tool>(listed.clone()).ok())
    {
        tool.name = info.name.into();
        return tool;
    }
    let schema = match info.input_schema {
        Value::Object(map) => map,
        _ => serde_json::Map::from_iter([("type".to_owned(), Value::String("object".into()))]),
    };
    let description = if info.description.is_empty() {
        format!("{} (server {})", info.name, info.server)
    } else {
        info.description
    };
    Tool::new(info.name, description, Arc::new(schema))
}

/// The result of a call that went through the gateway.
pub fn report(report: CallReport, workflow_id: &str) -> CallToolResult {
    let approval = report.approval.as_ref().map(|a| {
        json!({ "id": a.id, "verdict": a.verdict, "decided_by": a.decided_by, "reason": a.reason })
    });
    let result = match report.result {
        CallResult::Denied(violations) => denied(&report.tool, &violations, workflow_id),
        // An MCP server's result passes as it gave it (every content block, structuredContent
        // beside them, isError, its own _meta less this gateway's keys).
        _ if let Some(served) = report.served.as_deref().and_then(as_served) => served,
        CallResult::Succeeded(value) => succeeded(value),
        CallResult::Failed(failure) => failed(&report.tool, &failure),
    };
    let mut result = with_workflow(result, workflow_id, None);
    if let (Some(approval), Some(meta)) = (approval, result.meta.as_mut()) {
        meta.0
            .insert("io.conductorio/approval".to_owned(), approval);
    }
    result
}

/// A server's `input_required` result (SEP-2322), as it gave it, when the call got one.
pub fn input_required(report: &CallReport) -> Option<rmcp::model::InputRequiredResult> {
    let served = report.served.as_deref()?;
    if served.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    serde_json::from_value(served.clone()).ok()
}

/// An MCP server's result as it gave it, less any `_meta` key of this gateway's (it adds its own).
/// A server of an earlier era sends no `resultType`: the result says it is complete, as a
/// 2026-07-28 client requires (the SDK takes it out again for a client of an earlier era).
fn as_served(served: &Value) -> Option<CallToolResult> {
    let mut result: CallToolResult = serde_json::from_value(served.clone()).ok()?;
    result
        .result_type
        .get_or_insert(rmcp::model::ResultType::COMPLETE);
    if let Some(meta) = result.meta.as_mut() {
        meta.0.retain(|key, _| !key.starts_with("io.conductorio/"));
        if meta.0.is_empty() {
            result.meta = None;
        }
    }
    Some(result)
}

fn succeeded(value: Value) -> CallToolResult {
    match value {
        // MCP's structuredContent is an object; anything else travels as JSON text.
        Value::Object(_) => CallToolResult::structured(value),
        Value::String(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
        other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
    }
}

fn failed(tool: &str, failure: &ToolFailure) -> CallToolResult {
    let mut text = format!("{tool} failed: {}: {}", failure.code, failure.message);
    if let Some(details) = &failure.details {
        let _ = write!(text, "\ndetails: {details}");
    }
    let mut result = CallToolResult::structured_error(
        json!({ "code": failure.code, "message": failure.message, "details": failure.details }),
    );
    result.content = vec![ContentBlock::text(text)];
    result
}

/// The text a model reads when a policy refused its call: every blocking rule, and what to do first.
pub fn denial_text(tool: &str, violations: &[Violation], workflow_id: &str) -> String {
    let mut text =
        format!("Conductorio refused {tool} (workflow {workflow_id}); it did not run. Blocked by:");
    for v in violations {
        let _ = write!(
            text,
            "\n- rule {} ({}): {}",
            v.rule_id,
            v.rule_kind.as_str(),
            v.message
        );
        if !v.unblock_hint.is_empty() {
            let _ = write!(text, "\n  What to do first: {}", v.unblock_hint);
        }
        if !v.required_tools.is_empty() {
            let _ = write!(text, "\n  Call first: {}", v.required_tools.join(", "));
        }
    }
    text
}

fn denied(tool: &str, violations: &[Violation], workflow_id: &str) -> CallToolResult {
    let mut result = CallToolResult::structured_error(
        json!({ "denied": true, "tool": tool, "violations": violations }),
    );
    result.content = vec![ContentBlock::text(denial_text(
        tool,
        violations,
        workflow_id,
    ))];
    result
}

/// Adds the workflow id to a result's `_meta` (and optionally a first text block), so a client without a
/// session can name the workflow in its next request.
pub fn with_workflow(
    mut result: CallToolResult,
    workflow_id: &str,
    text: Option<String>,
) -> CallToolResult {
    let mut meta = result.meta.take().unwrap_or_default();
    meta.0.insert(
        WORKFLOW_META_KEY.to_owned(),
        Value::String(workflow_id.to_owned()),
    );
    result.meta = Some(meta);
    if let Some(text) = text {
        result.content.insert(0, ContentBlock::text(text));
    }
    result
}

/// A call the gateway could not run. Problems the model can act on (a server down, a time-out, bad
/// arguments, a finished workflow, an audit log that cannot record the call now) are tool errors it
/// reads; an unknown tool, a server's own JSON-RPC error, or an orchestrator that cannot serve at
/// all (stopping, or a standby, whose error names the active node for the client) are protocol
/// errors.
pub fn error(tool: &str, error: Error) -> Result<CallToolResult, ErrorData> {
    match error {
        Error::UnknownTool { .. }
        | Error::Internal(_)
        | Error::ShuttingDown
        | Error::Audit(conductor_audit::AuditError::Standby(_)) => Err(error.into()),
        // A server's own JSON-RPC error (a capability the client did not declare, params it
        // refuses, a requestState that fails its integrity check) passes on as it was given: the
        // client's request is what must change, as if it had asked the server itself.
        Error::ServerError { .. } => Err(error.into()),
        other => {
            let mut result = CallToolResult::structured_error(
                json!({ "code": code(&other), "message": other.to_string() }),
            );
            // A time-out is not "could not run": the call was sent, and may have been carried out.
            let text = match &other {
                Error::DeadlineExceeded { .. } | Error::Cancelled { .. } => {
                    format!("{tool}: {other}")
                }
                _ => format!("{tool} could not run: {other}"),
            };
            result.content = vec![ContentBlock::text(text)];
            Ok(result)
        }
    }
}

/// A short, stable code for a call error, for programs reading `structuredContent`.
fn code(error: &Error) -> &'static str {
    match error {
        Error::WorkflowNotFound(_) => "workflow_not_found",
        Error::WorkflowFinished { .. } => "workflow_finished",
        Error::UnknownTool { .. } => "unknown_tool",
        Error::UnknownTemplate { .. } => "unknown_template",
        Error::InvalidArgument(_) | Error::Config(_) => "invalid_argument",
        Error::Unavailable { .. } => "unavailable",
        Error::DeadlineExceeded { .. } => "deadline_exceeded",
        Error::Cancelled { .. } => "cancelled",
        Error::Downstream { .. } | Error::ServerError { .. } => "downstream_error",
        Error::ApprovalNotFound(_) | Error::ApprovalDecided { .. } | Error::ApprovalMismatch(_) => {
            "approval"
        }
        Error::Unauthenticated(_) | Error::PermissionDenied(_) => "permission_denied",
        Error::Audit(_) => "audit",
        Error::Internal(_) => "internal",
        Error::ShuttingDown => "shutting_down",
    }
}
