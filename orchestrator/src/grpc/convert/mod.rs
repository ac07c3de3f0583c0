//! Domain values to generated protobuf types (and the few the other way). The only place that knows both.

use crate::approval::Approval;
use crate::audit::{ApprovalVerdict, DecisionKind, Outcome};
use crate::config::Template;
use crate::downstream::ToolInfo;
use crate::gateway::{StatusSnapshot, WorkflowView};
use crate::policy::Violation;
use crate::report::{ComplianceReport, VerifyOutcome};
use crate::workflow::{CallEntry, CallStatus, WorkflowState};
use conductor_proto::v1 as pb;

mod audit_event;
pub use audit_event::audit_event;

pub fn tool(info: ToolInfo) -> pb::ToolDescriptor {
    pb::ToolDescriptor {
        name: info.name,
        description: info.description,
        input_schema_json: info.input_schema.to_string(),
        server: info.server,
    }
}

/// A template as listed: its inputs, and which steps wait for a person, by the step's own gate or
/// by an approval rule on its tool without a condition.
pub fn template(template: &Template, policies: &crate::policy::PolicySet) -> pb::TemplateInfo {
    pb::TemplateInfo {
        name: template.name.clone(),
        description: template.description.clone(),
        steps: template
            .steps
            .iter()
            .map(|s| {
                let gate = s.gate.as_ref().or_else(|| {
                    // A gate under a condition depends on the step's arguments: not listed.
                    policies
                        .tool(&s.tool)
                        .filter(|p| p.gate_when.is_none())
                        .and_then(|p| p.gate.as_ref())
                });
                pb::TemplateStep {
                    name: s.name.clone(),
                    tool: s.tool.to_string(),
                    arguments_template_json: s.arguments.to_string(),
                    requires_approval: gate.is_some(),
                    gate: gate.map(|g| g.id.to_string()).unwrap_or_default(),
                }
            })
            .collect(),
        inputs: template
            .inputs
            .iter()
            .map(|i| pb::TemplateInput {
                name: i.name.clone(),
                r#type: i.kind.as_str().to_owned(),
                description: i.description.clone(),
                required: i.required,
                default_json: i.default.as_ref().map(ToString::to_string),
                example_json: i.example.as_ref().map(ToString::to_string),
            })
            .collect(),
        example_input_json: crate::template::example(&template.inputs).to_string(),
    }
}

pub fn violation(v: &Violation) -> pb::Violation {
    pb::Violation {
        rule_id: v.rule_id.clone(),
        rule_kind: v.rule_kind.as_str().to_owned(),
        tool: v.tool.clone(),
        message: v.message.clone(),
        unblock_hint: v.unblock_hint.clone(),
        required_tools: v.required_tools.clone(),
        retry_after_ms: v.retry_after_ms.unwrap_or(0),
    }
}

fn decision_kind(kind: DecisionKind) -> pb::DecisionKind {
    match kind {
        DecisionKind::Allow => pb::DecisionKind::Allow,
        DecisionKind::Deny => pb::DecisionKind::Deny,
        DecisionKind::NeedsApproval => pb::DecisionKind::NeedsApproval,
    }
}

pub fn decision(
    kind: DecisionKind,
    violations: &[Violation],
    approval: Option<&Approval>,
) -> pb::Decision {
    pb::Decision {
        kind: decision_kind(kind) as i32,
        violations: violations.iter().map(violation).collect(),
        gate: approval.map(|a| a.gate.clone()).unwrap_or_default(),
        approval_id: approval.map(|a| a.id.clone()).unwrap_or_default(),
    }
}

/// Decodes the `Decision` a denial carries in its status details (for clients of this crate).
pub fn decision_of(status: &tonic::Status) -> Option<pb::Decision> {
    use prost::Message;
    pb::Decision::decode(status.details())
        .ok()
        .filter(|d| d.kind != 0)
}

pub fn decision_filter(kind: i32) -> Option<DecisionKind> {
    match pb::DecisionKind::try_from(kind).ok()? {
        pb::DecisionKind::Allow => Some(DecisionKind::Allow),
        pb::DecisionKind::Deny => Some(DecisionKind::Deny),
        pb::DecisionKind::NeedsApproval => Some(DecisionKind::NeedsApproval),
        pb::DecisionKind::Unspecified => None,
    }
}

fn workflow_state(state: WorkflowState) -> pb::WorkflowState {
    match state {
        WorkflowState::Running => pb::WorkflowState::Running,
        WorkflowState::WaitingApproval => pb::WorkflowState::WaitingApproval,
        WorkflowState::Completed => pb::WorkflowState::Completed,
        WorkflowState::Failed => pb::WorkflowState::Failed,
        WorkflowState::Cancelled => pb::WorkflowState::Cancelled,
    }
}

pub(super) fn outcome(outcome: Outcome) -> pb::CallOutcome {
    match outcome {
        Outcome::Succeeded => pb::CallOutcome::Succeeded,
        Outcome::Failed | Outcome::Unavailable => pb::CallOutcome::Failed,
        Outcome::Interrupted => pb::CallOutcome::Interrupted,
    }
}

fn call(view: &WorkflowView, entry: &CallEntry) -> pb::CallRecord {
    let (call_outcome, decision, error) = match &entry.status {
        CallStatus::WaitingApproval { .. } => (
            pb::CallOutcome::WaitingApproval,
            decision(DecisionKind::NeedsApproval, &[], None),
            String::new(),
        ),
        CallStatus::Running => (
            pb::CallOutcome::Running,
            decision(DecisionKind::Allow, &[], None),
            String::new(),
        ),
        CallStatus::Finished { outcome: o, error } => (
            outcome(*o),
            decision(DecisionKind::Allow, &[], None),
            error.clone().unwrap_or_default(),
        ),
        CallStatus::Denied { violations } => (
            pb::CallOutcome::Denied,
            decision(DecisionKind::Deny, violations, None),
            String::new(),
        ),
    };
    let mut decision = decision;
    decision.gate = entry.gate.clone().unwrap_or_default();
    decision.approval_id = entry.approval_id.clone().unwrap_or_default();
    pb::CallRecord {
        call_id: entry.call_id.to_string(),
        tool: entry.tool.to_string(),
        step: entry.step.clone().unwrap_or_default(),
        outcome: call_outcome as i32,
        decision: Some(decision),
        duration_us: entry.duration_us,
        started_at_ms: entry.started_at_ms,
        error_message: error,
        approval_id: entry.approval_id.clone().unwrap_or_default(),
        error_details_json: entry.details.as_ref().map(ToString::to_string),
        not_yet_durable: view.call_not_yet_durable(entry),
        trace_id: entry.trace_id.clone().unwrap_or_default(),
    }
}

pub fn workflow(view: &WorkflowView) -> pb::WorkflowInfo {
    pb::WorkflowInfo {
        id: view.id.clone(),
        template: view.template.clone().unwrap_or_default(),
        state: workflow_state(view.state) as i32,
        steps_done: u32::try_from(view.steps_done).unwrap_or(u32::MAX),
        steps_total: u32::try_from(view.steps_total).unwrap_or(u32::MAX),
        next_step: view.next_step.clone().unwrap_or_default(),
        started_at_ms: view.started_at_ms,
        finished_at_ms: view.finished_at_ms.unwrap_or(0),
        duration_ms: view.duration_ms,
        caller: view.caller.clone(),
        error: view.error.clone().unwrap_or_default(),
        history: view
            .calls
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|entry| call(view, entry))
            .collect(),
        outputs_json: view
            .outputs
            .as_ref()
            .map(|o| serde_json::Value::Object(o.clone()).to_string())
            .unwrap_or_default(),
        config_version: view.config_version.clone(),
        violations: view.violations,
        outlook: view
            .outlook
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|o| pb::ToolOutlook {
                tool: o.tool.clone(),
                decision: decision_kind(o.decision) as i32,
                hint: o.hint.clone(),
            })
            .collect(),
        not_yet_durable: view.not_yet_durable(),
    }
}

fn approval_state(verdict: Option<ApprovalVerdict>) -> pb::ApprovalState {
    verdict.map_or(pb::ApprovalState::Pending, crate::ledger::approval_state)
}

pub fn approval(a: &Approval) -> pb::ApprovalInfo {
    pb::ApprovalInfo {
        id: a.id.clone(),
        workflow_id: a.workflow_id.clone(),
        tool: a.tool.clone(),
        step: a.step.clone().unwrap_or_default(),
        gate: a.gate.clone(),
        arguments_json: a.arguments.to_string(),
        arguments_digest: a.arguments_digest.clone(),
        config_version: a.config_version.clone(),
        requested_by: a.requested_by.clone(),
        requested_at_ms: a.requested_at_ms,
        expires_at_ms: a.expires_at_ms,
        state: approval_state(a.verdict) as i32,
        decided_by: a.decided_by.clone(),
        reason: a.reason.clone(),
        decided_at_ms: a.decided_at_ms,
        four_eyes: a.four_eyes,
        workflow_caller: a.workflow_caller.clone(),
        why: a.why.clone(),
    }
}

pub fn status(s: &StatusSnapshot) -> pb::StatusResponse {
    pb::StatusResponse {
        active_workflows: s.active_workflows,
        completed_today: s.completed_today,
        failed_today: s.failed_today,
        policy_violations: s.policy_violations,
        pending_approvals: s.pending_approvals,
        workflows: s.workflows.iter().map(workflow).collect(),
        tools: s
            .tools
            .iter()
            .map(|(name, t)| pb::ToolMetrics {
                tool: name.clone(),
                calls: t.calls,
                successes: t.successes,
                failures: t.failures,
                denials: t.denials,
                success_rate: t.success_rate(),
                p50_us: t.percentile_us(0.5),
                p95_us: t.percentile_us(0.95),
                p99_us: t.percentile_us(0.99),
            })
            .collect(),
        rules: s
            .rules
            .iter()
            .map(|(id, r)| pb::RuleViolations {
                rule_id: id.clone(),
                rule_kind: r.kind.clone(),
                violations: r.violations,
            })
            .collect(),
        last_seq: s.last_seq,
        config_version: s.config_version.clone(),
        server_time_ms: s.now_ms,
        audit_unwritable: s.audit.unwritable.clone().unwrap_or_default(),
        audit_unwritable_since_ms: s.audit.unwritable_since_ms,
        audit_queued: s.audit.queued,
        downstream: s.downstream.iter().map(downstream_health).collect(),
        standby: None,
    }
}

/// A warm standby's standing, for `status`.
pub fn standby(s: &crate::cluster::Standing) -> pb::StandbyStatus {
    pb::StandbyStatus {
        active: s.view.active.clone(),
        active_grpc: s.view.active_grpc.clone().unwrap_or_default(),
        active_http: s.view.active_http.clone().unwrap_or_default(),
        applied_seq: s.applied_seq,
        head_seq: s.view.head_seq,
        lag_records: s.lag_records,
        problem: s.problem.clone().unwrap_or_default(),
    }
}

fn downstream_health(h: &crate::downstream::health::ServerHealth) -> pb::DownstreamHealth {
    use crate::downstream::health::Reachability;
    pb::DownstreamHealth {
        server: h.server.clone(),
        transport: h.transport.to_owned(),
        state: match h.state {
            Reachability::Up => pb::DownstreamState::Up,
            Reachability::Down => pb::DownstreamState::Down,
            Reachability::NotStarted => pb::DownstreamState::NotStarted,
        } as i32,
        error: h.error.clone(),
        checked_at_ms: h.checked_at_ms,
        since_ms: h.since_ms,
    }
}

pub fn verify_report(v: &VerifyOutcome) -> pb::VerifyAuditResponse {
    pb::VerifyAuditResponse {
        ok: v.ok,
        records: v.records,
        first_bad_seq: v.first_bad_seq.unwrap_or(0),
        file: v.file.clone().unwrap_or_default(),
        line: v.line.unwrap_or(0),
        message: v.message.clone(),
        last_hash: v.last_hash.clone(),
    }
}

fn report_call(c: &conductor_core::report::RanCall) -> pb::ReportCall {
    pb::ReportCall {
        workflow_id: c.workflow_id.clone(),
        call_id: c.call_id.clone(),
        tool: c.tool.clone(),
        step: c.step.clone(),
        decided_at_ms: c.decided_at_ms,
        finished_at_ms: c.finished_at_ms,
        outcome: outcome(c.outcome) as i32,
        duration_us: c.duration_us,
        error: c.error.clone(),
        approval_id: c.approval_id.clone(),
        approved_by: c.approved_by.clone(),
    }
}

pub fn compliance(r: &ComplianceReport) -> pb::ComplianceReportResponse {
    use conductor_core::report::Blocked;
    use pb::report_blocked::How;
    pb::ComplianceReportResponse {
        compliant: r.compliant,
        findings: r.findings.clone(),
        approvals: r.report.approvals.iter().map(approval).collect(),
        report_json: r.to_json().to_string(),
        ran: r.report.ran.iter().map(report_call).collect(),
        not_run: r.report.not_run.iter().map(report_call).collect(),
        blocked: r
            .report
            .blocked
            .iter()
            .map(|b| pb::ReportBlocked {
                workflow_id: b.workflow_id.clone(),
                call_id: b.call_id.clone(),
                tool: b.tool.clone(),
                at_ms: b.at_ms,
                how: match b.how {
                    Blocked::Policy => How::Policy,
                    Blocked::ApprovalDenied => How::ApprovalDenied,
                    Blocked::ApprovalExpired => How::ApprovalExpired,
                } as i32,
                rules: b.rules.clone(),
                reason: b.reason.clone(),
            })
            .collect(),
    }
}
