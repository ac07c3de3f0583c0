//! The domain's small enums: how a call ended, what the engine decided, what a person decided, how
//! a workflow ended. The events record them; workflows, approvals and reports use them.

use serde::{Deserialize, Serialize};

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
