//! Fuzzing (proptest, a bounded number of cases) the policy engine: random rules, history, running
//! calls, token buckets and calls. `decide` never panics, is deterministic, and a denial always carries
//! at least one violation naming the called tool (and the rule that blocks it).

use conductor_orchestrator::policy::{
    AllowList, ApprovalGate, Buckets, CallRequest, Decision, ExclusiveGroup, Name, PolicySet,
    RateLimit, RateState, RuleKind, RunningCall, RunningCalls, Scope, ToolLimits, WorkflowHistory,
    consume, decide,
};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const CASES: u32 = 10_000;

const ENGINE_TOOLS: [&str; 7] = ["a", "b", "c", "d", "e", "f", "unconfigured"];

fn tool(i: usize) -> Name {
    Arc::from(ENGINE_TOOLS[i % ENGINE_TOOLS.len()])
}

#[derive(Debug, Clone)]
enum RuleSpec {
    Sequence(usize, usize),
    Conditional(usize, usize),
    Exclusive(Vec<usize>, bool),
    Gate(usize, bool),
    Limit(usize, Option<u32>, Option<(u32, u64)>, Option<(u32, u64)>),
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let t = 0..6usize;
    let rate = proptest::option::of((0..4u32, 0..3_000u64));
    prop_oneof![
        (t.clone(), t.clone()).prop_map(|(a, b)| RuleSpec::Sequence(a, b)),
        (t.clone(), t.clone()).prop_map(|(a, b)| RuleSpec::Conditional(a, b)),
        (proptest::collection::vec(t.clone(), 0..4), any::<bool>())
            .prop_map(|(ts, g)| RuleSpec::Exclusive(ts, g)),
        (t.clone(), any::<bool>()).prop_map(|(a, f)| RuleSpec::Gate(a, f)),
        (t, proptest::option::of(0..3u32), rate.clone(), rate)
            .prop_map(|(a, m, r, w)| RuleSpec::Limit(a, m, r, w)),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    rules: Vec<RuleSpec>,
    history: Vec<(usize, bool)>,
    running: Vec<(usize, usize)>,
    consumed: Vec<(usize, i64)>,
    call_tool: usize,
    call_workflow: usize,
    step_gate: Option<bool>,
    approval_granted: bool,
    allowed: Option<Vec<usize>>,
    now_ms: i64,
}

/// `times`: the call's time; `offsets`: when earlier calls took tokens, relative to it.
fn scenario(
    times: impl Strategy<Value = i64>,
    offsets: impl Strategy<Value = i64>,
) -> impl Strategy<Value = Scenario> {
    (
        proptest::collection::vec(rule_spec(), 0..12),
        proptest::collection::vec((0..7usize, any::<bool>()), 0..16),
        proptest::collection::vec((0..7usize, 0..3usize), 0..8),
        proptest::collection::vec((0..7usize, offsets), 0..10),
        (
            0..7usize,
            0..3usize,
            proptest::option::of(any::<bool>()),
            any::<bool>(),
        ),
        proptest::option::of(proptest::collection::vec(0..7usize, 0..4)),
        times,
    )
        .prop_map(
            |(
                rules,
                history,
                running,
                consumed,
                (call_tool, call_workflow, step_gate, approval_granted),
                allowed,
                now_ms,
            )| Scenario {
                rules,
                history,
                running,
                consumed,
                call_tool,
                call_workflow,
                step_gate,
                approval_granted,
                allowed,
                now_ms,
            },
        )
}

fn policies(rules: &[RuleSpec]) -> PolicySet {
    let mut set = PolicySet::default();
    for (i, rule) in rules.iter().enumerate() {
        let id: Name = Arc::from(format!("rule-{i}"));
        let rate = |r: &Option<(u32, u64)>| {
            r.map(|(calls, ms)| RateLimit {
                calls,
                per: Duration::from_millis(ms),
            })
        };
        match rule {
            RuleSpec::Sequence(t, after) => set.add_sequence(&id, &tool(*t), &tool(*after)),
            RuleSpec::Conditional(t, needs) => set.add_conditional(&id, &tool(*t), &tool(*needs)),
            RuleSpec::Exclusive(tools, global) => set.add_exclusive(ExclusiveGroup {
                id,
                tools: tools.iter().map(|t| tool(*t)).collect(),
                scope: if *global {
                    Scope::Global
                } else {
                    Scope::Workflow
                },
            }),
            RuleSpec::Gate(t, four_eyes) => set.add_gate(
                &tool(*t),
                ApprovalGate {
                    id,
                    timeout: Duration::from_secs(60),
                    four_eyes: *four_eyes,
                },
            ),
            RuleSpec::Limit(t, max, r, w) => set.set_limits(
                &tool(*t),
                ToolLimits {
                    rule_id: Some(id),
                    max_concurrent: *max,
                    rate: rate(r),
                    rate_per_workflow: rate(w),
                    timeout: None,
                },
            ),
        }
    }
    set
}

fn check_decision(s: &Scenario) -> Result<(), TestCaseError> {
    let set = policies(&s.rules);
    let mut history = WorkflowHistory::default();
    for (t, ok) in &s.history {
        history.record(&tool(*t), *ok);
    }
    let workflows = ["wf-0", "wf-1", "wf-2"];
    let mut running = RunningCalls::default();
    for (i, (t, wf)) in s.running.iter().enumerate() {
        let call = RunningCall {
            workflow_id: Arc::from(workflows[*wf]),
            call_id: Arc::from(format!("c-{i}")),
        };
        running.insert(&tool(*t), call);
    }
    let (mut global, mut workflow) = (Buckets::default(), Buckets::default());
    for (t, offset) in &s.consumed {
        consume(
            &set,
            &tool(*t),
            &mut global,
            &mut workflow,
            s.now_ms.saturating_add(*offset),
        );
    }
    let gate = s.step_gate.map(|four_eyes| ApprovalGate {
        id: Arc::from("step"),
        timeout: Duration::from_secs(1),
        four_eyes,
    });
    let allowed = s.allowed.as_ref().map(|tools| AllowList {
        source: "test allow-list".into(),
        tools: tools.iter().map(|t| tool(*t)).collect(),
    });
    let called = tool(s.call_tool);
    let call = CallRequest {
        workflow_id: workflows[s.call_workflow],
        tool: &called,
        step_gate: gate.as_ref(),
        approval_granted: s.approval_granted,
        allowed: allowed.as_ref(),
        now_ms: s.now_ms,
        ..CallRequest::default()
    };
    let rates = RateState {
        global: &global,
        workflow: &workflow,
    };
    let decision = decide(&set, &history, &running, rates, &call);
    prop_assert_eq!(
        &decision,
        &decide(&set, &history, &running, rates, &call),
        "deterministic"
    );
    let unmet_sequence = s.rules.iter().any(|r| {
        matches!(r, RuleSpec::Sequence(t, after) if tool(*t) == called && history.tally(&tool(*after)).finished == 0)
    });
    let refused_by_list = allowed.as_ref().is_some_and(|a| !a.tools.contains(&called));
    match &decision {
        Decision::Deny { violations } => {
            prop_assert!(!violations.is_empty(), "a denial carries its violations");
            for v in violations {
                prop_assert_eq!(&v.tool, &*called, "a violation names the called tool");
                prop_assert!(
                    !v.rule_id.is_empty() && !v.message.is_empty() && !v.unblock_hint.is_empty(),
                    "{:?}",
                    v
                );
            }
            if refused_by_list {
                prop_assert!(
                    violations
                        .iter()
                        .all(|v| v.rule_kind == RuleKind::AllowList)
                );
            } else if unmet_sequence {
                prop_assert!(violations.iter().any(|v| v.rule_kind == RuleKind::Sequence));
            }
        }
        Decision::NeedsApproval { .. } => {
            prop_assert!(!s.approval_granted, "a granted approval is not asked again");
            prop_assert!(
                !refused_by_list && !unmet_sequence,
                "asked to approve a call that cannot run"
            );
        }
        Decision::Allow => prop_assert!(
            !refused_by_list && !unmet_sequence,
            "allowed despite a rule"
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    /// Times a real clock gives: up to the year 2096, and a clock that steps back a little.
    #[test]
    fn the_policy_engine_never_panics_and_denials_name_the_tool(s in scenario(0..4_000_000_000_000i64, -5_000..5_000i64)) {
        check_decision(&s)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// The engine takes time as a plain i64: any value, even one no clock gives, must not panic.
    #[test]
    fn the_policy_engine_survives_any_time(s in scenario(any::<i64>(), any::<i64>())) {
        check_decision(&s)?;
    }
}

#[test]
fn a_token_bucket_far_in_the_past_does_not_overflow() {
    let a: Name = Arc::from("a");
    let mut set = PolicySet::default();
    let limit = RateLimit {
        calls: 1,
        per: Duration::from_secs(1),
    };
    let limits = ToolLimits {
        rule_id: Some(Arc::from("r")),
        rate: Some(limit),
        ..ToolLimits::default()
    };
    set.set_limits(&a, limits);
    let (mut global, mut workflow) = (Buckets::default(), Buckets::default());
    consume(&set, &a, &mut global, &mut workflow, -1);
    let call = CallRequest {
        workflow_id: "wf",
        tool: "a",
        step_gate: None,
        approval_granted: false,
        allowed: None,
        now_ms: i64::MAX,
        ..CallRequest::default()
    };
    let rates = RateState {
        global: &global,
        workflow: &workflow,
    };
    let _ = decide(
        &set,
        &WorkflowHistory::default(),
        &RunningCalls::default(),
        rates,
        &call,
    );
}
