//! Ad-hoc workflows end: when their owner says so (EndWorkflow), and by themselves once idle past
//! `workflows.idle_timeout`, recorded with the reason; template runs are left to end by themselves.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, WorkflowEnd};
use conductor_proto::v1 as pb;
use serde_json::json;

#[tokio::test]
async fn an_owner_ends_an_ad_hoc_workflow_and_a_template_run_cannot_be_ended() {
    let h = Harness::shipped().await;
    let wf = h.start_workflow("", json!({})).await;
    h.call(&wf, "list_schemas", json!({})).await.expect("call");
    let ended = h
        .client
        .clone()
        .end_workflow(pb::EndWorkflowRequest {
            workflow_id: wf.clone(),
            reason: "its one call ended".into(),
        })
        .await
        .expect("end")
        .into_inner();
    assert_eq!(ended.state, pb::WorkflowState::Completed as i32);
    assert_eq!(ended.error, "its one call ended");
    let refused = h.call(&wf, "list_schemas", json!({})).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    let run = h
        .start_workflow("order_summary", json!({"orders": []}))
        .await;
    let status = h
        .client
        .clone()
        .end_workflow(pb::EndWorkflowRequest {
            workflow_id: run,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("ends by itself"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_idle_ad_hoc_workflow_ends_by_itself_with_the_reason() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = shipped_config(&servers);
    config["workflows"] = json!({ "idle_timeout": "1s" });
    let h = Harness::with_servers(servers, config).await;
    let idle = h.start_workflow("", json!({})).await;
    h.call(&idle, "list_schemas", json!({}))
        .await
        .expect("call");
    let info = wait_until("the idle workflow to end", || async {
        let info = h.workflow(&idle).await;
        (info.state == pb::WorkflowState::Completed as i32).then_some(info)
    })
    .await;
    assert!(info.error.contains("idle for 1s"), "{}", info.error);
    let recorded = h.audit_records().into_iter().any(|r| {
        matches!(&r.event, AuditEvent::WorkflowFinished { workflow_id, state: WorkflowEnd::Completed, error: Some(e), .. }
            if *workflow_id == idle && e.contains("workflows.idle_timeout"))
    });
    assert!(recorded, "the ending is in the audit log with its reason");
}

/// With `workflows.calls_in_memory` 2, a workflow keeps only its latest calls in memory, and
/// GetWorkflow still shows every call, in order, the older ones read back from the audit log; the
/// rules still see the whole history (a call allowed only after one long out of memory runs).
#[tokio::test]
async fn get_workflow_shows_calls_older_than_those_in_memory_from_the_log() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = shipped_config(&servers);
    config["workflows"] = json!({ "calls_in_memory": 2 });
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;
    let records = json!([{ "id": "c-1", "name": "Ada", "email": "ada@example.com" }]);
    let validate = json!({ "records": records, "schema": "customer" });
    h.call(&wf, "validate_data", validate)
        .await
        .expect("validate");
    for _ in 0..4 {
        h.call(&wf, "list_schemas", json!({})).await.expect("call");
    }
    // process_data must follow validate_data, whose call is no longer in memory.
    h.call(&wf, "process_data", json!({ "records": records }))
        .await
        .expect("process_data is allowed after validate_data");
    let in_memory = h
        .orchestrator
        .gateway
        .workflow(&wf, true)
        .expect("the workflow")
        .calls
        .unwrap_or_default();
    assert_eq!(in_memory.len(), 2, "only the latest calls stay in memory");
    let info = h
        .client
        .clone()
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: wf.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.history.len(), 6, "{:?}", info.history);
    assert_eq!(info.history[0].tool, "validate_data");
    assert_eq!(info.history[5].tool, "process_data");
    let mut ids: Vec<&str> = info.history.iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(
        ids[4..],
        in_memory.iter().map(|c| &*c.call_id).collect::<Vec<_>>()[..],
        "the calls in memory come last"
    );
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "each call once");
    assert!(
        info.history
            .iter()
            .all(|c| c.outcome == pb::CallOutcome::Succeeded as i32),
        "{:?}",
        info.history
    );
}
