//! The read models [`State::apply`](super::State::apply) keeps up to date, so that the fronts read
//! them without scanning or sorting under the lock: the dashboard's counters and the approval book.

use super::DAY_MS;
use crate::approval::Approval;
use std::collections::{BTreeMap, VecDeque};

/// The dashboard's counters, kept by [`State::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Workflows running or waiting.
    pub active: u32,
    /// Policy violations ever recorded: denials' rules and refused approvals.
    pub violations: u64,
    /// The day (days since the Unix epoch, UTC) the two counts below are of.
    pub day: i64,
    pub completed_on_day: u32,
    pub failed_on_day: u32,
}

impl Counters {
    /// Completed and failed workflows of the day that holds `now_ms`.
    pub fn today(&self, now_ms: i64) -> (u32, u32) {
        if now_ms.div_euclid(DAY_MS) == self.day {
            (self.completed_on_day, self.failed_on_day)
        } else {
            (0, 0)
        }
    }
}

/// Approval requests: the pending ones, and the latest decided ones.
#[derive(Debug, Clone, Default)]
pub struct ApprovalBook {
    pub pending: BTreeMap<String, Approval>,
    pub decided: VecDeque<Approval>,
}

impl ApprovalBook {
    pub fn get(&self, id: &str) -> Option<&Approval> {
        self.pending
            .get(id)
            .or_else(|| self.decided.iter().rev().find(|a| a.id == id))
    }

    /// The pending requests of one workflow.
    pub fn pending_of<'a>(&'a self, workflow_id: &'a str) -> impl Iterator<Item = &'a Approval> {
        self.pending
            .values()
            .filter(move |a| a.workflow_id == workflow_id)
    }
}
