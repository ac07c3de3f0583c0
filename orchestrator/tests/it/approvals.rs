//! Approval gates over real gRPC: approved, denied, timed out; the control token; the ledger.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{ApprovalVerdict, AuditEvent};
use conductor_proto::v1 as pb;
use serde_json::json;
use tonic::Request;

/// Only a gate on list_backups (approval in 2 s, for the time-out case), nothing else.
async fn gated(timeout: &str, control: serde_json::Value) -> Harness {
    let servers = conductor_servers::testing::spawn_all().await;
    let rules = json!([{ "id": "listing-needs-approval", "kind": "approval", "tool": "list_backups", "timeout": timeout }]);
    let mut config = config_with(&servers, rules, json!({}));
    config["control"] = control;
    Harness::with_servers(servers, config).await
}

fn decision(id: &str, approver: &str, reason: &str) -> pb::ApprovalDecisionRequest {
    pb::ApprovalDecisionRequest {
        approval_id: id.into(),
        approver: approver.into(),
        reason: reason.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_approved_call_runs_and_records_who_approved() {
    let h = gated("1m", json!({})).await;
    let wf = h.start_workflow("", json!({})).await;
    let call = h.spawn_call(&wf, "list_backups", json!({}));
    let pending = h.wait_pending(&wf).await;
    assert_eq!(pending.tool, "list_backups");
    assert_eq!(pending.gate, "listing-needs-approval");
    assert_eq!(pending.arguments_json, "{}");
    assert_eq!(pending.arguments_digest.len(), 64);
    assert_eq!(
        h.workflow(&wf).await.state,
        pb::WorkflowState::WaitingApproval as i32
    );

    let approved = h
        .client
        .clone()
        .approve(decision(&pending.id, "alice", "looks right"))
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(approved.state, pb::ApprovalState::Approved as i32);
    // Without credentials configured, the approver is anonymous; the name it gave is a label.
    assert_eq!(
        approved.decided_by,
        "anonymous (no credential; as \"alice\")"
    );
    let response = call.await.expect("task").expect("the call ran");
    assert_eq!(
        response.decision.as_ref().map(|d| d.approval_id.as_str()),
        Some(pending.id.as_str())
    );
    assert!(result_of(&response)["backups"].is_array());

    let again = h
        .client
        .clone()
        .approve(decision(&pending.id, "bob", ""))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(
        again
            .message()
            .contains("approved by anonymous (no credential; as \"alice\")"),
        "{}",
        again.message()
    );

    let decided = h.audit_records().into_iter().find_map(|r| match r.event {
        AuditEvent::ApprovalDecided {
            verdict,
            approver,
            reason,
            ..
        } => Some((verdict, approver, reason)),
        _ => None,
    });
    assert_eq!(
        decided,
        Some((
            ApprovalVerdict::Approved,
            "anonymous (no credential; as \"alice\")".to_owned(),
            "looks right".to_owned()
        ))
    );
    // The durable ledger on the approval server holds the decision too.
    let mut ledger = conductor_proto::v1::approval_ledger_client::ApprovalLedgerClient::new(
        h.servers
            .get(conductor_servers::ServerKind::Approval)
            .channel()
            .await,
    );
    let record = ledger
        .get_approval(pb::GetApprovalRequest {
            id: pending.id.clone(),
        })
        .await
        .expect("in the ledger")
        .into_inner();
    assert_eq!(
        (record.state, record.decided_by.as_str()),
        (
            pb::ApprovalState::Approved as i32,
            "anonymous (no credential; as \"alice\")"
        )
    );
}

/// A workflow cancelled right after one of its calls was approved, before the call ran: the call
/// does not run, its caller hears why, and the log closes it, so nothing stays in flight. Which of
/// the two wins varies from round to round; every round must end closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_approved_as_its_workflow_is_cancelled_ends_closed() {
    let h = gated("1m", json!({})).await;
    let gateway = &h.orchestrator.gateway;
    for _ in 0..20 {
        let wf = h.start_workflow("", json!({})).await;
        let call = h.spawn_call(&wf, "list_backups", json!({}));
        let pending = h.wait_pending(&wf).await;
        let _ = gateway
            .decide_approval(&pending.id, true, "grpc:alice", "fine")
            .await;
        gateway
            .cancel_workflow(&wf, "changed my mind", "grpc:ada")
            .await
            .expect("cancel");
        let _ = call.await.expect("task");
        let in_flight = gateway.observe().unfinished;
        assert!(in_flight.is_empty(), "calls left open: {in_flight:?}");
    }
}

#[tokio::test]
async fn a_denied_call_does_not_run_and_says_who_denied_it() {
    let h = gated("1m", json!({})).await;
    let wf = h.start_workflow("", json!({})).await;
    let call = h.spawn_call(&wf, "list_backups", json!({}));
    let pending = h.wait_pending(&wf).await;
    h.client
        .clone()
        .deny(decision(&pending.id, "bob", "not during the freeze"))
        .await
        .expect("deny");
    let status = call.await.expect("task").unwrap_err();
    let decision = denial(&status);
    assert_eq!(decision.violations[0].rule_kind, "approval");
    assert!(
        decision.violations[0]
            .message
            .contains("as \"bob\"): not during the freeze"),
        "{:?}",
        decision.violations
    );
    let ran = h
        .audit_records()
        .iter()
        .any(|r| matches!(r.event, AuditEvent::CallStarted { .. }));
    assert!(!ran, "a denied call never reaches its server");
}

#[tokio::test]
async fn an_approval_that_times_out_is_a_denial() {
    let h = gated("300ms", json!({})).await;
    let wf = h.start_workflow("", json!({})).await;
    let status = h.call(&wf, "list_backups", json!({})).await.unwrap_err();
    let decision = denial(&status);
    assert!(
        decision.violations[0]
            .message
            .contains("not approved in time"),
        "{:?}",
        decision.violations
    );
    let verdict = h.audit_records().into_iter().find_map(|r| match r.event {
        AuditEvent::ApprovalDecided {
            verdict, approver, ..
        } => Some((verdict, approver)),
        _ => None,
    });
    assert_eq!(
        verdict,
        Some((ApprovalVerdict::Expired, "system:timeout".to_owned()))
    );
    assert!(h.pending().await.is_empty());
}

#[tokio::test]
async fn control_rpcs_need_the_token_and_refusals_are_audited() {
    let h = gated("1m", json!({ "token": "s3cret" })).await;
    let wf = h.start_workflow("", json!({})).await;
    let call = h.spawn_call(&wf, "list_backups", json!({}));
    let pending = h.wait_pending(&wf).await;
    let missing = h
        .client
        .clone()
        .approve(decision(&pending.id, "mallory", ""))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    let mut wrong = Request::new(decision(&pending.id, "mallory", ""));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer guess".parse().expect("header"));
    assert_eq!(
        h.client.clone().approve(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated,
        "a wrong token is no credential"
    );
    let mut cancel = Request::new(pb::CancelWorkflowRequest {
        workflow_id: wf.clone(),
        reason: String::new(),
    });
    cancel
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().expect("header"));
    assert_eq!(
        h.client
            .clone()
            .cancel_workflow(cancel)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );

    let mut right = Request::new(decision(&pending.id, "alice", "ok"));
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().expect("header"));
    h.client
        .clone()
        .approve(right)
        .await
        .expect("approved with the token");
    call.await.expect("task").expect("call ran");
    let refused: Vec<String> = h
        .audit_records()
        .into_iter()
        .filter_map(|r| match r.event {
            AuditEvent::ControlRefused { action, .. } => Some(action),
            _ => None,
        })
        .collect();
    assert_eq!(refused, ["approve", "approve", "cancel"]);
}

#[tokio::test]
async fn deciding_needs_an_approver_and_a_known_id() {
    let h = gated("1m", json!({})).await;
    let status = h
        .client
        .clone()
        .approve(decision("ap-nope", "alice", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let wf = h.start_workflow("", json!({})).await;
    let call = h.spawn_call(&wf, "list_backups", json!({}));
    let pending = h.wait_pending(&wf).await;
    // The identity is the credential's (none here: anonymous); the caller header is a label.
    let mut request = Request::new(decision(&pending.id, "", ""));
    request
        .metadata_mut()
        .insert("x-conductor-caller", "carol".parse().expect("header"));
    let approved = h
        .client
        .clone()
        .approve(request)
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(
        approved.decided_by,
        "anonymous (no credential; as \"carol\")"
    );
    call.await.expect("task").expect("ran");
}
