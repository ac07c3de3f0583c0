//! Template runs and the Watch stream over real gRPC.

use crate::common;

use common::*;
use conductor_proto::v1 as pb;
use pb::audit_event::Event;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

fn example(name: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("config/examples").join(name))
        .expect("example input");
    serde_json::from_str(&text).expect("example JSON")
}

async fn run(h: &Harness, template: &str, input: Value, wait: bool) -> pb::WorkflowInfo {
    let request = pb::RunTemplateRequest {
        template: template.into(),
        input_json: input.to_string(),
        wait,
        caller: "test".into(),
    };
    h.client
        .clone()
        .run_template(request)
        .await
        .expect("run template")
        .into_inner()
}

#[tokio::test]
async fn a_template_runs_to_completion_with_outputs_feeding_later_steps() {
    let h = Harness::shipped().await;
    let done = run(&h, "order_summary", example("orders.json"), true).await;
    assert_eq!(done.state, pb::WorkflowState::Completed as i32, "{done:?}");
    assert_eq!((done.steps_done, done.steps_total), (3, 3));
    assert!(done.next_step.is_empty());
    let outputs: Value = serde_json::from_str(&done.outputs_json).expect("outputs");
    let groups = &outputs["aggregate"]["aggregates"]["groups"];
    assert_eq!(groups[0]["key"], json!("c-1001"));
    assert_eq!(groups[0]["sum"]["amount"], json!(140.0));
    assert_eq!(done.history.len(), 3);
    assert!(
        done.history
            .iter()
            .all(|c| c.outcome == pb::CallOutcome::Succeeded as i32)
    );
}

#[tokio::test]
async fn a_template_with_an_approval_gate_waits_then_completes() {
    let h = Harness::shipped().await;
    let started = run(&h, "customer_onboarding", example("onboarding.json"), false).await;
    let pending = h.wait_pending(&started.id).await;
    assert_eq!(pending.step, "welcome");
    let waiting = h.workflow(&started.id).await;
    assert_eq!(waiting.state, pb::WorkflowState::WaitingApproval as i32);
    assert_eq!(
        (waiting.steps_done, waiting.next_step.as_str()),
        (3, "welcome")
    );
    let request = pb::ApprovalDecisionRequest {
        approval_id: pending.id,
        approver: "alice".into(),
        reason: "send it".into(),
        ..Default::default()
    };
    h.client.clone().approve(request).await.expect("approve");
    let done = wait_until("the run to finish", || async {
        let info = h.workflow(&started.id).await;
        (info.state != pb::WorkflowState::Running as i32
            && info.state != pb::WorkflowState::WaitingApproval as i32)
            .then_some(info)
    })
    .await;
    assert_eq!(
        done.state,
        pb::WorkflowState::Completed as i32,
        "{}",
        done.error
    );
    let outputs: Value = serde_json::from_str(&done.outputs_json).expect("outputs");
    assert_eq!(
        outputs["process"]["duplicates_removed"],
        json!(1),
        "Ada is in the batch twice"
    );
    let outbox =
        std::fs::read_to_string(h.servers.data_dir.path().join("notification/outbox.jsonl"))
            .expect("outbox");
    assert_eq!(
        outbox.lines().count(),
        2,
        "welcome mail and team message: {outbox}"
    );
    assert!(outbox.contains("Onboarded 2 customer(s)"), "{outbox}");
}

#[tokio::test]
async fn a_run_stops_at_a_denied_step_and_at_a_failed_step() {
    let h = Harness::shipped().await;
    let started = run(&h, "customer_onboarding", example("onboarding.json"), false).await;
    let pending = h.wait_pending(&started.id).await;
    let request = pb::ApprovalDecisionRequest {
        approval_id: pending.id,
        approver: "bob".into(),
        reason: "wrong list".into(),
        ..Default::default()
    };
    h.client.clone().deny(request).await.expect("deny");
    let stopped = wait_until("the run to stop", || async {
        let info = h.workflow(&started.id).await;
        (info.state == pb::WorkflowState::Failed as i32).then_some(info)
    })
    .await;
    assert!(
        stopped.error.contains("step \"welcome\"")
            && stopped.error.contains("as \"bob\"): wrong list"),
        "{}",
        stopped.error
    );
    assert_eq!(stopped.steps_done, 3);

    let failed = run(
        &h,
        "customer_onboarding",
        example("onboarding-invalid.json"),
        true,
    )
    .await;
    assert_eq!(failed.state, pb::WorkflowState::Failed as i32);
    assert!(
        failed.error.contains("step \"validate\"") && failed.error.contains("validation_failed"),
        "{}",
        failed.error
    );
    assert_eq!(failed.steps_done, 0);
}

#[tokio::test]
async fn bad_template_input_and_unknown_templates_are_refused_clearly() {
    let h = Harness::shipped().await;
    let request = pb::RunTemplateRequest {
        template: "nope".into(),
        input_json: "{}".into(),
        wait: true,
        caller: String::new(),
    };
    let status = h.client.clone().run_template(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("customer_onboarding"),
        "{}",
        status.message()
    );
    // Input that does not match the template's declared inputs is refused before anything runs,
    // with every problem and an input that passes.
    for (input, needle) in [
        (json!({}), "input \"orders\" (array) is missing"),
        (
            json!({"orders": "o-1"}),
            "input \"orders\" must be an array, not a string",
        ),
        (
            json!({"orders": [], "order": []}),
            "input \"order\" is not one of the template's inputs",
        ),
    ] {
        let request = pb::RunTemplateRequest {
            template: "order_summary".into(),
            input_json: input.to_string(),
            wait: true,
            caller: String::new(),
        };
        let status = h.client.clone().run_template(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(needle)
                && status
                    .message()
                    .contains("an input that passes: {\"orders\":"),
            "{}",
            status.message()
        );
    }
    let started = h
        .audit_records()
        .iter()
        .filter(|r| {
            matches!(&r.event, conductor_orchestrator::audit::AuditEvent::WorkflowStarted { template: Some(t), .. } if t == "order_summary")
        })
        .count();
    assert_eq!(started, 0, "nothing started for a refused input");
    // The listing shows the inputs, and the steps a rule gates.
    let templates = h
        .client
        .clone()
        .list_templates(pb::ListTemplatesRequest {})
        .await
        .expect("templates")
        .into_inner()
        .templates;
    let restore = templates
        .iter()
        .find(|t| t.name == "restore_snapshot")
        .expect("restore_snapshot");
    assert_eq!(restore.inputs[0].name, "snapshot");
    assert!(restore.inputs[0].required);
    let gated: Vec<(&str, &str)> = restore
        .steps
        .iter()
        .filter(|s| s.requires_approval)
        .map(|s| (s.name.as_str(), s.gate.as_str()))
        .collect();
    assert_eq!(gated, [("restore", "restore-needs-approval")]);
}

#[tokio::test]
async fn watch_sends_a_run_in_order_and_resumes_from_a_sequence_number() {
    let h = Harness::shipped().await;
    let from = h
        .client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .last_seq
        + 1;
    let mut stream = h
        .client
        .clone()
        .watch(pb::WatchRequest {
            workflow_id: String::new(),
            from_seq: from,
        })
        .await
        .expect("watch")
        .into_inner();
    let done = run(&h, "order_summary", example("orders.json"), true).await;
    let mut kinds = Vec::new();
    let mut seqs = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.expect("event");
        let Some(pb::watch_event::Body::Event(e)) = event.body else {
            continue;
        };
        if e.workflow_id != done.id {
            continue;
        }
        seqs.push(e.seq);
        let finished = matches!(e.event, Some(Event::WorkflowFinished(_)));
        kinds.push(e.event);
        if finished {
            assert_eq!(
                event.workflow.expect("workflow info").state,
                pb::WorkflowState::Completed as i32
            );
            break;
        }
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(
        matches!(kinds.first(), Some(Some(Event::WorkflowStarted(_)))),
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(k, Some(Event::CallFinished(_))))
            .count(),
        3,
        "{kinds:?}"
    );

    // A client that reconnects from a past sequence number gets the same events again, filtered.
    let resume = seqs[2];
    let mut again = h
        .client
        .clone()
        .watch(pb::WatchRequest {
            workflow_id: done.id.clone(),
            from_seq: resume,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(event) = again.next().await {
        let Some(pb::watch_event::Body::Event(e)) = event.expect("event").body else {
            continue;
        };
        replayed.push(e.seq);
        if matches!(e.event, Some(Event::WorkflowFinished(_))) {
            break;
        }
    }
    assert_eq!(replayed, seqs[2..].to_vec());
}

#[tokio::test]
async fn status_reports_the_dashboard_figures() {
    let h = Harness::shipped().await;
    run(&h, "order_summary", example("orders.json"), true).await;
    let wf = h.start_workflow("", json!({})).await;
    let _ = h
        .call(&wf, "process_data", json!({"records": []}))
        .await
        .unwrap_err();
    let status = h
        .client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (
            status.active_workflows,
            status.completed_today,
            status.policy_violations
        ),
        (1, 1, 1)
    );
    assert_eq!(status.workflows[0].id, wf, "active workflows come first");
    let validate = status
        .tools
        .iter()
        .find(|t| t.tool == "validate_data")
        .expect("validate_data metrics");
    assert_eq!((validate.calls, validate.successes), (1, 1));
    assert!(validate.p50_us > 0 && validate.p99_us >= validate.p50_us);
    assert_eq!(status.rules[0].rule_id, "process-after-validate");
}

#[tokio::test]
async fn a_lagging_watcher_is_told_and_caught_up_from_the_files() {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = shipped_config(&servers);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = conductor_audit::AuditOptions {
        dir: dir.path().join("audit"),
        broadcast_capacity: 8,
        ..Default::default()
    };
    let orchestrator =
        conductor_orchestrator::testing::spawn_with_audit(&config.to_string(), None, audit)
            .await
            .expect("start");
    let mut client = connect(&orchestrator.grpc_url()).await;
    // A watcher with a small HTTP/2 window, so that it really falls behind while it does not read.
    let channel = tonic::transport::Endpoint::from_shared(orchestrator.grpc_url())
        .expect("url")
        .initial_stream_window_size(Some(8 * 1024))
        .initial_connection_window_size(Some(8 * 1024))
        .connect()
        .await
        .expect("connect");
    let mut watcher = conductor_proto::v1::orchestrator_client::OrchestratorClient::new(channel);
    let mut stream = watcher
        .watch(pb::WatchRequest {
            workflow_id: String::new(),
            from_seq: 1,
        })
        .await
        .expect("watch")
        .into_inner();
    // Far more events than the watcher's buffer and the broadcast hold, while nobody reads the stream.
    for _ in 0..600 {
        client
            .start_workflow(pb::StartWorkflowRequest::default())
            .await
            .expect("start");
    }
    let last = client
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .last_seq;
    let mut seen = Vec::new();
    let mut lagged = false;
    while seen.last() != Some(&last) {
        let event = stream.next().await.expect("stream open").expect("event");
        match event.body {
            Some(pb::watch_event::Body::Lagged(_)) => lagged = true,
            Some(pb::watch_event::Body::Event(e)) => seen.push(e.seq),
            None => {}
        }
    }
    assert!(lagged, "the watcher is told it lagged");
    assert_eq!(
        seen,
        (1..=last).collect::<Vec<_>>(),
        "and still misses nothing"
    );
    orchestrator.stop().await;
}
