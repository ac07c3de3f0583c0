//! The live dashboard of `watch` on a terminal (SPEC section 5): the figures of the status snapshot, the
//! current workflow's progress, the approvals waiting for a person (`a` approves and `d` denies the
//! selected one), and a scrolling list of recent events; `q` quits.
//!
//! [`figures`] owns what is shown (and which workflow the panel follows), [`draw`] how it looks, as a
//! pure function tested by rendering to ratatui's `TestBackend`; only [`run`] touches the terminal.

mod draw;
mod figures;

pub use draw::{draw, progress_bar};
pub use figures::{CurrentWorkflow, EventLine, Figures, Tone};

use crate::cli::{Global, WatchArgs};
use crate::client::{Answer, Client, login_name};
use crate::output::Out;
use crate::watch::{Followed, Follower};
use conductor_proto::v1 as pb;
use ratatui::crossterm::event::{self, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

const REFRESH: Duration = Duration::from_millis(500);

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Quit,
    /// Move the approval selection (up is negative).
    Select(isize),
    /// Approve (`a`) or deny (`d`) the selected approval request.
    Decide {
        approve: bool,
    },
}

/// The dashboard's keys: `q`/Esc/Ctrl-C quit, ↑↓ (or k/j) select a pending approval, `a` approves
/// and `d` denies it.
pub fn key_action(key: &KeyEvent) -> Option<KeyAction> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
            Some(KeyAction::Quit)
        }
        KeyCode::Char('q') | KeyCode::Esc => Some(KeyAction::Quit),
        KeyCode::Up | KeyCode::Char('k') => Some(KeyAction::Select(-1)),
        KeyCode::Down | KeyCode::Char('j') => Some(KeyAction::Select(1)),
        KeyCode::Char('a') => Some(KeyAction::Decide { approve: true }),
        KeyCode::Char('d') => Some(KeyAction::Decide { approve: false }),
        _ => None,
    }
}

/// Approves or denies the selected request in the user's name, for exactly the arguments digest the
/// dashboard shows; returns what to tell the user.
async fn decide(client: &Client, figures: &Figures, approve: bool) -> String {
    let Some(approval) = figures.selected_approval() else {
        return "no approval is waiting".to_owned();
    };
    let request = pb::ApprovalDecisionRequest {
        approval_id: approval.id.clone(),
        approver: login_name(),
        reason: "decided in the conductorctl dashboard".to_owned(),
        arguments_digest: approval.arguments_digest.clone(),
    };
    let answer = if approve {
        client.rpc().approve(request).await
    } else {
        client.rpc().deny(request).await
    };
    match answer.answer(client) {
        Ok(decided) => format!(
            "{} {} by {}",
            decided.id,
            crate::present::approval_state(decided.state),
            decided.decided_by
        ),
        Err(e) => format!("{}: {e}", approval.id),
    }
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
    let (key_tx, mut keys) = mpsc::channel::<KeyAction>(4);
    std::thread::spawn(move || {
        while let Ok(read) = event::read() {
            if let event::Event::Key(key) = read
                && let Some(action) = key_action(&key)
                && key_tx.blocking_send(action).is_err()
            {
                return;
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
            key = keys.recv() => match key {
                None | Some(KeyAction::Quit) => break Ok(()),
                Some(KeyAction::Select(step)) => figures.select(step),
                Some(KeyAction::Decide { approve }) => {
                    figures.notice = Some(decide(client, &figures, approve).await);
                }
            },
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
                if let Ok(pending) = client.rpc().list_pending_approvals(pb::ListPendingApprovalsRequest {}).await {
                    figures.set_approvals(pending.into_inner().approvals);
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
mod tests;
