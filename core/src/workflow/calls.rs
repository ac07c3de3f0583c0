//! A workflow's calls in memory: a window of the most recent ones, so that a session that runs for a
//! day holds as many as one that ran for a minute.
//!
//! The rules never read this list (they read the per-tool tallies, the labels and the running calls,
//! kept beside it); what reads it is the views, start-up (which calls are still open) and a template
//! run (whether its next step's last call was interrupted). So besides the window it keeps, until
//! they no longer matter, the older calls the state still acts on: a call that is open (running or
//! waiting for a person) whatever its age, since its ending must find it, and the latest call of
//! each template step. The full list is the audit log's; a view asks the log for the calls that are
//! not here.
//!
//! What it keeps depends only on the calls recorded and their changes, in order, so the state
//! rebuilt from the log keeps exactly what the live state kept. An older call that closes is let go
//! at the next call recorded, not at once: the record that closed it may still be read back (the
//! compliance report reads a call's entry after applying its `call_finished`).

use super::{CallEntry, CallStatus};
use crate::policy::{Map, Name};
use std::collections::{BTreeMap, VecDeque};

/// How many of a workflow's most recent calls stay in memory unless `workflows.calls_in_memory`
/// says otherwise: far more than a template's steps or a screen of history, and about 0.3 MiB per
/// workflow at most.
pub const DEFAULT_CALLS_IN_MEMORY: usize = 1024;

/// A workflow's calls in memory (see the module's header). Each call has an ordinal, its place
/// among every call the workflow recorded.
#[derive(Debug, Clone)]
pub struct Calls {
    /// The most recent calls, oldest first: `recent[0]` has ordinal `first`.
    recent: VecDeque<CallEntry>,
    first: u64,
    /// Calls older than the window still kept (open, or the latest of their step), by ordinal.
    older: BTreeMap<u64, CallEntry>,
    /// The ordinal of every call in memory, so that finding one costs the same at any length.
    index: Map<Name, u64>,
    /// The ordinal of the latest call made as each template step (bounded by the steps).
    latest_of_step: Map<String, u64>,
    /// Older calls that closed (or stopped being their step's latest) since the last call was
    /// recorded: let go then.
    closed_older: Vec<u64>,
    /// How many of the most recent calls stay whatever their state.
    window: usize,
    /// Calls waiting for approval, and calls running: kept with every change, never counted by
    /// a scan.
    waiting: usize,
    running: usize,
}

fn is_open(status: &CallStatus) -> bool {
    matches!(
        status,
        CallStatus::Running | CallStatus::WaitingApproval { .. }
    )
}

impl Calls {
    /// An empty list that keeps the `window` most recent calls (at least one).
    pub fn new(window: usize) -> Self {
        Calls {
            recent: VecDeque::new(),
            first: 0,
            older: BTreeMap::new(),
            index: Map::default(),
            latest_of_step: Map::default(),
            closed_older: Vec::new(),
            window: window.max(1),
            waiting: 0,
            running: 0,
        }
    }

    /// How many calls the workflow has recorded in all, in memory or not.
    pub fn recorded(&self) -> u64 {
        self.first + self.recent.len() as u64
    }

    /// How many calls are in memory.
    pub fn in_memory(&self) -> usize {
        self.recent.len() + self.older.len()
    }

    /// Whether every call the workflow recorded is in memory (else the older ones are in the log).
    pub fn complete(&self) -> bool {
        self.in_memory() as u64 == self.recorded()
    }

    /// The calls in memory, in the order they were recorded.
    pub fn iter(&self) -> impl Iterator<Item = &CallEntry> {
        self.older.values().chain(self.recent.iter())
    }

    pub fn get(&self, call_id: &str) -> Option<&CallEntry> {
        let ordinal = *self.index.get(call_id)?;
        self.at(ordinal)
    }

    /// The latest call made as template step `step`, if any.
    pub fn latest_of_step(&self, step: &str) -> Option<&CallEntry> {
        let ordinal = *self.latest_of_step.get(step)?;
        self.at(ordinal)
    }

    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn running(&self) -> usize {
        self.running
    }

    fn at(&self, ordinal: u64) -> Option<&CallEntry> {
        match ordinal.checked_sub(self.first) {
            Some(offset) => self.recent.get(usize::try_from(offset).ok()?),
            None => self.older.get(&ordinal),
        }
    }

    fn at_mut(&mut self, ordinal: u64) -> Option<&mut CallEntry> {
        match ordinal.checked_sub(self.first) {
            Some(offset) => self.recent.get_mut(usize::try_from(offset).ok()?),
            None => self.older.get_mut(&ordinal),
        }
    }

    fn count(&mut self, status: &CallStatus, by: isize) {
        match status {
            CallStatus::WaitingApproval { .. } => {
                self.waiting = self.waiting.saturating_add_signed(by);
            }
            CallStatus::Running => self.running = self.running.saturating_add_signed(by),
            CallStatus::Finished { .. } | CallStatus::Denied { .. } => {}
        }
    }

    /// Adds a call, or sets the status (and seq) of the call with the same id.
    pub fn record(&mut self, entry: CallEntry) {
        if self.index.contains_key(&entry.call_id) {
            let call_id = entry.call_id.clone();
            if let Some(known) = self.set_status(&call_id, entry.status) {
                known.seq = entry.seq;
            }
            return;
        }
        self.let_go_of_closed_older();
        let ordinal = self.recorded();
        self.count(&entry.status, 1);
        self.index.insert(entry.call_id.clone(), ordinal);
        if let Some(step) = &entry.step
            && let Some(before) = self.latest_of_step.insert(step.clone(), ordinal)
            && before < self.first
        {
            self.closed_older.push(before);
        }
        self.recent.push_back(entry);
        while self.recent.len() > self.window {
            let Some(oldest) = self.recent.pop_front() else {
                break;
            };
            let ordinal = self.first;
            self.first += 1;
            if self.still_needed(ordinal, &oldest) {
                self.older.insert(ordinal, oldest);
            } else {
                self.index.remove(&oldest.call_id);
            }
        }
    }

    /// Changes a call's status (the one way to, so that the counts stay right).
    pub fn set_status(&mut self, call_id: &str, status: CallStatus) -> Option<&mut CallEntry> {
        let ordinal = *self.index.get(call_id)?;
        let old = self.at(ordinal).map(|entry| entry.status.clone())?;
        self.count(&old, -1);
        self.count(&status, 1);
        if ordinal < self.first && !is_open(&status) {
            self.closed_older.push(ordinal);
        }
        let entry = self.at_mut(ordinal)?;
        entry.status = status;
        Some(entry)
    }

    /// A call's entry, to change what is not its status (use [`Calls::set_status`] for that).
    pub fn get_mut(&mut self, call_id: &str) -> Option<&mut CallEntry> {
        let ordinal = *self.index.get(call_id)?;
        self.at_mut(ordinal)
    }

    fn still_needed(&self, ordinal: u64, entry: &CallEntry) -> bool {
        is_open(&entry.status)
            || entry
                .step
                .as_ref()
                .is_some_and(|step| self.latest_of_step.get(step) == Some(&ordinal))
    }

    fn let_go_of_closed_older(&mut self) {
        for ordinal in std::mem::take(&mut self.closed_older) {
            let Some(entry) = self.older.get(&ordinal) else {
                continue;
            };
            if !self.still_needed(ordinal, entry) {
                let call_id = entry.call_id.clone();
                self.older.remove(&ordinal);
                self.index.remove(&call_id);
            }
        }
    }
}

/// A workflow's whole history for a view: `from_log` (every call its records in the log give, in
/// order) with each call that is also in memory taken from memory (its latest change may not be in
/// the log yet), then the calls in memory the log does not have yet, in their order.
pub fn merge_history(from_log: Vec<CallEntry>, in_memory: Vec<CallEntry>) -> Vec<CallEntry> {
    let mut by_id: Map<Name, CallEntry> = in_memory
        .iter()
        .map(|entry| (entry.call_id.clone(), entry.clone()))
        .collect();
    let mut merged: Vec<CallEntry> = from_log
        .into_iter()
        .map(|logged| by_id.remove(&logged.call_id).unwrap_or(logged))
        .collect();
    merged.extend(
        in_memory
            .into_iter()
            .filter(|entry| by_id.contains_key(&entry.call_id)),
    );
    merged
}

#[cfg(test)]
mod tests;
