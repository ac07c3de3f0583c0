//! The report on a log with every kind of event: its tables and its counts agree.

use super::*;
use crate::fixtures::*;

fn report(scope: Scope) -> Compliance {
    let mut fold = ReportFold::new(config(), scope);
    for (i, event) in history().iter().enumerate() {
        fold.add(1_000 + i as i64, event);
    }
    fold.finish()
}

#[test]
fn calls_that_ran_are_those_that_finished_and_blocked_ones_say_why() {
    let r = report(Scope::default());
    let ran: Vec<(&str, &str, Outcome)> = r
        .ran
        .iter()
        .map(|c| (c.workflow_id.as_str(), c.tool.as_str(), c.outcome))
        .collect();
    assert_eq!(
        ran,
        [
            ("w1", "validate", Outcome::Succeeded),
            ("w2", "validate", Outcome::Succeeded)
        ]
    );
    let blocked: Vec<(&str, Blocked, Vec<String>)> = r
        .blocked
        .iter()
        .map(|b| (b.tool.as_str(), b.how, b.rules.clone()))
        .collect();
    assert_eq!(
        blocked,
        [
            ("process", Blocked::Policy, vec!["seq".to_owned()]),
            ("notify", Blocked::ApprovalDenied, vec!["gate".to_owned()]),
        ]
    );
    assert!(
        r.blocked[1].reason.contains("denied by bob: not today"),
        "{:?}",
        r.blocked[1]
    );
    // One decided (denied) and one pending request.
    let approvals: Vec<(&str, Option<ApprovalVerdict>)> = r
        .approvals
        .iter()
        .map(|a| (a.id.as_str(), a.verdict))
        .collect();
    assert_eq!(
        approvals,
        [("ap-1", Some(ApprovalVerdict::Denied)), ("ap-2", None)]
    );
    assert_eq!(
        r.summary(),
        "2 call(s) ran; 2 attempt(s) were blocked by policy or by an approver and did not run; 2 approval request(s)"
    );
    assert!(r.compliant(), "{:?}", r.findings);
}

#[test]
fn a_workflow_scope_keeps_only_its_rows() {
    let r = report(Scope {
        workflow_id: Some("w2".into()),
        ..Scope::default()
    });
    assert_eq!(r.ran.len(), 1);
    assert_eq!(r.ran[0].step.as_deref(), Some("v"));
    assert!(r.blocked.is_empty() && r.approvals.is_empty());
    let none = report(Scope {
        since_ms: Some(10_000),
        ..Scope::default()
    });
    assert_eq!(none, Compliance::default());
}

#[test]
fn an_interrupted_call_and_a_call_without_a_decision_are_findings() {
    let mut fold = ReportFold::new(config(), Scope::default());
    for (i, event) in history().iter().enumerate() {
        fold.add(i as i64, event);
    }
    fold.add(100, &finished("w2", "c6", "process", Outcome::Interrupted));
    fold.add(
        101,
        &finished("w1", "c-unknown", "process", Outcome::Succeeded),
    );
    let r = fold.finish();
    assert!(!r.compliant());
    assert_eq!(r.findings.len(), 2, "{:?}", r.findings);
    assert!(r.findings[0].contains("interrupted"));
    assert!(r.findings[1].contains("without a decision"));
}

#[test]
fn an_allowed_call_that_never_reached_its_tool_did_not_run() {
    let mut fold = ReportFold::new(config(), Scope::default());
    for (i, event) in history().iter().enumerate() {
        fold.add(i as i64, event);
    }
    fold.add(100, &finished("w2", "c6", "process", Outcome::Unavailable));
    let r = fold.finish();
    assert_eq!(r.ran.len(), 2, "{:?}", r.ran);
    assert_eq!(r.not_run.len(), 1);
    assert_eq!(r.not_run[0].tool, "process");
    assert!(
        r.summary()
            .ends_with("; 1 allowed call(s) never reached their tool (unavailable)"),
        "{}",
        r.summary()
    );
}
