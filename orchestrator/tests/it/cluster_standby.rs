//! A warm standby (issue 23, item 3), against a real temporary PostgreSQL: two in-process
//! orchestrators on one store; A takes the lease, B cannot and follows A. B's state is A's,
//! applied record by record (its workflows, a workflow, its status), and the load balancers'
//! health path says 200 on A and 429 on B, with B's gRPC health SERVING. (What B does with what
//! would append, it forwards to A: `cluster_forward`.)

use crate::audit_outage::outbox_entries;
use crate::common;

use common::*;
use conductor_audit::testing::TempPostgres;
use conductor_orchestrator::testing;
use conductor_proto::v1 as pb;
use conductor_servers::testing::spawn_all;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_follows_the_active_node_and_serves_its_reads() {
    // Long enough that a renewal delayed on a loaded machine never lets B take over here.
    let (servers, config, _) = on_postgres("orchestrator_standby", "3s").await;
    // B finds the lease held (A renews it) and starts as A's standby rather than refusing.
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let mut b_client = connect(&b.grpc_url()).await;

    // A call through A shows up in B, applied from the table: the same workflow, the same status.
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("A serves");
    assert_eq!(outbox_entries(&a), 1);
    let mut on_a = a.workflow(&wf).await;
    let a_seq = status(&mut a.client.clone()).await.last_seq;
    let on_b = wait_until("B to apply A's records", || {
        let mut b_client = b_client.clone();
        let wf = wf.clone();
        async move {
            let seen = status(&mut b_client).await.last_seq >= a_seq;
            let workflow = b_client
                .get_workflow(pb::GetWorkflowRequest { workflow_id: wf })
                .await
                .ok()?
                .into_inner();
            seen.then_some(workflow)
        }
    })
    .await;
    let mut on_b = on_b;
    // How long a running workflow has run is read off each node's clock when asked.
    (on_a.duration_ms, on_b.duration_ms) = (0, 0);
    assert_eq!(on_b, on_a, "B's workflow is A's, record by record");
    let listed = b_client
        .list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .expect("B lists workflows")
        .into_inner();
    assert!(
        listed.workflows.iter().any(|w| w.id == wf),
        "B lists A's workflow: {listed:?}"
    );
    let b_status = status(&mut b_client).await;
    let a_status = status(&mut a.client.clone()).await;
    assert_eq!(b_status.last_seq, a_status.last_seq);
    assert_eq!(b_status.active_workflows, a_status.active_workflows);
    assert!(b_status.audit_unwritable.is_empty(), "{b_status:?}");
    let standing = b_status
        .standby
        .clone()
        .expect("B's status says it is a standby");
    assert_eq!(standing.active_grpc, a.orchestrator.grpc_addr.to_string());
    assert!(standing.applied_seq >= a_seq, "{standing:?}");
    assert!(standing.problem.is_empty(), "{standing:?}");
    assert_eq!(a_status.standby, None, "A is active");

    let a_grpc = a.orchestrator.grpc_addr.to_string();

    // Health for load balancers: 200 on the active node, 429 on a healthy standby.
    let health = |url: String| async move {
        let answer = reqwest::get(format!("{url}/health/active"))
            .await
            .expect("health path");
        let code = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.expect("health body");
        (code, body)
    };
    let (a_code, a_body) = health(a.orchestrator.http_url()).await;
    assert_eq!(
        (a_code, &a_body["role"]),
        (200, &json!("active")),
        "{a_body}"
    );
    let (b_code, b_body) = health(b.http_url()).await;
    assert_eq!(b_code, 429, "{b_body}");
    assert_eq!(b_body["role"], "standby");
    assert_eq!(b_body["active_grpc"], a_grpc.as_str());
    assert_eq!(
        grpc_health(&b.grpc_url()).await,
        ServingStatus::Serving as i32
    );

    // B says how far behind it is.
    let metrics = reqwest::get(format!("{}/metrics", b.http_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(metrics.contains("conductor_standby 1"), "{metrics}");
    assert!(
        metrics.contains("conductor_standby_lag_records "),
        "{metrics}"
    );
    b.stop().await;
}

/// A (on `config`, which names the store) as the active node, and B, started after it on the same
/// configuration text, as its standby. Keep the directory while B runs.
pub(crate) async fn active_and_standby(
    servers: conductor_servers::testing::ToolServers,
    config: serde_json::Value,
) -> (Harness, testing::RunningOrchestrator, tempfile::TempDir) {
    let a = Harness::with_servers(servers, config.clone()).await;
    let b_dir = tempfile::tempdir().unwrap();
    let text = serde_json::to_string_pretty(&config).unwrap();
    let b = testing::spawn(&text, None, b_dir.path())
        .await
        .expect("B starts as a standby");
    (a, b, b_dir)
}

pub(crate) async fn status(client: &mut Client) -> pb::StatusResponse {
    client
        .status(pb::StatusRequest::default())
        .await
        .expect("status")
        .into_inner()
}

async fn grpc_health(url: &str) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

/// A standby's `watch` (issue 23's test list): every event the active node committed, in order,
/// with no gap and no repeat, whether it was replayed from the table or applied live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standbys_watch_sees_every_event_the_active_node_committed_in_order() {
    use tokio_stream::StreamExt as _;

    let (servers, config, _) = on_postgres("orchestrator_standby_watch", "3s").await;
    // B finds the lease held (A renews it) and starts as A's standby rather than refusing.
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let mut b_client = connect(&b.grpc_url()).await;

    // Some records before B's watch begins (replayed from the table), more after (applied live).
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("A serves");
    let mut watch = b_client
        .watch(pb::WatchRequest {
            workflow_id: String::new(),
            from_seq: 1,
        })
        .await
        .expect("B's watch")
        .into_inner();
    for n in 1..6 {
        a.call(&wf, "send_notification", note(n))
            .await
            .expect("A serves");
    }
    let last = status(&mut a.client.clone()).await.last_seq;

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.last().copied().unwrap_or(0) < last {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .unwrap_or_else(|_| panic!("B's watch stopped at {seen:?}, A is at {last}"))
            .expect("the watch stream goes on")
            .expect("a watch event");
        assert!(
            !matches!(event.body, Some(pb::watch_event::Body::Lagged(_))),
            "B's watch lagged: {event:?}"
        );
        seen.push(event.seq);
    }
    let every: Vec<u64> = (1..=last).collect();
    assert_eq!(seen, every, "every committed seq once, in order");
    b.stop().await;
}

/// The load balancers' health path says 503 on both nodes while the store cannot be reached, and
/// 200 and 429 again by themselves once it can; the standby then follows on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_path_says_503_while_the_store_is_down_and_recovers_by_itself() {
    let server = TempPostgres::start().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("orchestrator_standby_outage")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let servers = spawn_all().await;
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": "1s"}});
    // B finds the lease held (A renews it) and starts as A's standby rather than refusing.
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let (a_url, b_url) = (a.orchestrator.http_url(), b.http_url());
    let code = |url: String| async move {
        reqwest::get(format!("{url}/health/active"))
            .await
            .expect("health path")
            .status()
            .as_u16()
    };
    assert_eq!(code(a_url.clone()).await, 200);
    assert_eq!(code(b_url.clone()).await, 429);

    server.stop().unwrap();
    for url in [&a_url, &b_url] {
        wait_until("the health path to say 503", || async {
            (code(url.clone()).await == 503).then_some(())
        })
        .await;
    }

    // Back: A renews its lease (200, and B 429 again) or, if the lease lapsed meanwhile, B took
    // it over (200) and A, fenced out, stays 503. Either way one node is active, by itself.
    server.start_again().unwrap();
    let b_took_over = wait_until("one node to be active again", || async {
        match (code(a_url.clone()).await, code(b_url.clone()).await) {
            (200, 429) => Some(false),
            (503, 200) => Some(true),
            _ => None,
        }
    })
    .await;
    let mut b_client = connect(&b.grpc_url()).await;
    if b_took_over {
        b_client
            .start_workflow(pb::StartWorkflowRequest::default())
            .await
            .expect("B, active now, serves");
        b.stop().await;
        return;
    }
    let wf = a.start_workflow("", json!({})).await;
    wait_until("B to follow on after the outage", || {
        let mut b_client = b_client.clone();
        let wf = wf.clone();
        async move {
            b_client
                .get_workflow(pb::GetWorkflowRequest { workflow_id: wf })
                .await
                .ok()
        }
    })
    .await;
    assert!(status(&mut b_client).await.standby.is_some());
    b.stop().await;
}

/// The shipped tool servers and a configuration of theirs on a database of its own (`name`) of the
/// run's shared PostgreSQL, with leases of `lease_ttl`; and that database's URL.
pub(crate) async fn on_postgres(
    name: &str,
    lease_ttl: &str,
) -> (
    conductor_servers::testing::ToolServers,
    serde_json::Value,
    String,
) {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database(name)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let servers = spawn_all().await;
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": lease_ttl}});
    (servers, config, url)
}

/// The approval pending for workflow `wf` as `client`'s node lists it, once it does.
pub(crate) async fn pending_on(client: &Client, wf: &str) -> pb::ApprovalInfo {
    wait_until("the node to list the pending approval", || {
        let mut client = client.clone();
        async move {
            client
                .list_pending_approvals(pb::ListPendingApprovalsRequest {})
                .await
                .ok()?
                .into_inner()
                .approvals
                .into_iter()
                .find(|p| p.workflow_id == wf)
        }
    })
    .await
}

/// The `n`th note of a test, as `send_notification`'s arguments.
/// The rows `sql` selects from database `url`, two columns each.
pub(crate) async fn two_columns<A, B>(url: &str, sql: &str) -> Vec<(A, B)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
{
    TempPostgres::client(url)
        .await
        .unwrap()
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

pub(crate) fn note(n: u32) -> serde_json::Value {
    json!({"channel": "log", "recipient": "ops", "body": format!("note {n}")})
}
