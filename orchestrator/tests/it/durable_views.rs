//! What operators see of the audit log's durability: a reload answered as failed changes nothing,
//! views mark what a crash could still take back, and an orchestrator restarted on a log it cannot
//! write serves NOT_SERVING until it can, then resumes by itself.

use crate::common;

use common::*;
use conductor_orchestrator::audit::AuditEvent;
use conductor_proto::v1 as pb;
use serde_json::{Value, json};

async fn status(h: &Harness) -> pb::StatusResponse {
    h.client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("status answers during an outage")
        .into_inner()
}

/// Waits until the log takes records again (the writer retries by itself).
async fn writable_again(h: &Harness) {
    let gateway = &h.orchestrator.gateway;
    wait_until("the audit log to be writable again", || async {
        gateway.audit_state().unwritable.is_none().then_some(())
    })
    .await;
}

/// During an outage a reload is refused, and refused means refused: the running configuration
/// stays (in `status`, for new workflows and for their rules), also once the disk takes records
/// again; a `config_loaded` that was admitted before the disk failed is followed in the log by a
/// `config_refused` saying it never took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_log_cannot_keep_is_refused_and_changes_nothing() {
    let h = Harness::shipped().await;
    let version = status(&h).await.config_version;
    let mut stricter: Value =
        serde_json::from_str(&std::fs::read_to_string(h.config_path()).expect("config"))
            .expect("json");
    stricter["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({
            "id": "schemas-after-validate", "kind": "sequence",
            "tool": "list_schemas", "after": ["validate_data"]
        }));
    std::fs::write(h.config_path(), stricter.to_string()).expect("write");

    let audit = h.orchestrator.gateway.audit().clone();
    audit.inject_full_disk(true);
    // The first reload is admitted (nothing has failed yet) and its record fails on the disk; the
    // second is refused before anything is queued, since the log is known to be unwritable.
    for attempt in ["the record fails", "the log is unwritable"] {
        let refused = h
            .client
            .clone()
            .reload_config(pb::ReloadConfigRequest {})
            .await
            .expect_err(attempt);
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(
            status(&h).await.config_version,
            version,
            "a refused reload changed the running configuration ({attempt})"
        );
    }
    audit.inject_full_disk(false);
    writable_again(&h).await;

    assert_eq!(status(&h).await.config_version, version);
    let workflow = h.start_workflow("", json!({})).await;
    assert_eq!(h.workflow(&workflow).await.config_version, version);
    h.call(&workflow, "list_schemas", json!({}))
        .await
        .expect("the refused configuration's rule is not enforced");

    let records = h.audit_records();
    let loaded = records.iter().position(|r| {
        matches!(&r.event, AuditEvent::ConfigLoaded { config_version, .. } if *config_version != version)
    });
    let loaded = loaded.expect("the admitted record was written once the disk returned");
    let undone = records[loaded..].iter().any(|r| {
        matches!(&r.event, AuditEvent::ConfigRefused { problems, .. }
            if problems.iter().any(|p| p.contains("was not put in force") && p.contains(&version)))
    });
    assert!(
        undone,
        "the log says the loaded configuration never took effect"
    );
    let versions: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::ConfigLoaded { config_version, .. } => Some(config_version.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        versions.len(),
        2,
        "one start, one admitted reload: {versions:?}"
    );
}

/// A TCP relay to `target` that holds every connection until released: a call through it has its
/// intent durable and waits at the tool, so the test decides when the tool answers.
async fn held_relay(target: String) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (release, released) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut released = released.clone();
            let target = target.clone();
            tokio::spawn(async move {
                if released.wait_for(|r| *r).await.is_err() {
                    return;
                }
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, release)
}

/// D4: a call that ran while the disk filled is shown `succeeded` (that is what the state has
/// applied), but every view marks it, and its workflow, as not yet durable: a crash would take it
/// back. Once the disk takes the record the marks go, with nothing else changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_mark_what_is_not_yet_durable_until_the_disk_takes_it() {
    let servers = conductor_servers::testing::spawn_all().await;
    let notification = servers
        .get(conductor_servers::ServerKind::Notification)
        .url();
    let (relay, release) = held_relay(notification.trim_start_matches("http://").to_owned()).await;
    let mut config = shipped_config(&servers);
    config["servers"]["notification"]["grpc"] = json!(relay);
    let h = Harness::with_servers(servers, config).await;
    let workflow = h.start_workflow("", json!({})).await;
    h.call(&workflow, "list_schemas", json!({}))
        .await
        .expect("a call while the disk takes records");
    let settled = h.workflow(&workflow).await;
    assert!(!settled.not_yet_durable, "{settled:?}");
    assert!(settled.history.iter().all(|c| !c.not_yet_durable));

    let call = h.spawn_call(
        &workflow,
        "send_notification",
        json!({"channel": "log", "recipient": "ops", "body": "during the outage"}),
    );
    wait_until("the call's intent to be durable", || async {
        h.audit_records()
            .iter()
            .any(|r| matches!(&r.event, AuditEvent::CallStarted { tool, .. } if tool == "send_notification"))
            .then_some(())
    })
    .await;
    let audit = h.orchestrator.gateway.audit().clone();
    audit.inject_full_disk(true);
    release.send_replace(true);
    let told = call
        .await
        .expect("task")
        .expect_err("its outcome cannot be recorded");
    assert_eq!(told.code(), tonic::Code::Unavailable, "{told:?}");

    // What the state applied is shown, and marked: in the workflow, its history, the lists.
    let shown = h.workflow(&workflow).await;
    let sent = shown
        .history
        .iter()
        .find(|c| c.tool == "send_notification")
        .expect("the call is in the history");
    assert_eq!(sent.outcome, pb::CallOutcome::Succeeded as i32, "{sent:?}");
    assert!(
        sent.not_yet_durable,
        "the outcome a crash would take back is marked: {sent:?}"
    );
    assert!(shown.not_yet_durable, "{shown:?}");
    let earlier = shown.history.iter().find(|c| c.tool == "list_schemas");
    assert!(
        earlier.is_some_and(|c| !c.not_yet_durable),
        "a durable call is not marked: {earlier:?}"
    );
    let listed = h
        .client
        .clone()
        .list_workflows(pb::ListWorkflowsRequest {
            active_only: false,
            limit: 10,
        })
        .await
        .expect("workflows")
        .into_inner()
        .workflows;
    assert!(listed.iter().any(|w| w.id == workflow && w.not_yet_durable));
    let snapshot = status(&h).await;
    assert!(
        snapshot
            .workflows
            .iter()
            .any(|w| w.id == workflow && w.not_yet_durable),
        "{snapshot:?}"
    );
    assert!(snapshot.audit_queued > 0);

    audit.inject_full_disk(false);
    writable_again(&h).await;
    let durable = h.workflow(&workflow).await;
    assert!(!durable.not_yet_durable, "{durable:?}");
    let sent = durable
        .history
        .iter()
        .find(|c| c.tool == "send_notification")
        .expect("the call");
    assert_eq!(sent.outcome, pb::CallOutcome::Succeeded as i32);
    assert!(!sent.not_yet_durable, "{sent:?}");
    let recorded = h.audit_records().into_iter().any(|r| {
        matches!(&r.event, AuditEvent::CallFinished { tool, outcome: conductor_orchestrator::audit::Outcome::Succeeded, .. } if tool == "send_notification")
    });
    assert!(recorded, "the outcome shown is the one the log kept");
}

/// The health of the orchestrator at `url`, asked of its service and of the whole server (the
/// empty name, what probes ask), which are set together.
async fn health_of(url: &str) -> Option<i32> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let client = HealthClient::new(channel);
    let ask = |service: &str| {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let mut client = client.clone();
        async move {
            client
                .check(request)
                .await
                .ok()
                .map(|r| r.into_inner().status)
        }
    };
    let named = ask("conductor.v1.Orchestrator").await?;
    (ask("").await? == named).then_some(named)
}

/// D6: the real binary restarted on an audit log whose file cannot grow (the kernel refuses the
/// write with EFBIG, as a full disk refuses it with ENOSPC) starts anyway: health NOT_SERVING,
/// `status` says why, a new workflow is refused; once the file can grow again it serves by itself,
/// with its start-up record first and the chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_log_that_cannot_be_written_serves_not_serving_and_resumes() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let servers = conductor_servers::testing::spawn_all().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, shipped_config(&servers).to_string()).expect("config");
    let audit_dir = dir.path().join("audit");
    let first = spawn_orchestrator_binary(&config_path, &audit_dir, &[]);
    let mut client = connect(&first.url).await;
    client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("a workflow before the restart");
    first.kill();
    let file = std::fs::read_dir(&audit_dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("the log file");
    let size = std::fs::metadata(&file).expect("metadata").len();

    // The file may not grow past its size (soft limit; SIGXFSZ ignored, so the write fails).
    let limit = format!("--fsize={size}:unlimited");
    let restarted = spawn_orchestrator_binary_under(
        &[
            "sh",
            "-c",
            "trap '' XFSZ; exec prlimit \"$@\"",
            "sh",
            &limit,
            "--",
        ],
        &config_path,
        &audit_dir,
        &[],
    );
    let pid = restarted.child.id().to_string();
    wait_until("health to say NOT_SERVING", || async {
        (health_of(&restarted.url).await == Some(ServingStatus::NotServing as i32)).then_some(())
    })
    .await;
    let mut client = connect(&restarted.url).await;
    let said = client
        .status(pb::StatusRequest {})
        .await
        .expect("status answers")
        .into_inner();
    assert!(
        said.audit_unwritable.contains("File too large"),
        "status says why: {said:?}"
    );
    let refused = client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect_err("nothing new starts while the log cannot be written");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited"])
        .status()
        .expect("prlimit");
    assert!(raised.success());
    wait_until("the orchestrator to serve by itself", || async {
        (health_of(&restarted.url).await == Some(ServingStatus::Serving as i32)).then_some(())
    })
    .await;
    let resumed = client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("a workflow once the log can be written")
        .into_inner();
    assert!(!resumed.not_yet_durable, "{resumed:?}");
    restarted.kill();

    let records = read_audit_prefix(&audit_dir);
    let loaded = records
        .iter()
        .filter(|r| matches!(r.event, AuditEvent::ConfigLoaded { .. }))
        .count();
    assert_eq!(loaded, 2, "the start-up record waited and was written");
    let verified = conductor_audit::verify_dir(&audit_dir).expect("verify");
    assert!(verified.ok, "{verified:?}");
}

/// What a view marks is what a crash takes back: on the real binary, a call that ran while the log
/// file could not grow is shown `succeeded` and marked not yet durable; after kill -9 and a restart
/// it is `interrupted` (its effect unknown), as the log kept it, and nothing is marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_marked_not_yet_durable_is_what_a_kill_takes_back() {
    let servers = conductor_servers::testing::spawn_all().await;
    let notification = servers
        .get(conductor_servers::ServerKind::Notification)
        .url();
    let (relay, release) = held_relay(notification.trim_start_matches("http://").to_owned()).await;
    let mut config = shipped_config(&servers);
    config["servers"]["notification"]["grpc"] = json!(relay);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit_dir = dir.path().join("audit");
    // SIGXFSZ ignored, so that a write past the file-size limit set below fails instead of killing.
    let running = spawn_orchestrator_binary_under(
        &["sh", "-c", "trap '' XFSZ; exec \"$@\"", "sh"],
        &config_path,
        &audit_dir,
        &[],
    );
    let mut client = connect(&running.url).await;
    let workflow = client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("workflow")
        .into_inner()
        .id;
    let call = tokio::spawn({
        let mut client = client.clone();
        let workflow = workflow.clone();
        async move {
            client
                .call_tool(pb::WorkflowCallRequest {
                    workflow_id: workflow,
                    tool: "send_notification".into(),
                    arguments_json: json!({"channel": "log", "recipient": "ops", "body": "x"})
                        .to_string(),
                })
                .await
        }
    });
    wait_until("the call's intent to be durable", || async {
        read_audit_prefix(&audit_dir)
            .iter()
            .any(|r| matches!(&r.event, AuditEvent::CallStarted { tool, .. } if tool == "send_notification"))
            .then_some(())
    })
    .await;
    let file = std::fs::read_dir(&audit_dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("the log file");
    let size = std::fs::metadata(&file).expect("metadata").len();
    let capped = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &running.child.id().to_string(),
            &format!("--fsize={size}:unlimited"),
        ])
        .status()
        .expect("prlimit");
    assert!(capped.success());
    release.send_replace(true);
    let told = call
        .await
        .expect("task")
        .expect_err("its outcome cannot be recorded");
    assert_eq!(told.code(), tonic::Code::Unavailable, "{told:?}");
    let shown = client
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: workflow.clone(),
        })
        .await
        .expect("workflow")
        .into_inner();
    let sent = &shown.history[0];
    assert_eq!(sent.outcome, pb::CallOutcome::Succeeded as i32, "{sent:?}");
    assert!(sent.not_yet_durable && shown.not_yet_durable, "{shown:?}");
    running.kill();

    let restarted = spawn_orchestrator_binary(&config_path, &audit_dir, &[]);
    let mut client = connect(&restarted.url).await;
    let after = client
        .get_workflow(pb::GetWorkflowRequest {
            workflow_id: workflow.clone(),
        })
        .await
        .expect("workflow")
        .into_inner();
    let sent = &after.history[0];
    assert_eq!(
        sent.outcome,
        pb::CallOutcome::Interrupted as i32,
        "what was marked is what the crash took back: {sent:?}"
    );
    assert!(!sent.not_yet_durable && !after.not_yet_durable, "{after:?}");
    restarted.kill();
}
