//! Template order: a workflow bound to a template calls its tools in the template's order.
//!
//! A template run's driver calls each step in turn; a caller that drives a template itself (an MCP
//! session bound to one, a gRPC client that started a workflow of one) is held to the same order. A
//! call that is not the next step would run a template's tool before the steps it follows, or
//! without the approval gate of the step that uses it: it is refused, naming the next step, as a
//! sequence rule names what to call first. Tools that are not steps of the template at all are
//! refused as well (the template's allow-list says so first).
//!
//! Pure: the workflow's progress is passed in.

use super::{RuleKind, Violation};

/// Where a template-bound workflow stands, as the engine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOrder<'a> {
    pub template: &'a str,
    /// The next step; `None` once every step is done.
    pub next: Option<NextStep<'a>>,
    /// The step the call was made as (a template run's step, or a call of the next step's tool,
    /// bound to it when it was asked for); `None` when it was not made as a step.
    pub claimed: Option<&'a str>,
    /// How many steps the template has (for messages).
    pub steps_total: usize,
}

/// A template's next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextStep<'a> {
    pub name: &'a str,
    pub tool: &'a str,
}

impl StepOrder<'_> {
    /// The rule id of a refusal: the template, as its allow-list names it.
    fn rule_id(&self) -> String {
        format!("template {}", self.template)
    }

    /// Why `tool` may not run now; `None` when the call is the next step.
    pub(super) fn violation(&self, tool: &str) -> Option<Violation> {
        let (message, unblock_hint, required_tools) = match self.next {
            Some(next) if next.tool == tool && self.claimed == Some(next.name) => return None,
            // The next step's tool, but not asked for as that step: the workflow moved on while
            // the call was on its way. Run as the step it would get the step's gate; refused, it
            // can be asked for again.
            Some(next) if next.tool == tool => (
                format!(
                    "{tool} was asked for before step {} became the next step of template {} \
                     (another call of this workflow finished meanwhile)",
                    next.name, self.template
                ),
                format!("call {tool} again: it is now step {}", next.name),
                vec![tool.to_owned()],
            ),
            Some(next) => (
                format!(
                    "{tool} is not the next step of template {}: the next step is {} ({}); a \
                     workflow of a template calls its tools in the template's order",
                    self.template, next.name, next.tool
                ),
                format!("call {} first (step {})", next.tool, next.name),
                vec![next.tool.to_owned()],
            ),
            None => (
                format!(
                    "every step of template {} is done ({} of {}): its workflow calls nothing more",
                    self.template, self.steps_total, self.steps_total
                ),
                format!("start a new workflow to call {tool}"),
                Vec::new(),
            ),
        };
        Some(Violation {
            rule_id: self.rule_id(),
            rule_kind: RuleKind::TemplateOrder,
            tool: tool.to_owned(),
            message,
            unblock_hint,
            required_tools,
            retry_after_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::collections::BTreeSet;

    static EMPTY: std::sync::LazyLock<Buckets> = std::sync::LazyLock::new(Buckets::default);

    /// The steps of template `onboard`: (name, tool); `welcome` is gated.
    const STEPS: [(&str, &str); 4] = [
        ("validate", "validate"),
        ("process", "process"),
        ("welcome", "notify"),
        ("team", "notify"),
    ];

    fn order(done: usize, claimed: Option<usize>) -> StepOrder<'static> {
        StepOrder {
            template: "onboard",
            next: STEPS.get(done).map(|&(name, tool)| NextStep { name, tool }),
            claimed: claimed.map(|i| STEPS[i].0),
            steps_total: STEPS.len(),
        }
    }

    fn gate() -> ApprovalGate {
        ApprovalGate {
            id: "onboard.welcome".into(),
            timeout: std::time::Duration::from_secs(60),
            four_eyes: false,
        }
    }

    fn decide_at(
        policies: &PolicySet,
        allowed: Option<&AllowList>,
        tool: &str,
        done: usize,
        claimed: Option<usize>,
    ) -> Decision {
        let gate = gate();
        let call = CallRequest {
            workflow_id: "wf-1",
            tool,
            template: Some("onboard"),
            arguments: Some(&serde_json::Value::Null),
            step_gate: claimed.filter(|&i| STEPS[i].0 == "welcome").map(|_| &gate),
            allowed,
            order: Some(order(done, claimed)),
            ..CallRequest::default()
        };
        let rates = RateState {
            global: &EMPTY,
            workflow: &EMPTY,
        };
        decide(
            policies,
            &WorkflowHistory::default(),
            &RunningCalls::default(),
            rates,
            &call,
        )
    }

    /// (rule kind, message needle, required tools) of each violation.
    fn refused(decision: Decision) -> Vec<(RuleKind, String, Vec<String>)> {
        match decision {
            Decision::Deny { violations } => violations
                .into_iter()
                .map(|v| (v.rule_kind, v.message, v.required_tools))
                .collect(),
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn only_the_next_step_runs_and_a_refusal_names_it() {
        let none = PolicySet::default();
        // (tool, steps done, claimed step, what is expected)
        let table: [(&str, usize, Option<usize>, &str); 7] = [
            ("validate", 0, Some(0), "allow"),
            ("notify", 0, None, "refused: next is validate"),
            ("process", 0, None, "refused: next is validate"),
            ("notify", 2, Some(2), "gated"),
            ("notify", 2, None, "refused: moved on"),
            ("notify", 3, Some(2), "refused: moved on"),
            ("notify", 4, None, "refused: all done"),
        ];
        for (tool, done, claimed, expected) in table {
            let decision = decide_at(&none, None, tool, done, claimed);
            let case = format!("{tool} after {done} step(s), claimed {claimed:?}");
            match expected {
                "allow" => assert_eq!(decision, Decision::Allow, "{case}"),
                "gated" => assert!(
                    matches!(&decision, Decision::NeedsApproval { gate, .. } if *gate.id == *"onboard.welcome"),
                    "{case}: {decision:?}"
                ),
                _ => {
                    let violations = refused(decision);
                    assert_eq!(violations.len(), 1, "{case}: {violations:?}");
                    let (kind, message, required) = &violations[0];
                    assert_eq!(*kind, RuleKind::TemplateOrder, "{case}");
                    let (needle, needs): (&str, &[&str]) = match expected {
                        "refused: next is validate" => ("the next step is validate", &["validate"]),
                        "refused: moved on" => ("before step", &["notify"]),
                        _ => ("every step of template onboard is done", &[]),
                    };
                    assert!(message.contains(needle), "{case}: {message}");
                    assert_eq!(required, needs, "{case}");
                }
            }
        }
    }

    #[test]
    fn other_rules_are_reported_beside_the_order_and_an_outside_tool_names_the_next_step() {
        let mut policies = PolicySet::default();
        policies.add_sequence(&"seq".into(), &"process".into(), &"validate".into());
        let violations = refused(decide_at(&policies, None, "process", 0, None));
        let kinds: Vec<RuleKind> = violations.iter().map(|v| v.0).collect();
        assert_eq!(kinds, [RuleKind::TemplateOrder, RuleKind::Sequence]);

        let allowed = AllowList {
            source: "template onboard".into(),
            tools: ["validate", "process", "notify"]
                .into_iter()
                .map(Name::from)
                .collect::<BTreeSet<_>>(),
        };
        let violations = refused(decide_at(&policies, Some(&allowed), "backup", 1, None));
        let kinds: Vec<RuleKind> = violations.iter().map(|v| v.0).collect();
        assert_eq!(kinds, [RuleKind::AllowList, RuleKind::TemplateOrder]);
        assert!(
            violations[1].1.contains("the next step is process"),
            "{violations:?}"
        );
    }

    #[test]
    fn an_approved_step_is_decided_again_without_its_gate() {
        let gate = gate();
        let call = CallRequest {
            workflow_id: "wf-1",
            tool: "notify",
            step_gate: Some(&gate),
            approval_granted: true,
            order: Some(order(2, Some(2))),
            ..CallRequest::default()
        };
        let rates = RateState {
            global: &EMPTY,
            workflow: &EMPTY,
        };
        let decision = decide(
            &PolicySet::default(),
            &WorkflowHistory::default(),
            &RunningCalls::default(),
            rates,
            &call,
        );
        assert_eq!(decision, Decision::Allow);
    }
}
