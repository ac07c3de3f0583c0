//! Every request to `/mcp` meets the one layer that owns sessions, their owners and their limits,
//! whatever its form: absolute-form targets, no `Host`, a foreign authority, HTTP/1.0, a session
//! era request without a session. The finding (issue 29, item 1): a raw `POST http://host/mcp` with
//! no `Host` was served by the SDK's own session manager, around every limit and every owner.

use crate::mcp_support::{INITIALIZE, RawReply, raw_exchange, raw_post, with_config};
use serde_json::json;
use std::net::SocketAddr;

const ALICE: &str = "alice-secret";
const CALL: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_schemas","arguments":{}}}"#;

/// A POST of `body` to `target` (origin or absolute form) in HTTP `version`, with `headers` as the
/// only ones besides the body's.
async fn post_raw(
    addr: SocketAddr,
    version: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawReply {
    let mut request = format!(
        "POST {target} {version}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    raw_exchange(addr, request.as_bytes()).await
}

/// The headers of a request in session `session`.
fn in_session(session: &str) -> [(&'static str, &str); 2] {
    [
        ("Mcp-Session-Id", session),
        ("MCP-Protocol-Version", "2025-11-25"),
    ]
}

/// Opens an anonymous MCP session; its id.
async fn open_session(addr: SocketAddr) -> String {
    let opened = raw_post(addr, &[], INITIALIZE).await;
    opened.header("mcp-session-id").expect("a session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_form_meets_the_one_session_layer() {
    let (servers, orchestrator, _audit) = with_config(|config| {
        config["clients"] = json!({
            "alice": { "tools": ["*"], "token": ALICE },
            "anonymous": { "tools": ["list_schemas"] }
        });
        config["listen"]["http_limits"] =
            json!({ "max_sessions": 8, "max_sessions_per_identity": 2 });
    })
    .await;
    let addr = orchestrator.http_addr;
    let absolute = format!("http://{addr}/mcp");
    let sessions = || orchestrator.gateway.metrics().mcp_sessions();
    let alice_auth = format!("Bearer {ALICE}");

    // No `Host`: malformed in HTTP/1.1, and in 1.0 nothing can be checked against rebinding.
    for (version, target) in [
        ("HTTP/1.1", absolute.as_str()),
        ("HTTP/1.1", "/mcp"),
        ("HTTP/1.0", absolute.as_str()),
        ("HTTP/1.0", "/mcp"),
    ] {
        let reply = post_raw(addr, version, target, &[], INITIALIZE).await;
        assert_eq!(reply.status, 400, "{version} {target}: {reply:?}");
        assert!(reply.body.contains("missing Host"), "{reply:?}");
    }
    assert_eq!(sessions(), 0, "no form without Host opened a session");

    // An absolute-form target is checked by its own authority, which must agree with `Host`.
    let host = addr.to_string();
    for (target, host) in [
        ("http://evil.example/mcp", host.as_str()),
        (absolute.as_str(), "evil.example"),
        (absolute.as_str(), "localhost"),
    ] {
        let reply = post_raw(addr, "HTTP/1.1", target, &[("Host", host)], INITIALIZE).await;
        assert_eq!(reply.status, 403, "{target} with Host {host}: {reply:?}");
    }
    let two_hosts = post_raw(
        addr,
        "HTTP/1.1",
        "/mcp",
        &[("Host", &host), ("Host", "evil.example")],
        INITIALIZE,
    )
    .await;
    assert!(
        two_hosts.status == 400 || two_hosts.status == 403,
        "two Host headers are refused: {two_hosts:?}"
    );

    // Served forms open sessions in the one table, within the identity's limit, in any form.
    let mut opened = Vec::new();
    for target in [absolute.as_str(), "/mcp"] {
        let reply = post_raw(
            addr,
            "HTTP/1.1",
            target,
            &[("Host", &host), ("Authorization", &alice_auth)],
            INITIALIZE,
        )
        .await;
        assert_eq!(reply.status, 200, "{target}: {reply:?}");
        opened.push(reply.header("mcp-session-id").expect("a session id"));
    }
    assert_eq!(sessions(), 2);
    for target in [absolute.as_str(), "/mcp"] {
        let refused = post_raw(
            addr,
            "HTTP/1.1",
            target,
            &[("Host", &host), ("Authorization", &alice_auth)],
            INITIALIZE,
        )
        .await;
        assert_eq!(
            refused.status, 429,
            "{target}: past alice's limit: {refused:?}"
        );
    }
    assert_eq!(sessions(), 2, "refused handshakes open nothing");

    // Alice's session in another identity's hands is refused in every form.
    let alice_session = opened[0].as_str();
    for target in [absolute.as_str(), "/mcp"] {
        let stolen = post_raw(
            addr,
            "HTTP/1.1",
            target,
            &[("Host", &host), ("Mcp-Session-Id", alice_session)],
            CALL,
        )
        .await;
        assert_eq!(stolen.status, 403, "{target}: {stolen:?}");
        let stolen = post_raw(
            addr,
            "HTTP/1.1",
            target,
            &[("Mcp-Session-Id", alice_session)],
            CALL,
        )
        .await;
        assert_eq!(stolen.status, 400, "{target} without Host: {stolen:?}");
    }
    let own = post_raw(
        addr,
        "HTTP/1.1",
        &absolute,
        &[
            ("Host", &host),
            ("Authorization", &alice_auth),
            ("Mcp-Session-Id", alice_session),
        ],
        CALL,
    )
    .await
    .json_answer();
    assert_eq!(own["result"]["isError"], false, "{own}");

    // A request of a session era without a session is not served on its own.
    let sessionless = raw_post(addr, &[("MCP-Protocol-Version", "2025-11-25")], CALL).await;
    assert_eq!(sessionless.status, 400, "{sessionless:?}");
    assert!(
        sessionless.body.contains("Session ID is required"),
        "{sessionless:?}"
    );
    let unversioned = raw_post(addr, &[], CALL).await;
    assert_eq!(unversioned.status, 400, "{unversioned:?}");
    let get = raw_exchange(
        addr,
        format!("GET /mcp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: text/event-stream\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(get.status, 400, "a GET stream needs a session: {get:?}");

    // The SDK, which serves only the session-free era, opens no session whatever it is sent.
    let discover_era = raw_post(
        addr,
        &[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Authorization", &alice_auth),
        ],
        INITIALIZE,
    )
    .await;
    assert_eq!(
        discover_era.header("mcp-session-id"),
        None,
        "the session-free era opens no session: {discover_era:?}"
    );
    assert_eq!(sessions(), 2, "only the session layer's two are open");

    // /metrics is behind the same host check.
    let metrics = raw_exchange(
        addr,
        b"GET http://evil.example/metrics HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(metrics.status, 403, "{metrics:?}");
    let metrics = raw_exchange(addr, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(metrics.status, 400, "{metrics:?}");

    orchestrator.stop().await;
    servers.stop().await;
}

/// Invalid `tools/call` params are `-32602` naming what is wrong, in a session (fast path or not)
/// and without one; a request frame that also carries `result` is no request, in either path
/// (issue 29 item 10; issue 26's protocol deviation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_call_params_are_invalid_params_in_every_era() {
    let (servers, orchestrator, _audit) = with_config(|_| {}).await;
    let addr = orchestrator.http_addr;
    let session = open_session(addr).await;
    let in_session = in_session(&session);
    for (body, says) in [
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_schemas","name":"validate_data","arguments":{}}}"#,
            "duplicate field `name`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_schemas","arguments":{},"arguments":{}}}"#,
            "duplicate field `arguments`",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"arguments":{}}}"#,
            "name",
        ),
        (
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_schemas","arguments":[1]}}"#,
            "invalid tools/call params",
        ),
    ] {
        let answer = raw_post(addr, &in_session, body).await.json_answer();
        assert_eq!(answer["error"]["code"], -32602, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{body}: {answer}"
        );
    }
    let with_result = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"list_schemas","arguments":{}},"result":{}}"#;
    let reply = raw_post(addr, &in_session, with_result).await;
    assert!(
        !reply.body.contains("\"isError\":false"),
        "a frame with a result is not served as a call: {reply:?}"
    );

    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}"#;
    let session_free = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "list_schemas"),
    ];
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"arguments":{{}},{meta}}}}}"#
    );
    let answer = raw_post(addr, &session_free, &body).await.json_answer();
    assert_eq!(answer["error"]["code"], -32602, "{answer}");
    orchestrator.stop().await;
    servers.stop().await;
}

/// A call waiting for approval whose client cancels it is withdrawn (issue 28): its request ends as
/// withdrawn, recorded, and a later `approve` says so, so the tool never runs. Before, the request
/// stayed pending and approving it ran the tool with nobody waiting for the result (the official
/// TypeScript client sends `notifications/cancelled` when its request times out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_its_client_cancels_while_it_waits_for_approval_is_withdrawn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (servers, orchestrator, _audit) = with_config(|_| {}).await;
    let addr = orchestrator.http_addr;
    let gateway = &orchestrator.gateway;
    let session = open_session(addr).await;
    let body = r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"restore_backup","arguments":{"name":"left-behind"},"_meta":{"progressToken":"p-9"}}}"#;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let progress = async {
        while !String::from_utf8_lossy(&seen).contains("notifications/progress") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before any progress");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(crate::mcp_support::DEADLINE, progress)
        .await
        .expect("the call waits at its gate");
    let pending = gateway.pending_approvals();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let id = pending[0].id.clone();

    let cancelled = raw_post(
        addr,
        &in_session(&session),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9,"reason":"timed out"}}"#,
    )
    .await;
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    drop(stream);
    let deadline = std::time::Instant::now() + crate::mcp_support::DEADLINE;
    while !gateway.pending_approvals().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the request was not withdrawn"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let withdrawn = gateway.approval(&id).expect("the decided request");
    assert_eq!(withdrawn.decided_by, "system:withdrawn", "{withdrawn:?}");
    assert!(withdrawn.reason.contains("withdrawn"), "{withdrawn:?}");
    let late = gateway
        .decide_approval(&id, true, "grpc:ops", "too late")
        .await
        .expect_err("a withdrawn request cannot be approved");
    assert!(late.to_string().contains("withdrawn"), "{late}");
    orchestrator.stop().await;
    servers.stop().await;
}

/// A body larger than a call's arguments may be (plus room for its frame) is refused before
/// anything parses it, naming the setting (issue 29 item 9: parsed JSON costs tens of times its
/// text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_argument_limit_is_refused_before_it_is_parsed() {
    let (servers, orchestrator, _audit) = with_config(|config| {
        config["arguments"] = json!({ "max_bytes": 1000 });
    })
    .await;
    let addr = orchestrator.http_addr;
    let session = open_session(addr).await;
    let big = "x".repeat(100 * 1024);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"list_schemas","arguments":{{"note":"{big}"}}}}}}"#
    );
    let reply = raw_post(addr, &in_session(&session), &body).await;
    assert_eq!(reply.status, 413, "{}", reply.head);
    assert!(reply.body.contains("arguments.max_bytes"), "{}", reply.body);
    orchestrator.stop().await;
    servers.stop().await;
}
