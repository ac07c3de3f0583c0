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
    /// The approver must be someone other than `requested_by` and `workflow_caller`.
    pub four_eyes: bool,
    pub workflow_caller: String,
    /// Why the call waits, beyond its gate's id: a condition that held, or the earlier calls that
    /// brought a flow rule's labels in. Empty for a plain gate.
    pub why: String,
}

impl Approval {
    /// "approved by bob", "expired (its workflow was cancelled by ada)", "pending": for messages
    /// about an approval already decided. An expiry says why, not who pressed nothing.
    pub fn describe(&self) -> String {
        match self.verdict {
            Some(ApprovalVerdict::Expired) if !self.reason.is_empty() => {
                format!("expired ({})", self.reason)
            }
            Some(ApprovalVerdict::Expired) => "expired".to_owned(),
            verdict => {
                let state = match verdict {
                    Some(ApprovalVerdict::Approved) => "approved",
                    Some(ApprovalVerdict::Denied) => "denied",
                    _ => "pending",
                };
                if self.decided_by.is_empty() {
                    state.to_owned()
                } else {
                    format!("{state} by {}", self.decided_by)
                }
            }
        }
    }

    /// Under four eyes, why `approver` may not approve this call: they asked for it, or they started
    /// the workflow it runs in (whoever acts in someone's workflow, by `act_for` or as the operator,
    /// still needs a second person). `None` when they may, or when the gate has no four eyes.
    pub fn four_eyes_refusal(&self, approver: &str) -> Option<String> {
        if !self.four_eyes {
            None
        } else if same_person(approver, &self.requested_by) {
            Some(format!(
                "four eyes: {approver} asked for this {} call and cannot approve it too; ask someone else",
                self.tool
            ))
        } else if same_person(approver, &self.workflow_caller) {
            Some(format!(
                "four eyes: {approver} started workflow {} and cannot approve its own call; ask someone else",
                self.workflow_id
            ))
        } else {
            None
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
            // Withdrawn (its workflow was cancelled, its session or workflow ended): nobody waits.
            Some(ApprovalVerdict::Expired)
                if self.decided_by != "system:timeout" && !self.reason.is_empty() =>
            {
                (
                    format!(
                        "{} did not run: its approval request was withdrawn ({})",
                        self.tool, self.reason
                    ),
                    "start a new workflow to call it again".to_owned(),
                )
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_decided_request_says_who_decided_and_an_expired_one_says_why() {
        let mut approval = Approval {
            id: "ap-1".into(),
            workflow_id: "w".into(),
            call_id: "c".into(),
            tool: "restore_backup".into(),
            step: None,
            gate: "g".into(),
            arguments: json!({}),
            arguments_digest: digest(&json!({})),
            config_version: "v".into(),
            requested_by: "ada".into(),
            requested_at_ms: 0,
            expires_at_ms: 1,
            verdict: Some(ApprovalVerdict::Approved),
            decided_by: "bob".into(),
            reason: String::new(),
            decided_at_ms: 1,
            four_eyes: false,
            workflow_caller: "ada".into(),
            why: String::new(),
        };
        assert_eq!(approval.describe(), "approved by bob");
        approval.verdict = Some(ApprovalVerdict::Expired);
        approval.decided_by = "system:cancel".into();
        approval.reason = "its workflow was cancelled by ada".into();
        assert_eq!(
            approval.describe(),
            "expired (its workflow was cancelled by ada)"
        );
        assert_eq!(
            approval.refusal().message,
            "restore_backup did not run: its approval request was withdrawn (its workflow was cancelled by ada)"
        );
        approval.decided_by = "system:timeout".into();
        approval.reason = "no decision within 1m".into();
        assert!(approval.refusal().message.contains("not approved in time"));
    }

    #[test]
    fn four_eyes_refuses_whoever_asked_for_the_call_and_whoever_started_its_workflow() {
        let mut approval = Approval {
            id: "ap-1".into(),
            workflow_id: "w-1".into(),
            call_id: "c".into(),
            tool: "restore_backup".into(),
            step: None,
            gate: "g".into(),
            arguments: json!({}),
            arguments_digest: digest(&json!({})),
            config_version: "v".into(),
            // bob acts in alice's workflow (act_for, or as the operator).
            requested_by: "bob (token …b7c1)".into(),
            requested_at_ms: 0,
            expires_at_ms: 1,
            verdict: None,
            decided_by: String::new(),
            reason: String::new(),
            decided_at_ms: 0,
            four_eyes: true,
            workflow_caller: "alice (token …a1b2)".into(),
            why: String::new(),
        };
        let cases = [
            (
                "bob (token …b7c1)",
                Some("asked for this restore_backup call"),
            ),
            ("BOB", Some("asked for this restore_backup call")),
            ("alice (jwt)", Some("started workflow w-1")),
            ("carol (token …c3d4)", None),
        ];
        for (approver, refused) in cases {
            let got = approval.four_eyes_refusal(approver);
            match refused {
                Some(part) => assert!(
                    got.as_deref().is_some_and(|m| m.contains(part)),
                    "{approver}: {got:?}"
                ),
                None => assert_eq!(got, None, "{approver}"),
            }
        }
        approval.four_eyes = false;
        assert_eq!(approval.four_eyes_refusal("bob"), None);
    }
}
