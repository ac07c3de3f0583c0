//! [`Observed`]: what anyone can observe of a [`State`], in a form that compares, for the
//! differential tests of live and rebuilt state.

use super::{Counters, State, Unfinished};
use crate::approval::Approval;
use crate::policy;
use crate::workflow::{CallEntry, WorkflowState};
use serde_json::Value;
use std::collections::BTreeMap;

/// What anyone can observe of a state, in a form that compares: two states that observe the same
/// are the same to every front (the differential tests of live and rebuilt state compare these).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub workflows: BTreeMap<String, ObservedWorkflow>,
    /// Active workflows, the most recently started first; then the finished ones kept.
    pub active: Vec<String>,
    pub finished: Vec<String>,
    pub running: Vec<(String, String, String)>,
    pub pending: Vec<Approval>,
    pub decided: Vec<Approval>,
    pub counters: Counters,
    pub unfinished: Vec<Unfinished>,
    /// Each identity's labels with their latest calls (what follows a caller).
    pub caller_labels: BTreeMap<String, BTreeMap<String, policy::LabelOrigin>>,
    /// Each caller's current ad-hoc workflow (where a session-free call without a handle goes).
    pub current_ad_hoc: BTreeMap<String, String>,
}

/// One workflow as [`Observed`] holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedWorkflow {
    pub template: Option<String>,
    pub config_version: String,
    pub caller: String,
    pub input: Value,
    pub state: WorkflowState,
    pub started_at_ms: i64,
    pub last_activity_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The calls in memory, in order (the window, and older calls still open).
    pub calls: Vec<CallEntry>,
    /// How many calls it recorded in all, in memory or not.
    pub calls_recorded: u64,
    pub outputs: serde_json::Map<String, Value>,
    pub steps_done: usize,
    pub error: Option<String>,
    pub violations: u32,
    pub history: BTreeMap<String, policy::ToolTally>,
    /// The labels the workflow has seen, with the call that brought each in.
    pub labels: BTreeMap<String, policy::LabelOrigin>,
    pub waiting_calls: usize,
    /// The seq of the record that last changed it: live and rebuilt, the same numbering.
    pub seq: u64,
}

impl State {
    /// Everything observable about this state.
    pub fn observe(&self) -> Observed {
        Observed {
            workflows: self
                .workflows
                .values()
                .map(|w| {
                    (
                        w.id.to_string(),
                        ObservedWorkflow {
                            template: w.template.as_ref().map(|t| t.name.clone()),
                            config_version: w.config.version.clone(),
                            caller: w.caller.clone(),
                            input: w.input.clone(),
                            state: w.state,
                            started_at_ms: w.started_at_ms,
                            last_activity_ms: w.last_activity_ms,
                            finished_at_ms: w.finished_at_ms,
                            calls: w.calls.iter().cloned().collect(),
                            calls_recorded: w.calls.recorded(),
                            outputs: w.outputs.clone(),
                            steps_done: w.steps_done,
                            error: w.error.clone(),
                            violations: w.violations,
                            history: w.history.tallies(),
                            labels: w.history.labels.sorted(),
                            waiting_calls: w.waiting_calls(),
                            seq: w.seq,
                        },
                    )
                })
                .collect(),
            active: self.active().map(|w| w.id.to_string()).collect(),
            finished: self.finished().map(|w| w.id.to_string()).collect(),
            running: self.running.sorted(),
            pending: self.approvals.pending.values().cloned().collect(),
            decided: self.approvals.decided.iter().cloned().collect(),
            counters: self.counters.clone(),
            unfinished: self.unfinished(),
            caller_labels: self.caller_labels_sorted(),
            current_ad_hoc: self
                .workflows
                .values()
                .filter_map(|w| {
                    self.current_ad_hoc(&w.caller)
                        .map(|current| (w.caller.clone(), current.id.to_string()))
                })
                .collect(),
        }
    }
}
