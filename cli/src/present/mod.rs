//! How the orchestrator's protocol values read: names of states and outcomes, one-line descriptions of
//! audit events, and the JSON forms `--json` prints.
//!
//! Shared by every command that shows events or workflows, so the same event reads the same way in
//! `run`, `watch`, `audit tail` and `demo`.

mod event;

pub use event::{
    describe, event_call_id, event_json, event_line, event_tool, kind_name, verdict_word,
};

use conductor_proto::v1 as pb;
use serde_json::{Map, Value, json};

pub fn workflow_state(state: i32) -> &'static str {
    match pb::WorkflowState::try_from(state).unwrap_or_default() {
        pb::WorkflowState::Running => "running",
        pb::WorkflowState::WaitingApproval => "waiting approval",
        pb::WorkflowState::Completed => "completed",
        pb::WorkflowState::Failed => "failed",
        pb::WorkflowState::Cancelled => "cancelled",
        pb::WorkflowState::Unspecified => "unknown",
    }
}

pub fn is_finished(state: i32) -> bool {
    matches!(
        pb::WorkflowState::try_from(state).unwrap_or_default(),
        pb::WorkflowState::Completed | pb::WorkflowState::Failed | pb::WorkflowState::Cancelled
    )
}

pub fn outcome(outcome: i32) -> &'static str {
    match pb::CallOutcome::try_from(outcome).unwrap_or_default() {
        pb::CallOutcome::Succeeded => "succeeded",
        pb::CallOutcome::Failed => "failed",
        pb::CallOutcome::Denied => "denied",
        pb::CallOutcome::Interrupted => "interrupted",
        pb::CallOutcome::Running => "running",
        pb::CallOutcome::WaitingApproval => "waiting approval",
        pb::CallOutcome::Unspecified => "",
    }
}

pub fn decision_kind(kind: i32) -> &'static str {
    match pb::DecisionKind::try_from(kind).unwrap_or_default() {
        pb::DecisionKind::Allow => "allow",
        pb::DecisionKind::Deny => "deny",
        pb::DecisionKind::NeedsApproval => "needs_approval",
        pb::DecisionKind::Unspecified => "",
    }
}

pub fn approval_state(state: i32) -> &'static str {
    match pb::ApprovalState::try_from(state).unwrap_or_default() {
        pb::ApprovalState::Pending => "pending",
        pb::ApprovalState::Approved => "approved",
        pb::ApprovalState::Denied => "denied",
        pb::ApprovalState::Expired => "expired",
        pb::ApprovalState::Unspecified => "",
    }
}

/// Each violation as `message [rule id, kind] — hint`, one per line.
pub fn violations(decision: &pb::Decision) -> Vec<String> {
    decision
        .violations
        .iter()
        .map(|v| {
            let hint = if v.unblock_hint.is_empty() {
                String::new()
            } else {
                format!(" — {}", v.unblock_hint)
            };
            format!("{} [rule {}, {}]{hint}", v.message, v.rule_id, v.rule_kind)
        })
        .collect()
}

pub fn decision_json(d: &pb::Decision) -> Value {
    json!({
        "kind": decision_kind(d.kind),
        "gate": d.gate,
        "approval_id": d.approval_id,
        "violations": d.violations.iter().map(|v| json!({
            "rule_id": v.rule_id, "rule_kind": v.rule_kind, "tool": v.tool, "message": v.message,
            "unblock_hint": v.unblock_hint, "required_tools": v.required_tools,
        })).collect::<Vec<_>>(),
    })
}

pub fn workflow_json(w: &pb::WorkflowInfo) -> Value {
    let mut value = json!({
        "id": w.id, "template": w.template, "state": workflow_state(w.state),
        "steps_done": w.steps_done, "steps_total": w.steps_total, "next_step": w.next_step,
        "started_at_ms": w.started_at_ms, "finished_at_ms": w.finished_at_ms, "duration_ms": w.duration_ms,
        "started_at": utc_json(w.started_at_ms), "finished_at": utc_json(w.finished_at_ms),
        "caller": w.caller, "error": w.error, "violations": w.violations, "config_version": w.config_version,
        "not_yet_durable": w.not_yet_durable,
    });
    if !w.history.is_empty() {
        value["history"] = w
            .history
            .iter()
            .map(|c| {
                json!({
                    "call_id": c.call_id, "tool": c.tool, "step": c.step, "outcome": outcome(c.outcome),
                    "decision": c.decision.as_ref().map(decision_json), "duration_us": c.duration_us,
                    "started_at_ms": c.started_at_ms, "error": c.error_message, "approval_id": c.approval_id,
                    "error_details": c.error_details_json.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
                    "not_yet_durable": c.not_yet_durable,
                    "trace_id": (!c.trace_id.is_empty()).then_some(&c.trace_id),
                })
            })
            .collect();
    }
    if let Ok(outputs @ Value::Object(_)) = serde_json::from_str::<Value>(&w.outputs_json) {
        value["outputs"] = outputs;
    }
    value
}

/// A state or outcome as shown, marked when its audit record is not durable yet: the orchestrator
/// shows what it has applied, and a crash would take that change back.
pub fn durable_mark(shown: &str, not_yet_durable: bool) -> String {
    if not_yet_durable {
        format!("{shown} (not yet durable)")
    } else {
        shown.to_owned()
    }
}

/// A time for scripts: RFC 3339 in UTC with `Z` (milliseconds), or null when unset. People get local
/// time (`output::time_ms`); scripts get one unambiguous form.
pub fn utc_json(ms: i64) -> Value {
    if ms <= 0 {
        return Value::Null;
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.unsigned_abs());
    Value::String(humantime::format_rfc3339_millis(time).to_string())
}

pub fn approval_json(a: &pb::ApprovalInfo) -> Value {
    json!({
        "id": a.id, "workflow_id": a.workflow_id, "tool": a.tool, "step": a.step, "gate": a.gate,
        "arguments": serde_json::from_str::<Value>(&a.arguments_json).unwrap_or(Value::String(a.arguments_json.clone())),
        "arguments_digest": a.arguments_digest, "requested_by": a.requested_by,
        "requested_at_ms": a.requested_at_ms, "expires_at_ms": a.expires_at_ms,
        "requested_at": utc_json(a.requested_at_ms), "expires_at": utc_json(a.expires_at_ms),
        "state": approval_state(a.state), "decided_by": a.decided_by, "reason": a.reason,
        "decided_at_ms": a.decided_at_ms, "decided_at": utc_json(a.decided_at_ms),
        "config_version": a.config_version, "why": a.why,
    })
}

/// A JSON value on one line, cut to `max` characters with an ellipsis: how a step's output or a tool's
/// error details read in a list (the whole value is one command away).
pub fn summary(value: &Value, max: usize) -> String {
    crate::output::clip(&value.to_string(), max)
}

/// The outputs of a workflow's template steps, by step name, in the order they came.
pub fn step_outputs(w: &pb::WorkflowInfo) -> Vec<(String, Value)> {
    match serde_json::from_str::<Value>(&w.outputs_json) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// A tool's result text as JSON (or as a string when it is not JSON).
pub fn result_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// An object from `(key, value)` pairs, for small ad-hoc JSON answers.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_times_are_utc_with_z() {
        assert_eq!(
            utc_json(1_234),
            Value::String("1970-01-01T00:00:01.234Z".into())
        );
        assert_eq!(utc_json(0), Value::Null);
        let w = pb::WorkflowInfo {
            started_at_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(workflow_json(&w)["started_at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(workflow_json(&w)["finished_at"], Value::Null);
    }
}
