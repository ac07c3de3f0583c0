//! The policy engine: decides whether one call may run, given the workflow's history and what runs now.
//!
//! It is pure: no I/O, no async, no clock reads, no locks. Every fact it needs is passed in, so a decision
//! is a few hash-map look-ups whatever the length of the history, and the same inputs always give the same
//! decision. Everything else in the orchestrator is plumbing around [`decide`].

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Tool and rule names are shared, immutable strings: cloning one is a reference-count increment.
pub type Name = Arc<str>;

/// The hash map of the engine and the gateway state: keyed by ids and names, looked up several
/// times per call and a few million times at start-up, where SipHash cost 5% of the time.
/// foldhash's quality variant is seeded per process, like the standard one.
pub type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// What kind of rule a violation comes from; part of every denial so callers can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Sequence,
    Conditional,
    Exclusive,
    Approval,
    /// Too many calls of the tool are running.
    Concurrency,
    /// The tool's (or the workflow's) token bucket is empty.
    RateLimit,
    /// The workflow may not call this tool at all (template or client allow-list).
    AllowList,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Sequence => "sequence",
            RuleKind::Conditional => "conditional",
            RuleKind::Exclusive => "exclusive",
            RuleKind::Approval => "approval",
            RuleKind::Concurrency => "concurrency",
            RuleKind::RateLimit => "rate_limit",
            RuleKind::AllowList => "allow_list",
        }
    }
}

/// Where an exclusive group holds: among the calls of one workflow, or among all calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Workflow,
    Global,
}

/// "This tool needs that tool first", as one rule states it.
#[derive(Debug, Clone)]
pub struct Requirement {
    pub rule_id: Name,
    pub tool: Name,
}

/// Tools that never run at the same time.
#[derive(Debug, Clone)]
pub struct ExclusiveGroup {
    pub id: Name,
    pub tools: Vec<Name>,
    pub scope: Scope,
}

/// A gate that makes a call wait for a person's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalGate {
    pub id: Name,
    pub timeout: Duration,
    /// The approver must be someone other than the caller who started the workflow.
    pub four_eyes: bool,
}

/// The tools a workflow may call at all, and why (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    pub source: String,
    pub tools: std::collections::BTreeSet<Name>,
}

/// The rules that concern one tool, gathered at configuration load so a decision never scans all rules.
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    pub after: Vec<Requirement>,
    pub requires_success: Vec<Requirement>,
    pub groups: Vec<usize>,
    pub gate: Option<ApprovalGate>,
    pub limits: ToolLimits,
}

/// Every rule of a configuration, indexed by tool.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    tools: Map<Name, ToolPolicy>,
    groups: Vec<ExclusiveGroup>,
}

impl PolicySet {
    pub fn add_sequence(&mut self, rule_id: &Name, tool: &Name, after: &Name) {
        self.entry(tool).after.push(Requirement {
            rule_id: rule_id.clone(),
            tool: after.clone(),
        });
    }

    pub fn add_conditional(&mut self, rule_id: &Name, tool: &Name, requires: &Name) {
        let requirement = Requirement {
            rule_id: rule_id.clone(),
            tool: requires.clone(),
        };
        self.entry(tool).requires_success.push(requirement);
    }

    pub fn add_exclusive(&mut self, group: ExclusiveGroup) {
        let index = self.groups.len();
        for tool in &group.tools {
            self.entry(tool).groups.push(index);
        }
        self.groups.push(group);
    }

    pub fn add_gate(&mut self, tool: &Name, gate: ApprovalGate) {
        self.entry(tool).gate = Some(gate);
    }

    pub fn set_limits(&mut self, tool: &Name, limits: ToolLimits) {
        self.entry(tool).limits = limits;
    }

    pub fn tool(&self, tool: &str) -> Option<&ToolPolicy> {
        self.tools.get(tool)
    }

    /// The tools `tool` depends on (sequence and conditional), for cycle checks and hints.
    pub fn prerequisites(&self, tool: &str) -> impl Iterator<Item = &Requirement> {
        self.tools
            .get(tool)
            .into_iter()
            .flat_map(|p| p.after.iter().chain(&p.requires_success))
    }

    pub fn groups(&self) -> &[ExclusiveGroup] {
        &self.groups
    }

    fn entry(&mut self, tool: &Name) -> &mut ToolPolicy {
        self.tools.entry(tool.clone()).or_default()
    }
}

/// The call being decided.
#[derive(Debug, Clone)]
pub struct CallRequest<'a> {
    pub workflow_id: &'a str,
    pub tool: &'a str,
    /// A gate of the template step this call is, on top of any approval rule of its tool.
    pub step_gate: Option<&'a ApprovalGate>,
    /// The call's approval was already given: gates no longer apply, every other rule still does.
    pub approval_granted: bool,
    /// The tools the workflow may call, when it is restricted.
    pub allowed: Option<&'a AllowList>,
    /// Now, for rate limits (passed in: the engine never reads a clock).
    pub now_ms: i64,
}

/// One rule that blocks a call, and what would unblock it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule_id: String,
    pub rule_kind: RuleKind,
    pub tool: String,
    pub message: String,
    pub unblock_hint: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Every rule that blocks the call, not just the first.
    Deny {
        violations: Vec<Violation>,
    },
    NeedsApproval {
        gate: ApprovalGate,
    },
}

/// Decides one call. Ordering rules (sequence, conditional) and exclusive groups are all checked and all
/// reported; approval is asked for only when nothing else blocks the call, so that nobody is asked to
/// approve a call that could not run anyway.
pub fn decide(
    policies: &PolicySet,
    history: &WorkflowHistory,
    running: &RunningCalls,
    rates: RateState<'_>,
    call: &CallRequest<'_>,
) -> Decision {
    let mut violations = Vec::new();
    if let Some(allowed) = call.allowed
        && !allowed.tools.contains(call.tool)
    {
        violations.push(allow_list_violation(call.tool, allowed));
        return Decision::Deny { violations };
    }
    let policy = policies.tool(call.tool);
    if let Some(policy) = policy {
        for need in &policy.after {
            if history.tally(&need.tool).finished == 0 {
                violations.push(sequence_violation(call.tool, need));
            }
        }
        for need in &policy.requires_success {
            let tally = history.tally(&need.tool);
            if !tally.last_succeeded {
                violations.push(conditional_violation(call.tool, need, tally));
            }
        }
        for &index in &policy.groups {
            if let Some(violation) = exclusive_violation(&policies.groups[index], running, call) {
                violations.push(violation);
            }
        }
        limits::limit_violations(&policy.limits, running, rates, call, &mut violations);
    }
    if !violations.is_empty() {
        return Decision::Deny { violations };
    }
    if !call.approval_granted
        && let Some(gate) = call.step_gate.or(policy.and_then(|p| p.gate.as_ref()))
    {
        return Decision::NeedsApproval { gate: gate.clone() };
    }
    Decision::Allow
}

fn allow_list_violation(tool: &str, allowed: &AllowList) -> Violation {
    let tools = allowed
        .tools
        .iter()
        .map(|t| t.as_ref())
        .collect::<Vec<_>>()
        .join(", ");
    Violation {
        rule_id: allowed.source.clone(),
        rule_kind: RuleKind::AllowList,
        tool: tool.to_owned(),
        message: format!(
            "{tool} is not among the tools this workflow may call ({}): {tools}",
            allowed.source
        ),
        unblock_hint: format!(
            "use one of: {tools}; or start a workflow that is allowed to call {tool}"
        ),
        required_tools: Vec::new(),
        retry_after_ms: None,
    }
}

fn sequence_violation(tool: &str, need: &Requirement) -> Violation {
    Violation {
        rule_id: need.rule_id.to_string(),
        rule_kind: RuleKind::Sequence,
        tool: tool.to_owned(),
        message: format!(
            "{tool} may run only after {} has been called in this workflow, and it has not been",
            need.tool
        ),
        unblock_hint: format!("call {} first", need.tool),
        required_tools: vec![need.tool.to_string()],
        retry_after_ms: None,
    }
}

fn conditional_violation(tool: &str, need: &Requirement, tally: ToolTally) -> Violation {
    let (state, hint) = if tally.finished == 0 {
        (
            "it has not been called",
            format!("call {} and make it succeed first", need.tool),
        )
    } else {
        (
            "its last call failed",
            format!(
                "fix what made {} fail and call it again until it succeeds",
                need.tool
            ),
        )
    };
    Violation {
        rule_id: need.rule_id.to_string(),
        rule_kind: RuleKind::Conditional,
        tool: tool.to_owned(),
        message: format!(
            "{tool} may run only after {} succeeded in this workflow; {state}",
            need.tool
        ),
        unblock_hint: hint,
        required_tools: vec![need.tool.to_string()],
        retry_after_ms: None,
    }
}

fn exclusive_violation(
    group: &ExclusiveGroup,
    running: &RunningCalls,
    call: &CallRequest<'_>,
) -> Option<Violation> {
    for member in &group.tools {
        let blocker = match group.scope {
            Scope::Global => running.any(member),
            Scope::Workflow => running.any_in_workflow(member, call.workflow_id),
        };
        if let Some(blocker) = blocker {
            let scope = match group.scope {
                Scope::Global => "anywhere in the orchestrator",
                Scope::Workflow => "in the same workflow",
            };
            return Some(Violation {
                rule_id: group.id.to_string(),
                rule_kind: RuleKind::Exclusive,
                tool: call.tool.to_owned(),
                message: format!(
                    "{} cannot run while {member} is running {scope} (call {} in workflow {}); \
                     these tools never run at the same time: {}",
                    call.tool,
                    blocker.call_id,
                    blocker.workflow_id,
                    group.tools.join(", ")
                ),
                unblock_hint: format!(
                    "wait: {member} is running in workflow {}; retry when it has finished",
                    blocker.workflow_id
                ),
                required_tools: vec![member.to_string()],
                retry_after_ms: None,
            });
        }
    }
    None
}

mod limits;
mod state;

pub use limits::{Buckets, RateLimit, RateState, TokenBucket, ToolLimits, consume};
pub use state::{RunningCall, RunningCalls, ToolTally, WorkflowHistory};

#[cfg(test)]
mod tests;
