//! Workflows: one run of a template, or one ad-hoc session, with its history and progress.
//!
//! A workflow is plain data owned by the gateway's state; it is changed only inside the gateway's short
//! critical sections and never awaits anything itself.

use crate::config::{Config, Template};
use crate::domain::Outcome;
use crate::policy::{AllowList, Buckets, Name, NextStep, StepOrder, Violation, WorkflowHistory};
use serde_json::{Map, Value};
use std::sync::Arc;

mod calls;

pub use calls::{Calls, DEFAULT_CALLS_IN_MEMORY, merge_history};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowState {
    Running,
    WaitingApproval,
    Completed,
    Failed,
    Cancelled,
}

impl WorkflowState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            WorkflowState::Completed | WorkflowState::Failed | WorkflowState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::WaitingApproval => "waiting for approval",
            WorkflowState::Completed => "completed",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "been cancelled",
        }
    }
}

/// Where a call stands.
#[derive(Debug, Clone, PartialEq)]
pub enum CallStatus {
    WaitingApproval {
        approval_id: String,
    },
    Running,
    Finished {
        outcome: Outcome,
        error: Option<String>,
    },
    Denied {
        violations: Vec<Violation>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CallEntry {
    pub call_id: Name,
    pub tool: Name,
    pub step: Option<String>,
    pub status: CallStatus,
    pub started_at_ms: i64,
    pub duration_us: u64,
    pub approval_id: Option<String>,
    pub gate: Option<String>,
    /// A failed call's structured details, as the tool gave them.
    pub details: Option<Value>,
    /// The seq of the audit record that last changed this call: above the log's durable
    /// watermark, a crash would take that change back.
    pub seq: u64,
    /// The OpenTelemetry trace the call was decided in, when traces were exported.
    pub trace_id: Option<String>,
}

#[derive(Debug)]
pub struct Workflow {
    pub id: Name,
    pub template: Option<Arc<Template>>,
    /// The configuration the workflow started under; it keeps it until it finishes.
    pub config: Arc<Config>,
    pub caller: String,
    pub input: Value,
    pub state: WorkflowState,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The time of its last call's decision or ending (its start before any): idle ad-hoc
    /// workflows end by themselves.
    pub last_activity_ms: i64,
    pub history: WorkflowHistory,
    /// Its most recent calls, and the older ones still open (the rest are in the audit log).
    pub calls: Calls,
    /// Outputs of finished template steps, by step name.
    pub outputs: Map<String, Value>,
    pub steps_done: usize,
    pub error: Option<String>,
    pub violations: u32,
    /// The tools it may call at all (its template's, its client's allow-list); `None`: any.
    pub allowed: Option<AllowList>,
    /// Per-workflow rate limits.
    pub buckets: Buckets,
    /// The seq of the audit record that last changed it (its start, a call, its end).
    pub seq: u64,
    /// The seq of its `workflow_started` record: where its records in the log begin.
    pub started_seq: u64,
}

impl Workflow {
    pub fn new(
        id: Name,
        template: Option<Arc<Template>>,
        config: Arc<Config>,
        caller: String,
        input: Value,
        now_ms: i64,
    ) -> Self {
        let allowed = config.allowed_for(&caller, template.as_deref());
        let calls = Calls::new(config.calls_in_memory);
        Workflow {
            allowed,
            buckets: Buckets::default(),
            id,
            template,
            config,
            caller,
            input,
            state: WorkflowState::Running,
            started_at_ms: now_ms,
            finished_at_ms: None,
            last_activity_ms: now_ms,
            history: WorkflowHistory::default(),
            calls,
            outputs: Map::new(),
            steps_done: 0,
            error: None,
            violations: 0,
            seq: 0,
            started_seq: 0,
        }
    }

    pub fn steps_total(&self) -> usize {
        self.template.as_ref().map_or(0, |t| t.steps.len())
    }

    /// The next template step's name (ad-hoc workflows have none).
    pub fn next_step(&self) -> Option<&str> {
        if self.state.is_finished() {
            return None;
        }
        let template = self.template.as_ref()?;
        template.steps.get(self.steps_done).map(|s| s.name.as_str())
    }

    /// Where its template stands, for the engine (ad-hoc workflows have no order to keep):
    /// `claimed` is the index of the step the call was made as, if any.
    pub fn step_order(&self, claimed: Option<usize>) -> Option<StepOrder<'_>> {
        let template = self.template.as_deref()?;
        Some(StepOrder {
            template: &template.name,
            next: template.steps.get(self.steps_done).map(|step| NextStep {
                name: &step.name,
                tool: &step.tool,
            }),
            claimed: claimed
                .and_then(|i| template.steps.get(i))
                .map(|step| step.name.as_str()),
            steps_total: template.steps.len(),
        })
    }

    /// Adds a call, or sets the status of the call with the same id.
    pub fn record_call(&mut self, entry: CallEntry) {
        self.calls.record(entry);
    }

    /// Changes a call's status (the one way to, so that the counts of open calls stay right).
    pub fn set_status(&mut self, call_id: &str, status: CallStatus) -> Option<&mut CallEntry> {
        self.calls.set_status(call_id, status)
    }

    pub fn call_mut(&mut self, call_id: &str) -> Option<&mut CallEntry> {
        self.calls.get_mut(call_id)
    }

    pub fn waiting_calls(&self) -> usize {
        self.calls.waiting()
    }

    /// Running or waiting for approval, from the calls it has.
    pub fn refresh_state(&mut self) {
        if !self.state.is_finished() {
            self.state = if self.waiting_calls() > 0 {
                WorkflowState::WaitingApproval
            } else {
                WorkflowState::Running
            };
        }
    }

    pub fn finish(&mut self, state: WorkflowState, error: Option<String>, now_ms: i64) {
        self.state = state;
        self.error = error;
        self.finished_at_ms = Some(now_ms);
    }

    pub fn duration_ms(&self, now_ms: i64) -> u64 {
        let end = self.finished_at_ms.unwrap_or(now_ms);
        u64::try_from(end - self.started_at_ms).unwrap_or(0)
    }
}
