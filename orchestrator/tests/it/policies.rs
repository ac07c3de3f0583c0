//! Policies enforced over real gRPC against the real tool servers.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, DecisionKind};
use conductor_proto::v1 as pb;
use serde_json::json;
use std::collections::HashMap;

#[tokio::test]
async fn out_of_order_call_is_denied_with_its_reason_then_allowed() {
    let h = Harness::shipped().await;
    let wf = h.start_workflow("", json!({})).await;
    let status = h
        .call(&wf, "process_data", json!({"records": customers()}))
        .await
        .unwrap_err();
    let decision = denial(&status);
    assert_eq!(decision.kind, pb::DecisionKind::Deny as i32);
    let v = &decision.violations[0];
    assert_eq!(
        (v.rule_id.as_str(), v.rule_kind.as_str()),
        ("process-after-validate", "sequence")
    );
    assert_eq!(v.unblock_hint, "call validate_data first");
    assert!(
        status.message().contains("process-after-validate"),
        "{}",
        status.message()
    );

    let validated = h
        .call(
            &wf,
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        )
        .await
        .expect("validate");
    assert_eq!(result_of(&validated)["valid"], json!(true));
    let processed = h
        .call(&wf, "process_data", json!({"records": customers()}))
        .await
        .expect("now allowed");
    assert_eq!(result_of(&processed)["count"], json!(2));

    let records = h.audit_records();
    let decided: Vec<DecisionKind> = records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::CallDecided { decision, .. } => Some(*decision),
            _ => None,
        })
        .collect();
    assert_eq!(
        decided,
        [DecisionKind::Deny, DecisionKind::Allow, DecisionKind::Allow]
    );
    let info = h.workflow(&wf).await;
    assert_eq!(info.violations, 1);
    assert_eq!(info.history.len(), 3);
}

#[tokio::test]
async fn conditional_rule_blocks_after_a_failed_validation() {
    let h = Harness::shipped().await;
    let wf = h.start_workflow("", json!({})).await;
    let bad = json!([{ "id": "c-9", "name": "", "email": "nope" }]);
    let failed = h
        .call(
            &wf,
            "validate_data",
            json!({"records": bad, "schema": "customer"}),
        )
        .await
        .expect("the call runs");
    let Some(pb::workflow_call_response::Outcome::Error(error)) = failed.outcome else {
        panic!("validation must fail")
    };
    assert_eq!(error.code, "validation_failed");
    assert!(
        error.details_json.contains("/email"),
        "{}",
        error.details_json
    );

    h.call(&wf, "process_data", json!({"records": bad}))
        .await
        .expect("sequence only needs the call");
    let status = h
        .call(&wf, "create_backup", json!({"name": "b1", "data": bad}))
        .await
        .unwrap_err();
    let decision = denial(&status);
    let rules: Vec<&str> = decision
        .violations
        .iter()
        .map(|v| v.rule_id.as_str())
        .collect();
    assert_eq!(rules, ["backup-needs-valid-data"]);
    assert!(
        decision.violations[0]
            .message
            .contains("its last call failed")
    );

    h.call(
        &wf,
        "validate_data",
        json!({"records": customers(), "schema": "customer"}),
    )
    .await
    .expect("retry");
    h.call(
        &wf,
        "create_backup",
        json!({"name": "b1", "data": customers()}),
    )
    .await
    .expect("allowed after success");
}

#[tokio::test]
async fn exclusive_group_never_runs_two_calls_at_once_under_50_callers() {
    let servers = conductor_servers::testing::spawn_all().await;
    let rules = json!([{ "id": "one-writer", "kind": "exclusive", "tools": ["create_backup", "restore_backup"], "scope": "global" }]);
    let config = config_with(&servers, rules, json!({}));
    let h = Harness::with_servers(servers, config).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let wf = h.start_workflow("", json!({})).await;
        let client = h.client.clone();
        let data = json!({ "blob": "x".repeat(64 * 1024), "i": i });
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let request = pb::WorkflowCallRequest {
                workflow_id: wf,
                tool: "create_backup".into(),
                arguments_json: json!({"name": format!("snap-{i}"), "data": data}).to_string(),
            };
            client.call_tool(request).await
        }));
    }
    let mut allowed = 0;
    let mut denied = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => allowed += 1,
            Err(status) => {
                let decision = denial(&status);
                assert_eq!(decision.violations[0].rule_id, "one-writer");
                denied += 1;
            }
        }
    }
    assert_eq!(allowed + denied, 50);
    assert!(allowed >= 1);
    // From the log: between a call's decision to run and its finish, no other call of the group started.
    let mut running: HashMap<String, u64> = HashMap::new();
    for record in h.audit_records() {
        match &record.event {
            AuditEvent::CallDecided {
                call_id,
                decision: DecisionKind::Allow,
                ..
            } => {
                assert!(
                    running.is_empty(),
                    "seq {}: {call_id} allowed while {running:?} ran",
                    record.seq
                );
                running.insert(call_id.clone(), record.seq);
            }
            AuditEvent::CallFinished { call_id, .. } => {
                running.remove(call_id);
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn unknown_tools_workflows_and_bad_arguments_get_clear_errors() {
    let h = Harness::shipped().await;
    let wf = h.start_workflow("", json!({})).await;
    let status = h.call(&wf, "drop_database", json!({})).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("unknown tool \"drop_database\"")
            && status.message().contains("validate_data"),
        "{}",
        status.message()
    );

    let status = h
        .call("wf-missing", "validate_data", json!({}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let status = h
        .call(&wf, "validate_data", json!({"schema": "customer"}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("records"), "{}", status.message());

    let mut client = h.client.clone();
    let request = pb::WorkflowCallRequest {
        workflow_id: wf.clone(),
        tool: "validate_data".into(),
        arguments_json: "{not json".into(),
    };
    let status = client.call_tool(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("not valid JSON"));
}

#[tokio::test]
async fn a_dead_tool_server_gives_a_clear_error_and_is_used_again_when_back() {
    use conductor_servers::ServerKind;
    let mut servers = conductor_servers::testing::spawn_all().await;
    let config = shipped_config(&servers);
    let index = servers
        .servers
        .iter()
        .position(|s| s.kind == ServerKind::Validation)
        .expect("validation");
    let validation = servers.servers.remove(index);
    let addr = validation.addr;
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;
    h.call(
        &wf,
        "validate_data",
        json!({"records": customers(), "schema": "customer"}),
    )
    .await
    .expect("works while up");

    validation.stop().await;
    let status = h
        .call(
            &wf,
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("\"validation\""),
        "{}",
        status.message()
    );

    // Back on the same address: the orchestrator reconnects by itself.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the same port");
    let data_dir = h.dir.path().join("validation-again");
    let options = conductor_servers::ServerOptions::new(&data_dir);
    tokio::spawn(conductor_servers::serve(
        ServerKind::Validation,
        listener,
        options,
        std::future::pending(),
    ));
    let ok = wait_until("the validation server to be used again", || async {
        h.call(
            &wf,
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        )
        .await
        .ok()
    })
    .await;
    assert_eq!(result_of(&ok)["valid"], json!(true));
    let unavailable = h.audit_records().into_iter().any(|r| {
        matches!(r.event, AuditEvent::CallFinished { outcome: conductor_orchestrator::audit::Outcome::Unavailable, ref error, .. }
            if error.as_deref().is_some_and(|e| e.contains("validation")))
    });
    assert!(unavailable, "the failed call is audited as unavailable");
}

#[tokio::test]
async fn the_orchestrator_forwards_to_each_of_the_five_servers() {
    let h = Harness::shipped().await;
    let wf = h.start_workflow("", json!({})).await;
    let calls = [
        ("list_schemas", json!({}), "schemas"),
        ("list_backups", json!({}), "backups"),
        ("list_notifications", json!({}), "notifications"),
        ("list_approvals", json!({"pending_only": true}), "approvals"),
        (
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
            "records",
        ),
        ("process_data", json!({"records": customers()}), "records"),
    ];
    for (tool, args, field) in calls {
        let response = h
            .call(&wf, tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e:?}"));
        assert!(
            result_of(&response).get(field).is_some(),
            "{tool} answers with {field}"
        );
    }
    let servers: std::collections::BTreeSet<String> = h
        .client
        .clone()
        .list_tools(pb::ListToolsRequest {})
        .await
        .expect("tools")
        .into_inner()
        .tools
        .into_iter()
        .map(|t| t.server)
        .collect();
    assert_eq!(servers.len(), 5, "{servers:?}");
}
