//! The `Orchestrator` gRPC service: a thin front over the [`Gateway`]; every handler converts the request
//! into domain values, calls the gateway, and converts the answer back. Errors use the one mapping in
//! `error.rs`; a policy denial is `FAILED_PRECONDITION` with the encoded `Decision` in the details.

mod cluster;
mod convert;
mod watch;

use crate::audit::{AuditRecord, DecisionKind as DomainDecision};
use crate::auth::{
    Authenticator, Identity, permit_approve, permit_owner, permit_read, permit_reload,
};
use crate::config::ArgumentLimits;
use crate::error::Error;
use crate::gateway::{CallResult, CallSpec, Gateway, Refusal, check_id};
use crate::report::{self, AuditFilter};
use conductor_proto::v1 as pb;
use conductor_proto::v1::orchestrator_server::Orchestrator;
use prost::Message;
use serde_json::Value;
use tonic::{Request, Response, Status};

pub use convert::decision_of;

pub use crate::auth::grpc::CALLER_HEADER;

pub struct OrchestratorService {
    gateway: Gateway,
    auth: Authenticator,
    cluster: cluster::ClusterReader,
}

impl OrchestratorService {
    pub fn new(gateway: Gateway) -> Self {
        OrchestratorService {
            auth: Authenticator::keeping_tokens(gateway.inner.downstream.presented.clone()),
            gateway,
            cluster: cluster::ClusterReader::default(),
        }
    }

    /// The identity behind the request's bearer token and the caller string to record (see
    /// `crate::auth`); `explicit` (a request's own `caller` field) is a label only.
    async fn identify<T>(
        &self,
        request: &Request<T>,
        explicit: &str,
    ) -> Result<(Identity, String), Status> {
        Ok(self
            .auth
            .grpc(&self.gateway.config(), request, explicit)
            .await?)
    }

    /// The identity of a control request (approve, deny, cancel, reload); a request whose credential
    /// is refused is recorded in the audit log like any refused control action.
    async fn identify_control<T>(
        &self,
        request: &Request<T>,
        explicit: &str,
        action: &str,
        target: &str,
    ) -> Result<(Identity, String), Status> {
        match self
            .auth
            .grpc(&self.gateway.config(), request, explicit)
            .await
        {
            Ok(found) => Ok(found),
            Err(refusal) => {
                let caller = request.remote_addr().map_or_else(
                    || "unauthenticated".to_owned(),
                    |a| format!("unauthenticated (grpc {a})"),
                );
                // Without a credential the peer's address is the source refusals are aggregated
                // by (its port changes with every connection).
                let source = request
                    .remote_addr()
                    .map_or_else(|| "unauthenticated".to_owned(), |a| a.ip().to_string());
                Err(self
                    .refused(refusal, action, target, &caller, &source)
                    .await)
            }
        }
    }

    /// Checks a control action with `permit`; a refusal is recorded in the audit log.
    async fn control(
        &self,
        permit: Result<(), Error>,
        action: &str,
        target: &str,
        caller: &str,
    ) -> Result<(), Status> {
        match permit {
            Ok(()) => Ok(()),
            Err(refusal) => {
                let source = crate::config::caller_name(caller);
                Err(self.refused(refusal, action, target, caller, source).await)
            }
        }
    }

    /// Records a refused control action (bounded and aggregated by `source`: see
    /// `gateway::refusals`) and returns the refusal (or why it could not be recorded).
    async fn refused(
        &self,
        refusal: Error,
        action: &str,
        target: &str,
        caller: &str,
        source: &str,
    ) -> Status {
        let reason = refusal.to_string();
        let recorded = Refusal {
            action,
            target,
            reason: &reason,
            caller,
            source,
        };
        match self.gateway.record_control_refused(recorded).await {
            Ok(()) => refusal.into(),
            Err(e) => e.into(),
        }
    }

    /// Reading needs the `read` permission when authentication is required.
    async fn read<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        let (identity, _) = self.identify(request, "").await?;
        Ok(permit_read(&self.gateway.config(), &identity, what)?)
    }
}

/// Parses JSON text from a request, after checking its size and nesting against `limits` (before
/// the parse, which costs memory in proportion).
fn parse_json(text: &str, what: &str, limits: &ArgumentLimits) -> Result<Value, Status> {
    limits
        .check_text(what, text)
        .map_err(|e| Status::from(Error::InvalidArgument(e)))?;
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(text).map_err(|e| {
        Status::from(Error::InvalidArgument(format!(
            "{what} is not valid JSON: {e}"
        )))
    })
}

#[tonic::async_trait]
impl Orchestrator for OrchestratorService {
    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        // With authentication required, the catalogue is for callers with a credential; the tools
        // that read approvals are listed only to callers that may read them.
        let (_, caller) = self.identify(&request, "").await?;
        let config = self.gateway.config();
        let tools = self
            .gateway
            .tools()
            .await
            .into_iter()
            .filter(|t| crate::auth::permit_approval_reads(&config, &caller, &t.name).is_ok())
            .map(convert::tool)
            .collect();
        Ok(Response::new(pb::ListToolsResponse { tools }))
    }

    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        self.identify(&request, "").await?;
        let config = self.gateway.config();
        let templates = config
            .templates
            .values()
            .map(|t| convert::template(t, &config.policies))
            .collect();
        Ok(Response::new(pb::ListTemplatesResponse { templates }))
    }

    async fn start_workflow(
        &self,
        request: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowInfo>, Status> {
        let (_, caller) = self.identify(&request, &request.get_ref().caller).await?;
        let body = request.into_inner();
        let input = parse_json(
            &body.input_json,
            "input_json",
            &self.gateway.config().arguments,
        )?;
        let view = self
            .gateway
            .start_workflow(Some(&body.template), input, &caller)
            .await?;
        Ok(Response::new(convert::workflow(&view)))
    }

    async fn call_tool(
        &self,
        request: Request<pb::WorkflowCallRequest>,
    ) -> Result<Response<pb::WorkflowCallResponse>, Status> {
        let (identity, caller) = self.identify(&request, "").await?;
        let mut body = request.into_inner();
        if body.workflow_id.is_empty() {
            return Err(Error::InvalidArgument(
                "workflow_id is required: start a workflow first (StartWorkflow)".into(),
            )
            .into());
        }
        let owner = self.gateway.workflow(&body.workflow_id, false)?.caller;
        permit_owner(&self.gateway.config(), &identity, &body.workflow_id, &owner)?;
        // The text goes once parsed: the call holds its arguments once, not also as text.
        let arguments = parse_json(
            &std::mem::take(&mut body.arguments_json),
            "arguments_json",
            &self.gateway.config().arguments,
        )?;
        if !arguments.is_object() {
            return Err(
                Error::InvalidArgument("arguments_json must be a JSON object".into()).into(),
            );
        }
        let spec = CallSpec {
            workflow_id: body.workflow_id,
            tool: body.tool,
            arguments,
            caller,
            step: None,
        };
        let report = self.gateway.call(spec).await?;
        let approval_id = report
            .approval
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default();
        let (kind, outcome) = match report.result {
            CallResult::Succeeded(value) => (
                pb::DecisionKind::Allow,
                pb::workflow_call_response::Outcome::ResultJson(value.to_string()),
            ),
            CallResult::Failed(failure) => (
                pb::DecisionKind::Allow,
                pb::workflow_call_response::Outcome::Error(pb::ToolError {
                    code: failure.code,
                    message: failure.message,
                    details_json: failure.details.map(|d| d.to_string()).unwrap_or_default(),
                }),
            ),
            CallResult::Denied(violations) => {
                let decision =
                    convert::decision(DomainDecision::Deny, &violations, report.approval.as_ref());
                let summary = violations
                    .iter()
                    .map(|v| format!("{} [rule {}] — {}", v.message, v.rule_id, v.unblock_hint))
                    .collect::<Vec<_>>()
                    .join("; ");
                let status = Status::with_details(
                    tonic::Code::FailedPrecondition,
                    format!(
                        "call {} of {} denied: {summary}",
                        report.call_id, report.tool
                    ),
                    decision.encode_to_vec().into(),
                );
                return Err(status);
            }
        };
        let decision = pb::Decision {
            kind: kind as i32,
            approval_id,
            gate: report.approval.map(|a| a.gate).unwrap_or_default(),
            violations: Vec::new(),
        };
        Ok(Response::new(pb::WorkflowCallResponse {
            call_id: report.call_id,
            decision: Some(decision),
            duration_us: report.duration_us,
            outcome: Some(outcome),
        }))
    }

    async fn run_template(
        &self,
        request: Request<pb::RunTemplateRequest>,
    ) -> Result<Response<pb::WorkflowInfo>, Status> {
        let (_, caller) = self.identify(&request, &request.get_ref().caller).await?;
        let body = request.into_inner();
        let input = parse_json(
            &body.input_json,
            "input_json",
            &self.gateway.config().arguments,
        )?;
        let view = self
            .gateway
            .run_template(&body.template, input, &caller, body.wait)
            .await?;
        Ok(Response::new(convert::workflow(&view)))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowInfo>, Status> {
        let target = request.get_ref().workflow_id.clone();
        // A malformed id is refused before anything about it is recorded.
        check_id("workflow_id", &target)?;
        let (identity, caller) = self
            .identify_control(&request, "", "cancel", &target)
            .await?;
        let body = request.into_inner();
        let permit = permit_reload(&self.gateway.config(), &identity, "cancel");
        self.control(permit, "cancel", &body.workflow_id, &caller)
            .await?;
        let view = self
            .gateway
            .cancel_workflow(&body.workflow_id, &body.reason, &caller)
            .await?;
        Ok(Response::new(convert::workflow(&view)))
    }

    async fn end_workflow(
        &self,
        request: Request<pb::EndWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowInfo>, Status> {
        let (identity, caller) = self.identify(&request, "").await?;
        let body = request.into_inner();
        let view = self.gateway.workflow(&body.workflow_id, false)?;
        permit_owner(
            &self.gateway.config(),
            &identity,
            &body.workflow_id,
            &view.caller,
        )?;
        if view.template.is_some() {
            return Err(Error::InvalidArgument(format!(
                "workflow {} runs template {}, which ends by itself; cancel it to stop it",
                body.workflow_id,
                view.template.unwrap_or_default()
            ))
            .into());
        }
        let reason = if body.reason.trim().is_empty() {
            format!("ended by {caller}")
        } else {
            body.reason
        };
        self.gateway
            .end_ad_hoc(&body.workflow_id, &reason, &caller)
            .await?;
        let view = self.gateway.workflow_history(&body.workflow_id).await?;
        Ok(Response::new(convert::workflow(&view)))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowInfo>, Status> {
        self.read(&request, "workflows").await?;
        let view = self
            .gateway
            .workflow_history(&request.get_ref().workflow_id)
            .await?;
        Ok(Response::new(convert::workflow(&view)))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        self.read(&request, "workflows").await?;
        let body = request.into_inner();
        let limit = if body.limit == 0 {
            100
        } else {
            body.limit as usize
        };
        let workflows = self
            .gateway
            .workflows(body.active_only, limit)
            .iter()
            .map(convert::workflow)
            .collect();
        Ok(Response::new(pb::ListWorkflowsResponse { workflows }))
    }

    async fn list_pending_approvals(
        &self,
        request: Request<pb::ListPendingApprovalsRequest>,
    ) -> Result<Response<pb::ListPendingApprovalsResponse>, Status> {
        self.read(&request, "pending approvals").await?;
        let approvals = self
            .gateway
            .pending_approvals()
            .iter()
            .map(convert::approval)
            .collect();
        Ok(Response::new(pb::ListPendingApprovalsResponse {
            approvals,
        }))
    }

    async fn approve(
        &self,
        request: Request<pb::ApprovalDecisionRequest>,
    ) -> Result<Response<pb::ApprovalInfo>, Status> {
        self.decide(request, true).await
    }

    async fn deny(
        &self,
        request: Request<pb::ApprovalDecisionRequest>,
    ) -> Result<Response<pb::ApprovalInfo>, Status> {
        self.decide(request, false).await
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        // It names workflows, their callers and their errors: as much as `ListWorkflows`.
        self.read(&request, "the status").await?;
        let mut status = convert::status(&self.gateway.status(20));
        status.standby = self.gateway.standby().as_ref().map(convert::standby);
        Ok(Response::new(status))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        // A read for an operator, as `Status` is (it names the nodes and where they listen).
        self.read(&request, "the cluster's status").await?;
        Ok(Response::new(self.cluster.status(&self.gateway).await?))
    }

    async fn query_audit(
        &self,
        request: Request<pb::AuditQueryRequest>,
    ) -> Result<Response<pb::AuditQueryResponse>, Status> {
        self.read(&request, "the audit log").await?;
        let body = request.into_inner();
        let filter = AuditFilter {
            since_ms: (body.since_ms > 0).then_some(body.since_ms),
            until_ms: (body.until_ms > 0).then_some(body.until_ms),
            workflow_id: Some(body.workflow_id).filter(|s| !s.is_empty()),
            tool: Some(body.tool).filter(|s| !s.is_empty()),
            kind: Some(body.kind).filter(|s| !s.is_empty()),
            decision: convert::decision_filter(body.decision),
            trace_id: Some(body.trace_id.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()),
        };
        let limit = if body.limit == 0 {
            100
        } else {
            body.limit.min(1000) as usize
        };
        let (records, next) =
            report::query(self.gateway.audit(), &filter, body.after_seq, limit).await?;
        let events = records.iter().map(convert::audit_event).collect();
        Ok(Response::new(pb::AuditQueryResponse {
            events,
            next_after_seq: next.unwrap_or(0),
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.read(&request, "the audit log").await?;
        let anchor = match request.get_ref().anchor.trim() {
            "" => None,
            text => Some(text.parse().map_err(Error::InvalidArgument)?),
        };
        let report = report::verify_log(self.gateway.audit(), anchor).await?;
        Ok(Response::new(convert::verify_report(&report)))
    }

    async fn compliance_report(
        &self,
        request: Request<pb::ComplianceReportRequest>,
    ) -> Result<Response<pb::ComplianceReportResponse>, Status> {
        self.read(&request, "the audit log").await?;
        let body = request.into_inner();
        let scope = report::ReportScope {
            workflow_id: Some(body.workflow_id).filter(|s| !s.is_empty()),
            since_ms: (body.since_ms > 0).then_some(body.since_ms),
            until_ms: (body.until_ms > 0).then_some(body.until_ms),
        };
        let report =
            report::compliance(self.gateway.audit(), self.gateway.config(), &scope).await?;
        Ok(Response::new(convert::compliance(&report)))
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.read(&request, "the event stream").await?;
        Ok(Response::new(watch::start(
            self.gateway.clone(),
            request.into_inner(),
        )))
    }

    async fn reload_config(
        &self,
        request: Request<pb::ReloadConfigRequest>,
    ) -> Result<Response<pb::ReloadConfigResponse>, Status> {
        let (identity, caller) = self
            .identify_control(&request, "", "reload", "configuration")
            .await?;
        let permit = permit_reload(&self.gateway.config(), &identity, "reload");
        self.control(permit, "reload", "configuration", &caller)
            .await?;
        let (config, previous, on_previous) = self.gateway.reload_config().await?;
        Ok(Response::new(pb::ReloadConfigResponse {
            config_version: config.version.clone(),
            previous_version: previous,
            workflows_on_previous: on_previous,
        }))
    }
}

impl OrchestratorService {
    async fn decide(
        &self,
        request: Request<pb::ApprovalDecisionRequest>,
        approve: bool,
    ) -> Result<Response<pb::ApprovalInfo>, Status> {
        let action = if approve { "approve" } else { "deny" };
        // A malformed id is refused before anything about it is recorded.
        check_id("approval_id", &request.get_ref().approval_id)?;
        let (identity, approver) = self
            .identify_control(
                &request,
                &request.get_ref().approver,
                action,
                &request.get_ref().approval_id,
            )
            .await?;
        let body = request.into_inner();
        let permit = permit_approve(&self.gateway.config(), &identity, action);
        self.control(permit, action, &body.approval_id, &approver)
            .await?;
        let digest = Some(body.arguments_digest.as_str()).filter(|d| !d.is_empty());
        let approval = self
            .gateway
            .decide_approval_checked(&body.approval_id, approve, &approver, &body.reason, digest)
            .await?;
        Ok(Response::new(convert::approval(&approval)))
    }
}

/// Records as the gRPC `AuditEvent`s the CLI shows.
pub fn audit_events(records: &[AuditRecord]) -> Vec<pb::AuditEvent> {
    records.iter().map(convert::audit_event).collect()
}
