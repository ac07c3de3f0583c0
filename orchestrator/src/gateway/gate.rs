//! Approval gates on the call path: the request (ledger, audit), the wait for a person's decision
//! or the deadline, and the hand-over of a decision from the approver to the waiting call.
//!
//! The requests themselves are state (`State::approvals`, kept by the one transition); what lives
//! here is only the channel each waiting call listens on. A waiting call holds no lock: it awaits
//! its channel with a deadline. The call records the decision, then replies to the approver, so an
//! approver's acknowledgement means the decision is durable.

use super::call::CallSpec;
use super::{Gateway, now_ms};
use crate::approval::{self, Approval};
use crate::audit::{ApprovalVerdict, AuditEvent, Outcome};
use crate::error::Error;
use crate::policy;
use conductor_audit::Admit;
use std::time::Duration;
use tokio::sync::oneshot;

/// A decision on its way to the waiting call, with the channel on which the call confirms it.
pub struct DecisionRequest {
    pub verdict: ApprovalVerdict,
    pub approver: String,
    pub reason: String,
    pub reply: oneshot::Sender<Result<Approval, Error>>,
}

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
            why: String::new(),
        };
        if let Err(e) = self.inner.ledger.record_request(&approval).await {
            self.end_unrun(spec, call_id, Outcome::Unavailable, e.to_string())
                .await;
            return Err(e);
        }
        // Listening before anyone can see the request, so that it can be decided at once.
        let decisions = self.wait_for_decision(&approval.id);
        let requested = AuditEvent::ApprovalRequested {
            workflow_id: approval.workflow_id.clone(),
            call_id: call_id.to_owned(),
            tool: approval.tool.clone(),
            approval_id: approval.id.clone(),
            gate: approval.gate.clone(),
            arguments_digest: approval.arguments_digest.clone(),
            expires_at_ms: approval.expires_at_ms,
            four_eyes: approval.four_eyes,
            trace: crate::telemetry::propagation::trace_ref(),
        };
        if let Err(e) = self.inner.record(requested, Admit::Intent).await {
            self.inner.waiters().remove(&approval.id);
            return Err(self.not_recorded(spec, call_id, e).await);
        }
        Ok((self.as_recorded(approval), decisions))
    }

    /// The request as the state holds it after its record was applied (its times are the record's).
    fn as_recorded(&self, approval: Approval) -> Approval {
        self.inner
            .state()
            .approvals
            .get(&approval.id)
            .cloned()
            .unwrap_or(approval)
    }

    /// The channel on which a person's decision on `approval_id` will arrive.
    pub(super) fn wait_for_decision(
        &self,
        approval_id: &str,
    ) -> oneshot::Receiver<DecisionRequest> {
        let (tx, rx) = oneshot::channel();
        self.inner.waiters().insert(approval_id.to_owned(), tx);
        rx
    }

    /// Waits, holding no lock, for a person's decision or the deadline; records the decision durably and
    /// confirms it to the approver.
    pub(super) async fn await_approval(
        &self,
        approval: Approval,
        decisions: oneshot::Receiver<DecisionRequest>,
        abandoned: &tokio_util::sync::CancellationToken,
    ) -> Result<Approval, Error> {
        let remaining =
            Duration::from_millis(u64::try_from(approval.expires_at_ms - now_ms()).unwrap_or(0));
        let waited = tokio::select! {
            waited = tokio::time::timeout(remaining, decisions) => Some(waited),
            () = self.inner.shutdown.cancelled() => {
                self.inner.waiters().remove(&approval.id);
                return Err(Error::ShuttingDown);
            }
            () = abandoned.cancelled() => None,
        };
        self.inner.waiters().remove(&approval.id);
        let (verdict, approver, reason, reply) = match waited {
            None => {
                tracing::info!(approval = %approval.id, "a request for approval was withdrawn: its caller cancelled or left");
                (
                    ApprovalVerdict::Expired,
                    "system:withdrawn".to_owned(),
                    "withdrawn: the caller cancelled the request, or went away, while it waited for a decision".to_owned(),
                    None,
                )
            }
            Some(Ok(Ok(DecisionRequest {
                verdict,
                approver,
                reason,
                reply,
            }))) => (verdict, approver, reason, Some(reply)),
            Some(Ok(Err(_))) => (
                ApprovalVerdict::Expired,
                "system".to_owned(),
                "the approval was withdrawn".to_owned(),
                None,
            ),
            Some(Err(_)) => {
                let waited = humantime::format_duration(Duration::from_secs(
                    u64::try_from((approval.expires_at_ms - approval.requested_at_ms) / 1000)
                        .unwrap_or(0),
                ));
                (
                    ApprovalVerdict::Expired,
                    "system:timeout".to_owned(),
                    format!("no decision within {waited}"),
                    None,
                )
            }
        };
        let decided = AuditEvent::ApprovalDecided {
            workflow_id: approval.workflow_id.clone(),
            call_id: approval.call_id.clone(),
            approval_id: approval.id.clone(),
            verdict,
            approver,
            reason,
            waited_ms: u64::try_from(now_ms() - approval.requested_at_ms).unwrap_or(0),
        };
        let recorded = self.inner.record(decided, Admit::Outcome).await;
        let decided = self.as_recorded(approval);
        if let Err(e) = self.inner.ledger.record_decision(&decided).await {
            tracing::warn!(approval = %decided.id, error = %e, "the approval ledger did not take the decision; the audit log has it");
        }
        let outcome = recorded.map(|_| decided);
        if let Some(reply) = reply {
            let _ = reply.send(match &outcome {
                Ok(a) => Ok(a.clone()),
                Err(e) => Err(Error::Unavailable {
                    server: "audit log".into(),
                    message: e.to_string(),
                }),
            });
        }
        outcome
    }

    /// Hands a decision to the waiting call and waits until the call has recorded it. An approval names
    /// the digest of the arguments it releases (when given, it must match) and, under four eyes, cannot
    /// come from the caller who started the workflow. It is single-use: the first decision wins.
    pub(super) async fn hand_over_decision(
        &self,
        id: &str,
        verdict: ApprovalVerdict,
        approver: &str,
        reason: &str,
        digest: Option<&str>,
    ) -> Result<Approval, Error> {
        if approver.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "every decision names its approver: set approver (conductorctl --as NAME)".into(),
            ));
        }
        {
            let state = self.inner.state();
            match state.approvals.pending.get(id) {
                Some(approval) => {
                    if let Some(digest) = digest.filter(|d| !d.is_empty())
                        && digest != approval.arguments_digest
                    {
                        return Err(Error::ApprovalMismatch(format!(
                            "approval {id} is for arguments with digest {}, not {digest}: the call's arguments differ from what was reviewed; look again with `conductorctl pending`",
                            approval.arguments_digest
                        )));
                    }
                    if verdict == ApprovalVerdict::Approved
                        && let Some(refusal) = approval.four_eyes_refusal(approver)
                    {
                        return Err(Error::PermissionDenied(refusal));
                    }
                }
                None => {
                    return Err(match state.approvals.get(id) {
                        Some(done) => Error::ApprovalDecided {
                            id: id.to_owned(),
                            state: done.describe(),
                        },
                        None => Error::ApprovalNotFound(id.to_owned()),
                    });
                }
            }
        }
        if let Some(active) = self.inner.audit.standby() {
            // The call waits on the active node, which records the decision: say where it is,
            // not that "someone else" decides (this node has no waiter).
            return Err(Error::Audit(conductor_audit::AuditError::Standby(active)));
        }
        let Some(sender) = self.inner.waiters().remove(id) else {
            return Err(Error::ApprovalDecided {
                id: id.to_owned(),
                state: "being decided by someone else".into(),
            });
        };
        let (reply, confirmed) = oneshot::channel();
        let request = DecisionRequest {
            verdict,
            approver: approver.to_owned(),
            reason: reason.to_owned(),
            reply,
        };
        if sender.send(request).is_err() {
            return Err(Error::ApprovalDecided {
                id: id.to_owned(),
                state: "expired".into(),
            });
        }
        confirmed.await.map_err(|_| Error::ShuttingDown)?
    }

    pub(super) fn step_name(&self, workflow_id: &str, index: usize) -> Option<String> {
        let state = self.inner.state();
        let workflow = state.workflows.get(workflow_id)?;
        workflow
            .template
            .as_ref()?
            .steps
            .get(index)
            .map(|s| s.name.clone())
    }
}
