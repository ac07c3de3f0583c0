//! The window of calls in memory: what it keeps beyond the window (open calls, each step's latest),
//! when it lets them go, its counts, and the merge of a history read back from the log.

use super::*;
use crate::domain::Outcome;

fn entry(id: &str, status: CallStatus) -> CallEntry {
    CallEntry {
        call_id: id.into(),
        tool: "validate".into(),
        step: None,
        status,
        started_at_ms: 0,
        duration_us: 0,
        approval_id: None,
        gate: None,
        details: None,
        seq: 0,
        trace_id: None,
    }
}

fn done() -> CallStatus {
    CallStatus::Finished {
        outcome: Outcome::Succeeded,
        error: None,
    }
}

fn waiting() -> CallStatus {
    CallStatus::WaitingApproval {
        approval_id: "a-1".into(),
    }
}

fn ids(calls: &Calls) -> Vec<String> {
    calls.iter().map(|c| c.call_id.to_string()).collect()
}

#[test]
fn only_the_most_recent_finished_calls_stay() {
    let mut calls = Calls::new(3);
    for i in 0..10 {
        calls.record(entry(&format!("c{i}"), done()));
    }
    assert_eq!(ids(&calls), ["c7", "c8", "c9"]);
    assert_eq!(calls.recorded(), 10);
    assert_eq!(calls.in_memory(), 3);
    assert!(!calls.complete());
    assert!(
        calls.get("c6").is_none(),
        "an older finished call is let go"
    );
    assert!(calls.get("c7").is_some());
}

#[test]
fn a_window_that_holds_every_call_is_complete() {
    let mut calls = Calls::new(8);
    for i in 0..8 {
        calls.record(entry(&format!("c{i}"), done()));
    }
    assert!(calls.complete());
    assert_eq!(calls.recorded(), 8);
}

#[test]
fn an_open_call_stays_past_the_window_until_it_closes_and_another_call_comes() {
    let mut calls = Calls::new(2);
    calls.record(entry("slow", CallStatus::Running));
    calls.record(entry("gated", waiting()));
    for i in 0..5 {
        calls.record(entry(&format!("c{i}"), done()));
    }
    assert_eq!(ids(&calls), ["slow", "gated", "c3", "c4"]);
    assert_eq!((calls.running(), calls.waiting()), (1, 1));

    // Its ending finds it, and it can still be read right after (the report reads it then).
    let finished = calls
        .set_status("slow", done())
        .expect("the open call is found");
    finished.duration_us = 7;
    assert_eq!(calls.get("slow").map(|c| c.duration_us), Some(7));
    assert_eq!((calls.running(), calls.waiting()), (0, 1));

    calls.record(entry("c5", done()));
    assert_eq!(ids(&calls), ["gated", "c4", "c5"]);
    assert!(calls.get("slow").is_none());
}

#[test]
fn a_call_recorded_again_changes_its_status_and_seq_in_place() {
    let mut calls = Calls::new(1);
    calls.record(entry("gated", waiting()));
    calls.record(entry("c1", done()));
    let mut again = entry("gated", CallStatus::Running);
    again.seq = 9;
    calls.record(again);
    let gated = calls.get("gated").expect("kept while open");
    assert_eq!((gated.status.clone(), gated.seq), (CallStatus::Running, 9));
    assert_eq!((calls.running(), calls.waiting()), (1, 0));
    assert_eq!(calls.recorded(), 2, "no second entry");
}

#[test]
fn the_latest_call_of_each_step_stays_until_a_newer_one_of_that_step() {
    let mut calls = Calls::new(1);
    let mut first = entry("s1", done());
    first.step = Some("validate".into());
    calls.record(first);
    calls.record(entry("c1", done()));
    calls.record(entry("c2", done()));
    assert_eq!(
        calls.latest_of_step("validate").map(|c| &*c.call_id),
        Some("s1")
    );
    let mut second = entry("s2", CallStatus::Running);
    second.step = Some("validate".into());
    calls.record(second);
    calls.record(entry("c3", done()));
    assert_eq!(
        calls.latest_of_step("validate").map(|c| &*c.call_id),
        Some("s2")
    );
    assert!(
        calls.get("s1").is_none(),
        "the step's earlier call is let go"
    );
    assert_eq!(ids(&calls), ["s2", "c3"]);
}

#[test]
fn a_merged_history_takes_memory_over_the_log_and_appends_what_the_log_lacks() {
    let logged = vec![
        entry("c0", done()),
        entry("c1", CallStatus::Running),
        entry("c2", done()),
    ];
    let mut c1 = entry("c1", done());
    c1.seq = 5;
    let in_memory = vec![c1.clone(), entry("c2", done()), entry("c3", waiting())];
    let merged = merge_history(logged, in_memory);
    let ids: Vec<&str> = merged.iter().map(|c| &*c.call_id).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3"]);
    assert_eq!(merged[1], c1, "the change the log does not have yet");
}
