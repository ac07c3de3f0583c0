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
    /// A `deny` rule refuses the call outright (usually under a condition on its arguments).
    Deny,
    /// The workflow has seen labels that make calls of this tool's label denied or gated.
    Flow,
    /// The workflow runs a template and the call is not its next step.
    TemplateOrder,
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
            RuleKind::Deny => "deny",
            RuleKind::Flow => "flow",
            RuleKind::TemplateOrder => "template_order",
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
    /// The rule holds only for calls whose condition is true.
    pub when: Option<Arc<Condition>>,
}

/// A rule that refuses calls of its tool outright, when its condition holds.
#[derive(Debug, Clone)]
pub struct DenyRule {
    pub id: Name,
    pub message: String,
    pub when: Option<Arc<Condition>>,
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
    pub gate_when: Option<Arc<Condition>>,
    pub limits: ToolLimits,
    pub limits_when: Option<Arc<Condition>>,
    pub denials: Vec<DenyRule>,
    /// The tool's labels from the configuration (its own and its server's).
    pub labels: Vec<Name>,
}

/// Every rule of a configuration, indexed by tool.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    tools: Map<Name, ToolPolicy>,
    groups: Vec<ExclusiveGroup>,
    /// The condition of each group, by the group's index.
    group_when: Vec<Option<Arc<Condition>>>,
    flows: Vec<FlowRule>,
    /// Flow rules by the label they catch (`to`), so a decision looks only at its tool's labels.
    flows_by_label: Map<Name, Vec<usize>>,
}

impl PolicySet {
    pub fn add_sequence(&mut self, rule_id: &Name, tool: &Name, after: &Name) {
        self.add_requirement(RuleKind::Sequence, rule_id, tool, after, None);
    }

    pub fn add_conditional(&mut self, rule_id: &Name, tool: &Name, requires: &Name) {
        self.add_requirement(RuleKind::Conditional, rule_id, tool, requires, None);
    }

    /// A sequence (`kind` Sequence) or conditional requirement, optionally under a condition.
    pub fn add_requirement(
        &mut self,
        kind: RuleKind,
        rule_id: &Name,
        tool: &Name,
        need: &Name,
        when: Option<Arc<Condition>>,
    ) {
        let requirement = Requirement {
            rule_id: rule_id.clone(),
            tool: need.clone(),
            when,
        };
        let policy = self.entry(tool);
        match kind {
            RuleKind::Conditional => policy.requires_success.push(requirement),
            _ => policy.after.push(requirement),
        }
    }

    pub fn add_exclusive(&mut self, group: ExclusiveGroup) {
        self.add_exclusive_when(group, None);
    }

    pub fn add_exclusive_when(&mut self, group: ExclusiveGroup, when: Option<Arc<Condition>>) {
        let index = self.groups.len();
        for tool in &group.tools {
            self.entry(tool).groups.push(index);
        }
        self.groups.push(group);
        self.group_when.push(when);
    }

    pub fn add_gate(&mut self, tool: &Name, gate: ApprovalGate) {
        self.add_gate_when(tool, gate, None);
    }

    pub fn add_gate_when(&mut self, tool: &Name, gate: ApprovalGate, when: Option<Arc<Condition>>) {
        let policy = self.entry(tool);
        policy.gate = Some(gate);
        policy.gate_when = when;
    }

    pub fn set_limits(&mut self, tool: &Name, limits: ToolLimits) {
        self.set_limits_when(tool, limits, None);
    }

    pub fn set_limits_when(
        &mut self,
        tool: &Name,
        limits: ToolLimits,
        when: Option<Arc<Condition>>,
    ) {
        let policy = self.entry(tool);
        policy.limits = limits;
        policy.limits_when = when;
    }

    pub fn add_deny(&mut self, tool: &Name, rule: DenyRule) {
        self.entry(tool).denials.push(rule);
    }

    /// Adds `labels` to the tool's configured labels (duplicates are kept out).
    pub fn add_labels(&mut self, tool: &Name, labels: &[Name]) {
        let policy = self.entry(tool);
        for label in labels {
            if !policy.labels.contains(label) {
                policy.labels.push(label.clone());
            }
        }
    }

    pub fn add_flow(&mut self, rule: FlowRule) {
        let index = self.flows.len();
        self.flows_by_label
            .entry(rule.to.clone())
            .or_default()
            .push(index);
        self.flows.push(rule);
    }

    pub fn flows(&self) -> &[FlowRule] {
        &self.flows
    }

    /// The kind of rule a violation counts under (in `/metrics` and the status figures): a
    /// refused approval of a flow rule's gate is the flow rule's (its violation says `approval`,
    /// since a person or the clock said no), so a flow gate is told apart from an approval rule's;
    /// every other violation counts under its own kind.
    pub fn counted_kind(&self, violation: &Violation) -> RuleKind {
        let flow_gate = violation.rule_kind == RuleKind::Approval
            && self.flows.iter().any(|f| *f.id == *violation.rule_id);
        if flow_gate {
            RuleKind::Flow
        } else {
            violation.rule_kind
        }
    }

    /// The tool's configured labels.
    pub fn labels_of(&self, tool: &str) -> &[Name] {
        self.tools.get(tool).map_or(&[], |p| p.labels.as_slice())
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

    /// The condition of the group at `index`, if it has one.
    pub fn group_condition(&self, index: usize) -> Option<&Condition> {
        self.group_when.get(index).and_then(|w| w.as_deref())
    }

    fn entry(&mut self, tool: &Name) -> &mut ToolPolicy {
        self.tools.entry(tool.clone()).or_default()
    }
}

/// The call being decided.
#[derive(Debug, Clone, Default)]
pub struct CallRequest<'a> {
    pub workflow_id: &'a str,
    pub tool: &'a str,
    /// The caller's identity, the workflow's template and the call's arguments: what conditions
    /// see. `arguments` is `None` when they are not known yet (the outlook of a next call): rules
    /// under a condition then neither block nor gate.
    pub caller: &'a str,
    pub template: Option<&'a str>,
    pub arguments: Option<&'a serde_json::Value>,
    /// Labels the tool has beyond the configured ones (from its server's annotations).
    pub learned_labels: &'a [Name],
    /// A gate of the template step this call is, on top of any approval rule of its tool.
    pub step_gate: Option<&'a ApprovalGate>,
    /// The call's approval was already given: gates no longer apply, every other rule still does.
    pub approval_granted: bool,
    /// The tools the workflow may call, when it is restricted.
    pub allowed: Option<&'a AllowList>,
    /// Where the workflow's template stands, when it runs one: only its next step may be called.
    pub order: Option<StepOrder<'a>>,
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
        /// Why the call waits, when a rule says more than its id (a condition, a flow): shown to
        /// the person asked.
        reason: String,
    },
}

/// What a decision looked at beyond the rules: recorded with it in the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Each condition evaluated, with its result.
    pub conditions: Vec<ConditionResult>,
    /// The called tool's labels (configured and learned): what the call brings into the workflow
    /// if it runs.
    pub labels: Vec<Name>,
}

/// Decides one call. Ordering rules (sequence, conditional, a template's order), exclusive groups,
/// limits, deny and flow rules are all checked and all reported; approval is asked for only when
/// nothing else blocks the call, so that nobody is asked to approve a call that could not run
/// anyway.
pub fn decide(
    policies: &PolicySet,
    history: &WorkflowHistory,
    running: &RunningCalls,
    rates: RateState<'_>,
    call: &CallRequest<'_>,
) -> Decision {
    decide_traced(policies, history, running, rates, call).0
}

/// [`decide`], with what the decision looked at (conditions, labels) for the audit record.
pub fn decide_traced(
    policies: &PolicySet,
    history: &WorkflowHistory,
    running: &RunningCalls,
    rates: RateState<'_>,
    call: &CallRequest<'_>,
) -> (Decision, Trace) {
    let mut violations = Vec::new();
    let mut trace = Trace::default();
    let out_of_order = call.order.and_then(|order| order.violation(call.tool));
    if let Some(allowed) = call.allowed
        && !allowed.tools.contains(call.tool)
    {
        violations.push(allow_list_violation(call.tool, allowed));
        violations.extend(out_of_order);
        return (Decision::Deny { violations }, trace);
    }
    violations.extend(out_of_order);
    let policy = policies.tool(call.tool);
    let configured = policy.map_or(&[][..], |p| p.labels.as_slice());
    if !configured.is_empty() || !call.learned_labels.is_empty() {
        trace.labels = configured.to_vec();
        for label in call.learned_labels {
            if !trace.labels.contains(label) {
                trace.labels.push(label.clone());
            }
        }
    }
    let facts = Facts {
        arguments: call.arguments,
        caller: call.caller,
        tool: call.tool,
        workflow_id: call.workflow_id,
        template: call.template,
    };
    let mut conditions = Evaluator::new(facts, &history.labels);
    let mut gates: Vec<(&ApprovalGate, Option<String>)> = Vec::new();
    if let Some(policy) = policy {
        for rule in &policy.denials {
            match conditions.holds(rule.when.as_deref()) {
                Held::Yes => violations.push(deny_violation(call.tool, rule)),
                Held::Failed(e) => violations.push(condition_failed(
                    call.tool,
                    &rule.id,
                    RuleKind::Deny,
                    rule.when.as_deref(),
                    &e,
                )),
                Held::No | Held::Unknown => {}
            }
        }
        for need in &policy.after {
            match conditions.holds(need.when.as_deref()) {
                Held::Yes if history.tally(&need.tool).finished == 0 => {
                    violations.push(sequence_violation(call.tool, need))
                }
                Held::Failed(e) => {
                    push_failed(&mut violations, call.tool, need, RuleKind::Sequence, &e)
                }
                _ => {}
            }
        }
        for need in &policy.requires_success {
            let tally = history.tally(&need.tool);
            match conditions.holds(need.when.as_deref()) {
                Held::Yes if !tally.last_succeeded => {
                    violations.push(conditional_violation(call.tool, need, tally))
                }
                Held::Failed(e) => {
                    push_failed(&mut violations, call.tool, need, RuleKind::Conditional, &e)
                }
                _ => {}
            }
        }
        for &index in &policy.groups {
            let group = &policies.groups[index];
            match conditions.holds(policies.group_condition(index)) {
                Held::Yes => {
                    if let Some(violation) = exclusive_violation(group, running, call) {
                        violations.push(violation);
                    }
                }
                Held::Failed(e) => violations.push(condition_failed(
                    call.tool,
                    &group.id,
                    RuleKind::Exclusive,
                    policies.group_condition(index),
                    &e,
                )),
                Held::No | Held::Unknown => {}
            }
        }
        match conditions.holds(policy.limits_when.as_deref()) {
            Held::Yes => {
                limits::limit_violations(&policy.limits, running, rates, call, &mut violations)
            }
            Held::Failed(e) => violations.push(condition_failed(
                call.tool,
                policy.limits.rule_id.as_deref().unwrap_or("limit"),
                RuleKind::Concurrency,
                policy.limits_when.as_deref(),
                &e,
            )),
            Held::No | Held::Unknown => {}
        }
        if !call.approval_granted
            && let Some(gate) = &policy.gate
        {
            match conditions.holds(policy.gate_when.as_deref()) {
                Held::Yes => gates.push((
                    gate,
                    policy
                        .gate_when
                        .as_deref()
                        .map(|c| format!("rule {}: `{}` holds", gate.id, c.source)),
                )),
                Held::Failed(e) => violations.push(condition_failed(
                    call.tool,
                    &gate.id,
                    RuleKind::Approval,
                    policy.gate_when.as_deref(),
                    &e,
                )),
                Held::No | Held::Unknown => {}
            }
        }
    }
    if !history.labels.is_empty() {
        for label in &trace.labels {
            let Some(indices) = policies.flows_by_label.get(label) else {
                continue;
            };
            for &index in indices {
                let rule = &policies.flows[index];
                let Some(origins) = rule.caught(&history.labels) else {
                    continue;
                };
                match (conditions.holds(rule.when.as_deref()), &rule.action) {
                    (Held::Yes, FlowAction::Deny) => {
                        violations.push(rule.violation(call.tool, &origins))
                    }
                    (Held::Yes, FlowAction::Approval(gate)) if !call.approval_granted => {
                        gates.push((gate, Some(rule.reason(call.tool, &origins))))
                    }
                    (Held::Failed(e), _) => violations.push(condition_failed(
                        call.tool,
                        &rule.id,
                        RuleKind::Flow,
                        rule.when.as_deref(),
                        &e,
                    )),
                    _ => {}
                }
            }
        }
    }
    trace.conditions = std::mem::take(&mut conditions.results);
    if !violations.is_empty() {
        return (Decision::Deny { violations }, trace);
    }
    if !call.approval_granted {
        if let Some(step_gate) = call.step_gate {
            gates.insert(0, (step_gate, None));
        }
        if let Some((gate, _)) = gates.first() {
            let gate = (*gate).clone();
            let reason = gates
                .iter()
                .filter_map(|(_, r)| r.as_deref())
                .collect::<Vec<_>>()
                .join("; ");
            return (Decision::NeedsApproval { gate, reason }, trace);
        }
    }
    (Decision::Allow, trace)
}

fn push_failed(
    violations: &mut Vec<Violation>,
    tool: &str,
    need: &Requirement,
    kind: RuleKind,
    error: &str,
) {
    if !violations.iter().any(|v| *v.rule_id == *need.rule_id) {
        violations.push(condition_failed(
            tool,
            &need.rule_id,
            kind,
            need.when.as_deref(),
            error,
        ));
    }
}

/// A condition that could not be evaluated refuses the call: never read as "false".
fn condition_failed(
    tool: &str,
    rule_id: &str,
    kind: RuleKind,
    condition: Option<&Condition>,
    error: &str,
) -> Violation {
    let source = condition.map_or("", |c| c.source.as_str());
    Violation {
        rule_id: rule_id.to_owned(),
        rule_kind: kind,
        tool: tool.to_owned(),
        message: format!(
            "{tool} is refused: the condition of rule {rule_id} (`{source}`) could not be \
             evaluated for this call: {error}"
        ),
        unblock_hint: format!(
            "give {tool} the arguments the condition reads (`{source}`); a condition that cannot \
             be evaluated refuses the call"
        ),
        required_tools: Vec::new(),
        retry_after_ms: None,
    }
}

fn deny_violation(tool: &str, rule: &DenyRule) -> Violation {
    let because = rule
        .when
        .as_deref()
        .map(|c| format!(" (`{}` holds)", c.source))
        .unwrap_or_default();
    Violation {
        rule_id: rule.id.to_string(),
        rule_kind: RuleKind::Deny,
        tool: tool.to_owned(),
        message: format!("{}{because}", rule.message),
        unblock_hint: "change the call so that the rule's condition does not hold".to_owned(),
        required_tools: Vec::new(),
        retry_after_ms: None,
    }
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

mod condition;
mod flow;
mod limits;
mod order;
mod state;

pub use condition::{Condition, ConditionResult, Facts, VARIABLES, WORKFLOW_FIELDS};
use condition::{Evaluator, Held};
pub use flow::{FlowAction, FlowRule, LabelOrigin, LabelSet, RecentLabels};
pub use limits::{Buckets, RateLimit, RateState, TokenBucket, ToolLimits, consume};
pub use order::{NextStep, StepOrder};
pub use state::{RunningCall, RunningCalls, ToolTally, WorkflowHistory};

#[cfg(test)]
mod tests;

#[cfg(test)]
mod flow_tests;
