//! Write-ahead, tried like a failing disk: while the audit log cannot be written, no tool is
//! called (the tool server sees nothing), callers are told why, health says NOT_SERVING, status and
//! /metrics say why; once the disk takes records again the orchestrator serves again by itself, the
//! chain verifies, and the state rebuilt from the log is the state that was live.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, Outcome};
use conductor_orchestrator::{Gateway, GatewayOptions};
use conductor_proto::v1 as pb;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

pub(crate) fn outbox_entries(h: &Harness) -> usize {
    let path = h.servers.data_dir.path().join("notification/outbox.jsonl");
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// The orchestrator's health, the same whether asked of its service or of the whole server (the
/// empty name, which `grpc_health_probe` and Kubernetes probes ask by default).
pub(crate) async fn health(h: &Harness) -> i32 {
    let channel = tonic::transport::Endpoint::from_shared(h.orchestrator.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let client = HealthClient::new(channel);
    let status = |service: &str| {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let mut client = client.clone();
        async move {
            client
                .check(request)
                .await
                .expect("health")
                .into_inner()
                .status
        }
    };
    // The two are set one after the other: a change may be seen half made, never for long.
    for _ in 0..200 {
        let named = status("conductor.v1.Orchestrator").await;
        if status("").await == named {
            return named;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the server's health never came to agree with the orchestrator's");
}

async fn metrics(h: &Harness) -> String {
    let url = format!("{}/metrics", h.orchestrator.http_url());
    let addr = h.orchestrator.http_addr;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect(&url);
    body
}

fn note(n: usize) -> serde_json::Value {
    json!({"channel": "log", "recipient": "ops", "body": format!("note {n}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tool_runs_while_the_audit_log_cannot_be_written() {
    let h = Harness::shipped().await;
    let workflow = h.start_workflow("", json!({})).await;
    h.call(&workflow, "send_notification", note(0))
        .await
        .expect("a call while the disk takes records");
    assert_eq!(outbox_entries(&h), 1);
    assert_eq!(health(&h).await, ServingStatus::Serving as i32);

    let audit = h.orchestrator.gateway.audit().clone();
    let audit_dir = h.orchestrator.audit_dir.display().to_string();
    audit.inject_full_disk(true);
    for n in 1..=20 {
        let refused = h
            .call(&workflow, "send_notification", note(n))
            .await
            .expect_err("no call runs while the log cannot be written");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains(&audit_dir)
                && refused.message().contains("No space left on device"),
            "the error names the audit directory and the OS error: {}",
            refused.message()
        );
    }
    assert_eq!(
        outbox_entries(&h),
        1,
        "the tool server saw no call while the audit log could not be written"
    );
    assert_eq!(health(&h).await, ServingStatus::NotServing as i32);
    let status = h
        .client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("status answers during an outage")
        .into_inner();
    assert!(
        status.audit_unwritable.contains("No space left on device"),
        "status says why: {status:?}"
    );
    assert!(metrics(&h).await.contains("conductor_audit_writable 0"));

    audit.inject_full_disk(false);
    wait_until("the orchestrator to serve again", || async {
        (health(&h).await == ServingStatus::Serving as i32).then_some(())
    })
    .await;
    h.call(&workflow, "send_notification", note(99))
        .await
        .expect("calls succeed again, without a restart");
    assert_eq!(outbox_entries(&h), 2);
    assert!(metrics(&h).await.contains("conductor_audit_writable 1"));

    // The record: the call in flight when the disk filled is there, decided and ended
    // 'unavailable', never started; the later ones were refused before anything changed, in the
    // state as in the log.
    let records = h.audit_records();
    let unavailable: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::CallFinished {
                outcome: Outcome::Unavailable,
                error,
                ..
            } => error.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    assert!(
        unavailable[0].contains("No space left on device"),
        "the ending says why the call did not run: {}",
        unavailable[0]
    );
    let delivered = records
        .iter()
        .filter(|r| matches!(&r.event, AuditEvent::CallFinished { tool, outcome: Outcome::Succeeded, .. } if tool == "send_notification"))
        .count();
    assert_eq!(delivered, outbox_entries(&h), "every delivery is recorded");
    let verified = conductor_audit::verify_dir(&h.orchestrator.audit_dir).expect("verify");
    assert!(verified.ok, "the chain continues intact: {verified:?}");
    // The compliance report tells the same story: two deliveries ran, one call never reached its tool.
    let report = h
        .client
        .clone()
        .compliance_report(pb::ComplianceReportRequest::default())
        .await
        .expect("report")
        .into_inner();
    assert_eq!(
        (report.ran.len(), report.not_run.len()),
        (2, 1),
        "{:?}",
        report.findings
    );
    assert!(
        report.findings[0].ends_with("1 allowed call(s) never reached their tool (unavailable)"),
        "{:?}",
        report.findings
    );

    // A restart rebuilds exactly the state that was live.
    let live = h.orchestrator.gateway.observe();
    let config_path = h.config_path();
    let audit_dir = h.orchestrator.audit_dir.clone();
    h.orchestrator.stop().await;
    let config = conductor_orchestrator::config::Config::load(&config_path).expect("config");
    let rebuilt = Gateway::start(GatewayOptions {
        config,
        config_path: Some(config_path),
        audit: conductor_audit::AuditOptions::new(audit_dir),
    })
    .await
    .expect("restart");
    assert_eq!(rebuilt.observe(), live);
    rebuilt.begin_shutdown();
    rebuilt.shutdown().await;
}

/// The disk fills while a call waits for a person: the decision cannot be made durable, so the
/// approver hears why and the call does not run; once the disk takes records again the log closes the
/// call as the state does, and nothing is left in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_the_disk_cannot_take_closes_the_waiting_call() {
    let h = Harness::shipped().await;
    let workflow = h.start_workflow("", json!({})).await;
    let call = h.spawn_call(&workflow, "restore_backup", json!({"name": "snap"}));
    let pending = h.wait_pending(&workflow).await;
    let gateway = &h.orchestrator.gateway;
    let audit = gateway.audit().clone();
    audit.inject_full_disk(true);
    let decided = gateway
        .decide_approval(&pending.id, true, "grpc:ops", "go")
        .await;
    assert!(
        decided.is_err(),
        "an approval that is not durable is not confirmed: {decided:?}"
    );
    let ended = call.await.expect("task");
    assert!(ended.is_err(), "the call did not run: {ended:?}");
    audit.inject_full_disk(false);
    wait_until("the orchestrator to serve again", || async {
        (health(&h).await == ServingStatus::Serving as i32).then_some(())
    })
    .await;
    let unfinished = gateway.observe().unfinished;
    assert!(unfinished.is_empty(), "calls left open: {unfinished:?}");
    let closed = h.audit_records().into_iter().any(|r| {
        matches!(&r.event, AuditEvent::CallFinished { tool, outcome: Outcome::Unavailable, .. } if tool == "restore_backup")
    });
    assert!(closed, "the log closes the call too");
}

/// A disk that hangs rather than fails: the writer is stuck in it and announces nothing, yet after
/// the audit log's `stall_after` (5 s) health says NOT_SERVING and new calls are refused with the
/// reason; when the disk returns, the call that waited completes and service resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audit_disk_is_not_serving_until_it_returns() {
    let h = Harness::shipped().await;
    let workflow = h.start_workflow("", json!({})).await;
    let audit = h.orchestrator.gateway.audit().clone();
    audit.inject_stall(true);
    let stuck = tokio::spawn({
        let h_client = h.client.clone();
        let workflow = workflow.clone();
        async move {
            h_client
                .clone()
                .call_tool(pb::WorkflowCallRequest {
                    workflow_id: workflow,
                    tool: "send_notification".into(),
                    arguments_json: note(1).to_string(),
                })
                .await
        }
    });
    wait_until("health to say NOT_SERVING", || async {
        (health(&h).await == ServingStatus::NotServing as i32).then_some(())
    })
    .await;
    let refused = h
        .call(&workflow, "send_notification", note(2))
        .await
        .expect_err("no new call while the disk hangs");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("stalled disk"),
        "{}",
        refused.message()
    );
    assert!(
        !stuck.is_finished(),
        "the call whose record is stuck waits for it"
    );

    audit.inject_stall(false);
    stuck
        .await
        .expect("task")
        .expect("the waiting call completes once the disk returns");
    wait_until("the orchestrator to serve again", || async {
        (health(&h).await == ServingStatus::Serving as i32).then_some(())
    })
    .await;
    h.call(&workflow, "send_notification", note(3))
        .await
        .expect("calls succeed again");
}
