//! Shared set-up of the MCP integration tests (`tests/it/mcp_*.rs`): the Python interpreter with the
//! official MCP SDK, configurations pointing at real in-process tool servers, approving through the
//! gRPC API, and running the Python scripts of `tests/python/`.

#![allow(dead_code)]

use conductor_proto::v1 as pb;
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_proto::v1::watch_event::Body;
use conductor_proto::v1::{ApprovalDecisionRequest, WatchRequest};
use conductor_servers::ServerKind;
use conductor_servers::testing::ToolServers;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The text parts of a tool result, one per line.
pub fn text(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `tools/call` request for `tool` with the JSON object `arguments`.
pub fn params(tool: &str, arguments: Value) -> rmcp::model::CallToolRequestParams {
    let mut params = rmcp::model::CallToolRequestParams::new(tool.to_owned());
    params.arguments = arguments.as_object().cloned();
    params
}

/// Every wait in these tests is bounded by this, so a failure is an error, not a hung test.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python interpreter with the `mcp` SDK: `$CONDUCTOR_TEST_PYTHON`, else `<repo>/.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("CONDUCTOR_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the MCP SDK at {}: run scripts/setup-python-venv.sh first (or set CONDUCTOR_TEST_PYTHON)",
        venv.display()
    );
    venv
}

pub fn script(name: &str) -> PathBuf {
    repo_root().join("tests/python").join(name)
}

/// The shipped `config/config.json` (its servers, rules and templates), pointed at the in-process
/// servers; `extra_servers` (a JSON object's members, without braces) are added to its servers.
pub fn shipped_config(servers: &ToolServers, extra_servers: Option<&str>) -> String {
    let path = repo_root().join("config/config.json");
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("config/config.json is readable"),
    )
    .expect("config/config.json is JSON");
    for kind in ServerKind::ALL {
        config["servers"][kind.name()]["grpc"] = Value::String(servers.get(kind).url());
    }
    if let Some(extra) = extra_servers {
        let extra: Value =
            serde_json::from_str(&format!("{{{extra}}}")).expect("extra servers are JSON members");
        for (name, server) in extra.as_object().into_iter().flatten() {
            config["servers"][name] = server.clone();
        }
    }
    if let Some(control) = config.get_mut("control").and_then(Value::as_object_mut) {
        control.remove("token_env");
    }
    config.to_string()
}

/// Waits (through the gRPC `Watch` stream, replayed from the start) for the first approval request and
/// approves it through the gRPC API, as `conductorctl approve` would. Returns the approval id.
pub async fn approve_first_request(grpc_url: String) -> String {
    let work = async move {
        let mut client = OrchestratorClient::connect(grpc_url)
            .await
            .expect("the orchestrator's gRPC API answers");
        let mut events = client
            .watch(WatchRequest {
                workflow_id: String::new(),
                from_seq: 1,
            })
            .await
            .expect("Watch starts")
            .into_inner();
        let approval_id = loop {
            let event = events
                .message()
                .await
                .expect("the Watch stream stays healthy")
                .expect("the Watch stream does not end");
            if let Some(Body::Event(pb::AuditEvent {
                event: Some(pb::audit_event::Event::ApprovalRequested(requested)),
                ..
            })) = event.body
            {
                break requested.approval_id;
            }
        };
        // The gateway records `approval_requested` a moment before the waiting call registers the
        // approval as decidable, so an immediate Approve may get NotFound (reported to the gateway's
        // owner). Until that is fixed, retry NotFound within the deadline.
        loop {
            let decision = ApprovalDecisionRequest {
                approval_id: approval_id.clone(),
                approver: "test-approver".into(),
                reason: "interop test".into(),
                ..Default::default()
            };
            match client.approve(decision).await {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::NotFound => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(status) => panic!("Approve failed: {status}"),
            }
        }
        approval_id
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("an approval request arrived in time")
}

/// Runs a Python script to its end and returns the JSON of its last stdout line; panics with its stderr.
pub async fn run_python(args: &[String]) -> Value {
    let mut command = tokio::process::Command::new(python());
    command
        .args(args)
        .kill_on_drop(true)
        .env("PYTHONUNBUFFERED", "1");
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the Python client finished in time")
        .expect("Python starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python client failed ({}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the Python client's last line is not JSON ({e}): {last:?}\n--- stderr ---\n{stderr}"
        )
    })
}

/// Checks the parts of a Python flow summary every transport and era shares.
pub fn check_flow(summary: &Value) {
    let tools = summary["tools"].as_object().expect("tools listed");
    for tool in [
        "validate_data",
        "process_data",
        "create_backup",
        "restore_backup",
        "send_notification",
        "conductor_start_workflow",
    ] {
        assert!(
            tools.contains_key(tool),
            "{tool} missing from tools/list: {:?}",
            tools.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(
        tools["validate_data"]["required"],
        serde_json::json!(["records", "schema"]),
        "validate_data's schema: {}",
        tools["validate_data"]
    );
    if summary["era"] == "handshake" {
        assert_eq!(summary["server_name"], "conductorio");
    } else {
        assert!(
            summary["supported_versions"]
                .as_array()
                .is_some_and(
                    |v| v.iter().any(|v| v == "2025-11-25") && v.iter().any(|v| v == "2026-07-28")
                ),
            "{}",
            summary["supported_versions"]
        );
    }
    let denied = &summary["denied"];
    assert_eq!(denied["is_error"], true);
    let text = denied["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("process-after-validate")
            && text.contains("sequence")
            && text.contains("validate_data"),
        "denial text: {text}"
    );
    assert!(
        text.contains("What to do first"),
        "the denial says what to do first: {text}"
    );
    assert_eq!(
        denied["structured"]["violations"][0]["rule_id"],
        "process-after-validate"
    );
    assert_eq!(
        summary["validated"]["is_error"], false,
        "{}",
        summary["validated"]
    );
    assert_eq!(
        summary["processed"]["is_error"], false,
        "{}",
        summary["processed"]
    );
    assert!(
        summary["workflow_id"]
            .as_str()
            .is_some_and(|w| w.starts_with("wf-"))
    );
}

/// An HTTP reply as raw text: enough to check status codes and bodies of refused or malformed requests.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The one JSON-RPC answer of a `200` `application/json` reply (panics naming the reply
    /// otherwise).
    pub fn json_answer(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/json"),
            "{self:?}"
        );
        serde_json::from_str(&self.body).expect("one JSON-RPC answer")
    }
}

/// POSTs `body` to `/mcp` over a fresh connection, with the headers an MCP client sends plus `extra`.
pub async fn raw_post(addr: std::net::SocketAddr, extra: &[(&str, &str)], body: &str) -> RawReply {
    let mut request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    raw_exchange(addr, request.as_bytes()).await
}

/// Sends `request` as it is (any form, any headers) over a fresh connection and reads the reply to
/// its end: the request should ask for `Connection: close`, or be one the server closes after.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> RawReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        stream.write_all(request).await.expect("request sent");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("reply read");
        raw
    };
    let raw = tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the server answered in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawReply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw-http-test","version":"0"}}}"#;

/// The tool servers and an orchestrator on the shipped configuration whose MCP sessions end after
/// `idle` without a request (the temporary directory holds its audit log).
pub async fn with_idle_timeout(
    idle: &str,
) -> (
    ToolServers,
    conductor_orchestrator::testing::RunningOrchestrator,
    tempfile::TempDir,
) {
    with_config(|config| config["mcp"]["session_idle_timeout"] = serde_json::json!(idle)).await
}

/// The tool servers and an orchestrator on the shipped configuration as `adjust` changes it (the
/// temporary directory holds its audit log).
pub async fn with_config(
    adjust: impl FnOnce(&mut Value),
) -> (
    ToolServers,
    conductor_orchestrator::testing::RunningOrchestrator,
    tempfile::TempDir,
) {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config: Value =
        serde_json::from_str(&shipped_config(&servers, None)).expect("config JSON");
    adjust(&mut config);
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator =
        conductor_orchestrator::testing::spawn(&config.to_string(), None, audit.path())
            .await
            .expect("orchestrator starts");
    (servers, orchestrator, audit)
}

/// A raw HTTP request's reply whose connection stays open: the status line and headers of an event
/// stream that may never end, and the connection, to hold or to read to its end.
pub struct OpenReply {
    pub reply: RawReply,
    pub connection: tokio::net::TcpStream,
}

/// Sends `method /mcp` with only `Host` and `extra` as headers (and `body`) over a fresh connection,
/// and reads the reply up to the end of its headers (the body is left unread).
pub async fn raw_head(
    addr: std::net::SocketAddr,
    method: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> OpenReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        (raw, stream)
    };
    let (raw, connection) = tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the headers arrived in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let reply = RawReply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        head: head.to_owned(),
        body: body.to_owned(),
    };
    OpenReply { reply, connection }
}

/// `GET path` with only `Host` and `extra` as headers, over a fresh connection, read to its end.
pub async fn raw_get(addr: std::net::SocketAddr, path: &str, extra: &[(&str, &str)]) -> RawReply {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw_exchange(addr, request.as_bytes()).await
}

/// The Node.js interpreter for the TypeScript SDK's clients: `$CONDUCTOR_TEST_NODE`, else `node`.
pub fn node() -> PathBuf {
    std::env::var_os("CONDUCTOR_TEST_NODE").map_or_else(|| PathBuf::from("node"), PathBuf::from)
}

/// A script of `tests/node/`, whose dependencies `scripts/setup-node-deps.sh` installs.
pub fn node_script(name: &str) -> PathBuf {
    let dir = repo_root().join("tests/node");
    assert!(
        dir.join("node_modules/@modelcontextprotocol/client")
            .exists(),
        "no TypeScript MCP SDK in {}: run scripts/setup-node-deps.sh first",
        dir.display()
    );
    dir.join(name)
}

/// Runs a Node.js script to its end and returns the JSON of its last stdout line; panics with its
/// stderr.
pub async fn run_node(args: &[String]) -> Value {
    let mut command = tokio::process::Command::new(node());
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("the Node.js client finished in time")
        .expect("Node.js starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Node.js client failed ({}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
        output.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the Node.js client's last line is not JSON ({e}): {last:?}\n--- stderr ---\n{stderr}"
        )
    })
}

/// A `tools/call` of the session-free (2026-07-28) era as its clients send it (the headers it
/// requires and the per-request `_meta` envelope naming `client`), as `token`'s bearer (none:
/// anonymous), over a fresh connection.
pub async fn session_free_call(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    client: &str,
    tool: &str,
    arguments: Value,
) -> RawReply {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientInfo": { "name": client, "version": "0" },
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    });
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", tool),
    ];
    headers.extend(auth.iter().map(|a| ("Authorization", a.as_str())));
    raw_post(addr, &headers, &body.to_string()).await
}

/// Opens a session-era session (`initialize`, 2025-11-25) as `token`'s bearer; returns its id.
pub async fn open_session_as(addr: std::net::SocketAddr, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let reply = raw_post(addr, &headers, INITIALIZE).await;
    assert_eq!(reply.status, 200, "initialize: {reply:?}");
    reply.header("mcp-session-id").expect("a session id")
}

/// A `tools/call` in session `session` as `token`'s bearer; the reply read to its end.
pub async fn call_in_session(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    session: &str,
    tool: &str,
    arguments: Value,
) -> RawReply {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": { "name": tool, "arguments": arguments }
    });
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Mcp-Session-Id", session),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    headers.extend(auth.iter().map(|a| ("Authorization", a.as_str())));
    raw_post(addr, &headers, &body.to_string()).await
}

/// How a `tools/call` reply turned out: `Ok(result)` for a tool result that is not an error, else
/// `Err` with what the caller was told (a tool error's text, a JSON-RPC error's message, or the
/// HTTP reply).
pub fn call_outcome(reply: &RawReply) -> Result<Value, String> {
    let Ok(answer) = serde_json::from_str::<Value>(&reply.body) else {
        return Err(format!("HTTP {}: {}", reply.status, reply.body));
    };
    if let Some(error) = answer.get("error") {
        return Err(error["message"].as_str().unwrap_or_default().to_owned());
    }
    let result = &answer["result"];
    if result["isError"] == true {
        let text = result["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n");
        return Err(text);
    }
    Ok(result.clone())
}
