//! Information-flow labels and flow rules.
//!
//! Tools carry labels (`private`, `untrusted`, `egress`, ...). A label enters a workflow when a call
//! of a labelled tool is allowed to run: from then on its result may be in the agent's context. A
//! flow rule says that once all of some labels have entered, calls of tools with another label are
//! denied or wait for a person. The workflow keeps each label with the call that brought it in
//! first, so a check costs the same at any history length and a refusal can name those calls.
//!
//! Pure: the time of a label's entry is the record's, passed in.

use super::condition::Condition;
use super::{ApprovalGate, Map, Name, RuleKind, Violation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// The call that brought a label into a workflow first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelOrigin {
    pub call_id: String,
    pub tool: String,
    pub at_ms: i64,
    /// The workflow the call ran in, when it is not the one that holds the label: a label carried
    /// into a new workflow of the same context, or one that follows its caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
}

impl LabelOrigin {
    /// "call c-2 (restore_backup at 2026-12-01T10:00:00.123Z)", and "… in workflow wf-1" for a
    /// call of another workflow.
    pub fn describe(&self) -> String {
        let at = UNIX_EPOCH + Duration::from_millis(self.at_ms.max(0) as u64);
        let elsewhere = self
            .workflow_id
            .as_deref()
            .map(|w| format!(" in workflow {w}"))
            .unwrap_or_default();
        format!(
            "call {} ({} at {}{elsewhere})",
            self.call_id,
            self.tool,
            humantime::format_rfc3339_millis(at)
        )
    }

    /// The same origin, naming `workflow_id` as the call's workflow unless it names one already.
    pub fn from_workflow(&self, workflow_id: &str) -> LabelOrigin {
        LabelOrigin {
            workflow_id: Some(
                self.workflow_id
                    .clone()
                    .unwrap_or_else(|| workflow_id.to_owned()),
            ),
            ..self.clone()
        }
    }
}

/// The labels a workflow has seen, each with the call that brought it in first.
#[derive(Debug, Clone, Default)]
pub struct LabelSet {
    seen: Map<Name, LabelOrigin>,
}

impl LabelSet {
    /// Records that the call `origin` brought `labels` in; a label seen before keeps its first call.
    pub fn bring(&mut self, labels: &[Name], origin: &LabelOrigin) {
        for label in labels {
            if !self.seen.contains_key(label) {
                self.seen.insert(label.clone(), origin.clone());
            }
        }
    }

    pub fn origin(&self, label: &str) -> Option<&LabelOrigin> {
        self.seen.get(label)
    }

    /// Brings in each label of `other` that this set has not seen, with the call that brought it
    /// into `other` (`workflow_id`'s call, unless it came from further away).
    pub fn carry(&mut self, other: &LabelSet, workflow_id: &str) {
        for (label, origin) in &other.seen {
            if !self.seen.contains_key(label) {
                self.seen
                    .insert(label.clone(), origin.from_workflow(workflow_id));
            }
        }
    }

    /// Brings in `label` from `origin` as it is, if not seen yet (replaying a carried set).
    pub fn bring_one(&mut self, label: Name, origin: LabelOrigin) {
        self.seen.entry(label).or_insert(origin);
    }

    /// This set with the labels of `extra` it lacks; `None` when `extra` adds nothing (the common
    /// case costs no copy).
    pub fn with(&self, extra: &LabelSet) -> Option<LabelSet> {
        if extra.seen.keys().all(|label| self.seen.contains_key(label)) {
            return None;
        }
        let mut merged = self.clone();
        for (label, origin) in &extra.seen {
            merged
                .seen
                .entry(label.clone())
                .or_insert_with(|| origin.clone());
        }
        Some(merged)
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Every label seen, sorted.
    pub fn names(&self) -> Vec<Name> {
        let mut names: Vec<Name> = self.seen.keys().cloned().collect();
        names.sort();
        names
    }

    /// Every label with its origin, by label (for comparing states and for listings).
    pub fn sorted(&self) -> std::collections::BTreeMap<String, LabelOrigin> {
        self.seen
            .iter()
            .map(|(label, origin)| (label.to_string(), origin.clone()))
            .collect()
    }
}

/// The labels one caller's calls brought in, each with the latest call that did: where labels follow
/// the caller (`flow_scope` `caller`), a decision sees those brought in within the window.
#[derive(Debug, Clone, Default)]
pub struct RecentLabels {
    latest: Map<Name, LabelOrigin>,
}

impl RecentLabels {
    /// Records that `origin` (a call of workflow `origin.workflow_id`) brought `labels` in.
    pub fn bring(&mut self, labels: &[Name], origin: &LabelOrigin) {
        for label in labels {
            self.latest.insert(label.clone(), origin.clone());
        }
    }

    /// The labels brought in at or after `since_ms`, each with its latest call.
    pub fn since(&self, since_ms: i64) -> LabelSet {
        LabelSet {
            seen: self
                .latest
                .iter()
                .filter(|(_, origin)| origin.at_ms >= since_ms)
                .map(|(label, origin)| (label.clone(), origin.clone()))
                .collect(),
        }
    }

    /// Forgets labels brought in before `before_ms`; whether any are left.
    pub fn forget_before(&mut self, before_ms: i64) -> bool {
        self.latest.retain(|_, origin| origin.at_ms >= before_ms);
        !self.latest.is_empty()
    }

    /// Every label with its latest call, by label (for comparing states).
    pub fn sorted(&self) -> std::collections::BTreeMap<String, LabelOrigin> {
        self.latest
            .iter()
            .map(|(label, origin)| (label.to_string(), origin.clone()))
            .collect()
    }
}

/// What a flow rule does to a call it catches.
#[derive(Debug, Clone)]
pub enum FlowAction {
    Deny,
    Approval(ApprovalGate),
}

/// Once every label of `from` has entered a workflow, calls of tools labelled `to` are denied or
/// gated.
#[derive(Debug, Clone)]
pub struct FlowRule {
    pub id: Name,
    pub from: Vec<Name>,
    pub to: Name,
    pub action: FlowAction,
    pub when: Option<Arc<Condition>>,
}

impl FlowRule {
    /// The origins of the rule's `from` labels when all have entered the workflow; `None` otherwise.
    pub fn caught<'a>(&self, seen: &'a LabelSet) -> Option<Vec<(&'a Name, &'a LabelOrigin)>> {
        self.from
            .iter()
            .map(|label| seen.seen.get_key_value(label))
            .collect()
    }

    /// Why the rule catches the call: each label with the call that brought it in.
    pub fn reason(&self, tool: &str, origins: &[(&Name, &LabelOrigin)]) -> String {
        let sources = origins
            .iter()
            .map(|(label, origin)| format!("{label} from {}", origin.describe()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{tool} carries label {} and this workflow has already seen {}: {sources} (flow rule {})",
            self.to,
            self.from.join(" + "),
            self.id
        )
    }

    pub(super) fn violation(&self, tool: &str, origins: &[(&Name, &LabelOrigin)]) -> Violation {
        Violation {
            rule_id: self.id.to_string(),
            rule_kind: RuleKind::Flow,
            tool: tool.to_owned(),
            message: format!(
                "{}; calls labelled {} are refused",
                self.reason(tool, origins),
                self.to
            ),
            unblock_hint: format!(
                "a workflow that has seen {} cannot call {tool}; start a new workflow for it, \
                 one that does not read that data first",
                self.from.join(" + ")
            ),
            required_tools: Vec::new(),
            retry_after_ms: None,
        }
    }
}
