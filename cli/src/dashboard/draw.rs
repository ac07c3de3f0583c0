//! How the dashboard looks: a pure function of [`Figures`] into a ratatui frame.

use super::figures::{Figures, Tone};
use crate::output::{clip, duration_ms};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, List, ListItem, Padding, Paragraph};

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

/// Draws the dashboard into a frame, with the open approval pane (if any) over it.
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
    let approvals_height = if figures.approvals.is_empty() {
        0
    } else {
        u16::try_from(figures.approvals.len().min(5) + 2).unwrap_or(7)
    };
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(13),
        Constraint::Length(approvals_height),
        Constraint::Min(3),
    ])
    .areas(frame.area());
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
        match figures.downstream_line() {
            Some((text, true)) => Line::styled(text, style(Color::Red)),
            Some((text, false)) => Line::from(text),
            None => Line::from("Downstream: not checked yet"),
        },
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
    if !figures.approvals.is_empty() {
        let room = usize::from(middle.width.saturating_sub(2));
        let first = figures.selected.saturating_sub(4);
        let items: Vec<ListItem> = figures
            .approvals
            .iter()
            .enumerate()
            .skip(first)
            .take(5)
            .map(|(i, a)| {
                let mark = if i == figures.selected { "›" } else { " " };
                let step = if a.step.is_empty() {
                    String::new()
                } else {
                    format!(" step {}", a.step)
                };
                let digest = a.arguments_digest.trim_start_matches("sha256:");
                let text = format!(
                    "{mark} {} {}{step} in {} by {}, {} · sha256 {}…",
                    a.id,
                    a.tool,
                    a.workflow_id,
                    a.requested_by,
                    super::detail::time_left(a, figures.now_ms),
                    digest.get(..12).unwrap_or(digest)
                );
                let item = ListItem::new(clip(&text, room));
                if i == figures.selected {
                    item.style(bold)
                } else {
                    item
                }
            })
            .collect();
        let title = match &figures.notice {
            Some(notice) => format!(" Pending Approvals — {notice} "),
            None => " Pending Approvals (↑↓ select, Enter details, a approve, d deny) ".to_owned(),
        };
        let block = Block::bordered()
            .title(title)
            .border_style(style(Color::Yellow));
        frame.render_widget(List::new(items).block(block), middle);
    }
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
    let title = match (&figures.notice, figures.approvals.is_empty()) {
        (Some(notice), true) => format!(" Recent Events — {notice} (q quits) "),
        _ => " Recent Events (q quits) ".to_owned(),
    };
    let block = Block::bordered().title(title);
    frame.render_widget(List::new(items).block(block), bottom);
    super::detail::draw_pane(frame, figures, color);
}
