//! The orchestrator on the PostgreSQL store (issue 23's foundation), against a real temporary
//! PostgreSQL: a tool call's intent and outcome are rows of the table, nothing goes to local log
//! files, `audit query` and `audit verify` over the RPC read the database, and a restart rebuilds its state from
//! the table.

use crate::common;

use common::*;
use conductor_audit::testing::TempPostgres;
use conductor_orchestrator::testing;
use conductor_proto::v1 as pb;
use conductor_servers::testing::spawn_all;
use serde_json::json;

#[tokio::test]
async fn a_call_through_an_orchestrator_on_postgres_is_rows_in_the_table() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("orchestrator_call")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let servers = spawn_all().await;
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": "2s"}});
    let h = Harness::with_servers(servers, config.clone()).await;

    let wf = h.start_workflow("", json!({})).await;
    h.call(
        &wf,
        "validate_data",
        json!({"records": customers(), "schema": "customer"}),
    )
    .await
    .expect("validate runs");

    let db = TempPostgres::client(&url).await.unwrap();
    let rows = db
        .query(
            "SELECT kind, tool FROM audit_records WHERE workflow = $1 ORDER BY seq",
            &[&wf],
        )
        .await
        .unwrap();
    let rows: Vec<(String, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let position = |kind: &str| {
        rows.iter()
            .position(|(k, t)| k == kind && t.as_deref() == Some("validate_data"))
            .unwrap_or_else(|| panic!("no {kind} row for validate_data in {rows:?}"))
    };
    assert!(
        position("call_decided") < position("call_finished"),
        "the intent is written before the outcome: {rows:?}"
    );
    let queried = h
        .client
        .clone()
        .query_audit(pb::AuditQueryRequest {
            workflow_id: wf.clone(),
            ..Default::default()
        })
        .await
        .expect("query over the RPC")
        .into_inner();
    assert_eq!(
        queried.events.len(),
        rows.len(),
        "the query reads the rows: {queried:?}"
    );
    let audit_dir = h.dir.path().join("audit");
    let log_files = std::fs::read_dir(&audit_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(log_files, 0, "no local log files with the PostgreSQL store");

    let total: i64 = db
        .query_one("SELECT count(*) FROM audit_records", &[])
        .await
        .unwrap()
        .get(0);
    let verified = h
        .client
        .clone()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify over the RPC")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.records as i64, total);
    assert!(verified.message.contains("PostgreSQL"), "{verified:?}");

    // Stopped (the lease given up) and started again: the workflow comes back from the table.
    let Harness {
        servers,
        orchestrator,
        dir,
        ..
    } = h;
    orchestrator.stop().await;
    let text = config.to_string();
    let again = testing::spawn(&text, None, &dir.path().join("audit"))
        .await
        .expect("restarts on the same database");
    let mut client = connect(&again.grpc_url()).await;
    let workflow = client
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: wf.clone(),
        })
        .await
        .expect("the workflow is rebuilt from the table")
        .into_inner();
    assert_eq!(workflow.id, wf);
    again.stop().await;
    drop(servers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_refuses_calls_with_the_reason_and_service_resumes_by_itself() {
    use crate::audit_outage::{health, outbox_entries};
    use tonic_health::pb::health_check_response::ServingStatus;

    let server = TempPostgres::start().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("orchestrator_outage")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let servers = spawn_all().await;
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": "1s"}});
    let h = Harness::with_servers(servers, config).await;
    let note = |n: u32| json!({"channel": "log", "recipient": "ops", "body": format!("note {n}")});
    let wf = h.start_workflow("", json!({})).await;
    h.call(&wf, "send_notification", note(0))
        .await
        .expect("a call while the store takes records");
    assert_eq!(outbox_entries(&h), 1);
    assert_eq!(health(&h).await, ServingStatus::Serving as i32);

    server.stop().unwrap();
    wait_until("health to say NOT_SERVING", || async {
        (health(&h).await == ServingStatus::NotServing as i32).then_some(())
    })
    .await;
    let refused = h
        .call(&wf, "send_notification", note(1))
        .await
        .expect_err("no call runs while the store is down");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("PostgreSQL"),
        "the error names the store: {}",
        refused.message()
    );
    assert_eq!(outbox_entries(&h), 1, "the tool server saw no call");

    server.start_again().unwrap();
    wait_until("the orchestrator to serve again", || async {
        (health(&h).await == ServingStatus::Serving as i32).then_some(())
    })
    .await;
    h.call(&wf, "send_notification", note(2))
        .await
        .expect("calls succeed again, without a restart");
    assert_eq!(outbox_entries(&h), 2);

    // Every delivery is recorded, and the chain verifies from the database.
    let db = TempPostgres::client(&url).await.unwrap();
    let delivered: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_records WHERE kind = 'call_finished'
             AND tool = 'send_notification' AND record->>'outcome' = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 2);
    let verified = h
        .client
        .clone()
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
}

#[tokio::test]
async fn the_store_is_reached_over_tls_trusting_only_the_configured_ca() {
    use crate::test_ca::TestCa;
    let certs = tempfile::tempdir().unwrap();
    let ca = TestCa::new(certs.path(), "pg");
    let cert = ca.server("postgres");
    let server = TempPostgres::start_tls(&cert.cert_file, &cert.key_file)
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let socket_url = server
        .create_database("orchestrator_tls")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server.tls_url(&socket_url).expect("a TLS server");
    let servers = spawn_all().await;

    // A CA that did not sign the server's certificate: the orchestrator does not start.
    let other = TestCa::new(certs.path(), "other");
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "ca_file": other.ca_file}});
    let audit = tempfile::tempdir().unwrap();
    let refused = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .err()
        .expect("an untrusted server is refused");
    assert!(
        refused
            .to_string()
            .contains("PostgreSQL audit store failed while connecting"),
        "{refused}"
    );

    config["store"] = json!({"postgres": {"url": url, "ca_file": ca.ca_file}});
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;
    h.call(
        &wf,
        "validate_data",
        json!({"records": customers(), "schema": "customer"}),
    )
    .await
    .expect("validate runs");
    let db = TempPostgres::client(&socket_url).await.unwrap();
    let ssl: bool = db
        .query_one(
            "SELECT bool_or(ssl) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid)
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the orchestrator's connections are TLS");
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM audit_records WHERE workflow = $1",
            &[&wf],
        )
        .await
        .unwrap()
        .get(0);
    assert!(rows >= 2, "{rows}");
}

/// SPEC §9.8, in-process: a node paused past its lease (its renewals stopped, as by SIGSTOP)
/// while another takes over can neither append nor forward a call: the intent's batch is refused
/// inside its own transaction, so the tool server never sees the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_was_taken_over_forwards_no_call() {
    use crate::audit_outage::outbox_entries;

    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("orchestrator_fence")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let servers = spawn_all().await;
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": "1s"}});
    let a = Harness::with_servers(servers, config.clone()).await;
    let note = |n: u32| json!({"channel": "log", "recipient": "ops", "body": format!("note {n}")});
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("A serves while it holds the lease");
    assert_eq!(outbox_entries(&a), 1);

    // A stops renewing; B takes the lease once it has expired, reading A's records.
    a.orchestrator.gateway.audit().pause_lease_renewal(true);
    let b_dir = tempfile::tempdir().unwrap();
    let b = testing::spawn(&config.to_string(), None, b_dir.path())
        .await
        .expect("B starts");
    let mut b_client = connect(&b.grpc_url()).await;
    // B starts as A's standby and takes the lease over once A's has expired.
    wait_until("B to take the lease over", || {
        let mut b_client = b_client.clone();
        async move {
            let status = b_client
                .status(pb::StatusRequest::default())
                .await
                .ok()?
                .into_inner();
            status.standby.is_none().then_some(())
        }
    })
    .await;

    // A, unaware, takes a call: refused, and nothing reaches the tool server.
    let refused = a
        .call(&wf, "send_notification", note(1))
        .await
        .expect_err("A forwards nothing once its lease was taken");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("lost"), "{}", refused.message());
    assert_eq!(outbox_entries(&a), 1, "the tool server saw no call from A");

    // B serves the same workflow, rebuilt from the table.
    b_client
        .call_tool(pb::WorkflowCallRequest {
            workflow_id: wf.clone(),
            tool: "send_notification".into(),
            arguments_json: note(2).to_string(),
        })
        .await
        .expect("B serves");
    assert_eq!(outbox_entries(&a), 2);

    // No seq twice, and every epoch's records in order.
    let db = TempPostgres::client(&url).await.unwrap();
    let epochs: Vec<i64> = db
        .query("SELECT epoch FROM audit_records ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
    assert_eq!(epochs.first(), Some(&1));
    assert_eq!(epochs.last(), Some(&2));
    let report = b_client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(report.ok, "{report:?}");
    b.stop().await;
}
