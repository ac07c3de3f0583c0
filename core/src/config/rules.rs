//! Checking the `rules` of a configuration into the indexed policy set, and finding dependency cycles.

use super::check::{Checker, DEFAULT_TOOL_TIMEOUT};
use super::raw::{RawFlowAction, RawRate, RawRule, RawScope};
use super::{RuleSummary, ToolRoute, parse_duration};
use crate::policy::{
    ApprovalGate, Condition, DenyRule, ExclusiveGroup, FlowAction, FlowRule, Name, PolicySet,
    RateLimit, RuleKind, Scope, ToolLimits,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Compiles a rule's `when` at `path`; a condition that does not compile is a problem there.
fn condition(
    c: &mut Checker,
    path: &str,
    id: &Name,
    when: Option<&String>,
) -> Option<Arc<Condition>> {
    let source = when?;
    match Condition::compile(id, source) {
        Ok(condition) => Some(Arc::new(condition)),
        Err(message) => {
            c.problem(format!("{path}.when"), message);
            None
        }
    }
}

/// " when `args.amount > 1000`", for descriptions.
fn when_suffix(when: Option<&String>) -> String {
    when.map(|w| format!(" when `{w}`")).unwrap_or_default()
}

fn parse_rate(c: &mut Checker, path: String, rate: Option<&RawRate>) -> Option<RateLimit> {
    let rate = rate?;
    if rate.calls == 0 {
        c.problem(format!("{path}.calls"), "must be at least 1");
        return None;
    }
    match parse_duration(&rate.per) {
        Ok(per) if !per.is_zero() => Some(RateLimit {
            calls: rate.calls,
            per,
        }),
        Ok(_) => {
            c.problem(format!("{path}.per"), "must be longer than zero");
            None
        }
        Err(message) => {
            c.problem(format!("{path}.per"), message);
            None
        }
    }
}

pub(super) fn check_rules(
    c: &mut Checker,
    raw: &[RawRule],
    tools: &BTreeMap<Name, ToolRoute>,
    approval_timeout: Duration,
    known_labels: &BTreeSet<Name>,
) -> (PolicySet, Vec<RuleSummary>) {
    let mut policies = PolicySet::default();
    let mut summaries = Vec::new();
    let mut ids = HashSet::new();
    let mut gated: HashMap<Name, usize> = HashMap::new();
    let mut limited: HashMap<Name, usize> = HashMap::new();
    for (i, rule) in raw.iter().enumerate() {
        let path = format!("rules[{i}]");
        let id = rule_id(rule);
        if id.is_empty() {
            c.problem(format!("{path}.id"), "must not be empty");
        } else if !ids.insert(id.to_owned()) {
            c.problem(format!("{path}.id"), format!("duplicate rule id {id:?}"));
        }
        let id: Name = id.into();
        let when = rule_when(rule);
        let compiled = condition(c, &path, &id, when);
        let suffix = when_suffix(when);
        match rule {
            RawRule::Sequence { tool, after, .. }
            | RawRule::Conditional {
                tool,
                requires_success: after,
                ..
            } => {
                let sequence = matches!(rule, RawRule::Sequence { .. });
                let field = if sequence {
                    "after"
                } else {
                    "requires_success"
                };
                if after.is_empty() {
                    c.problem(format!("{path}.{field}"), "name at least one tool");
                }
                let target = c.tool(tools, format!("{path}.tool"), tool);
                for (j, need) in after.iter().enumerate() {
                    let need_path = format!("{path}.{field}[{j}]");
                    let Some(need) = c.tool(tools, need_path.clone(), need) else {
                        continue;
                    };
                    let Some(target) = &target else { continue };
                    if need == *target {
                        c.problem(need_path, format!("{tool} cannot depend on itself"));
                    } else {
                        let kind = if sequence {
                            RuleKind::Sequence
                        } else {
                            RuleKind::Conditional
                        };
                        policies.add_requirement(kind, &id, target, &need, compiled.clone());
                    }
                }
                let verb = if sequence {
                    "after"
                } else {
                    "after a successful"
                };
                summaries.push(RuleSummary {
                    id: id.to_string(),
                    kind: if sequence { "sequence" } else { "conditional" },
                    description: format!("{tool} only {verb} {}{suffix}", after.join(", ")),
                });
            }
            RawRule::Exclusive {
                tools: members,
                scope,
                ..
            } => {
                if members.is_empty() {
                    c.problem(format!("{path}.tools"), "name at least one tool");
                }
                let mut resolved: Vec<Name> = Vec::new();
                for (j, member) in members.iter().enumerate() {
                    if let Some(name) = c.tool(tools, format!("{path}.tools[{j}]"), member) {
                        if resolved.contains(&name) {
                            c.problem(
                                format!("{path}.tools[{j}]"),
                                format!("{member} is listed twice"),
                            );
                        } else {
                            resolved.push(name);
                        }
                    }
                }
                let scope = match scope {
                    RawScope::Workflow => Scope::Workflow,
                    RawScope::Global => Scope::Global,
                };
                summaries.push(RuleSummary {
                    id: id.to_string(),
                    kind: "exclusive",
                    description: format!(
                        "never at the same time ({scope}): {}{suffix}",
                        members.join(", ")
                    ),
                });
                policies.add_exclusive_when(
                    ExclusiveGroup {
                        id: id.clone(),
                        tools: resolved,
                        scope,
                    },
                    compiled,
                );
            }
            RawRule::Approval {
                tool,
                timeout,
                four_eyes,
                ..
            } => {
                let timeout = c.duration(
                    format!("{path}.timeout"),
                    timeout.as_deref(),
                    approval_timeout,
                );
                if let Some(name) = c.tool(tools, format!("{path}.tool"), tool) {
                    if let Some(first) = gated.insert(name.clone(), i) {
                        c.problem(
                            format!("{path}.tool"),
                            format!("{tool} already has an approval rule at rules[{first}]"),
                        );
                    }
                    policies.add_gate_when(
                        &name,
                        ApprovalGate {
                            id: id.clone(),
                            timeout,
                            four_eyes: *four_eyes,
                        },
                        compiled,
                    );
                }
                let eyes = if *four_eyes {
                    ", by someone other than the caller"
                } else {
                    ""
                };
                summaries.push(RuleSummary {
                    id: id.to_string(),
                    kind: "approval",
                    description: format!(
                        "{tool} waits for a person's approval{eyes}{suffix} (time-out {})",
                        humantime::format_duration(timeout)
                    ),
                });
            }
            RawRule::Limit {
                tool,
                timeout,
                max_concurrent,
                rate,
                rate_per_workflow,
                ..
            } => {
                let timeout = timeout
                    .as_deref()
                    .map(|t| c.duration(format!("{path}.timeout"), Some(t), DEFAULT_TOOL_TIMEOUT));
                if *max_concurrent == Some(0) {
                    c.problem(format!("{path}.max_concurrent"), "must be at least 1");
                }
                let rate = parse_rate(c, format!("{path}.rate"), rate.as_ref());
                let rate_per_workflow = parse_rate(
                    c,
                    format!("{path}.rate_per_workflow"),
                    rate_per_workflow.as_ref(),
                );
                if timeout.is_none()
                    && max_concurrent.is_none()
                    && rate.is_none()
                    && rate_per_workflow.is_none()
                {
                    c.problem(&path, "a limit needs at least one of timeout, max_concurrent, rate, rate_per_workflow");
                }
                if let Some(name) = c.tool(tools, format!("{path}.tool"), tool) {
                    if let Some(first) = limited.insert(name.clone(), i) {
                        c.problem(
                            format!("{path}.tool"),
                            format!("{tool} already has a limit rule at rules[{first}]"),
                        );
                    }
                    let limits = ToolLimits {
                        rule_id: Some(id.clone()),
                        max_concurrent: *max_concurrent,
                        rate,
                        rate_per_workflow,
                        timeout,
                    };
                    policies.set_limits_when(&name, limits, compiled);
                }
                let mut parts = Vec::new();
                if let Some(t) = timeout {
                    parts.push(format!("time-out {}", humantime::format_duration(t)));
                }
                if let Some(n) = max_concurrent {
                    parts.push(format!("at most {n} at a time"));
                }
                for (label, r) in [("", rate), (" per workflow", rate_per_workflow)] {
                    if let Some(r) = r {
                        parts.push(format!(
                            "{} per {}{label}",
                            r.calls,
                            humantime::format_duration(r.per)
                        ));
                    }
                }
                summaries.push(RuleSummary {
                    id: id.to_string(),
                    kind: "limit",
                    description: format!("{tool}: {}{suffix}", parts.join(", ")),
                });
            }
            RawRule::Deny { tool, message, .. } => {
                let message = message
                    .clone()
                    .unwrap_or_else(|| format!("{tool} is refused by rule {id}"));
                if message.trim().is_empty() {
                    c.problem(format!("{path}.message"), "must not be empty");
                }
                if let Some(name) = c.tool(tools, format!("{path}.tool"), tool) {
                    policies.add_deny(
                        &name,
                        DenyRule {
                            id: id.clone(),
                            message: message.clone(),
                            when: compiled,
                        },
                    );
                }
                let condition = if when.is_some() {
                    suffix
                } else {
                    " (always)".to_owned()
                };
                summaries.push(RuleSummary {
                    id: id.to_string(),
                    kind: "deny",
                    description: format!("{tool} is refused{condition}: {message}"),
                });
            }
            RawRule::Flow {
                from,
                to,
                action,
                timeout,
                four_eyes,
                ..
            } => {
                if from.is_empty() {
                    c.problem(format!("{path}.from"), "name at least one label");
                }
                let mut labels: Vec<Name> = Vec::new();
                for (j, label) in from.iter().enumerate() {
                    if let Some(label) =
                        known_label(c, known_labels, format!("{path}.from[{j}]"), label)
                        && !labels.contains(&label)
                    {
                        labels.push(label);
                    }
                }
                let target = known_label(c, known_labels, format!("{path}.to"), to);
                let timeout_given = timeout.is_some();
                let timeout = c.duration(
                    format!("{path}.timeout"),
                    timeout.as_deref(),
                    approval_timeout,
                );
                if *action == RawFlowAction::Deny && (*four_eyes || timeout_given) {
                    c.problem(
                        &path,
                        "timeout and four_eyes belong to \"action\": \"approval\"; a denial has neither",
                    );
                }
                let (flow_action, verb) = match action {
                    RawFlowAction::Deny => (FlowAction::Deny, "are refused".to_owned()),
                    RawFlowAction::Approval => (
                        FlowAction::Approval(ApprovalGate {
                            id: id.clone(),
                            timeout,
                            four_eyes: *four_eyes,
                        }),
                        format!(
                            "wait for a person's approval{} (time-out {})",
                            if *four_eyes {
                                ", by someone other than the caller"
                            } else {
                                ""
                            },
                            humantime::format_duration(timeout)
                        ),
                    ),
                };
                if let Some(to) = target {
                    policies.add_flow(FlowRule {
                        id: id.clone(),
                        from: labels,
                        to,
                        action: flow_action,
                        when: compiled,
                    });
                }
                summaries.push(RuleSummary {
                    id: id.to_string(),
                    kind: "flow",
                    description: format!(
                        "once a workflow has seen {}, calls of tools labelled {to} {verb}{suffix}",
                        from.join(" + ")
                    ),
                });
            }
        }
    }
    (policies, summaries)
}

/// A label used by a flow rule must be one some tool can carry.
fn known_label(c: &mut Checker, known: &BTreeSet<Name>, path: String, label: &str) -> Option<Name> {
    if let Some(name) = known.get(label) {
        return Some(name.clone());
    }
    let listed = known
        .iter()
        .map(|l| l.as_ref())
        .collect::<Vec<_>>()
        .join(", ");
    let listed = if listed.is_empty() {
        "none (give tools labels under \"labels\")".to_owned()
    } else {
        listed
    };
    c.problem(
        path,
        format!("no tool carries label {label:?}; the labels in use are: {listed}"),
    );
    None
}

fn rule_when(rule: &RawRule) -> Option<&String> {
    match rule {
        RawRule::Sequence { when, .. }
        | RawRule::Conditional { when, .. }
        | RawRule::Exclusive { when, .. }
        | RawRule::Approval { when, .. }
        | RawRule::Limit { when, .. }
        | RawRule::Deny { when, .. }
        | RawRule::Flow { when, .. } => when.as_ref(),
    }
}

fn rule_id(rule: &RawRule) -> &str {
    match rule {
        RawRule::Sequence { id, .. }
        | RawRule::Conditional { id, .. }
        | RawRule::Exclusive { id, .. }
        | RawRule::Approval { id, .. }
        | RawRule::Limit { id, .. }
        | RawRule::Deny { id, .. }
        | RawRule::Flow { id, .. } => id,
    }
}

/// Reports every dependency cycle once (a cycle makes its tools uncallable).
pub(super) fn check_cycles(
    c: &mut Checker,
    policies: &PolicySet,
    tools: &BTreeMap<Name, ToolRoute>,
) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        Visiting,
        Done,
    }
    fn visit<'a>(
        tool: &'a Name,
        policies: &'a PolicySet,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<(&'a Name, &'a Name)>,
        cycles: &mut Vec<String>,
    ) {
        marks.insert(tool, Mark::Visiting);
        for need in policies.prerequisites(tool) {
            match marks.get(&*need.tool).copied().unwrap_or(Mark::Unvisited) {
                Mark::Unvisited => {
                    stack.push((&need.tool, &need.rule_id));
                    visit(&need.tool, policies, marks, stack, cycles);
                    stack.pop();
                }
                Mark::Visiting => {
                    let start = stack
                        .iter()
                        .position(|(t, _)| **t == need.tool)
                        .unwrap_or(0);
                    let mut path: Vec<String> = stack[start..]
                        .iter()
                        .map(|(t, r)| format!("{t} (rule {r})"))
                        .collect();
                    path.push(format!("{} (rule {})", need.tool, need.rule_id));
                    cycles.push(path.join(" -> "));
                }
                Mark::Done => {}
            }
        }
        marks.insert(tool, Mark::Done);
    }
    let mut marks = HashMap::new();
    let mut cycles = Vec::new();
    for tool in tools.keys() {
        if marks.get(&**tool).copied().unwrap_or(Mark::Unvisited) == Mark::Unvisited {
            let mut stack = vec![(tool, tool)];
            visit(tool, policies, &mut marks, &mut stack, &mut cycles);
        }
    }
    for cycle in cycles {
        c.problem(
            "rules",
            format!("dependency cycle: {cycle}; none of these tools could ever run"),
        );
    }
}
