//! Table-driven tests of the policy engine: every rule kind, combinations, and the edge cases.

use super::*;

static EMPTY: std::sync::LazyLock<Buckets> = std::sync::LazyLock::new(Buckets::default);

fn no_rates() -> RateState<'static> {
    RateState {
        global: &EMPTY,
        workflow: &EMPTY,
    }
}

fn n(s: &str) -> Name {
    s.into()
}

/// validate → process (sequence), backup needs a successful validate (conditional), backup and restore
/// exclusive globally, notify and process exclusive per workflow, restore gated.
fn policies() -> PolicySet {
    let mut p = PolicySet::default();
    p.add_sequence(&n("seq"), &n("process"), &n("validate"));
    p.add_conditional(&n("cond"), &n("backup"), &n("validate"));
    p.add_exclusive(ExclusiveGroup {
        id: n("ex-global"),
        tools: vec![n("backup"), n("restore")],
        scope: Scope::Global,
    });
    p.add_exclusive(ExclusiveGroup {
        id: n("ex-wf"),
        tools: vec![n("notify"), n("process")],
        scope: Scope::Workflow,
    });
    p.add_gate(
        &n("restore"),
        ApprovalGate {
            id: n("gate"),
            timeout: Duration::from_secs(60),
            four_eyes: false,
        },
    );
    p
}

/// A history given as (tool, succeeded) pairs, in order.
fn history(calls: &[(&str, bool)]) -> WorkflowHistory {
    let mut h = WorkflowHistory::default();
    for (tool, ok) in calls {
        h.record(&n(tool), *ok);
    }
    h
}

/// Running calls given as (tool, workflow).
fn running(calls: &[(&str, &str)]) -> RunningCalls {
    let mut r = RunningCalls::default();
    for (i, (tool, wf)) in calls.iter().enumerate() {
        r.insert(
            &n(tool),
            RunningCall {
                workflow_id: n(wf),
                call_id: format!("c{i}").into(),
            },
        );
    }
    r
}

/// The rule ids that deny, or "allow", or "approval:<gate>".
fn verdict(d: &Decision) -> String {
    match d {
        Decision::Allow => "allow".into(),
        Decision::NeedsApproval { gate, .. } => format!("approval:{}", gate.id),
        Decision::Deny { violations } => violations
            .iter()
            .map(|v| v.rule_id.as_str())
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// name, tool, history (tool, succeeded), running (tool, workflow), approval granted, expected.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, bool)],
    &'static [(&'static str, &'static str)],
    bool,
    &'static str,
);

#[test]
fn decisions_table() {
    let p = policies();
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // name, tool, history, running (tool, workflow), approval granted, expected
        ("no rules", "other", &[], &[], false, "allow"),
        ("sequence unmet", "process", &[], &[], false, "seq"),
        ("sequence met by success", "process", &[("validate", true)], &[], false, "allow"),
        ("sequence met by failure", "process", &[("validate", false)], &[], false, "allow"),
        ("conditional never called", "backup", &[], &[], false, "cond"),
        ("conditional after failure", "backup", &[("validate", false)], &[], false, "cond"),
        ("conditional after success", "backup", &[("validate", true)], &[], false, "allow"),
        ("conditional: failed then retried ok", "backup", &[("validate", false), ("validate", true)], &[], false, "allow"),
        ("conditional: ok then failed again", "backup", &[("validate", true), ("validate", false)], &[], false, "cond"),
        ("repeated calls stay allowed", "process", &[("validate", true), ("process", true), ("process", false)], &[], false, "allow"),
        ("global exclusive: other workflow", "backup", &[("validate", true)], &[("restore", "wf-other")], false, "ex-global"),
        ("global exclusive: same tool", "backup", &[("validate", true)], &[("backup", "wf-other")], false, "ex-global"),
        ("workflow exclusive: other workflow ok", "notify", &[], &[("process", "wf-other")], false, "allow"),
        ("workflow exclusive: same workflow", "notify", &[], &[("process", "wf-1")], false, "ex-wf"),
        ("every violation reported", "backup", &[], &[("restore", "wf-2")], false, "cond+ex-global"),
        ("sequence and exclusive", "process", &[], &[("notify", "wf-1")], false, "seq+ex-wf"),
        ("gate", "restore", &[], &[], false, "approval:gate"),
        ("gate granted", "restore", &[], &[], true, "allow"),
        ("no approval asked while blocked", "restore", &[], &[("backup", "wf-9")], false, "ex-global"),
        ("granted still checks exclusivity", "restore", &[], &[("backup", "wf-9")], true, "ex-global"),
    ];
    for (name, tool, hist, run, granted, expected) in cases {
        let call = CallRequest {
            workflow_id: "wf-1",
            tool,
            step_gate: None,
            approval_granted: *granted,
            allowed: None,
            now_ms: 0,
            ..CallRequest::default()
        };
        let got = verdict(&decide(
            &p,
            &history(hist),
            &running(run),
            no_rates(),
            &call,
        ));
        assert_eq!(&got, expected, "case {name:?}");
    }
}

#[test]
fn step_gate_applies_on_top_of_rules() {
    let p = policies();
    let gate = ApprovalGate {
        id: n("tpl.step"),
        timeout: Duration::from_secs(5),
        four_eyes: false,
    };
    let call = CallRequest {
        workflow_id: "wf-1",
        tool: "other",
        step_gate: Some(&gate),
        approval_granted: false,
        allowed: None,
        now_ms: 0,
        ..CallRequest::default()
    };
    assert_eq!(
        verdict(&decide(
            &p,
            &WorkflowHistory::default(),
            &RunningCalls::default(),
            no_rates(),
            &call
        )),
        "approval:tpl.step"
    );
}

#[test]
fn violations_say_what_unblocks() {
    let p = policies();
    let call = CallRequest {
        workflow_id: "wf-1",
        tool: "process",
        step_gate: None,
        approval_granted: false,
        allowed: None,
        now_ms: 0,
        ..CallRequest::default()
    };
    let Decision::Deny { violations } = decide(
        &p,
        &WorkflowHistory::default(),
        &RunningCalls::default(),
        no_rates(),
        &call,
    ) else {
        panic!("expected a denial")
    };
    let v = &violations[0];
    assert_eq!(
        (v.rule_kind, v.tool.as_str()),
        (RuleKind::Sequence, "process")
    );
    assert_eq!(v.unblock_hint, "call validate first");
    assert_eq!(v.required_tools, vec!["validate".to_owned()]);

    let busy = running(&[("restore", "wf-12")]);
    let call = CallRequest {
        workflow_id: "wf-1",
        tool: "backup",
        step_gate: None,
        approval_granted: false,
        allowed: None,
        now_ms: 0,
        ..CallRequest::default()
    };
    let Decision::Deny { violations } = decide(
        &p,
        &history(&[("validate", true)]),
        &busy,
        no_rates(),
        &call,
    ) else {
        panic!("expected a denial")
    };
    assert!(
        violations[0]
            .unblock_hint
            .contains("restore is running in workflow wf-12"),
        "{:?}",
        violations[0]
    );

    let call = CallRequest {
        workflow_id: "wf-1",
        tool: "backup",
        step_gate: None,
        approval_granted: false,
        allowed: None,
        now_ms: 0,
        ..CallRequest::default()
    };
    let Decision::Deny { violations } = decide(
        &p,
        &history(&[("validate", false)]),
        &RunningCalls::default(),
        no_rates(),
        &call,
    ) else {
        panic!()
    };
    assert!(
        violations[0].message.contains("its last call failed"),
        "{:?}",
        violations[0]
    );
}

#[test]
fn running_calls_insert_and_remove() {
    let mut r = running(&[("a", "w1"), ("a", "w2"), ("b", "w1")]);
    assert_eq!(r.len(), 3);
    r.remove("a", "c0");
    assert_eq!(r.count("a"), 1);
    assert!(r.any_in_workflow("a", "w2").is_some() && r.any_in_workflow("a", "w1").is_none());
    r.remove("a", "c1");
    r.remove("b", "c2");
    assert!(r.is_empty());
    r.remove("missing", "c9");
}

#[test]
fn history_tally_counts_and_remembers_last_outcome() {
    let h = history(&[("t", true), ("t", false), ("t", true)]);
    assert_eq!(
        h.tally("t"),
        ToolTally {
            finished: 3,
            succeeded: 2,
            last_succeeded: true
        }
    );
    assert_eq!(h.tally("never"), ToolTally::default());
}

/// A decision looks up only the tool's own rules and tallies: a long history changes nothing.
#[test]
fn decision_does_not_depend_on_history_length() {
    let p = policies();
    let mut h = WorkflowHistory::default();
    for i in 0..10_000 {
        h.record(&n(&format!("tool-{}", i % 50)), true);
    }
    h.record(&n("validate"), true);
    let call = CallRequest {
        workflow_id: "wf",
        tool: "process",
        step_gate: None,
        approval_granted: false,
        allowed: None,
        now_ms: 0,
        ..CallRequest::default()
    };
    assert_eq!(
        decide(&p, &h, &RunningCalls::default(), no_rates(), &call),
        Decision::Allow
    );
}

fn limited(limits: ToolLimits) -> PolicySet {
    let mut p = PolicySet::default();
    p.set_limits(
        &n("t"),
        ToolLimits {
            rule_id: Some(n("lim")),
            ..limits
        },
    );
    p
}

fn call_at(now_ms: i64) -> CallRequest<'static> {
    CallRequest {
        workflow_id: "wf-1",
        tool: "t",
        step_gate: None,
        approval_granted: false,
        allowed: None,
        now_ms,
        ..CallRequest::default()
    }
}

#[test]
fn concurrency_limit_counts_running_calls_of_the_tool() {
    let p = limited(ToolLimits {
        max_concurrent: Some(2),
        ..Default::default()
    });
    let h = WorkflowHistory::default();
    assert_eq!(
        decide(&p, &h, &running(&[("t", "a")]), no_rates(), &call_at(0)),
        Decision::Allow
    );
    let d = decide(
        &p,
        &h,
        &running(&[("t", "a"), ("t", "b")]),
        no_rates(),
        &call_at(0),
    );
    let Decision::Deny { violations } = d else {
        panic!("{d:?}")
    };
    assert_eq!(
        (violations[0].rule_kind, violations[0].rule_id.as_str()),
        (RuleKind::Concurrency, "lim")
    );
}

#[test]
fn rate_limits_deny_with_a_retry_time_then_allow() {
    let limit = RateLimit {
        calls: 2,
        per: Duration::from_secs(1),
    };
    let p = limited(ToolLimits {
        rate: Some(limit),
        ..Default::default()
    });
    let (h, r) = (WorkflowHistory::default(), RunningCalls::default());
    let mut global = Buckets::default();
    let mut workflow = Buckets::default();
    for now in [0, 1] {
        let rates = RateState {
            global: &global,
            workflow: &workflow,
        };
        assert_eq!(decide(&p, &h, &r, rates, &call_at(now)), Decision::Allow);
        consume(&p, &n("t"), &mut global, &mut workflow, now);
    }
    let rates = RateState {
        global: &global,
        workflow: &workflow,
    };
    let Decision::Deny { violations } = decide(&p, &h, &r, rates, &call_at(2)) else {
        panic!("third call in the same second")
    };
    let v = &violations[0];
    assert_eq!(v.rule_kind, RuleKind::RateLimit);
    let retry = v.retry_after_ms.expect("retry time");
    assert!(
        (490..=500).contains(&retry),
        "one token refills in 500 ms: {retry}"
    );
    assert!(v.unblock_hint.starts_with("retry in"), "{}", v.unblock_hint);
    assert_eq!(
        decide(&p, &h, &r, rates, &call_at(2 + retry as i64)),
        Decision::Allow
    );
}

#[test]
fn per_workflow_rates_use_the_workflow_buckets() {
    let limit = RateLimit {
        calls: 1,
        per: Duration::from_secs(60),
    };
    let p = limited(ToolLimits {
        rate_per_workflow: Some(limit),
        ..Default::default()
    });
    let (h, r) = (WorkflowHistory::default(), RunningCalls::default());
    let mut global = Buckets::default();
    let mut first = Buckets::default();
    consume(&p, &n("t"), &mut global, &mut first, 0);
    let other = Buckets::default();
    assert!(matches!(
        decide(
            &p,
            &h,
            &r,
            RateState {
                global: &global,
                workflow: &first
            },
            &call_at(10)
        ),
        Decision::Deny { .. }
    ));
    assert_eq!(
        decide(
            &p,
            &h,
            &r,
            RateState {
                global: &global,
                workflow: &other
            },
            &call_at(10)
        ),
        Decision::Allow
    );
}

#[test]
fn allow_lists_deny_other_tools_before_anything_else() {
    let p = policies();
    let allowed = AllowList {
        source: "template flow".into(),
        tools: [n("validate"), n("process")].into_iter().collect(),
    };
    let mut call = CallRequest {
        workflow_id: "wf-1",
        tool: "backup",
        step_gate: None,
        approval_granted: false,
        allowed: Some(&allowed),
        now_ms: 0,
        ..CallRequest::default()
    };
    let Decision::Deny { violations } = decide(
        &p,
        &WorkflowHistory::default(),
        &RunningCalls::default(),
        no_rates(),
        &call,
    ) else {
        panic!()
    };
    assert_eq!(violations.len(), 1);
    assert_eq!(
        (violations[0].rule_kind, violations[0].rule_id.as_str()),
        (RuleKind::AllowList, "template flow")
    );
    call.tool = "validate";
    assert_eq!(
        decide(
            &p,
            &WorkflowHistory::default(),
            &RunningCalls::default(),
            no_rates(),
            &call
        ),
        Decision::Allow
    );
}

#[test]
fn token_bucket_refills_and_caps() {
    let limit = RateLimit {
        calls: 4,
        per: Duration::from_secs(4),
    };
    let mut b = TokenBucket::full(limit, 0);
    for _ in 0..4 {
        b.take(limit, 0);
    }
    assert_eq!(b.retry_after_ms(limit, 0), 1000);
    assert!((b.available(limit, 2000) - 2.0).abs() < 1e-9);
    assert!(
        (b.available(limit, 1_000_000) - 4.0).abs() < 1e-9,
        "never above the burst"
    );
    assert_eq!(
        b.retry_after_ms(limit, -5),
        1000,
        "a clock that goes back refills nothing"
    );
}
