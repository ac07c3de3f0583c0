//! The approval server over gRPC: the ledger's rules and its durability across restarts.

use std::io::Write;

use conductor_proto::v1::approval_ledger_client::ApprovalLedgerClient;
use conductor_proto::v1::{
    ApprovalState, CreateApprovalRequest, DecideApprovalRequest, GetApprovalRequest,
    ListApprovalsRequest,
};
use conductor_servers::ServerKind;
use conductor_servers::testing::{RunningServer, spawn};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::call;

async fn ledger(server: &RunningServer) -> ApprovalLedgerClient<Channel> {
    ApprovalLedgerClient::new(server.channel().await)
}

fn create_request(id: &str) -> CreateApprovalRequest {
    CreateApprovalRequest {
        id: id.to_owned(),
        workflow_id: "wf-1".into(),
        tool: "create_backup".into(),
        arguments_json: r#"{"name":"daily"}"#.into(),
        arguments_digest: conductor_core::digest::approval_digest(&json!({"name": "daily"})),
        gate: "backup-needs-approval".into(),
        requested_by: "agent-7".into(),
        expires_at_ms: 0,
        call_id: format!("call-{id}"),
    }
}

fn decide(id: &str, decision: ApprovalState, by: &str) -> DecideApprovalRequest {
    DecideApprovalRequest {
        id: id.to_owned(),
        decision: decision as i32,
        decided_by: by.to_owned(),
        reason: "looks fine".into(),
    }
}

async fn pending_ids(client: &mut ApprovalLedgerClient<Channel>) -> Vec<String> {
    let list = client
        .list_approvals(ListApprovalsRequest { pending_only: true })
        .await
        .unwrap()
        .into_inner();
    list.approvals.into_iter().map(|a| a.id).collect()
}

#[tokio::test]
async fn a_request_must_carry_the_canonical_digest_of_its_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Approval, dir.path()).await;
    let mut client = ledger(&server).await;
    // Key order and spacing do not change the digest (RFC 8785).
    let mut reordered = create_request("c1");
    reordered.arguments_json = r#"{ "b": [1, 2.0], "a": "x" }"#.into();
    reordered.arguments_digest =
        conductor_core::digest::approval_digest(&json!({"a": "x", "b": [1, 2]}));
    client
        .create_approval(reordered)
        .await
        .expect("the canonical digest");
    let mut wrong = create_request("c2");
    wrong.arguments_json = r#"{"name":"weekly"}"#.into();
    let status = client.create_approval(wrong).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("RFC 8785"), "{status}");
    server.stop().await;
}

#[tokio::test]
async fn create_list_decide_and_refuse_a_second_decision() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Approval, dir.path()).await;
    let mut client = ledger(&server).await;

    let created = client
        .create_approval(create_request("a1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.state(), ApprovalState::Pending);
    assert!(created.requested_at_ms > 0);
    // Idempotent: the same id again returns the existing record.
    let mut retry = create_request("a1");
    retry.tool = "something_else".into();
    assert_eq!(
        client.create_approval(retry).await.unwrap().into_inner(),
        created
    );
    client.create_approval(create_request("a2")).await.unwrap();
    assert_eq!(pending_ids(&mut client).await, ["a1", "a2"]);

    let status = client
        .decide_approval(decide("a1", ApprovalState::Approved, "  "))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("decided_by"),
        "{}",
        status.message()
    );
    let status = client
        .decide_approval(decide("a1", ApprovalState::Pending, "alice"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let decided = client
        .decide_approval(decide("a1", ApprovalState::Approved, "alice"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decided.state(), ApprovalState::Approved);
    assert_eq!(decided.decided_by, "alice");
    assert!(decided.decided_at_ms >= created.requested_at_ms);
    assert_eq!(pending_ids(&mut client).await, ["a2"]);

    let status = client
        .decide_approval(decide("a1", ApprovalState::Denied, "bob"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("APPROVED") && status.message().contains("alice"),
        "{}",
        status.message()
    );
    let status = client
        .decide_approval(decide("nope", ApprovalState::Denied, "bob"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = client
        .get_approval(GetApprovalRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Agents can read through the ToolService, but it offers no way to decide.
    let read = call(&server, "get_approval", json!({"id": "a1"}))
        .await
        .ok();
    assert_eq!(read["state"], "APPROVED");
    assert_eq!(read["decided_by"], "alice");
    let listed = call(&server, "list_approvals", json!({"pending_only": true}))
        .await
        .ok();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["approvals"][0]["id"], "a2");
    let error = call(&server, "get_approval", json!({"id": "zzz"}))
        .await
        .tool_error();
    assert_eq!(error.code, "not_found");
    server.stop().await;
}

#[tokio::test]
async fn the_ledger_survives_restarts_and_a_torn_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Approval, dir.path()).await;
    let mut client = ledger(&server).await;
    for id in ["p1", "d1", "p2"] {
        client.create_approval(create_request(id)).await.unwrap();
    }
    client
        .decide_approval(decide("d1", ApprovalState::Denied, "carol"))
        .await
        .unwrap();
    drop(client);
    server.stop().await;

    let server = spawn(ServerKind::Approval, dir.path()).await;
    let mut client = ledger(&server).await;
    assert_eq!(pending_ids(&mut client).await, ["p1", "p2"]);
    let d1 = client
        .get_approval(GetApprovalRequest { id: "d1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d1.state(), ApprovalState::Denied);
    assert_eq!(d1.decided_by, "carol");
    drop(client);
    server.stop().await;

    // A crash in the middle of an append leaves a torn line: it is cut off, and the ledger works on.
    let path = dir.path().join("approvals.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(br#"{"event":"decided","id":"p1","sta"#)
        .unwrap();
    drop(file);

    let server = spawn(ServerKind::Approval, dir.path()).await;
    let mut client = ledger(&server).await;
    assert_eq!(pending_ids(&mut client).await, ["p1", "p2"]);
    client
        .decide_approval(decide("p1", ApprovalState::Expired, "orchestrator"))
        .await
        .unwrap();
    drop(client);
    server.stop().await;

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'));
    assert!(
        text.lines()
            .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
    );

    let server = spawn(ServerKind::Approval, dir.path()).await;
    let mut client = ledger(&server).await;
    assert_eq!(pending_ids(&mut client).await, ["p2"]);
    server.stop().await;
}
