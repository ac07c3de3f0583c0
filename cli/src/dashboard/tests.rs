//! The dashboard rendered into ratatui's `TestBackend`: figures, focus, widths and colours.

use super::*;
use pb::audit_event::Event;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
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

fn press(figures: &mut Figures, code: KeyCode) -> Option<Effect> {
    figures.on_key(&KeyEvent::new(code, KeyModifiers::NONE))
}

fn type_text(figures: &mut Figures, text: &str) {
    for c in text.chars() {
        assert_eq!(press(figures, KeyCode::Char(c)), None, "typing {c:?}");
    }
}

#[test]
fn keys_select_the_pending_approval_and_the_selection_follows_its_request() {
    let mut figures = Figures::default();
    figures.set_approvals(vec![pending("ap-1"), pending("ap-2")]);
    press(&mut figures, KeyCode::Down);
    press(&mut figures, KeyCode::Char('j'));
    assert_eq!(figures.selected_approval().unwrap().id, "ap-2");
    press(&mut figures, KeyCode::Up);
    press(&mut figures, KeyCode::Down);
    // The selection follows its request when the list changes under it.
    figures.set_approvals(vec![pending("ap-0"), pending("ap-1"), pending("ap-2")]);
    assert_eq!(figures.selected_approval().unwrap().id, "ap-2");
    figures.set_approvals(vec![pending("ap-0")]);
    assert_eq!(figures.selected_approval().unwrap().id, "ap-0");
    assert_eq!(press(&mut figures, KeyCode::Char('q')), Some(Effect::Quit));
    assert_eq!(
        figures.on_key(&KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Effect::Quit)
    );

    let text = rendered_at(&figures, 100).join("\n");
    assert!(text.contains("› ap-0 send_notification"), "{text}");
    assert!(text.contains("Enter details, a approve, d deny"), "{text}");
}

/// Issue 25 item 1: one keystroke approved the selected request, unseen and without a reason.
#[test]
fn approve_and_deny_ask_to_confirm_and_for_a_reason_before_anything_is_decided() {
    let mut figures = Figures::default();
    figures.set_approvals(vec![pending("ap-1"), pending("ap-2")]);
    // `a` opens the confirmation for the selected request: nothing is decided yet.
    assert_eq!(press(&mut figures, KeyCode::Char('a')), None);
    assert!(
        matches!(&figures.pane, Pane::Confirm { approval, approve: true, .. } if approval.id == "ap-1"),
        "{:?}",
        figures.pane
    );
    // No reason, no decision: the prompt says so.
    assert_eq!(press(&mut figures, KeyCode::Enter), None);
    assert!(
        figures.notice.as_deref().unwrap_or("").contains("reason"),
        "{:?}",
        figures.notice
    );
    // Keys that mean something on the list are text in the prompt.
    type_text(&mut figures, "checked qd");
    press(&mut figures, KeyCode::Backspace);
    press(&mut figures, KeyCode::Backspace);
    press(&mut figures, KeyCode::Backspace);
    type_text(&mut figures, " the list");
    // The list changes under the open pane: the decision is for the request that was shown.
    figures.set_approvals(vec![pending("ap-0"), pending("ap-1"), pending("ap-2")]);
    assert_eq!(
        press(&mut figures, KeyCode::Enter),
        Some(Effect::Decide(Decision {
            approval_id: "ap-1".into(),
            arguments_digest: "sha256:abc".into(),
            approve: true,
            reason: "checked the list".into(),
        }))
    );
    assert_eq!(figures.pane, Pane::List);

    // `d`, then Esc: back to the request's detail, then to the list, and nothing was denied.
    assert_eq!(press(&mut figures, KeyCode::Char('d')), None);
    assert!(matches!(
        &figures.pane,
        Pane::Confirm { approve: false, .. }
    ));
    assert_eq!(press(&mut figures, KeyCode::Esc), None);
    assert!(matches!(&figures.pane, Pane::Detail(_)));
    assert_eq!(press(&mut figures, KeyCode::Esc), None);
    assert_eq!(figures.pane, Pane::List);

    // Enter opens the detail; `d` there asks for a reason too.
    assert_eq!(press(&mut figures, KeyCode::Enter), None);
    assert!(matches!(&figures.pane, Pane::Detail(a) if a.id == "ap-1"));
    assert_eq!(press(&mut figures, KeyCode::Char('d')), None);
    type_text(&mut figures, "wrong recipients");
    assert_eq!(
        press(&mut figures, KeyCode::Enter),
        Some(Effect::Decide(Decision {
            approval_id: "ap-1".into(),
            arguments_digest: "sha256:abc".into(),
            approve: false,
            reason: "wrong recipients".into(),
        }))
    );

    // With nothing waiting, Enter and `a` say so and open nothing.
    let mut empty = Figures::default();
    assert_eq!(press(&mut empty, KeyCode::Char('a')), None);
    assert_eq!(empty.pane, Pane::List);
    assert_eq!(empty.notice.as_deref(), Some("no approval is waiting"));
}

fn full_request() -> pb::ApprovalInfo {
    let arguments = r#"{"recipients":["ops@example.com"],"message":"welcome"}"#;
    pb::ApprovalInfo {
        id: "ap-7".into(),
        tool: "send_notification".into(),
        step: "welcome".into(),
        workflow_id: "wf-1".into(),
        gate: "welcome".into(),
        arguments_json: arguments.into(),
        arguments_digest: conductor_core::digest::approval_digest_of_text(arguments).unwrap(),
        requested_by: "alice".into(),
        requested_at_ms: 1_000_000,
        expires_at_ms: 1_000_000 + 300_000,
        why: "condition args.amount > 1000 held".into(),
        ..Default::default()
    }
}

fn rendered_size(figures: &Figures, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, figures, false)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol().to_owned())
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn enter_shows_the_arguments_digest_why_who_asked_and_the_time_left() {
    let request = full_request();
    let mut figures = Figures {
        now_ms: 1_000_000 + 48_000,
        ..Figures::default()
    };
    figures.set_approvals(vec![request.clone()]);
    press(&mut figures, KeyCode::Enter);
    let text = rendered_size(&figures, 120, 30);
    for expected in [
        "Approval ap-7",
        "send_notification step welcome in workflow wf-1 (gate welcome)",
        "asked by:   alice",
        "time left:  4m12s left",
        "why:        condition args.amount > 1000 held",
        request.arguments_digest.as_str(),
        "\"recipients\": [",
        "\"ops@example.com\"",
        "a approve · d deny",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("WARNING"), "{text}");
    // Confirming shows the question, the reason as typed, and what Enter does.
    press(&mut figures, KeyCode::Char('d'));
    type_text(&mut figures, "not today");
    let text = rendered_size(&figures, 120, 30);
    assert!(
        text.contains("Deny ap-7? the call does not run. Reason: not today"),
        "{text}"
    );
    assert!(
        text.contains("Enter: deny with this reason · Esc: back"),
        "{text}"
    );
    // Decided elsewhere: the pane says so.
    figures.set_approvals(vec![]);
    let text = rendered_size(&figures, 120, 30);
    assert!(text.contains("no longer pending"), "{text}");
}

/// Two requests of one gate differed on screen only by id and digest prefix: each row now says the
/// step, who asked and the time left.
#[test]
fn each_pending_row_says_the_step_who_asked_and_the_time_left() {
    let mut other = full_request();
    other.id = "ap-8".into();
    other.requested_by = "bob".into();
    other.expires_at_ms = 1_000_000 + 60_000;
    let mut figures = Figures {
        now_ms: 1_000_000,
        ..Figures::default()
    };
    figures.set_approvals(vec![full_request(), other]);
    let text = rendered_size(&figures, 120, 30);
    assert!(
        text.contains("ap-7 send_notification step welcome in wf-1 by alice, 5m00s left"),
        "{text}"
    );
    assert!(
        text.contains("ap-8 send_notification step welcome in wf-1 by bob, 1m00s left"),
        "{text}"
    );
    figures.now_ms = 1_000_000 + 600_000;
    assert!(rendered_size(&figures, 120, 30).contains("by bob, expired"));
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

/// Issue 25 item 5: the dashboard says which downstream server cannot be reached.
#[test]
fn the_dashboard_says_which_downstream_server_is_down() {
    let server = |name: &str, state: pb::DownstreamState| pb::DownstreamHealth {
        server: name.into(),
        transport: "grpc".into(),
        state: state as i32,
        ..Default::default()
    };
    let status = pb::StatusResponse {
        downstream: vec![
            server("validation", pb::DownstreamState::Up),
            server("notification", pb::DownstreamState::Down),
            server("files", pb::DownstreamState::NotStarted),
        ],
        ..Default::default()
    };
    let mut figures = Figures::default();
    assert!(
        rendered(&figures)
            .join("\n")
            .contains("Downstream: not checked yet")
    );
    figures.update(&status, &HashMap::new(), None);
    let text = rendered(&figures).join("\n");
    assert!(
        text.contains("Downstream: 1 up, 1 DOWN (notification), 1 not started"),
        "{text}"
    );
}
