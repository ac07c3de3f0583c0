//! Progress notifications while a call waits at an approval gate: the client learns the approval id and
//! the exact command that releases it, and hears a heartbeat until a person decides.
//!
//! Event-driven: it follows the audit log's live broadcast for the call's `approval_requested` record
//! (subscribed before the call starts, so it cannot be missed). It never touches the call itself.

use super::offered::Severity;
use crate::approval;
use crate::audit::{AuditEvent, AuditRecord};
use crate::downstream::{AskRefused, Progress, Relayed};
use crate::error::Error;
use crate::gateway::{CallReport, CallSpec, Gateway, now_ms};
#[allow(deprecated)]
use rmcp::model::LoggingMessageNotificationParam;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError};

/// How often a waiting call reminds the client that it is still waiting.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Reports a call's wait for approval to the MCP client that asked for progress.
pub struct ApprovalProgress {
    gateway: Gateway,
    live: broadcast::Receiver<Arc<AuditRecord>>,
    workflow_id: String,
    tool: String,
    digest: String,
    token: ProgressToken,
    peer: Peer<RoleServer>,
    sent: u32,
    /// The tool's own progress (an MCP server's), relayed after the wait's, and its log messages.
    relayed: Option<tokio::sync::mpsc::Receiver<Relayed>>,
    /// The least severe log message the client hears; none: it hears none.
    least: Option<Severity>,
    /// What the client can answer when the server asks.
    answerable: Answerable,
}

/// What a client can answer when a server asks it something during a call, from its `initialize`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Answerable {
    pub sampling: bool,
    pub elicitation: bool,
    pub roots: bool,
}

impl Answerable {
    fn can(self, method: &str) -> bool {
        match method {
            "sampling/createMessage" => self.sampling,
            "elicitation/create" => self.elicitation,
            "roots/list" => self.roots,
            _ => false,
        }
    }
}

/// The approval a call waits for.
struct Waiting {
    id: String,
    expires_at_ms: i64,
}

impl ApprovalProgress {
    pub fn new(
        gateway: &Gateway,
        spec: &CallSpec,
        token: ProgressToken,
        peer: Peer<RoleServer>,
    ) -> Self {
        ApprovalProgress {
            gateway: gateway.clone(),
            live: gateway.audit().subscribe(),
            workflow_id: spec.workflow_id.clone(),
            tool: spec.tool.clone(),
            digest: approval::digest(&spec.arguments),
            token,
            peer,
            sent: 0,
            relayed: None,
            least: None,
            answerable: Answerable::default(),
        }
    }

    /// Also relays the tool's own progress, as it arrives on `updates`, and its log messages from
    /// `least` up.
    pub fn relaying(
        mut self,
        updates: tokio::sync::mpsc::Receiver<Relayed>,
        least: Option<Severity>,
        answerable: Answerable,
    ) -> Self {
        self.relayed = Some(updates);
        self.least = least;
        self.answerable = answerable;
        self
    }

    /// Drives `call` to its end, sending progress while it waits for an approval.
    pub async fn run_while(
        mut self,
        call: impl Future<Output = Result<CallReport, Error>>,
    ) -> Result<CallReport, Error> {
        tokio::pin!(call);
        let mut waiting: Option<Waiting> = None;
        let mut listening = true;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.reset();
        loop {
            tokio::select! {
                result = &mut call => {
                    // What the tool reported before its answer goes out before the answer.
                    while let Some(update) = self.relayed.as_mut().and_then(|r| r.try_recv().ok()) {
                        self.relay(update).await;
                    }
                    return result;
                }
                record = self.live.recv(), if listening && waiting.is_none() => {
                    let found = match record {
                        Ok(record) => self.matches(&record),
                        Err(RecvError::Lagged(_)) => self.pending(),
                        Err(RecvError::Closed) => {
                            listening = false;
                            None
                        }
                    };
                    if let Some(found) = found {
                        self.notify(&found, true).await;
                        heartbeat.reset();
                        waiting = Some(found);
                    }
                }
                _ = heartbeat.tick(), if waiting.is_some() => {
                    if let Some(found) = &waiting {
                        self.notify(found, false).await;
                    }
                }
                update = next_update(&mut self.relayed), if self.relayed.is_some() => {
                    match update {
                        Some(update) => self.relay(update).await,
                        None => self.relayed = None,
                    }
                }
            }
        }
    }

    /// The tool's own progress, after the wait's notifications: counted on from them, so that the
    /// client sees one progress that only grows, with the tool's message as it gave it. Its log
    /// messages go on as they came.
    async fn relay(&mut self, update: Relayed) {
        match update {
            Relayed::Progress(update) => self.relay_progress(update).await,
            other => relay_other(&self.peer, other, self.least, self.answerable).await,
        }
    }

    async fn relay_progress(&mut self, update: Progress) {
        let base = f64::from(self.sent);
        let mut params = ProgressNotificationParam::new(self.token.clone(), base + update.progress);
        if let Some(total) = update.total {
            params = params.with_total(base + total);
        }
        if let Some(message) = update.message {
            params = params.with_message(message);
        }
        if let Err(e) = self.peer.notify_progress(params).await {
            tracing::debug!(error = %e, "a relayed progress notification could not be sent");
        }
    }

    fn matches(&self, record: &AuditRecord) -> Option<Waiting> {
        match &record.event {
            AuditEvent::ApprovalRequested {
                workflow_id,
                tool,
                approval_id,
                arguments_digest,
                expires_at_ms,
                ..
            } if *workflow_id == self.workflow_id
                && *tool == self.tool
                && *arguments_digest == self.digest =>
            {
                Some(Waiting {
                    id: approval_id.clone(),
                    expires_at_ms: *expires_at_ms,
                })
            }
            _ => None,
        }
    }

    /// After missing broadcast records: looks for the request among the pending approvals instead.
    fn pending(&self) -> Option<Waiting> {
        self.gateway
            .pending_approvals()
            .into_iter()
            .find(|a| {
                a.workflow_id == self.workflow_id
                    && a.tool == self.tool
                    && a.arguments_digest == self.digest
            })
            .map(|a| Waiting {
                id: a.id,
                expires_at_ms: a.expires_at_ms,
            })
    }

    async fn notify(&mut self, waiting: &Waiting, first: bool) {
        self.sent += 1;
        let left = Duration::from_secs(
            u64::try_from((waiting.expires_at_ms - now_ms()) / 1000).unwrap_or(0),
        );
        let message = format!(
            "{} {} for approval {} (expires in {}). To approve: conductorctl approve {} — to deny: conductorctl deny {}",
            self.tool,
            if first {
                "is waiting"
            } else {
                "is still waiting"
            },
            waiting.id,
            humantime::format_duration(left),
            waiting.id,
            waiting.id
        );
        let params = ProgressNotificationParam::new(self.token.clone(), f64::from(self.sent))
            .with_message(message);
        if let Err(e) = self.peer.notify_progress(params).await {
            tracing::debug!(error = %e, "cannot send an MCP progress notification");
        }
    }
}

/// Sends a server's log message on to the client, if it is at least as severe as `least`.
/// (Log messages are of the session eras: SEP-2577 deprecates them.)
#[allow(deprecated)]
async fn send_log(
    peer: &Peer<RoleServer>,
    message: LoggingMessageNotificationParam,
    least: Option<Severity>,
) {
    if least.is_none_or(|least| Severity::of(message.level) < least) {
        return;
    }
    if let Err(e) = peer.notify_logging_message(message).await {
        tracing::debug!(error = %e, "a relayed log message could not be sent");
    }
}

/// A log message or a server's request, to the client (progress is [`ApprovalProgress`]'s).
async fn relay_other(
    peer: &Peer<RoleServer>,
    update: Relayed,
    least: Option<Severity>,
    answerable: Answerable,
) {
    match update {
        Relayed::Log(message) => send_log(peer, message, least).await,
        Relayed::Ask(ask) => {
            let answer = if answerable.can(&ask.method) {
                ask_client(peer, &ask.method, ask.params).await
            } else {
                Err(AskRefused::cannot_answer(&ask.method))
            };
            tracing::info!(method = %ask.method, answered = answer.is_ok(), "a server's request relayed to the client of its call");
            let _ = ask.answer.send(answer);
        }
        Relayed::Progress(_) => {}
    }
}

/// Sends a server's request on to the client and waits for its answer.
async fn ask_client(
    peer: &Peer<RoleServer>,
    method: &str,
    params: serde_json::Value,
) -> Result<serde_json::Value, AskRefused> {
    let request: rmcp::model::ServerRequest = serde_json::from_value(
        serde_json::json!({ "method": method, "params": params }),
    )
    .map_err(|e| AskRefused {
        code: rmcp::model::ErrorCode::INVALID_PARAMS.0,
        message: format!("the server's {method} is not what MCP says: {e}"),
    })?;
    match peer.send_request(request).await {
        Ok(result) => serde_json::to_value(result).map_err(|e| AskRefused {
            code: rmcp::model::ErrorCode::INTERNAL_ERROR.0,
            message: format!("the client's answer could not be read: {e}"),
        }),
        Err(rmcp::service::ServiceError::McpError(error)) => Err(AskRefused {
            code: error.code.0,
            message: error.message.to_string(),
        }),
        Err(e) => Err(AskRefused {
            code: rmcp::model::ErrorCode::INTERNAL_ERROR.0,
            message: format!("the client did not answer {method}: {e}"),
        }),
    }
}

/// Drives `call` to its end, sending the log messages the tool sends and the server's requests on
/// `updates` to the client (a call whose client asked for no progress: [`ApprovalProgress`]
/// relays everything otherwise).
pub(super) async fn relaying<T>(
    call: impl Future<Output = T>,
    mut updates: tokio::sync::mpsc::Receiver<Relayed>,
    peer: &Peer<RoleServer>,
    least: Option<Severity>,
    answerable: Answerable,
) -> T {
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(update) = updates.try_recv() {
                    relay_other(peer, update, least, answerable).await;
                }
                return result;
            }
            Some(update) = updates.recv() => relay_other(peer, update, least, answerable).await,
        }
    }
}

/// The next relayed update, if there is a channel to relay from.
async fn next_update(
    relayed: &mut Option<tokio::sync::mpsc::Receiver<Relayed>>,
) -> Option<Relayed> {
    match relayed {
        Some(updates) => updates.recv().await,
        None => None,
    }
}
