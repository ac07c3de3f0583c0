//! Approval gates on the call path: the request (ledger, pending list, audit), the wait for a person's
//! decision or the deadline, and the denial an unapproved call gets.

use super::call::CallSpec;
use super::{Gateway, now_ms};
use crate::approval::{self, Approval, DecisionRequest};
use crate::audit::{ApprovalVerdict, AuditEvent, Outcome};
use crate::error::Error;
use crate::policy::{self, RuleKind, Violation};
use crate::workflow::CallStatus;
use std::time::Duration;
use tokio::sync::oneshot;

impl Gateway {
    pub(super) async fn request_approval(
        &self,
        spec: &CallSpec,
        call_id: &str,
        gate: &policy::ApprovalGate,
        config_version: String,
    ) -> Result<(Approval, oneshot::Receiver<DecisionRequest>), Error> {
        let now = now_ms();
        let approval = Approval {
            id: format!("ap-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            workflow_id: spec.workflow_id.clone(),
            call_id: call_id.to_owned(),
            tool: spec.tool.clone(),
            step: spec.step.and_then(|i| self.step_name(&spec.workflow_id, i)),
            gate: gate.id.to_string(),
            arguments_digest: approval::digest(&spec.arguments),
            arguments: spec.arguments.clone(),
            config_version,
            requested_by: spec.caller.clone(),
            requested_at_ms: now,
            expires_at_ms: now
                .saturating_add(i64::try_from(gate.timeout.as_millis()).unwrap_or(i64::MAX)),
            verdict: None,
            decided_by: String::new(),
            reason: String::new(),
            decided_at_ms: 0,
            four_eyes: gate.four_eyes,
            workflow_caller: self.workflow_caller(&spec.workflow_id),
        };
        if let Err(e) = self.inner.approvals.record_request(&approval).await {
            let message = e.to_string();
            self.settle_finished(
                spec,
                call_id,
                Outcome::Unavailable,
                Some(message.clone()),
                || None,
                0,
            );
            self.inner
                .audit
                .append(AuditEvent::CallFinished {
                    workflow_id: spec.workflow_id.clone(),
                    call_id: call_id.to_owned(),
                    tool: spec.tool.clone(),
                    outcome: Outcome::Unavailable,
                    duration_us: 0,
                    error: Some(message),
                    result: None,
                })
                .await?;
            return Err(e);
        }
        {
            let mut state = self.inner.state();
            let waiting = CallStatus::WaitingApproval {
                approval_id: approval.id.clone(),
            };
            if let Some(entry) = state
                .workflows
                .get_mut(spec.workflow_id.as_str())
                .and_then(|w| w.set_status(call_id, waiting))
            {
                entry.approval_id = Some(approval.id.clone());
            }
        }
        // Listed as pending before anyone can see the request in the log, so that it can be decided at once.
        let decisions = self.inner.approvals.open(approval.clone());
        self.inner
            .audit
            .append(AuditEvent::ApprovalRequested {
                workflow_id: approval.workflow_id.clone(),
                call_id: call_id.to_owned(),
                tool: approval.tool.clone(),
                approval_id: approval.id.clone(),
                gate: approval.gate.clone(),
                arguments_digest: approval.arguments_digest.clone(),
                expires_at_ms: approval.expires_at_ms,
                four_eyes: approval.four_eyes,
            })
            .await?;
        Ok((approval, decisions))
    }

    /// Waits, holding no lock, for a person's decision or the deadline; records the decision durably and
    /// confirms it to the approver.
    pub(super) async fn await_approval(
        &self,
        mut approval: Approval,
        decisions: oneshot::Receiver<DecisionRequest>,
    ) -> Result<Approval, Error> {
        let remaining =
            Duration::from_millis(u64::try_from(approval.expires_at_ms - now_ms()).unwrap_or(0));
        let waited = tokio::select! {
            waited = tokio::time::timeout(remaining, decisions) => waited,
            () = self.inner.shutdown.cancelled() => {
                self.inner.approvals.forget(&approval.id);
                return Err(Error::ShuttingDown);
            }
        };
        let (request, reply) = match waited {
            Ok(Ok(DecisionRequest {
                verdict,
                approver,
                reason,
                reply,
            })) => ((verdict, approver, reason), Some(reply)),
            Ok(Err(_)) => (
                (
                    ApprovalVerdict::Expired,
                    "system".to_owned(),
                    "the approval was withdrawn".to_owned(),
                ),
                None,
            ),
            Err(_) => {
                let waited = humantime::format_duration(Duration::from_secs(
                    u64::try_from((approval.expires_at_ms - approval.requested_at_ms) / 1000)
                        .unwrap_or(0),
                ));
                (
                    (
                        ApprovalVerdict::Expired,
                        "system:timeout".to_owned(),
                        format!("no decision within {waited}"),
                    ),
                    None,
                )
            }
        };
        let (verdict, approver, reason) = request;
        let now = now_ms();
        approval.verdict = Some(verdict);
        approval.decided_by = approver;
        approval.reason = reason;
        approval.decided_at_ms = now;
        let recorded = self.record_decision(&approval, now).await;
        self.inner.approvals.close(approval.clone());
        let outcome = recorded.map(|()| approval.clone());
        if let Some(reply) = reply {
            let _ = reply.send(match &outcome {
                Ok(a) => Ok(a.clone()),
                Err(e) => Err(Error::InvalidArgument(e.to_string())),
            });
        }
        outcome
    }

    async fn record_decision(&self, approval: &Approval, now: i64) -> Result<(), Error> {
        if let Err(e) = self.inner.approvals.record_decision(approval).await {
            tracing::warn!(approval = %approval.id, error = %e, "the approval ledger did not take the decision; the audit log has it");
        }
        let verdict = approval.verdict.unwrap_or(ApprovalVerdict::Expired);
        self.inner
            .audit
            .append(AuditEvent::ApprovalDecided {
                workflow_id: approval.workflow_id.clone(),
                call_id: approval.call_id.clone(),
                approval_id: approval.id.clone(),
                verdict,
                approver: approval.decided_by.clone(),
                reason: approval.reason.clone(),
                waited_ms: u64::try_from(now - approval.requested_at_ms).unwrap_or(0),
            })
            .await?;
        Ok(())
    }
}

pub(super) fn approval_violation(approval: &Approval) -> Violation {
    let (message, hint) = match approval.verdict {
        Some(ApprovalVerdict::Denied) => (
            format!(
                "{} was denied by {}{}",
                approval.tool,
                approval.decided_by,
                reason_suffix(&approval.reason)
            ),
            "do not retry this call unchanged; ask the approver what to change".to_owned(),
        ),
        _ => (
            format!(
                "{} was not approved in time ({}){}",
                approval.tool,
                approval.decided_by,
                reason_suffix(&approval.reason)
            ),
            format!(
                "call it again and have someone run `conductorctl approve <id>` before the gate's time-out (gate {})",
                approval.gate
            ),
        ),
    };
    Violation {
        rule_id: approval.gate.clone(),
        rule_kind: RuleKind::Approval,
        tool: approval.tool.clone(),
        message,
        unblock_hint: hint,
        required_tools: Vec::new(),
        retry_after_ms: None,
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}
