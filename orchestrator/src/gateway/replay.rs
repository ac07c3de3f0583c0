//! Rebuilds the gateway's state from the audit log on start, and applies finished calls to a workflow
//! (the same function serves live calls and replay, so the two can never disagree).

use super::State;
use crate::approval::Approval;
use crate::audit::{ApprovalVerdict, DecisionKind, Outcome, ReplayEvent, WorkflowEnd, parse_raw};
use crate::config::Config;
use crate::policy::Map;
use crate::workflow::{CallEntry, CallStatus, Workflow, WorkflowState};
use conductor_audit::Record;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// A call found in flight or waiting when the log ends.
pub(crate) struct Unfinished {
    pub workflow_id: String,
    pub call_id: String,
    pub tool: String,
    pub step: Option<String>,
    /// As written; parsed by [`Unfinished::arguments`] for the few calls that need it.
    pub arguments: Box<RawValue>,
    pub caller: String,
    /// The approval it waits for, if it waits for one.
    pub approval: Option<Approval>,
}

impl Unfinished {
    pub fn arguments(&self) -> Value {
        parse_raw(&self.arguments)
    }
}

/// Replays records in order into `state`, tracking what is still unfinished at the end.
pub(crate) struct Replayer<'a> {
    pub state: &'a mut State,
    pub config: &'a Arc<Config>,
    pub unfinished: Map<String, Unfinished>,
}

impl Replayer<'_> {
    /// Applies one record, taking its fields (a million of them at start-up: nothing is copied
    /// that can be moved).
    pub fn apply(&mut self, record: Record<ReplayEvent>) {
        let at = record.ts_ms;
        match record.event {
            ReplayEvent::WorkflowStarted {
                workflow_id,
                template,
                input,
                caller,
                ..
            } => {
                let template = template
                    .as_deref()
                    .and_then(|t| self.config.template(t))
                    .cloned();
                let workflow = Workflow::new(
                    workflow_id.as_str().into(),
                    template,
                    self.config.clone(),
                    caller,
                    input,
                    at,
                );
                self.state.workflows.insert(workflow.id.clone(), workflow);
            }
            ReplayEvent::CallDecided {
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
            } => {
                let Some(workflow) = self.state.workflows.get_mut(workflow_id.as_str()) else {
                    return;
                };
                let status = match decision {
                    DecisionKind::Allow => CallStatus::Running,
                    DecisionKind::Deny => {
                        workflow.violations += violations.len() as u32;
                        CallStatus::Denied { violations }
                    }
                    DecisionKind::NeedsApproval => CallStatus::WaitingApproval {
                        approval_id: String::new(),
                    },
                };
                let finished = matches!(status, CallStatus::Denied { .. });
                workflow.record_call(CallEntry {
                    call_id: call_id.as_str().into(),
                    // The configuration's own name when it knows the tool: shared, not copied.
                    tool: self
                        .config
                        .tools
                        .get_key_value(tool.as_str())
                        .map_or_else(|| tool.as_str().into(), |(name, _)| name.clone()),
                    step: step.clone(),
                    status,
                    started_at_ms: at,
                    duration_us: 0,
                    approval_id: None,
                    gate,
                });
                workflow.refresh_state();
                if finished {
                    self.unfinished.remove(&call_id);
                } else {
                    let entry = self
                        .unfinished
                        .entry(call_id)
                        .or_insert_with_key(|call_id| Unfinished {
                            workflow_id,
                            call_id: call_id.clone(),
                            tool,
                            step,
                            arguments,
                            caller,
                            approval: None,
                        });
                    if decision == DecisionKind::Allow {
                        entry.approval = None;
                    }
                }
            }
            ReplayEvent::ApprovalRequested {
                workflow_id,
                call_id,
                approval_id,
                gate,
                arguments_digest,
                expires_at_ms,
                tool,
                four_eyes,
            } => {
                let Some(unfinished) = self.unfinished.get_mut(&call_id) else {
                    return;
                };
                let workflow = self.state.workflows.get(workflow_id.as_str());
                let config_version = workflow
                    .map(|w| w.config.version.clone())
                    .unwrap_or_default();
                let workflow_caller = workflow.map(|w| w.caller.clone()).unwrap_or_default();
                unfinished.approval = Some(Approval {
                    id: approval_id.clone(),
                    workflow_id: workflow_id.clone(),
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    step: unfinished.step.clone(),
                    gate: gate.clone(),
                    arguments: unfinished.arguments(),
                    arguments_digest: arguments_digest.clone(),
                    config_version,
                    requested_by: unfinished.caller.clone(),
                    requested_at_ms: at,
                    expires_at_ms,
                    verdict: None,
                    decided_by: String::new(),
                    reason: String::new(),
                    decided_at_ms: 0,
                    four_eyes,
                    workflow_caller,
                });
                let waiting = CallStatus::WaitingApproval {
                    approval_id: approval_id.clone(),
                };
                if let Some(entry) = self
                    .state
                    .workflows
                    .get_mut(workflow_id.as_str())
                    .and_then(|w| w.set_status(&call_id, waiting))
                {
                    entry.approval_id = Some(approval_id.clone());
                }
            }
            ReplayEvent::ApprovalDecided {
                workflow_id,
                call_id,
                verdict,
                ..
            } => {
                if let Some(unfinished) = self.unfinished.get_mut(&call_id) {
                    unfinished.approval = None;
                }
                if verdict != ApprovalVerdict::Approved {
                    self.unfinished.remove(&call_id);
                    if let Some(workflow) = self.state.workflows.get_mut(workflow_id.as_str()) {
                        workflow.violations += 1;
                        workflow.set_status(
                            &call_id,
                            CallStatus::Denied {
                                violations: Vec::new(),
                            },
                        );
                        workflow.refresh_state();
                    }
                }
            }
            ReplayEvent::CallFinished {
                workflow_id,
                call_id,
                outcome,
                error,
                result,
                duration_us,
                ..
            } => {
                self.unfinished.remove(&call_id);
                if let Some(workflow) = self.state.workflows.get_mut(workflow_id.as_str()) {
                    let result = || result.as_deref().map(parse_raw);
                    apply_finished(workflow, &call_id, outcome, error, result, duration_us);
                }
            }
            ReplayEvent::WorkflowFinished {
                workflow_id,
                state,
                error,
                ..
            } => {
                if let Some(workflow) = self.state.workflows.get_mut(workflow_id.as_str()) {
                    let state = match state {
                        WorkflowEnd::Completed => WorkflowState::Completed,
                        WorkflowEnd::Failed => WorkflowState::Failed,
                        WorkflowEnd::Cancelled => WorkflowState::Cancelled,
                    };
                    workflow.finish(state, error, at);
                }
            }
            ReplayEvent::ConfigLoaded { .. }
            | ReplayEvent::CallStarted { .. }
            | ReplayEvent::ControlRefused { .. } => {}
        }
    }
}

/// Records a finished call in its workflow: status, duration, the policy history, template progress.
/// `result` is asked for only when the call is a template step whose output is kept.
pub(crate) fn apply_finished(
    workflow: &mut Workflow,
    call_id: &str,
    outcome: Outcome,
    error: Option<String>,
    result: impl FnOnce() -> Option<Value>,
    duration_us: u64,
) {
    let Some(entry) = workflow.set_status(call_id, CallStatus::Finished { outcome, error }) else {
        return;
    };
    entry.duration_us = duration_us;
    let tool = entry.tool.clone();
    let step = entry.step.clone();
    match outcome {
        Outcome::Succeeded => workflow.history.record(&tool, true),
        Outcome::Failed => workflow.history.record(&tool, false),
        Outcome::Unavailable | Outcome::Interrupted => {}
    }
    if let (Outcome::Succeeded, Some(step), Some(template)) =
        (outcome, step, workflow.template.clone())
        && template
            .steps
            .get(workflow.steps_done)
            .is_some_and(|s| s.name == step)
    {
        workflow
            .outputs
            .insert(step, result().unwrap_or(Value::Null));
        workflow.steps_done += 1;
    }
    workflow.refresh_state();
}
