//! The client of the approval server's ledger: every approval request and its decision are also
//! recorded there, so that the people who decide have a durable list of their own. The audit log
//! stays the orchestrator's memory; the ledger is told, never asked. An `https://` ledger is reached
//! with its server's TLS settings, as every gRPC tool server is.

use crate::approval::Approval;
use crate::audit::ApprovalVerdict;
use crate::config::ClientTlsFiles;
use crate::error::Error;
use conductor_proto::v1::approval_ledger_client::ApprovalLedgerClient;
use conductor_proto::v1::{ApprovalState, CreateApprovalRequest, DecideApprovalRequest};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The ledger client; with no ledger configured, recording is a no-op.
pub struct Ledger {
    client: Option<ApprovalLedgerClient<Channel>>,
}

impl Ledger {
    pub fn new(ledger_url: Option<&str>, tls: Option<&ClientTlsFiles>) -> Result<Self, Error> {
        let ledger = match ledger_url {
            None => None,
            Some(url) => {
                let endpoint = Endpoint::from_shared(url.to_owned())
                    .map_err(|e| {
                        Error::InvalidArgument(format!("approval ledger address {url:?}: {e}"))
                    })?
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(2));
                let endpoint = crate::tls::grpc_endpoint(endpoint, url, tls).map_err(|e| {
                    Error::InvalidArgument(format!("approval ledger address {url:?}: TLS: {e}"))
                })?;
                Some(ApprovalLedgerClient::new(endpoint.connect_lazy()))
            }
        };
        Ok(Ledger { client: ledger })
    }

    /// Records the request in the ledger (idempotent by id, so a resumed request can be sent again).
    pub async fn record_request(&self, approval: &Approval) -> Result<(), Error> {
        let Some(mut ledger) = self.client.clone() else {
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
        let Some(mut ledger) = self.client.clone() else {
            return Ok(());
        };
        let request = DecideApprovalRequest {
            id: approval.id.clone(),
            decision: approval
                .verdict
                .map_or(ApprovalState::Pending, approval_state) as i32,
            decided_by: approval.decided_by.clone(),
            reason: approval.reason.clone(),
        };
        match ledger.decide_approval(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(()),
            Err(status) => Err(ledger_error(status)),
        }
    }
}

fn ledger_error(status: tonic::Status) -> Error {
    Error::Unavailable {
        server: "approval ledger".into(),
        message: status.message().to_owned(),
    }
}

/// The ledger's state for a verdict.
pub(crate) fn approval_state(verdict: ApprovalVerdict) -> ApprovalState {
    match verdict {
        ApprovalVerdict::Approved => ApprovalState::Approved,
        ApprovalVerdict::Denied => ApprovalState::Denied,
        ApprovalVerdict::Expired => ApprovalState::Expired,
    }
}
