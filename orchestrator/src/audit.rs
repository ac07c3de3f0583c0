//! What the audit log records: one [`AuditEvent`] per line, tagged by `kind`, in the hash-chained,
//! group-committed log of the `conductor-audit` crate.
//!
//! These events are the orchestrator's memory: the state (workflows, histories, pending approvals) is
//! rebuilt from them on start, so every fact the state needs is written here. Adding a field is safe
//! (readers default it); renaming or removing one breaks old logs.

use crate::policy::Violation;
use conductor_audit::KindTagged;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// How a decided call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// The server could not be reached (or the call could not be recorded): the call did not run.
    Unavailable,
    /// The orchestrator stopped (or crashed) while the call ran; its effect is unknown.
    Interrupted,
}

/// The engine's verdict as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Allow,
    Deny,
    NeedsApproval,
}

/// A person's (or the clock's) decision on an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalVerdict {
    Approved,
    Denied,
    Expired,
}

/// A workflow's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowEnd {
    Completed,
    Failed,
    Cancelled,
}

/// One event, written as a flat JSON object whose first field `kind` names the variant. serde's
/// `remote = "Self"` derives the plain representation as inherent functions, which
/// [`KindTagged`] turns into that object in one pass (serde's own `tag = "kind"` would read every
/// event twice; start-up reads them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub enum AuditEvent {
    /// The orchestrator started, or reloaded, with this configuration.
    ConfigLoaded {
        config_version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    WorkflowStarted {
        workflow_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
        #[serde(default)]
        input: Value,
        caller: String,
        config_version: String,
    },
    /// A call was asked for and the policy engine decided it (the request and the decision in one line).
    CallDecided {
        workflow_id: String,
        call_id: String,
        tool: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        arguments: Value,
        caller: String,
        decision: DecisionKind,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        violations: Vec<Violation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<String>,
        config_version: String,
    },
    ApprovalRequested {
        workflow_id: String,
        call_id: String,
        tool: String,
        approval_id: String,
        gate: String,
        arguments_digest: String,
        expires_at_ms: i64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        four_eyes: bool,
    },
    ApprovalDecided {
        workflow_id: String,
        call_id: String,
        approval_id: String,
        verdict: ApprovalVerdict,
        approver: String,
        #[serde(default)]
        reason: String,
        waited_ms: u64,
    },
    /// The call was sent to its server.
    CallStarted {
        workflow_id: String,
        call_id: String,
        tool: String,
        server: String,
    },
    CallFinished {
        workflow_id: String,
        call_id: String,
        tool: String,
        outcome: Outcome,
        duration_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The tool's result, kept so that template steps can use it after a restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
    },
    WorkflowFinished {
        workflow_id: String,
        state: WorkflowEnd,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_ms: u64,
    },
    /// A control action (approve, deny, cancel, reload) was refused, e.g. for a missing token.
    ControlRefused {
        action: String,
        target: String,
        reason: String,
        caller: String,
    },
}

impl Serialize for AuditEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AuditEvent::serialize(self, KindTagged(serializer))
    }
}

impl<'de> Deserialize<'de> for AuditEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AuditEvent::deserialize(KindTagged(deserializer))
    }
}

impl AuditEvent {
    /// The `kind` tag as written in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::ConfigLoaded { .. } => "config_loaded",
            AuditEvent::WorkflowStarted { .. } => "workflow_started",
            AuditEvent::CallDecided { .. } => "call_decided",
            AuditEvent::ApprovalRequested { .. } => "approval_requested",
            AuditEvent::ApprovalDecided { .. } => "approval_decided",
            AuditEvent::CallStarted { .. } => "call_started",
            AuditEvent::CallFinished { .. } => "call_finished",
            AuditEvent::WorkflowFinished { .. } => "workflow_finished",
            AuditEvent::ControlRefused { .. } => "control_refused",
        }
    }

    /// The workflow the event belongs to, if any.
    pub fn workflow_id(&self) -> Option<&str> {
        match self {
            AuditEvent::WorkflowStarted { workflow_id, .. }
            | AuditEvent::CallDecided { workflow_id, .. }
            | AuditEvent::ApprovalRequested { workflow_id, .. }
            | AuditEvent::ApprovalDecided { workflow_id, .. }
            | AuditEvent::CallStarted { workflow_id, .. }
            | AuditEvent::CallFinished { workflow_id, .. }
            | AuditEvent::WorkflowFinished { workflow_id, .. } => Some(workflow_id),
            AuditEvent::ConfigLoaded { .. } | AuditEvent::ControlRefused { .. } => None,
        }
    }

    /// The tool the event is about, if any.
    pub fn tool(&self) -> Option<&str> {
        match self {
            AuditEvent::CallDecided { tool, .. }
            | AuditEvent::ApprovalRequested { tool, .. }
            | AuditEvent::CallStarted { tool, .. }
            | AuditEvent::CallFinished { tool, .. } => Some(tool),
            _ => None,
        }
    }
}

/// The orchestrator's audit log: the generic hash-chained log of `conductor-audit`, carrying [`AuditEvent`]s.
pub type AuditLog = conductor_audit::AuditLog<AuditEvent>;
/// One line of the log: the event with its place in the chain.
pub type AuditRecord = conductor_audit::Record<AuditEvent>;

/// What start-up reads of each line: the lines of [`AuditEvent`], with only the fields the replay
/// needs. The parser skips the rest without building it (`config_version`, the whole of
/// `call_started`, `control_refused`), and the `arguments` and `result` JSON stay text until a
/// call turns out to need them (a call still unfinished when the log ends, a template step's
/// output). A test keeps it in step with [`AuditEvent`].
#[derive(Debug, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
pub(crate) enum ReplayEvent {
    ConfigLoaded {},
    WorkflowStarted {
        workflow_id: String,
        #[serde(default)]
        template: Option<String>,
        #[serde(default)]
        input: Value,
        caller: String,
    },
    CallDecided {
        workflow_id: String,
        call_id: String,
        tool: String,
        #[serde(default)]
        step: Option<String>,
        arguments: Box<RawValue>,
        caller: String,
        decision: DecisionKind,
        #[serde(default)]
        violations: Vec<Violation>,
        #[serde(default)]
        gate: Option<String>,
    },
    ApprovalRequested {
        workflow_id: String,
        call_id: String,
        tool: String,
        approval_id: String,
        gate: String,
        arguments_digest: String,
        expires_at_ms: i64,
        #[serde(default)]
        four_eyes: bool,
    },
    ApprovalDecided {
        workflow_id: String,
        call_id: String,
        verdict: ApprovalVerdict,
    },
    CallStarted {},
    CallFinished {
        workflow_id: String,
        call_id: String,
        outcome: Outcome,
        duration_us: u64,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        result: Option<Box<RawValue>>,
    },
    WorkflowFinished {
        workflow_id: String,
        state: WorkflowEnd,
        #[serde(default)]
        error: Option<String>,
    },
    ControlRefused {},
}

impl<'de> Deserialize<'de> for ReplayEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ReplayEvent::deserialize(KindTagged(deserializer))
    }
}

/// JSON kept as text by [`ReplayEvent`], parsed when needed. It was parsed once already, when
/// the line was read, so it is valid JSON.
pub(crate) fn parse_raw(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Violation;
    use serde_json::json;

    /// One of every event, with every optional field set.
    fn every_event() -> Vec<AuditEvent> {
        let (w, c) = ("w-1".to_string(), "c-1".to_string());
        vec![
            AuditEvent::ConfigLoaded {
                config_version: "v1".into(),
                path: Some("config.json".into()),
            },
            AuditEvent::WorkflowStarted {
                workflow_id: w.clone(),
                template: Some("onboarding".into()),
                input: json!({"customer": "ada"}),
                caller: "cli".into(),
                config_version: "v1".into(),
            },
            AuditEvent::CallDecided {
                workflow_id: w.clone(),
                call_id: c.clone(),
                tool: "validate".into(),
                step: Some("check".into()),
                arguments: json!({"records": [1, {"a": "b"}]}),
                caller: "cli".into(),
                decision: DecisionKind::Deny,
                violations: vec![Violation {
                    rule_id: "r1".into(),
                    rule_kind: crate::policy::RuleKind::Sequence,
                    tool: "send".into(),
                    message: "call validate first".into(),
                    unblock_hint: "call validate".into(),
                    required_tools: vec!["validate".into()],
                    retry_after_ms: Some(3),
                }],
                gate: Some("g".into()),
                config_version: "v1".into(),
            },
            AuditEvent::ApprovalRequested {
                workflow_id: w.clone(),
                call_id: c.clone(),
                tool: "send".into(),
                approval_id: "a-1".into(),
                gate: "g".into(),
                arguments_digest: "d".into(),
                expires_at_ms: 9,
                four_eyes: true,
            },
            AuditEvent::ApprovalDecided {
                workflow_id: w.clone(),
                call_id: c.clone(),
                approval_id: "a-1".into(),
                verdict: ApprovalVerdict::Expired,
                approver: "bob".into(),
                reason: "late".into(),
                waited_ms: 5,
            },
            AuditEvent::CallStarted {
                workflow_id: w.clone(),
                call_id: c.clone(),
                tool: "send".into(),
                server: "notify".into(),
            },
            AuditEvent::CallFinished {
                workflow_id: w.clone(),
                call_id: c.clone(),
                tool: "send".into(),
                outcome: Outcome::Failed,
                duration_us: 7,
                error: Some("boom".into()),
                result: Some(json!({"sent": [true]})),
            },
            AuditEvent::WorkflowFinished {
                workflow_id: w,
                state: WorkflowEnd::Cancelled,
                error: Some("stopped".into()),
                duration_ms: 3,
            },
            AuditEvent::ControlRefused {
                action: "approve".into(),
                target: "a-1".into(),
                reason: "no token".into(),
                caller: "eve".into(),
            },
        ]
    }

    #[test]
    fn the_replay_reads_every_field_it_needs_from_what_is_written() {
        for event in every_event() {
            let text = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<AuditEvent>(&text).unwrap(), event);
            let replay: ReplayEvent = serde_json::from_str(&text).unwrap();
            let same = match (&event, replay) {
                (AuditEvent::ConfigLoaded { .. }, ReplayEvent::ConfigLoaded {})
                | (AuditEvent::CallStarted { .. }, ReplayEvent::CallStarted {})
                | (AuditEvent::ControlRefused { .. }, ReplayEvent::ControlRefused {}) => true,
                (
                    AuditEvent::WorkflowStarted {
                        workflow_id,
                        template,
                        input,
                        caller,
                        ..
                    },
                    ReplayEvent::WorkflowStarted {
                        workflow_id: w,
                        template: t,
                        input: i,
                        caller: c,
                    },
                ) => (workflow_id, template, input, caller) == (&w, &t, &i, &c),
                (
                    AuditEvent::CallDecided {
                        workflow_id,
                        call_id,
                        tool,
                        step,
                        arguments,
                        caller,
                        decision,
                        violations,
                        gate,
                        ..
                    },
                    ReplayEvent::CallDecided {
                        workflow_id: w,
                        call_id: c,
                        tool: t,
                        step: s,
                        arguments: a,
                        caller: who,
                        decision: d,
                        violations: v,
                        gate: g,
                    },
                ) => {
                    (workflow_id, call_id, tool, step, caller) == (&w, &c, &t, &s, &who)
                        && (decision, violations, gate) == (&d, &v, &g)
                        && *arguments == parse_raw(&a)
                }
                (
                    AuditEvent::ApprovalRequested {
                        workflow_id,
                        call_id,
                        tool,
                        approval_id,
                        gate,
                        arguments_digest,
                        expires_at_ms,
                        four_eyes,
                    },
                    ReplayEvent::ApprovalRequested {
                        workflow_id: w,
                        call_id: c,
                        tool: t,
                        approval_id: a,
                        gate: g,
                        arguments_digest: d,
                        expires_at_ms: e,
                        four_eyes: f,
                    },
                ) => {
                    (workflow_id, call_id, tool, approval_id) == (&w, &c, &t, &a)
                        && (gate, arguments_digest, expires_at_ms, four_eyes) == (&g, &d, &e, &f)
                }
                (
                    AuditEvent::ApprovalDecided {
                        workflow_id,
                        call_id,
                        verdict,
                        ..
                    },
                    ReplayEvent::ApprovalDecided {
                        workflow_id: w,
                        call_id: c,
                        verdict: v,
                    },
                ) => (workflow_id, call_id, verdict) == (&w, &c, &v),
                (
                    AuditEvent::CallFinished {
                        workflow_id,
                        call_id,
                        outcome,
                        duration_us,
                        error,
                        result,
                        ..
                    },
                    ReplayEvent::CallFinished {
                        workflow_id: w,
                        call_id: c,
                        outcome: o,
                        duration_us: d,
                        error: e,
                        result: r,
                    },
                ) => {
                    (workflow_id, call_id, outcome, duration_us, error) == (&w, &c, &o, &d, &e)
                        && *result == r.as_deref().map(parse_raw)
                }
                (
                    AuditEvent::WorkflowFinished {
                        workflow_id,
                        state,
                        error,
                        ..
                    },
                    ReplayEvent::WorkflowFinished {
                        workflow_id: w,
                        state: s,
                        error: e,
                    },
                ) => (workflow_id, state, error) == (&w, &s, &e),
                _ => false,
            };
            assert!(same, "the replay misread {text}");
        }
    }
}
