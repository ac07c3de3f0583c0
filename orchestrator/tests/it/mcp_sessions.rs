//! The Streamable HTTP sessions the orchestrator keeps itself (`mcp::streamable`): `initialize` and
//! its negotiation, every kind of request in a session (notifications, `ping`, `tools/list`, calls
//! answered as JSON or, with progress, as an event stream, unknown methods), the standalone `GET`
//! stream, `DELETE`, unknown sessions, and expiry — over real HTTP against an in-process
//! orchestrator.

use crate::mcp_support;

use conductor_orchestrator::testing;
use mcp_support::{DEADLINE, INITIALIZE, RawReply, raw_post, with_idle_timeout};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tool servers and an orchestrator on the shipped configuration whose MCP sessions end after
/// `idle` without a request.
struct Stack {
    servers: conductor_servers::testing::ToolServers,
    orchestrator: testing::RunningOrchestrator,
    _audit: tempfile::TempDir,
}

impl Stack {
    async fn start(idle: &str) -> Self {
        let (servers, orchestrator, audit) = with_idle_timeout(idle).await;
        Stack {
            servers,
            orchestrator,
            _audit: audit,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.orchestrator.http_addr
    }

    fn open_sessions(&self) -> usize {
        self.orchestrator.gateway.metrics().mcp_sessions()
    }

    /// Opens a session; returns its id.
    async fn open(&self) -> String {
        let reply = raw_post(self.addr(), &[], INITIALIZE).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.header("mcp-session-id").expect("a session id")
    }

    /// POSTs `body` in session `id`.
    async fn post(&self, id: &str, body: &str) -> RawReply {
        raw_post(
            self.addr(),
            &[
                ("Mcp-Session-Id", id),
                ("MCP-Protocol-Version", "2025-11-25"),
            ],
            body,
        )
        .await
    }

    async fn stop(self) {
        self.orchestrator.stop().await;
        self.servers.stop().await;
    }
}

/// Sends a raw request (only `Host` and `extra` as headers) over a fresh connection and returns the
/// status line and headers, leaving the body (an event stream that may never end) unread.
async fn head_of(addr: SocketAddr, method: &str, extra: &[(&str, &str)], body: &str) -> RawReply {
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let mut request =
            format!("{method} /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (name, value) in extra {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut raw = Vec::new();
        let mut buf = [0u8; 1024];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before the headers: {:?}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        }
        raw
    };
    let raw = tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the headers arrived in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    RawReply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialize_opens_a_session_with_the_sdks_negotiation() {
    let stack = Stack::start("10m").await;
    let before = stack.open_sessions();
    let reply = raw_post(stack.addr(), &[], INITIALIZE).await;
    let opened = reply.json_answer();
    let id = reply.header("mcp-session-id").expect("a session id");
    assert_eq!(opened["id"], 1, "{opened}");
    let result = &opened["result"];
    assert_eq!(result["protocolVersion"], "2025-11-25", "{opened}");
    assert_eq!(result["serverInfo"]["name"], "conductorio", "{opened}");
    assert!(result["capabilities"]["tools"].is_object(), "{opened}");
    assert!(
        result["instructions"]
            .as_str()
            .is_some_and(|t| t.contains("conductor_start_workflow")),
        "{opened}"
    );
    assert_eq!(stack.open_sessions(), before + 1);

    // An older version is kept; the session-free era's version is answered with the newest
    // handshake version; a header that contradicts the body is refused, and opens nothing.
    for (asked, agreed) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-06-18", "2025-06-18"),
        ("2026-07-28", "2025-11-25"),
    ] {
        let body = INITIALIZE.replace("2025-11-25", asked);
        let reply = raw_post(stack.addr(), &[], &body).await;
        assert_eq!(
            reply.json_answer()["result"]["protocolVersion"],
            agreed,
            "{reply:?}"
        );
        assert!(reply.header("mcp-session-id").is_some(), "{reply:?}");
    }
    let open = stack.open_sessions();
    let refused = raw_post(
        stack.addr(),
        &[("MCP-Protocol-Version", "2025-06-18")],
        INITIALIZE,
    )
    .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    let error: Value = serde_json::from_str(&refused.body).expect("a JSON-RPC error");
    assert_eq!(
        (error["id"].clone(), error["error"]["code"].clone()),
        (json!(1), json!(-32600))
    );
    assert!(refused.header("mcp-session-id").is_none(), "{refused:?}");
    let not_acceptable = head_of(
        stack.addr(),
        "POST",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        INITIALIZE,
    )
    .await;
    assert_eq!(not_acceptable.status, 406, "{not_acceptable:?}");
    assert_eq!(
        stack.open_sessions(),
        open,
        "refused handshakes open no session"
    );

    assert_ne!(id, stack.open().await, "every session has its own id");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_request_in_a_session_is_answered() {
    let stack = Stack::start("10m").await;
    let id = stack.open().await;

    let initialized = stack
        .post(
            &id,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        )
        .await;
    assert_eq!(initialized.status, 202, "{initialized:?}");
    let cancelled = stack
        .post(
            &id,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}"#,
        )
        .await;
    assert_eq!(cancelled.status, 202, "{cancelled:?}");

    let pong = stack
        .post(&id, r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#)
        .await
        .json_answer();
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": "p", "result": {}}));

    let listed = stack
        .post(
            &id,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#,
        )
        .await
        .json_answer();
    let tools: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        tools.contains(&"validate_data") && tools.contains(&"conductor_start_workflow"),
        "{tools:?}"
    );

    let unknown = stack
        .post(
            &id,
            r#"{"jsonrpc":"2.0","id":3,"method":"no/such_method","params":{}}"#,
        )
        .await
        .json_answer();
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    let started = stack.post(&id, r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"conductor_start_workflow","arguments":{}}}"#).await.json_answer();
    let workflow = started["result"]["_meta"]["io.conductorio/workflowId"].clone();
    assert!(workflow.is_string(), "{started}");
    let called = stack.post(&id, r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"list_schemas","arguments":{}}}"#).await.json_answer();
    assert_ne!(called["result"]["isError"], true, "{called}");
    assert_eq!(
        called["result"]["_meta"]["io.conductorio/workflowId"], workflow,
        "the session's calls belong to the workflow it bound: {called}"
    );
    let view = stack
        .orchestrator
        .gateway
        .workflow(workflow.as_str().expect("an id"), false)
        .expect("the workflow");
    assert!(
        view.caller.contains("raw-http-test"),
        "the client's name from initialize labels the workflow: {}",
        view.caller
    );

    let batch = stack
        .post(&id, r#"[{"jsonrpc":"2.0","id":6,"method":"ping"}]"#)
        .await;
    assert_eq!(
        batch.status, 400,
        "batches are refused, as before: {batch:?}"
    );
    let error: Value = serde_json::from_str(&batch.body).expect("a JSON-RPC error");
    assert_eq!(error["error"]["code"], -32600, "{error}");
    stack.stop().await;
}

/// A call that waits for a person, asked with a `progressToken`, is answered as an event stream:
/// the progress notification names the approval, then the result follows once it is approved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_for_approval_streams_its_progress_then_its_result() {
    let stack = Stack::start("10m").await;
    let addr = stack.addr();
    let id = stack.open().await;
    let body = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"restore_backup","arguments":{"name":"no-such-snapshot"},"_meta":{"progressToken":"p-6"}}}"#;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let progress = async {
        while !String::from_utf8_lossy(&raw).contains("notifications/progress") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(
                n > 0,
                "closed before any progress: {}",
                String::from_utf8_lossy(&raw)
            );
            raw.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, progress)
        .await
        .expect("progress arrived in time");
    let pending = stack.orchestrator.gateway.pending_approvals();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let so_far = String::from_utf8_lossy(&raw).into_owned();
    assert!(
        so_far.contains("text/event-stream") && so_far.contains(&pending[0].id),
        "the progress names the approval: {so_far}"
    );
    stack
        .orchestrator
        .gateway
        .decide_approval(&pending[0].id, true, "grpc:ops", "go")
        .await
        .expect("approved");
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut raw))
        .await
        .expect("the stream ended in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    let result = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .find(|message| message["id"] == 6)
        .unwrap_or_else(|| panic!("no answer with id 6 on the stream: {text}"));
    assert!(result["result"].is_object(), "{result}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_opens_a_stream_and_delete_ends_the_session() {
    let stack = Stack::start("10m").await;
    let addr = stack.addr();
    let id = stack.open().await;
    let open = stack.open_sessions();
    let stream = head_of(
        addr,
        "GET",
        &[("Mcp-Session-Id", &id), ("Accept", "text/event-stream")],
        "",
    )
    .await;
    assert_eq!(stream.status, 200, "{stream:?}");
    assert_eq!(
        stream.header("content-type").as_deref(),
        Some("text/event-stream"),
        "{stream:?}"
    );
    let refused = head_of(
        addr,
        "GET",
        &[("Mcp-Session-Id", &id), ("Accept", "application/json")],
        "",
    )
    .await;
    assert_eq!(refused.status, 406, "{refused:?}");

    let deleted = head_of(addr, "DELETE", &[("Mcp-Session-Id", &id)], "").await;
    assert_eq!(deleted.status, 202, "{deleted:?}");
    assert_eq!(stack.open_sessions(), open - 1);
    let after = stack
        .post(
            &id,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}"#,
        )
        .await;
    assert_eq!(after.status, 404, "an ended session is gone: {after:?}");
    let unknown = stack
        .post(
            "00000000-0000-4000-8000-000000000000",
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        )
        .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let garbage = stack
        .post(
            "not-a-session",
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        )
        .await;
    assert_eq!(garbage.status, 404, "{garbage:?}");
    stack.stop().await;
}

/// Sessions nobody uses end by themselves: the gauge returns to zero and their ids are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire() {
    let stack = Stack::start("1s").await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(stack.open().await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.open_sessions() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} sessions still open",
            stack.open_sessions()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &ids {
        let reply = stack
            .post(id, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#)
            .await;
        assert_eq!(reply.status, 404, "an expired session is gone: {reply:?}");
    }
    stack.stop().await;
}
