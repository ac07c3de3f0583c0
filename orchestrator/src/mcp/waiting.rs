//! Progress notifications while a call waits at an approval gate: the client learns the approval id and
//! the exact command that releases it, and hears a heartbeat until a person decides.
//!
//! Event-driven: it follows the audit log's live broadcast for the call's `approval_requested` record
//! (subscribed before the call starts, so it cannot be missed). It never touches the call itself.

use super::offered::Severity;
use crate::approval;
use crate::audit::{AuditEvent, AuditRecord};
use crate::downstream::{Progress, Relayed};
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
        }
    }

    /// Also relays the tool's own progress, as it arrives on `updates`, and its log messages from
    /// `least` up.
    pub fn relaying(
        mut self,
        updates: tokio::sync::mpsc::Receiver<Relayed>,
        least: Option<Severity>,
    ) -> Self {
        self.relayed = Some(updates);
        self.least = least;
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
        let update = match update {
            Relayed::Progress(update) => update,
            Relayed::Log(message) => return send_log(&self.peer, message, self.least).await,
        };
        self.relay_progress(update).await;
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

/// Drives `call` to its end, sending the log messages the tool sends on `logs` to the client
/// (a call whose client asked for no progress: [`ApprovalProgress`] relays both otherwise).
pub(super) async fn relaying_logs<T>(
    call: impl Future<Output = T>,
    mut logs: tokio::sync::mpsc::Receiver<Relayed>,
    peer: &Peer<RoleServer>,
    least: Option<Severity>,
) -> T {
    tokio::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(update) = logs.try_recv() {
                    if let Relayed::Log(message) = update {
                        send_log(peer, message, least).await;
                    }
                }
                return result;
            }
            Some(update) = logs.recv() => {
                if let Relayed::Log(message) = update {
                    send_log(peer, message, least).await;
                }
            }
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
