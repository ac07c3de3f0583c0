//! The orchestrator's state and its one transition, [`State::apply`].
//!
//! Every change to the state is an [`AuditEvent`] applied here: the live path decides, builds the
//! event, applies it and queues it for the log under one short lock; start-up applies every record
//! of the log in order. There is no second copy of the transitions, so the state rebuilt from the
//! log is the state that was live. `apply` reads no clock (the time is the record's) and does no
//! I/O, so a second process following the log would build the same state.
//!
//! The read models the fronts ask for often (the dashboard's counters, the recent workflows, the
//! pending approvals) are kept up to date here too, so reading them never sorts or scans under the
//! lock.
//!
//! The live state runs ahead of the log by the records queued and not yet durable (a crash takes
//! those back). So that views can say so, `apply` numbers what it applies: the log's seqs start at
//! 1 and have no gaps, and every record is applied once and in its order, live and on replay, so
//! the n-th event applied is the record of seq n. Each workflow and each call keeps the seq of the
//! record that last changed it; a view compares that with the log's durable watermark.

use crate::approval::Approval;
use crate::config::Config;
use crate::events::{ApprovalVerdict, AuditEvent, DecisionKind, Outcome, Payload, WorkflowEnd};
use crate::policy::{self, Buckets, Map, Name, RunningCall, RunningCalls};
use crate::workflow::{CallEntry, CallStatus, Calls, Workflow, WorkflowState};
use serde_json::Value;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

pub mod history;
mod observe;
mod read;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;

pub use observe::{Observed, ObservedWorkflow};
pub use read::{ApprovalBook, Counters};

/// How many finished workflows stay in memory for `workflow`, `workflows` and the dashboard.
pub const FINISHED_KEPT: usize = 10_000;

/// How many decided approvals stay listed in memory (the audit log keeps them all).
pub const DECIDED_KEPT: usize = 1024;

const DAY_MS: i64 = 86_400_000;

/// A call that was decided and has not ended: what start-up does with it.
#[derive(Debug, Clone, PartialEq)]
pub enum Unfinished {
    /// It waits for a person's decision: the wait resumes.
    Waiting(Box<Approval>),
    /// It was running (or between its approval and its run): its effect is unknown.
    Interrupted {
        workflow_id: Name,
        call_id: Name,
        tool: Name,
    },
}

/// A gated call, between its decision and its approval request.
#[derive(Debug, Clone)]
struct Gated {
    arguments: Value,
    caller: String,
    why: String,
}

/// Everything the orchestrator knows, as applying the log gives it.
#[derive(Debug)]
pub struct State {
    pub workflows: Map<Name, Workflow>,
    pub running: RunningCalls,
    /// Orchestrator-wide rate limits.
    pub buckets: Buckets,
    pub approvals: ApprovalBook,
    pub counters: Counters,
    /// The configuration workflows started from now on run under.
    config: Arc<Config>,
    /// Finished workflows, oldest first: only the newest [`FINISHED_KEPT`] stay in memory.
    finished: VecDeque<Name>,
    /// Workflows running or waiting, by start.
    active: BTreeSet<(i64, Name)>,
    /// Calls decided to run or to wait that have not ended: call id → workflow id.
    open_calls: Map<Name, Name>,
    gated: Map<Name, Gated>,
    /// The seq of the last record applied (see the module's header).
    seq: u64,
    /// The newest running ad-hoc workflow of each caller (as recorded with the workflow): where a
    /// session-free client's call without a handle goes.
    ad_hoc_by_caller: Map<String, Name>,
    /// The labels each identity's calls brought in, each with its latest call: what follows a
    /// caller across its sessions and workflows under `flow_scope` `caller`.
    caller_labels: Map<String, policy::RecentLabels>,
    /// The running workflows of each caller (as recorded with the workflow): one agent context
    /// where the caller names one (an MCP session, or a session-free identity and client).
    running_by_caller: Map<String, Vec<Name>>,
    /// Every call of every workflow stays in memory (a fold for one view), whatever the
    /// configuration's window.
    every_call: bool,
}

impl State {
    pub fn new(config: Arc<Config>) -> Self {
        State {
            workflows: Map::default(),
            running: RunningCalls::default(),
            buckets: Buckets::default(),
            approvals: ApprovalBook::default(),
            counters: Counters::default(),
            config,
            finished: VecDeque::new(),
            active: BTreeSet::new(),
            open_calls: Map::default(),
            gated: Map::default(),
            seq: 0,
            ad_hoc_by_caller: Map::default(),
            caller_labels: Map::default(),
            running_by_caller: Map::default(),
            every_call: false,
        }
    }

    /// A state that keeps every call of its workflows in memory: for folding one workflow's
    /// records back into its whole history (see [`history`]), never for the live state.
    fn keeping_every_call(config: Arc<Config>) -> Self {
        State {
            every_call: true,
            ..State::new(config)
        }
    }

    /// The labels the other running workflows of exactly `caller` have seen (those of `except`
    /// left out), each naming the call and the workflow that brought it in; `None` when there are
    /// none.
    pub fn context_labels(&self, caller: &str, except: &str) -> Option<policy::LabelSet> {
        let mut labels = policy::LabelSet::default();
        for id in self.running_by_caller.get(caller)? {
            if &**id == except {
                continue;
            }
            if let Some(workflow) = self.workflows.get(id) {
                labels.carry(&workflow.history.labels, &workflow.id);
            }
        }
        (!labels.is_empty()).then_some(labels)
    }

    /// The newest running ad-hoc workflow started by exactly `caller`, if any.
    pub fn current_ad_hoc(&self, caller: &str) -> Option<&Workflow> {
        let id = self.ad_hoc_by_caller.get(caller)?;
        self.workflows
            .get(id)
            .filter(|w| !w.state.is_finished() && w.template.is_none())
    }

    /// The labels `identity`'s calls brought in at or after `since_ms`, each with its latest call
    /// (and that call's workflow).
    pub fn caller_labels(&self, identity: &str, since_ms: i64) -> Option<policy::LabelSet> {
        let labels = self.caller_labels.get(identity)?.since(since_ms);
        (!labels.is_empty()).then_some(labels)
    }

    /// Every identity's labels with their latest calls, by identity (for comparing states).
    pub fn caller_labels_sorted(
        &self,
    ) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, policy::LabelOrigin>>
    {
        self.caller_labels
            .iter()
            .map(|(identity, labels)| (identity.clone(), labels.sorted()))
            .collect()
    }

    /// The seq of the record applied last: with the log's durable watermark, how far the state runs
    /// ahead of what a crash would keep.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The configuration new workflows start under.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Workflows started from now on run under `config` (a reload); running ones keep theirs.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    /// The one transition: applies one event, recorded at `at_ms`. Records about workflows or calls
    /// it does not know (forgotten as too old, or from a damaged log) change nothing.
    ///
    /// Each event applied is the record of the next seq (see the module's header); what it changes
    /// keeps that seq.
    pub fn apply<J: Payload>(&mut self, at_ms: i64, event: &AuditEvent<J>) {
        self.seq += 1;
        let seq = self.seq;
        match event {
            AuditEvent::WorkflowStarted {
                workflow_id,
                template,
                input,
                caller,
                labels,
                ..
            } => {
                let template = template
                    .as_deref()
                    .and_then(|t| self.config.template(t))
                    .cloned();
                let id: Name = workflow_id.as_str().into();
                let mut workflow = Workflow::new(
                    id.clone(),
                    template,
                    self.config.clone(),
                    caller.clone(),
                    input.to_value(),
                    at_ms,
                );
                workflow.seq = seq;
                workflow.started_seq = seq;
                if self.every_call {
                    workflow.calls = Calls::new(usize::MAX);
                }
                for (label, origin) in labels {
                    workflow
                        .history
                        .labels
                        .bring_one(label.as_str().into(), origin.clone());
                }
                if workflow.template.is_none() {
                    self.ad_hoc_by_caller.insert(caller.clone(), id.clone());
                }
                let running = self.running_by_caller.entry(caller.clone()).or_default();
                if !running.contains(&id) {
                    running.push(id.clone());
                }
                if let Some(old) = self.workflows.insert(id.clone(), workflow) {
                    self.active.remove(&(old.started_at_ms, id.clone()));
                }
                self.active.insert((at_ms, id));
                self.counters.active = self.active.len() as u32;
            }
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
                labels,
                conditions,
                gate_reason,
                trace,
                ..
            } => self.decided(
                at_ms,
                seq,
                Decided {
                    workflow_id,
                    call_id,
                    tool,
                    step,
                    decision: *decision,
                    violations,
                    gate,
                    labels,
                    conditions,
                    trace: trace.as_ref(),
                },
                || Gated {
                    arguments: arguments.to_value(),
                    caller: caller.clone(),
                    why: gate_reason.clone().unwrap_or_default(),
                },
            ),
            AuditEvent::ApprovalRequested {
                workflow_id,
                call_id,
                tool,
                approval_id,
                gate,
                arguments_digest,
                expires_at_ms,
                four_eyes,
                trace: _,
            } => {
                let gated = self.gated.remove(call_id.as_str());
                let Some(workflow) = self.workflows.get_mut(workflow_id.as_str()) else {
                    return;
                };
                let step = workflow
                    .call_mut(call_id)
                    .and_then(|entry| entry.step.clone());
                let (arguments, requested_by, why) = gated
                    .map_or((Value::Null, String::new(), String::new()), |g| {
                        (g.arguments, g.caller, g.why)
                    });
                let approval = Approval {
                    id: approval_id.clone(),
                    workflow_id: workflow_id.clone(),
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    step,
                    gate: gate.clone(),
                    arguments,
                    arguments_digest: arguments_digest.clone(),
                    config_version: workflow.config.version.clone(),
                    requested_by,
                    requested_at_ms: at_ms,
                    expires_at_ms: *expires_at_ms,
                    verdict: None,
                    decided_by: String::new(),
                    reason: String::new(),
                    decided_at_ms: 0,
                    four_eyes: *four_eyes,
                    workflow_caller: workflow.caller.clone(),
                    why,
                };
                let waiting = CallStatus::WaitingApproval {
                    approval_id: approval_id.clone(),
                };
                if let Some(entry) = workflow.set_status(call_id, waiting) {
                    entry.approval_id = Some(approval_id.clone());
                    entry.seq = seq;
                }
                workflow.seq = seq;
                workflow.refresh_state();
                self.approvals.pending.insert(approval_id.clone(), approval);
            }
            AuditEvent::ApprovalDecided {
                workflow_id,
                call_id,
                approval_id,
                verdict,
                approver,
                reason,
                ..
            } => {
                let Some(mut approval) = self.approvals.pending.remove(approval_id.as_str()) else {
                    return;
                };
                approval.verdict = Some(*verdict);
                approval.decided_by = approver.clone();
                approval.reason = reason.clone();
                approval.decided_at_ms = at_ms;
                if *verdict != ApprovalVerdict::Approved {
                    let refusal = approval.refusal();
                    self.counters.violations += 1;
                    self.open_calls.remove(call_id.as_str());
                    if let Some(workflow) = self.workflows.get_mut(workflow_id.as_str()) {
                        workflow.violations += 1;
                        let denied = CallStatus::Denied {
                            violations: vec![refusal],
                        };
                        if let Some(entry) = workflow.set_status(call_id, denied) {
                            entry.seq = seq;
                        }
                        workflow.seq = seq;
                        workflow.refresh_state();
                    }
                }
                self.approvals.decided.push_back(approval);
                while self.approvals.decided.len() > DECIDED_KEPT {
                    self.approvals.decided.pop_front();
                }
            }
            AuditEvent::CallFinished {
                workflow_id,
                call_id,
                tool,
                outcome,
                duration_us,
                error,
                result,
                details,
                trace: _,
            } => {
                self.running.remove(tool, call_id);
                self.open_calls.remove(call_id.as_str());
                self.gated.remove(call_id.as_str());
                let Some(workflow) = self.workflows.get_mut(workflow_id.as_str()) else {
                    return;
                };
                workflow.last_activity_ms = at_ms;
                workflow.seq = seq;
                // A call that ends while its approval is pending (it could not be recorded) takes
                // the request with it.
                if let Some(approval_id) = workflow
                    .call_mut(call_id)
                    .and_then(|entry| entry.approval_id.clone())
                {
                    self.approvals.pending.remove(&approval_id);
                }
                if let Some(entry) = workflow.call_mut(call_id) {
                    entry.details = details.as_ref().map(Payload::to_value);
                    entry.seq = seq;
                }
                finish_call(
                    workflow,
                    call_id,
                    *outcome,
                    error.clone(),
                    || result.as_ref().map(Payload::to_value),
                    *duration_us,
                );
            }
            AuditEvent::WorkflowFinished {
                workflow_id,
                state,
                error,
                ..
            } => {
                let Some(workflow) = self.workflows.get_mut(workflow_id.as_str()) else {
                    return;
                };
                if workflow.state.is_finished() {
                    return;
                }
                if self.ad_hoc_by_caller.get(&workflow.caller) == Some(&workflow.id) {
                    self.ad_hoc_by_caller.remove(&workflow.caller);
                }
                if let Some(running) = self.running_by_caller.get_mut(&workflow.caller) {
                    running.retain(|id| id != &workflow.id);
                    if running.is_empty() {
                        self.running_by_caller.remove(&workflow.caller);
                    }
                }
                let state = match state {
                    WorkflowEnd::Completed => WorkflowState::Completed,
                    WorkflowEnd::Failed => WorkflowState::Failed,
                    WorkflowEnd::Cancelled => WorkflowState::Cancelled,
                };
                workflow.finish(state, error.clone(), at_ms);
                workflow.seq = seq;
                let key = (workflow.started_at_ms, workflow.id.clone());
                self.active.remove(&key);
                self.counters.active = self.active.len() as u32;
                let day = at_ms.div_euclid(DAY_MS);
                if day != self.counters.day {
                    self.counters.day = day;
                    self.counters.completed_on_day = 0;
                    self.counters.failed_on_day = 0;
                }
                if state == WorkflowState::Completed {
                    self.counters.completed_on_day += 1;
                } else {
                    self.counters.failed_on_day += 1;
                }
                self.finished.push_back(key.1);
                while self.finished.len() > FINISHED_KEPT {
                    if let Some(old) = self.finished.pop_front() {
                        self.workflows.remove(&old);
                    }
                }
            }
            AuditEvent::ConfigLoaded { .. }
            | AuditEvent::CallStarted { .. }
            | AuditEvent::ControlRefused { .. }
            | AuditEvent::Recovered { .. }
            | AuditEvent::ConfigRefused { .. }
            | AuditEvent::ServerAsked { .. } => {}
        }
    }

    fn decided(
        &mut self,
        at_ms: i64,
        seq: u64,
        record: Decided<'_>,
        gated: impl FnOnce() -> Gated,
    ) {
        let Decided {
            workflow_id,
            call_id,
            tool,
            step,
            decision,
            violations,
            gate,
            labels,
            conditions,
            trace,
        } = record;
        let Some(workflow) = self.workflows.get_mut(workflow_id) else {
            return;
        };
        workflow.last_activity_ms = at_ms;
        workflow.seq = seq;
        // The configuration's own name when it knows the tool: shared, not copied.
        let tool: Name = workflow
            .config
            .tools
            .get_key_value(tool)
            .map_or_else(|| tool.into(), |(name, _)| name.clone());
        let call_id: Name = call_id.into();
        let status = match decision {
            DecisionKind::Allow => {
                self.running.insert(
                    &tool,
                    RunningCall {
                        workflow_id: workflow.id.clone(),
                        call_id: call_id.clone(),
                    },
                );
                // A limit under a condition takes a token only from the calls it applied to, as
                // the record's condition results say.
                let limit_applied = workflow.config.policies.tool(&tool).is_none_or(|p| {
                    match (&p.limits_when, &p.limits.rule_id) {
                        (None, _) => true,
                        (Some(_), Some(rule)) => conditions
                            .iter()
                            .any(|c| *c.rule_id == **rule && c.value == Some(true)),
                        (Some(_), None) => false,
                    }
                });
                if limit_applied {
                    policy::consume(
                        &workflow.config.policies,
                        &tool,
                        &mut self.buckets,
                        &mut workflow.buckets,
                        at_ms,
                    );
                }
                if !labels.is_empty() {
                    let labels: Vec<Name> = labels.iter().map(|l| l.as_str().into()).collect();
                    let origin = policy::LabelOrigin {
                        call_id: call_id.to_string(),
                        tool: tool.to_string(),
                        at_ms,
                        workflow_id: None,
                    };
                    workflow.history.labels.bring(&labels, &origin);
                    let identity = crate::config::caller_name(&workflow.caller);
                    self.caller_labels
                        .entry(identity.to_owned())
                        .or_default()
                        .bring(&labels, &origin.from_workflow(&workflow.id));
                }
                self.open_calls.insert(call_id.clone(), workflow.id.clone());
                CallStatus::Running
            }
            DecisionKind::Deny => {
                let count = violations.len() as u32;
                workflow.violations += count;
                self.counters.violations += u64::from(count);
                self.open_calls.remove(&call_id);
                CallStatus::Denied {
                    violations: violations.to_vec(),
                }
            }
            DecisionKind::NeedsApproval => {
                self.open_calls.insert(call_id.clone(), workflow.id.clone());
                self.gated.insert(call_id.clone(), gated());
                CallStatus::WaitingApproval {
                    approval_id: String::new(),
                }
            }
        };
        workflow.record_call(CallEntry {
            call_id,
            tool,
            step: step.clone(),
            status,
            started_at_ms: at_ms,
            duration_us: 0,
            approval_id: None,
            gate: gate.clone(),
            details: None,
            seq,
            trace_id: trace.map(|t| t.trace_id.clone()),
        });
        workflow.refresh_state();
    }

    /// The calls still open when the log ends (start-up: pending approvals wait again, the rest
    /// was interrupted).
    pub fn unfinished(&self) -> Vec<Unfinished> {
        let mut out: Vec<Unfinished> = self
            .open_calls
            .iter()
            .filter_map(|(call_id, workflow_id)| {
                let workflow = self.workflows.get(workflow_id)?;
                let entry = workflow.calls.get(call_id)?;
                let pending = entry
                    .approval_id
                    .as_deref()
                    .and_then(|id| self.approvals.pending.get(id));
                Some(match pending {
                    Some(approval) => Unfinished::Waiting(Box::new(approval.clone())),
                    None => Unfinished::Interrupted {
                        workflow_id: workflow_id.clone(),
                        call_id: call_id.clone(),
                        tool: entry.tool.clone(),
                    },
                })
            })
            .collect();
        out.sort_by(|a, b| order_key(a).cmp(order_key(b)));
        out
    }

    /// Workflows running or waiting, the most recently started first.
    pub fn active(&self) -> impl Iterator<Item = &Workflow> {
        self.active
            .iter()
            .rev()
            .filter_map(|(_, id)| self.workflows.get(id))
    }

    /// Ad-hoc workflows with nothing running or waiting and no activity since `before_ms`: what
    /// ends by itself as idle.
    pub fn idle_ad_hoc(&self, before_ms: i64) -> Vec<Name> {
        self.active()
            .filter(|w| {
                w.template.is_none()
                    && w.last_activity_ms < before_ms
                    && w.waiting_calls() == 0
                    && w.calls.running() == 0
            })
            .map(|w| w.id.clone())
            .collect()
    }

    /// Finished workflows still in memory, the most recently finished first.
    pub fn finished(&self) -> impl Iterator<Item = &Workflow> {
        self.finished
            .iter()
            .rev()
            .filter_map(|id| self.workflows.get(id))
    }
}

/// A `call_decided` record's fields, as [`State::apply`] reads them.
struct Decided<'a> {
    workflow_id: &'a str,
    call_id: &'a str,
    tool: &'a str,
    step: &'a Option<String>,
    decision: DecisionKind,
    violations: &'a [policy::Violation],
    gate: &'a Option<String>,
    labels: &'a [String],
    conditions: &'a [policy::ConditionResult],
    trace: Option<&'a crate::events::TraceRef>,
}

fn order_key(unfinished: &Unfinished) -> &str {
    match unfinished {
        Unfinished::Waiting(approval) => &approval.call_id,
        Unfinished::Interrupted { call_id, .. } => call_id,
    }
}

/// Records a finished call in its workflow: status, duration, the policy history, template progress.
/// `result` is asked for only when the call is a template step whose output is kept.
fn finish_call(
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
