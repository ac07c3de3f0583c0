//! The policy engine alone (figure 5): a 100-rule policy set, a workflow history of any length and any
//! number of live workflows with a call in flight, and a measurement loop that times every single
//! decision (an HDR histogram gives the p99 that criterion's means do not). The criterion bench in
//! `benches/policy.rs` uses the same fixture.

use crate::stats::{Latencies, median};
use conductor_core::policy::{
    ApprovalGate, Buckets, CallRequest, Condition, Decision, DenyRule, ExclusiveGroup, FlowAction,
    FlowRule, LabelOrigin, Name, PolicySet, RateState, RunningCall, RunningCalls, Scope,
    WorkflowHistory, decide,
};
use serde::Serialize;
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tools of the fixture: `t00` … `t49`.
pub const TOOLS: usize = 50;
/// The decided tool: two ordering rules and two workflow-scoped exclusive groups apply to it, all pass.
pub const DECIDED: usize = 25;

fn tool(i: usize) -> Name {
    format!("t{:02}", i % TOOLS).into()
}

/// The ordering part of both rule sets: `sequences` sequences (`t01` after `t00`, …), 30
/// conditionals and 20 exclusive groups of 3 (even ones scoped to the workflow, odd ones global).
fn ordering_rules(sequences: usize) -> PolicySet {
    let mut set = PolicySet::default();
    for i in 1..=sequences {
        set.add_sequence(&format!("seq-{i}").into(), &tool(i), &tool(i - 1));
    }
    for i in 0..30 {
        set.add_conditional(&format!("cond-{i}").into(), &tool(10 + i), &tool(i));
    }
    for g in 0..20 {
        let scope = if g % 2 == 0 {
            Scope::Workflow
        } else {
            Scope::Global
        };
        set.add_exclusive(ExclusiveGroup {
            id: format!("excl-{g}").into(),
            tools: vec![tool(2 * g), tool(2 * g + 1), tool(2 * g + 25)],
            scope,
        });
    }
    set
}

/// 100 rules over 50 tools: 40 sequences, 30 conditionals, 20 exclusive groups of 3 (even ones scoped
/// to the workflow, odd ones global), 10 approval gates.
pub fn policy_set() -> PolicySet {
    let mut set = ordering_rules(40);
    for i in 40..50 {
        set.add_gate(
            &tool(i),
            ApprovalGate {
                id: format!("gate-{i}").into(),
                timeout: Duration::from_secs(600),
                four_eyes: false,
            },
        );
    }
    set
}

/// Which rule set a fixture decides against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rules {
    /// [`policy_set`]: ordering, exclusive groups and gates, no conditions.
    Ordering,
    /// [`policy_set_with_flows`]: 10 flow rules and 10 CEL conditions among the 100, every condition
    /// on the decided tool (the worst case: all ten evaluated on one call).
    FlowsAndConditions,
    /// The same rules with the 10 conditions on 10 different tools, one of them the decided tool:
    /// a call evaluates the conditions of its own tool's rules only.
    FlowsAndSpreadConditions,
}

/// The label the decided tool carries in [`policy_set_with_flows`], and the one its history has seen.
const EGRESS: &str = "egress";
const SEEN: &str = "private";

/// 100 rules over 50 tools, 20 of them of the new kinds: 30 sequences, 30 conditionals, 20 exclusive
/// groups of 3, 10 flow rules into the decided tool's label (each from `private` and a label the
/// workflow has not seen, so all are checked and none is caught), and 10 deny rules on the decided
/// tool, each with a CEL condition over the call's arguments that is false for the measured call. The
/// decided call thus evaluates every one of the 10 conditions and looks at every flow rule.
pub fn policy_set_with_flows(spread: bool) -> PolicySet {
    let mut set = ordering_rules(30);
    set.add_labels(&tool(DECIDED), &[EGRESS.into()]);
    for i in 0..10 {
        set.add_flow(FlowRule {
            id: format!("flow-{i}").into(),
            from: vec![SEEN.into(), format!("untrusted-{i}").into()],
            to: EGRESS.into(),
            action: FlowAction::Deny,
            when: None,
        });
    }
    let conditions = [
        "args.amount > 10000",
        "!args.recipient.endsWith('@example.com')",
        "size(args.items) > 50",
        "args.currency != 'EUR'",
        "args.amount < 0",
        "'admin' in args.tags",
        "args.items.exists(i, i.price > 5000)",
        "caller.startsWith('untrusted:')",
        "args.priority == 'urgent' && args.amount > 1000",
        "workflow.labels.exists(l, l == 'untrusted')",
    ];
    for (i, source) in conditions.into_iter().enumerate() {
        let id: Name = format!("deny-{i}").into();
        let when = Condition::compile(&id, source)
            .unwrap_or_else(|e| panic!("the fixture's condition {source:?}: {e}"));
        let on = if spread {
            tool(DECIDED + i)
        } else {
            tool(DECIDED)
        };
        set.add_deny(
            &on,
            DenyRule {
                id,
                message: format!("refused by condition {i}"),
                when: Some(Arc::new(when)),
            },
        );
    }
    set
}

/// The measured call's arguments: every condition of [`policy_set_with_flows`] is false for them.
fn arguments() -> Value {
    json!({
        "amount": 120.5,
        "recipient": "ops@example.com",
        "currency": "EUR",
        "priority": "normal",
        "tags": ["billing"],
        "items": [{ "sku": "a-1", "price": 20 }, { "sku": "b-2", "price": 100.5 }]
    })
}

/// Everything one decision reads.
pub struct Fixture {
    pub policies: PolicySet,
    pub history: WorkflowHistory,
    pub running: RunningCalls,
    /// Rate-limit buckets (no rate rules in the set: empty).
    pub buckets: Buckets,
    pub workflow_id: String,
    pub tool: Name,
    pub arguments: Option<Value>,
}

impl Fixture {
    /// `history_events` finished calls in the decided workflow (its prerequisites first, then round
    /// robin over every tool) and `live_workflows` other workflows, each with one call in flight on a
    /// tool that no global group holds (round robin over the rest), so the decision is Allow.
    pub fn new(history_events: usize, live_workflows: usize) -> Fixture {
        Fixture::of(Rules::Ordering, history_events, live_workflows)
    }

    /// The same fixture against `rules`; with flows and conditions, the history has also seen the
    /// label `private` and the call carries arguments.
    pub fn of(rules: Rules, history_events: usize, live_workflows: usize) -> Fixture {
        let mut history = WorkflowHistory::default();
        history.record(&tool(DECIDED - 1), true);
        history.record(&tool(DECIDED - 10), true);
        for i in 2..history_events {
            history.record(&tool(i), true);
        }
        let (policies, arguments) = match rules {
            Rules::Ordering => (policy_set(), None),
            Rules::FlowsAndConditions | Rules::FlowsAndSpreadConditions => {
                let origin = LabelOrigin {
                    call_id: "c-000000000001".into(),
                    tool: tool(1).to_string(),
                    at_ms: 1_700_000_000_000,
                    workflow_id: None,
                };
                history.labels.bring(&[SEEN.into()], &origin);
                let spread = rules == Rules::FlowsAndSpreadConditions;
                (policy_set_with_flows(spread), Some(arguments()))
            }
        };
        let free: Vec<Name> = (0..TOOLS)
            .map(tool)
            .filter(|t| !global_member(&policies, t))
            .collect();
        let mut running = RunningCalls::default();
        for w in 0..live_workflows {
            let call = RunningCall {
                workflow_id: format!("wf-{w:012}").into(),
                call_id: format!("c-{w:012}").into(),
            };
            running.insert(&free[w % free.len()], call);
        }
        Fixture {
            policies,
            history,
            running,
            buckets: Buckets::default(),
            workflow_id: "wf-decided-00".into(),
            tool: tool(DECIDED),
            arguments,
        }
    }

    pub fn decide(&self) -> Decision {
        let request = CallRequest {
            workflow_id: &self.workflow_id,
            tool: &self.tool,
            step_gate: None,
            approval_granted: false,
            allowed: None,
            now_ms: 1_700_000_000_000,
            caller: "grpc:bench",
            arguments: self.arguments.as_ref(),
            ..CallRequest::default()
        };
        let rates = RateState {
            global: &self.buckets,
            workflow: &self.buckets,
        };
        decide(
            &self.policies,
            &self.history,
            &self.running,
            rates,
            &request,
        )
    }
}

fn global_member(policies: &PolicySet, t: &Name) -> bool {
    policies
        .groups()
        .iter()
        .any(|g| g.scope == Scope::Global && g.tools.contains(t))
}

/// One configuration's figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DecisionFigures {
    pub history_events: usize,
    pub live_workflows: usize,
    /// Per decision, each timed on its own (includes ~20–40 ns of clock reads).
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// Per decision, from timing batches of 1,000 (no clock in the loop): what criterion would report.
    pub mean_ns: f64,
}

/// Median over `rounds` of p50/p99 (single decisions) and mean (batches).
pub fn measure(
    history_events: usize,
    live_workflows: usize,
    decisions: usize,
    rounds: usize,
) -> DecisionFigures {
    measure_rules(
        Rules::Ordering,
        history_events,
        live_workflows,
        decisions,
        rounds,
    )
}

/// [`measure`] against `rules`.
pub fn measure_rules(
    rules: Rules,
    history_events: usize,
    live_workflows: usize,
    decisions: usize,
    rounds: usize,
) -> DecisionFigures {
    let fixture = Fixture::of(rules, history_events, live_workflows);
    assert_eq!(
        fixture.decide(),
        Decision::Allow,
        "the fixture's decision must be Allow"
    );
    let (mut p50, mut p99, mut mean) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut latencies = Latencies::new();
        for _ in 0..decisions {
            let t = Instant::now();
            black_box(fixture.decide());
            latencies.record(t.elapsed());
        }
        p50.push(latencies.quantile_us(0.50) * 1000.0);
        p99.push(latencies.quantile_us(0.99) * 1000.0);
        let batches = (decisions / 1000).max(1);
        let t = Instant::now();
        for _ in 0..batches * 1000 {
            black_box(fixture.decide());
        }
        mean.push(t.elapsed().as_nanos() as f64 / (batches * 1000) as f64);
    }
    DecisionFigures {
        history_events,
        live_workflows,
        p50_ns: median(p50),
        p99_ns: median(p99),
        mean_ns: median(mean),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_fixture_evaluates_its_conditions_and_flows_and_allows_the_decided_call() {
        for (history, live) in [(10, 10), (1000, 1000)] {
            for rules in [Rules::FlowsAndConditions, Rules::FlowsAndSpreadConditions] {
                assert_eq!(Fixture::of(rules, history, live).decide(), Decision::Allow);
            }
        }
        let rule_ids = |fixture: &Fixture| -> Vec<String> {
            match fixture.decide() {
                Decision::Deny { violations } => {
                    violations.into_iter().map(|v| v.rule_id).collect()
                }
                other => panic!("expected a denial: {other:?}"),
            }
        };
        let mut large = Fixture::of(Rules::FlowsAndConditions, 10, 10);
        large.arguments = Some(
            json!({ "amount": 20000.0, "recipient": "ops@example.com", "currency": "EUR", "priority": "normal", "tags": [], "items": [] }),
        );
        assert_eq!(rule_ids(&large), vec!["deny-0".to_owned()]);
        let mut caught = Fixture::of(Rules::FlowsAndConditions, 10, 10);
        let origin = LabelOrigin {
            call_id: "c-000000000002".into(),
            tool: tool(2).to_string(),
            at_ms: 1_700_000_000_001,
            workflow_id: None,
        };
        caught
            .history
            .labels
            .bring(&["untrusted-3".into()], &origin);
        assert_eq!(rule_ids(&caught), vec!["flow-3".to_owned()]);
    }

    #[test]
    fn the_fixture_has_100_rules_and_allows_the_decided_call() {
        let set = policy_set();
        let rules: usize = (0..TOOLS)
            .filter_map(|i| set.tool(&tool(i)))
            .map(|p| p.after.len() + p.requires_success.len() + usize::from(p.gate.is_some()))
            .sum::<usize>()
            + set.groups().len();
        assert_eq!(rules, 100);
        for (history, live) in [(10, 10), (1000, 1000)] {
            assert_eq!(Fixture::new(history, live).decide(), Decision::Allow);
        }
    }
}
