//! Checking the `rules` of a configuration into the indexed policy set, and finding dependency cycles.

use super::check::{Checker, DEFAULT_TOOL_TIMEOUT};
use super::raw::{RawRate, RawRule, RawScope};
use super::{RuleSummary, ToolRoute, parse_duration};
use crate::policy::{ApprovalGate, ExclusiveGroup, Name, PolicySet, RateLimit, Scope, ToolLimits};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

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
                    } else if sequence {
                        policies.add_sequence(&id, target, &need);
                    } else {
                        policies.add_conditional(&id, target, &need);
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
                    description: format!("{tool} only {verb} {}", after.join(", ")),
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
                        "never at the same time ({scope}): {}",
                        members.join(", ")
                    ),
                });
                policies.add_exclusive(ExclusiveGroup {
                    id: id.clone(),
                    tools: resolved,
                    scope,
                });
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
                    policies.add_gate(
                        &name,
                        ApprovalGate {
                            id: id.clone(),
                            timeout,
                            four_eyes: *four_eyes,
                        },
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
                        "{tool} waits for a person's approval{eyes} (time-out {})",
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
                    policies.set_limits(&name, limits);
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
                    description: format!("{tool}: {}", parts.join(", ")),
                });
            }
        }
    }
    (policies, summaries)
}

fn rule_id(rule: &RawRule) -> &str {
    match rule {
        RawRule::Sequence { id, .. }
        | RawRule::Conditional { id, .. }
        | RawRule::Exclusive { id, .. }
        | RawRule::Approval { id, .. }
        | RawRule::Limit { id, .. } => id,
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
