//! The orchestrator as an MCP client: a Python MCP server (written with the official SDK) as a child
//! process over stdio, and another orchestrator's `/mcp` over Streamable HTTP. Their tools are listed,
//! policy-checked and audited like gRPC tools; a crash, a hang or garbage on stdout gives a clear error
//! and the next call starts the server again.

use crate::mcp_support;

use conductor_orchestrator::audit::{AuditEvent, DecisionKind, Outcome};
use conductor_orchestrator::gateway::{CallResult, CallSpec};
use conductor_orchestrator::{Error, testing};
use mcp_support::{python, script, shipped_config, text};
use rmcp::RoleClient;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

fn echo_config() -> String {
    json!({
        "servers": {
            "echo": {
                "mcp_stdio": { "command": python(), "args": [script("echo_server.py")] },
                "tools": ["echo", "pid", "misbehave", "snapshot", "forecast", "count"],
                "timeout": "2s"
            }
        },
        "rules": [{ "id": "echo-first", "kind": "sequence", "tool": "pid", "after": ["echo"] }]
    })
    .to_string()
}

/// An orchestrator in front of the echo server, and an MCP client of it (the temporary directory
/// holds the audit log).
async fn echo_stack() -> (
    testing::RunningOrchestrator,
    RunningService<RoleClient, ()>,
    tempfile::TempDir,
) {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&echo_config(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let transport =
        StreamableHttpClientTransport::from_uri(format!("{}/mcp", orchestrator.http_url()));
    let client = ().serve(transport).await.expect("the MCP client initializes");
    (orchestrator, client, audit)
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    arguments: Value,
) -> CallToolResult {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    params.arguments = arguments.as_object().cloned();
    client
        .call_tool(params)
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

/// The downstream's process id, from the `pid` tool.
async fn pid(client: &RunningService<RoleClient, ()>) -> i64 {
    let result = call(client, "pid", json!({})).await;
    assert_eq!(result.is_error, Some(false), "pid: {}", text(&result));
    let value = result
        .structured_content
        .clone()
        .unwrap_or_else(|| serde_json::from_str(&text(&result)).unwrap_or(Value::Null));
    value
        .get("result")
        .unwrap_or(&value)
        .as_i64()
        .unwrap_or_else(|| panic!("pid is a number: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_stdio_server_is_listed_checked_audited_and_restarted() {
    let (orchestrator, client, _audit) = echo_stack().await;

    let tools = client.list_all_tools().await.expect("tools/list");
    let echo = tools
        .iter()
        .find(|t| t.name == "echo")
        .expect("the Python server's echo is listed");
    assert_eq!(
        echo.description.as_deref(),
        Some("Returns the text it was given.")
    );
    assert_eq!(
        echo.input_schema.get("required"),
        Some(&json!(["text"])),
        "{:?}",
        echo.input_schema
    );
    assert!(tools.iter().any(|t| t.name == "misbehave") && tools.iter().any(|t| t.name == "pid"));

    let denied = call(&client, "pid", json!({})).await;
    assert_eq!(denied.is_error, Some(true));
    assert!(
        text(&denied).contains("echo-first"),
        "the sequence rule applies to MCP tools: {}",
        text(&denied)
    );
    let echoed = call(&client, "echo", json!({ "text": "hello" })).await;
    assert_eq!(echoed.is_error, Some(false), "{}", text(&echoed));
    assert!(text(&echoed).contains("hello"), "{}", text(&echoed));
    let first = pid(&client).await;

    let crashed = call(&client, "misbehave", json!({ "mode": "crash" })).await;
    assert_eq!(crashed.is_error, Some(true));
    assert!(
        text(&crashed).contains(r#"server "echo" is unavailable"#),
        "a crash names the server: {}",
        text(&crashed)
    );
    let second = pid(&client).await;
    assert_ne!(first, second, "the next call started the server again");

    let hung = call(&client, "misbehave", json!({ "mode": "hang" })).await;
    assert_eq!(hung.is_error, Some(true));
    assert!(
        text(&hung).contains("did not answer within its time-out of 2s")
            && text(&hung).contains("its effect is unknown"),
        "a hang times out clearly, and claims nothing about what the server did: {}",
        text(&hung)
    );
    let third = pid(&client).await;
    assert_ne!(second, third, "the hung server was replaced");

    let garbage = call(&client, "misbehave", json!({ "mode": "garbage" })).await;
    assert_eq!(garbage.is_error, Some(true), "{}", text(&garbage));
    assert!(
        text(&garbage).contains("did not answer"),
        "garbage instead of an answer ends in a clear time-out: {}",
        text(&garbage)
    );
    let fourth = pid(&client).await;
    assert_ne!(third, fourth, "the server that wrote garbage was replaced");

    client.cancel().await.expect("the client closes");
    let dir = orchestrator.gateway.audit().dir().to_path_buf();
    orchestrator.stop().await;
    let records: Vec<AuditEvent> = conductor_audit::read_from::<AuditEvent>(&dir, 1)
        .expect("the audit log reads")
        .map(|r| r.expect("every record reads").event)
        .collect();
    let decided = |tool: &str, kind: DecisionKind| {
        records.iter().any(|e| matches!(e, AuditEvent::CallDecided { tool: t, decision, .. } if t == tool && *decision == kind))
    };
    let finished = |tool: &str, outcome: Outcome| {
        records.iter().any(|e| matches!(e, AuditEvent::CallFinished { tool: t, outcome: o, .. } if t == tool && *o == outcome))
    };
    assert!(decided("pid", DecisionKind::Deny), "the denial is audited");
    assert!(
        finished("echo", Outcome::Succeeded),
        "the MCP call is audited"
    );
    assert!(
        finished("misbehave", Outcome::Unavailable),
        "the crash is audited as unavailable"
    );
    assert!(
        finished("misbehave", Outcome::Failed),
        "the time-out is audited"
    );
}

/// Another orchestrator's `/mcp` as a Streamable HTTP downstream: listed and called; when it stops, the
/// call fails naming the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamable_http_server_is_listed_and_called() {
    let servers = conductor_servers::testing::spawn_all().await;
    let inner_audit = tempfile::tempdir().expect("temp dir");
    let inner = testing::spawn(&shipped_config(&servers, None), None, inner_audit.path())
        .await
        .expect("inner orchestrator starts");
    let config = json!({
        "servers": { "remote": { "mcp_url": format!("{}/mcp", inner.http_url()), "tools": ["validate_data", "list_schemas"], "timeout": "5s" } }
    });
    let outer_audit = tempfile::tempdir().expect("temp dir");
    let outer = testing::spawn(&config.to_string(), None, outer_audit.path())
        .await
        .expect("outer orchestrator starts");

    let tools = outer.gateway.tools().await;
    let validate = tools
        .iter()
        .find(|t| t.name == "validate_data")
        .expect("listed through MCP");
    assert_eq!(validate.server, "remote");
    assert_eq!(
        validate.input_schema["required"],
        json!(["records", "schema"]),
        "{}",
        validate.input_schema
    );

    let workflow = outer
        .gateway
        .start_workflow(None, Value::Null, "test")
        .await
        .expect("a workflow");
    let spec = |tool: &str| CallSpec {
        workflow_id: workflow.id.clone(),
        tool: tool.into(),
        arguments: json!({}),
        caller: "test".into(),
        step: None,
    };
    let listed = outer
        .gateway
        .call(spec("list_schemas"))
        .await
        .expect("the call runs");
    match &listed.result {
        CallResult::Succeeded(value) => assert!(value.to_string().contains("customer"), "{value}"),
        other => panic!("list_schemas over MCP: {other:?}"),
    }

    inner.stop().await;
    match outer.gateway.call(spec("list_schemas")).await {
        Err(Error::Unavailable { server, .. }) => assert_eq!(server, "remote"),
        Err(Error::Downstream { server, .. }) => assert_eq!(server, "remote"),
        other => panic!("a stopped MCP server is reported: {other:?}"),
    }
    outer.stop().await;
    servers.stop().await;
}

/// A downstream server written with rmcp, which answers every request of a session with an event
/// stream (a priming event, then the response), counting its `initialize`s.
#[derive(Clone)]
struct StreamingEcho {
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl rmcp::ServerHandler for StreamingEcho {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(
            rmcp::model::ServerCapabilities::builder()
                .enable_tools()
                .build(),
        )
    }

    async fn initialize(
        &self,
        request: rmcp::model::InitializeRequestParams,
        context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::InitializeResult, rmcp::ErrorData> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let schema = json!({ "type": "object", "properties": { "text": { "type": "string" } } });
        let schema = std::sync::Arc::new(schema.as_object().cloned().unwrap_or_default());
        Ok(rmcp::model::ListToolsResult::with_all_items(vec![
            rmcp::model::Tool::new("shout", "Returns its text in capitals.", schema.clone()),
            rmcp::model::Tool::new("fetch", "Reads a page from the open web.", schema)
                .annotate(rmcp::model::ToolAnnotations::new().open_world(true)),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        if request.name == "fetch" {
            return Ok(
                CallToolResult::success(vec![rmcp::model::ContentBlock::text("page")]).into(),
            );
        }
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(Value::as_str)
            .ok_or_else(|| rmcp::ErrorData::invalid_params("text is required", None))?;
        Ok(
            CallToolResult::success(vec![rmcp::model::ContentBlock::text(text.to_uppercase())])
                .into(),
        )
    }
}

type Sessions =
    std::sync::Arc<rmcp::transport::streamable_http_server::session::local::LocalSessionManager>;

/// Serves [`StreamingEcho`] on a loopback port: its address, its `initialize` count, its sessions.
async fn streaming_echo() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    Sessions,
    tokio::task::JoinHandle<()>,
) {
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sessions = Sessions::default();
    let handler = StreamingEcho {
        opened: opened.clone(),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        sessions.clone(),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let app = axum::Router::new().nest_service("/mcp", service);
        let _ = axum::serve(listener, app).await;
    });
    (addr, opened, sessions, server)
}

/// The orchestrator's HTTP client against a server that streams its answers: the tool is listed and
/// called; refused arguments are the server's words; and when the server forgets the session (as after
/// its own idle time-out), the next call opens a new one and runs, without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_http_server_is_called_and_a_forgotten_session_is_opened_again() {
    let (addr, opened, sessions, server) = streaming_echo().await;
    let config = json!({
        "servers": { "loud": { "mcp_url": format!("http://{addr}/mcp"), "tools": ["shout"], "timeout": "5s" } }
    });
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let gateway = &orchestrator.gateway;
    let tools = gateway.tools().await;
    assert!(
        tools
            .iter()
            .any(|t| t.name == "shout" && t.server == "loud"),
        "{tools:?}"
    );
    let workflow = gateway
        .start_workflow(None, Value::Null, "test")
        .await
        .expect("a workflow");
    let shout = |arguments: Value| CallSpec {
        workflow_id: workflow.id.clone(),
        tool: "shout".into(),
        arguments,
        caller: "test".into(),
        step: None,
    };
    let loud = gateway
        .call(shout(json!({"text": "hello"})))
        .await
        .expect("runs");
    match &loud.result {
        CallResult::Succeeded(value) => assert_eq!(value, &json!("HELLO")),
        other => panic!("shout: {other:?}"),
    }
    match gateway.call(shout(json!({}))).await {
        Err(error @ Error::ServerError { code: -32602, .. }) => {
            let said = error.to_string();
            assert!(said.contains("text is required"), "{said}");
            assert!(said.contains("refused the arguments of shout"), "{said}");
        }
        other => panic!("refused arguments are the server's words: {other:?}"),
    }
    assert_eq!(
        opened.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one session for all calls"
    );

    let ids: Vec<_> = sessions.sessions.read().await.keys().cloned().collect();
    for id in ids {
        rmcp::transport::streamable_http_server::SessionManager::close_session(&*sessions, &id)
            .await
            .expect("closed");
    }
    let again = gateway
        .call(shout(json!({"text": "again"})))
        .await
        .expect("runs");
    match &again.result {
        CallResult::Succeeded(value) => assert_eq!(value, &json!("AGAIN")),
        other => panic!("after the server forgot the session: {other:?}"),
    }
    assert_eq!(
        opened.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "a new session, once"
    );
    orchestrator.stop().await;
    server.abort();
}

/// A downstream tool annotated `openWorldHint` is `untrusted` (the annotation default) from the very
/// first call, with no listing asked for first: a flow rule then refuses egress after it, naming the
/// call that brought the label in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_of_a_downstream_tool_give_labels_that_flow_rules_follow() {
    let (addr, _opened, _sessions, server) = streaming_echo().await;
    let config = json!({
        "servers": { "web": { "mcp_url": format!("http://{addr}/mcp"), "tools": ["shout", "fetch"], "timeout": "5s" } },
        "labels": { "shout": ["egress"] },
        "rules": [{ "id": "no-untrusted-egress", "kind": "flow", "from": ["untrusted"], "to": "egress", "action": "deny" }]
    });
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let gateway = &orchestrator.gateway;
    let workflow = gateway
        .start_workflow(None, Value::Null, "test")
        .await
        .expect("a workflow");
    let spec = |tool: &str, arguments: Value| CallSpec {
        workflow_id: workflow.id.clone(),
        tool: tool.into(),
        arguments,
        caller: "test".into(),
        step: None,
    };
    let shouted = gateway
        .call(spec("shout", json!({"text": "before"})))
        .await
        .expect("runs");
    assert!(
        matches!(shouted.result, CallResult::Succeeded(_)),
        "{:?}",
        shouted.result
    );
    let fetched = gateway.call(spec("fetch", json!({}))).await.expect("runs");
    assert!(
        matches!(fetched.result, CallResult::Succeeded(_)),
        "{:?}",
        fetched.result
    );
    let refused = gateway
        .call(spec("shout", json!({"text": "leak"})))
        .await
        .expect("decided");
    match &refused.result {
        CallResult::Denied(violations) => {
            let v = violations
                .iter()
                .find(|v| v.rule_id.as_str() == "no-untrusted-egress")
                .unwrap_or_else(|| panic!("the flow rule: {violations:?}"));
            assert!(
                v.message.contains(&fetched.call_id) && v.message.contains("fetch"),
                "the refusal names the call that brought untrusted in: {}",
                v.message
            );
        }
        other => panic!("egress after an open-world read: {other:?}"),
    }
    // The same through the MCP front, as an AI application meets it: the model reads the rule and
    // the call that brought the risk in.
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{}/mcp",
            orchestrator.http_url()
        )))
        .await
        .expect("the rmcp client initializes");
    let fetched = call(&client, "fetch", json!({})).await;
    assert_ne!(fetched.is_error, Some(true), "{}", text(&fetched));
    let refused = call(&client, "shout", json!({"text": "leak"})).await;
    assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
    let said = text(&refused);
    assert!(
        said.contains("no-untrusted-egress") && said.contains("fetch"),
        "the model reads the rule and the earlier call: {said}"
    );
    let _ = client.cancel().await;
    orchestrator.stop().await;
    server.abort();
}

/// A faithful proxy (issue 28): an MCP server's results pass through unchanged (several blocks, an
/// image, structuredContent beside its text), and tools/list carries everything the server said of a
/// tool (title, annotations, output schema), while the audit log still keeps the domain value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_tool_metadata_pass_through_unchanged() {
    let (orchestrator, client, _audit) = echo_stack().await;

    let tools = client.list_all_tools().await.expect("tools/list");
    let forecast = tools
        .iter()
        .find(|t| t.name == "forecast")
        .expect("forecast is listed");
    assert_eq!(forecast.title.as_deref(), Some("Weather forecast"));
    let annotations = forecast.annotations.as_ref().expect("its annotations");
    assert_eq!(annotations.read_only_hint, Some(true));
    assert_eq!(annotations.destructive_hint, Some(false));
    let output = forecast.output_schema.as_ref().expect("its output schema");
    assert!(
        output
            .get("properties")
            .and_then(|p| p.get("celsius"))
            .is_some(),
        "{output:?}"
    );

    let snapshot = call(&client, "snapshot", json!({})).await;
    assert_eq!(snapshot.is_error, Some(false), "{snapshot:?}");
    assert_eq!(snapshot.content.len(), 2, "both blocks: {snapshot:?}");
    assert_eq!(
        snapshot.content[0].as_text().map(|t| t.text.as_str()),
        Some("a one-pixel picture")
    );
    let image = snapshot.content[1]
        .as_image()
        .expect("the image block, as an image");
    assert_eq!(image.mime_type, "image/png");
    assert!(image.data.starts_with("iVBORw0KGgo"), "{}", image.data);
    let meta = snapshot.meta.as_ref().expect("our _meta beside");
    assert!(meta.0.contains_key("io.conductorio/workflowId"), "{meta:?}");

    let forecast = call(&client, "forecast", json!({ "city": "Oslo" })).await;
    assert_eq!(forecast.is_error, Some(false), "{forecast:?}");
    assert_eq!(
        forecast.structured_content,
        Some(json!({ "city": "Oslo", "celsius": 21.5 }))
    );
    assert!(
        !forecast.content.is_empty() && forecast.content[0].as_text().is_some(),
        "the server's own text block stays beside structuredContent: {forecast:?}"
    );

    // The audit log keeps what templates and conditions read: the structured value.
    client.cancel().await.expect("the client closes");
    let dir = orchestrator.gateway.audit().dir().to_path_buf();
    orchestrator.stop().await;
    let kept = conductor_audit::read_from::<AuditEvent>(&dir, 1)
        .expect("the audit log reads")
        .map(|r| r.expect("every record reads").event)
        .any(|e| {
            matches!(&e, AuditEvent::CallFinished { tool, outcome: Outcome::Succeeded, result: Some(value), .. }
                if tool == "forecast" && value["celsius"] == json!(21.5))
        });
    assert!(kept, "the forecast's value is in the log");
}

/// An MCP client that keeps the progress notifications it receives.
#[derive(Clone, Default)]
struct ProgressClient {
    heard: std::sync::Arc<std::sync::Mutex<Vec<rmcp::model::ProgressNotificationParam>>>,
}

impl rmcp::ClientHandler for ProgressClient {
    fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.heard.lock().expect("lock").push(params);
        std::future::ready(())
    }
}

/// Progress flows through (issue 28): a client that asked for progress hears what the server
/// reports (under a token of the gateway's), under its own token, in order, with its messages.
/// Before, the server's progress was read past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_progress_reaches_the_client_that_asked_for_it() {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&echo_config(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let transport =
        StreamableHttpClientTransport::from_uri(format!("{}/mcp", orchestrator.http_url()));
    let listener = ProgressClient::default();
    let client = listener
        .clone()
        .serve(transport)
        .await
        .expect("the MCP client initializes");
    let mut params = CallToolRequestParams::new("count");
    params.arguments = json!({ "n": 3 }).as_object().cloned();
    let counted = client.call_tool(params).await.expect("tools/call count");
    assert_eq!(counted.is_error, Some(false), "{counted:?}");
    assert!(
        text(&counted).contains("counted to 3"),
        "{}",
        text(&counted)
    );
    let heard = listener.heard.lock().expect("lock").clone();
    let messages: Vec<&str> = heard.iter().filter_map(|p| p.message.as_deref()).collect();
    // In order and as the server said them. The SDK handles each notification in a task of its
    // own, so one sent just before the result may lose the race with it: progress is advisory.
    let said = ["step 1 of 3", "step 2 of 3", "step 3 of 3"];
    assert!(
        !messages.is_empty() && said.starts_with(&messages),
        "the server's progress, in order: {heard:?}"
    );
    assert!(
        heard
            .windows(2)
            .all(|w| w[0].progress_token == w[1].progress_token && w[0].progress < w[1].progress),
        "one token (the client's own), progress only grows: {heard:?}"
    );
    assert_eq!(heard[0].total, Some(3.0), "{heard:?}");
    client.cancel().await.expect("the client closes");
    orchestrator.stop().await;
}
