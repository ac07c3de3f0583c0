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
}

impl LabelOrigin {
    /// "call c-2 (restore_backup at 2026-12-01T10:00:00.123Z)".
    pub fn describe(&self) -> String {
        let at = UNIX_EPOCH + Duration::from_millis(self.at_ms.max(0) as u64);
        format!(
            "call {} ({} at {})",
            self.call_id,
            self.tool,
            humantime::format_rfc3339_millis(at)
        )
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
