//! How one approval request looks over the dashboard: everything a person should read before deciding
//! it (the call, who asked and when, the time left, why it waits, the digest and the arguments whole),
//! and, once `a` or `d` is pressed, the prompt for the reason. A pure function of [`Figures`].

use super::figures::Figures;
use super::keys::Pane;
use crate::output::{duration_ms, time_ms};
use conductor_proto::v1 as pb;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Padding, Paragraph, Wrap};

/// `4m12s left`, or `expired` once the time is up (the orchestrator refuses a late decision).
pub fn time_left(approval: &pb::ApprovalInfo, now_ms: i64) -> String {
    if approval.expires_at_ms <= 0 {
        return "no expiry".to_owned();
    }
    let left = approval.expires_at_ms.saturating_sub(now_ms);
    if left <= 0 {
        "expired".to_owned()
    } else {
        // Whole seconds: tenths would change on every refresh.
        let seconds = u64::try_from(left).unwrap_or(0) / 1000;
        format!("{} left", duration_ms(seconds.max(1) * 1000))
    }
}

/// The lines of a request's detail, without the prompt.
pub fn detail_lines(a: &pb::ApprovalInfo, now_ms: i64) -> Vec<String> {
    let step = if a.step.is_empty() {
        String::new()
    } else {
        format!(" step {}", a.step)
    };
    let mut lines = vec![
        format!(
            "call:       {}{step} in workflow {} (gate {})",
            a.tool, a.workflow_id, a.gate
        ),
        format!(
            "asked by:   {} at {}",
            a.requested_by,
            time_ms(a.requested_at_ms)
        ),
        format!(
            "time left:  {} (expires {})",
            time_left(a, now_ms),
            time_ms(a.expires_at_ms)
        ),
    ];
    if !a.workflow_caller.is_empty() && a.workflow_caller != a.requested_by {
        lines.push(format!("workflow:   started by {}", a.workflow_caller));
    }
    if !a.why.is_empty() {
        lines.push(format!("why:        {}", a.why));
    }
    lines.push(format!("sha256:     {}", a.arguments_digest));
    if conductor_core::digest::approval_digest_of_text(&a.arguments_json).as_deref()
        != Some(a.arguments_digest.as_str())
    {
        lines.push(
            "WARNING: this digest is not the digest of the arguments below; do not approve"
                .to_owned(),
        );
    }
    if a.four_eyes {
        lines.push(format!(
            "four eyes:  a person other than {} must decide",
            conductor_core::config::caller_name(&a.workflow_caller)
        ));
    }
    lines.push("arguments:".to_owned());
    let pretty = serde_json::from_str::<serde_json::Value>(&a.arguments_json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| a.arguments_json.clone());
    lines.extend(pretty.lines().map(|l| format!("  {l}")));
    lines
}

/// Draws the open pane (detail or confirmation) over the dashboard; nothing on the list.
pub fn draw_pane(frame: &mut Frame, figures: &Figures, color: bool) {
    let (approval, prompt) = match &figures.pane {
        Pane::List => return,
        Pane::Detail(approval) => (approval, None),
        Pane::Confirm {
            approval,
            approve,
            reason,
        } => (approval, Some((*approve, reason))),
    };
    let paint = |c: Color| {
        if color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    };
    // The whole frame: a margin would show the panels' borders beside the pane's own.
    let area = frame.area();
    frame.render_widget(Clear, area);
    let gone = if figures.open_approval_is_pending() {
        ""
    } else {
        " — no longer pending (decided elsewhere or expired)"
    };
    let block = Block::bordered()
        .title(format!(" Approval {}{gone} ", approval.id))
        .border_style(paint(Color::Yellow))
        .padding(Padding::horizontal(1));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [body, footer] = Layout::vertical([Constraint::Min(1), Constraint::Length(3)]).areas(inner);
    let lines: Vec<Line> = detail_lines(approval, figures.now_ms)
        .into_iter()
        .map(|l| {
            if l.starts_with("WARNING") {
                Line::styled(l, paint(Color::Red).add_modifier(Modifier::BOLD))
            } else {
                Line::from(l)
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), body);
    let footer_lines = match prompt {
        None => vec![
            Line::from(""),
            Line::from("a approve · d deny (each asks for a reason) · Esc back"),
        ],
        Some((approve, reason)) => {
            let verb = if approve { "Approve" } else { "Deny" };
            let consequence = if approve {
                "the call runs"
            } else {
                "the call does not run"
            };
            vec![
                Line::styled(
                    format!("{verb} {}? {consequence}. Reason: {reason}▏", approval.id),
                    paint(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
                Line::from(match &figures.notice {
                    Some(notice) => notice.clone(),
                    None => format!(
                        "Enter: {} with this reason · Esc: back",
                        verb.to_lowercase()
                    ),
                }),
            ]
        }
    };
    frame.render_widget(
        Paragraph::new(footer_lines).wrap(Wrap { trim: false }),
        footer,
    );
}
