//! Read-only views of the state for the fronts: a workflow with its history and outlook, workflow
//! lists, and the dashboard's status snapshot. Each is copied out under one short lock.
//!
//! The live state runs ahead of the audit log by the records queued and not yet durable: a few
//! microseconds' worth normally, everything since the disk failed during an outage. A crash takes
//! those changes back (a call shown `succeeded` comes back `interrupted`), so a view never presents
//! them as settled: every workflow and call carries the seq of the record that last changed it
//! (numbered by `State::apply`, the one transition), and a view marks those above the log's
//! durable watermark as not yet durable. This was chosen over a second state advanced by the
//! writer's acknowledgements: that would apply every record twice and hold every workflow twice,
//! while this costs the call path nothing (two integers stored by `apply`) and reads the watermark
//! only when a view is asked for.

use super::{Gateway, now_ms};
use crate::error::Error;
use crate::metrics::{RuleStats, ToolStats};
use crate::workflow::{CallEntry, Workflow, WorkflowState};
use conductor_core::state::history::HistoryFold;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A copy of a workflow for display, taken under the lock.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    pub id: String,
    pub template: Option<String>,
    pub state: WorkflowState,
    pub steps_done: usize,
    pub steps_total: usize,
    pub next_step: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: u64,
    pub caller: String,
    pub error: Option<String>,
    pub config_version: String,
    pub violations: u32,
    /// The call history, when asked for.
    pub calls: Option<Vec<CallEntry>>,
    pub outputs: Option<Map<String, Value>>,
    /// What the engine would decide now for each tool the workflow may call, when asked for.
    pub outlook: Option<Vec<Outlook>>,
    /// The seq of the audit record that last changed the workflow.
    pub seq: u64,
    /// The log's durable watermark when the view was taken: changes whose record seq is above it
    /// are not durable yet. `u64::MAX` (nothing marked) for a view taken after its change was
    /// made durable, such as the answer to a start.
    pub durable_seq: u64,
}

/// What the engine would decide now for one tool: so a person or an agent sees the next allowed steps.
#[derive(Debug, Clone)]
pub struct Outlook {
    pub tool: String,
    pub decision: crate::audit::DecisionKind,
    pub hint: String,
}

impl WorkflowView {
    pub(crate) fn of(workflow: &Workflow, with_history: bool, now: i64) -> Self {
        WorkflowView {
            id: workflow.id.to_string(),
            template: workflow.template.as_ref().map(|t| t.name.clone()),
            state: workflow.state,
            steps_done: workflow.steps_done,
            steps_total: workflow.steps_total(),
            next_step: workflow.next_step().map(str::to_owned),
            started_at_ms: workflow.started_at_ms,
            finished_at_ms: workflow.finished_at_ms,
            duration_ms: workflow.duration_ms(now),
            caller: workflow.caller.clone(),
            error: workflow.error.clone(),
            config_version: workflow.config.version.clone(),
            violations: workflow.violations,
            calls: with_history.then(|| workflow.calls.iter().cloned().collect()),
            outputs: with_history.then(|| workflow.outputs.clone()),
            outlook: None,
            seq: workflow.seq,
            durable_seq: u64::MAX,
        }
    }

    /// The same view, with what is not durable at `durable_seq` marked as such.
    fn marked_at(mut self, durable_seq: u64) -> Self {
        self.durable_seq = durable_seq;
        self
    }

    /// Whether the workflow's latest change could still be taken back by a crash.
    pub fn not_yet_durable(&self) -> bool {
        self.seq > self.durable_seq
    }

    /// Whether a call's latest change (its shown status) could still be taken back by a crash.
    pub fn call_not_yet_durable(&self, call: &CallEntry) -> bool {
        call.seq > self.durable_seq
    }
}

/// Asks the engine about every tool the workflow may call, without changing anything.
fn outlook(state: &conductor_core::State, workflow: &Workflow, now: i64) -> Vec<Outlook> {
    use crate::audit::DecisionKind;
    use crate::policy::{CallRequest, Decision, RateState, decide};
    let config = &workflow.config;
    let rates = RateState {
        global: &state.buckets,
        workflow: &workflow.buckets,
    };
    config
        .tools
        .iter()
        .filter(|(_, route)| route.is_tool())
        .map(|(tool, _)| tool)
        .filter(|tool| {
            workflow
                .allowed
                .as_ref()
                .is_none_or(|a| a.tools.contains(*tool))
        })
        .map(|tool| {
            let request = CallRequest {
                workflow_id: &workflow.id,
                tool,
                caller: crate::config::caller_name(&workflow.caller),
                template: workflow.template.as_ref().map(|t| t.name.as_str()),
                now_ms: now,
                ..CallRequest::default()
            };
            let (decision, hint) = match decide(
                &config.policies,
                &workflow.history,
                &state.running,
                rates,
                &request,
            ) {
                Decision::Allow => (DecisionKind::Allow, String::new()),
                Decision::NeedsApproval { gate, reason } if reason.is_empty() => (
                    DecisionKind::NeedsApproval,
                    format!("waits for approval (gate {})", gate.id),
                ),
                Decision::NeedsApproval { gate, reason } => (
                    DecisionKind::NeedsApproval,
                    format!("waits for approval (gate {}): {reason}", gate.id),
                ),
                Decision::Deny { violations } => (
                    DecisionKind::Deny,
                    violations
                        .iter()
                        .map(|v| v.unblock_hint.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            Outlook {
                tool: tool.to_string(),
                decision,
                hint,
            }
        })
        .collect()
}

/// The dashboard's figures.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    pub active_workflows: u32,
    pub completed_today: u32,
    pub failed_today: u32,
    pub policy_violations: u64,
    pub pending_approvals: u32,
    /// The most recently started workflows first (active ones before finished ones).
    pub workflows: Vec<WorkflowView>,
    pub tools: BTreeMap<String, ToolStats>,
    pub rules: BTreeMap<String, RuleStats>,
    pub last_seq: u64,
    pub config_version: String,
    /// Whether the audit log can be written: while it cannot, new calls are refused.
    pub audit: AuditState,
    pub now_ms: i64,
    /// Each downstream server's reachability, as the background check last found it.
    pub downstream: Vec<crate::downstream::health::ServerHealth>,
}

impl Gateway {
    /// A workflow; `with_history`: with the calls in memory (its most recent ones and those still
    /// open; [`Gateway::workflow_history`] gives them all), its outputs and its outlook.
    pub fn workflow(&self, id: &str, with_history: bool) -> Result<WorkflowView, Error> {
        let state = self.inner.state();
        let workflow = state
            .workflows
            .get(id)
            .ok_or_else(|| Error::WorkflowNotFound(id.to_owned()))?;
        if with_history {
            return Ok(self.workflow_in(&state, workflow));
        }
        let view = WorkflowView::of(workflow, false, now_ms());
        Ok(view.marked_at(self.inner.audit.last_seq()))
    }

    /// `workflow`'s view with the calls in memory, its outputs and its outlook, under the lock.
    fn workflow_in(&self, state: &conductor_core::State, workflow: &Workflow) -> WorkflowView {
        let now = now_ms();
        let mut view = WorkflowView::of(workflow, true, now);
        if !workflow.state.is_finished() {
            view.outlook = Some(outlook(state, workflow, now));
        }
        // Read under the lock, after the copy: a record made durable meanwhile is not marked.
        view.marked_at(self.inner.audit.last_seq())
    }

    /// A workflow with its whole call history, as `conductorctl workflow ID` and the dashboard ask
    /// for it. The state keeps only each workflow's most recent calls (`workflows.calls_in_memory`)
    /// and those still open; when it has let older ones go, they are folded back from the audit log
    /// (its records from the workflow's start on, read by the same reader as `audit query`, through
    /// `State::apply`), and each call still in memory is shown as memory has it.
    pub async fn workflow_history(&self, id: &str) -> Result<WorkflowView, Error> {
        let (view, started_seq) = {
            let state = self.inner.state();
            let workflow = state
                .workflows
                .get(id)
                .ok_or_else(|| Error::WorkflowNotFound(id.to_owned()))?;
            if workflow.calls.complete() {
                drop(state);
                return self.workflow(id, true);
            }
            (self.workflow_in(&state, workflow), workflow.started_seq)
        };
        let filter = crate::report::AuditFilter {
            workflow_id: Some(id.to_owned()),
            ..crate::report::AuditFilter::default()
        };
        let fold = HistoryFold::new(self.config(), id);
        let fold = crate::report::scan(
            &self.inner.audit,
            &filter,
            started_seq.saturating_sub(1),
            fold,
            |fold, record| {
                fold.add(record.seq, record.ts_ms, &record.event);
                std::ops::ControlFlow::Continue(())
            },
        )
        .await?;
        let mut view = view;
        view.calls = Some(fold.finish(view.calls.take().unwrap_or_default()));
        Ok(view)
    }

    /// Workflows, the active ones first (most recently started first), then the most recently
    /// finished: read from the state's own lists, never sorted under the lock.
    pub fn workflows(&self, active_only: bool, limit: usize) -> Vec<WorkflowView> {
        let now = now_ms();
        let state = self.inner.state();
        let durable = self.inner.audit.last_seq();
        let finished = state.finished().take(if active_only { 0 } else { limit });
        state
            .active()
            .chain(finished)
            .take(limit)
            .map(|w| WorkflowView::of(w, false, now).marked_at(durable))
            .collect()
    }

    pub fn status(&self, recent: usize) -> StatusSnapshot {
        let now = now_ms();
        let (counters, pending, workflows) = {
            let state = self.inner.state();
            let durable = self.inner.audit.last_seq();
            let views = state
                .active()
                .chain(state.finished())
                .take(recent)
                .map(|w| WorkflowView::of(w, false, now).marked_at(durable))
                .collect::<Vec<_>>();
            (state.counters.clone(), state.approvals.pending.len(), views)
        };
        let (completed, failed) = counters.today(now);
        StatusSnapshot {
            active_workflows: counters.active,
            completed_today: completed,
            failed_today: failed,
            policy_violations: counters.violations,
            pending_approvals: u32::try_from(pending).unwrap_or(u32::MAX),
            workflows,
            tools: self.inner.metrics.tools(),
            rules: self.inner.metrics.rules(),
            last_seq: self.inner.audit.last_seq(),
            config_version: self.config().version.clone(),
            audit: AuditState::of(&self.inner.audit.health()),
            now_ms: now,
            downstream: self.inner.downstream.health(),
        }
    }

    /// Whether the audit log can be written now (health checks, `/metrics`, `status`).
    pub fn audit_state(&self) -> AuditState {
        AuditState::of(&self.inner.audit.health())
    }

    /// Everything observable about the state now: what a restart must reproduce exactly (the
    /// differential tests compare the live state with the one rebuilt from the log).
    pub fn observe(&self) -> conductor_core::state::Observed {
        self.inner.state().observe()
    }

    /// A workflow's summary for a watcher, if it is still in memory.
    pub fn workflow_summary(&self, id: &str) -> Option<WorkflowView> {
        let state = self.inner.state();
        state
            .workflows
            .get(id)
            .map(|w| WorkflowView::of(w, false, now_ms()).marked_at(self.inner.audit.last_seq()))
    }
}

/// Whether the audit log takes records: when it does not, nothing new runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditState {
    /// Why the log cannot be written (the file and the OS error), or `None` while it can.
    pub unwritable: Option<String>,
    /// Since when it cannot (ms since the Unix epoch; 0 while it can).
    pub unwritable_since_ms: i64,
    /// Records queued and not yet durable.
    pub queued: u64,
}

impl AuditState {
    fn of(health: &conductor_audit::AuditHealth) -> Self {
        AuditState {
            unwritable: health.unwritable.as_ref().map(|u| u.reason.clone()),
            unwritable_since_ms: health.unwritable.as_ref().map_or(0, |u| u.since_ms),
            queued: health.queued as u64,
        }
    }
}
