//! How the orchestrator's protocol values read: names of states and outcomes, one-line descriptions of
//! audit events, and the JSON forms `--json` prints.
//!
//! Shared by every command that shows events or workflows, so the same event reads the same way in
//! `run`, `watch`, `audit tail` and `demo`.

use crate::output::{Out, clock_ms, duration_us};
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
    matches!(workflow_state(state), "completed" | "failed" | "cancelled")
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

/// What an audit event says, in one line without its sequence number and time.
pub fn describe(out: &Out, e: &pb::AuditEvent) -> String {
    let tool = if e.step.is_empty() {
        e.tool.clone()
    } else {
        format!("{} [{}]", e.tool, e.step)
    };
    match e.kind.as_str() {
        "workflow_started" => {
            let what = if e.template.is_empty() {
                "ad-hoc workflow".to_owned()
            } else {
                format!("template {}", e.template)
            };
            format!("{what} started by {}", e.caller)
        }
        "call_decided" => {
            let decision = e.decision.clone().unwrap_or_default();
            match decision_kind(decision.kind) {
                "deny" => format!(
                    "{tool}: {}: {}",
                    out.bad("denied"),
                    violations(&decision).join("; ")
                ),
                "needs_approval" => format!(
                    "{tool}: {} (gate {})",
                    out.warn("needs approval"),
                    decision.gate
                ),
                _ => format!("{tool}: {}", out.ok("allowed")),
            }
        }
        "approval_requested" => format!(
            "{}: {} {} — `conductorctl approve {}`",
            e.tool,
            out.warn("waiting for approval"),
            e.approval_id,
            e.approval_id
        ),
        "approval_decided" => {
            let verdict = match e.decision.as_ref().map(|d| decision_kind(d.kind)) {
                Some("allow") => out.ok("approved"),
                _ => out.bad("denied"),
            };
            let reason = if e.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", e.reason)
            };
            format!(
                "approval {} {verdict} by {}{reason}",
                e.approval_id, e.approver
            )
        }
        "call_started" => format!("{} started", e.tool),
        "call_finished" => {
            let word = outcome(e.outcome);
            let error = if e.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", e.reason)
            };
            format!(
                "{} {} in {}{error}",
                e.tool,
                out.state(word),
                duration_us(e.duration_us)
            )
        }
        "workflow_finished" => {
            let word = match outcome(e.outcome) {
                "succeeded" => "completed",
                "interrupted" => "cancelled",
                _ => "failed",
            };
            let reason = if e.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", e.reason)
            };
            format!(
                "workflow {} in {}{reason}",
                out.state(word),
                duration_us(e.duration_us)
            )
        }
        "control_refused" => format!(
            "{} for {}: {}",
            out.bad("control action refused"),
            e.caller,
            e.reason
        ),
        "config_loaded" => format!("configuration {} loaded", e.config_version),
        other => other.to_owned(),
    }
}

/// `#seq time workflow kind description`: one line of `watch` and `audit tail`.
pub fn event_line(out: &Out, e: &pb::AuditEvent) -> String {
    let workflow = if e.workflow_id.is_empty() {
        "-".to_owned()
    } else {
        e.workflow_id.clone()
    };
    format!(
        "{} {} {:<16} {:<18} {}",
        out.dim(&format!("#{:<5}", e.seq)),
        out.dim(&clock_ms(e.timestamp_ms)),
        workflow,
        e.kind,
        describe(out, e)
    )
}

/// The event as the audit log wrote it (every field), or its protocol fields when the line is absent.
pub fn event_json(e: &pb::AuditEvent) -> Value {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&e.raw_json) {
        return Value::Object(map);
    }
    json!({
        "seq": e.seq, "ts_ms": e.timestamp_ms, "kind": e.kind, "workflow_id": e.workflow_id,
        "call_id": e.call_id, "tool": e.tool, "step": e.step, "approval_id": e.approval_id,
        "approver": e.approver, "reason": e.reason, "caller": e.caller,
        "decision": e.decision.as_ref().map(decision_json),
        "outcome": outcome(e.outcome), "duration_us": e.duration_us,
    })
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
        "caller": w.caller, "error": w.error, "violations": w.violations, "config_version": w.config_version,
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
                })
            })
            .collect();
    }
    if let Ok(outputs @ Value::Object(_)) = serde_json::from_str::<Value>(&w.outputs_json) {
        value["outputs"] = outputs;
    }
    value
}

pub fn approval_json(a: &pb::ApprovalInfo) -> Value {
    json!({
        "id": a.id, "workflow_id": a.workflow_id, "tool": a.tool, "step": a.step, "gate": a.gate,
        "arguments": serde_json::from_str::<Value>(&a.arguments_json).unwrap_or(Value::String(a.arguments_json.clone())),
        "arguments_digest": a.arguments_digest, "requested_by": a.requested_by,
        "requested_at_ms": a.requested_at_ms, "expires_at_ms": a.expires_at_ms,
        "state": approval_state(a.state), "decided_by": a.decided_by, "reason": a.reason,
        "decided_at_ms": a.decided_at_ms, "config_version": a.config_version,
    })
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
