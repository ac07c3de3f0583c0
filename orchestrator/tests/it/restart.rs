//! The real `orchestrator` binary killed with SIGKILL and started again on the same audit log: nothing
//! acknowledged is lost, a torn last line is repaired, pending approvals and workflow histories survive.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, Outcome};
use conductor_proto::v1 as pb;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The real binary on port 0 (see `common::spawn_orchestrator_binary`).
fn start(config: &Path, audit: &Path, extra: &[&str]) -> OrchestratorProcess {
    spawn_orchestrator_binary(config, audit, extra)
}

async fn call(
    client: &mut Client,
    wf: &str,
    tool: &str,
    args: serde_json::Value,
) -> Result<pb::WorkflowCallResponse, tonic::Status> {
    let request = pb::WorkflowCallRequest {
        workflow_id: wf.into(),
        tool: tool.into(),
        arguments_json: args.to_string(),
    };
    client.call_tool(request).await.map(|r| r.into_inner())
}

async fn start_workflow(client: &mut Client) -> String {
    client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("start")
        .into_inner()
        .id
}

#[tokio::test]
async fn state_survives_sigkill_and_a_torn_line_is_repaired() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = shipped_config(&servers);
    config["rules"].as_array_mut().expect("rules").push(
        json!({ "id": "list-gate", "kind": "approval", "tool": "list_backups", "timeout": "1h" }),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.path().join("audit");

    let daemon = start(&config_path, &audit, &[]);
    let mut client = connect(&daemon.url).await;
    let adhoc = start_workflow(&mut client).await;
    let acked = call(
        &mut client,
        &adhoc,
        "validate_data",
        json!({"records": customers(), "schema": "customer"}),
    )
    .await
    .expect("validate");
    let gated = start_workflow(&mut client).await;
    let waiting = {
        let mut client = client.clone();
        let gated = gated.clone();
        tokio::spawn(async move { call(&mut client, &gated, "list_backups", json!({})).await })
    };
    let pending = wait_until("the approval request", || {
        let mut client = client.clone();
        async move {
            client
                .list_pending_approvals(pb::ListPendingApprovalsRequest {})
                .await
                .ok()?
                .into_inner()
                .approvals
                .pop()
        }
    })
    .await;
    daemon.kill();
    assert!(
        waiting.await.expect("task").is_err(),
        "the waiting caller sees the orchestrator go"
    );

    // Every acknowledged call has its records in the log.
    let records = read_audit(&audit);
    let finished = records.iter().any(|r| matches!(&r.event, AuditEvent::CallFinished { call_id, outcome: Outcome::Succeeded, .. } if *call_id == acked.call_id));
    assert!(
        finished,
        "acknowledged call {} is in the log",
        acked.call_id
    );

    // A crash mid-write leaves a torn last line; the next start cuts it off and says so.
    let last_file = std::fs::read_dir(&audit)
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("a file");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&last_file)
        .expect("open")
        .write_all(b"{\"seq\":999,\"ts_ms\":1,\"pre")
        .expect("torn write");

    let daemon = start(&config_path, &audit, &[]);
    let mut client = connect(&daemon.url).await;
    let still = client
        .list_pending_approvals(pb::ListPendingApprovalsRequest {})
        .await
        .expect("pending")
        .into_inner()
        .approvals;
    assert_eq!(
        still.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        [pending.id.as_str()],
        "the approval is still pending"
    );
    let request = pb::ApprovalDecisionRequest {
        approval_id: pending.id.clone(),
        approver: "alice".into(),
        reason: "after restart".into(),
        ..Default::default()
    };
    client.approve(request).await.expect("still approvable");
    let approved_call = read_audit(&audit)
        .into_iter()
        .find_map(|r| match r.event {
            AuditEvent::ApprovalRequested {
                approval_id,
                call_id,
                ..
            } if approval_id == pending.id => Some(call_id),
            _ => None,
        })
        .expect("the request is in the log");
    wait_until("the approved call to run", || async {
        read_audit(&audit)
            .iter()
            .any(|r| matches!(&r.event, AuditEvent::CallFinished { call_id, outcome: Outcome::Succeeded, .. } if *call_id == approved_call))
            .then_some(())
    })
    .await;

    // The dependency satisfied before the restart still counts.
    call(
        &mut client,
        &adhoc,
        "process_data",
        json!({"records": customers()}),
    )
    .await
    .expect("history survived the restart");
    let verify = client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verify.ok, "{verify:?}");
    let log = daemon.kill().join("\n");
    assert!(log.contains("torn"), "the repair is reported: {log}");
}

#[tokio::test]
async fn the_binary_refuses_a_broken_chain_unless_told_to_recover() {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = shipped_config(&servers);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.path().join("audit");
    let daemon = start(&config_path, &audit, &[]);
    let mut client = connect(&daemon.url).await;
    for _ in 0..3 {
        start_workflow(&mut client).await;
    }
    daemon.kill();
    let file = std::fs::read_dir(&audit)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("file");
    let text = std::fs::read_to_string(&file).expect("read");
    let tampered = text.replacen("\"caller\":\"", "\"caller\":\"x", 1);
    assert_ne!(text, tampered);
    std::fs::write(&file, tampered).expect("tamper");

    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "--config",
            &config_path.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--audit-dir", &audit.display().to_string()])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("seq"),
        "names the first bad record: {stderr}"
    );

    let daemon = start(&config_path, &audit, &["--audit-recover"]);
    let mut client = connect(&daemon.url).await;
    assert!(
        client
            .verify_audit(pb::VerifyAuditRequest::default())
            .await
            .expect("verify")
            .into_inner()
            .ok
    );
    let aside = std::fs::read_dir(&audit)
        .expect("dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("damaged"));
    assert!(aside, "the damaged file is kept aside");
    daemon.kill();
}

#[tokio::test]
async fn sigterm_stops_cleanly_even_with_a_watch_stream_open() {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = shipped_config(&servers);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.path().join("audit");
    let mut daemon = start(&config_path, &audit, &[]);
    let mut client = connect(&daemon.url).await;
    let mut stream = client
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let wf = start_workflow(&mut client).await;
    let first = tokio_stream::StreamExt::next(&mut stream)
        .await
        .expect("an event")
        .expect("ok");
    assert!(first.seq > 0);
    let status = Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(exit) = daemon.child.try_wait().expect("wait") {
                return exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the orchestrator did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    })
    .await
    .expect("join");
    assert!(exit.success(), "exit status {exit:?}");
    // Everything it acknowledged is in the log, and the chain verifies.
    let records = read_audit(&audit);
    assert!(records.iter().any(|r| matches!(&r.event, AuditEvent::WorkflowStarted { workflow_id, .. } if *workflow_id == wf)));
    assert!(conductor_audit::verify_dir(&audit).expect("verify").ok);
}

#[test]
fn the_binary_refuses_an_invalid_configuration_and_says_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.json");
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("config/config.json")).expect("config"),
    )
    .expect("json");
    config["rules"][0]["after"] = json!(["validate_dta"]);
    std::fs::write(&path, config.to_string()).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args([
            "--config",
            &path.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args([
            "--audit-dir",
            &dir.path().join("audit").display().to_string(),
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rules[0].after[0]: unknown tool \"validate_dta\""),
        "{stderr}"
    );
    assert!(
        !dir.path().join("audit").exists(),
        "nothing is written before the configuration is valid"
    );
}
