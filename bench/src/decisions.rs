//! The policy engine alone (figure 5): a 100-rule policy set, a workflow history of any length and any
//! number of live workflows with a call in flight, and a measurement loop that times every single
//! decision (an HDR histogram gives the p99 that criterion's means do not). The criterion bench in
//! `benches/policy.rs` uses the same fixture.

use crate::stats::{Latencies, median};
use conductor_core::policy::{
    ApprovalGate, Buckets, CallRequest, Decision, ExclusiveGroup, Name, PolicySet, RateState,
    RunningCall, RunningCalls, Scope, WorkflowHistory, decide,
};
use serde::Serialize;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Tools of the fixture: `t00` … `t49`.
pub const TOOLS: usize = 50;
/// The decided tool: two ordering rules and two workflow-scoped exclusive groups apply to it, all pass.
pub const DECIDED: usize = 25;

fn tool(i: usize) -> Name {
    format!("t{:02}", i % TOOLS).into()
}

/// 100 rules over 50 tools: 40 sequences, 30 conditionals, 20 exclusive groups of 3 (even ones scoped
/// to the workflow, odd ones global), 10 approval gates.
pub fn policy_set() -> PolicySet {
    let mut set = PolicySet::default();
    for i in 1..=40 {
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

/// Everything one decision reads.
pub struct Fixture {
    pub policies: PolicySet,
    pub history: WorkflowHistory,
    pub running: RunningCalls,
    /// Rate-limit buckets (no rate rules in the set: empty).
    pub buckets: Buckets,
    pub workflow_id: String,
    pub tool: Name,
}

impl Fixture {
    /// `history_events` finished calls in the decided workflow (its prerequisites first, then round
    /// robin over every tool) and `live_workflows` other workflows, each with one call in flight on a
    /// tool that no global group holds (round robin over the rest), so the decision is Allow.
    pub fn new(history_events: usize, live_workflows: usize) -> Fixture {
        let mut history = WorkflowHistory::default();
        history.record(&tool(DECIDED - 1), true);
        history.record(&tool(DECIDED - 10), true);
        for i in 2..history_events {
            history.record(&tool(i), true);
        }
        let policies = policy_set();
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
    let fixture = Fixture::new(history_events, live_workflows);
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
