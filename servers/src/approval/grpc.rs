//! The `ApprovalLedger` gRPC service: converts proto messages to the ledger's types and back.
//!
//! The only door through which approvals are created and decided; it holds no rules of its own.

use std::sync::Arc;

use conductor_proto::v1 as pb;
use conductor_proto::v1::approval_ledger_server::ApprovalLedger;
use tonic::{Request, Response, Status};

use super::{Approval, ApprovalStatus, Ledger, NewApproval};
use crate::error::ServiceError;

/// The `ApprovalLedger` gRPC service over a shared [`Ledger`].
#[derive(Clone, Debug)]
pub struct ApprovalLedgerService {
    ledger: Arc<Ledger>,
}

impl ApprovalLedgerService {
    /// Serves `ledger`.
    pub fn new(ledger: Arc<Ledger>) -> Self {
        ApprovalLedgerService { ledger }
    }
}

fn to_proto(a: Approval) -> pb::ApprovalRecord {
    let state = match a.state {
        ApprovalStatus::Pending => pb::ApprovalState::Pending,
        ApprovalStatus::Approved => pb::ApprovalState::Approved,
        ApprovalStatus::Denied => pb::ApprovalState::Denied,
        ApprovalStatus::Expired => pb::ApprovalState::Expired,
    };
    pb::ApprovalRecord {
        id: a.id,
        workflow_id: a.workflow_id,
        tool: a.tool,
        arguments_json: a.arguments_json,
        arguments_digest: a.arguments_digest,
        gate: a.gate,
        requested_by: a.requested_by,
        requested_at_ms: a.requested_at_ms,
        expires_at_ms: a.expires_at_ms,
        state: state as i32,
        decided_by: a.decided_by,
        reason: a.reason,
        decided_at_ms: a.decided_at_ms,
        call_id: a.call_id,
    }
}

fn decision_from_proto(value: i32) -> Result<ApprovalStatus, ServiceError> {
    match pb::ApprovalState::try_from(value) {
        Ok(pb::ApprovalState::Approved) => Ok(ApprovalStatus::Approved),
        Ok(pb::ApprovalState::Denied) => Ok(ApprovalStatus::Denied),
        Ok(pb::ApprovalState::Expired) => Ok(ApprovalStatus::Expired),
        Ok(other) => Err(ServiceError::InvalidDecision {
            decision: other.as_str_name().to_owned(),
        }),
        Err(_) => Err(ServiceError::InvalidDecision {
            decision: format!("unknown value {value}"),
        }),
    }
}

#[tonic::async_trait]
impl ApprovalLedger for ApprovalLedgerService {
    async fn create_approval(
        &self,
        request: Request<pb::CreateApprovalRequest>,
    ) -> Result<Response<pb::ApprovalRecord>, Status> {
        let r = request.into_inner();
        let new = NewApproval {
            id: r.id,
            workflow_id: r.workflow_id,
            tool: r.tool,
            arguments_json: r.arguments_json,
            arguments_digest: r.arguments_digest,
            gate: r.gate,
            requested_by: r.requested_by,
            expires_at_ms: r.expires_at_ms,
            call_id: r.call_id,
        };
        let approval = self.ledger.create(new).await?;
        tracing::info!(id = %approval.id, workflow_id = %approval.workflow_id, tool = %approval.tool, "approval requested");
        Ok(Response::new(to_proto(approval)))
    }

    async fn decide_approval(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::ApprovalRecord>, Status> {
        let r = request.into_inner();
        let decision = decision_from_proto(r.decision)?;
        let approval = self
            .ledger
            .decide(&r.id, decision, &r.decided_by, &r.reason)
            .await?;
        tracing::info!(id = %approval.id, state = approval.state.name(), decided_by = %approval.decided_by, "approval decided");
        Ok(Response::new(to_proto(approval)))
    }

    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::ApprovalRecord>, Status> {
        let approval = self.ledger.get(&request.into_inner().id)?;
        Ok(Response::new(to_proto(approval)))
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let approvals = self.ledger.list(request.into_inner().pending_only);
        Ok(Response::new(pb::ListApprovalsResponse {
            approvals: approvals.into_iter().map(to_proto).collect(),
        }))
    }
}
