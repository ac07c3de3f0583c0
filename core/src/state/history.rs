//! A workflow's whole call history, folded back from its records in the audit log, for a view that
//! asks for more than the calls the live state keeps in memory (`workflows.calls_in_memory`).
//!
//! It is [`State::apply`] over the workflow's own records, in a state of its own that keeps every
//! call: the same transition as the live state, so a call read back from the log is the call the
//! live state held. It must never be fed records of other workflows (their calls would be folded
//! for nothing) nor be used as the live state.

use super::State;
use crate::config::Config;
use crate::events::{AuditEvent, Payload};
use crate::workflow::{CallEntry, merge_history};
use std::sync::Arc;

/// Folds one workflow's records into its calls.
pub struct HistoryFold {
    state: State,
    workflow_id: String,
}

impl HistoryFold {
    /// A fold of workflow `workflow_id`'s records, under `config` (for its template, if any).
    pub fn new(config: Arc<Config>, workflow_id: &str) -> Self {
        HistoryFold {
            state: State::keeping_every_call(config),
            workflow_id: workflow_id.to_owned(),
        }
    }

    /// Applies the record of `seq` if it is about this workflow (records of others are skipped),
    /// numbered as in the log, so each call keeps the seq of the record that last changed it.
    pub fn add<J: Payload>(&mut self, seq: u64, at_ms: i64, event: &AuditEvent<J>) {
        if event.workflow_id() != Some(self.workflow_id.as_str()) {
            return;
        }
        self.state.seq = seq.saturating_sub(1);
        self.state.apply(at_ms, event);
    }

    /// Every call the records gave, in order, each call also in `in_memory` (the live state's,
    /// in order) taken from there, then those of `in_memory` the records did not have yet.
    ///
    /// A call the live state has let go of shows as the records read give it: when the record
    /// that closed it was still queued (not yet in the log) as they were read, that is its last
    /// durable status, which is also what a crash would leave.
    pub fn finish(mut self, in_memory: Vec<CallEntry>) -> Vec<CallEntry> {
        let from_log = self
            .state
            .workflows
            .remove(self.workflow_id.as_str())
            .map(|workflow| workflow.calls.iter().cloned().collect())
            .unwrap_or_default();
        merge_history(from_log, in_memory)
    }
}
