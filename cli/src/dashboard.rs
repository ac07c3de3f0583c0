//! The live dashboard of `watch` on a terminal (SPEC section 5): the figures of the status snapshot, the
//! current workflow's progress, and a scrolling list of recent events; `q` quits.
//!
//! Drawing is a pure function of [`Figures`], so it is tested by rendering to ratatui's `TestBackend`;
//! only [`run`] touches the terminal.

use crate::cli::{Global, WatchArgs};
use crate::client::{Answer, Client};
use crate::output::{Out, clock_ms, duration_ms};
use crate::present::{describe, workflow_state};
use crate::watch::{Followed, Follower};
use conductor_proto::v1 as pb;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
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
    /// Most recent last.
    pub events: VecDeque<String>,
    pub connection: String,
}

#[derive(Debug, Clone, Default)]
pub struct CurrentWorkflow {
    pub name: String,
    pub state: String,
    pub steps_done: u32,
    pub steps_total: u32,
    pub duration_ms: u64,
    /// The next step, with its tool when known: `welcome (send_notification)`.
    pub next_step: String,
}

impl Figures {
    /// Takes the snapshot's figures; `tools_of_steps` maps `template/step` to its tool.
    pub fn update(
        &mut self,
        status: &pb::StatusResponse,
        tools_of_steps: &HashMap<String, String>,
    ) {
        self.active = status.active_workflows;
        self.completed_today = status.completed_today;
        self.failed_today = status.failed_today;
        self.violations = status.policy_violations;
        self.pending_approvals = status.pending_approvals;
        self.current = status.workflows.first().map(|w| {
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
                name,
                state: workflow_state(w.state).to_owned(),
                steps_done: w.steps_done,
                steps_total: w.steps_total,
                duration_ms: w.duration_ms,
                next_step,
            }
        });
    }

    pub fn push_event(&mut self, line: String) {
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
        None => lines.push(Line::from("Current Workflow: none yet")),
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
    let skip = figures.events.len().saturating_sub(visible);
    let items: Vec<ListItem> = figures
        .events
        .iter()
        .skip(skip)
        .map(|e| ListItem::new(e.as_str()))
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
            if let Event::Key(key) = read {
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
    let plain = Out {
        color: false,
        json: false,
    };
    let mut figures = Figures {
        connection: client.url.clone(),
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
                        figures.push_event(format!("#{} {} {} {}", e.seq, clock_ms(e.timestamp_ms), e.workflow_id, describe(&plain, e)));
                    }
                    continue;
                }
                Some(Followed::Lost(reason)) => figures.connection = format!("{} — reconnecting ({reason})", client.url),
                Some(Followed::Resumed(_)) => figures.connection = client.url.clone(),
                None => break Ok(()),
            },
            _ = tick.tick() => {
                if let Ok(status) = client.rpc().status(pb::StatusRequest {}).await {
                    figures.update(status.get_ref(), &tools_of_steps);
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
        let mut terminal = Terminal::new(TestBackend::new(70, 20)).unwrap();
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
        figures.update(&status, &tools);
        figures.push_event("#12 validate_data succeeded in 1.2ms".into());
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
}
