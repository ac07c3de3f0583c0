//! The MCP HTTP front's edges: `Origin` validation, ambiguous credentials, malformed JSON-RPC frames,
//! and rmcp's own client (the Rust SDK) against `/mcp`, including how long a plain round trip takes.

use crate::mcp_support;

use conductor_orchestrator::testing;
use mcp_support::{
    INITIALIZE, params, raw_get, raw_head, raw_post, shipped_config, text, with_config,
    with_idle_timeout,
};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The tool servers and an orchestrator on the shipped configuration, with its audit directory.
struct Stack {
    servers: conductor_servers::testing::ToolServers,
    orchestrator: testing::RunningOrchestrator,
    _audit: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Self {
        let servers = conductor_servers::testing::spawn_all().await;
        let audit = tempfile::tempdir().expect("temp dir");
        let orchestrator = testing::spawn(&shipped_config(&servers, None), None, audit.path())
            .await
            .expect("orchestrator starts");
        Stack {
            servers,
            orchestrator,
            _audit: audit,
        }
    }

    /// A session of rmcp's own client on the orchestrator's `/mcp`.
    async fn rmcp_client(&self) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
        let url = format!("{}/mcp", self.orchestrator.http_url());
        let transport = StreamableHttpClientTransport::from_uri(url);
        ().serve(transport)
            .await
            .expect("the rmcp client initializes")
    }

    async fn stop(self) {
        self.orchestrator.stop().await;
        self.servers.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_are_refused_and_loopback_origins_pass() {
    let stack = Stack::start().await;
    let orchestrator = &stack.orchestrator;
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example:8080",
        "null",
    ] {
        let reply = raw_post(orchestrator.http_addr, &[("Origin", origin)], INITIALIZE).await;
        assert_eq!(reply.status, 403, "Origin {origin}: {reply:?}");
        assert!(
            reply.body.contains("allowed_origins"),
            "the refusal says how to allow it: {}",
            reply.body
        );
    }
    for origin in ["http://localhost:6274", "http://127.0.0.1:3000"] {
        let reply = raw_post(orchestrator.http_addr, &[("Origin", origin)], INITIALIZE).await;
        assert_eq!(reply.status, 200, "Origin {origin}: {reply:?}");
        assert!(
            reply.header("mcp-session-id").is_some(),
            "a session was created: {reply:?}"
        );
    }
    let reply = raw_post(orchestrator.http_addr, &[], INITIALIZE).await;
    assert_eq!(
        reply.status, 200,
        "no Origin (a non-browser client): {reply:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_origins_pass() {
    let servers = conductor_servers::testing::spawn_all().await;
    let audit = tempfile::tempdir().expect("temp dir");
    let mut config: Value = serde_json::from_str(&shipped_config(&servers, None)).expect("JSON");
    config["mcp"] = json!({ "allowed_origins": ["https://app.example.com"] });
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let reply = raw_post(
        orchestrator.http_addr,
        &[("Origin", "https://app.example.com")],
        INITIALIZE,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = raw_post(
        orchestrator.http_addr,
        &[("Origin", "https://other.example.com")],
        INITIALIZE,
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    orchestrator.stop().await;
    servers.stop().await;
}

/// The finding: a request with two `Authorization` headers was served as the first one's identity
/// (a proxy in front may have checked the other). Now every route that reads credentials refuses it
/// with 400 and says to send one, whatever the order or the tokens, and opens, uses or ends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_authorization_headers_is_refused() {
    const ALICE: &str = "Bearer alice-secret";
    const SCRAPER: &str = "Bearer scraper-secret";
    let (servers, orchestrator, _audit) = with_config(|config| {
        config["clients"] = json!({ "alice": { "tools": ["*"], "token": "alice-secret" } });
        config["auth"] = json!({ "metrics": { "token": "scraper-secret" } });
    })
    .await;
    let addr = orchestrator.http_addr;
    let check = |reply: &mcp_support::RawReply, what: &str| {
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        assert!(
            reply.body.contains("more than one Authorization header")
                && reply.body.contains("exactly one"),
            "{what}: {}",
            reply.body
        );
        assert!(
            reply.header("mcp-session-id").is_none(),
            "{what}: {reply:?}"
        );
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.contains("invalid_request")),
            "{what}: {reply:?}"
        );
    };
    for pair in [
        [ALICE, ALICE],
        [ALICE, "Bearer wrong"],
        ["Bearer wrong", ALICE],
        [ALICE, ""],
    ] {
        let reply = raw_post(
            addr,
            &[("Authorization", pair[0]), ("Authorization", pair[1])],
            INITIALIZE,
        )
        .await;
        check(&reply, &format!("initialize with {pair:?}"));
    }
    let sessions = orchestrator.gateway.metrics().mcp_sessions();
    assert_eq!(sessions, 0, "no refused request opened a session");

    let opened = raw_post(addr, &[("Authorization", ALICE)], INITIALIZE).await;
    assert_eq!(opened.status, 200, "{opened:?}");
    let id = opened.header("mcp-session-id").expect("a session id");
    let in_session = [
        ("Authorization", ALICE),
        ("Authorization", ALICE),
        ("Mcp-Session-Id", id.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let ping = r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#;
    check(
        &raw_post(addr, &in_session, ping).await,
        "POST in a session",
    );
    let mut with_accept = in_session.to_vec();
    with_accept.push(("Accept", "text/event-stream"));
    check(
        &raw_head(addr, "GET", &with_accept, "").await.reply,
        "GET in a session",
    );
    check(
        &raw_head(addr, "DELETE", &in_session, "").await.reply,
        "DELETE of a session",
    );
    let pong = raw_post(
        addr,
        &[
            ("Authorization", ALICE),
            ("Mcp-Session-Id", id.as_str()),
            ("MCP-Protocol-Version", "2025-11-25"),
        ],
        ping,
    )
    .await
    .json_answer();
    assert_eq!(
        pong["result"],
        json!({}),
        "the session is still open: {pong}"
    );

    let scrape = raw_get(
        addr,
        "/metrics",
        &[("Authorization", SCRAPER), ("Authorization", SCRAPER)],
    )
    .await;
    check(&scrape, "/metrics");
    let scrape = raw_get(addr, "/metrics", &[("Authorization", SCRAPER)]).await;
    assert_eq!(scrape.status, 200, "{scrape:?}");
    orchestrator.stop().await;
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_json_rpc_errors_and_the_server_stays_up() {
    let stack = Stack::start().await;
    let orchestrator = &stack.orchestrator;
    let addr = orchestrator.http_addr;

    let reply = raw_post(addr, &[], "{this is not json").await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let error: Value = serde_json::from_str(&reply.body).expect("a JSON-RPC error body");
    assert_eq!(error["error"]["code"], -32700, "{error}");

    let reply = raw_post(
        addr,
        &[],
        r#"{"jsonrpc":"1.0","id":7,"method":"initialize","params":{}}"#,
    )
    .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let error: Value = serde_json::from_str(&reply.body).expect("a JSON-RPC error body");
    assert_eq!(
        (error["error"]["code"].clone(), error["id"].clone()),
        (json!(-32600), json!(7)),
        "{error}"
    );

    let reply = raw_post(addr, &[], r#"[1, 2, 3]"#).await;
    assert_eq!(reply.status, 400, "{reply:?}");

    let opened = raw_post(addr, &[], INITIALIZE).await;
    let session = opened
        .header("mcp-session-id")
        .expect("initialize opens a session");
    let headers = [
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let reply = raw_post(
        addr,
        &headers,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let reply = raw_post(
        addr,
        &headers,
        r#"{"jsonrpc":"2.0","id":2,"method":"no/such_method","params":{}}"#,
    )
    .await;
    assert!(
        reply.body.contains("-32601"),
        "an unknown method gets METHOD_NOT_FOUND: {reply:?}"
    );
    let reply = raw_post(addr, &headers, r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"no_such_tool","arguments":{}}}"#).await;
    assert!(
        reply.body.contains("-32602") && reply.body.contains("unknown tool"),
        "an unknown tool is a protocol error: {reply:?}"
    );
    let reply = raw_post(
        addr,
        &headers,
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":42}}"#,
    )
    .await;
    assert!(
        reply.status == 400 || reply.body.contains("\"error\""),
        "a malformed tools/call is refused: {reply:?}"
    );

    let reply = raw_post(
        addr,
        &headers,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#,
    )
    .await;
    assert!(
        reply.body.contains("validate_data"),
        "the session still works: {reply:?}"
    );
    let reply = raw_post(addr, &[], INITIALIZE).await;
    assert_eq!(
        reply.status, 200,
        "the server still accepts sessions: {reply:?}"
    );
    stack.stop().await;
}

/// rmcp's own client: the same policies through `/mcp`, and a round trip that shows no Nagle delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmcp_client_calls_through_the_policies() {
    let stack = Stack::start().await;
    let client = stack.rmcp_client().await;
    let info = client.peer_info().expect("a handshake took place");
    assert_eq!(
        info.server_info.as_ref().map(|s| s.name.as_str()),
        Some("conductorio")
    );

    let tools = client.list_all_tools().await.expect("tools/list");
    let validate = tools
        .iter()
        .find(|t| t.name == "validate_data")
        .expect("validate_data listed");
    assert!(
        validate.input_schema.contains_key("properties"),
        "{:?}",
        validate.input_schema
    );

    let records = json!([{ "id": "1", "name": "Ada", "email": "ada@example.com" }]);
    let denied = client
        .call_tool(params("process_data", json!({ "records": records })))
        .await
        .expect("tools/call");
    assert_eq!(denied.is_error, Some(true));
    assert!(
        text(&denied).contains("process-after-validate"),
        "{}",
        text(&denied)
    );
    let validated = client
        .call_tool(params(
            "validate_data",
            json!({ "records": records, "schema": "customer" }),
        ))
        .await
        .expect("tools/call");
    assert_eq!(validated.is_error, Some(false), "{}", text(&validated));
    assert_eq!(
        validated
            .structured_content
            .as_ref()
            .map(|v| v["valid"].clone()),
        Some(json!(true))
    );
    let processed = client
        .call_tool(params("process_data", json!({ "records": records })))
        .await
        .expect("tools/call");
    assert_eq!(processed.is_error, Some(false), "{}", text(&processed));

    let invalid = client
        .call_tool(params("validate_data", json!({ "records": "not a list" })))
        .await
        .expect("tools/call");
    assert_eq!(
        invalid.is_error,
        Some(true),
        "bad arguments are a tool error the model can read: {}",
        text(&invalid)
    );

    let mut times = Vec::new();
    for _ in 0..21 {
        let started = Instant::now();
        client.list_all_tools().await.expect("tools/list");
        times.push(started.elapsed());
    }
    times.sort();
    assert!(
        times[10] < Duration::from_millis(20),
        "a tools/list round trip took {:?} (p50): is TCP_NODELAY set?",
        times[10]
    );

    client.cancel().await.expect("the client closes");
    stack.stop().await;
}

/// An MCP client that keeps its session (and its event stream) open must not keep the orchestrator
/// from stopping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_does_not_wait_for_open_mcp_sessions() {
    let stack = Stack::start().await;
    let client = stack.rmcp_client().await;
    client.list_all_tools().await.expect("tools/list");
    let Stack {
        servers,
        orchestrator,
        _audit,
    } = stack;
    tokio::time::timeout(mcp_support::DEADLINE, orchestrator.stop())
        .await
        .expect("the orchestrator stopped with a session open");
    drop(client);
    servers.stop().await;
}

/// A session's ad-hoc workflow ends with the session (so it does not stay "active" on the
/// dashboard), and no call can join it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_ad_hoc_workflow_ends_with_the_session() {
    use conductor_proto::v1 as pb;
    let stack = Stack::start().await;
    let orchestrator = &stack.orchestrator;
    let client = stack.rmcp_client().await;
    let records = json!([{ "id": "1", "name": "Ada", "email": "ada@example.com" }]);
    let validated = client
        .call_tool(params(
            "validate_data",
            json!({ "records": records, "schema": "customer" }),
        ))
        .await
        .expect("tools/call");
    assert_eq!(validated.is_error, Some(false), "{}", text(&validated));
    let workflow_id = validated
        .meta
        .as_ref()
        .and_then(|m| m.0.get("io.conductorio/workflowId"))
        .and_then(Value::as_str)
        .expect("the result names its workflow")
        .to_owned();
    let mut grpc = pb::orchestrator_client::OrchestratorClient::connect(orchestrator.grpc_url())
        .await
        .expect("gRPC connects");
    let state = |info: &pb::WorkflowInfo| pb::WorkflowState::try_from(info.state).ok();
    let get = pb::GetWorkflowRequest {
        workflow_id: workflow_id.clone(),
    };
    let open = grpc
        .get_workflow(get.clone())
        .await
        .expect("get")
        .into_inner();
    assert_eq!(state(&open), Some(pb::WorkflowState::Running));

    client
        .cancel()
        .await
        .expect("the client closes its session");
    let deadline = Instant::now() + mcp_support::DEADLINE;
    let ended = loop {
        let info = grpc
            .get_workflow(get.clone())
            .await
            .expect("get")
            .into_inner();
        if state(&info) != Some(pb::WorkflowState::Running) || Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        state(&ended),
        Some(pb::WorkflowState::Completed),
        "{ended:?}"
    );
    assert!(ended.error.contains("MCP session ended"), "{ended:?}");
    let late = grpc
        .call_tool(pb::WorkflowCallRequest {
            workflow_id: workflow_id.clone(),
            tool: "process_data".into(),
            arguments_json: json!({ "records": records }).to_string(),
        })
        .await;
    assert!(
        late.is_err(),
        "a call in the ended workflow is refused: {late:?}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_call_while_the_audit_log_cannot_be_written_is_a_tool_error_naming_the_log() {
    let stack = Stack::start().await;
    let client = stack.rmcp_client().await;
    let note = json!({"channel": "log", "recipient": "ops", "body": "hello"});
    let ok = client
        .call_tool(params("send_notification", note.clone()))
        .await
        .expect("a call while the disk takes records");
    assert_ne!(ok.is_error, Some(true), "{}", text(&ok));
    let audit = stack.orchestrator.gateway.audit().clone();
    audit.inject_full_disk(true);
    let refused = client
        .call_tool(params("send_notification", note))
        .await
        .expect("a tool error, not a protocol error");
    audit.inject_full_disk(false);
    assert_eq!(refused.is_error, Some(true), "{}", text(&refused));
    let said = text(&refused);
    assert!(
        said.contains(&stack.orchestrator.audit_dir.display().to_string())
            && said.contains("No space left on device"),
        "the error names the audit directory and the OS error: {said}"
    );
    let _ = client.cancel().await;
}

#[tokio::test]
async fn an_idle_mcp_session_ends_as_a_delete_would() {
    let (_servers, orchestrator, _audit) = with_idle_timeout("1s").await;
    let url = format!("{}/mcp", orchestrator.http_url());
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(url))
            .await
            .expect("the rmcp client initializes");
    let listed = client
        .call_tool(params("list_schemas", json!({})))
        .await
        .expect("a call");
    assert_ne!(listed.is_error, Some(true), "{}", text(&listed));
    let session_workflow = orchestrator
        .gateway
        .workflows(true, 10)
        .into_iter()
        .find(|w| w.caller.contains("mcp"))
        .expect("the session's workflow")
        .id;
    // Nothing either way for longer than the idle time-out: the session ends, and its workflow.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let view = orchestrator
            .gateway
            .workflow(&session_workflow, false)
            .expect("workflow");
        if view.state.is_finished() {
            break view;
        }
        assert!(Instant::now() < deadline, "the idle session did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended.error.as_deref(), Some("its MCP session ended"));
    let _ = client.cancel().await;
}

/// A plain tool call in a session is answered with one JSON body, not an event stream, through the
/// same policies and audit; a call that asks for progress still gets its stream; an unknown tool is
/// a JSON-RPC error either way; the session's calls share one workflow, named after its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_calls_in_a_session_are_answered_as_json_and_progress_calls_as_streams() {
    let stack = Stack::start().await;
    let addr = stack.orchestrator.http_addr;
    let opened = raw_post(addr, &[], INITIALIZE).await;
    let session = opened
        .header("mcp-session-id")
        .expect("initialize opens a session");
    let headers = [
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    let call = |id: u32, tool: &str, arguments: Value, meta: Option<Value>| {
        let mut params = json!({ "name": tool, "arguments": arguments });
        if let Some(meta) = meta {
            params["_meta"] = meta;
        }
        json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params }).to_string()
    };

    let refused = raw_post(
        addr,
        &headers,
        &call(2, "process_data", json!({"records": []}), None),
    )
    .await
    .json_answer();
    assert_eq!(refused["id"], 2, "{refused}");
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(
        refused["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("process-after-validate")),
        "the refusal names its rule: {refused}"
    );
    let workflow = refused["result"]["_meta"]["io.conductorio/workflowId"].clone();
    assert!(workflow.is_string(), "{refused}");

    let records = json!([{ "id": "c-1", "name": "Ada", "email": "ada@example.com" }]);
    let valid = raw_post(
        addr,
        &headers,
        &call(
            3,
            "validate_data",
            json!({"records": records, "schema": "customer"}),
            None,
        ),
    )
    .await
    .json_answer();
    assert_ne!(valid["result"]["isError"], true, "{valid}");
    assert_eq!(
        valid["result"]["_meta"]["io.conductorio/workflowId"],
        workflow
    );

    let unknown = raw_post(addr, &headers, &call(4, "no_such_tool", json!({}), None))
        .await
        .json_answer();
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    let streamed = raw_post(
        addr,
        &headers,
        &call(
            5,
            "process_data",
            json!({"records": records}),
            Some(json!({"progressToken": "p-1"})),
        ),
    )
    .await;
    assert_eq!(streamed.status, 200, "{streamed:?}");
    assert_eq!(
        streamed.header("content-type").as_deref(),
        Some("text/event-stream"),
        "{streamed:?}"
    );
    assert!(streamed.body.contains("\"id\":5"), "{streamed:?}");

    let workflow = workflow.as_str().expect("an id");
    let view = stack
        .orchestrator
        .gateway
        .workflow(workflow, true)
        .expect("the session's workflow");
    assert!(
        view.caller.contains("raw-http-test") && view.caller.contains("http session"),
        "the caller names the client and the session: {}",
        view.caller
    );
    let calls = view.calls.as_ref().expect("with its calls");
    let tools: Vec<&str> = calls.iter().map(|c| &*c.tool).collect();
    assert_eq!(tools, ["process_data", "validate_data", "process_data"]);
    stack.stop().await;
}

/// A session whose calls all take the JSON path stays open while it is used, past its idle
/// time-out, and ends once it is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_used_only_through_json_answers_stays_open_until_left_idle() {
    let (servers, orchestrator, _audit) = with_idle_timeout("2s").await;
    let addr = orchestrator.http_addr;
    let opened = raw_post(addr, &[], INITIALIZE).await;
    let session = opened.header("mcp-session-id").expect("a session");
    let headers = [("Mcp-Session-Id", session.as_str())];
    let list = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"list_schemas","arguments":{}}}"#;
    // Three idle time-outs' worth of calls, a fifth of a time-out apart (margin for a slow machine).
    for _ in 0..15 {
        let reply = raw_post(addr, &headers, list).await;
        assert_eq!(reply.status, 200, "the session is still open: {reply:?}");
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/json")
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        orchestrator.gateway.metrics().mcp_sessions(),
        1,
        "one session open"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = raw_post(addr, &headers, list).await;
        if reply.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle session did not end: {reply:?}"
        );
        // Longer than the time-out plus the reaper's tick: a poll is activity too.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert_eq!(
        orchestrator.gateway.metrics().mcp_sessions(),
        0,
        "none left open"
    );
    orchestrator.stop().await;
    servers.stop().await;
}

/// A call that waits for a person longer than the idle time-out keeps its session open: the
/// session is not idle while one of its requests is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_waiting_for_an_approval_is_not_idle() {
    let (servers, orchestrator, _audit) = with_idle_timeout("1s").await;
    let addr = orchestrator.http_addr;
    let opened = raw_post(addr, &[], INITIALIZE).await;
    let session = opened.header("mcp-session-id").expect("a session");
    let restore = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"restore_backup","arguments":{"name":"no-such-snapshot"},"_meta":{"progressToken":"p-6"}}}"#;
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move {
            raw_post(addr, &[("Mcp-Session-Id", session.as_str())], restore).await
        })
    };
    let gateway = &orchestrator.gateway;
    let deadline = Instant::now() + Duration::from_secs(20);
    while gateway.pending_approvals().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the call never waited for approval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two and a half idle time-outs with nothing but the waiting call.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pending = gateway.pending_approvals();
    assert_eq!(
        pending.len(),
        1,
        "the approval is still pending: {pending:?}"
    );
    gateway
        .decide_approval(&pending[0].id, true, "grpc:ops", "go")
        .await
        .expect("approved");
    let answered = waiting.await.expect("task");
    assert!(
        answered.body.contains("\"id\":6") && answered.body.contains("\"result\""),
        "the call's answer arrives on its stream: {answered:?}"
    );
    let again = raw_post(
        addr,
        &[("Mcp-Session-Id", session.as_str())],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}"#,
    )
    .await;
    assert_eq!(again.status, 200, "the session is still open: {again:?}");
    orchestrator.stop().await;
    servers.stop().await;
}
