//! Approval requests as data: what a person is asked to release, and what their decision (or the
//! clock's) means for the call. Pure: the waiting and the ledger are the orchestrator's.

use crate::domain::ApprovalVerdict;
use crate::policy::{RuleKind, Violation};
use serde_json::Value;

/// One approval request, pending or decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub workflow_id: String,
    pub call_id: String,
    pub tool: String,
    pub step: Option<String>,
    pub gate: String,
    pub arguments: Value,
    pub arguments_digest: String,
    pub config_version: String,
    pub requested_by: String,
    pub requested_at_ms: i64,
    pub expires_at_ms: i64,
    /// `None` while pending.
    pub verdict: Option<ApprovalVerdict>,
    pub decided_by: String,
    pub reason: String,
    pub decided_at_ms: i64,
    /// The approver must be someone other than `workflow_caller`.
    pub four_eyes: bool,
    pub workflow_caller: String,
}

impl Approval {
    /// "approved by bob", "expired", "pending": for messages about an approval already decided.
    pub fn describe(&self) -> String {
        let state = match self.verdict {
            Some(ApprovalVerdict::Approved) => "approved",
            Some(ApprovalVerdict::Denied) => "denied",
            Some(ApprovalVerdict::Expired) => "expired",
            None => "pending",
        };
        if self.decided_by.is_empty() {
            state.to_owned()
        } else {
            format!("{state} by {}", self.decided_by)
        }
    }

    /// Why the call did not run, when the decision was not an approval: the violation its caller
    /// and its history show.
    pub fn refusal(&self) -> Violation {
        let (message, hint) = match self.verdict {
            Some(ApprovalVerdict::Denied) => (
                format!(
                    "{} was denied by {}{}",
                    self.tool,
                    self.decided_by,
                    reason_suffix(&self.reason)
                ),
                "do not retry this call unchanged; ask the approver what to change".to_owned(),
            ),
            _ => (
                format!(
                    "{} was not approved in time ({}){}",
                    self.tool,
                    self.decided_by,
                    reason_suffix(&self.reason)
                ),
                format!(
                    "call it again and have someone run `conductorctl approve <id>` before the gate's time-out (gate {})",
                    self.gate
                ),
            ),
        };
        Violation {
            rule_id: self.gate.clone(),
            rule_kind: RuleKind::Approval,
            tool: self.tool.clone(),
            message,
            unblock_hint: hint,
            required_tools: Vec::new(),
            retry_after_ms: None,
        }
    }
}

/// What an approval covers: the sha256 of the arguments' RFC 8785 canonical form, so that key
/// order or number spelling cannot change it. An approval releases exactly the call with these
/// arguments.
pub fn digest(arguments: &Value) -> String {
    crate::digest::approval_digest(arguments)
}

/// The same name is the same person, whatever session or transport it came through.
pub fn same_person(a: &str, b: &str) -> bool {
    crate::config::caller_name(a).eq_ignore_ascii_case(crate::config::caller_name(b))
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
