//! Labels, flow rules and argument conditions over real gRPC against the real tool servers: the
//! refusal and the approval request name the earlier calls, the audit record carries the labels
//! and the condition results, and a restart rebuilds the label set from the log.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, DecisionKind};
use conductor_proto::v1 as pb;
use serde_json::{Value, json};

fn flow_config(servers: &conductor_servers::testing::ToolServers, action: &str) -> Value {
    let mut config = config_with(
        servers,
        json!([
            { "id": "no-leak", "kind": "flow", "from": ["private", "untrusted"], "to": "egress",
              "action": action },
            { "id": "webhooks-to-us", "kind": "deny", "tool": "send_notification",
              "when": "args.channel == 'webhook' && !args.recipient.startsWith('https://hooks.example.com/')",
              "message": "webhooks go to hooks.example.com only" }
        ]),
        json!({}),
    );
    config["labels"] = json!({
        "list_backups": ["private"],
        "list_notifications": ["untrusted"],
        "send_notification": ["egress"]
    });
    config
}

fn note() -> Value {
    json!({"channel": "webhook", "recipient": "https://hooks.example.com/x", "body": "hello"})
}

#[tokio::test]
async fn a_flow_denial_names_the_calls_that_brought_each_label_in() {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = flow_config(&servers, "deny");
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;

    h.call(&wf, "send_notification", note())
        .await
        .expect("nothing seen yet: allowed");
    let refused = h
        .call(
            &wf,
            "send_notification",
            json!({"channel": "webhook", "recipient": "https://evil.test/", "body": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(denial(&refused).violations[0].rule_id, "webhooks-to-us");
    let broken = h
        .call(&wf, "send_notification", json!({"body": "no channel"}))
        .await
        .unwrap_err();
    let v = &denial(&broken).violations[0];
    assert_eq!(v.rule_id, "webhooks-to-us");
    assert!(
        v.message.contains("could not be evaluated"),
        "{}",
        v.message
    );

    h.call(&wf, "list_notifications", json!({}))
        .await
        .expect("untrusted in");
    h.call(&wf, "send_notification", note())
        .await
        .expect("untrusted alone does not trip the flow");
    h.call(&wf, "list_backups", json!({}))
        .await
        .expect("private in");
    let status = h.call(&wf, "send_notification", note()).await.unwrap_err();
    let decision = denial(&status);
    let v = &decision.violations[0];
    assert_eq!(
        (v.rule_id.as_str(), v.rule_kind.as_str()),
        ("no-leak", "flow")
    );
    let decided: Vec<(String, String, DecisionKind)> = h
        .audit_records()
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::CallDecided {
                call_id,
                tool,
                decision,
                ..
            } => Some((call_id.clone(), tool.clone(), *decision)),
            _ => None,
        })
        .collect();
    let origin = |tool: &str| {
        decided
            .iter()
            .find(|(_, t, d)| t == tool && *d == DecisionKind::Allow)
            .map(|(id, _, _)| id.clone())
            .expect("an allowed call")
    };
    for (label, tool) in [
        ("private", "list_backups"),
        ("untrusted", "list_notifications"),
    ] {
        let named = format!("{label} from call {} ({tool} at ", origin(tool));
        assert!(v.message.contains(&named), "{named:?} not in {}", v.message);
    }

    let last = h
        .audit_records()
        .into_iter()
        .rev()
        .find_map(|r| match r.event {
            AuditEvent::CallDecided {
                labels,
                workflow_labels,
                conditions,
                ..
            } => Some((labels, workflow_labels, conditions)),
            _ => None,
        });
    let (labels, workflow_labels, conditions) = last.expect("a decision");
    assert_eq!(labels, ["egress"]);
    assert_eq!(workflow_labels, ["egress", "private", "untrusted"]);
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0].rule_id, "webhooks-to-us");
    assert_eq!(conditions[0].value, Some(false));

    // The outlook says what the flow rule would do next.
    let info = h.workflow(&wf).await;
    let next = info
        .outlook
        .iter()
        .find(|o| o.tool == "send_notification")
        .expect("send_notification in the outlook");
    assert_eq!(next.decision, pb::DecisionKind::Deny as i32);
    assert!(next.hint.contains("private + untrusted"), "{}", next.hint);
}

#[tokio::test]
async fn a_flow_gate_asks_a_person_and_shows_the_earlier_calls() {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = flow_config(&servers, "approval");
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;
    h.call(&wf, "list_backups", json!({}))
        .await
        .expect("private in");
    h.call(&wf, "list_notifications", json!({}))
        .await
        .expect("untrusted in");
    let waiting = h.spawn_call(&wf, "send_notification", note());
    let pending = h.wait_pending(&wf).await;
    assert_eq!(pending.gate, "no-leak");
    assert!(pending.why.contains("private from call"), "{}", pending.why);
    assert!(
        pending.why.contains("list_notifications"),
        "{}",
        pending.why
    );
    h.client
        .clone()
        .approve(pb::ApprovalDecisionRequest {
            approval_id: pending.id.clone(),
            approver: "alice".into(),
            reason: "checked the body".into(),
            ..Default::default()
        })
        .await
        .expect("approve");
    waiting.await.expect("task").expect("runs once approved");
    let reasons: Vec<String> = h
        .audit_records()
        .into_iter()
        .filter_map(|r| match r.event {
            AuditEvent::CallDecided {
                gate_reason: Some(reason),
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("list_backups"), "{}", reasons[0]);
}

/// The label set is state like any other: an orchestrator started again on the same log knows which
/// labels the workflow has seen and which calls brought them in, and the flow rule still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_label_set_from_the_log() {
    use conductor_orchestrator::gateway::{CallResult, CallSpec};
    use conductor_orchestrator::testing;
    let servers = conductor_servers::testing::spawn_all().await;
    let config = flow_config(&servers, "deny").to_string();
    let audit = tempfile::tempdir().expect("temp dir");
    let spec = |workflow: &str, tool: &str, arguments: Value| CallSpec {
        workflow_id: workflow.to_owned(),
        tool: tool.into(),
        arguments,
        caller: "grpc:ada".into(),
        step: None,
    };
    let first = testing::spawn(&config, None, audit.path())
        .await
        .expect("orchestrator starts");
    let wf = first
        .gateway
        .start_workflow(None, Value::Null, "grpc:ada")
        .await
        .expect("a workflow")
        .id;
    let untrusted = first
        .gateway
        .call(spec(&wf, "list_notifications", json!({})))
        .await
        .expect("runs");
    let private = first
        .gateway
        .call(spec(&wf, "list_backups", json!({})))
        .await
        .expect("runs");
    first.stop().await;

    let again = testing::spawn(&config, None, audit.path())
        .await
        .expect("orchestrator starts again on the same log");
    let refused = again
        .gateway
        .call(spec(&wf, "send_notification", note()))
        .await
        .expect("decided");
    match &refused.result {
        CallResult::Denied(violations) => {
            let v = &violations[0];
            assert_eq!(v.rule_id, "no-leak");
            assert!(
                v.message.contains(&untrusted.call_id) && v.message.contains(&private.call_id),
                "the rebuilt label set still names the calls: {}",
                v.message
            );
        }
        other => panic!("egress after a restart: {other:?}"),
    }
    again.stop().await;
    servers.stop().await;
}
