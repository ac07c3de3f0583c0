//! The dashboard rendered into ratatui's `TestBackend`: figures, focus, widths and colours.

use super::*;
use pb::audit_event::Event;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

fn rendered(figures: &Figures) -> Vec<String> {
    rendered_at(figures, 70)
}

fn rendered_at(figures: &Figures, width: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, 20)).unwrap();
    terminal.draw(|frame| draw(frame, figures, false)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol().to_owned())
                .collect::<String>()
        })
        .collect()
}

#[test]
fn progress_bar_matches_the_spec() {
    assert_eq!(progress_bar(4, 5, 10), "████████░░ 80% (4/5 steps)");
    assert_eq!(progress_bar(0, 3, 10), "░░░░░░░░░░ 0% (0/3 steps)");
    assert_eq!(progress_bar(2, 0, 10), "ad-hoc (no fixed steps)");
}

#[test]
fn dashboard_shows_the_figures_of_a_snapshot() {
    let status = pb::StatusResponse {
        active_workflows: 3,
        completed_today: 47,
        policy_violations: 2,
        workflows: vec![pb::WorkflowInfo {
            id: "wf-1".into(),
            template: "customer_onboarding".into(),
            state: pb::WorkflowState::Running as i32,
            steps_done: 4,
            steps_total: 5,
            next_step: "notify_team".into(),
            duration_ms: 3200,
            ..Default::default()
        }],
        ..Default::default()
    };
    let tools = HashMap::from([(
        "customer_onboarding/notify_team".to_owned(),
        "send_notification".to_owned(),
    )]);
    let mut figures = Figures {
        connection: "http://127.0.0.1:50051".into(),
        ..Figures::default()
    };
    figures.update(&status, &tools, None);
    figures.push(EventLine {
        text: "#12 validate_data succeeded in 1.2ms".into(),
        tone: Tone::Good,
    });
    let lines = rendered(&figures);
    let text = lines.join("\n");
    assert!(lines[0].contains("Workflow Status Dashboard"), "{text}");
    for expected in [
        "Active Workflows: 3",
        "Completed Today: 47",
        "Policy Violations: 2",
        "Current Workflow: customer_onboarding",
        "Progress: ████████░░ 80% (4/5 steps)",
        "Duration: 3.2s",
        "Next Step: notify_team (send_notification)",
        "#12 validate_data succeeded in 1.2ms",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "missing {expected:?} in\n{text}"
        );
    }
}

fn workflow(id: &str, template: &str, state: pb::WorkflowState) -> pb::WorkflowInfo {
    pb::WorkflowInfo {
        id: id.into(),
        template: template.into(),
        state: state as i32,
        steps_total: 3,
        ..Default::default()
    }
}

fn event(seq: u64, workflow_id: &str, body: Event) -> pb::AuditEvent {
    pb::AuditEvent {
        seq,
        workflow_id: workflow_id.into(),
        event: Some(body),
        ..Default::default()
    }
}

fn started(seq: u64, workflow_id: &str) -> pb::AuditEvent {
    event(
        seq,
        workflow_id,
        Event::WorkflowStarted(pb::audit_event::WorkflowStarted::default()),
    )
}

/// The snapshot lists the most recently started first: an old ad-hoc workflow that is still open,
/// then the template run that is moving.
fn two_workflows() -> pb::StatusResponse {
    pb::StatusResponse {
        active_workflows: 2,
        workflows: vec![
            workflow("wf-adhoc", "", pb::WorkflowState::Running),
            workflow("wf-run", "order_summary", pb::WorkflowState::Running),
            workflow("wf-old", "order_summary", pb::WorkflowState::Completed),
        ],
        ..Default::default()
    }
}

#[test]
fn without_a_focus_the_panel_follows_the_latest_activity() {
    let mut figures = Figures::default();
    figures.record(&started(1, "wf-adhoc"));
    figures.record(&started(2, "wf-run"));
    figures.update(&two_workflows(), &HashMap::new(), None);
    assert_eq!(figures.current.as_ref().unwrap().id, "wf-run");
    figures.record(&started(3, "wf-adhoc"));
    figures.update(&two_workflows(), &HashMap::new(), None);
    assert_eq!(figures.current.as_ref().unwrap().id, "wf-adhoc");
    // A finished workflow's late event does not pull the panel away from running ones.
    figures.record(&started(4, "wf-old"));
    figures.update(&two_workflows(), &HashMap::new(), None);
    assert_eq!(figures.current.as_ref().unwrap().id, "wf-adhoc");
}

#[test]
fn watch_workflow_keeps_the_panel_on_that_workflow() {
    let mut figures = Figures {
        focus: Some("wf-old".into()),
        ..Figures::default()
    };
    figures.record(&started(7, "wf-run"));
    figures.update(&two_workflows(), &HashMap::new(), None);
    assert_eq!(figures.current.as_ref().unwrap().id, "wf-old");
    // Gone from the snapshot's recent list: the workflow fetched by id is shown.
    let mut status = two_workflows();
    status.workflows.pop();
    let fetched = workflow("wf-old", "order_summary", pb::WorkflowState::Completed);
    figures.update(&status, &HashMap::new(), Some(&fetched));
    let text = rendered(&figures).join("\n");
    assert!(
        text.contains("Current Workflow: order_summary (completed)"),
        "{text}"
    );
}

#[test]
fn at_80_columns_event_lines_end_in_an_ellipsis_and_keep_the_approval_id() {
    let mut figures = Figures::default();
    figures.record(&event(
        1234,
        "wf-1a2b3c4d5e6f",
        Event::ApprovalRequested(pb::audit_event::ApprovalRequested {
            tool: "send_notification".into(),
            approval_id: "ap-0123456789ab".into(),
            ..Default::default()
        }),
    ));
    let lines = rendered_at(&figures, 80);
    let text = lines.join("\n");
    let line = lines
        .iter()
        .find(|l| l.contains("#1234"))
        .unwrap_or_else(|| panic!("no event line in\n{text}"));
    assert!(line.contains("ap-0123456789ab"), "{text}");
    assert!(line.contains('…'), "a cut line says it is cut: {text}");
}

#[test]
fn denials_are_coloured_apart_from_allowed_calls() {
    let decided = |kind: pb::DecisionKind| {
        event(
            1,
            "wf-1",
            Event::CallDecided(pb::audit_event::CallDecided {
                decision: Some(pb::Decision {
                    kind: kind as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
    };
    assert_eq!(Tone::of(&decided(pb::DecisionKind::Deny)), Tone::Bad);
    assert_eq!(Tone::of(&decided(pb::DecisionKind::Allow)), Tone::Plain);
    let mut figures = Figures::default();
    figures.record(&decided(pb::DecisionKind::Deny));
    let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
    terminal.draw(|frame| draw(frame, &figures, true)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let red = (0..buffer.area.height).any(|y| {
        (0..buffer.area.width).any(|x| {
            let cell = &buffer[(x, y)];
            cell.symbol() == "#" && cell.fg == Color::Red
        })
    });
    assert!(red, "the denial's line is red");
}

fn pending(id: &str) -> pb::ApprovalInfo {
    pb::ApprovalInfo {
        id: id.into(),
        tool: "send_notification".into(),
        workflow_id: "wf-1".into(),
        gate: "welcome".into(),
        arguments_digest: "sha256:abc".into(),
        ..Default::default()
    }
}

#[test]
fn keys_select_and_decide_the_pending_approval() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let press = |code| key_action(&KeyEvent::new(code, KeyModifiers::NONE));
    assert_eq!(
        press(KeyCode::Char('a')),
        Some(KeyAction::Decide { approve: true })
    );
    assert_eq!(
        press(KeyCode::Char('d')),
        Some(KeyAction::Decide { approve: false })
    );
    assert_eq!(press(KeyCode::Down), Some(KeyAction::Select(1)));
    assert_eq!(press(KeyCode::Char('q')), Some(KeyAction::Quit));
    assert_eq!(
        key_action(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(KeyAction::Quit)
    );

    let mut figures = Figures::default();
    figures.set_approvals(vec![pending("ap-1"), pending("ap-2")]);
    figures.select(1);
    figures.select(1);
    assert_eq!(figures.selected_approval().unwrap().id, "ap-2");
    // The selection follows its request when the list changes under it.
    figures.set_approvals(vec![pending("ap-0"), pending("ap-1"), pending("ap-2")]);
    assert_eq!(figures.selected_approval().unwrap().id, "ap-2");
    figures.set_approvals(vec![pending("ap-0")]);
    assert_eq!(figures.selected_approval().unwrap().id, "ap-0");

    let text = rendered_at(&figures, 100).join("\n");
    assert!(text.contains("› ap-0 send_notification in wf-1"), "{text}");
    assert!(text.contains("a approve, d deny"), "{text}");
}

/// A workflow whose latest change is not durable yet (an audit outage) is shown so: a crash would
/// take that change back.
#[test]
fn the_panel_marks_a_workflow_whose_latest_change_is_not_durable() {
    let status = pb::StatusResponse {
        active_workflows: 1,
        workflows: vec![pb::WorkflowInfo {
            not_yet_durable: true,
            ..workflow("wf-run", "order_summary", pb::WorkflowState::Running)
        }],
        ..Default::default()
    };
    let mut figures = Figures::default();
    figures.update(&status, &HashMap::new(), None);
    let lines = rendered(&figures);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Current Workflow: order_summary (running (not yet durable))")),
        "{}",
        lines.join("\n")
    );
}
