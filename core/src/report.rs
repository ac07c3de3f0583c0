//! The compliance report: which calls ran, which were blocked and why, which approvals were given
//! by whom. It is a fold over the same events with the same transition as the live state
//! ([`State::apply`]), so it can never tell a different story than the orchestrator lived.
//!
//! A call that ran is a call with a `call_finished` whose outcome is not `unavailable` (those were
//! decided but never reached their tool: the server or the audit log could not take them; they are
//! listed apart). Blocked: denied decisions, approval denials and expiries, each with its tool, rule
//! and reason. Counts are the lengths of the tables.

use crate::approval::Approval;
use crate::config::Config;
use crate::events::{ApprovalVerdict, AuditEvent, DecisionKind, Outcome, Payload};
use crate::policy::RuleKind;
use crate::state::State;
use crate::workflow::{CallEntry, CallStatus};
use std::sync::Arc;

/// What a report covers: records in `[since_ms, until_ms)`, of one workflow or all.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub workflow_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Scope {
    fn covers(&self, workflow_id: &str, at_ms: i64) -> bool {
        self.workflow_id.as_deref().is_none_or(|w| w == workflow_id)
            && self.since_ms.is_none_or(|t| at_ms >= t)
            && self.until_ms.is_none_or(|t| at_ms < t)
    }
}

/// A call that ran: it has a `call_finished`.
#[derive(Debug, Clone, PartialEq)]
pub struct RanCall {
    pub workflow_id: String,
    pub call_id: String,
    pub tool: String,
    pub step: Option<String>,
    pub decided_at_ms: i64,
    pub finished_at_ms: i64,
    pub outcome: Outcome,
    pub duration_us: u64,
    pub error: Option<String>,
    /// The approval that released it, and who gave it.
    pub approval_id: Option<String>,
    pub approved_by: Option<String>,
}

/// How a blocked call was blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The policy engine denied it.
    Policy,
    /// A person denied its approval.
    ApprovalDenied,
    /// Nobody decided its approval in time.
    ApprovalExpired,
}

impl Blocked {
    pub fn as_str(self) -> &'static str {
        match self {
            Blocked::Policy => "policy",
            Blocked::ApprovalDenied => "approval denied",
            Blocked::ApprovalExpired => "approval expired",
        }
    }
}

/// A call that did not run because a rule or a person blocked it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockedCall {
    pub workflow_id: String,
    pub call_id: String,
    pub tool: String,
    pub at_ms: i64,
    pub how: Blocked,
    /// The rule(s) that blocked it (an approval's gate).
    pub rules: Vec<String>,
    pub reason: String,
    /// A flow rule blocked it (its workflow had seen labels that refuse or gate the tool's).
    pub flow: bool,
}

/// The report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compliance {
    pub ran: Vec<RanCall>,
    /// Calls allowed that never reached their tool (`unavailable`: the server down, or the audit
    /// log unable to record their intent).
    pub not_run: Vec<RanCall>,
    pub blocked: Vec<BlockedCall>,
    /// Approval requests in scope, decided or pending, in the order they were decided (pending last).
    pub approvals: Vec<Approval>,
    /// What a reviewer must look at (calls without a recorded decision or approver, interrupted
    /// calls); empty when compliant.
    pub findings: Vec<String>,
}

impl Compliance {
    pub fn compliant(&self) -> bool {
        self.findings.is_empty()
    }

    /// Blocked calls that a flow rule refused or whose flow approval was not given.
    pub fn flow_refusals(&self) -> usize {
        self.blocked.iter().filter(|b| b.flow).count()
    }

    /// One line a person reads first; its counts are the tables' lengths.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} call(s) ran; {} attempt(s) were blocked by policy or by an approver and did not run; {} approval request(s)",
            self.ran.len(),
            self.blocked.len(),
            self.approvals.len()
        );
        let flows = self.flow_refusals();
        if flows > 0 {
            line.push_str(&format!(
                "; {flows} of the blocked attempts by a flow rule (labels seen earlier in the workflow)"
            ));
        }
        if !self.not_run.is_empty() {
            line.push_str(&format!(
                "; {} allowed call(s) never reached their tool (unavailable)",
                self.not_run.len()
            ));
        }
        line
    }
}

/// Builds a [`Compliance`] from records in order.
pub struct ReportFold {
    state: State,
    scope: Scope,
    report: Compliance,
}

impl ReportFold {
    pub fn new(config: Arc<Config>, scope: Scope) -> Self {
        ReportFold {
            state: State::new(config),
            scope,
            report: Compliance::default(),
        }
    }

    /// Applies one record (every record of the log, in order: the state needs them all) and
    /// harvests what it means for the report when it is in scope.
    pub fn add<J: Payload>(&mut self, at_ms: i64, event: &AuditEvent<J>) {
        self.state.apply(at_ms, event);
        let Some(workflow_id) = event.workflow_id() else {
            return;
        };
        if !self.scope.covers(workflow_id, at_ms) {
            return;
        }
        match event {
            AuditEvent::CallDecided {
                call_id,
                decision: DecisionKind::Deny,
                violations,
                tool,
                ..
            } => self.report.blocked.push(BlockedCall {
                workflow_id: workflow_id.to_owned(),
                call_id: call_id.clone(),
                tool: tool.clone(),
                at_ms,
                how: Blocked::Policy,
                rules: violations.iter().map(|v| v.rule_id.clone()).collect(),
                flow: violations.iter().any(|v| v.rule_kind == RuleKind::Flow),
                reason: violations
                    .iter()
                    .map(|v| v.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
            AuditEvent::ApprovalDecided {
                approval_id,
                verdict,
                ..
            } => {
                let Some(approval) = self.state.approvals.get(approval_id).cloned() else {
                    return;
                };
                if *verdict != ApprovalVerdict::Approved {
                    let flow = self.state.workflows.get(workflow_id).is_some_and(|w| {
                        w.config
                            .policies
                            .flows()
                            .iter()
                            .any(|f| *f.id == *approval.gate)
                    });
                    self.report.blocked.push(BlockedCall {
                        workflow_id: workflow_id.to_owned(),
                        call_id: approval.call_id.clone(),
                        tool: approval.tool.clone(),
                        at_ms,
                        how: if *verdict == ApprovalVerdict::Denied {
                            Blocked::ApprovalDenied
                        } else {
                            Blocked::ApprovalExpired
                        },
                        rules: vec![approval.gate.clone()],
                        reason: approval.refusal().message,
                        flow,
                    });
                }
                self.report.approvals.push(approval);
            }
            AuditEvent::CallFinished {
                call_id,
                tool,
                outcome,
                duration_us,
                error,
                ..
            } => {
                let entry = self.entry(workflow_id, call_id);
                let approval = entry
                    .as_ref()
                    .and_then(|e| e.approval_id.as_deref())
                    .and_then(|id| self.state.approvals.get(id));
                let approved_by = approval.map(|a| a.decided_by.clone());
                match &entry {
                    None => self.report.findings.push(format!(
                        "call {call_id} of {tool} finished without a decision in the log"
                    )),
                    Some(e) if e.gate.is_some() && approved_by.as_deref().is_none_or(str::is_empty) => {
                        self.report.findings.push(format!(
                            "call {call_id} of {tool} went through an approval gate without a named approver"
                        ))
                    }
                    Some(_) => {}
                }
                if *outcome == Outcome::Interrupted {
                    self.report.findings.push(format!(
                        "call {call_id} of {tool} was interrupted by a restart; its effect is unknown"
                    ));
                }
                let rows = if *outcome == Outcome::Unavailable {
                    &mut self.report.not_run
                } else {
                    &mut self.report.ran
                };
                rows.push(RanCall {
                    workflow_id: workflow_id.to_owned(),
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    step: entry.as_ref().and_then(|e| e.step.clone()),
                    decided_at_ms: entry.as_ref().map_or(at_ms, |e| e.started_at_ms),
                    finished_at_ms: at_ms,
                    outcome: *outcome,
                    duration_us: *duration_us,
                    error: error.clone(),
                    approval_id: entry.and_then(|e| e.approval_id),
                    approved_by,
                });
            }
            _ => {}
        }
    }

    fn entry(&mut self, workflow_id: &str, call_id: &str) -> Option<CallEntry> {
        let entry = self
            .state
            .workflows
            .get_mut(workflow_id)?
            .call_mut(call_id)?
            .clone();
        matches!(entry.status, CallStatus::Finished { .. }).then_some(entry)
    }

    /// The report, with the approvals still pending in scope.
    pub fn finish(mut self) -> Compliance {
        let pending: Vec<Approval> = self
            .state
            .approvals
            .pending
            .values()
            .filter(|a| self.scope.covers(&a.workflow_id, a.requested_at_ms))
            .cloned()
            .collect();
        self.report.approvals.extend(pending);
        self.report
    }
}

#[cfg(test)]
mod tests;
