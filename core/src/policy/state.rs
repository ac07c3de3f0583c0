//! What the engine reads about the present: each workflow's history as per-tool tallies, and the calls
//! running now, indexed so that no question costs more as histories or live workflows grow.

use super::{LabelSet, Map, Name};

/// What one tool has done so far in one workflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolTally {
    pub finished: u32,
    pub succeeded: u32,
    /// The outcome of the most recent finished call; conditional rules look at this one.
    pub last_succeeded: bool,
}

/// A workflow's history as the engine needs it: a tally per tool, updated as calls finish. Its size
/// grows with the number of distinct tools, never with the number of calls.
#[derive(Debug, Clone, Default)]
pub struct WorkflowHistory {
    tools: Map<Name, ToolTally>,
    /// The labels the workflow has seen, each with the call that brought it in (flow rules).
    pub labels: LabelSet,
}

impl WorkflowHistory {
    pub fn record(&mut self, tool: &Name, succeeded: bool) {
        let tally = self.tools.entry(tool.clone()).or_default();
        tally.finished = tally.finished.saturating_add(1);
        if succeeded {
            tally.succeeded = tally.succeeded.saturating_add(1);
        }
        tally.last_succeeded = succeeded;
    }

    pub fn tally(&self, tool: &str) -> ToolTally {
        self.tools.get(tool).copied().unwrap_or_default()
    }

    /// Every tool's tally, by tool name (for comparing histories).
    pub fn tallies(&self) -> std::collections::BTreeMap<String, ToolTally> {
        self.tools
            .iter()
            .map(|(tool, tally)| (tool.to_string(), *tally))
            .collect()
    }
}

/// A call that is running now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningCall {
    pub workflow_id: Name,
    pub call_id: Name,
}

/// Every call running now, by tool and by workflow: what exclusive groups and concurrency limits are
/// checked against. Every question it answers costs the same however many calls run.
#[derive(Debug, Clone, Default)]
pub struct RunningCalls {
    by_tool: Map<Name, ToolRunning>,
    total: usize,
}

/// The running calls of one tool: by call id, and their ids by workflow.
#[derive(Debug, Clone, Default)]
struct ToolRunning {
    calls: Map<Name, RunningCall>,
    by_workflow: Map<Name, Vec<Name>>,
}

impl RunningCalls {
    pub fn insert(&mut self, tool: &Name, call: RunningCall) {
        let running = self.by_tool.entry(tool.clone()).or_default();
        running
            .by_workflow
            .entry(call.workflow_id.clone())
            .or_default()
            .push(call.call_id.clone());
        if running.calls.insert(call.call_id.clone(), call).is_none() {
            self.total += 1;
        }
    }

    pub fn remove(&mut self, tool: &str, call_id: &str) {
        let Some(running) = self.by_tool.get_mut(tool) else {
            return;
        };
        let Some(call) = running.calls.remove(call_id) else {
            return;
        };
        self.total -= 1;
        if let Some(ids) = running.by_workflow.get_mut(&call.workflow_id) {
            ids.retain(|id| &**id != call_id);
            if ids.is_empty() {
                running.by_workflow.remove(&call.workflow_id);
            }
        }
        if running.calls.is_empty() {
            self.by_tool.remove(tool);
        }
    }

    /// How many calls of `tool` run now.
    pub fn count(&self, tool: &str) -> usize {
        self.by_tool.get(tool).map_or(0, |r| r.calls.len())
    }

    /// A running call of `tool`, anywhere.
    pub fn any(&self, tool: &str) -> Option<&RunningCall> {
        self.by_tool.get(tool)?.calls.values().next()
    }

    /// A running call of `tool` in `workflow_id`.
    pub fn any_in_workflow(&self, tool: &str, workflow_id: &str) -> Option<&RunningCall> {
        let running = self.by_tool.get(tool)?;
        let id = running.by_workflow.get(workflow_id)?.first()?;
        running.calls.get(id)
    }

    pub fn len(&self) -> usize {
        self.total
    }

    /// Every running call as (tool, workflow, call), sorted (for comparing states).
    pub fn sorted(&self) -> Vec<(String, String, String)> {
        let mut all: Vec<(String, String, String)> = self
            .by_tool
            .iter()
            .flat_map(|(tool, running)| {
                running.calls.values().map(move |call| {
                    (
                        tool.to_string(),
                        call.workflow_id.to_string(),
                        call.call_id.to_string(),
                    )
                })
            })
            .collect();
        all.sort();
        all
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}
