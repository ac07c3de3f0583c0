//! Operator controls over real gRPC and MCP: per-tool time-outs, concurrency and rate limits, template
//! and client allow-lists, hardened approvals, caller identity, live configuration reload. Every one of
//! them is checked in the audit log too, with the configuration version.

use crate::common;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, DecisionKind, Outcome};
use conductor_proto::v1 as pb;
use conductor_proto::v1::tool_service_server::{ToolService, ToolServiceServer};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A third-party tool server with one tool, `slow`, that takes `ms` milliseconds. It counts how many
/// calls it runs at once and notices when a caller gives up on a call (the deadline reached it).
#[derive(Default, Clone)]
struct SlowServer {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    cancelled: Arc<AtomicBool>,
}

struct InFlight(SlowServer, bool);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        if !self.1 {
            self.0.cancelled.store(true, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl ToolService for SlowServer {
    async fn list_tools(
        &self,
        _: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        let tool = pb::ToolDescriptor {
            name: "slow".into(),
            description: "Takes its time.".into(),
            input_schema_json: r#"{"type":"object"}"#.into(),
            server: String::new(),
        };
        Ok(Response::new(pb::ListToolsResponse { tools: vec![tool] }))
    }

    async fn call_tool(
        &self,
        request: Request<pb::CallToolRequest>,
    ) -> Result<Response<pb::CallToolResponse>, Status> {
        let args: Value = serde_json::from_str(&request.get_ref().arguments_json)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let mut guard = InFlight(self.clone(), false);
        tokio::time::sleep(Duration::from_millis(args["ms"].as_u64().unwrap_or(0))).await;
        guard.1 = true;
        Ok(Response::new(pb::CallToolResponse {
            outcome: Some(pb::call_tool_response::Outcome::ResultJson(
                json!({"slept": args["ms"]}).to_string(),
            )),
        }))
    }
}

async fn spawn_slow() -> (SlowServer, String) {
    let server = SlowServer::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let service = ToolServiceServer::new(server.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (server, url)
}

/// The shipped configuration plus the slow server and `rules` appended.
async fn harness(rules: Value, extra: impl FnOnce(&mut Value)) -> (Harness, SlowServer) {
    let servers = conductor_servers::testing::spawn_all().await;
    let (slow, url) = spawn_slow().await;
    let mut config = shipped_config(&servers);
    config["servers"]["slowpoke"] = json!({ "grpc": url, "tools": ["slow"] });
    config["rules"]
        .as_array_mut()
        .expect("rules")
        .extend(rules.as_array().cloned().unwrap_or_default());
    extra(&mut config);
    (Harness::with_servers(servers, config).await, slow)
}

fn decided(h: &Harness) -> Vec<(String, DecisionKind, Vec<String>, String)> {
    h.audit_records()
        .into_iter()
        .filter_map(|r| match r.event {
            AuditEvent::CallDecided {
                tool,
                decision,
                violations,
                config_version,
                ..
            } => Some((
                tool,
                decision,
                violations
                    .into_iter()
                    .map(|v| v.rule_kind.as_str().to_owned())
                    .collect(),
                config_version,
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_slow_tool_is_cut_off_at_its_time_out_and_audited() {
    let (h, slow) = harness(
        json!([{ "id": "slow-limits", "kind": "limit", "tool": "slow", "timeout": "200ms" }]),
        |_| {},
    )
    .await;
    let wf = h.start_workflow("", json!({})).await;
    let status = h
        .call(&wf, "slow", json!({"ms": 10_000}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("slow") && status.message().contains("200ms"),
        "{}",
        status.message()
    );
    wait_until("the server to see the call cancelled", || async {
        slow.cancelled.load(Ordering::SeqCst).then_some(())
    })
    .await;
    let finished = h.audit_records().into_iter().find_map(|r| match r.event {
        AuditEvent::CallFinished {
            tool,
            outcome,
            error,
            ..
        } if tool == "slow" => Some((outcome, error.unwrap_or_default())),
        _ => None,
    });
    let (outcome, error) = finished.expect("the cut-off call is audited");
    assert_eq!(outcome, Outcome::Failed);
    assert!(error.contains("time-out of 200ms"), "{error}");
    h.call(&wf, "slow", json!({"ms": 1}))
        .await
        .expect("a quick call still works");
}

#[tokio::test]
async fn the_concurrency_limit_holds_under_50_callers() {
    let (h, slow) = harness(
        json!([{ "id": "slow-lanes", "kind": "limit", "tool": "slow", "max_concurrent": 3 }]),
        |_| {},
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let wf = h.start_workflow("", json!({})).await;
        let mut client = h.client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .call_tool(pb::WorkflowCallRequest {
                    workflow_id: wf,
                    tool: "slow".into(),
                    arguments_json: r#"{"ms":150}"#.into(),
                })
                .await
        }));
    }
    let mut denied = 0;
    for task in tasks {
        if let Err(status) = task.await.expect("task") {
            assert_eq!(denial(&status).violations[0].rule_kind, "concurrency");
            denied += 1;
        }
    }
    assert!(
        slow.most.load(Ordering::SeqCst) <= 3,
        "at most 3 ran at once, saw {}",
        slow.most.load(Ordering::SeqCst)
    );
    assert!(denied > 0, "50 callers at once cannot all fit in 3 lanes");
    let kinds = decided(&h);
    assert_eq!(
        kinds
            .iter()
            .filter(|(_, d, v, _)| *d == DecisionKind::Deny && v == &["concurrency"])
            .count(),
        denied
    );
}

#[tokio::test]
async fn a_rate_limit_denies_with_a_retry_time_and_then_allows() {
    let rules = json!([{ "id": "schema-rate", "kind": "limit", "tool": "list_schemas", "rate_per_workflow": { "calls": 2, "per": "1s" } }]);
    let (h, _) = harness(rules, |_| {}).await;
    let wf = h.start_workflow("", json!({})).await;
    h.call(&wf, "list_schemas", json!({})).await.expect("first");
    h.call(&wf, "list_schemas", json!({}))
        .await
        .expect("second");
    let status = h.call(&wf, "list_schemas", json!({})).await.unwrap_err();
    let decision = denial(&status);
    let v = &decision.violations[0];
    assert_eq!(
        (v.rule_kind.as_str(), v.rule_id.as_str()),
        ("rate_limit", "schema-rate")
    );
    assert!(v.retry_after_ms > 0 && v.retry_after_ms <= 1000, "{v:?}");
    assert!(v.unblock_hint.starts_with("retry in"), "{}", v.unblock_hint);
    let other = h.start_workflow("", json!({})).await;
    h.call(&other, "list_schemas", json!({}))
        .await
        .expect("another workflow has its own bucket");
    // Waiting out the advertised time is what the limit asks for.
    tokio::time::sleep(Duration::from_millis(v.retry_after_ms + 20)).await;
    h.call(&wf, "list_schemas", json!({}))
        .await
        .expect("allowed after the retry time");
}

#[tokio::test]
async fn template_workflows_and_clients_call_only_their_tools() {
    let (h, _) = harness(json!([]), |config| {
        config["clients"] = json!({ "reporter": { "tools": ["list_schemas", "list_backups"], "token": "tok-reporter" } });
    })
    .await;
    let wf = h
        .start_workflow("order_summary", json!({"orders": []}))
        .await;
    let status = h
        .call(&wf, "create_backup", json!({"name": "x", "data": 1}))
        .await
        .unwrap_err();
    let decision = denial(&status);
    assert_eq!(decision.violations[0].rule_kind, "allow_list");
    assert!(
        decision.violations[0]
            .message
            .contains("template order_summary"),
        "{:?}",
        decision.violations
    );

    // A client known by its token gets its allow-list, and its name is recorded as the caller.
    let mut start = Request::new(pb::StartWorkflowRequest::default());
    start.metadata_mut().insert(
        "authorization",
        "Bearer tok-reporter".parse().expect("header"),
    );
    let info = h
        .client
        .clone()
        .start_workflow(start)
        .await
        .expect("start")
        .into_inner();
    assert!(
        info.caller.starts_with("reporter (token"),
        "{}",
        info.caller
    );
    let as_reporter = |tool: &str, args: Value| {
        let mut request = Request::new(pb::WorkflowCallRequest {
            workflow_id: info.id.clone(),
            tool: tool.into(),
            arguments_json: args.to_string(),
        });
        request.metadata_mut().insert(
            "authorization",
            "Bearer tok-reporter".parse().expect("header"),
        );
        let mut client = h.client.clone();
        async move { client.call_tool(request).await }
    };
    as_reporter("list_schemas", json!({}))
        .await
        .expect("on the list");
    let status = as_reporter(
        "validate_data",
        json!({"records": [], "schema": "customer"}),
    )
    .await
    .unwrap_err();
    assert!(
        denial(&status).violations[0]
            .message
            .contains("client reporter"),
        "{}",
        status.message()
    );
    let started_by = h.audit_records().into_iter().find_map(|r| match r.event {
        AuditEvent::WorkflowStarted {
            workflow_id,
            caller,
            ..
        } if workflow_id == info.id => Some(caller),
        _ => None,
    });
    assert!(
        started_by
            .as_deref()
            .is_some_and(|c| c.starts_with("reporter (token")),
        "the audit names who started it: {started_by:?}"
    );
}

#[tokio::test]
async fn a_template_bound_mcp_session_sees_only_its_tools_and_is_denied_another() {
    use rmcp::ServiceExt;
    use rmcp::model::CallToolRequestParams;
    let (h, _) = harness(json!([]), |_| {}).await;
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(format!(
        "{}/mcp",
        h.orchestrator.http_url()
    ));
    let client = ().serve(transport).await.expect("initialize");
    let all = client.list_all_tools().await.expect("tools/list");
    assert!(all.iter().any(|t| t.name == "create_backup"));
    let mut bind = CallToolRequestParams::new("conductor_start_workflow");
    bind.arguments = json!({ "template": "order_summary", "input": { "orders": [] } })
        .as_object()
        .cloned();
    client.call_tool(bind).await.expect("bind the session");
    let names: Vec<String> = client
        .list_all_tools()
        .await
        .expect("tools/list")
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        names.contains(&"validate_data".to_owned()) && names.contains(&"process_data".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"create_backup".to_owned()),
        "only the template's tools (and the binding tool): {names:?}"
    );
    let mut other = CallToolRequestParams::new("create_backup");
    other.arguments = json!({ "name": "x", "data": 1 }).as_object().cloned();
    let result = client.call_tool(other).await.expect("a tool result");
    assert_eq!(result.is_error, Some(true));
    let text: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert!(
        text.contains("allow_list") || text.contains("not among the tools"),
        "{text}"
    );
    client.cancel().await.expect("close");
}

async fn gated_call(
    h: &Harness,
    wf: &str,
) -> (
    tokio::task::JoinHandle<Result<tonic::Response<pb::WorkflowCallResponse>, Status>>,
    pb::ApprovalInfo,
) {
    let (mut client, id) = (h.client.clone(), wf.to_owned());
    let task = tokio::spawn(async move {
        let mut request = Request::new(pb::WorkflowCallRequest {
            workflow_id: id,
            tool: "list_backups".into(),
            arguments_json: r#"{}"#.into(),
        });
        request
            .metadata_mut()
            .insert(AUTHORIZATION, "Bearer t-dana".parse().expect("header"));
        client.call_tool(request).await
    });
    (task, h.wait_pending(wf).await)
}

const AUTHORIZATION: &str = "authorization";

/// Clients who are approvers, each known by its token `t-NAME`.
fn approvers(config: &mut Value) {
    config["clients"] = json!({
        "dana": { "tools": ["*"], "token": "t-dana", "approve": true },
        "erin": { "token": "t-erin", "approve": true },
        "frank": { "token": "t-frank", "approve": true }
    });
}

fn decide_as(id: &str, who: &str, digest: &str) -> Request<pb::ApprovalDecisionRequest> {
    let mut request = Request::new(pb::ApprovalDecisionRequest {
        approval_id: id.into(),
        approver: String::new(),
        reason: "checked".into(),
        arguments_digest: digest.into(),
    });
    request.metadata_mut().insert(
        AUTHORIZATION,
        format!("Bearer t-{who}").parse().expect("header"),
    );
    request
}

#[tokio::test]
async fn approvals_are_bound_to_the_arguments_single_use_expiring_and_four_eyes() {
    let rules = json!([{ "id": "list-gate", "kind": "approval", "tool": "list_backups", "timeout": "1m", "four_eyes": true }]);
    let (h, _) = harness(rules, approvers).await;
    let mut start = Request::new(pb::StartWorkflowRequest::default());
    start
        .metadata_mut()
        .insert(AUTHORIZATION, "Bearer t-dana".parse().expect("header"));
    let wf = h
        .client
        .clone()
        .start_workflow(start)
        .await
        .expect("start")
        .into_inner()
        .id;
    let (task, pending) = gated_call(&h, &wf).await;
    assert!(
        pending.four_eyes && pending.workflow_caller.starts_with("dana (token"),
        "{pending:?}"
    );

    let wrong = h
        .client
        .clone()
        .approve(decide_as(&pending.id, "erin", &"0".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
    assert!(
        wrong.message().contains(&pending.arguments_digest),
        "{}",
        wrong.message()
    );
    let own = h
        .client
        .clone()
        .approve(decide_as(&pending.id, "dana", &pending.arguments_digest))
        .await
        .unwrap_err();
    assert_eq!(own.code(), tonic::Code::PermissionDenied);
    assert!(own.message().contains("four eyes"), "{}", own.message());
    let ok = h
        .client
        .clone()
        .approve(decide_as(&pending.id, "erin", &pending.arguments_digest))
        .await
        .expect("someone else approves");
    assert!(ok.into_inner().decided_by.starts_with("erin (token"));
    task.await.expect("task").expect("the call ran");
    let again = h
        .client
        .clone()
        .approve(decide_as(&pending.id, "frank", &pending.arguments_digest))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "single use");
}

#[tokio::test]
async fn an_expired_approval_is_refused() {
    let rules = json!([{ "id": "list-gate", "kind": "approval", "tool": "list_backups", "timeout": "300ms" }]);
    let (h, _) = harness(rules, approvers).await;
    let mut start = Request::new(pb::StartWorkflowRequest::default());
    start
        .metadata_mut()
        .insert(AUTHORIZATION, "Bearer t-dana".parse().expect("header"));
    let wf = h
        .client
        .clone()
        .start_workflow(start)
        .await
        .expect("start")
        .into_inner()
        .id;
    let (task, pending) = gated_call(&h, &wf).await;
    let status = task.await.expect("task").unwrap_err();
    assert!(
        denial(&status).violations[0]
            .message
            .contains("not approved in time")
    );
    let late = h
        .client
        .clone()
        .approve(decide_as(&pending.id, "erin", ""))
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    assert!(late.message().contains("expired"), "{}", late.message());
}

#[tokio::test]
async fn reload_refuses_a_broken_file_and_applies_new_rules_to_new_workflows_only() {
    let (h, _) = harness(json!([]), |_| {}).await;
    let before = h.start_workflow("", json!({})).await;
    let version = h
        .client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .config_version;

    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(h.config_path()).expect("config"))
            .expect("json");
    let mut broken = good.clone();
    broken["rules"][0]["after"] = json!(["no_such_tool"]);
    std::fs::write(h.config_path(), broken.to_string()).expect("write");
    let refused = h
        .client
        .clone()
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("rules[0].after[0]"),
        "{}",
        refused.message()
    );
    // The refusal is recorded, with each problem at its JSON path.
    let recorded = h.audit_records().into_iter().any(|r| {
        matches!(&r.event, conductor_orchestrator::audit::AuditEvent::ConfigRefused { problems, .. }
            if problems.iter().any(|p| p.contains("rules[0].after[0]")))
    });
    assert!(recorded, "a refused reload is in the audit log");
    assert_eq!(
        h.client
            .clone()
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .config_version,
        version
    );

    let mut stricter = good;
    stricter["rules"].as_array_mut().expect("rules").push(json!({ "id": "schemas-after-validate", "kind": "sequence", "tool": "list_schemas", "after": ["validate_data"] }));
    std::fs::write(h.config_path(), stricter.to_string()).expect("write");
    let reloaded = h
        .client
        .clone()
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert_eq!(reloaded.previous_version, version);
    assert_ne!(reloaded.config_version, version);
    assert_eq!(reloaded.workflows_on_previous, 1);

    h.call(&before, "list_schemas", json!({}))
        .await
        .expect("the old workflow keeps the old rules");
    let after = h.start_workflow("", json!({})).await;
    let status = h.call(&after, "list_schemas", json!({})).await.unwrap_err();
    assert_eq!(
        denial(&status).violations[0].rule_id,
        "schemas-after-validate"
    );
    let versions: Vec<String> = decided(&h)
        .into_iter()
        .filter(|(tool, ..)| tool == "list_schemas")
        .map(|(.., v)| v)
        .collect();
    assert_eq!(
        versions,
        [version, reloaded.config_version],
        "each decision records the version it was made under"
    );
}
