//! Identity that holds (issue 15): each attack on the old name-based identity, reproduced against a real
//! orchestrator over real gRPC and HTTP (the official Python MCP SDK as the MCP client where a client's
//! view matters), and refused; plus the happy paths: a static token, a JWT checked against a JWKS this
//! test serves, the anonymous allow-list, `act_for`, approvers who are identities.

use crate::common;
use crate::mcp_support;

use common::{Harness, denial, read_audit};
use conductor_orchestrator::audit::AuditEvent;
use conductor_proto::v1 as pb;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_support::{DEADLINE, INITIALIZE, raw_post, run_python, script};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;

const CONTROL: &str = "control-secret";
const REPORTER: &str = "reporter-secret";
const WRITER: &str = "writer-secret";
const AUDITOR: &str = "auditor-secret";
const DANA: &str = "dana-secret";
const ERIN: &str = "erin-secret";

/// Ed25519 test keys (made for these tests only): the issuer's, and one nobody trusts.
pub(crate) const TRUSTED_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEaE7KH2R6HyQkkjAo8Pjp1xi27oAYcG/rzG0eOIX4Ru\n-----END PRIVATE KEY-----\n";
const UNKNOWN_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIH1G6Awdc/77H3M+TWeb8yKxroBuXkHg9rks2FOhyTsD\n-----END PRIVATE KEY-----\n";
pub(crate) const ISSUER: &str = "https://issuer.test";

fn clients() -> Value {
    json!({
        "reporter": { "tools": ["list_schemas"], "token": REPORTER },
        "writer": { "tools": ["*"], "token": WRITER },
        "auditor": { "tools": ["*"], "token": AUDITOR, "act_for": ["reporter"], "read": true },
        "dana": { "tools": ["*"], "token": DANA, "approve": true },
        "erin": { "token": ERIN, "approve": true },
        "agent": { "tools": ["list_schemas", "list_backups"], "jwt_subjects": ["agent-7"] }
    })
}

/// The shipped servers with `clients`, a control token and `extra` merged in at the top level.
async fn harness(extra: Value) -> Harness {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = common::config_with(&servers, json!([]), json!({}));
    config["clients"] = clients();
    config["control"] = json!({ "token": CONTROL });
    for (key, value) in extra.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    Harness::with_servers(servers, config).await
}

fn with_token<T>(body: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(body);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    request
}

async fn start(
    h: &Harness,
    token: Option<&str>,
    claimed: &str,
) -> Result<pb::WorkflowInfo, tonic::Status> {
    let body = pb::StartWorkflowRequest {
        caller: claimed.into(),
        ..Default::default()
    };
    h.client
        .clone()
        .start_workflow(with_token(body, token))
        .await
        .map(|r| r.into_inner())
}

/// Calls `tool` with no arguments in `workflow` over gRPC, with `token` if any.
pub(crate) async fn call(
    h: &Harness,
    token: Option<&str>,
    workflow: &str,
    tool: &str,
) -> Result<pb::WorkflowCallResponse, tonic::Status> {
    let body = pb::WorkflowCallRequest {
        workflow_id: workflow.into(),
        tool: tool.into(),
        arguments_json: "{}".into(),
    };
    h.client
        .clone()
        .call_tool(with_token(body, token))
        .await
        .map(|r| r.into_inner())
}

/// The Python SDK client with `token` and `clientInfo.name` = `name`; returns its summary line.
async fn python(h: &Harness, token: Option<&str>, name: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        script("mcp_auth_probe.py").display().to_string(),
        "--url".into(),
        format!("{}/mcp", h.orchestrator.http_url()),
        "--name".into(),
        name.into(),
    ];
    if let Some(token) = token {
        args.extend(["--token".into(), token.into()]);
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    run_python(&args).await
}

fn tools(summary: &Value) -> Vec<String> {
    summary["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools listed: {summary}"))
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_name_grants_nothing_and_a_wrong_token_is_refused() {
    let h = harness(json!({})).await;
    // The MCP front: only the token counts, over the official Python SDK.
    let real = python(&h, Some(REPORTER), "anything", &[]).await;
    assert_eq!(
        tools(&real),
        [
            "conductor_end_workflow",
            "conductor_start_workflow",
            "list_schemas"
        ]
    );
    for name in ["reporter", "Reporter", "other", "reporter\u{200b}"] {
        let renamed = python(&h, None, name, &[]).await;
        assert_eq!(
            tools(&renamed),
            ["conductor_end_workflow", "conductor_start_workflow"],
            "{name:?} without a token gets the empty anonymous allow-list"
        );
    }
    let wrong = python(&h, Some("reporter"), "reporter", &[]).await;
    assert!(
        wrong["refused"].is_object(),
        "a wrong token is refused: {wrong}"
    );
    let wrong = raw_post(
        h.orchestrator.http_addr,
        &[("Authorization", "Bearer reporter")],
        INITIALIZE,
    )
    .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    let challenge = wrong.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"http://")
            && challenge.contains("/.well-known/oauth-protected-resource\""),
        "{challenge}"
    );
    let renamed_call = python(
        &h,
        None,
        "reporter",
        &[
            "--call",
            "send_notification",
            "--arguments",
            r#"{"channel":"email","recipient":"a@example.com","message":"hi"}"#,
        ],
    )
    .await;
    assert_eq!(renamed_call["call"]["is_error"], true, "{renamed_call}");

    // The gRPC front: the caller field and x-conductor-caller are labels.
    let claimed = start(&h, None, "writer")
        .await
        .expect("anonymous may start");
    assert!(
        claimed.caller.starts_with("anonymous ("),
        "{}",
        claimed.caller
    );
    let refused = call(&h, None, &claimed.id, "list_schemas")
        .await
        .unwrap_err();
    assert_eq!(denial(&refused).violations[0].rule_kind, "allow_list");
    let wrong = start(&h, Some("writer"), "writer").await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    // Two credentials are refused, whichever comes first: a proxy in front could read the other.
    for pair in [[WRITER, REPORTER], ["wrong", WRITER]] {
        let mut request = Request::new(pb::StartWorkflowRequest::default());
        for token in pair {
            request.metadata_mut().append(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        let twice = h.client.clone().start_workflow(request).await.unwrap_err();
        assert_eq!(twice.code(), tonic::Code::Unauthenticated, "{pair:?}");
        assert!(
            twice
                .message()
                .contains("more than one Authorization header"),
            "{}",
            twice.message()
        );
    }
    let own = start(&h, Some(REPORTER), "someone else")
        .await
        .expect("start");
    assert!(
        own.caller
            .starts_with("reporter (token; as \"someone else\")"),
        "{}",
        own.caller
    );
    call(&h, Some(REPORTER), &own.id, "list_schemas")
        .await
        .expect("on its list");
    let off_list = call(&h, Some(REPORTER), &own.id, "list_backups")
        .await
        .unwrap_err();
    assert!(
        denial(&off_list).violations[0]
            .message
            .contains("client reporter")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anonymous_allow_list_and_required_authentication() {
    let mut anonymous = clients();
    anonymous["anonymous"] = json!({ "tools": ["list_backups"] });
    let h = harness(json!({ "clients": anonymous })).await;
    let summary = python(&h, None, "desktop", &[]).await;
    assert_eq!(
        tools(&summary),
        [
            "conductor_end_workflow",
            "conductor_start_workflow",
            "list_backups"
        ]
    );
    h.orchestrator.stop().await;

    let h = harness(json!({ "auth": {
        "required": true,
        "authorization_servers": [ISSUER],
        "metrics": { "token": "scraper-secret" }
    } }))
    .await;
    let scrape = |token: Option<&'static str>| {
        let addr = h.orchestrator.http_addr;
        async move {
            let auth = token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            raw_get(
                addr,
                &format!(
                    "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
                ),
            )
            .await
        }
    };
    assert!(scrape(None).await.starts_with("HTTP/1.1 401"));
    assert!(scrape(Some(CONTROL)).await.starts_with("HTTP/1.1 401"));
    assert!(
        scrape(Some("scraper-secret"))
            .await
            .starts_with("HTTP/1.1 200")
    );
    let refused = python(&h, None, "desktop", &[]).await;
    assert!(refused["refused"].is_object(), "{refused}");
    let refused = raw_post(h.orchestrator.http_addr, &[], INITIALIZE).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.contains("resource_metadata=")),
        "{refused:?}"
    );
    let metadata = http_get(
        h.orchestrator.http_addr,
        "/.well-known/oauth-protected-resource",
    )
    .await;
    let metadata: Value = serde_json::from_str(&metadata).expect("metadata is JSON");
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    assert!(
        metadata["resource"]
            .as_str()
            .is_some_and(|r| r.ends_with("/mcp")),
        "{metadata}"
    );
    let status = start(&h, None, "").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Reading needs `read` when authentication is required.
    let read = |token| {
        let mut client = h.client.clone();
        async move {
            client
                .list_workflows(with_token(pb::ListWorkflowsRequest::default(), token))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    assert_eq!(
        read(Some(REPORTER)).await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(read(None).await, Err(tonic::Code::Unauthenticated));
    assert_eq!(read(Some(AUDITOR)).await, Ok(()));
    assert_eq!(read(Some(CONTROL)).await, Ok(()));
    // So does the status, which names workflows, callers and errors as the list does.
    let status = |token| {
        let mut client = h.client.clone();
        async move {
            client
                .status(with_token(pb::StatusRequest::default(), token))
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    assert_eq!(status(None).await, Err(tonic::Code::Unauthenticated));
    assert_eq!(
        status(Some(REPORTER)).await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(status(Some(AUDITOR)).await, Ok(()));
    // The tool and template catalogues need a credential, any client's.
    let catalogues = |token| {
        let mut client = h.client.clone();
        async move {
            let tools = client
                .list_tools(with_token(pb::ListToolsRequest::default(), token))
                .await
                .map(|_| ())
                .map_err(|s| s.code());
            let templates = client
                .list_templates(with_token(pb::ListTemplatesRequest::default(), token))
                .await
                .map(|_| ())
                .map_err(|s| s.code());
            (tools, templates)
        }
    };
    let refused = Err(tonic::Code::Unauthenticated);
    assert_eq!(catalogues(None).await, (refused, refused));
    assert_eq!(catalogues(Some(REPORTER)).await, (Ok(()), Ok(())));
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let reply = tokio::time::timeout(DEADLINE, async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await
    .expect("answered in time");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Sends a raw HTTP/1.1 request and reads the whole reply.
async fn raw_get(addr: SocketAddr, request: &str) -> String {
    tokio::time::timeout(DEADLINE, async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        String::from_utf8_lossy(&raw).into_owned()
    })
    .await
    .expect("answered in time")
}

/// Serves `keys` as a JWKS on a loopback port of its own; returns its URL.
pub(crate) async fn serve_jwks(keys: JwkSet) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { axum::Json(keys) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks.json")
}

pub(crate) fn jwk(pem: &str, kid: &str) -> Jwk {
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("test key");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("jwk");
    jwk.common.key_id = Some(kid.into());
    jwk
}

pub(crate) fn jwt(pem: &str, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("test key");
    jsonwebtoken::encode(&header, &claims, &key).expect("signed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_checked_against_the_jwks_issuer_audience_and_time() {
    let jwks_url = serve_jwks(JwkSet {
        keys: vec![jwk(TRUSTED_KEY, "k1")],
    })
    .await;
    let resource = "http://127.0.0.1/mcp";
    let h = harness(json!({ "auth": {
        "resource": resource,
        "jwt": { "issuer": ISSUER, "jwks_url": jwks_url }
    } }))
    .await;
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |aud: &str, exp: u64, nbf: u64| json!({ "iss": ISSUER, "aud": aud, "sub": "agent-7", "exp": exp, "nbf": nbf });
    let good = jwt(TRUSTED_KEY, "k1", claims(resource, now + 600, now - 10));
    let summary = python(&h, Some(&good), "agent", &[]).await;
    assert_eq!(
        tools(&summary),
        [
            "conductor_end_workflow",
            "conductor_start_workflow",
            "list_backups",
            "list_schemas"
        ]
    );
    let info = start(&h, Some(&good), "")
        .await
        .expect("a JWT works over gRPC too");
    assert!(
        info.caller.starts_with("agent (jwt agent-7"),
        "{}",
        info.caller
    );

    let refused = [
        (
            "expired",
            jwt(TRUSTED_KEY, "k1", claims(resource, now - 600, now - 1200)),
        ),
        (
            "not yet valid",
            jwt(TRUSTED_KEY, "k1", claims(resource, now + 1200, now + 600)),
        ),
        (
            "another audience",
            jwt(
                TRUSTED_KEY,
                "k1",
                claims("http://elsewhere/mcp", now + 600, now - 10),
            ),
        ),
        (
            "an unknown key",
            jwt(UNKNOWN_KEY, "k2", claims(resource, now + 600, now - 10)),
        ),
        (
            "an unknown key under a known kid",
            jwt(UNKNOWN_KEY, "k1", claims(resource, now + 600, now - 10)),
        ),
        (
            "another issuer",
            jwt(
                TRUSTED_KEY,
                "k1",
                json!({ "iss": "https://evil.test", "aud": resource, "sub": "agent-7", "exp": now + 600 }),
            ),
        ),
    ];
    for (what, token) in refused {
        let reply = raw_post(
            h.orchestrator.http_addr,
            &[("Authorization", &format!("Bearer {token}"))],
            INITIALIZE,
        )
        .await;
        assert_eq!(reply.status, 401, "a JWT with {what}: {reply:?}");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.contains("resource_metadata=")),
            "{what}: {reply:?}"
        );
        let status = start(&h, Some(&token), "").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{what}");
    }
}

/// Opens an MCP session over raw HTTP with `token`; returns its session id.
async fn open_session(addr: SocketAddr, token: &str) -> String {
    let auth = format!("Bearer {token}");
    let reply = raw_post(addr, &[("Authorization", &auth)], INITIALIZE).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let session = reply.header("mcp-session-id").expect("a session id");
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let reply = raw_post(
        addr,
        &[
            ("Authorization", &auth),
            ("Mcp-Session-Id", &session),
            ("Mcp-Protocol-Version", "2025-11-25"),
        ],
        initialized,
    )
    .await;
    assert_eq!(reply.status, 202, "{reply:?}");
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_bound_to_its_identity_and_its_id_is_never_recorded() {
    let h = harness(json!({})).await;
    let addr = h.orchestrator.http_addr;
    let session = open_session(addr, WRITER).await;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_schemas","arguments":{}}}"#;
    let headers = |auth: Option<&str>| {
        let mut headers = vec![
            ("Mcp-Session-Id".to_owned(), session.clone()),
            ("Mcp-Protocol-Version".to_owned(), "2025-11-25".to_owned()),
        ];
        if let Some(token) = auth {
            headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        headers
    };
    let post = |auth: Option<&'static str>| {
        let headers = headers(auth);
        async move {
            let borrowed: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            raw_post(addr, &borrowed, call).await
        }
    };
    let own = post(Some(WRITER)).await;
    assert_eq!(own.status, 200, "{own:?}");
    assert!(own.body.contains("\"isError\":false"), "{}", own.body);
    for (what, token) in [
        ("another client's token", Some(REPORTER)),
        ("the control token", Some(CONTROL)),
        ("no token", None),
    ] {
        let taken = post(token).await;
        assert_eq!(taken.status, 403, "the session with {what}: {taken:?}");
    }
    let audit = std::fs::read_dir(&h.orchestrator.audit_dir)
        .expect("audit dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect::<String>();
    assert!(
        audit.contains("writer (token; mcp client \\\"raw-http-test\\\", http session "),
        "{audit}"
    );
    assert!(
        !audit.contains(&session),
        "the session id is in the audit log"
    );
    let workflows = h
        .client
        .clone()
        .list_workflows(pb::ListWorkflowsRequest::default())
        .await
        .expect("list");
    assert!(
        !format!("{:?}", workflows.into_inner()).contains(&session),
        "the session id is in an RPC answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_identitys_workflow_is_refused_unless_granted_act_for() {
    let h = harness(json!({})).await;
    let owned = start(&h, Some(REPORTER), "").await.expect("start").id;
    let refused = call(&h, Some(WRITER), &owned, "list_schemas")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("owner rule") && refused.message().contains("reporter"),
        "{}",
        refused.message()
    );
    let anonymous = call(&h, None, &owned, "list_schemas").await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::PermissionDenied);
    call(&h, Some(AUDITOR), &owned, "list_schemas")
        .await
        .expect("auditor acts for reporter");
    call(&h, Some(REPORTER), &owned, "list_schemas")
        .await
        .expect("the owner");

    // Over MCP, naming the workflow in `_meta` is refused with a tool error naming the rule.
    let summary = python(
        &h,
        Some(WRITER),
        "writer",
        &["--call", "list_schemas", "--workflow", &owned],
    )
    .await;
    assert_eq!(summary["call"]["is_error"], true, "{summary}");
    assert!(
        summary["call"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("owner rule")),
        "{summary}"
    );
    let granted = python(
        &h,
        Some(AUDITOR),
        "auditor",
        &["--call", "list_schemas", "--workflow", &owned],
    )
    .await;
    assert_eq!(granted["call"]["is_error"], false, "{granted}");
    assert_eq!(granted["call"]["workflow"], owned.as_str());
}

/// `list_backups` in `workflow` with `token`, run in the background: it waits at the gate.
fn gated_call_in_background(
    h: &Harness,
    workflow: &str,
    token: &'static str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::WorkflowCallResponse>, tonic::Status>> {
    let mut client = h.client.clone();
    let body = pb::WorkflowCallRequest {
        workflow_id: workflow.into(),
        tool: "list_backups".into(),
        arguments_json: "{}".into(),
    };
    tokio::spawn(async move { client.call_tool(with_token(body, Some(token))).await })
}

async fn decide(
    h: &Harness,
    token: Option<&str>,
    id: &str,
    digest: &str,
    claimed: &str,
) -> Result<pb::ApprovalInfo, tonic::Status> {
    let body = pb::ApprovalDecisionRequest {
        approval_id: id.into(),
        approver: claimed.into(),
        reason: "checked".into(),
        arguments_digest: digest.into(),
    };
    h.client
        .clone()
        .approve(with_token(body, token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_are_identities_and_four_eyes_compares_them() {
    let rules = json!([{ "id": "gate", "kind": "approval", "tool": "list_backups", "timeout": "1m", "four_eyes": true }]);
    let h = harness(json!({ "rules": rules })).await;
    let wf = start(&h, Some(DANA), "").await.expect("start").id;
    let waiting = gated_call_in_background(&h, &wf, DANA);
    let pending = h.wait_pending(&wf).await;
    let digest = pending.arguments_digest.clone();
    let anonymous = decide(&h, None, &pending.id, &digest, "erin")
        .await
        .unwrap_err();
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "--as erin without a credential"
    );
    let not_approver = decide(&h, Some(WRITER), &pending.id, &digest, "erin")
        .await
        .unwrap_err();
    assert_eq!(not_approver.code(), tonic::Code::PermissionDenied);
    let own = decide(&h, Some(DANA), &pending.id, &digest, "somebody else")
        .await
        .unwrap_err();
    assert_eq!(own.code(), tonic::Code::PermissionDenied);
    assert!(own.message().contains("four eyes"), "{}", own.message());
    let approved = decide(&h, Some(ERIN), &pending.id, &digest, "")
        .await
        .expect("erin approves");
    assert!(
        approved.decided_by.starts_with("erin (token"),
        "{}",
        approved.decided_by
    );
    waiting.await.expect("task").expect("the call ran");
    let refusals = read_audit(&h.orchestrator.audit_dir)
        .into_iter()
        .filter(|r| matches!(r.event, AuditEvent::ControlRefused { .. }))
        .count();
    assert!(
        refusals >= 2,
        "each refused approver is recorded: {refusals}"
    );

    // The shared control token keeps working, recorded as its identity.
    let wf = start(&h, Some(DANA), "").await.expect("start").id;
    let waiting = gated_call_in_background(&h, &wf, DANA);
    let pending = h.wait_pending(&wf).await;
    let approved = decide(
        &h,
        Some(CONTROL),
        &pending.id,
        &pending.arguments_digest,
        "bob",
    )
    .await
    .expect("operator approves");
    assert_eq!(approved.decided_by, "operator (control token; as \"bob\")");
    waiting.await.expect("task").expect("the call ran");

    // Whoever asks for the call cannot approve it either, even in someone else's workflow: here
    // the operator, who may act anywhere, calls in dana's.
    let wf = start(&h, Some(DANA), "").await.expect("start").id;
    let waiting = gated_call_in_background(&h, &wf, CONTROL);
    let pending = h.wait_pending(&wf).await;
    let digest = pending.arguments_digest.clone();
    let requester = decide(&h, Some(CONTROL), &pending.id, &digest, "")
        .await
        .unwrap_err();
    assert_eq!(requester.code(), tonic::Code::PermissionDenied);
    assert!(
        requester
            .message()
            .contains("asked for this list_backups call"),
        "{}",
        requester.message()
    );
    let owner = decide(&h, Some(DANA), &pending.id, &digest, "")
        .await
        .unwrap_err();
    assert!(
        owner.message().contains("started workflow"),
        "{}",
        owner.message()
    );
    decide(&h, Some(ERIN), &pending.id, &digest, "")
        .await
        .expect("a third person approves");
    waiting.await.expect("task").expect("the call ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_closed_and_the_listener_stays_responsive() {
    let limits = json!({ "http_limits": { "header_timeout": "300ms", "body_timeout": "300ms", "idle_timeout": "2s", "max_connections": 8 } });
    let h = harness(json!({ "listen": limits })).await;
    let addr = h.orchestrator.http_addr;
    let mut slow = Vec::new();
    for i in 0..24 {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let partial = if i % 2 == 0 {
            // Headers that never end.
            format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n")
        } else {
            // A body that never comes.
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n{{\"js"
            )
        };
        stream.write_all(partial.as_bytes()).await.expect("sent");
        slow.push(stream);
    }
    // A well-behaved client is still served (after the slow ones ahead of it are timed out).
    let health = http_get(addr, "/healthz").await;
    assert_eq!(health, "ok\n");
    // Every slow connection is closed by the server, never by us.
    for (i, mut stream) in slow.into_iter().enumerate() {
        let mut rest = Vec::new();
        tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("slow connection {i} is still open"))
            .ok();
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "connection {i}: {text}"
        );
    }
    // A foreign Host cannot read /metrics (DNS rebinding).
    let reply = raw_get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_logs_a_session_id() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = common::config_with(&servers, json!([]), json!({}));
    config["clients"] = clients();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("config written");
    let daemon = common::spawn_orchestrator_binary(&path, &dir.path().join("audit"), &[]);
    let http: SocketAddr = daemon
        .early
        .iter()
        .find_map(|line| {
            line.split(" and ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the HTTP address is logged");
    let session = open_session(http, WRITER).await;
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_schemas","arguments":{}}}"#;
    let auth = format!("Bearer {WRITER}");
    let reply = raw_post(
        http,
        &[
            ("Authorization", &auth),
            ("Mcp-Session-Id", &session),
            ("Mcp-Protocol-Version", "2025-11-25"),
        ],
        call,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let log = daemon.kill();
    assert!(
        log.iter()
            .any(|l| l.contains("MCP session bound to a new ad-hoc workflow")),
        "the call was logged: {log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains(&session)),
        "a session id is in the log: {log:#?}"
    );
    servers.stop().await;
}
