//! Write-ahead under SIGKILL: the real `orchestrator` binary is killed at random moments while
//! concurrent clients send notifications, and started again on the same audit log. Whatever the
//! moment, no tool call happens without a record: every notification the notification server
//! delivered has its intent (decision and `call_started`) in the log, and every intent without an
//! outcome at the kill is `interrupted` after the restart.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, DecisionKind, Outcome};
use conductor_proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const CLIENTS: usize = 8;
const KILLS: usize = 3;

fn random_below(bound: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % bound.max(1)
}

/// The bodies of every delivered notification.
fn delivered(outbox: &Path) -> Vec<String> {
    std::fs::read_to_string(outbox)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|entry| entry["body"].as_str().map(str::to_owned))
        .collect()
}

/// Per call id: the body it carries, whether its intent (allow + call_started) is recorded, and
/// how it ended.
#[derive(Debug, Default)]
struct Calls {
    body: HashMap<String, String>,
    started: HashSet<String>,
    finished: HashMap<String, Outcome>,
}

fn calls_in(audit: &Path) -> Calls {
    let mut calls = Calls::default();
    for record in read_audit_prefix(audit) {
        match record.event {
            AuditEvent::CallDecided {
                call_id,
                arguments,
                decision: DecisionKind::Allow,
                ..
            } => {
                if let Some(body) = arguments["body"].as_str() {
                    calls.body.insert(call_id, body.to_owned());
                }
            }
            AuditEvent::CallStarted { call_id, .. } => {
                calls.started.insert(call_id);
            }
            AuditEvent::CallFinished {
                call_id, outcome, ..
            } => {
                calls.finished.insert(call_id, outcome);
            }
            _ => {}
        }
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_tool_call_without_its_intent_in_the_log_whatever_the_kill() {
    let servers = conductor_servers::testing::spawn_all().await;
    let outbox = servers.data_dir.path().join("notification/outbox.jsonl");
    let config = shipped_config(&servers);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.path().join("audit");
    let sent = Arc::new(AtomicUsize::new(0));

    for round in 0..=KILLS {
        let daemon = spawn_orchestrator_binary(&config_path, &audit, &[]);
        if round > 0 {
            // Every intent left without an outcome by the last kill is now interrupted.
            let calls = calls_in(&audit);
            wait_until("the restart to settle unfinished calls", || async {
                let calls = calls_in(&audit);
                calls
                    .started
                    .iter()
                    .all(|c| calls.finished.contains_key(c))
                    .then_some(())
            })
            .await;
            let settled = calls_in(&audit);
            for call in calls
                .started
                .iter()
                .filter(|c| !calls.finished.contains_key(*c))
            {
                assert_eq!(
                    settled.finished.get(call),
                    Some(&Outcome::Interrupted),
                    "round {round}: {call} was started before the kill"
                );
            }
        }
        if round == KILLS {
            let _ = daemon.kill();
            break;
        }
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let url = daemon.url.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = connect(&url).await;
                let Ok(started) = client
                    .start_workflow(pb::StartWorkflowRequest::default())
                    .await
                else {
                    return;
                };
                let wf = started.into_inner().id;
                for i in 0.. {
                    let body = format!("round {round} client {c} note {i}");
                    let request = pb::WorkflowCallRequest {
                        workflow_id: wf.clone(),
                        tool: "send_notification".into(),
                        arguments_json: json!({"channel": "log", "recipient": "ops", "body": body})
                            .to_string(),
                    };
                    if client.call_tool(request).await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let target = sent.load(Ordering::Relaxed) + 20 + random_below(200) as usize;
        wait_until("calls acknowledged before the kill", || async {
            (sent.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
        let _ = daemon.kill();
        for task in tasks {
            let _ = task.await;
        }
        // Every delivered notification has its intent in the log.
        let calls = calls_in(&audit);
        let intents: HashSet<&str> = calls
            .body
            .iter()
            .filter(|(call, _)| calls.started.contains(*call))
            .map(|(_, body)| body.as_str())
            .collect();
        for body in delivered(&outbox) {
            assert!(
                intents.contains(body.as_str()),
                "round {round}: {body:?} was delivered without its intent in the audit log"
            );
        }
    }
    let verified = conductor_audit::verify_dir(&audit).expect("verify");
    assert!(verified.ok, "{verified:?}");
    assert!(!delivered(&outbox).is_empty());
}
