//! Crash safety of the real `orchestrator` binary: SIGKILLed at random points under a load of concurrent
//! calls and started again on the same audit log, several times. Nothing a client saw acknowledged is
//! lost, the hash chain verifies, workflows and their histories resume, a pending approval stays pending
//! and approvable, a torn last line is repaired; a removed or inserted line stops the start unless
//! `--audit-recover`.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, Outcome};
use conductor_proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent clients, each in its own ad-hoc workflow.
const CLIENTS: usize = 16;
/// Kills (each followed by a restart on the same audit directory).
const KILLS: usize = 4;

/// A call a client saw acknowledged.
#[derive(Debug, Clone)]
struct Acked {
    workflow: String,
    call_id: String,
    tool: &'static str,
}

/// A fresh random number per call (std's randomly keyed hasher; no seed to manage).
fn random_below(bound: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % bound.max(1)
}

async fn call(
    client: &mut Client,
    wf: &str,
    tool: &str,
    args: Value,
) -> Result<pb::WorkflowCallResponse, tonic::Status> {
    let request = pb::WorkflowCallRequest {
        workflow_id: wf.into(),
        tool: tool.into(),
        arguments_json: args.to_string(),
    };
    client.call_tool(request).await.map(|r| r.into_inner())
}

fn is_result(response: &pb::WorkflowCallResponse) -> bool {
    matches!(
        response.outcome,
        Some(pb::workflow_call_response::Outcome::ResultJson(_))
    )
}

/// One client's loop: validate_data then process_data in its workflow, until the orchestrator goes away.
/// After a restart, a workflow whose validate_data was acknowledged earlier starts with process_data:
/// its history must still count.
async fn client_loop(
    mut client: Client,
    wf: String,
    validated_before: bool,
    acked: Arc<Mutex<Vec<Acked>>>,
) -> Result<(), String> {
    if validated_before {
        match call(
            &mut client,
            &wf,
            "process_data",
            json!({"records": customers()}),
        )
        .await
        {
            Ok(response) if is_result(&response) => push(&acked, &wf, response, "process_data"),
            Ok(response) => return Err(format!("{wf}: process_data after restart: {response:?}")),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(format!(
                    "{wf}: validate_data was acknowledged before the kill, yet process_data is denied: {status:?}"
                ));
            }
            Err(_) => return Ok(()),
        }
    }
    loop {
        let steps: [(&'static str, Value); 2] = [
            (
                "validate_data",
                json!({"records": customers(), "schema": "customer"}),
            ),
            (
                "process_data",
                json!({"records": customers(), "dedupe_by": "email"}),
            ),
        ];
        for (tool, args) in steps {
            match call(&mut client, &wf, tool, args).await {
                Ok(response) if is_result(&response) => push(&acked, &wf, response, tool),
                Ok(response) => return Err(format!("{wf}: {tool} gave no result: {response:?}")),
                // The kill: the connection goes (Unavailable/Unknown/Cancelled, whatever the moment).
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    return Err(format!("{wf}: {tool} denied under load: {status:?}"));
                }
                Err(_) => return Ok(()),
            }
        }
    }
}

fn push(
    acked: &Mutex<Vec<Acked>>,
    wf: &str,
    response: pb::WorkflowCallResponse,
    tool: &'static str,
) {
    acked.lock().expect("acked").push(Acked {
        workflow: wf.to_owned(),
        call_id: response.call_id,
        tool,
    });
}

async fn pending(client: &mut Client) -> Vec<pb::ApprovalInfo> {
    client
        .list_pending_approvals(pb::ListPendingApprovalsRequest {})
        .await
        .expect("list pending approvals")
        .into_inner()
        .approvals
}

/// The log's last file, where a crash can leave a torn line.
fn last_file(audit: &Path) -> PathBuf {
    std::fs::read_dir(audit)
        .expect("audit dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .max()
        .expect("an audit file")
}

/// After a kill: every acknowledged call is in the log with its `call_finished` (succeeded), and the
/// chain verifies (a torn last line is allowed: it was never acknowledged).
fn check_log_after_kill(audit: &Path, acked: &[Acked], round: usize) {
    let report = conductor_audit::verify_dir(audit).expect("verify");
    assert!(
        report.ok,
        "round {round}: the chain is broken after SIGKILL: {report:?}"
    );
    let records = read_audit_prefix(audit);
    let finished: HashMap<&str, (&str, Outcome)> = records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::CallFinished {
                call_id,
                workflow_id,
                outcome,
                ..
            } => Some((call_id.as_str(), (workflow_id.as_str(), *outcome))),
            _ => None,
        })
        .collect();
    for call in acked {
        assert_eq!(
            finished.get(call.call_id.as_str()),
            Some(&(call.workflow.as_str(), Outcome::Succeeded)),
            "round {round}: acknowledged {} call {} of {} is not in the log as succeeded",
            call.tool,
            call.call_id,
            call.workflow
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged_and_state_resumes() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = shipped_config(&servers);
    config["rules"].as_array_mut().expect("rules").push(
        json!({ "id": "list-gate", "kind": "approval", "tool": "list_backups", "timeout": "1h" }),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.path().join("audit");

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut workflows: Vec<String> = Vec::new();
    let mut approval: Option<(String, String)> = None;
    for round in 0..=KILLS {
        let daemon = spawn_orchestrator_binary(&config_path, &audit, &[]);
        let mut client = connect(&daemon.url).await;
        if round == 2 {
            let log = daemon.early.join("\n");
            assert!(
                log.contains("torn"),
                "round {round}: the torn line's repair is reported: {log}"
            );
        }
        if round == 0 {
            for _ in 0..CLIENTS {
                let wf = client
                    .start_workflow(pb::StartWorkflowRequest::default())
                    .await
                    .expect("start")
                    .into_inner()
                    .id;
                workflows.push(wf);
            }
        } else {
            // Every workflow is still there after the restart.
            for wf in &workflows {
                let info = client
                    .get_workflow(pb::GetWorkflowRequest {
                        workflow_id: wf.clone(),
                    })
                    .await
                    .unwrap_or_else(|s| panic!("round {round}: workflow {wf} lost: {s:?}"))
                    .into_inner();
                assert_eq!(&info.id, wf);
            }
        }
        // An approval requested before the first kill stays pending through every restart.
        match &approval {
            None => {
                let gated = client
                    .start_workflow(pb::StartWorkflowRequest::default())
                    .await
                    .expect("start")
                    .into_inner()
                    .id;
                let mut waiting_client = client.clone();
                let wf = gated.clone();
                // The waiting caller goes with the kill; the request stays.
                tokio::spawn(async move {
                    call(&mut waiting_client, &wf, "list_backups", json!({})).await
                });
                let info = wait_until("the approval request", || {
                    let mut client = client.clone();
                    let gated = gated.clone();
                    async move {
                        pending(&mut client)
                            .await
                            .into_iter()
                            .find(|a| a.workflow_id == gated)
                    }
                })
                .await;
                approval = Some((info.id, gated));
            }
            Some((id, gated)) => {
                let still = pending(&mut client).await;
                assert!(
                    still.iter().any(|a| &a.id == id && &a.workflow_id == gated),
                    "round {round}: approval {id} is no longer pending: {still:?}"
                );
            }
        }

        let validated: HashSet<String> = acked
            .lock()
            .expect("acked")
            .iter()
            .filter(|a| a.tool == "validate_data")
            .map(|a| a.workflow.clone())
            .collect();
        if round == KILLS {
            // The last start: no load, only the checks that need a live daemon.
            finish_last_round(
                &mut client,
                &workflows,
                &validated,
                approval.as_ref(),
                &audit,
                &acked,
            )
            .await;
            let _ = daemon.kill();
            break;
        }

        let before = acked.lock().expect("acked").len();
        let tasks: Vec<_> = workflows
            .iter()
            .map(|wf| {
                let run = client_loop(
                    client.clone(),
                    wf.clone(),
                    validated.contains(wf),
                    acked.clone(),
                );
                tokio::spawn(run)
            })
            .collect();
        // A random point: after 1..=120 more acknowledged calls, so calls are caught at every stage.
        let target = before + 1 + random_below(120) as usize;
        wait_until("acknowledged calls before the kill", || {
            let acked = acked.clone();
            async move { (acked.lock().expect("acked").len() >= target).then_some(()) }
        })
        .await;
        let _ = daemon.kill();
        for task in tasks {
            let ended = tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("a client hung after the kill")
                .expect("client task");
            ended.unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        let acked_now = acked.lock().expect("acked").clone();
        check_log_after_kill(&audit, &acked_now, round);
        eprintln!(
            "kill {}: {} calls acknowledged so far (killed after {} more)",
            round + 1,
            acked_now.len(),
            acked_now.len() - before
        );
        if round == 1 {
            // A crash mid-write leaves a torn last line; the next start must cut it off. It is
            // where the writer was writing: at the end of the content, before the zeros of a
            // prepared file (issue 26), or at the end of a plain one.
            use std::os::unix::fs::FileExt;
            let file = last_file(&audit);
            let bytes = std::fs::read(&file).expect("read the last file");
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .expect("open the last file")
                .write_all_at(b"{\"seq\":999999,\"ts_ms\":1,\"prev\":\"ab", end as u64)
                .expect("torn write");
        }
    }
    let report = conductor_audit::verify_dir(&audit).expect("verify");
    assert!(report.ok && report.torn_last_line.is_none(), "{report:?}");
    servers.stop().await;
}

/// The final start: histories still count, the approval is approvable and its call runs, the log
/// verifies through the daemon too.
async fn finish_last_round(
    client: &mut Client,
    workflows: &[String],
    validated: &HashSet<String>,
    approval: Option<&(String, String)>,
    audit: &Path,
    acked: &Mutex<Vec<Acked>>,
) {
    assert!(!validated.is_empty(), "some validate_data was acknowledged");
    for wf in workflows.iter().filter(|wf| validated.contains(*wf)) {
        let response = call(client, wf, "process_data", json!({"records": customers()}))
            .await
            .unwrap_or_else(|s| panic!("{wf}: the history did not survive: {s:?}"));
        assert!(is_result(&response), "{response:?}");
    }
    let (id, _) = approval.expect("an approval was requested");
    client
        .approve(pb::ApprovalDecisionRequest {
            approval_id: id.clone(),
            approver: "alice".into(),
            reason: "after several restarts".into(),
            ..Default::default()
        })
        .await
        .expect("still approvable");
    let approved_call = read_audit_prefix(audit)
        .into_iter()
        .find_map(|r| match r.event {
            AuditEvent::ApprovalRequested {
                approval_id,
                call_id,
                ..
            } if &approval_id == id => Some(call_id),
            _ => None,
        })
        .expect("the approval request is in the log");
    wait_until("the approved call to run", || async {
        read_audit_prefix(audit)
            .iter()
            .any(|r| matches!(&r.event, AuditEvent::CallFinished { call_id, outcome: Outcome::Succeeded, .. } if *call_id == approved_call))
            .then_some(())
    })
    .await;
    let verify = client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verify.ok, "{verify:?}");
    check_log_after_kill(audit, &acked.lock().expect("acked"), KILLS);
}

/// A log with some history, written by the real binary and stopped with SIGKILL.
async fn written_log(dir: &Path) -> (PathBuf, PathBuf) {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = shipped_config(&servers);
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.join("audit");
    let daemon = spawn_orchestrator_binary(&config_path, &audit, &[]);
    let mut client = connect(&daemon.url).await;
    for _ in 0..4 {
        let wf = client
            .start_workflow(pb::StartWorkflowRequest::default())
            .await
            .expect("start")
            .into_inner()
            .id;
        call(
            &mut client,
            &wf,
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        )
        .await
        .expect("validate");
    }
    let _ = daemon.kill();
    servers.stop().await;
    (config_path, audit)
}

/// Runs the binary to its exit (it must refuse to start) and returns its stderr.
fn refused_start(config: &Path, audit: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--audit-dir")
        .arg(audit)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the orchestrator");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "it started on a broken chain: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_inserted_line_stops_the_start_unless_told_to_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config_path, audit) = written_log(dir.path()).await;
    let file = last_file(&audit);
    let text = std::fs::read_to_string(&file).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 6, "enough history: {}", lines.len());
    let seq_of = |line: &str| {
        serde_json::from_str::<Value>(line).expect("line")["seq"]
            .as_u64()
            .expect("seq")
    };

    // The first bad seq is the one expected where the chain breaks. Removed: lines[4] stands where
    // lines[3]'s seq was expected.
    let mut removed = lines.clone();
    removed.remove(3);
    // Inserted: a copy of lines[1] stands where lines[5]'s seq was expected.
    let mut inserted = lines.clone();
    inserted.insert(5, lines[1]);
    for (what, tampered, bad_seq) in [
        ("removed", removed, seq_of(lines[3])),
        ("inserted", inserted, seq_of(lines[5])),
    ] {
        let copy = dir.path().join(format!("audit-{what}"));
        std::fs::create_dir(&copy).expect("copy dir");
        let name = file.file_name().expect("name");
        std::fs::write(copy.join(name), tampered.join("\n") + "\n").expect("write");
        let report = conductor_audit::verify_dir(&copy).expect("verify");
        assert!(!report.ok, "{what}: {report:?}");
        let stderr = refused_start(&config_path, &copy);
        assert!(
            stderr.contains(&format!("expected seq {bad_seq})")),
            "{what}: names the first bad record (seq {bad_seq}): {stderr}"
        );
        // Told to recover: it starts, keeps the damaged file aside, and its log verifies.
        let daemon = spawn_orchestrator_binary(&config_path, &copy, &["--audit-recover"]);
        let mut client = connect(&daemon.url).await;
        let verify = client
            .verify_audit(pb::VerifyAuditRequest::default())
            .await
            .expect("verify")
            .into_inner();
        assert!(verify.ok, "{what}: {verify:?}");
        let _ = daemon.kill();
        // The recovery itself is on the record: which files went aside, where the chain was cut, why.
        let recovered = read_audit_prefix(&copy)
            .into_iter()
            .find_map(|r| match r.event {
                AuditEvent::Recovered {
                    set_aside,
                    cut_seq,
                    reason,
                } => Some((set_aside, cut_seq, reason)),
                _ => None,
            });
        let (set_aside, cut_seq, reason) =
            recovered.unwrap_or_else(|| panic!("{what}: no `recovered` record"));
        assert_eq!(cut_seq, bad_seq, "{what}");
        assert!(
            set_aside.iter().all(|f| f.contains("damaged")) && !set_aside.is_empty(),
            "{what}: {set_aside:?}"
        );
        assert!(!reason.is_empty(), "{what}");
        let aside = std::fs::read_dir(&copy)
            .expect("dir")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("damaged"));
        assert!(aside, "{what}: the damaged file is kept aside");
        assert!(
            conductor_audit::verify_dir(&copy).expect("verify").ok,
            "{what}"
        );
    }
}
