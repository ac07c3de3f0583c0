//! Issue 29, items 2, 3 and 10 (c, d), against real daemons over real gRPC and HTTP: a workflow
//! bound to a template calls its tools in the template's order (over gRPC and an MCP session), the
//! approval ledger's tools are for callers that may read approvals, a refused flow gate counts as a
//! flow rule in `/metrics`, and a condition comparing a number with a string is refused at load.

use crate::common;
use crate::mcp_support::{params, text};

use common::*;
use conductor_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::Request;

fn onboarding_input() -> Value {
    json!({ "customers": customers(), "batch": "b-29", "welcome_list": "new@example.com" })
}

fn welcome_mail() -> Value {
    json!({ "channel": "email", "recipient": "new@example.com", "subject": "Welcome aboard", "body": "hello" })
}

fn outbox(h: &Harness) -> String {
    std::fs::read_to_string(h.servers.data_dir.path().join("notification/outbox.jsonl"))
        .unwrap_or_default()
}

fn with_token<T>(body: T, token: &str) -> Request<T> {
    let mut request = Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// A Rust MCP client (the official SDK) on the orchestrator's `/mcp`, with `token` when given.
async fn mcp_client(
    h: &Harness,
    token: Option<&str>,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    use rmcp::ServiceExt;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", h.orchestrator.http_url()));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("initialize")
}

#[tokio::test]
async fn a_caller_driven_template_runs_only_its_next_step_and_each_step_keeps_its_gate() {
    let h = Harness::shipped().await;
    let wf = h
        .start_workflow("customer_onboarding", onboarding_input())
        .await;

    // The reproduction: the welcome mail before anything else. Refused, naming the next step.
    let refused = h
        .call(&wf, "send_notification", welcome_mail())
        .await
        .unwrap_err();
    let decision = denial(&refused);
    let v = &decision.violations[0];
    assert_eq!(
        (v.rule_kind.as_str(), v.rule_id.as_str()),
        ("template_order", "template customer_onboarding"),
        "{decision:?}"
    );
    assert!(
        v.message
            .contains("the next step is validate (validate_data)"),
        "{}",
        v.message
    );
    assert_eq!(v.unblock_hint, "call validate_data first (step validate)");
    assert_eq!(v.required_tools, ["validate_data"]);
    assert_eq!(outbox(&h), "", "nothing was sent");
    // Beside the template's order, the other rules that block the call are reported too.
    let refused = h
        .call(&wf, "process_data", json!({"records": customers()}))
        .await
        .unwrap_err();
    let kinds: Vec<String> = denial(&refused)
        .violations
        .into_iter()
        .map(|v| v.rule_kind)
        .collect();
    assert_eq!(kinds, ["template_order", "sequence"]);

    // In order, each call is its step.
    let validated = h
        .call(
            &wf,
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        )
        .await
        .expect("validate");
    let records = result_of(&validated)["records"].clone();
    let processed = h
        .call(
            &wf,
            "process_data",
            json!({"records": records, "dedupe_by": "email"}),
        )
        .await
        .expect("process");
    let data = result_of(&processed)["records"].clone();
    h.call(
        &wf,
        "create_backup",
        json!({"name": "b-29", "data": data, "overwrite": true}),
    )
    .await
    .expect("backup");

    // The welcome mail, made as its step now, waits for the step's gate.
    let welcome = h.spawn_call(&wf, "send_notification", welcome_mail());
    let pending = h.wait_pending(&wf).await;
    assert_eq!(
        (pending.step.as_str(), pending.gate.as_str()),
        ("welcome", "customer_onboarding.welcome")
    );
    assert_eq!(outbox(&h), "", "not sent before the approval");
    h.client
        .clone()
        .approve(pb::ApprovalDecisionRequest {
            approval_id: pending.id,
            approver: "alice".into(),
            reason: "send it".into(),
            ..Default::default()
        })
        .await
        .expect("approve");
    welcome.await.expect("task").expect("runs once approved");
    h.call(
        &wf,
        "send_notification",
        json!({"channel": "log", "recipient": "#accounts", "body": "done"}),
    )
    .await
    .expect("the last step has no gate");
    assert_eq!(outbox(&h).lines().count(), 2);
    let done = h.workflow(&wf).await;
    assert_eq!(done.steps_done, 5);
    assert_eq!(
        done.state,
        pb::WorkflowState::Completed as i32,
        "a caller-driven template completes with its last step"
    );

    // Every step done: the template's workflow calls nothing more.
    let refused = h
        .call(&wf, "send_notification", welcome_mail())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("completed"),
        "{}",
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_session_bound_to_a_template_is_refused_a_step_out_of_order() {
    let h = Harness::shipped().await;
    let client = mcp_client(&h, None).await;
    client
        .call_tool(params(
            "conductor_start_workflow",
            json!({ "template": "customer_onboarding", "input": onboarding_input() }),
        ))
        .await
        .expect("bind the session");
    let refused = client
        .call_tool(params("send_notification", welcome_mail()))
        .await
        .expect("a tool result");
    let said = text(&refused);
    assert_eq!(refused.is_error, Some(true), "{said}");
    assert!(
        said.contains("template_order") && said.contains("call validate_data first"),
        "{said}"
    );
    assert_eq!(outbox(&h), "", "nothing was sent");
    let validated = client
        .call_tool(params(
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        ))
        .await
        .expect("a tool result");
    assert_ne!(validated.is_error, Some(true), "{}", text(&validated));
    client.cancel().await.expect("close");
}

const AGENT: &str = "agent-secret";
const READER: &str = "reader-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_ledger_is_offered_and_read_only_with_read_or_approve() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = shipped_config(&servers);
    config["clients"] = json!({
        "agent": { "tools": ["*"], "token": AGENT },
        "reader": { "tools": ["*"], "token": READER, "read": true }
    });
    config["control"] = json!({ "token": "control-secret" });
    let h = Harness::with_servers(servers, config).await;
    let start = |token| {
        let mut client = h.client.clone();
        async move {
            client
                .start_workflow(with_token(pb::StartWorkflowRequest::default(), token))
                .await
                .expect("start")
                .into_inner()
                .id
        }
    };
    let call = |token, workflow: String, tool: &str, arguments: Value| {
        let mut client = h.client.clone();
        let body = pb::WorkflowCallRequest {
            workflow_id: workflow,
            tool: tool.into(),
            arguments_json: arguments.to_string(),
        };
        async move { client.call_tool(with_token(body, token)).await }
    };
    // Something to leak: the agent's own restore waits for a person.
    let agent_wf = start(AGENT).await;
    let waiting = tokio::spawn(call(
        AGENT,
        agent_wf.clone(),
        "restore_backup",
        json!({"name": "nightly"}),
    ));
    h.wait_pending(&agent_wf).await;

    // gRPC ListTools and MCP tools/list: the ledger's tools only for the reader.
    let listed = |token| {
        let mut client = h.client.clone();
        async move {
            client
                .list_tools(with_token(pb::ListToolsRequest::default(), token))
                .await
                .expect("tools")
                .into_inner()
                .tools
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        }
    };
    let ledger = |names: &[String]| {
        names
            .iter()
            .filter(|n| *n == "list_approvals" || *n == "get_approval")
            .count()
    };
    let agent_tools = listed(AGENT).await;
    assert!(agent_tools.contains(&"list_backups".to_owned()));
    assert_eq!(ledger(&agent_tools), 0, "{agent_tools:?}");
    assert_eq!(ledger(&listed(READER).await), 2);
    let agent_mcp = mcp_client(&h, Some(AGENT)).await;
    let mcp_tools: Vec<String> = agent_mcp
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(mcp_tools.contains(&"list_backups".to_owned()));
    assert_eq!(ledger(&mcp_tools), 0, "{mcp_tools:?}");

    // A call anyway: refused as a permission, over gRPC and MCP.
    let refused = call(
        AGENT,
        agent_wf.clone(),
        "list_approvals",
        json!({"pending_only": true}),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("reads approval requests")
            && refused.message().contains("\"read\" or \"approve\""),
        "{}",
        refused.message()
    );
    let result = agent_mcp
        .call_tool(params("get_approval", json!({"id": "ap-1"})))
        .await
        .expect("a tool result");
    let said = text(&result);
    assert_eq!(result.is_error, Some(true), "{said}");
    assert!(said.contains("reads approval requests"), "{said}");
    agent_mcp.cancel().await.expect("close");

    // The reader reads them.
    let reader_wf = start(READER).await;
    let read = call(
        READER,
        reader_wf,
        "list_approvals",
        json!({"pending_only": true}),
    )
    .await
    .expect("the reader may")
    .into_inner();
    assert_eq!(result_of(&read)["count"], json!(1));
    waiting.abort();
}

#[tokio::test]
async fn a_refused_flow_gate_counts_as_a_flow_rule_in_metrics() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = config_with(
        &servers,
        json!([
            { "id": "no-leak", "kind": "flow", "from": ["private", "untrusted"], "to": "egress",
              "action": "approval" },
            { "id": "listing-gate", "kind": "approval", "tool": "list_schemas" }
        ]),
        json!({}),
    );
    config["labels"] = json!({
        "list_backups": ["private"],
        "list_notifications": ["untrusted"],
        "send_notification": ["egress"]
    });
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;
    h.call(&wf, "list_backups", json!({}))
        .await
        .expect("private in");
    h.call(&wf, "list_notifications", json!({}))
        .await
        .expect("untrusted in");
    for (tool, arguments) in [
        (
            "send_notification",
            json!({"channel": "log", "recipient": "ops", "body": "x"}),
        ),
        ("list_schemas", json!({})),
    ] {
        let waiting = h.spawn_call(&wf, tool, arguments);
        let pending = h.wait_pending(&wf).await;
        h.client
            .clone()
            .deny(pb::ApprovalDecisionRequest {
                approval_id: pending.id,
                approver: "alice".into(),
                reason: "no".into(),
                ..Default::default()
            })
            .await
            .expect("deny");
        let refused = waiting.await.expect("task").unwrap_err();
        assert_eq!(denial(&refused).violations[0].rule_kind, "approval");
    }
    let metrics = reqwest::get(format!("{}/metrics", h.orchestrator.http_url()))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    for line in [
        "conductor_rule_violations_total{rule=\"no-leak\",kind=\"flow\"} 1",
        "conductor_rule_violations_total{rule=\"listing-gate\",kind=\"approval\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn a_condition_comparing_a_number_with_a_string_keeps_the_orchestrator_from_starting() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = shipped_config(&servers);
    let rules = config["rules"].as_array_mut().expect("rules");
    rules.push(json!({ "id": "big-order", "kind": "deny", "tool": "process_data",
                       "message": "orders that big go through sales", "when": "args.amount > '1000'" }));
    let at = rules.len() - 1;
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = conductor_orchestrator::testing::spawn(&config.to_string(), None, dir.path())
        .await
        .err()
        .expect("refused at load");
    let said = refused.to_string();
    assert!(
        said.contains(&format!(
            "rules[{at}].when: compares args.amount with the string \"1000\""
        )) && said.contains("write the number without quotes (1000)"),
        "{said}"
    );
    servers.stop().await;
}
