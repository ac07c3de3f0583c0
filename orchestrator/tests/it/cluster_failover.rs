//! Failover (issue 23, item 5), against a real temporary PostgreSQL: two in-process
//! orchestrators on one store, A active and B its warm standby; A stops renewing its lease (as if
//! paused), and once the lease has expired B takes it, reads to the last record and becomes the
//! active node with the state it already built.

use crate::audit_outage::outbox_entries;
use crate::cluster_standby::{
    active_and_standby, note, on_postgres, pending_on, status, two_columns,
};
use crate::common;

use common::*;
use conductor_audit::testing::TempPostgres;
use conductor_proto::v1 as pb;
use conductor_servers::testing::spawn_all;
use serde_json::json;

/// Failover (issue 23, item 5): the active node stops renewing its lease (as if paused); once the
/// lease has expired the standby takes it, reads to the last record and becomes the active node
/// with the state it already built: the same workflow goes on through it, the old node is fenced
/// out, the health path moves from 429 to 200, and the chain verifies across both epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_active_nodes_lease_expires() {
    let (servers, config, url) = on_postgres("orchestrator_standby_failover", "1s").await;
    // B finds the lease held (A renews it) and starts as A's standby rather than refusing.
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let mut b_client = connect(&b.grpc_url()).await;
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("A serves");
    let health = |url: String| async move {
        reqwest::get(format!("{url}/health/active"))
            .await
            .expect("health path")
            .status()
            .as_u16()
    };
    assert_eq!(health(b.http_url()).await, 429);

    a.orchestrator.gateway.audit().pause_lease_renewal(true);
    wait_until("B to become the active node", || async {
        (health(b.http_url()).await == 200).then_some(())
    })
    .await;
    assert_eq!(status(&mut b_client).await.standby, None);
    b_client
        .call_tool(pb::WorkflowCallRequest {
            workflow_id: wf.clone(),
            tool: "send_notification".into(),
            arguments_json: note(1).to_string(),
        })
        .await
        .expect("B serves A's workflow");
    let history = b_client
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: wf.clone(),
        })
        .await
        .expect("the workflow on B")
        .into_inner()
        .history;
    assert_eq!(history.len(), 2, "both calls, A's and B's: {history:?}");
    let refused = a
        .call(&wf, "send_notification", note(2))
        .await
        .expect_err("A is fenced out");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert_eq!(
        outbox_entries(&a),
        2,
        "A forwarded nothing after B took over"
    );

    let db = TempPostgres::client(&url).await.unwrap();
    let epochs: Vec<i64> = db
        .query("SELECT epoch FROM audit_records ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(epochs.first(), Some(&1));
    assert_eq!(epochs.last(), Some(&2), "{epochs:?}");
    let report = b_client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(report.ok, "{report:?}");
    b.stop().await;
}

/// A pending approval across failover (issue 23's test list): the standby lists it; once the
/// standby has taken over, the approval is still pending there, `approve` sent to it works, and
/// the call runs once. (An approve sent to a standby is forwarded: `cluster_forward`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_stays_pending_across_failover_and_is_approved_on_the_new_node() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("orchestrator_standby_approval")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let servers = spawn_all().await;
    let rules = json!([{ "id": "listing-needs-approval", "kind": "approval",
                         "tool": "list_backups", "timeout": "1m" }]);
    let mut config = config_with(&servers, rules, json!({}));
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": "1s"}});
    // B finds the lease held (A renews it) and starts as A's standby rather than refusing.
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let b_client = connect(&b.grpc_url()).await;

    let wf = a.start_workflow("", json!({})).await;
    let _waiting = a.spawn_call(&wf, "list_backups", json!({}));
    let pending = a.wait_pending(&wf).await;
    let decision = || pb::ApprovalDecisionRequest {
        approval_id: pending.id.clone(),
        approver: "alice".into(),
        reason: "fine".into(),
        ..Default::default()
    };
    let on_b = pending_on(&b_client, &wf).await;
    assert_eq!(on_b.id, pending.id);

    a.orchestrator.gateway.audit().pause_lease_renewal(true);
    wait_until("B to become the active node", || {
        let mut b_client = b_client.clone();
        async move { status(&mut b_client).await.standby.is_none().then_some(()) }
    })
    .await;
    let approved = wait_until("B to take the approval", || {
        let mut b_client = b_client.clone();
        let decision = decision();
        async move { b_client.approve(decision).await.ok() }
    })
    .await
    .into_inner();
    assert_eq!(approved.state, pb::ApprovalState::Approved as i32);
    let history = wait_until("the approved call to finish on B", || {
        let mut b_client = b_client.clone();
        let wf = wf.clone();
        async move {
            let history = b_client
                .get_workflow(pb::GetWorkflowRequest { workflow_id: wf })
                .await
                .ok()?
                .into_inner()
                .history;
            history
                .iter()
                .any(|c| c.outcome == pb::CallOutcome::Succeeded as i32)
                .then_some(history)
        }
    })
    .await;
    let ran = history
        .iter()
        .filter(|c| c.tool == "list_backups" && c.outcome == pb::CallOutcome::Succeeded as i32)
        .count();
    assert_eq!(ran, 1, "the approved call ran once: {history:?}");
    b.stop().await;
}

/// A node paused after it recorded a call's start and before it sent the call on (SPEC §9.8):
/// woken past its lease, by its own clock, it does not send the call, whose ending says why; the
/// tool server sees nothing. Here no other node took over, so its records still go in: the lease
/// ran out in the database too, and any standby could have taken it in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_recorded_before_the_lease_ran_out_is_not_sent_after() {
    let (servers, config, url) = on_postgres("orchestrator_lease_ran_out", "1s").await;
    let a = Harness::with_servers(servers, config).await;
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("A serves");
    assert!(a.orchestrator.gateway.audit().lease_in_force().is_ok());

    a.orchestrator.gateway.audit().pause_lease_renewal(true);
    wait_until("A's lease to run out by its own clock", || async {
        a.orchestrator
            .gateway
            .audit()
            .lease_in_force()
            .is_err()
            .then_some(())
    })
    .await;
    let refused = a
        .call(&wf, "send_notification", note(1))
        .await
        .expect_err("not sent");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("ran out before the call could be sent"),
        "{refused:?}"
    );
    assert_eq!(outbox_entries(&a), 1, "the tool server saw nothing more");

    let kinds: Vec<(String, Option<String>)> = two_columns(
        &url,
        "SELECT kind, record->>'outcome' FROM audit_records
         WHERE record->>'call_id' IN (SELECT record->>'call_id' FROM audit_records
                                      WHERE kind = 'call_decided' ORDER BY seq DESC LIMIT 1)
         ORDER BY seq",
    )
    .await;
    assert_eq!(
        kinds,
        [
            ("call_decided".into(), None),
            ("call_started".into(), None),
            ("call_finished".into(), Some("unavailable".into())),
        ],
        "recorded as started, then as not run"
    );
    // Renewing again, it serves again.
    a.orchestrator.gateway.audit().pause_lease_renewal(false);
    wait_until("A's lease to be renewed", || async {
        a.orchestrator
            .gateway
            .audit()
            .lease_in_force()
            .is_ok()
            .then_some(())
    })
    .await;
    a.call(&wf, "send_notification", note(2))
        .await
        .expect("A serves again");
    assert_eq!(outbox_entries(&a), 2);
}
