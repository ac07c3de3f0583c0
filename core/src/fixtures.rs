//! Events and a configuration shared by the unit tests of the state and the report.

use crate::config::Config;
use crate::events::{ApprovalVerdict, AuditEvent, DecisionKind, Outcome, WorkflowEnd};
use crate::policy::{RuleKind, Violation};
use serde_json::json;
use std::sync::Arc;

pub(crate) fn config() -> Arc<Config> {
    config_keeping(crate::workflow::DEFAULT_CALLS_IN_MEMORY)
}

/// The same configuration, keeping `calls_in_memory` calls of each workflow in memory.
pub(crate) fn config_keeping(calls_in_memory: usize) -> Arc<Config> {
    let text = json!({
        "workflows": { "calls_in_memory": calls_in_memory },
        "servers": {
            "a": { "grpc": "http://127.0.0.1:1", "tools": ["validate", "process"] },
            "b": { "grpc": "http://127.0.0.1:2", "tools": ["backup", "notify"] }
        },
        "rules": [
            { "id": "seq", "kind": "sequence", "tool": "process", "after": ["validate"] },
            { "id": "gate", "kind": "approval", "tool": "notify", "timeout": "2m" }
        ],
        "templates": {
            "flow": { "steps": [
                { "name": "v", "tool": "validate", "arguments": { "r": "${input.records}" } },
                { "name": "p", "tool": "process", "arguments": { "r": "${steps.v.output}" } }
            ] }
        }
    });
    Arc::new(Config::from_slice(text.to_string().as_bytes()).expect("config"))
}

pub(crate) fn started(id: &str, template: Option<&str>) -> AuditEvent {
    AuditEvent::WorkflowStarted {
        workflow_id: id.into(),
        template: template.map(Into::into),
        input: json!({"records": [1, 2]}),
        caller: "grpc:ada".into(),
        config_version: "v".into(),
        labels: Default::default(),
    }
}

pub(crate) fn decided(wf: &str, call: &str, tool: &str, decision: DecisionKind) -> AuditEvent {
    AuditEvent::CallDecided {
        workflow_id: wf.into(),
        call_id: call.into(),
        tool: tool.into(),
        step: None,
        arguments: json!({"to": "ops", "n": 1}),
        caller: "grpc:ada".into(),
        decision,
        violations: if decision == DecisionKind::Deny {
            vec![Violation {
                rule_id: "seq".into(),
                rule_kind: RuleKind::Sequence,
                tool: tool.into(),
                message: "call validate first".into(),
                unblock_hint: "call validate".into(),
                required_tools: vec!["validate".into()],
                retry_after_ms: None,
            }]
        } else {
            Vec::new()
        },
        gate: (decision == DecisionKind::NeedsApproval).then(|| "gate".into()),
        config_version: "v".into(),
        labels: Vec::new(),
        workflow_labels: Vec::new(),
        conditions: Vec::new(),
        gate_reason: None,
        trace: None,
    }
}

pub(crate) fn step_of(mut event: AuditEvent, name: &str) -> AuditEvent {
    if let AuditEvent::CallDecided { step, .. } = &mut event {
        *step = Some(name.into());
    }
    event
}

pub(crate) fn finished(wf: &str, call: &str, tool: &str, outcome: Outcome) -> AuditEvent {
    AuditEvent::CallFinished {
        workflow_id: wf.into(),
        call_id: call.into(),
        tool: tool.into(),
        outcome,
        duration_us: 42,
        error: (outcome != Outcome::Succeeded).then(|| "boom".into()),
        result: Some(json!({"ok": true})),
        details: (outcome == Outcome::Failed)
            .then(|| json!({"invalid": [{"index": 0, "field": "email"}]})),
        trace: None,
    }
}

pub(crate) fn requested(wf: &str, call: &str, approval: &str) -> AuditEvent {
    AuditEvent::ApprovalRequested {
        workflow_id: wf.into(),
        call_id: call.into(),
        tool: "notify".into(),
        approval_id: approval.into(),
        gate: "gate".into(),
        arguments_digest: "d".into(),
        expires_at_ms: 10_000,
        four_eyes: false,
        trace: None,
    }
}

pub(crate) fn verdict(
    wf: &str,
    call: &str,
    approval: &str,
    verdict: ApprovalVerdict,
) -> AuditEvent {
    AuditEvent::ApprovalDecided {
        workflow_id: wf.into(),
        call_id: call.into(),
        approval_id: approval.into(),
        verdict,
        approver: "bob".into(),
        reason: "not today".into(),
        waited_ms: 5,
    }
}

/// A history with every kind of event in it.
pub(crate) fn history() -> Vec<AuditEvent> {
    vec![
        AuditEvent::ConfigLoaded {
            config_version: "v".into(),
            path: None,
        },
        started("w1", None),
        decided("w1", "c1", "process", DecisionKind::Deny),
        decided("w1", "c2", "validate", DecisionKind::Allow),
        AuditEvent::CallStarted {
            workflow_id: "w1".into(),
            call_id: "c2".into(),
            tool: "validate".into(),
            server: "a".into(),
            trace: None,
        },
        finished("w1", "c2", "validate", Outcome::Succeeded),
        decided("w1", "c3", "notify", DecisionKind::NeedsApproval),
        requested("w1", "c3", "ap-1"),
        verdict("w1", "c3", "ap-1", ApprovalVerdict::Denied),
        decided("w1", "c4", "notify", DecisionKind::NeedsApproval),
        requested("w1", "c4", "ap-2"),
        started("w2", Some("flow")),
        step_of(decided("w2", "c5", "validate", DecisionKind::Allow), "v"),
        finished("w2", "c5", "validate", Outcome::Succeeded),
        decided("w2", "c6", "process", DecisionKind::Allow),
        AuditEvent::ControlRefused {
            action: "approve".into(),
            target: "ap-2".into(),
            reason: "no token".into(),
            caller: "eve".into(),
            count: 1,
        },
        started("w3", None),
        AuditEvent::WorkflowFinished {
            workflow_id: "w3".into(),
            state: WorkflowEnd::Cancelled,
            error: Some("cancelled by ada".into()),
            duration_ms: 3,
        },
        AuditEvent::Recovered {
            set_aside: vec!["audit-1.jsonl.damaged".into()],
            cut_seq: 7,
            reason: "hash mismatch".into(),
        },
        AuditEvent::ConfigRefused {
            path: Some("config.json".into()),
            problems: vec!["rules[0].tool: unknown tool".into()],
        },
        AuditEvent::ServerAsked {
            workflow_id: "wf-1".into(),
            call_id: "call-2".into(),
            tool: "summarize".into(),
            server: "notes".into(),
            method: "sampling/createMessage".into(),
            outcome: "refused".into(),
            error: Some("the client of this call cannot answer sampling/createMessage".into()),
        },
    ]
}
