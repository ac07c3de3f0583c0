//! Audit records to the typed `pb::AuditEvent`: the envelope (seq, time, chain, workflow) and one
//! message per event kind. Every orchestrator event kind maps here and nowhere else.

use super::{decision, outcome};
use crate::audit::{ApprovalVerdict, AuditEvent, AuditRecord, Outcome, WorkflowEnd};
use conductor_proto::v1 as pb;

fn verdict(verdict: ApprovalVerdict) -> pb::ApprovalState {
    match verdict {
        ApprovalVerdict::Approved => pb::ApprovalState::Approved,
        ApprovalVerdict::Denied => pb::ApprovalState::Denied,
        ApprovalVerdict::Expired => pb::ApprovalState::Expired,
    }
}

fn workflow_end(end: WorkflowEnd) -> pb::WorkflowState {
    match end {
        WorkflowEnd::Completed => pb::WorkflowState::Completed,
        WorkflowEnd::Failed => pb::WorkflowState::Failed,
        WorkflowEnd::Cancelled => pb::WorkflowState::Cancelled,
    }
}

/// One audit line as its typed protobuf message: the envelope (seq, time, chain, workflow) and one
/// message per event kind, so clients match on types instead of kind names.
pub fn audit_event(record: &AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: record.seq,
        timestamp_ms: record.ts_ms,
        workflow_id: record.event.workflow_id().unwrap_or_default().to_owned(),
        raw_json: serde_json::to_string(record).unwrap_or_default(),
        prev_hash: record.prev.clone(),
        hash: record.hash.clone(),
        trace_id: record
            .event
            .trace()
            .map(|t| t.trace_id.clone())
            .unwrap_or_default(),
        span_id: record
            .event
            .trace()
            .map(|t| t.span_id.clone())
            .unwrap_or_default(),
        event: Some(event_body(&record.event)),
    }
}

fn event_body(event: &AuditEvent) -> pb::audit_event::Event {
    use pb::audit_event as e;
    match event {
        AuditEvent::ConfigLoaded {
            config_version,
            path,
        } => e::Event::ConfigLoaded(e::ConfigLoaded {
            config_version: config_version.clone(),
            path: path.clone(),
        }),
        AuditEvent::WorkflowStarted {
            template,
            input,
            caller,
            config_version,
            ..
        } => e::Event::WorkflowStarted(e::WorkflowStarted {
            template: template.clone(),
            input_json: input.to_string(),
            caller: caller.clone(),
            config_version: config_version.clone(),
        }),
        AuditEvent::CallDecided {
            call_id,
            tool,
            step,
            arguments,
            caller,
            decision: kind,
            violations,
            gate,
            config_version,
            labels,
            workflow_labels,
            conditions,
            gate_reason,
            ..
        } => {
            let mut d = decision(*kind, violations, None);
            d.gate = gate.clone().unwrap_or_default();
            e::Event::CallDecided(e::CallDecided {
                call_id: call_id.clone(),
                tool: tool.clone(),
                step: step.clone(),
                arguments_json: arguments.to_string(),
                caller: caller.clone(),
                decision: Some(d),
                config_version: config_version.clone(),
                labels: labels.clone(),
                workflow_labels: workflow_labels.clone(),
                conditions: conditions
                    .iter()
                    .map(|c| match (c.value, &c.error) {
                        (Some(v), _) => format!("{}={v}", c.rule_id),
                        (None, e) => format!("{}=error: {}", c.rule_id, e.as_deref().unwrap_or("")),
                    })
                    .collect(),
                gate_reason: gate_reason.clone().unwrap_or_default(),
            })
        }
        AuditEvent::ApprovalRequested {
            call_id,
            tool,
            approval_id,
            gate,
            arguments_digest,
            expires_at_ms,
            four_eyes,
            ..
        } => e::Event::ApprovalRequested(e::ApprovalRequested {
            call_id: call_id.clone(),
            tool: tool.clone(),
            approval_id: approval_id.clone(),
            gate: gate.clone(),
            arguments_digest: arguments_digest.clone(),
            expires_at_ms: *expires_at_ms,
            four_eyes: *four_eyes,
        }),
        AuditEvent::ApprovalDecided {
            call_id,
            approval_id,
            verdict: v,
            approver,
            reason,
            waited_ms,
            ..
        } => e::Event::ApprovalDecided(e::ApprovalDecided {
            call_id: call_id.clone(),
            approval_id: approval_id.clone(),
            verdict: verdict(*v) as i32,
            approver: approver.clone(),
            reason: reason.clone(),
            waited_ms: *waited_ms,
        }),
        AuditEvent::CallStarted {
            call_id,
            tool,
            server,
            ..
        } => e::Event::CallStarted(e::CallStarted {
            call_id: call_id.clone(),
            tool: tool.clone(),
            server: server.clone(),
        }),
        AuditEvent::CallFinished {
            call_id,
            tool,
            outcome: o,
            duration_us,
            error,
            result,
            details,
            ..
        } => e::Event::CallFinished(e::CallFinished {
            call_id: call_id.clone(),
            tool: tool.clone(),
            outcome: outcome(*o) as i32,
            duration_us: *duration_us,
            error: error.clone(),
            result_json: result.as_ref().map(ToString::to_string),
            // A tool's own failure: its code, message and structured details, as recorded.
            tool_error: (*o == Outcome::Failed)
                .then(|| {
                    let text = error.as_deref().unwrap_or_default();
                    let (code, message) = text.split_once(": ").unwrap_or(("", text));
                    details.as_ref().map(|d| pb::ToolError {
                        code: code.to_owned(),
                        message: message.to_owned(),
                        details_json: d.to_string(),
                    })
                })
                .flatten(),
        }),
        AuditEvent::WorkflowFinished {
            state,
            error,
            duration_ms,
            ..
        } => e::Event::WorkflowFinished(e::WorkflowFinished {
            state: workflow_end(*state) as i32,
            error: error.clone(),
            duration_ms: *duration_ms,
        }),
        AuditEvent::ControlRefused {
            action,
            target,
            reason,
            caller,
            count,
        } => e::Event::ControlRefused(e::ControlRefused {
            action: action.clone(),
            target: target.clone(),
            reason: reason.clone(),
            caller: caller.clone(),
            count: *count,
        }),
        AuditEvent::Recovered {
            set_aside,
            cut_seq,
            reason,
        } => e::Event::Recovered(e::Recovered {
            set_aside: set_aside.clone(),
            cut_seq: *cut_seq,
            reason: reason.clone(),
        }),
        AuditEvent::ConfigRefused { path, problems } => e::Event::ConfigRefused(e::ConfigRefused {
            path: path.clone(),
            problems: problems.clone(),
        }),
        AuditEvent::ServerAsked {
            server,
            method,
            outcome,
            error,
            ..
        } => e::Event::ServerAsked(e::ServerAsked {
            server: server.clone(),
            method: method.clone(),
            outcome: outcome.clone(),
            error: error.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::DecisionKind;
    use pb::audit_event::Event;

    fn record(event: AuditEvent) -> AuditRecord {
        AuditRecord {
            seq: 7,
            ts_ms: 1_000,
            prev: "a".repeat(64),
            event,
            hash: "b".repeat(64),
        }
    }

    #[test]
    fn the_envelope_and_the_kind_travel_typed() {
        let e = audit_event(&record(AuditEvent::WorkflowFinished {
            workflow_id: "wf-1".into(),
            state: WorkflowEnd::Cancelled,
            error: Some("started by mistake".into()),
            duration_ms: 1200,
        }));
        assert_eq!(
            (e.seq, e.timestamp_ms, e.workflow_id.as_str()),
            (7, 1_000, "wf-1")
        );
        assert_eq!((e.prev_hash.len(), e.hash.len()), (64, 64));
        let Some(Event::WorkflowFinished(finished)) = e.event else {
            panic!("{e:?}");
        };
        assert_eq!(finished.state, pb::WorkflowState::Cancelled as i32);
        assert_eq!(finished.error.as_deref(), Some("started by mistake"));
        let raw: serde_json::Value = serde_json::from_str(&e.raw_json).unwrap();
        assert_eq!(raw["kind"], "workflow_finished");
    }

    #[test]
    fn approvals_and_decisions_carry_their_own_fields() {
        let requested = audit_event(&record(AuditEvent::ApprovalRequested {
            workflow_id: "wf-1".into(),
            call_id: "c-1".into(),
            tool: "restore_backup".into(),
            approval_id: "ap-1".into(),
            gate: "restore-needs-approval".into(),
            arguments_digest: "sha256:abc".into(),
            expires_at_ms: 9_000,
            four_eyes: true,
            trace: None,
        }));
        let Some(Event::ApprovalRequested(a)) = requested.event else {
            panic!("{requested:?}");
        };
        assert_eq!(a.arguments_digest, "sha256:abc");
        assert!(a.four_eyes);

        let decided = audit_event(&record(AuditEvent::CallDecided {
            workflow_id: "wf-1".into(),
            call_id: "c-2".into(),
            tool: "process_data".into(),
            step: None,
            arguments: serde_json::json!({"records": []}),
            caller: "tester".into(),
            decision: DecisionKind::Deny,
            violations: Vec::new(),
            gate: None,
            config_version: "v1".into(),
            labels: Vec::new(),
            workflow_labels: Vec::new(),
            conditions: Vec::new(),
            gate_reason: None,
            trace: None,
        }));
        let Some(Event::CallDecided(c)) = decided.event else {
            panic!("{decided:?}");
        };
        assert_eq!(c.decision.unwrap().kind, pb::DecisionKind::Deny as i32);
        assert_eq!(c.arguments_json, r#"{"records":[]}"#);
        assert_eq!(c.step, None);

        let verdict = audit_event(&record(AuditEvent::ApprovalDecided {
            workflow_id: "wf-1".into(),
            call_id: "c-1".into(),
            approval_id: "ap-1".into(),
            verdict: ApprovalVerdict::Expired,
            approver: "clock".into(),
            reason: String::new(),
            waited_ms: 5,
        }));
        let Some(Event::ApprovalDecided(d)) = verdict.event else {
            panic!("{verdict:?}");
        };
        assert_eq!(d.verdict, pb::ApprovalState::Expired as i32);
    }
}
