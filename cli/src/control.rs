//! Single actions on the orchestrator: `call` (one tool through the policy engine), `cancel` and
//! `config reload`. [`call_tool`] is the one way the CLI calls a tool, shared with `demo` and
//! `interactive`: it turns a denial into a value and announces approval gates while the call waits.

use crate::cli::{CallArgs, CancelArgs, Global};
use crate::client::{Answer, CliError, Client, login_name};
use crate::output::{Out, duration_us, print_json};
use crate::present::{approval_json, decision_json, result_value, violations, workflow_json};
use conductor_proto::v1 as pb;
use conductor_proto::v1::workflow_call_response::Outcome;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

/// How often a waiting call looks for its approval request.
const GATE_POLL: Duration = Duration::from_millis(200);

/// How one call ended.
#[derive(Debug, Clone)]
pub enum Called {
    Succeeded {
        call_id: String,
        result: Value,
        duration_us: u64,
    },
    /// The tool ran and reported a failure (e.g. `validation_failed`).
    ToolFailed {
        call_id: String,
        code: String,
        message: String,
        details: Value,
    },
    /// A policy or a person refused it; it did not run.
    Denied {
        message: String,
        decision: pb::Decision,
    },
}

impl Called {
    pub fn to_json(&self, workflow_id: &str) -> Value {
        match self {
            Called::Succeeded {
                call_id,
                result,
                duration_us,
            } => {
                json!({"workflow_id": workflow_id, "call_id": call_id, "decision": "allow", "outcome": "succeeded", "duration_us": duration_us, "result": result})
            }
            Called::ToolFailed {
                call_id,
                code,
                message,
                details,
            } => {
                json!({"workflow_id": workflow_id, "call_id": call_id, "decision": "allow", "outcome": "failed", "error": {"code": code, "message": message, "details": details}})
            }
            Called::Denied { message, decision } => {
                json!({"workflow_id": workflow_id, "decision": decision_json(decision), "outcome": "denied", "message": message})
            }
        }
    }

    /// One or more lines for people: the decision, and the reason and hint of a denial.
    pub fn describe(&self, out: &Out, tool: &str) -> String {
        match self {
            Called::Succeeded { duration_us: d, .. } => format!(
                "{tool}: {} → {} in {}",
                out.ok("allowed"),
                out.ok("succeeded"),
                duration_us(*d)
            ),
            Called::ToolFailed {
                code,
                message,
                details,
                ..
            } => {
                let details = if details.is_null() {
                    String::new()
                } else {
                    format!(
                        "\n  details: {}",
                        crate::output::clip(&details.to_string(), 300)
                    )
                };
                format!(
                    "{tool}: {} → {} ({code}): {message}{details}",
                    out.ok("allowed"),
                    out.bad("failed")
                )
            }
            Called::Denied { decision, message } => {
                let reasons = violations(decision);
                let mut text = format!("{tool}: {}", out.bad("DENIED"));
                if reasons.is_empty() {
                    text.push_str(&format!(": {message}"));
                }
                for reason in reasons {
                    text.push_str(&format!("\n  reason: {reason}"));
                }
                text
            }
        }
    }
}

/// Calls `tool` in `workflow_id`. While the call waits at an approval gate, `on_gate` sees the request
/// once; with `auto_approve` the request is approved in the user's name (the demo).
pub async fn call_tool(
    client: &Client,
    workflow_id: &str,
    tool: &str,
    arguments: &Value,
    auto_approve: bool,
    on_gate: &mut dyn FnMut(&pb::ApprovalInfo),
) -> anyhow::Result<Called> {
    let request = pb::WorkflowCallRequest {
        workflow_id: workflow_id.to_owned(),
        tool: tool.to_owned(),
        arguments_json: arguments.to_string(),
    };
    let mut rpc = client.rpc();
    let call = rpc.call_tool(request);
    tokio::pin!(call);
    let mut seen = HashSet::new();
    let mut poll = tokio::time::interval(GATE_POLL);
    let answer = loop {
        tokio::select! {
            answer = &mut call => break answer,
            _ = poll.tick() => {
                let Ok(pending) = client.rpc().list_pending_approvals(pb::ListPendingApprovalsRequest {}).await else { continue };
                for approval in pending.into_inner().approvals {
                    if approval.workflow_id == workflow_id && approval.tool == tool && seen.insert(approval.id.clone()) {
                        on_gate(&approval);
                        if auto_approve {
                            let decision = pb::ApprovalDecisionRequest {
                                approval_id: approval.id.clone(),
                                approver: login_name(),
                                reason: "approved by conductorctl demo".into(),
                                arguments_digest: approval.arguments_digest.clone(),
                            };
                            client.rpc().approve(decision).await.answer(client)?;
                        }
                    }
                }
            }
        }
    };
    match answer.answer(client) {
        Ok(response) => Ok(match response.outcome {
            Some(Outcome::ResultJson(text)) => Called::Succeeded {
                call_id: response.call_id,
                result: result_value(&text),
                duration_us: response.duration_us,
            },
            Some(Outcome::Error(e)) => {
                let details = if e.details_json.is_empty() {
                    Value::Null
                } else {
                    result_value(&e.details_json)
                };
                Called::ToolFailed {
                    call_id: response.call_id,
                    code: e.code,
                    message: e.message,
                    details,
                }
            }
            None => Called::Succeeded {
                call_id: response.call_id,
                result: Value::Null,
                duration_us: response.duration_us,
            },
        }),
        Err(CliError::Denied { message, decision }) => Ok(Called::Denied {
            message,
            decision: *decision,
        }),
        Err(other) => Err(other.into()),
    }
}

/// Starts an ad-hoc workflow (no template) for a sequence of calls.
pub async fn start_ad_hoc(client: &Client) -> anyhow::Result<pb::WorkflowInfo> {
    let request = pb::StartWorkflowRequest {
        template: String::new(),
        input_json: "{}".into(),
        caller: String::new(),
    };
    Ok(client.rpc().start_workflow(request).await.answer(client)?)
}

/// Prints the waiting approval and how to decide it.
pub fn announce_gate(out: &Out, approval: &pb::ApprovalInfo) {
    eprintln!(
        "{} {} waits for approval {} (gate {}, sha256 {})\n    approve: conductorctl approve {}\n    deny:    conductorctl deny {} --reason \"...\"",
        out.warn("⏸"),
        approval.tool,
        out.bold(&approval.id),
        approval.gate,
        approval.arguments_digest,
        approval.id,
        approval.id
    );
    if !approval.why.is_empty() {
        eprintln!("    why:     {}", approval.why);
    }
}

pub async fn call(global: &Global, args: CallArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let arguments: Value = serde_json::from_str(&args.args)
        .map_err(|e| {
            CliError::Usage(format!(
                "--args is not valid JSON: {e}\n  write the arguments as one JSON object, e.g. --args '{{\"records\": []}}'"
            ))
        })?;
    if !arguments.is_object() {
        return Err(CliError::Usage(
            "--args must be a JSON object, e.g. '{\"records\": []}'".into(),
        )
        .into());
    }
    let client = Client::connect(global).await?;
    let one_call = args.workflow.is_none() && !args.keep;
    let workflow_id = match args.workflow {
        Some(id) => id,
        None => {
            let started = start_ad_hoc(&client).await?;
            if !out.json {
                outln!("started ad-hoc workflow {}", out.bold(&started.id));
            }
            started.id
        }
    };
    let called = call_tool(
        &client,
        &workflow_id,
        &args.tool,
        &arguments,
        false,
        &mut |a| {
            if out.json {
                eprintln!("{}", approval_json(a));
            } else {
                announce_gate(&out, a);
            }
        },
    )
    .await;
    // The workflow this command opened for its one call ends with it, whatever the call's fate.
    let ended = if one_call {
        let request = pb::EndWorkflowRequest {
            workflow_id: workflow_id.clone(),
            reason: "its one call ended (conductorctl call)".into(),
        };
        Some(client.rpc().end_workflow(request).await.is_ok())
    } else {
        None
    };
    let called = called?;
    if out.json {
        let mut value = called.to_json(&workflow_id);
        value["workflow_ended"] = json!(ended == Some(true));
        print_json(&value);
    } else {
        outln!("{}", called.describe(&out, &args.tool));
        if let Called::Succeeded { result, .. } = &called {
            outln!(
                "{}",
                serde_json::to_string_pretty(result).unwrap_or_default()
            );
        }
        match ended {
            Some(true) => outln!(
                "(ended its one-call workflow {workflow_id}; for several calls in one workflow: `conductorctl call TOOL --keep`, then `--workflow ID`)"
            ),
            Some(false) => {
                outln!("(could not end workflow {workflow_id}; it ends by itself when idle)")
            }
            None => outln!(
                "(continue with `conductorctl call TOOL --workflow {workflow_id} --args ...`)"
            ),
        }
    }
    match called {
        Called::Succeeded { .. } => Ok(()),
        _ => Err(CliError::Reported.into()),
    }
}

pub async fn cancel(global: &Global, args: CancelArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let request = pb::CancelWorkflowRequest {
        workflow_id: args.id,
        reason: args.reason.unwrap_or_default(),
    };
    let w = client
        .rpc()
        .cancel_workflow(request)
        .await
        .answer(&client)?;
    if out.json {
        print_json(&workflow_json(&w));
    } else {
        outln!("workflow {} {}: {}", w.id, out.state("cancelled"), w.error);
    }
    Ok(())
}

/// The problems of a refused configuration, one each, from the orchestrator's one-line message
/// (`invalid configuration: PATH: problem; PATH: problem`, the prefix sometimes twice). A problem
/// starts with its JSON path (no spaces before its colon); a `; ` inside one ("…; the configured tools
/// are: …") stays in it. None when the message is not of that form.
fn config_problems(message: &str) -> Option<Vec<String>> {
    const PREFIX: &str = "invalid configuration: ";
    let mut rest = message.strip_prefix(PREFIX)?;
    while let Some(inner) = rest.strip_prefix(PREFIX) {
        rest = inner;
    }
    let mut problems: Vec<String> = Vec::new();
    for part in rest.split("; ") {
        let starts_a_path = part
            .split_once(": ")
            .is_some_and(|(path, _)| !path.is_empty() && !path.contains(' '));
        match problems.last_mut() {
            Some(last) if !starts_a_path => {
                last.push_str("; ");
                last.push_str(part);
            }
            _ => problems.push(part.to_owned()),
        }
    }
    Some(problems)
}

pub async fn reload(global: &Global) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let r = client
        .rpc()
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .answer(&client)
        .map_err(|e| match e {
            CliError::Failed(message) => match config_problems(&message) {
                Some(problems) => CliError::Failed(format!(
                    "the orchestrator refused the configuration file and keeps the running one; {} problem(s):\n{}\n  fix them (`conductorctl policy check FILE` checks offline) and reload again",
                    problems.len(),
                    problems
                        .iter()
                        .map(|p| format!("  - {p}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                )),
                None => CliError::Failed(message),
            },
            other => other,
        })?;
    if out.json {
        print_json(
            &json!({"config_version": r.config_version, "previous_version": r.previous_version, "workflows_on_previous": r.workflows_on_previous}),
        );
    } else {
        outln!(
            "configuration {} → {} ({} running workflow(s) keep the previous version until they finish)",
            r.previous_version,
            r.config_version,
            r.workflows_on_previous
        );
    }
    Ok(())
}
