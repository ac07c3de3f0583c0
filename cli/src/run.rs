//! `run TEMPLATE`: starts a template run in the orchestrator and follows it over `Watch` with one line per
//! step (state and elapsed time) and a bar for the workflow; at an approval gate it says exactly how to
//! approve. Exit 0 when the workflow completes, 1 with the reason otherwise.
//!
//! [`follow_run`] is also what `demo templates` narrates with; it never drives the workflow itself (the
//! orchestrator does), it only shows it — except that a demo may approve its own gate.

use crate::cli::{Global, RunArgs};
use crate::client::{Answer, CliError, Client, login_name};
use crate::output::{Out, duration_us, print_json};
use crate::present::{outcome, verdict_word, violations, workflow_json};
use crate::progress::RunView;
use crate::status::print_outputs;
use crate::watch::{Followed, Follower, lost_note, resumed_note};
use anyhow::Context as _;
use conductor_proto::v1 as pb;
use pb::audit_event::Event;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

pub async fn run(global: &Global, args: RunArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    // A bad input is a usage error (exit 2), said before any connection is tried.
    let input = build_input(args.input.as_deref(), &args.set)
        .map_err(|e| CliError::Usage(format!("{e:#}")))?;
    let client = Client::connect(global).await?;
    let template = find_template(&client, &args.template).await?;
    let (started, last_seq) = start_run(&client, &template.name, &input).await?;
    if args.detach {
        if out.json {
            print_json(&workflow_json(&started));
        } else {
            outln!("{}", started.id);
            eprintln!(
                "follow it with `conductorctl watch --workflow {} --from {}`, or wait for its end with `conductorctl wait {}`",
                started.id,
                last_seq + 1,
                started.id
            );
        }
        return Ok(());
    }
    // Catch Ctrl-C from here on (the handler is installed now, not at the first poll), so a press at
    // any moment after the run started gets the note below rather than a silent exit.
    let mut interrupted =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut follower = Follower::start(
        &client,
        global,
        Some(started.id.clone()),
        Some(last_seq + 1),
    )
    .await?;
    let finished = tokio::select! {
        end = follow_run(&out, &template, &started.id, &mut follower, None) => end?,
        () = interrupt(&mut interrupted) => {
            eprintln!(
                "\nstopped following; workflow {id} keeps running in the orchestrator\n  follow it again: conductorctl watch --workflow {id}\n  see it:          conductorctl workflow {id}\n  cancel it:       conductorctl cancel {id}",
                id = started.id
            );
            return Err(CliError::Interrupted.into());
        }
    };
    let full = client
        .rpc()
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: started.id.clone(),
        })
        .await
        .answer(&client)?;
    if out.json {
        print_json(&workflow_json(&full));
    } else {
        print_outputs(&out, &full);
    }
    match finished {
        RunEnd::Completed => Ok(()),
        // The run's display has said why, once.
        RunEnd::Failed(_) => Err(CliError::Reported.into()),
    }
}

/// Completes on Ctrl-C; never, if the handler could not be installed.
async fn interrupt(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Starts a template run without waiting; returns the new workflow and the audit seq before it started
/// (follow from `seq + 1` to see every event of the run).
pub async fn start_run(
    client: &Client,
    template: &str,
    input: &Value,
) -> anyhow::Result<(pb::WorkflowInfo, u64)> {
    let last_seq = client
        .rpc()
        .status(pb::StatusRequest {})
        .await
        .answer(client)?
        .last_seq;
    let request = pb::RunTemplateRequest {
        template: template.to_owned(),
        input_json: input.to_string(),
        wait: false,
        caller: String::new(),
    };
    let started = match client.rpc().run_template(request).await {
        // The input does not match the template's declared inputs: nothing ran; say what to fix.
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            return Err(CliError::Usage(status.message().to_owned()).into());
        }
        other => other.answer(client)?,
    };
    Ok((started, last_seq))
}

/// How a followed run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Completed,
    /// `failed: <why>` or `cancelled: <why>`.
    Failed(String),
}

/// The template by name, or an error that lists the known ones.
pub async fn find_template(client: &Client, name: &str) -> anyhow::Result<pb::TemplateInfo> {
    let templates = client
        .rpc()
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .answer(client)?
        .templates;
    let known = templates
        .iter()
        .map(|t| t.name.clone())
        .collect::<Vec<_>>()
        .join(", ");
    templates
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| {
            CliError::Failed(format!(
                "unknown template {name:?}; the templates are: {known}"
            ))
            .into()
        })
}

/// The workflow input: the `--input` file's object, then each `--set key=value` (dotted keys nest; the
/// value is JSON when it parses as JSON, else text).
pub fn build_input(file: Option<&Path>, sets: &[String]) -> anyhow::Result<Value> {
    let mut input = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the input file {}", path.display()))?;
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        None => Value::Object(Map::new()),
    };
    if !input.is_object() {
        anyhow::bail!("the input must be a JSON object");
    }
    for set in sets {
        let (key, raw) = set
            .split_once('=')
            .with_context(|| format!("--set {set:?}: write key=value"))?;
        let value =
            serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let mut target = &mut input;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                anyhow::bail!("--set {set:?}: empty key");
            }
            let Some(map) = target.as_object_mut() else {
                anyhow::bail!("--set {set:?}: {part:?} is inside a value that is not an object")
            };
            if i + 1 == parts.len() {
                map.insert((*part).to_owned(), value.clone());
                break;
            }
            target = map
                .entry((*part).to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    Ok(input)
}

/// Shows a template run's progress until it ends. With `approve_as`, approves its own gates (the demo).
pub async fn follow_run(
    out: &Out,
    template: &pb::TemplateInfo,
    workflow_id: &str,
    follower: &mut Follower,
    approve_as: Option<&Client>,
) -> anyhow::Result<RunEnd> {
    let view = RunView::new(out, template, workflow_id);
    let mut step_of_call: HashMap<String, usize> = HashMap::new();
    loop {
        let event = match follower.next().await {
            Followed::Event(event) => event,
            Followed::Lost(reason) => {
                view.note(&lost_note(&reason));
                continue;
            }
            Followed::Resumed(seq) => {
                view.note(&resumed_note(seq));
                continue;
            }
        };
        let Some(pb::watch_event::Body::Event(e)) = event.body else {
            continue;
        };
        let Some(body) = e.event else { continue };
        match body {
            Event::CallDecided(c) => {
                let Some(index) = c
                    .step
                    .as_ref()
                    .and_then(|name| template.steps.iter().position(|s| &s.name == name))
                else {
                    continue;
                };
                step_of_call.insert(c.call_id.clone(), index);
                let decision = c.decision.unwrap_or_default();
                match pb::DecisionKind::try_from(decision.kind).unwrap_or_default() {
                    pb::DecisionKind::Deny => view.step_done(
                        index,
                        false,
                        &format!("denied: {}", violations(&decision).join("; ")),
                    ),
                    pb::DecisionKind::NeedsApproval => {
                        view.step_state(index, "needs approval", false)
                    }
                    _ => view.step_state(index, "allowed", false),
                }
            }
            Event::ApprovalRequested(a) => {
                let step = step_of_call.get(&a.call_id).copied();
                if let Some(index) = step {
                    view.step_state(
                        index,
                        &format!("waiting for approval {}", a.approval_id),
                        true,
                    );
                }
                let step_name =
                    step.map_or(String::new(), |i| format!(" {:?}", template.steps[i].name));
                view.note(&format!(
                    "{} step{step_name} ({}) waits for approval {}\n    approve: conductorctl approve {}\n    deny:    conductorctl deny {} --reason \"...\"",
                    out.warn("⏸"),
                    a.tool,
                    out.bold(&a.approval_id),
                    a.approval_id,
                    a.approval_id
                ));
                if let Some(client) = approve_as {
                    let request = pb::ApprovalDecisionRequest {
                        approval_id: a.approval_id.clone(),
                        approver: login_name(),
                        reason: "approved by conductorctl demo".into(),
                        arguments_digest: a.arguments_digest.clone(),
                    };
                    client.rpc().approve(request).await.answer(client)?;
                }
            }
            Event::ApprovalDecided(a) => {
                if let Some(&index) = step_of_call.get(&a.call_id) {
                    let word = verdict_word(a.verdict);
                    let said = format!("{word} by {}", a.approver);
                    if a.verdict == pb::ApprovalState::Approved as i32 {
                        view.step_state(index, &said, false);
                    } else {
                        // Denied or expired: the step is over, and it did not run.
                        let reason = if a.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", a.reason)
                        };
                        view.step_done(index, false, &format!("{said}{reason}"));
                    }
                }
            }
            Event::CallStarted(c) => {
                if let Some(&index) = step_of_call.get(&c.call_id) {
                    view.step_state(index, "running", true);
                }
            }
            Event::CallFinished(c) => {
                if let Some(&index) = step_of_call.get(&c.call_id) {
                    let succeeded = c.outcome == pb::CallOutcome::Succeeded as i32;
                    let detail = match (&c.error, succeeded) {
                        (Some(error), false) => format!(": {error}"),
                        _ => String::new(),
                    };
                    view.step_done(
                        index,
                        succeeded,
                        &format!(
                            "{} in {}{detail}",
                            outcome(c.outcome),
                            duration_us(c.duration_us)
                        ),
                    );
                    // The tool's own account of what was wrong (e.g. each invalid record), when the
                    // log carries it.
                    if let Some(details) = c
                        .tool_error
                        .as_ref()
                        .map(|t| &t.details_json)
                        .filter(|d| !d.is_empty())
                    {
                        let whole = crate::present::result_value(details);
                        let pretty = serde_json::to_string_pretty(&whole)
                            .unwrap_or_else(|_| whole.to_string());
                        // Every line of the JSON under the step, not only the first.
                        view.detail(&format!("    details: {}", pretty.replace('\n', "\n    ")));
                    }
                }
            }
            Event::WorkflowFinished(w) if e.workflow_id == workflow_id => {
                let why = w.error.unwrap_or_default();
                let end = match pb::WorkflowState::try_from(w.state).unwrap_or_default() {
                    pb::WorkflowState::Completed => RunEnd::Completed,
                    pb::WorkflowState::Cancelled => RunEnd::Failed(format!("was cancelled: {why}")),
                    _ => RunEnd::Failed(format!("failed: {why}")),
                };
                view.finish(&end, w.duration_ms.saturating_mul(1000));
                return Ok(end);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_merges_file_and_sets() {
        let dir = std::env::temp_dir().join(format!("conductorctl-input-{}", std::process::id()));
        std::fs::write(&dir, r#"{"batch":"a","n":1}"#).unwrap();
        let sets = [
            "batch=b".to_owned(),
            "n=2".to_owned(),
            "deep.er=x y".to_owned(),
            "list=[1,2]".to_owned(),
        ];
        let input = build_input(Some(&dir), &sets).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(
            input,
            serde_json::json!({"batch":"b","n":2,"deep":{"er":"x y"},"list":[1,2]})
        );
        assert!(build_input(None, &["novalue".to_owned()]).is_err());
    }
}
