//! Read-only views: `status` (the dashboard's figures and metrics), `templates`, `tools`, `workflows` and
//! `workflow ID` (one workflow's history with each decision, reason and duration).

use crate::cli::{Global, TemplatesArgs, WorkflowArgs, WorkflowsArgs};
use crate::client::{Answer, CliError, Client};
use crate::output::{
    Out, clip, duration_ms, duration_us, print_json, short_time_ms, table, time_ms,
};
use crate::present::{
    decision_json, decision_kind, durable_mark, is_finished, outcome, step_outputs, summary,
    violations, workflow_json, workflow_state,
};
use conductor_proto::v1 as pb;
use serde_json::{Value, json};

pub async fn status(global: &Global) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let s = client
        .rpc()
        .status(pb::StatusRequest {})
        .await
        .answer(&client)?;
    if out.json {
        print_json(&json!({
            "active_workflows": s.active_workflows, "completed_today": s.completed_today, "failed_today": s.failed_today,
            "policy_violations": s.policy_violations, "pending_approvals": s.pending_approvals,
            "last_seq": s.last_seq, "config_version": s.config_version, "server_time_ms": s.server_time_ms,
            "audit": {"writable": s.audit_unwritable.is_empty(), "unwritable": s.audit_unwritable,
                "unwritable_since_ms": s.audit_unwritable_since_ms, "queued": s.audit_queued},
            "workflows": s.workflows.iter().map(workflow_json).collect::<Vec<_>>(),
            "tools": s.tools.iter().map(|t| json!({"tool": t.tool, "calls": t.calls, "successes": t.successes,
                "failures": t.failures, "denials": t.denials, "success_rate": t.success_rate,
                "p50_us": t.p50_us, "p95_us": t.p95_us, "p99_us": t.p99_us})).collect::<Vec<_>>(),
            "rules": s.rules.iter().map(|r| json!({"rule_id": r.rule_id, "rule_kind": r.rule_kind, "violations": r.violations})).collect::<Vec<_>>(),
            "downstream": s.downstream.iter().map(|d| json!({"server": d.server, "transport": d.transport,
                "state": downstream_state(d.state), "error": d.error, "checked_at_ms": d.checked_at_ms,
                "since_ms": d.since_ms})).collect::<Vec<_>>(),
            "standby": s.standby.as_ref().map(|b| json!({"active": b.active, "active_grpc": b.active_grpc,
                "active_http": b.active_http, "applied_seq": b.applied_seq, "head_seq": b.head_seq,
                "lag_records": b.lag_records, "problem": b.problem})),
        }));
        return Ok(());
    }
    outln!(
        "{} {} (configuration {}, audit seq {})",
        out.bold("orchestrator"),
        client.url,
        s.config_version,
        s.last_seq
    );
    if let Some(standby) = &s.standby {
        let at = [&standby.active_grpc, &standby.active_http]
            .into_iter()
            .filter(|a| !a.is_empty())
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        outln!(
            "{} following the active node {} ({at}), {} record(s) behind (applied seq {} of {})\n  reads are served here; calls, starts and approvals go to the active node",
            out.bold("standby:"),
            standby.active,
            standby.lag_records,
            standby.applied_seq,
            standby.head_seq
        );
        if !standby.problem.is_empty() {
            outln!(
                "{} this standby cannot follow now: {}",
                out.warn("WARNING:"),
                standby.problem
            );
        }
    }
    if !s.audit_unwritable.is_empty() {
        outln!(
            "{} the audit log cannot be written since {}: {}\n  every new call is refused until it can; the orchestrator retries by itself ({} record(s) wait)",
            out.warn("NOT SERVING:"),
            time_ms(s.audit_unwritable_since_ms),
            s.audit_unwritable,
            s.audit_queued
        );
    }
    if s.audit_queued > 0 {
        outln!(
            "{} {} audit record(s) are not durable yet: the figures below include their changes, and a crash would take them back (marked 'not yet durable')",
            out.warn("note:"),
            s.audit_queued
        );
    }
    let down: Vec<&str> = s
        .downstream
        .iter()
        .filter(|d| d.state == pb::DownstreamState::Down as i32)
        .map(|d| d.server.as_str())
        .collect();
    if !down.is_empty() {
        outln!(
            "{} downstream server(s) unreachable: {}\n  calls to their tools fail until they are back; see why below, and start or fix them",
            out.warn("WARNING:"),
            down.join(", ")
        );
    }
    outln!("Active Workflows:  {}", s.active_workflows);
    outln!("Completed Today:   {}", s.completed_today);
    outln!("Failed Today:      {}", s.failed_today);
    outln!("Policy Violations: {}", s.policy_violations);
    outln!("Pending Approvals: {}", s.pending_approvals);
    if !s.workflows.is_empty() {
        outln!("\n{}", workflows_table(&out, &s.workflows));
    }
    if !s.tools.is_empty() {
        let rows: Vec<Vec<String>> = s
            .tools
            .iter()
            .map(|t| {
                vec![
                    t.tool.clone(),
                    t.calls.to_string(),
                    format!("{:.0}%", t.success_rate * 100.0),
                    t.denials.to_string(),
                    duration_us(t.p50_us),
                    duration_us(t.p95_us),
                    duration_us(t.p99_us),
                ]
            })
            .collect();
        outln!(
            "\n{}",
            table(
                &out,
                &["TOOL", "CALLS", "SUCCESS", "DENIED", "P50", "P95", "P99"],
                &rows
            )
        );
    }
    if !s.downstream.is_empty() {
        let rows: Vec<Vec<String>> = s
            .downstream
            .iter()
            .map(|d| {
                let state = downstream_state(d.state);
                vec![
                    d.server.clone(),
                    d.transport.clone(),
                    match state {
                        "up" => out.ok(state),
                        "down" => out.bad(state),
                        _ => state.to_owned(),
                    },
                    time_ms(d.since_ms),
                    clip(&d.error, 80),
                ]
            })
            .collect();
        outln!(
            "\n{}",
            table(
                &out,
                &["SERVER", "TRANSPORT", "STATE", "SINCE", "ERROR"],
                &rows
            )
        );
    }
    if !s.rules.is_empty() {
        let rows: Vec<Vec<String>> = s
            .rules
            .iter()
            .map(|r| {
                vec![
                    r.rule_id.clone(),
                    r.rule_kind.clone(),
                    r.violations.to_string(),
                ]
            })
            .collect();
        outln!("\n{}", table(&out, &["RULE", "KIND", "VIOLATIONS"], &rows));
    }
    Ok(())
}

/// A downstream server's state as `status` and the dashboard say it.
pub fn downstream_state(state: i32) -> &'static str {
    match pb::DownstreamState::try_from(state).unwrap_or_default() {
        pb::DownstreamState::Up => "up",
        pb::DownstreamState::Down => "down",
        pb::DownstreamState::NotStarted => "not started",
        pb::DownstreamState::Unspecified => "unknown",
    }
}

fn workflows_table(out: &Out, workflows: &[pb::WorkflowInfo]) -> String {
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .map(|w| {
            let progress = if w.steps_total > 0 {
                format!("{}/{}", w.steps_done, w.steps_total)
            } else {
                "-".into()
            };
            vec![
                w.id.clone(),
                if w.template.is_empty() {
                    "(ad hoc)".into()
                } else {
                    w.template.clone()
                },
                durable_mark(workflow_state(w.state), w.not_yet_durable),
                progress,
                duration_ms(w.duration_ms),
                // The whole time with its zone does not fit 80 columns ("2026-12-…").
                short_time_ms(w.started_at_ms),
                w.caller.clone(),
                clip(&w.error, 60),
            ]
        })
        .collect();
    table(
        out,
        &[
            "WORKFLOW", "TEMPLATE", "STATE", "STEPS", "DURATION", "STARTED", "CALLER", "ERROR",
        ],
        &rows,
    )
}

pub async fn templates(global: &Global, args: TemplatesArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let mut templates = client
        .rpc()
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .answer(&client)?
        .templates;
    if let Some(name) = &args.name {
        templates.retain(|t| &t.name == name);
        if templates.is_empty() {
            return Err(CliError::NotFound(format!(
                "no template {name:?}; list them with `conductorctl templates`"
            ))
            .into());
        }
    }
    let json_of = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    if out.json {
        print_json(&Value::Array(
            templates
                .iter()
                .map(|t| {
                    json!({"name": t.name, "description": t.description,
                        "inputs": t.inputs.iter().map(|i| json!({
                            "name": i.name, "type": i.r#type, "description": i.description,
                            "required": i.required, "default": json_of(&i.default_json),
                            "example": json_of(&i.example_json),
                        })).collect::<Vec<_>>(),
                        "example_input": serde_json::from_str::<Value>(&t.example_input_json).unwrap_or(Value::Null),
                        "steps": t.steps.iter().map(|s| json!({
                        "name": s.name, "tool": s.tool, "requires_approval": s.requires_approval,
                        "gate": (!s.gate.is_empty()).then_some(&s.gate),
                        "arguments": serde_json::from_str::<Value>(&s.arguments_template_json).unwrap_or(Value::Null),
                    })).collect::<Vec<_>>()})
                })
                .collect(),
        ));
        return Ok(());
    }
    let whole = args.name.is_some();
    for t in &templates {
        outln!("{} — {}", out.bold(&t.name), t.description);
        if !t.inputs.is_empty() {
            outln!("  inputs:");
            for i in &t.inputs {
                let need = if i.required {
                    "required".to_owned()
                } else {
                    match &i.default_json {
                        Some(default) => format!("default {default}"),
                        None => "optional".to_owned(),
                    }
                };
                let about = if i.description.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", i.description)
                };
                outln!("    {} ({}, {need}){about}", i.name, i.r#type);
                if whole && let Some(example) = &i.example_json {
                    outln!("      e.g. {example}");
                }
            }
        }
        outln!("  steps:");
        for (i, s) in t.steps.iter().enumerate() {
            let gate = if s.requires_approval {
                format!(
                    "  {}",
                    out.warn(&format!("(needs approval: gate {})", s.gate))
                )
            } else {
                String::new()
            };
            outln!("    {}. {} → {}{gate}", i + 1, s.name, s.tool);
        }
        if t.inputs.is_empty() {
            outln!("  run: conductorctl run {} --input FILE\n", t.name);
        } else {
            outln!(
                "  run: conductorctl run {} --input FILE   (FILE like {})\n",
                t.name,
                t.example_input_json
            );
        }
    }
    Ok(())
}

pub async fn tools(global: &Global) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let tools = client
        .rpc()
        .list_tools(pb::ListToolsRequest {})
        .await
        .answer(&client)?
        .tools;
    if out.json {
        print_json(&Value::Array(
            tools
                .iter()
                .map(|t| json!({"name": t.name, "server": t.server, "description": t.description,
                    "input_schema": serde_json::from_str::<Value>(&t.input_schema_json).unwrap_or(Value::Null)}))
                .collect(),
        ));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tools
        .iter()
        .map(|t| vec![t.name.clone(), t.server.clone(), clip(&t.description, 80)])
        .collect();
    outln!("{}", table(&out, &["TOOL", "SERVER", "DESCRIPTION"], &rows));
    Ok(())
}

pub async fn workflows(global: &Global, args: WorkflowsArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let request = pb::ListWorkflowsRequest {
        active_only: !args.all,
        limit: args.limit,
    };
    let list = client
        .rpc()
        .list_workflows(request)
        .await
        .answer(&client)?
        .workflows;
    if out.json {
        print_json(&Value::Array(list.iter().map(workflow_json).collect()));
    } else if list.is_empty() {
        outln!(
            "{}",
            if args.all {
                "no workflows yet"
            } else {
                "no active workflows (add --all for finished ones)"
            }
        );
    } else {
        outln!("{}", workflows_table(&out, &list));
    }
    Ok(())
}

pub async fn workflow(global: &Global, args: WorkflowArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let w = client
        .rpc()
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: args.id,
        })
        .await
        .answer(&client)?;
    if let Some(step) = &args.output {
        let outputs = step_outputs(&w);
        let Some((_, output)) = outputs.iter().find(|(name, _)| name == step) else {
            // A step that ran and failed has no output: its failure is what there is to show.
            let failed = w
                .history
                .iter()
                .rev()
                .find(|c| &c.step == step && c.outcome != pb::CallOutcome::Succeeded as i32);
            if let Some(call) = failed {
                let details = call
                    .error_details_json
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                    .and_then(|d| serde_json::to_string_pretty(&d).ok())
                    .map(|d| format!("\n  details: {}", d.replace('\n', "\n  ")))
                    .unwrap_or_default();
                return Err(CliError::Failed(format!(
                    "step {step:?} of workflow {} has no output: its {} call {}: {}{details}\n  see the whole history with `conductorctl workflow {}`",
                    w.id,
                    call.tool,
                    outcome(call.outcome),
                    if call.error_message.is_empty() { "no reason given" } else { &call.error_message },
                    w.id
                ))
                .into());
            }
            let known: Vec<&str> = outputs.iter().map(|(name, _)| name.as_str()).collect();
            return Err(CliError::Failed(format!(
                "workflow {} has no output of step {step:?}; the steps with outputs are: {}",
                w.id,
                if known.is_empty() {
                    "none yet".to_owned()
                } else {
                    known.join(", ")
                }
            ))
            .into());
        };
        print_json(output);
        return Ok(());
    }
    if out.json {
        print_json(&workflow_json(&w));
        return Ok(());
    }
    print_workflow(&out, &w);
    Ok(())
}

/// Each step's output on one line, and how to see one whole: for `workflow ID` and the end of `run`.
pub fn print_outputs(out: &Out, w: &pb::WorkflowInfo) {
    let outputs = step_outputs(w);
    if outputs.is_empty() {
        return;
    }
    outln!("{}", out.bold("outputs"));
    let width = outputs
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let room = out.width.unwrap_or(120).saturating_sub(width + 4).max(20);
    for (name, value) in &outputs {
        outln!("  {name:<width$}  {}", summary(value, room));
    }
    let first = &outputs[0].0;
    outln!(
        "{}",
        out.dim(&format!(
            "  (whole: conductorctl workflow {} --output {first}, or --json for all)",
            w.id
        ))
    );
}

/// One workflow with its history, for `workflow ID` and the interactive `history`.
pub fn print_workflow(out: &Out, w: &pb::WorkflowInfo) {
    let what = if w.template.is_empty() {
        "ad-hoc workflow".to_owned()
    } else {
        format!("template {}", w.template)
    };
    outln!(
        "{} {} — {what}, {}",
        out.bold("workflow"),
        w.id,
        out.state(&durable_mark(workflow_state(w.state), w.not_yet_durable))
    );
    outln!(
        "  started {} by {}; {} {}; configuration {}",
        time_ms(w.started_at_ms),
        w.caller,
        duration_ms(w.duration_ms),
        if is_finished(w.state) {
            "in all"
        } else {
            "so far"
        },
        w.config_version
    );
    if w.steps_total > 0 {
        let next = if w.next_step.is_empty() {
            String::new()
        } else {
            format!("; next step: {}", w.next_step)
        };
        outln!("  steps {}/{}{next}", w.steps_done, w.steps_total);
    }
    if !w.error.is_empty() {
        outln!("  {} {}", out.bad("error:"), w.error);
    }
    if w.history.is_empty() {
        outln!("  no calls yet");
        print_outputs(out, w);
        return;
    }
    // Each call's trace, when any was traced: a reader can open it in the tracing system.
    let traced = w.history.iter().any(|c| !c.trace_id.is_empty());
    let rows: Vec<Vec<String>> = w
        .history
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let decision = c.decision.clone().unwrap_or_default();
            let mut why = violations(&decision).join("; ");
            if why.is_empty() {
                why = c.error_message.clone();
            }
            if !c.approval_id.is_empty() {
                why = format!("approval {} {why}", c.approval_id)
                    .trim_end()
                    .to_owned();
            }
            let mut row = vec![
                (i + 1).to_string(),
                if c.step.is_empty() {
                    c.tool.clone()
                } else {
                    format!("{} [{}]", c.tool, c.step)
                },
                decision_kind(decision.kind).to_owned(),
                durable_mark(outcome(c.outcome), c.not_yet_durable),
                duration_us(c.duration_us),
                why,
            ];
            if traced {
                row.push(c.trace_id.clone());
            }
            row
        })
        .collect();
    let mut headers = vec!["#", "CALL", "DECISION", "OUTCOME", "DURATION", "REASON"];
    if traced {
        headers.push("TRACE");
    }
    outln!("{}", table(out, &headers, &rows));
    if w.not_yet_durable || w.history.iter().any(|c| c.not_yet_durable) {
        outln!(
            "  {} what is marked 'not yet durable' is only queued in the audit log (or waits for its disk): a crash would take it back",
            out.warn("note:")
        );
    }
    // What the tool said was wrong, for each failed call that says (e.g. which record, which field).
    for (i, c) in w.history.iter().enumerate() {
        if let Some(details) = c.error_details_json.as_deref() {
            let whole = crate::present::result_value(details);
            outln!(
                "  {} #{} {}: {}",
                out.bad("details"),
                i + 1,
                c.tool,
                serde_json::to_string_pretty(&whole).unwrap_or_else(|_| whole.to_string())
            );
        }
    }
    print_outputs(out, w);
}

/// The decision of a call as JSON, for `call --json`.
pub fn decision_value(decision: Option<&pb::Decision>) -> Value {
    decision.map_or(Value::Null, decision_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 25 item 7: at 80 columns STARTED read `2026-12-…`.
    #[test]
    fn the_workflows_table_at_80_columns_keeps_the_start_time_whole() {
        let started = crate::output::now_ms();
        let workflow = pb::WorkflowInfo {
            id: "wf-1a2b3c4d5e6f".into(),
            template: "customer_onboarding".into(),
            state: pb::WorkflowState::Failed as i32,
            steps_done: 1,
            steps_total: 5,
            duration_ms: 1234,
            started_at_ms: started,
            caller: "control token".into(),
            error: "step validate failed: validation_failed: 2 of 3 records are invalid".into(),
            ..Default::default()
        };
        let out = Out {
            color: false,
            json: false,
            width: Some(80),
        };
        let text = workflows_table(&out, &[workflow]);
        let clock = short_time_ms(started);
        assert!(text.contains(&clock), "{clock} in\n{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    }
}
