//! The Streamable HTTP sessions the orchestrator keeps itself (`mcp::streamable`): `initialize` and
//! its negotiation, every kind of request in a session (notifications, `ping`, `tools/list`, calls
//! answered as JSON or, with progress, as an event stream, unknown methods), the standalone `GET`
//! stream, `DELETE`, unknown sessions, expiry, and the limits on sessions and streams (per server,
//! per session, per identity) — over real HTTP against an in-process orchestrator.

use crate::mcp_support;

use conductor_orchestrator::testing;
use mcp_support::{
    DEADLINE, INITIALIZE, OpenReply, RawReply, raw_get, raw_head, raw_post, with_config,
};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tool servers and an orchestrator on the shipped configuration (as a test adjusts it).
struct Stack {
    servers: conductor_servers::testing::ToolServers,
    orchestrator: testing::RunningOrchestrator,
    _audit: tempfile::TempDir,
}

const ALICE: &str = "alice-secret";
const BOB: &str = "bob-secret";
const PING: &str = r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#;

impl Stack {
    /// MCP sessions end after `idle` without a request.
    async fn start(idle: &str) -> Self {
        Stack::with(|config| config["mcp"]["session_idle_timeout"] = json!(idle)).await
    }

    async fn with(adjust: impl FnOnce(&mut Value)) -> Self {
        let (servers, orchestrator, audit) = with_config(adjust).await;
        Stack {
            servers,
            orchestrator,
            _audit: audit,
        }
    }

    /// Clients alice and bob (by token) beside anonymous callers, all allowed every tool, within
    /// the HTTP limits `limits`.
    async fn limited(limits: Value) -> Self {
        Stack::with(|config| {
            config["clients"] = json!({
                "alice": { "tools": ["*"], "token": ALICE },
                "bob": { "tools": ["*"], "token": BOB },
                "anonymous": { "tools": ["*"] }
            });
            config["listen"]["http_limits"] = limits;
        })
        .await
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

    /// `initialize` with `token` (none: anonymous).
    async fn initialize_as(&self, token: Option<&str>) -> RawReply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        raw_post(self.addr(), &headers, INITIALIZE).await
    }

    /// Opens a session with `token`; returns its id.
    async fn open_as(&self, token: Option<&str>) -> String {
        let reply = self.initialize_as(token).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.header("mcp-session-id").expect("a session id")
    }

    /// Sends `method /mcp` in session `id` with `token` and the other `extra` headers; the reply
    /// read up to its body.
    async fn in_session(
        &self,
        token: Option<&str>,
        id: &str,
        method: &str,
        extra: &[(&str, &str)],
        body: &str,
    ) -> OpenReply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = session_headers(auth.as_deref(), id);
        headers.extend_from_slice(extra);
        raw_head(self.addr(), method, &headers, body).await
    }

    /// POSTs `body` in session `id` with `token`; the reply read to its end.
    async fn post_as(&self, token: Option<&str>, id: &str, body: &str) -> RawReply {
        let auth = token.map(|t| format!("Bearer {t}"));
        raw_post(self.addr(), &session_headers(auth.as_deref(), id), body).await
    }

    /// Opens a standalone `GET` stream of session `id` with `token`; the connection stays open.
    async fn stream(&self, token: Option<&str>, id: &str) -> OpenReply {
        self.in_session(token, id, "GET", &[("Accept", "text/event-stream")], "")
            .await
    }

    async fn stop(self) {
        self.orchestrator.stop().await;
        self.servers.stop().await;
    }
}

/// The headers of a request in session `id`, with the `Authorization` value `auth` if any.
fn session_headers<'a>(auth: Option<&'a str>, id: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("Mcp-Session-Id", id),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    headers.extend(auth.map(|a| ("Authorization", a)));
    headers
}

/// Checks that `reply` refuses at the limit `listen.http_limits.FIELD` with `status` and a JSON-RPC
/// error (answering `id`) that names the limit and says what to do; returns its message.
fn assert_limit(reply: &RawReply, status: u16, field: &str, id: Value) -> String {
    assert_eq!(reply.status, status, "{reply:?}");
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    let error: Value = serde_json::from_str(&reply.body)
        .unwrap_or_else(|e| panic!("a JSON-RPC error ({e}): {reply:?}"));
    let limit = format!("listen.http_limits.{field}");
    assert_eq!(error["jsonrpc"], "2.0", "{error}");
    assert_eq!(error["id"], id, "{error}");
    assert_eq!(error["error"]["code"], -32000, "{error}");
    assert_eq!(error["error"]["data"]["limit"], limit.as_str(), "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&limit), "{message}");
    message.to_owned()
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
    let not_acceptable = raw_head(
        stack.addr(),
        "POST",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        INITIALIZE,
    )
    .await
    .reply;
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
    let stream = raw_head(
        addr,
        "GET",
        &[("Mcp-Session-Id", &id), ("Accept", "text/event-stream")],
        "",
    )
    .await
    .reply;
    assert_eq!(stream.status, 200, "{stream:?}");
    assert_eq!(
        stream.header("content-type").as_deref(),
        Some("text/event-stream"),
        "{stream:?}"
    );
    let refused = raw_head(
        addr,
        "GET",
        &[("Mcp-Session-Id", &id), ("Accept", "application/json")],
        "",
    )
    .await
    .reply;
    assert_eq!(refused.status, 406, "{refused:?}");

    let deleted = raw_head(addr, "DELETE", &[("Mcp-Session-Id", &id)], "")
        .await
        .reply;
    assert_eq!(deleted.status, 200, "{deleted:?}");
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

/// The finding: anonymous `initialize`s evicted another identity's open session once the bindings
/// were full, and the table itself grew without bound. Now a session's binding is its entry in a
/// bounded table: an identity past its share is refused (429), a full table refuses everyone new
/// (503), open sessions keep working throughout, and a `DELETE` gives a slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limits_refuse_newcomers_and_never_evict_open_sessions() {
    let stack = Stack::limited(json!({ "max_sessions": 4, "max_sessions_per_identity": 2 })).await;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_schemas","arguments":{}}}"#;
    let alice = stack.open_as(Some(ALICE)).await;
    let called = stack.post_as(Some(ALICE), &alice, call).await.json_answer();
    assert_eq!(called["result"]["isError"], false, "{called}");

    let anonymous = [stack.open_as(None).await, stack.open_as(None).await];
    for _ in 0..50 {
        let refused = stack.initialize_as(None).await;
        let message = assert_limit(&refused, 429, "max_sessions_per_identity", json!(1));
        assert!(
            message.contains("anonymous") && message.contains("DELETE"),
            "{message}"
        );
    }
    assert_eq!(stack.open_sessions(), 3, "refused handshakes open nothing");
    let called = stack.post_as(Some(ALICE), &alice, call).await.json_answer();
    assert_eq!(
        called["result"]["isError"], false,
        "the flood left alice's session alone: {called}"
    );

    let _alice_too = stack.open_as(Some(ALICE)).await;
    let full = stack.initialize_as(Some(BOB)).await;
    let message = assert_limit(&full, 503, "max_sessions", json!(1));
    assert!(message.contains("DELETE"), "{message}");
    for id in &anonymous {
        let pong = stack.post_as(None, id, PING).await.json_answer();
        assert_eq!(pong["result"], json!({}), "{pong}");
    }

    // Ownership still holds: another identity can neither use nor end a session, nor free its slot.
    let taken = stack
        .in_session(None, &alice, "DELETE", &[], "")
        .await
        .reply;
    assert_eq!(taken.status, 403, "{taken:?}");
    assert_limit(
        &stack.initialize_as(Some(BOB)).await,
        503,
        "max_sessions",
        json!(1),
    );

    let deleted = stack
        .in_session(None, &anonymous[0], "DELETE", &[], "")
        .await
        .reply;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    let bob = stack.open_as(Some(BOB)).await;
    let called = stack.post_as(Some(BOB), &bob, call).await.json_answer();
    assert_eq!(called["result"]["isError"], false, "{called}");
    assert_eq!(stack.open_sessions(), 4);
    let called = stack.post_as(Some(ALICE), &alice, call).await.json_answer();
    assert_eq!(called["result"]["isError"], false, "{called}");
    stack.stop().await;
}

/// A session that expires gives its identity's slot back, as a `DELETE` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_frees_its_slot() {
    let stack = Stack::with(|config| {
        config["mcp"]["session_idle_timeout"] = json!("1s");
        config["listen"]["http_limits"] =
            json!({ "max_sessions": 4, "max_sessions_per_identity": 1 });
    })
    .await;
    let first = stack.open_as(None).await;
    let refused = stack.initialize_as(None).await;
    let message = assert_limit(&refused, 429, "max_sessions_per_identity", json!(1));
    assert!(
        message.contains("1s"),
        "the message names the idle time-out: {message}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.open_sessions() > 0 {
        assert!(Instant::now() < deadline, "the session did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = stack.open_as(None).await;
    assert_ne!(first, second);
    stack.stop().await;
}

/// The finding: one anonymous session opened `GET` streams until they held every connection of the
/// listener, and `/healthz` hung. Now a session holds at most `max_streams_per_session` (409 past
/// it) and an identity `max_streams_per_identity` (429), the listener keeps serving, and a session's
/// streams end, and give their slots back, when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_streams_are_bounded_per_session_and_per_identity() {
    let stack = Stack::limited(json!({
        "max_connections": 8, "max_streams_per_session": 2, "max_streams_per_identity": 3
    }))
    .await;
    let first = stack.open_as(None).await;
    let second = stack.open_as(None).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let open = stack.stream(None, &first).await;
        assert_eq!(open.reply.status, 200, "{:?}", open.reply);
        held.push(open.connection);
    }
    let refused = stack.stream(None, &first).await.reply;
    let message = assert_limit(&refused, 409, "max_streams_per_session", Value::Null);
    assert!(message.contains("close one"), "{message}");
    let third = stack.stream(None, &second).await;
    assert_eq!(third.reply.status, 200, "{:?}", third.reply);
    let refused = stack.stream(None, &second).await.reply;
    let message = assert_limit(&refused, 429, "max_streams_per_identity", Value::Null);
    assert!(message.contains("anonymous"), "{message}");

    // The listener still serves: health, the sessions' own requests, another identity's streams.
    let health = raw_get(stack.addr(), "/healthz", &[]).await;
    assert_eq!(
        (health.status, health.body.as_str()),
        (200, "ok\n"),
        "{health:?}"
    );
    let pong = stack.post_as(None, &second, PING).await.json_answer();
    assert_eq!(pong["result"], json!({}), "{pong}");
    let alice = stack.open_as(Some(ALICE)).await;
    let alices = stack.stream(Some(ALICE), &alice).await;
    assert_eq!(alices.reply.status, 200, "{:?}", alices.reply);

    // Ending the session ends its streams at once, and their slots are the identity's again.
    let deleted = stack
        .in_session(None, &first, "DELETE", &[], "")
        .await
        .reply;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    for mut connection in held {
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, connection.read_to_end(&mut rest))
            .await
            .expect("the stream of an ended session ends")
            .expect("read");
    }
    let again = stack.stream(None, &second).await;
    assert_eq!(again.reply.status, 200, "{:?}", again.reply);
    stack.stop().await;
}
