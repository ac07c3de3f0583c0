//! The one transition: each kind of event, what it leaves behind, and that the two payload
//! representations (live `Value`, start-up raw text) give the same state.

use super::*;
use crate::events::ReplayEvent;
use crate::fixtures::*;
use serde_json::json;

fn live(events: &[AuditEvent]) -> State {
    let mut state = State::new(config());
    for (i, event) in events.iter().enumerate() {
        state.apply(1_000 + i as i64, event);
    }
    state
}

#[test]
fn live_and_replayed_payloads_give_the_same_state() {
    let events = history();
    let replayed = {
        let mut state = State::new(config());
        for (i, event) in events.iter().enumerate() {
            let text = serde_json::to_string(event).unwrap();
            let back: ReplayEvent = serde_json::from_str(&text).unwrap();
            let again: AuditEvent = serde_json::from_str(&text).unwrap();
            assert_eq!(&again, event, "{text}");
            state.apply(1_000 + i as i64, &back);
        }
        state
    };
    assert_eq!(live(&events).observe(), replayed.observe());
}

#[test]
fn a_denied_approval_keeps_its_reason() {
    let state = live(&history());
    let w1 = &state.workflows["w1"];
    let denied = w1
        .calls
        .iter()
        .find(|c| &*c.call_id == "c3")
        .expect("the gated call");
    let CallStatus::Denied { violations } = &denied.status else {
        panic!("{:?}", denied.status);
    };
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].rule_id, "gate");
    assert!(
        violations[0].message.contains("denied by bob: not today"),
        "{:?}",
        violations[0]
    );
    // The policy denial and the approval denial.
    assert_eq!(w1.violations, 2);
    assert_eq!(state.counters.violations, 2);
}

#[test]
fn counters_pending_approvals_and_unfinished_calls_follow_the_events() {
    let state = live(&history());
    assert_eq!(state.counters.active, 2);
    assert_eq!(state.counters.today(1_010), (0, 1));
    assert_eq!(state.counters.today(1_010 + DAY_MS), (0, 0));
    let pending: Vec<&str> = state.approvals.pending.keys().map(String::as_str).collect();
    assert_eq!(pending, ["ap-2"]);
    let waiting = &state.approvals.pending["ap-2"];
    assert_eq!(waiting.arguments, json!({"to": "ops", "n": 1}));
    assert_eq!(waiting.requested_by, "grpc:ada");
    assert_eq!(
        state
            .approvals
            .get("ap-1")
            .map(Approval::describe)
            .as_deref(),
        Some("denied by bob")
    );
    let unfinished = state.unfinished();
    assert_eq!(unfinished.len(), 2, "{unfinished:?}");
    assert!(matches!(&unfinished[0], Unfinished::Waiting(a) if a.id == "ap-2"));
    assert!(matches!(&unfinished[1],
        Unfinished::Interrupted { call_id, tool, .. } if &**call_id == "c6" && &**tool == "process"));
    assert_eq!(state.running.sorted().len(), 1);
    let w2 = &state.workflows["w2"];
    assert_eq!(w2.steps_done, 1, "the template step counted");
    assert_eq!(w2.outputs["v"], json!({"ok": true}));
    let order: Vec<String> = state.active().map(|w| w.id.to_string()).collect();
    assert_eq!(order, ["w2", "w1"]);
}

#[test]
fn a_call_that_ends_unrecorded_takes_its_pending_request_with_it() {
    let mut events = history();
    events.push(finished("w1", "c4", "notify", Outcome::Unavailable));
    let state = live(&events);
    assert!(state.approvals.pending.is_empty());
    assert!(
        state
            .unfinished()
            .iter()
            .all(|u| !matches!(u, Unfinished::Waiting(_)))
    );
}

#[test]
fn only_the_newest_finished_workflows_stay_in_memory() {
    let mut state = State::new(config());
    for i in 0..FINISHED_KEPT + 5 {
        let id = format!("wf-{i}");
        state.apply(i as i64, &started(&id, None));
        state.apply(
            i as i64,
            &AuditEvent::<Value>::WorkflowFinished {
                workflow_id: id,
                state: WorkflowEnd::Completed,
                error: None,
                duration_ms: 0,
            },
        );
    }
    state.apply(0, &started("wf-running", None));
    assert_eq!(state.workflows.len(), FINISHED_KEPT + 1);
    assert!(!state.workflows.contains_key("wf-4") && state.workflows.contains_key("wf-5"));
    assert!(
        state.workflows.contains_key("wf-running"),
        "running workflows are never forgotten"
    );
}

/// The label set comes from the records: an allowed call brings its recorded labels in (first call
/// wins), a denied or gated one brings none, and a record without the field (an old log) none.
#[test]
fn labels_enter_a_workflow_from_allowed_decisions_only() {
    let with_labels = |call: &str, decision: DecisionKind, labels: &[&str]| {
        let mut event = decided("w", call, "validate", decision);
        if let AuditEvent::CallDecided { labels: l, .. } = &mut event {
            *l = labels.iter().map(|s| s.to_string()).collect();
        }
        event
    };
    let state = live(&[
        started("w", None),
        with_labels("c1", DecisionKind::Deny, &["secret"]),
        with_labels("c2", DecisionKind::NeedsApproval, &["gated"]),
        with_labels("c3", DecisionKind::Allow, &["private"]),
        with_labels("c4", DecisionKind::Allow, &["private", "untrusted"]),
        decided("w", "c5", "validate", DecisionKind::Allow),
    ]);
    let labels = state.workflows["w"].history.labels.sorted();
    assert_eq!(labels.keys().collect::<Vec<_>>(), ["private", "untrusted"]);
    assert_eq!(labels["private"].call_id, "c3");
    assert_eq!(labels["private"].at_ms, 1_003);
    assert_eq!(labels["untrusted"].call_id, "c4");
    let old = r#"{"kind":"call_decided","workflow_id":"w","call_id":"c9","tool":"validate","arguments":{},"caller":"a","decision":"allow","config_version":"v"}"#;
    let old: AuditEvent = serde_json::from_str(old).expect("a record without the new fields reads");
    assert!(
        matches!(old, AuditEvent::CallDecided { ref labels, ref conditions, .. } if labels.is_empty() && conditions.is_empty())
    );
}

/// A label brought in by an allowed call, as its record says.
fn labelled(mut event: AuditEvent, names: &[&str]) -> AuditEvent {
    if let AuditEvent::CallDecided { labels, .. } = &mut event {
        *labels = names.iter().map(|l| (*l).to_owned()).collect();
    }
    event
}

/// Labels follow the context (SPEC §9.7): a workflow started from another carries its labels, each
/// naming the call and the workflow that brought it in; an identity's labels are kept with their
/// latest call for `flow_scope` `caller`; and the newest ad-hoc workflow of a caller is its current
/// one. All of it rebuilt the same from the records.
#[test]
fn labels_follow_the_context_and_the_caller_and_rebuild_the_same() {
    let mut carried = std::collections::BTreeMap::new();
    carried.insert(
        "private".to_owned(),
        policy::LabelOrigin {
            call_id: "c1".into(),
            tool: "read".into(),
            at_ms: 1_001,
            workflow_id: Some("w1".into()),
        },
    );
    let mut from_w1 = started("w2", None);
    if let AuditEvent::WorkflowStarted { labels, .. } = &mut from_w1 {
        *labels = carried.clone();
    }
    let events = vec![
        started("w1", None),
        labelled(
            decided("w1", "c1", "validate", DecisionKind::Allow),
            &["private"],
        ),
        from_w1,
        labelled(
            decided("w2", "c2", "validate", DecisionKind::Allow),
            &["untrusted"],
        ),
    ];
    let state = live(&events);
    let w2 = &state.workflows["w2"];
    assert_eq!(
        w2.history.labels.origin("private"),
        carried.get("private"),
        "the carried label keeps its call and names its workflow"
    );
    assert!(
        w2.history
            .labels
            .origin("private")
            .unwrap()
            .describe()
            .contains("in workflow w1")
    );
    assert_eq!(
        w2.history.labels.origin("untrusted").unwrap().workflow_id,
        None
    );
    assert!(
        state.workflows["w1"]
            .history
            .labels
            .origin("untrusted")
            .is_none()
    );

    let ada = state.caller_labels("ada", 0).expect("ada's labels");
    assert_eq!(
        ada.names(),
        vec!["private".into(), "untrusted".into()] as Vec<policy::Name>
    );
    assert_eq!(
        ada.origin("untrusted").unwrap().workflow_id.as_deref(),
        Some("w2")
    );
    let recent = state.caller_labels("ada", 1_003).expect("the newest label");
    assert_eq!(recent.names(), vec![policy::Name::from("untrusted")]);
    assert!(
        state.caller_labels("ada", 1_004).is_none(),
        "outside the window"
    );
    assert!(state.caller_labels("bob", 0).is_none());

    assert_eq!(
        state.current_ad_hoc("grpc:ada").map(|w| w.id.to_string()),
        Some("w2".to_owned()),
        "the newest ad-hoc workflow of the caller"
    );
    let context = state
        .context_labels("grpc:ada", "w1")
        .expect("w2 runs beside w1");
    assert_eq!(
        context.origin("untrusted").unwrap().workflow_id.as_deref(),
        Some("w2"),
        "the other running workflow's label, naming where it came from"
    );
    assert!(state.context_labels("grpc:bob", "w1").is_none());
    let mut ended = events.clone();
    ended.push(AuditEvent::WorkflowFinished {
        workflow_id: "w2".into(),
        state: WorkflowEnd::Completed,
        error: None,
        duration_ms: 1,
    });
    let state = live(&ended);
    assert!(
        state.current_ad_hoc("grpc:ada").is_none(),
        "an ended one is nobody's current"
    );
    assert!(
        state.context_labels("grpc:ada", "w1").is_none(),
        "an ended workflow is no longer part of the context"
    );

    let replayed = {
        let mut state = State::new(config());
        for (i, event) in ended.iter().enumerate() {
            let text = serde_json::to_string(event).unwrap();
            let back: ReplayEvent = serde_json::from_str(&text).unwrap();
            state.apply(1_000 + i as i64, &back);
        }
        state
    };
    assert_eq!(live(&ended).observe(), replayed.observe());
}
