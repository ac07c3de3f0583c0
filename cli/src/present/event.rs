//! Audit events for people: the kind's name, a one-line description of each typed event, the line of
//! `watch` and `audit tail`, and the JSON `--json` prints. Matches on the event's type, never on a name.

use super::{outcome, result_value, summary, violations, workflow_state};
use crate::output::{Out, clock_ms, duration_us};
use conductor_proto::v1 as pb;
use pb::audit_event::Event;
use serde_json::{Value, json};

/// The event's kind as the audit log names it (`call_decided`, ...): the `KIND` column and `--kind`.
pub fn kind_name(e: &pb::AuditEvent) -> &'static str {
    match &e.event {
        Some(Event::ConfigLoaded(_)) => "config_loaded",
        Some(Event::WorkflowStarted(_)) => "workflow_started",
        Some(Event::CallDecided(_)) => "call_decided",
        Some(Event::ApprovalRequested(_)) => "approval_requested",
        Some(Event::ApprovalDecided(_)) => "approval_decided",
        Some(Event::CallStarted(_)) => "call_started",
        Some(Event::CallFinished(_)) => "call_finished",
        Some(Event::WorkflowFinished(_)) => "workflow_finished",
        Some(Event::ControlRefused(_)) => "control_refused",
        Some(Event::Recovered(_)) => "recovered",
        Some(Event::ConfigRefused(_)) => "config_refused",
        Some(Event::ServerAsked(_)) => "server_asked",
        None => "unknown",
    }
}

/// The tool an event is about, if any.
pub fn event_tool(e: &pb::AuditEvent) -> &str {
    match &e.event {
        Some(Event::CallDecided(c)) => &c.tool,
        Some(Event::ApprovalRequested(a)) => &a.tool,
        Some(Event::CallStarted(c)) => &c.tool,
        Some(Event::CallFinished(c)) => &c.tool,
        _ => "",
    }
}

/// The call an event is about, if any.
pub fn event_call_id(e: &pb::AuditEvent) -> &str {
    match &e.event {
        Some(Event::CallDecided(c)) => &c.call_id,
        Some(Event::ApprovalRequested(a)) => &a.call_id,
        Some(Event::ApprovalDecided(a)) => &a.call_id,
        Some(Event::CallStarted(c)) => &c.call_id,
        Some(Event::CallFinished(c)) => &c.call_id,
        _ => "",
    }
}

/// How a person reads an approval verdict.
pub fn verdict_word(verdict: i32) -> &'static str {
    match pb::ApprovalState::try_from(verdict).unwrap_or_default() {
        pb::ApprovalState::Approved => "approved",
        pb::ApprovalState::Expired => "expired",
        _ => "denied",
    }
}

fn suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// What an audit event says, in one line without its sequence number and time.
pub fn describe(out: &Out, e: &pb::AuditEvent) -> String {
    let Some(event) = &e.event else {
        return "unknown event (a newer orchestrator?)".to_owned();
    };
    match event {
        Event::WorkflowStarted(w) => {
            let what = match &w.template {
                Some(template) => format!("template {template}"),
                None => "ad-hoc workflow".to_owned(),
            };
            format!("{what} started by {}", w.caller)
        }
        Event::CallDecided(c) => {
            let tool = match &c.step {
                Some(step) => format!("{} [{step}]", c.tool),
                None => c.tool.clone(),
            };
            let decision = c.decision.clone().unwrap_or_default();
            let line = match pb::DecisionKind::try_from(decision.kind).unwrap_or_default() {
                pb::DecisionKind::Deny => format!(
                    "{tool}: {}: {}",
                    out.bad("denied"),
                    violations(&decision).join("; ")
                ),
                pb::DecisionKind::NeedsApproval if !c.gate_reason.is_empty() => format!(
                    "{tool}: {} (gate {}): {}",
                    out.warn("needs approval"),
                    decision.gate,
                    c.gate_reason
                ),
                pb::DecisionKind::NeedsApproval => format!(
                    "{tool}: {} (gate {})",
                    out.warn("needs approval"),
                    decision.gate
                ),
                _ => format!("{tool}: {}", out.ok("allowed")),
            };
            let mut facts = Vec::new();
            if !c.labels.is_empty() {
                facts.push(format!("labels {}", c.labels.join(", ")));
            }
            if !c.workflow_labels.is_empty() {
                facts.push(format!(
                    "workflow had seen {}",
                    c.workflow_labels.join(", ")
                ));
            }
            if !c.conditions.is_empty() {
                facts.push(format!("conditions {}", c.conditions.join(", ")));
            }
            if facts.is_empty() {
                line
            } else {
                format!("{line} [{}]", facts.join("; "))
            }
        }
        Event::ApprovalRequested(a) => format!(
            "{} {}: {} — `conductorctl approve {}`",
            a.approval_id,
            out.warn("waits for approval"),
            a.tool,
            a.approval_id
        ),
        Event::ApprovalDecided(a) => format!(
            "approval {} {} by {}{}",
            a.approval_id,
            out.state(verdict_word(a.verdict)),
            a.approver,
            suffix(&a.reason)
        ),
        Event::CallStarted(c) => format!("{} started", c.tool),
        Event::CallFinished(c) => {
            let mut text = format!(
                "{} {} in {}{}",
                c.tool,
                out.state(outcome(c.outcome)),
                duration_us(c.duration_us),
                suffix(c.error.as_deref().unwrap_or_default())
            );
            if let Some(details) = c.tool_error.as_ref().filter(|e| !e.details_json.is_empty()) {
                text.push_str(&format!(
                    " — details: {}",
                    summary(&result_value(&details.details_json), 200)
                ));
            }
            if let Some(result) = &c.result_json {
                text.push_str(&format!(" → {}", summary(&result_value(result), 100)));
            }
            text
        }
        Event::WorkflowFinished(w) => format!(
            "workflow {} in {}{}",
            out.state(workflow_state(w.state)),
            crate::output::duration_ms(w.duration_ms),
            suffix(w.error.as_deref().unwrap_or_default())
        ),
        Event::ControlRefused(c) if c.count > 1 => format!(
            "{} ({} {}; latest for {}): {}",
            out.bad(&format!("control action refused {} times", c.count)),
            c.action,
            c.target,
            c.caller,
            c.reason
        ),
        Event::ControlRefused(c) => format!(
            "{} ({} {}) for {}: {}",
            out.bad("control action refused"),
            c.action,
            c.target,
            c.caller,
            c.reason
        ),
        Event::ConfigLoaded(c) => format!("configuration {} loaded", c.config_version),
        Event::Recovered(r) => format!(
            "{}: {} set aside (the chain was cut at seq {}){}",
            out.warn("audit log recovered"),
            r.set_aside.join(", "),
            r.cut_seq,
            suffix(&r.reason)
        ),
        Event::ConfigRefused(c) => format!(
            "{} {}: {}",
            out.bad("configuration refused"),
            c.path.as_deref().unwrap_or_default(),
            c.problems.join("; ")
        ),
        Event::ServerAsked(a) => match &a.error {
            None => format!(
                "server {} asked the client {} ({})",
                a.server, a.method, a.outcome
            ),
            Some(error) => format!(
                "server {} asked the client {}: {}{}",
                a.server,
                a.method,
                out.warn(&a.outcome),
                suffix(error)
            ),
        },
    }
}

/// `#seq time workflow kind description`: one line of `watch` and `audit tail`.
pub fn event_line(out: &Out, e: &pb::AuditEvent) -> String {
    let workflow = if e.workflow_id.is_empty() {
        "-".to_owned()
    } else {
        e.workflow_id.clone()
    };
    let line = format!(
        "{} {} {:<16} {:<18} {}",
        out.dim(&format!("#{:<5}", e.seq)),
        out.dim(&clock_ms(e.timestamp_ms)),
        workflow,
        kind_name(e),
        describe(out, e)
    );
    // A traced call's records name their trace, to open it in the tracing system.
    if e.trace_id.is_empty() {
        line
    } else {
        format!("{line} {}", out.dim(&format!("trace {}", e.trace_id)))
    }
}

/// The event as the audit log wrote it (every field), or its envelope when the line is absent.
pub fn event_json(e: &pb::AuditEvent) -> Value {
    if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&e.raw_json) {
        return Value::Object(map);
    }
    json!({
        "seq": e.seq, "ts_ms": e.timestamp_ms, "kind": kind_name(e), "workflow_id": e.workflow_id,
        "call_id": event_call_id(e), "tool": event_tool(e), "prev": e.prev_hash, "hash": e.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::EventKind;
    use clap::ValueEnum;
    use pb::audit_event as e;

    #[test]
    fn the_kind_filter_names_exactly_the_typed_events() {
        let every = [
            Event::ConfigLoaded(e::ConfigLoaded::default()),
            Event::ConfigRefused(e::ConfigRefused::default()),
            Event::Recovered(e::Recovered::default()),
            Event::WorkflowStarted(e::WorkflowStarted::default()),
            Event::CallDecided(e::CallDecided::default()),
            Event::ApprovalRequested(e::ApprovalRequested::default()),
            Event::ApprovalDecided(e::ApprovalDecided::default()),
            Event::CallStarted(e::CallStarted::default()),
            Event::CallFinished(e::CallFinished::default()),
            Event::ServerAsked(e::ServerAsked::default()),
            Event::WorkflowFinished(e::WorkflowFinished::default()),
            Event::ControlRefused(e::ControlRefused::default()),
        ];
        let shown: Vec<&str> = every
            .into_iter()
            .map(|event| {
                kind_name(&pb::AuditEvent {
                    event: Some(event),
                    ..Default::default()
                })
            })
            .collect();
        let filters: Vec<String> = EventKind::value_variants()
            .iter()
            .map(|k| k.log_name())
            .collect();
        assert_eq!(shown, filters);
    }

    #[test]
    fn a_failed_call_shows_the_tools_details_and_a_result_its_summary() {
        let failed = pb::AuditEvent {
            event: Some(Event::CallFinished(e::CallFinished {
                tool: "validate_data".into(),
                outcome: pb::CallOutcome::Failed as i32,
                duration_us: 1500,
                error: Some("validation_failed: 1 of 2 records are invalid".into()),
                tool_error: Some(pb::ToolError {
                    code: "validation_failed".into(),
                    message: "1 of 2 records are invalid".into(),
                    details_json: r#"[{"record":1,"field":"email","reason":"not an email"}]"#
                        .into(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        let text = describe(&Out::plain(), &failed);
        assert!(
            text.starts_with("validate_data failed in 1.5ms: validation_failed"),
            "{text}"
        );
        assert!(
            text.contains(r#"details: [{"record":1,"field":"email""#),
            "{text}"
        );

        let succeeded = pb::AuditEvent {
            event: Some(Event::CallFinished(e::CallFinished {
                tool: "process_data".into(),
                outcome: pb::CallOutcome::Succeeded as i32,
                result_json: Some(format!(r#"{{"totals":"{}"}}"#, "x".repeat(300))),
                ..Default::default()
            })),
            ..Default::default()
        };
        let text = describe(&Out::plain(), &succeeded);
        assert!(
            text.contains(r#"→ {"totals":"xx"#) && text.ends_with('…'),
            "{text}"
        );
    }

    #[test]
    fn a_cancelled_workflow_reads_as_cancelled() {
        let finished = pb::AuditEvent {
            event: Some(Event::WorkflowFinished(e::WorkflowFinished {
                state: pb::WorkflowState::Cancelled as i32,
                error: Some("started by mistake".into()),
                duration_ms: 1200,
            })),
            ..Default::default()
        };
        assert_eq!(
            describe(&Out::plain(), &finished),
            "workflow cancelled in 1.2s: started by mistake"
        );
    }

    #[test]
    fn a_summary_of_refusals_says_how_many() {
        let refused = |count| pb::AuditEvent {
            event: Some(Event::ControlRefused(e::ControlRefused {
                action: "approve".into(),
                target: "ap-1".into(),
                reason: "no token".into(),
                caller: "unauthenticated (grpc 127.0.0.1:5)".into(),
                count,
            })),
            ..Default::default()
        };
        let one = describe(&Out::plain(), &refused(0));
        assert!(
            one.starts_with("control action refused (approve ap-1)"),
            "{one}"
        );
        let many = describe(&Out::plain(), &refused(250));
        assert!(
            many.contains("refused 250 times") && many.contains("latest for unauthenticated"),
            "{many}"
        );
    }
}
