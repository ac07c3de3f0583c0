//! The window of calls in memory (`workflows.calls_in_memory`) changes nothing the rules, start-up
//! or a template run read, and the history folded back from the log with the calls in memory is the
//! whole history a state keeping every call holds.

use super::history::HistoryFold;
use super::*;
use crate::fixtures::*;

/// The fixtures' history, then far more calls than a small window holds, while a gated call (`c4`)
/// and a running one (`c6`) stay open and a template step's call (`c5`) stays its step's latest;
/// then both open calls end.
fn long_history() -> Vec<AuditEvent> {
    let mut events = history();
    for i in 0..40 {
        let call = format!("x{i}");
        let (tool, outcome) = match i % 3 {
            0 => ("validate", Outcome::Succeeded),
            1 => ("validate", Outcome::Failed),
            _ => ("backup", Outcome::Succeeded),
        };
        let workflow = if i % 4 == 0 { "w2" } else { "w1" };
        events.push(decided(workflow, &call, tool, DecisionKind::Allow));
        events.push(finished(workflow, &call, tool, outcome));
        if i % 5 == 0 {
            events.push(decided(
                workflow,
                &format!("d{i}"),
                "process",
                DecisionKind::Deny,
            ));
        }
    }
    events.push(finished("w2", "c6", "process", Outcome::Succeeded));
    events.push(verdict("w1", "c4", "ap-2", ApprovalVerdict::Approved));
    events.push(decided("w1", "c4", "notify", DecisionKind::Allow));
    events.push(finished("w1", "c4", "notify", Outcome::Succeeded));
    events.push(decided("w1", "last", "validate", DecisionKind::Allow));
    events
}

fn applied(config: Arc<Config>, events: &[AuditEvent]) -> State {
    let mut state = State::new(config);
    for (i, event) in events.iter().enumerate() {
        state.apply(1_000 + i as i64, event);
    }
    state
}

/// What is observed, without the calls in memory (the one thing the window changes) and the
/// configuration's version (the two configurations differ in the window).
fn without_calls(mut observed: Observed) -> Observed {
    for workflow in observed.workflows.values_mut() {
        workflow.calls.clear();
        workflow.config_version.clear();
    }
    for approval in observed.pending.iter_mut().chain(&mut observed.decided) {
        approval.config_version.clear();
    }
    observed.unfinished = without_versions(observed.unfinished);
    observed
}

fn without_versions(mut unfinished: Vec<Unfinished>) -> Vec<Unfinished> {
    for call in &mut unfinished {
        if let Unfinished::Waiting(approval) = call {
            approval.config_version.clear();
        }
    }
    unfinished
}

#[test]
fn the_window_changes_only_which_calls_are_in_memory() {
    let events = long_history();
    let every = applied(config(), &events);
    assert!(every.workflows.values().all(|w| w.calls.complete()));
    // After every prefix, not only at the end: an open call must be found whenever it changes.
    for end in 0..=events.len() {
        let small = applied(config_keeping(2), &events[..end]);
        let all = applied(config(), &events[..end]);
        assert_eq!(
            without_calls(small.observe()),
            without_calls(all.observe()),
            "after {end} events"
        );
    }
    let small = applied(config_keeping(2), &events);
    let w1 = &small.workflows["w1"];
    assert!(w1.calls.in_memory() < 5, "{}", w1.calls.in_memory());
    assert_eq!(w1.calls.recorded(), every.workflows["w1"].calls.recorded());
}

#[test]
fn open_calls_and_each_steps_latest_stay_in_memory_past_the_window() {
    let events = long_history();
    let end = events.len() - 5;
    let small = applied(config_keeping(2), &events[..end]);
    let w1 = &small.workflows["w1"];
    assert!(matches!(
        w1.calls.get("c4").map(|c| &c.status),
        Some(CallStatus::WaitingApproval { .. })
    ));
    let w2 = &small.workflows["w2"];
    assert_eq!(
        w2.calls.get("c6").map(|c| &c.status),
        Some(&CallStatus::Running)
    );
    assert_eq!(
        w2.calls.latest_of_step("v").map(|c| &*c.call_id),
        Some("c5")
    );
    let unfinished = without_versions(small.unfinished());
    let every = without_versions(applied(config(), &events[..end]).unfinished());
    assert_eq!(unfinished, every);
    assert_eq!(unfinished.len(), 2, "{unfinished:?}");
}

#[test]
fn the_history_folded_from_the_log_and_memory_is_the_whole_history() {
    let events = long_history();
    let every = applied(config(), &events);
    let small = applied(config_keeping(2), &events);
    for (id, workflow) in &small.workflows {
        let mut fold = HistoryFold::new(config_keeping(2), id);
        for (i, event) in events.iter().enumerate() {
            fold.add(i as u64 + 1, 1_000 + i as i64, event);
        }
        let whole = fold.finish(workflow.calls.iter().cloned().collect());
        let expected: Vec<CallEntry> = every.workflows[id].calls.iter().cloned().collect();
        assert_eq!(whole, expected, "workflow {id}");
    }
}

#[test]
fn calls_the_log_does_not_have_yet_come_from_memory_in_their_order() {
    let events = long_history();
    let small = applied(config_keeping(2), &events);
    let every = applied(config(), &events);
    // The log read stops a record short of the state (queued, not written yet): a new call.
    let mut fold = HistoryFold::new(config(), "w1");
    for (i, event) in events[..events.len() - 1].iter().enumerate() {
        fold.add(i as u64 + 1, 1_000 + i as i64, event);
    }
    let whole = fold.finish(small.workflows["w1"].calls.iter().cloned().collect());
    let expected: Vec<CallEntry> = every.workflows["w1"].calls.iter().cloned().collect();
    assert_eq!(whole, expected);
}
