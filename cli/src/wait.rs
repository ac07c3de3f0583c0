//! `wait ID`: block until a workflow ends and say how it ended in the exit code, for scripts (as `argo
//! wait` and `temporal workflow result` do); `watch --workflow` ends the same way.
//!
//! Exit codes: 0 completed, 1 failed or cancelled, 124 still not finished when `--timeout` passed (as
//! `timeout(1)`), 3 cannot reach the orchestrator. The stream is opened before the workflow is read, so
//! a workflow that ends in between is never missed; a lost stream is followed by a fresh read.

use crate::cli::{Global, WaitArgs};
use crate::client::{Answer, CliError, Client};
use crate::output::{Out, duration_ms, print_json};
use crate::present::{is_finished, workflow_json, workflow_state};
use crate::watch::{Followed, Follower};
use conductor_proto::v1 as pb;

pub async fn wait(global: &Global, args: WaitArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let id = args.id.trim();
    let until = until_finished(&client, global, id);
    let finished = match args.timeout {
        None => until.await?,
        Some(limit) => match tokio::time::timeout(limit, until).await {
            Ok(finished) => finished?,
            Err(_) => {
                let now = get(&client, id).await?;
                return Err(CliError::TimedOut(format!(
                    "workflow {id} is still {} after {}: it keeps running; wait longer (--timeout) or follow it with `conductorctl watch --workflow {id}`",
                    workflow_state(now.state),
                    humantime::format_duration(limit)
                ))
                .into());
            }
        },
    };
    report_end(&out, &finished)
}

async fn get(client: &Client, id: &str) -> Result<pb::WorkflowInfo, CliError> {
    client
        .rpc()
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: id.to_owned(),
        })
        .await
        .answer(client)
}

/// Follows the workflow from now and returns it once it has finished (at once if it already has).
async fn until_finished(
    client: &Client,
    global: &Global,
    id: &str,
) -> Result<pb::WorkflowInfo, CliError> {
    let mut follower = Follower::start(client, global, Some(id.to_owned()), None).await?;
    loop {
        let workflow = get(client, id).await?;
        if is_finished(workflow.state) {
            return Ok(workflow);
        }
        loop {
            match follower.next().await {
                Followed::Event(event) if finishes(&event, id) => break,
                // Reconnected: what happened meanwhile is replayed, but a fresh read is simplest.
                Followed::Resumed(_) => break,
                _ => {}
            }
        }
    }
}

/// True when `event` is the end of workflow `id`.
pub fn finishes(event: &pb::WatchEvent, id: &str) -> bool {
    matches!(
        &event.body,
        Some(pb::watch_event::Body::Event(e))
            if e.workflow_id == id
                && matches!(e.event, Some(pb::audit_event::Event::WorkflowFinished(_)))
    )
}

/// Prints how a finished workflow ended (a line, or its JSON) and returns its exit: Ok when it
/// completed, [`CliError::Reported`] (exit 1) when it failed or was cancelled.
pub fn report_end(out: &Out, w: &pb::WorkflowInfo) -> anyhow::Result<()> {
    let completed = w.state == pb::WorkflowState::Completed as i32;
    if out.json {
        print_json(&workflow_json(w));
    } else {
        let steps = if w.steps_total > 0 {
            format!(", {}/{} steps", w.steps_done, w.steps_total)
        } else {
            String::new()
        };
        let error = if w.error.is_empty() {
            String::new()
        } else {
            format!(": {}", w.error)
        };
        outln!(
            "workflow {} {} after {}{steps}{error}",
            w.id,
            out.state(workflow_state(w.state)),
            duration_ms(w.duration_ms)
        );
        if !completed {
            outln!(
                "  see each call's decision and outcome with `conductorctl workflow {}`",
                w.id
            );
        }
    }
    if completed {
        Ok(())
    } else {
        Err(CliError::Reported.into())
    }
}
