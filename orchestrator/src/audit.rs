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
