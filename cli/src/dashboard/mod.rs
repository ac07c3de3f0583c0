//! The live dashboard of `watch` on a terminal (SPEC section 5): the figures of the status snapshot, the
//! current workflow's progress, the approvals waiting for a person (Enter shows one whole; `a` and `d`
//! ask to confirm and for a reason before approving or denying it), and a scrolling list of recent
//! events; `q` quits.
//!
//! [`figures`] owns what is shown (and which workflow the panel follows), [`keys`] what each key does
//! (a pure state machine), [`draw`] and [`detail`] how it looks, as pure functions tested by rendering
//! to ratatui's `TestBackend`; only [`run`] touches the terminal.

mod detail;
mod draw;
mod figures;
mod keys;

pub use detail::{detail_lines, time_left};
pub use draw::{draw, progress_bar};
pub use figures::{CurrentWorkflow, EventLine, Figures, Tone};
pub use keys::{Decision, Effect, Pane};

use crate::cli::{Global, WatchArgs};
use crate::client::{Answer, Client, login_name};
use crate::output::Out;
use crate::watch::{Followed, Follower};
use conductor_proto::v1 as pb;
use ratatui::crossterm::event::{self, KeyEvent, KeyEventKind};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

const REFRESH: Duration = Duration::from_millis(500);

/// Sends a confirmed decision in the user's name, for exactly the arguments digest the pane showed;
/// returns what to tell the user.
async fn decide(client: &Client, decision: Decision) -> String {
    let request = pb::ApprovalDecisionRequest {
        approval_id: decision.approval_id.clone(),
        approver: login_name(),
        reason: decision.reason,
        arguments_digest: decision.arguments_digest,
    };
    let answer = if decision.approve {
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
        Err(e) => format!("{} not decided: {e}", decision.approval_id),
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
    let (key_tx, mut keys) = mpsc::channel::<KeyEvent>(16);
    std::thread::spawn(move || {
        while let Ok(read) = event::read() {
            if let event::Event::Key(key) = read
                && key.kind == KeyEventKind::Press
                && key_tx.blocking_send(key).is_err()
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
            key = keys.recv() => {
                let Some(key) = key else { break Ok(()) };
                match figures.on_key(&key) {
                    Some(Effect::Quit) => break Ok(()),
                    Some(Effect::Decide(decision)) => {
                        figures.notice = Some(decide(client, decision).await);
                    }
                    None => {}
                }
            }
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
                figures.now_ms = crate::output::now_ms();
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
