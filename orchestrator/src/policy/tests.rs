//! Table-driven tests of the policy engine: every rule kind, combinations, and the edge cases.

use super::*;

fn n(s: &str) -> Name {
    s.into()
}

/// validate → process (sequence), backup needs a successful validate (conditional), backup and restore
/// exclusive globally, notify and process exclusive per workflow, restore gated.
fn policies() -> PolicySet {
    let mut p = PolicySet::default();
    p.add_sequence(&n("seq"), &n("process"), &n("validate"));
    p.add_conditional(&n("cond"), &n("backup"), &n("validate"));
    p.add_exclusive(ExclusiveGroup { id: n("ex-global"), tools: vec![n("backup"), n("restore")], scope: Scope::Global });
    p.add_exclusive(ExclusiveGroup { id: n("ex-wf"), tools: vec![n("notify"), n("process")], scope: Scope::Workflow });
    p.add_gate(&n("restore"), ApprovalGate { id: n("gate"), timeout: Duration::from_secs(60) });
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
        r.insert(&n(tool), RunningCall { workflow_id: n(wf), call_id: format!("c{i}").into() });
    }
    r
}

/// The rule ids that deny, or "allow", or "approval:<gate>".
fn verdict(d: &Decision) -> String {
    match d {
        Decision::Allow => "allow".into(),
        Decision::NeedsApproval { gate } => format!("approval:{}", gate.id),
        Decision::Deny { violations } => violations.iter().map(|v| v.rule_id.as_str()).collect::<Vec<_>>().join("+"),
    }
}

#[test]
fn decisions_table() {
    let p = policies();
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[(&str, bool)], &[(&str, &str)], bool, &str)] = &[
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
        let call = CallRequest { workflow_id: "wf-1", tool, step_gate: None, approval_granted: *granted };
        let got = verdict(&decide(&p, &history(hist), &running(run), &call));
        assert_eq!(&got, expected, "case {name:?}");
    }
}

#[test]
fn step_gate_applies_on_top_of_rules() {
    let p = policies();
    let gate = ApprovalGate { id: n("tpl.step"), timeout: Duration::from_secs(5) };
    let call = CallRequest { workflow_id: "wf-1", tool: "other", step_gate: Some(&gate), approval_granted: false };
    assert_eq!(verdict(&decide(&p, &WorkflowHistory::default(), &RunningCalls::default(), &call)), "approval:tpl.step");
}

#[test]
fn violations_say_what_unblocks() {
    let p = policies();
    let call = CallRequest { workflow_id: "wf-1", tool: "process", step_gate: None, approval_granted: false };
    let Decision::Deny { violations } = decide(&p, &WorkflowHistory::default(), &RunningCalls::default(), &call) else {
        panic!("expected a denial")
    };
    let v = &violations[0];
    assert_eq!((v.rule_kind, v.tool.as_str()), (RuleKind::Sequence, "process"));
    assert_eq!(v.unblock_hint, "call validate first");
    assert_eq!(v.required_tools, vec!["validate".to_owned()]);

    let busy = running(&[("restore", "wf-12")]);
    let call = CallRequest { workflow_id: "wf-1", tool: "backup", step_gate: None, approval_granted: false };
    let Decision::Deny { violations } = decide(&p, &history(&[("validate", true)]), &busy, &call) else { panic!("expected a denial") };
    assert!(violations[0].unblock_hint.contains("restore is running in workflow wf-12"), "{:?}", violations[0]);

    let call = CallRequest { workflow_id: "wf-1", tool: "backup", step_gate: None, approval_granted: false };
    let Decision::Deny { violations } = decide(&p, &history(&[("validate", false)]), &RunningCalls::default(), &call) else { panic!() };
    assert!(violations[0].message.contains("its last call failed"), "{:?}", violations[0]);
}

#[test]
fn running_calls_insert_and_remove() {
    let mut r = running(&[("a", "w1"), ("a", "w2"), ("b", "w1")]);
    assert_eq!(r.len(), 3);
    r.remove("a", "c0");
    assert_eq!(r.of_tool("a").len(), 1);
    r.remove("a", "c1");
    r.remove("b", "c2");
    assert!(r.is_empty());
    r.remove("missing", "c9");
}

#[test]
fn history_tally_counts_and_remembers_last_outcome() {
    let h = history(&[("t", true), ("t", false), ("t", true)]);
    assert_eq!(h.tally("t"), ToolTally { finished: 3, succeeded: 2, last_succeeded: true });
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
    let call = CallRequest { workflow_id: "wf", tool: "process", step_gate: None, approval_granted: false };
    assert_eq!(decide(&p, &h, &RunningCalls::default(), &call), Decision::Allow);
}
