//! The live dashboard of `watch` on a terminal (SPEC section 5): the figures of the status snapshot, the
//! current workflow's progress, and a scrolling list of recent events; `q` quits.
//!
//! [`figures`] owns what is shown (and which workflow the panel follows), [`draw`] how it looks, as a
//! pure function tested by rendering to ratatui's `TestBackend`; only [`run`] touches the terminal.

mod draw;
mod figures;

pub use draw::{draw, progress_bar};
pub use figures::{CurrentWorkflow, EventLine, Figures, Tone};

use crate::cli::{Global, WatchArgs};
use crate::client::{Answer, Client};
use crate::output::Out;
use crate::watch::{Followed, Follower};
use conductor_proto::v1 as pb;
use ratatui::crossterm::event::{self, KeyCode, KeyEventKind, KeyModifiers};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

const REFRESH: Duration = Duration::from_millis(500);

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
mod tests;
