//! Any node takes any request (issue 23, item 4), against a real temporary PostgreSQL: two
//! in-process orchestrators on one store, A active and B its warm standby. What would append,
//! sent to B, is forwarded to A and runs there once, recorded by A: gRPC starts, calls and
//! approvals, and MCP in both eras (a session opened through B lives on A). What B cannot forward
//! it refuses naming A: a request another node already forwarded, and any request while A cannot
//! be reached.

use crate::audit_outage::outbox_entries;
use crate::cluster_standby::{active_and_standby, note, on_postgres, pending_on, status};
use crate::common;
use crate::mcp_support::{
    call_in_session, call_outcome, open_session_as, raw_exchange, session_free_call,
};

use common::*;
use conductor_proto::v1 as pb;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_starts_calls_approvals_and_mcp_to_the_active_node() {
    let (servers, mut config, _) = on_postgres("orchestrator_forward", "3s").await;
    config["rules"]
        .as_array_mut()
        .expect("the shipped rules")
        .push(json!({"id": "listing-needs-approval", "kind": "approval",
                     "tool": "list_backups", "timeout": "1m"}));
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let mut b_client = connect(&b.grpc_url()).await;
    assert!(
        status(&mut b_client).await.standby.is_some(),
        "B is a standby"
    );

    // gRPC through B: the workflow and its call are A's, the tool ran once, A recorded it.
    let wf = b_client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("a start sent to B is forwarded to A")
        .into_inner()
        .id;
    b_client
        .call_tool(pb::WorkflowCallRequest {
            workflow_id: wf.clone(),
            tool: "send_notification".into(),
            arguments_json: note(0).to_string(),
        })
        .await
        .expect("a call sent to B runs on A");
    assert_eq!(outbox_entries(&a), 1, "the tool ran once");
    assert_eq!(a.workflow(&wf).await.history.len(), 1, "A holds the call");

    // An approval gate: the call waits on A; B shows it pending (from the table) and an approve
    // sent to B decides it on A; the call runs once.
    let waiting = {
        let mut b_client = b_client.clone();
        let wf = wf.clone();
        tokio::spawn(async move {
            b_client
                .call_tool(pb::WorkflowCallRequest {
                    workflow_id: wf,
                    tool: "list_backups".into(),
                    arguments_json: "{}".into(),
                })
                .await
        })
    };
    let pending = pending_on(&b_client, &wf).await;
    let approved = b_client
        .approve(pb::ApprovalDecisionRequest {
            approval_id: pending.id.clone(),
            approver: "alice".into(),
            reason: "through the standby".into(),
            ..Default::default()
        })
        .await
        .expect("an approve sent to B decides on A")
        .into_inner();
    assert_eq!(approved.state, pb::ApprovalState::Approved as i32);
    let ran = waiting
        .await
        .expect("task")
        .expect("the approved call answers through B")
        .into_inner();
    assert_eq!(
        ran.decision.as_ref().map(|d| d.approval_id.as_str()),
        Some(pending.id.as_str())
    );
    let history = a.workflow(&wf).await.history;
    assert_eq!(
        history.iter().filter(|c| c.tool == "list_backups").count(),
        1,
        "the approved call ran once: {history:?}"
    );

    // MCP through B, session-free: the call runs on A.
    let reply =
        session_free_call(b.http_addr, None, "forwarded", "send_notification", note(1)).await;
    call_outcome(&reply).unwrap_or_else(|e| panic!("a session-free call through B: {e}"));
    assert_eq!(outbox_entries(&a), 2);

    // MCP through B, a session: opened through B, it lives on A, and its calls go on through B
    // (and through A directly: it is one session).
    let session = open_session_as(b.http_addr, None).await;
    let reply = call_in_session(b.http_addr, None, &session, "send_notification", note(2)).await;
    call_outcome(&reply).unwrap_or_else(|e| panic!("a call in a session opened through B: {e}"));
    let reply = call_in_session(
        a.orchestrator.http_addr,
        None,
        &session,
        "send_notification",
        note(3),
    )
    .await;
    call_outcome(&reply).unwrap_or_else(|e| panic!("the same session on A: {e}"));
    assert_eq!(outbox_entries(&a), 4, "each MCP call ran once, on A");

    // B checks what no node would serve before it forwards anything: a request without `Host`
    // (the forwarded request would otherwise gain the active node's), a foreign `Host`, or an
    // absolute-form target naming a foreign authority.
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "send_notification", "arguments": note(9)}})
    .to_string();
    let headers = format!(
        "Connection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nContent-Length: {}\r\n",
        call.len()
    );
    for (what, head, status) in [
        ("no Host", "POST /mcp HTTP/1.1\r\n".to_owned(), 400),
        (
            "a foreign Host",
            "POST /mcp HTTP/1.1\r\nHost: evil.example\r\n".to_owned(),
            403,
        ),
        (
            "a foreign absolute-form authority",
            format!(
                "POST http://evil.example/mcp HTTP/1.1\r\nHost: {}\r\n",
                b.http_addr
            ),
            403,
        ),
    ] {
        let reply =
            raw_exchange(b.http_addr, format!("{head}{headers}\r\n{call}").as_bytes()).await;
        assert_eq!(reply.status, status, "{what}: {reply:?}");
    }
    assert_eq!(outbox_entries(&a), 4, "nothing refused at B ran on A");

    // A request another node already forwarded is refused, naming A, and runs nowhere.
    let mut looped = tonic::Request::new(pb::StartWorkflowRequest::default());
    looped
        .metadata_mut()
        .insert("conductor-forwarded-by", "standby".parse().unwrap());
    let refused = b_client
        .start_workflow(looped)
        .await
        .expect_err("a forwarded request is not forwarded again");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let a_grpc = a.orchestrator.grpc_addr.to_string();
    assert!(
        refused.message().contains("forwarded") && refused.message().contains(&a_grpc),
        "{}",
        refused.message()
    );

    // Reads stay B's own: its status says it is a standby, its state is A's.
    wait_until("B to apply every record A wrote", || {
        let mut b_client = b_client.clone();
        let mut a_client = a.client.clone();
        async move {
            let (on_a, on_b) = (status(&mut a_client).await, status(&mut b_client).await);
            (on_b.last_seq == on_a.last_seq).then_some(())
        }
    })
    .await;
    assert_eq!(
        b_client
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: wf.clone()
            })
            .await
            .expect("B reads the workflow")
            .into_inner()
            .history
            .len(),
        2
    );
    b.stop().await;
}

/// B forwards to the address A advertises; when nothing answers there, B says it could not reach
/// the active node, naming it, and nothing runs anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_cannot_reach_the_active_node_says_so_and_runs_nothing() {
    let (servers, mut config, _) = on_postgres("orchestrator_forward_unreachable", "3s").await;
    // Nothing listens at port 1: what A advertises (and B reads off the lease row) leads nowhere.
    config["store"]["postgres"]["advertise"] =
        json!({"grpc": "127.0.0.1:1", "http": "127.0.0.1:1"});
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let mut b_client = connect(&b.grpc_url()).await;
    let refused = b_client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect_err("nothing to forward to");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("could not reach the active node")
            && refused.message().contains("127.0.0.1:1"),
        "{}",
        refused.message()
    );
    let reply =
        session_free_call(b.http_addr, None, "forwarded", "send_notification", note(0)).await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert!(
        reply.body.contains("could not reach the active node"),
        "{reply:?}"
    );
    assert_eq!(outbox_entries(&a), 0, "nothing ran");
    assert_eq!(
        status(&mut a.client.clone()).await.active_workflows,
        0,
        "nothing started"
    );
    b.stop().await;
}

/// Every node seals MCP workflow handles with the cluster's one key (kept in the store): a handle
/// A gave out before a failover keeps its workflow on B after it, as a session-free client
/// carries on through any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_handle_given_out_before_a_failover_keeps_its_workflow_after_it() {
    let (servers, config, _) = on_postgres("orchestrator_forward_handles", "1s").await;
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let workflow_of = |reply: &crate::mcp_support::RawReply| {
        let result = call_outcome(reply).unwrap_or_else(|e| panic!("a session-free call: {e}"));
        let handle = result["_meta"]["io.conductorio/workflowHandle"]
            .as_str()
            .unwrap_or_else(|| panic!("the result carries its workflow's handle: {result}"))
            .to_owned();
        let workflow = handle
            .strip_prefix("wfh1.")
            .and_then(|rest| rest.rsplit_once('.'))
            .map(|(workflow, _)| workflow.to_owned())
            .expect("a handle names its workflow");
        (handle, workflow)
    };
    // Per-call workflows unless a handle is passed: the handle alone keeps the workflow.
    let first = session_free_call(
        a.orchestrator.http_addr,
        None,
        "agent",
        "send_notification",
        note(0),
    )
    .await;
    let (handle, workflow) = workflow_of(&first);

    a.orchestrator.gateway.audit().pause_lease_renewal(true);
    wait_until("B to become the active node", || async {
        let mut b_client = connect(&b.grpc_url()).await;
        status(&mut b_client).await.standby.is_none().then_some(())
    })
    .await;
    let mut arguments = note(1);
    arguments["conductorio_workflow"] = json!(handle);
    let after = session_free_call(b.http_addr, None, "agent", "send_notification", arguments).await;
    let (_, continued) = workflow_of(&after);
    assert_eq!(
        continued, workflow,
        "the handle kept its workflow across the failover"
    );
    b.stop().await;
}
