//! Template runs: drives a workflow's steps one after another through the same call path as any call,
//! and ends the workflow at the first step that fails or is denied.
//!
//! The driver keeps no state of its own: it reads the next step from the workflow, so a run rebuilt from
//! the audit log after a restart continues where it stopped.

use super::{CallResult, CallSpec, Gateway};
use crate::approval::Approval;
use crate::policy::Name;
use crate::template;
use crate::workflow::WorkflowState;
use tokio::task::JoinHandle;

/// A step call that was waiting for approval when the orchestrator stopped.
pub(crate) type ResumedStep = (CallSpec, Approval);

/// Starts the driver of a template workflow in a task of its own.
pub(crate) fn spawn(
    gateway: Gateway,
    workflow_id: Name,
    resumed: Option<ResumedStep>,
) -> JoinHandle<()> {
    let tasks = gateway.inner.tasks.clone();
    tasks.spawn(async move {
        match drive(&gateway, &workflow_id, resumed).await {
            Ok(()) | Err(crate::error::Error::ShuttingDown) => {}
            Err(e) => {
                tracing::warn!(workflow = %workflow_id, error = %e, "template run stopped");
                let _ = gateway
                    .finish_workflow(&workflow_id, WorkflowState::Failed, Some(e.to_string()))
                    .await;
            }
        }
    })
}

enum Next {
    Done,
    Stop,
    Step {
        index: usize,
        name: String,
        spec: CallSpec,
    },
    Broken(String),
}

async fn drive(
    gateway: &Gateway,
    workflow_id: &str,
    mut resumed: Option<ResumedStep>,
) -> Result<(), crate::error::Error> {
    loop {
        let (step_name, report) = match resumed.take() {
            Some((spec, approval)) => {
                let name = approval.step.clone().unwrap_or_default();
                (name, gateway.execute(spec, Some(approval)).await?)
            }
            None => match next_step(gateway, workflow_id) {
                Next::Done => {
                    gateway
                        .finish_workflow(workflow_id, WorkflowState::Completed, None)
                        .await?;
                    return Ok(());
                }
                Next::Stop => return Ok(()),
                Next::Broken(message) => {
                    gateway
                        .finish_workflow(workflow_id, WorkflowState::Failed, Some(message))
                        .await?;
                    return Ok(());
                }
                Next::Step { index, name, spec } => {
                    tracing::debug!(workflow = %workflow_id, step = index, %name, "running step");
                    (name, gateway.call(spec).await?)
                }
            },
        };
        let failure = match report.result {
            CallResult::Succeeded(_) => continue,
            CallResult::Failed(failure) => format!(
                "step {step_name:?} ({}) failed: {}: {}",
                report.tool, failure.code, failure.message
            ),
            CallResult::Denied(violations) => {
                let reasons: Vec<String> = violations
                    .iter()
                    .map(|v| format!("{} (rule {}; {})", v.message, v.rule_id, v.unblock_hint))
                    .collect();
                format!(
                    "step {step_name:?} ({}) was denied: {}",
                    report.tool,
                    reasons.join("; ")
                )
            }
        };
        gateway
            .finish_workflow(workflow_id, WorkflowState::Failed, Some(failure))
            .await?;
        return Ok(());
    }
}

/// Reads the next step and resolves its arguments from the input and earlier outputs.
fn next_step(gateway: &Gateway, workflow_id: &str) -> Next {
    let state = gateway.inner.state();
    let Some(workflow) = state.workflows.get(workflow_id) else {
        return Next::Stop;
    };
    if workflow.state.is_finished() {
        return Next::Stop;
    }
    let Some(template) = workflow.template.clone() else {
        return Next::Stop;
    };
    let index = workflow.steps_done;
    let Some(step) = template.steps.get(index) else {
        return Next::Done;
    };
    if let Some(last) = workflow.calls.latest_of_step(&step.name)
        && let crate::workflow::CallStatus::Finished {
            outcome: crate::audit::Outcome::Interrupted,
            ..
        } = last.status
    {
        return Next::Broken(format!(
            "step {:?} was interrupted by an orchestrator restart and its effect is unknown; start the template again",
            step.name
        ));
    }
    match template::resolve(&step.arguments, &workflow.input, &workflow.outputs) {
        Ok(arguments) => Next::Step {
            index,
            name: step.name.clone(),
            spec: CallSpec {
                workflow_id: workflow_id.to_owned(),
                tool: step.tool.to_string(),
                arguments,
                caller: workflow.caller.clone(),
                step: Some(index),
            },
        },
        Err(message) => Next::Broken(format!(
            "step {:?}: cannot build its arguments: {message}",
            step.name
        )),
    }
}
