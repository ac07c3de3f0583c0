//! The cluster with real `orchestrator` processes on a real temporary PostgreSQL (issue 23's
//! tests): the fence holds against a node stopped by SIGSTOP past its lease, and killing the active
//! node with SIGKILL under load loses no answered call.

use crate::common;

use crate::cluster_standby::{note, on_postgres, two_columns};
use common::*;
use conductor_audit::testing::TempPostgres;
use conductor_proto::v1 as pb;
use conductor_servers::ServerKind;
use conductor_servers::testing::ToolServers;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The tool servers, and a configuration of theirs on database `name` with leases of 1 s,
/// written to a file in `dir`; and the database's URL.
async fn cluster_config(name: &str, dir: &Path) -> (ToolServers, PathBuf, String) {
    // This test's own HTTP client (the health path) speaks rustls too.
    conductor_proto::tls::install_provider();
    let (servers, config, url) = on_postgres(name, "1s").await;
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    (servers, path, url)
}

/// The code of a node's load-balancer health path (0 when it does not answer).
async fn health(http_url: &str) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    match client.get(format!("{http_url}/health/active")).send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

fn outbox(servers: &ToolServers) -> usize {
    let path = servers.data_dir.path().join("notification/outbox.jsonl");
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// What a workflow calls before the shipped rules let it write a backup.
type Step = (&'static str, fn() -> Value);
const BACKUP_STEPS: [Step; 2] = [
    (
        "validate_data",
        || json!({"records": customers(), "schema": "customer"}),
    ),
    ("process_data", || json!({"records": customers()})),
];

/// SPEC §9.8 with real processes: the active node A is stopped (SIGSTOP) past its lease while a
/// call to it waits in its socket; B takes over and serves. Continued, A appends nothing and
/// forwards nothing (the tool server saw only B's calls), refuses the waiting call, says in its
/// log that it lost the lease and steps down, and comes back as B's standby on the same
/// addresses, forwarding to B. No seq is written twice and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_past_its_lease_appends_and_forwards_nothing_then_steps_down() {
    let dir = tempfile::tempdir().unwrap();
    let (servers, config, url) = cluster_config("binaries_fence", dir.path()).await;
    let mut a = spawn_orchestrator_binary(&config, &dir.path().join("a"), &[]);
    let a_http = a.http_url();
    wait_until("A to be active", || async {
        (health(&a_http).await == 200).then_some(())
    })
    .await;
    let b = spawn_orchestrator_binary(&config, &dir.path().join("b"), &[]);
    let b_http = b.http_url();
    wait_until("B to be A's standby", || async {
        (health(&b_http).await == 429).then_some(())
    })
    .await;
    let mut a_client = connect(&a.url).await;
    let wf = a_client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("A serves")
        .into_inner()
        .id;
    let call = |n: u32| pb::WorkflowCallRequest {
        workflow_id: wf.clone(),
        tool: "send_notification".into(),
        arguments_json: note(n).to_string(),
    };
    a_client.call_tool(call(0)).await.expect("A serves");
    assert_eq!(outbox(&servers), 1);

    a.signal("STOP");
    // Sent while A is stopped: it waits in A's socket until A runs again.
    let waiting = {
        let mut a_client = a_client.clone();
        let request = call(1);
        tokio::spawn(async move { a_client.call_tool(request).await })
    };
    wait_until("B to take the lease over", || async {
        (health(&b_http).await == 200).then_some(())
    })
    .await;
    let mut b_client = connect(&b.url).await;
    b_client
        .call_tool(call(2))
        .await
        .expect("B, active now, serves A's workflow");
    assert_eq!(outbox(&servers), 2);

    a.signal("CONT");
    let refused = waiting
        .await
        .expect("task")
        .expect_err("the fenced node runs nothing");
    assert_eq!(outbox(&servers), 2, "the tool server saw nothing from A");
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        "{refused:?}"
    );
    a.wait_for_log("lost the PostgreSQL store's lease")
        .unwrap_or_else(|log| panic!("A says it lost the lease; its log: {log:#?}"));
    a.wait_for_log("stepped down")
        .unwrap_or_else(|log| panic!("A says it stepped down; its log: {log:#?}"));
    wait_until("A to come back as B's standby", || async {
        (health(&a_http).await == 429).then_some(())
    })
    .await;
    let mut a_client = connect(&a.url).await;
    a_client
        .call_tool(call(3))
        .await
        .expect("A, a standby now, forwards to B");
    assert_eq!(outbox(&servers), 3, "the forwarded call ran once, on B");

    let db = TempPostgres::client(&url).await.unwrap();
    let twice: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT seq FROM audit_records GROUP BY seq HAVING count(*) > 1) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "no seq written twice");
    each_call_ends_once(&url).await;
    let verified = b_client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    a.kill();
    b.kill();
}

/// Issue 23's failover under load, with real processes: 16 clients call through whichever node
/// they last reached (moving to the other when a call fails); five times the active node is
/// killed with SIGKILL and started again (as a standby). Every call answered with success has its
/// intent and its outcome in the table, the chain verifies, and a fresh node's rebuild of the
/// table equals the active node's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_node_under_load_loses_no_answered_call() {
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (servers, config, url) = cluster_config("binaries_kill", dir.path()).await;
    let audit_dir = |n: usize| dir.path().join(format!("node-{n}"));
    let mut nodes = vec![spawn_orchestrator_binary(&config, &audit_dir(0), &[])];
    let first_http = nodes[0].http_url();
    wait_until("the first node to be active", || async {
        (health(&first_http).await == 200).then_some(())
    })
    .await;
    nodes.push(spawn_orchestrator_binary(&config, &audit_dir(1), &[]));
    let urls = Arc::new(Mutex::new(
        nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>(),
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let backups = Arc::new(Mutex::new(Vec::<String>::new()));
    let notified = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (urls, stop, answered, backups, notified) = (
            urls.clone(),
            stop.clone(),
            answered.clone(),
            backups.clone(),
            notified.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut node = client % 2;
            let mut workflow: Option<String> = None;
            // One client in four writes backups, an exclusive group: it validates and processes
            // first, as the rules want, then calls `create_backup` over and over.
            let wanted = if client % 4 == 0 { BACKUP_STEPS.len() } else { 0 };
            let mut steps = BACKUP_STEPS[..wanted].iter().peekable();
            let mut n = 0;
            while !stop.load(Ordering::Acquire) {
                let url = urls.lock().unwrap()[node].clone();
                n += 1;
                let (tool, arguments) = match steps.peek() {
                    Some((tool, arguments)) => (*tool, arguments()),
                    None if client % 4 == 0 => (
                        "create_backup",
                        json!({"name": format!("kill-{client}"), "data": {"n": n}, "overwrite": true}),
                    ),
                    None => (
                        "send_notification",
                        note(u32::try_from(client * 100_000 + n).unwrap()),
                    ),
                };
                let attempt = async {
                    let channel = tonic::transport::Endpoint::from_shared(url)
                        .ok()?
                        .connect_timeout(std::time::Duration::from_secs(1))
                        .timeout(std::time::Duration::from_secs(10))
                        .connect()
                        .await
                        .ok()?;
                    let mut api = pb::orchestrator_client::OrchestratorClient::new(channel);
                    let wf = match &workflow {
                        Some(wf) => wf.clone(),
                        None => {
                            api.start_workflow(pb::StartWorkflowRequest::default())
                                .await
                                .ok()?
                                .into_inner()
                                .id
                        }
                    };
                    workflow = Some(wf.clone());
                    let answer = api
                        .call_tool(pb::WorkflowCallRequest {
                            workflow_id: wf,
                            tool: tool.into(),
                            arguments_json: arguments.to_string(),
                        })
                        .await;
                    match answer {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            Some(
                                matches!(
                                    answer.outcome,
                                    Some(pb::workflow_call_response::Outcome::ResultJson(_))
                                )
                                .then_some(answer.call_id),
                            )
                        }
                        // Refused by a rule (the exclusive group was busy): an answer.
                        Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                            Some(None)
                        }
                        Err(_) => None,
                    }
                };
                match attempt.await {
                    Some(Some(call_id)) => {
                        if steps.next().is_none() {
                            match tool {
                                "create_backup" => backups.lock().unwrap().push(call_id.clone()),
                                _ => {
                                    notified.fetch_add(1, Ordering::Relaxed);
                                }
                            };
                        }
                        answered.lock().unwrap().push(call_id);
                    }
                    Some(None) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    None => {
                        node = 1 - node;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }

    for round in 0..ROUNDS {
        let before = answered.lock().unwrap().len();
        wait_until("calls to be answered", || async {
            (answered.lock().unwrap().len() >= before + 20).then_some(())
        })
        .await;
        let mut active = None;
        for (i, node) in nodes.iter().enumerate() {
            if health(&node.http_url()).await == 200 {
                active = Some(i);
            }
        }
        let active = active.unwrap_or_else(|| panic!("round {round}: no active node"));
        let killed = nodes.remove(active);
        killed.kill();
        let other_http = nodes[0].http_url();
        wait_until("the other node to take over", || async {
            (health(&other_http).await == 200).then_some(())
        })
        .await;
        let restarted = spawn_orchestrator_binary(&config, &audit_dir(active), &[]);
        urls.lock().unwrap()[active] = restarted.url.clone();
        nodes.insert(active, restarted);
    }
    let before = answered.lock().unwrap().len();
    wait_until("calls after the last round", || async {
        (answered.lock().unwrap().len() > before).then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    for client in clients {
        client.await.expect("client task");
    }

    // Every answered call has its intent and its outcome in the table.
    let db = TempPostgres::client(&url).await.unwrap();
    let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in db
        .query(
            "SELECT kind, record FROM audit_records WHERE kind IN ('call_decided', 'call_finished')",
            &[],
        )
        .await
        .unwrap()
    {
        let record: Value = row.get(1);
        if let Some(call_id) = find_call_id(&record) {
            kinds.entry(call_id).or_default().insert(row.get(0));
        }
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > ROUNDS * 20, "{} answered", answered.len());
    for call_id in &answered {
        let seen = kinds.get(call_id).cloned().unwrap_or_default();
        assert!(
            seen.contains("call_decided") && seen.contains("call_finished"),
            "answered call {call_id} has only {seen:?} in the table"
        );
    }
    let backups = backups.lock().unwrap().clone();
    assert!(
        outbox(&servers) >= notified.load(Ordering::Relaxed),
        "every answered notification reached the tool server"
    );

    // The exclusive group never ran twice at once, as the backup server saw its calls; and every
    // backup answered with success is one it ran.
    let mut ran: Vec<(u64, u64, String)> = servers
        .calls(ServerKind::Backup)
        .iter()
        .filter(|c| c["tool"] == "create_backup" || c["tool"] == "restore_backup")
        .map(|c| {
            (
                c["started_us"].as_u64().unwrap(),
                c["ended_us"].as_u64().unwrap(),
                c["call_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ran.sort();
    assert!(
        backups.len() > ROUNDS,
        "{} backups answered: the exclusive group was not exercised",
        backups.len()
    );
    for pair in ran.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "the exclusive group ran twice at once on the backup server: {pair:?}"
        );
    }
    let ran_ids: BTreeSet<&str> = ran.iter().map(|(_, _, id)| id.as_str()).collect();
    for call_id in &backups {
        assert!(
            ran_ids.contains(call_id.as_str()),
            "backup {call_id} was answered but the backup server has no record of running it"
        );
    }

    each_call_ends_once(&url).await;

    // The chain verifies, and a fresh node's rebuild of the table equals the active node's state.
    let active_http = {
        let mut found = None;
        for node in &nodes {
            if health(&node.http_url()).await == 200 {
                found = Some(node.url.clone());
            }
        }
        found.expect("an active node at the end")
    };
    let mut active = connect(&active_http).await;
    let verified = active
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.ok, "{verified:?}");
    let fresh = spawn_orchestrator_binary(&config, &dir.path().join("fresh"), &[]);
    let mut rebuilt = connect(&fresh.url).await;
    let last_seq = active
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
        .last_seq;
    wait_until("the fresh node to read the table", || {
        let mut rebuilt = rebuilt.clone();
        async move {
            let status = rebuilt
                .status(pb::StatusRequest::default())
                .await
                .ok()?
                .into_inner();
            (status.last_seq >= last_seq).then_some(())
        }
    })
    .await;
    let summary = |list: pb::ListWorkflowsResponse| {
        list.workflows
            .into_iter()
            .map(|w| (w.id, w.state, w.history.len()))
            .collect::<BTreeSet<_>>()
    };
    let on_active = summary(
        active
            .list_workflows(pb::ListWorkflowsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    let on_fresh = summary(
        rebuilt
            .list_workflows(pb::ListWorkflowsRequest::default())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(
        on_fresh, on_active,
        "a rebuild of the table is the active node's state"
    );
    fresh.kill();
    for node in nodes {
        node.kill();
    }
}

/// Every call in the table ended at most once: a node that takes over ends as interrupted only
/// what the old node left running, never a call of its own.
async fn each_call_ends_once(url: &str) {
    let twice: Vec<(Option<String>, i64)> = two_columns(
        url,
        "SELECT record->>'call_id', count(*) FROM audit_records WHERE kind = 'call_finished'
         GROUP BY 1 HAVING count(*) > 1",
    )
    .await;
    assert!(
        twice.is_empty(),
        "calls that ended more than once: {twice:?}"
    );
}

/// The `call_id` a record's event carries, wherever the record nests it.
fn find_call_id(value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map
            .get("call_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| map.values().find_map(find_call_id)),
        _ => None,
    }
}
