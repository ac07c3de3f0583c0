//! The live dashboard of `watch` on a terminal (SPEC section 5): the figures of the status snapshot, the
//! current workflow's progress, and a scrolling list of recent events; `q` quits.
//!
//! Drawing is a pure function of [`Figures`], so it is tested by rendering to ratatui's `TestBackend`;
//! only [`run`] touches the terminal.

use crate::cli::{Global, WatchArgs};
use crate::client::{Answer, Client};
use crate::output::{Out, clip, clock_ms, duration_ms};
use crate::present::{describe, is_finished, workflow_state};
use crate::watch::{Followed, Follower};
use conductor_proto::v1 as pb;
use pb::audit_event::Event;
use ratatui::Frame;
use ratatui::crossterm::event::{self, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, List, ListItem, Padding, Paragraph};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many recent events the dashboard keeps.
const RECENT: usize = 200;
const REFRESH: Duration = Duration::from_millis(500);

/// Everything the dashboard shows.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub active: u32,
    pub completed_today: u32,
    pub failed_today: u32,
    pub violations: u64,
    pub pending_approvals: u32,
    pub current: Option<CurrentWorkflow>,
    /// `watch --workflow ID`: the panel stays on this workflow whatever else runs.
    pub focus: Option<String>,
    /// Each workflow's latest event seq: without a focus, the panel follows the one active last.
    pub activity: HashMap<String, u64>,
    /// Most recent last.
    pub events: VecDeque<EventLine>,
    pub connection: String,
}

/// One line of the recent events, with what it means for its colour.
#[derive(Debug, Clone)]
pub struct EventLine {
    pub text: String,
    pub tone: Tone,
}

/// How an event line is emphasised: refusals and failures stand apart from allowed calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Bad,
    Waiting,
}

impl Tone {
    /// What the event means for the person watching.
    pub fn of(e: &pb::AuditEvent) -> Tone {
        let failed = |outcome: i32| outcome != pb::CallOutcome::Succeeded as i32;
        match &e.event {
            Some(Event::CallDecided(c)) => {
                match c
                    .decision
                    .as_ref()
                    .map(|d| d.kind)
                    .and_then(|k| pb::DecisionKind::try_from(k).ok())
                {
                    Some(pb::DecisionKind::Deny) => Tone::Bad,
                    Some(pb::DecisionKind::NeedsApproval) => Tone::Waiting,
                    _ => Tone::Plain,
                }
            }
            Some(Event::ApprovalRequested(_)) => Tone::Waiting,
            Some(Event::ApprovalDecided(a)) if a.verdict == pb::ApprovalState::Approved as i32 => {
                Tone::Good
            }
            Some(Event::ApprovalDecided(_)) => Tone::Bad,
            Some(Event::CallFinished(c)) if failed(c.outcome) => Tone::Bad,
            Some(Event::CallFinished(_)) => Tone::Good,
            Some(Event::WorkflowFinished(w)) if w.state == pb::WorkflowState::Completed as i32 => {
                Tone::Good
            }
            Some(Event::WorkflowFinished(_))
            | Some(Event::ControlRefused(_))
            | Some(Event::ConfigRefused(_)) => Tone::Bad,
            Some(Event::Recovered(_)) => Tone::Waiting,
            _ => Tone::Plain,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CurrentWorkflow {
    pub id: String,
    pub name: String,
    pub state: String,
    pub steps_done: u32,
    pub steps_total: u32,
    pub duration_ms: u64,
    /// The next step, with its tool when known: `welcome (send_notification)`.
    pub next_step: String,
}

impl Figures {
    /// Takes the snapshot's figures; `tools_of_steps` maps `template/step` to its tool; `focused` is
    /// the focus workflow as asked for by id, when the snapshot's recent list no longer holds it.
    pub fn update(
        &mut self,
        status: &pb::StatusResponse,
        tools_of_steps: &HashMap<String, String>,
        focused: Option<&pb::WorkflowInfo>,
    ) {
        self.active = status.active_workflows;
        self.completed_today = status.completed_today;
        self.failed_today = status.failed_today;
        self.violations = status.policy_violations;
        self.pending_approvals = status.pending_approvals;
        let shown = match &self.focus {
            Some(id) => status.workflows.iter().find(|w| &w.id == id).or(focused),
            None => self.most_active(&status.workflows),
        };
        self.current = shown.map(|w| {
            let name = if w.template.is_empty() {
                format!("ad-hoc {}", w.id)
            } else {
                w.template.clone()
            };
            let next_step = match tools_of_steps.get(&format!("{}/{}", w.template, w.next_step)) {
                Some(tool) if !w.next_step.is_empty() => format!("{} ({tool})", w.next_step),
                _ if w.next_step.is_empty() => "-".to_owned(),
                _ => w.next_step.clone(),
            };
            CurrentWorkflow {
                id: w.id.clone(),
                name,
                state: workflow_state(w.state).to_owned(),
                steps_done: w.steps_done,
                steps_total: w.steps_total,
                duration_ms: w.duration_ms,
                next_step,
            }
        });
    }

    /// Without a focus: the unfinished workflow with the latest event (ties: the snapshot's order,
    /// most recently active first); when none is unfinished, the one shown before, else the latest.
    fn most_active<'w>(&self, workflows: &'w [pb::WorkflowInfo]) -> Option<&'w pb::WorkflowInfo> {
        let last_seen = |w: &pb::WorkflowInfo| self.activity.get(&w.id).copied().unwrap_or(0);
        workflows
            .iter()
            .enumerate()
            .filter(|(_, w)| !is_finished(w.state))
            .max_by_key(|(i, w)| (last_seen(w), std::cmp::Reverse(*i)))
            .map(|(_, w)| w)
            .or_else(|| {
                let shown = self.current.as_ref()?;
                workflows.iter().find(|w| w.id == shown.id)
            })
            .or_else(|| workflows.first())
    }

    /// Adds an audit event to the recent lines and notes its workflow's activity.
    pub fn record(&mut self, e: &pb::AuditEvent) {
        if !e.workflow_id.is_empty() {
            self.activity.insert(e.workflow_id.clone(), e.seq);
        }
        let workflow = if e.workflow_id.is_empty() {
            "-"
        } else {
            &e.workflow_id
        };
        let text = format!(
            "#{} {} {workflow} {}",
            e.seq,
            clock_ms(e.timestamp_ms),
            describe(&Out::plain(), e)
        );
        self.push(EventLine {
            text,
            tone: Tone::of(e),
        });
    }

    pub fn push(&mut self, line: EventLine) {
        self.events.push_back(line);
        while self.events.len() > RECENT {
            self.events.pop_front();
        }
    }
}

/// `████████░░ 80% (4/5 steps)`.
pub fn progress_bar(done: u32, total: u32, width: usize) -> String {
    if total == 0 {
        return "ad-hoc (no fixed steps)".to_owned();
    }
    let done = done.min(total);
    let filled = (done as usize * width + total as usize / 2) / total as usize;
    let percent = done * 100 / total;
    format!(
        "{}{} {percent}% ({done}/{total} steps)",
        "█".repeat(filled),
        "░".repeat(width - filled)
    )
}

/// Draws the dashboard into a frame.
pub fn draw(frame: &mut Frame, figures: &Figures, color: bool) {
    let style = |c: Color| {
        if color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    };
    let bold = if color {
        Style::default().add_modifier(Modifier::BOLD)
    } else {
        Style::default()
    };
    let [top, bottom] =
        Layout::vertical([Constraint::Length(12), Constraint::Min(3)]).areas(frame.area());
    let mut lines = vec![
        Line::styled(format!("Active Workflows: {}", figures.active), bold),
        Line::from(format!("Completed Today: {}", figures.completed_today)),
        Line::styled(
            format!("Failed Today: {}", figures.failed_today),
            style(Color::Red),
        ),
        Line::styled(
            format!("Policy Violations: {}", figures.violations),
            style(Color::Yellow),
        ),
        Line::from(format!("Pending Approvals: {}", figures.pending_approvals)),
        Line::from(""),
    ];
    match &figures.current {
        Some(w) => {
            lines.push(Line::styled(
                format!("Current Workflow: {} ({})", w.name, w.state),
                bold,
            ));
            lines.push(Line::styled(
                format!(
                    "Progress: {}",
                    progress_bar(w.steps_done, w.steps_total, 10)
                ),
                style(Color::Green),
            ));
            lines.push(Line::from(format!(
                "Duration: {}",
                duration_ms(w.duration_ms)
            )));
            lines.push(Line::from(format!("Next Step: {}", w.next_step)));
        }
        None => lines.push(Line::from(match &figures.focus {
            Some(id) => format!("Current Workflow: {id} (not found)"),
            None => "Current Workflow: none yet".to_owned(),
        })),
    }
    let title = format!(" Workflow Status Dashboard — {} ", figures.connection);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(title)
                .padding(Padding::horizontal(1)),
        ),
        top,
    );
    let visible = usize::from(bottom.height.saturating_sub(2));
    let room = usize::from(bottom.width.saturating_sub(2));
    let skip = figures.events.len().saturating_sub(visible);
    let items: Vec<ListItem> = figures
        .events
        .iter()
        .skip(skip)
        .map(|e| {
            let tone = match e.tone {
                Tone::Plain => Style::default(),
                Tone::Good => style(Color::Green),
                Tone::Bad => style(Color::Red),
                Tone::Waiting => style(Color::Yellow),
            };
            ListItem::new(clip(&e.text, room)).style(tone)
        })
        .collect();
    let block = Block::bordered().title(" Recent Events (q quits) ");
    frame.render_widget(List::new(items).block(block), bottom);
}

/// The live loop: events from a [`Follower`], the snapshot every half second, keys from a thread.
pub async fn run(
    client: &Client,
    global: &Global,
    args: &WatchArgs,
    out: &Out,
) -> anyhow::Result<()> {
    let templates = client
        .rpc()
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .answer(client)?
        .templates;
    let tools_of_steps: HashMap<String, String> = templates
        .iter()
        .flat_map(|t| {
            t.steps
                .iter()
                .map(move |s| (format!("{}/{}", t.name, s.name), s.tool.clone()))
        })
        .collect();
    let mut follower = Follower::start(client, global, args.workflow.clone(), args.from).await?;
    let (event_tx, mut events) = mpsc::channel::<Followed>(256);
    tokio::spawn(async move {
        loop {
            let next = follower.next().await;
            if event_tx.send(next).await.is_err() {
                return;
            }
        }
    });
    let (key_tx, mut keys) = mpsc::channel::<()>(4);
    std::thread::spawn(move || {
        while let Ok(read) = event::read() {
            if let event::Event::Key(key) = read {
                let quit = key.kind == KeyEventKind::Press
                    && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc)
                        || key.code == KeyCode::Char('c')
                            && key.modifiers.contains(KeyModifiers::CONTROL));
                if quit && key_tx.blocking_send(()).is_err() {
                    return;
                }
            }
        }
    });
    let mut figures = Figures {
        connection: client.url.clone(),
        focus: args.workflow.clone(),
        ..Figures::default()
    };
    let mut terminal = ratatui::init();
    let mut tick = tokio::time::interval(REFRESH);
    let result = loop {
        tokio::select! {
            _ = keys.recv() => break Ok(()),
            followed = events.recv() => match followed {
                Some(Followed::Event(event)) => {
                    if let Some(pb::watch_event::Body::Event(e)) = &event.body {
                        figures.record(e);
                    }
                    continue;
                }
                Some(Followed::Lost(reason)) => figures.connection = format!("{} — {}", client.url, crate::watch::lost_note(&reason)),
                Some(Followed::Resumed(_)) => figures.connection = client.url.clone(),
                None => break Ok(()),
            },
            _ = tick.tick() => {
                if let Ok(status) = client.rpc().status(pb::StatusRequest {}).await {
                    let status = status.into_inner();
                    let focused = match &args.workflow {
                        Some(id) if !status.workflows.iter().any(|w| &w.id == id) => client
                            .rpc()
                            .get_workflow(pb::GetWorkflowRequest { workflow_id: id.clone() })
                            .await
                            .ok()
                            .map(tonic::Response::into_inner),
                        _ => None,
                    };
                    figures.update(&status, &tools_of_steps, focused.as_ref());
                }
            }
        }
        if let Err(e) = terminal.draw(|frame| draw(frame, &figures, out.color)) {
            break Err(e.into());
        }
    };
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

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
}
