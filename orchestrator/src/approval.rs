//! Approval gates: the pending requests, the hand-off of a person's decision to the waiting call, and
//! the durable ledger on the approval server.
//!
//! A waiting call holds no lock: it awaits a oneshot channel with a deadline. Deciding an approval sends
//! the decision to that waiting call, which records it in the audit log and then replies to the approver,
//! so an approver's acknowledgement means the decision is durable.

use crate::audit::ApprovalVerdict;
use crate::error::Error;
use conductor_proto::v1::approval_ledger_client::ApprovalLedgerClient;
use conductor_proto::v1::{ApprovalState, CreateApprovalRequest, DecideApprovalRequest};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

/// How many decided approvals stay listed in memory (the audit log keeps them all).
const DECIDED_KEPT: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub workflow_id: String,
    pub call_id: String,
    pub tool: String,
    pub step: Option<String>,
    pub gate: String,
    pub arguments: Value,
    pub arguments_digest: String,
    pub config_version: String,
    pub requested_by: String,
    pub requested_at_ms: i64,
    pub expires_at_ms: i64,
    /// `None` while pending.
    pub verdict: Option<ApprovalVerdict>,
    pub decided_by: String,
    pub reason: String,
    pub decided_at_ms: i64,
    /// The approver must be someone other than `workflow_caller`.
    pub four_eyes: bool,
    pub workflow_caller: String,
}

/// A decision on its way to the waiting call, with the channel on which the call confirms it.
pub struct DecisionRequest {
    pub verdict: ApprovalVerdict,
    pub approver: String,
    pub reason: String,
    pub reply: oneshot::Sender<Result<Approval, Error>>,
}

struct Pending {
    approval: Approval,
    decide: Option<oneshot::Sender<DecisionRequest>>,
}

#[derive(Default)]
struct Desk {
    pending: BTreeMap<String, Pending>,
    decided: VecDeque<Approval>,
}

/// Pending approvals and the ledger client.
pub struct Approvals {
    desk: Mutex<Desk>,
    ledger: Option<ApprovalLedgerClient<Channel>>,
}

/// The sha256 of the arguments' RFC 8785 canonical form: an approval releases exactly the call with
/// these arguments, whatever their key order (the one definition, shared with the ledger and the CLI).
pub fn digest(arguments: &Value) -> String {
    conductor_audit::approval_digest(arguments)
}

impl Approvals {
    pub fn new(ledger_url: Option<&str>) -> Result<Self, Error> {
        let ledger = match ledger_url {
            None => None,
            Some(url) => {
                let endpoint = Endpoint::from_shared(url.to_owned())
                    .map_err(|e| {
                        Error::InvalidArgument(format!("approval ledger address {url:?}: {e}"))
                    })?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(2));
                Some(ApprovalLedgerClient::new(endpoint.connect_lazy()))
            }
        };
        Ok(Approvals {
            desk: Mutex::new(Desk::default()),
            ledger,
        })
    }

    fn desk(&self) -> std::sync::MutexGuard<'_, Desk> {
        self.desk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the request in the ledger (idempotent by id, so a resumed request can be sent again).
    pub async fn record_request(&self, approval: &Approval) -> Result<(), Error> {
        let Some(mut ledger) = self.ledger.clone() else {
            return Ok(());
        };
        let request = CreateApprovalRequest {
            id: approval.id.clone(),
            workflow_id: approval.workflow_id.clone(),
            tool: approval.tool.clone(),
            arguments_json: approval.arguments.to_string(),
            arguments_digest: approval.arguments_digest.clone(),
            gate: approval.gate.clone(),
            requested_by: approval.requested_by.clone(),
            expires_at_ms: approval.expires_at_ms,
            call_id: approval.call_id.clone(),
        };
        ledger
            .create_approval(request)
            .await
            .map_err(ledger_error)?;
        Ok(())
    }

    /// Records the decision in the ledger. A ledger that already holds a decision keeps it.
    pub async fn record_decision(&self, approval: &Approval) -> Result<(), Error> {
        let Some(mut ledger) = self.ledger.clone() else {
            return Ok(());
        };
        let request = DecideApprovalRequest {
            id: approval.id.clone(),
            decision: approval
                .verdict
                .map_or(ApprovalState::Pending, ApprovalVerdict::state)
                as i32,
            decided_by: approval.decided_by.clone(),
            reason: approval.reason.clone(),
        };
        match ledger.decide_approval(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(status) => Err(ledger_error(status)),
        }
    }

    /// Lists the request as pending; returns the channel on which its decision will arrive.
    pub fn open(&self, approval: Approval) -> oneshot::Receiver<DecisionRequest> {
        let (tx, rx) = oneshot::channel();
        self.desk().pending.insert(
            approval.id.clone(),
            Pending {
                approval,
                decide: Some(tx),
            },
        );
        rx
    }

    /// Hands a decision to the waiting call and waits until the call has recorded it. An approval names
    /// the digest of the arguments it releases (when given, it must match) and, under four eyes, cannot
    /// come from the caller who started the workflow. It is single-use: the first decision wins.
    pub async fn decide(
        &self,
        id: &str,
        verdict: ApprovalVerdict,
        approver: &str,
        reason: &str,
        digest: Option<&str>,
    ) -> Result<Approval, Error> {
        if approver.trim().is_empty() {
            return Err(Error::InvalidArgument(
                "every decision names its approver: set approver (conductorctl --as NAME)".into(),
            ));
        }
        let sender = {
            let mut desk = self.desk();
            match desk.pending.get_mut(id) {
                Some(pending) => {
                    let approval = &pending.approval;
                    if let Some(digest) = digest.filter(|d| !d.is_empty())
                        && digest != approval.arguments_digest
                    {
                        return Err(Error::ApprovalMismatch(format!(
                            "approval {id} is for arguments with digest {}, not {digest}: the call's arguments differ from what was reviewed; look again with `conductorctl pending`",
                            approval.arguments_digest
                        )));
                    }
                    if verdict == ApprovalVerdict::Approved
                        && approval.four_eyes
                        && same_person(approver, &approval.workflow_caller)
                    {
                        return Err(Error::PermissionDenied(format!(
                            "four eyes: {approver} started workflow {} and cannot approve its own call; ask someone else",
                            approval.workflow_id
                        )));
                    }
                    pending.decide.take()
                }
                None => {
                    return Err(match desk.decided.iter().find(|a| a.id == id) {
                        Some(done) => Error::ApprovalDecided {
                            id: id.to_owned(),
                            state: describe(done),
                        },
                        None => Error::ApprovalNotFound(id.to_owned()),
                    });
                }
            }
        };
        let Some(sender) = sender else {
            return Err(Error::ApprovalDecided {
                id: id.to_owned(),
                state: "being decided by someone else".into(),
            });
        };
        let (reply, confirmed) = oneshot::channel();
        let request = DecisionRequest {
            verdict,
            approver: approver.to_owned(),
            reason: reason.to_owned(),
            reply,
        };
        if sender.send(request).is_err() {
            return Err(Error::ApprovalDecided {
                id: id.to_owned(),
                state: "expired".into(),
            });
        }
        confirmed.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Moves a request from pending to decided.
    pub fn close(&self, approval: Approval) {
        let mut desk = self.desk();
        desk.pending.remove(&approval.id);
        desk.decided.push_back(approval);
        while desk.decided.len() > DECIDED_KEPT {
            desk.decided.pop_front();
        }
    }

    /// Drops a pending request from memory without deciding it (shutdown: it stays pending in the log).
    pub fn forget(&self, id: &str) {
        self.desk().pending.remove(id);
    }

    pub fn pending(&self) -> Vec<Approval> {
        self.desk()
            .pending
            .values()
            .map(|p| p.approval.clone())
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Approval> {
        let desk = self.desk();
        desk.pending
            .get(id)
            .map(|p| p.approval.clone())
            .or_else(|| desk.decided.iter().find(|a| a.id == id).cloned())
    }

    /// The pending requests of one workflow (to expire them when it is cancelled).
    pub fn pending_of(&self, workflow_id: &str) -> Vec<String> {
        self.desk()
            .pending
            .values()
            .filter(|p| p.approval.workflow_id == workflow_id)
            .map(|p| p.approval.id.clone())
            .collect()
    }
}

/// The same name is the same person, whatever session or transport it came through.
fn same_person(a: &str, b: &str) -> bool {
    crate::config::caller_name(a).eq_ignore_ascii_case(crate::config::caller_name(b))
}

fn describe(approval: &Approval) -> String {
    let state = match approval.verdict {
        Some(ApprovalVerdict::Approved) => "approved",
        Some(ApprovalVerdict::Denied) => "denied",
        Some(ApprovalVerdict::Expired) => "expired",
        None => "pending",
    };
    if approval.decided_by.is_empty() {
        state.to_owned()
    } else {
        format!("{state} by {}", approval.decided_by)
    }
}

fn ledger_error(status: tonic::Status) -> Error {
    Error::Unavailable {
        server: "approval ledger".into(),
        message: status.message().to_owned(),
    }
}

impl ApprovalVerdict {
    pub fn state(self) -> ApprovalState {
        match self {
            ApprovalVerdict::Approved => ApprovalState::Approved,
            ApprovalVerdict::Denied => ApprovalState::Denied,
            ApprovalVerdict::Expired => ApprovalState::Expired,
        }
    }
}
