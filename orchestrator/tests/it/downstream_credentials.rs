//! Credentials per downstream MCP server (issue 27): an rmcp server behind a middleware that wants a
//! bearer token, and an OAuth token endpoint, both served by the test on loopback. Calls carry a
//! static token, a client-credentials token (cached, fetched again before it expires and after a
//! `401`) or a token exchanged for each caller's own JWT; a server without its credential fails
//! naming the server; no secret reaches the audit log, the log output or an answer.

use crate::auth::{ISSUER, TRUSTED_KEY, jwk, jwt, serve_jwks};
use crate::common;
use crate::mcp_support::{call_in_session, call_outcome, open_session_as};
use crate::test_ca::{CertFiles, TestCa};

use conductor_orchestrator::downstream::health::{Reachability, ServerHealth};
use conductor_orchestrator::gateway::{CallResult, CallSpec};
use conductor_orchestrator::testing;
use conductor_proto::v1 as pb;
use jsonwebtoken::jwk::JwkSet;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STATIC_TOKEN: &str = "static-bearer-5c1e9d";
const CLIENT_SECRET: &str = "cc-secret-7f3a";
/// `gateway:cc-secret-7f3a` in HTTP Basic.
const CLIENT_BASIC: &str = "Basic Z2F0ZXdheTpjYy1zZWNyZXQtN2YzYQ==";

/// What the downstream MCP server accepts and saw.
#[derive(Default)]
struct Gatekeeper {
    /// Tokens it accepts, until when (`None`: until revoked).
    accepted: Mutex<HashMap<String, Option<Instant>>>,
    /// The bearer token of every request, in order (`""` without one).
    seen: Mutex<Vec<String>>,
    refused: AtomicUsize,
    /// Requests that open a session (a POST naming none: `initialize`).
    opened: AtomicUsize,
    /// The token and the session of each request that named one.
    sessions: Mutex<Vec<(String, String)>>,
    /// Requests with this token wait for each other at the barrier before they are answered, so
    /// that they are refused together.
    hold: Mutex<Option<(String, Arc<tokio::sync::Barrier>)>>,
}

impl Gatekeeper {
    fn accept(&self, token: &str, lifetime: Option<Duration>) {
        self.accepted
            .lock()
            .expect("lock")
            .insert(token.to_owned(), lifetime.map(|l| Instant::now() + l));
    }

    fn accepts(&self, token: &str) -> bool {
        let accepted = self.accepted.lock().expect("lock");
        accepted
            .get(token)
            .is_some_and(|until| until.is_none_or(|at| Instant::now() < at))
    }

    fn revoke(&self, token: &str) {
        self.accepted.lock().expect("lock").remove(token);
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A tool server written with rmcp: one tool, `ping`, answering `pong`.
#[derive(Clone)]
struct Pong;

impl rmcp::ServerHandler for Pong {
    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::new(
            rmcp::model::ServerCapabilities::builder()
                .enable_tools()
                .build(),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let schema = Arc::new(serde_json::Map::new());
        Ok(rmcp::model::ListToolsResult::with_all_items(vec![
            rmcp::model::Tool::new("ping", "Answers pong.", schema),
        ]))
    }

    async fn call_tool(
        &self,
        _request: CallToolRequestParams,
        _context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        Ok(CallToolResult::success(vec![rmcp::model::ContentBlock::text("pong")]).into())
    }
}

/// Serves [`protected_app`] on a loopback port.
async fn protected_server(gate: Arc<Gatekeeper>) -> SocketAddr {
    let app = protected_app(gate);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// [`Pong`] at `/mcp` behind a middleware that records every bearer token and answers `401` to one
/// `gate` does not accept.
fn protected_app(gate: Arc<Gatekeeper>) -> axum::Router {
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        || Ok(Pong),
        Arc::new(
            rmcp::transport::streamable_http_server::session::local::LocalSessionManager::default(),
        ),
        StreamableHttpServerConfig::default(),
    );
    axum::Router::new()
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let gate = gate.clone();
                async move {
                    let token = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or_default()
                        .to_owned();
                    gate.seen.lock().expect("lock").push(token.clone());
                    match request.headers().get("mcp-session-id") {
                        Some(session) => gate.sessions.lock().expect("lock").push((
                            token.clone(),
                            session.to_str().unwrap_or_default().to_owned(),
                        )),
                        None if request.method() == axum::http::Method::POST => {
                            gate.opened.fetch_add(1, Ordering::SeqCst);
                        }
                        None => {}
                    }
                    let held = gate.hold.lock().expect("lock").clone();
                    if let Some((held, barrier)) = held
                        && held == token
                    {
                        // Bounded: a test that sends fewer fails on its counts, it does not hang.
                        let _ = tokio::time::timeout(Duration::from_secs(10), barrier.wait()).await;
                    }
                    if !gate.accepts(&token) {
                        gate.refused.fetch_add(1, Ordering::SeqCst);
                        return axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::UNAUTHORIZED,
                            [("www-authenticate", "Bearer")],
                            "no valid token",
                        ));
                    }
                    next.run(request).await
                }
            },
        ))
}

/// An OAuth token endpoint: client credentials for `gateway`, and token exchange of the JWTs in
/// `subjects` (JWT → person). Every token it issues is accepted by `gate`.
struct TokenEndpoint {
    gate: Arc<Gatekeeper>,
    /// `expires_in` of the tokens it issues next.
    lifetime: AtomicU64,
    issued: AtomicUsize,
    subjects: Mutex<HashMap<String, String>>,
    /// Each request's form, for the test to read what was asked.
    forms: Mutex<Vec<HashMap<String, String>>>,
    /// Answer every request with this status and an OAuth error, when set.
    failing: Mutex<Option<u16>>,
}

impl TokenEndpoint {
    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    fn answer(&self, authorization: Option<&str>, body: &str) -> (u16, Value) {
        let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{body}"))
            .expect("form")
            .query_pairs()
            .into_owned()
            .collect();
        self.forms.lock().expect("lock").push(form.clone());
        if let Some(status) = *self.failing.lock().expect("lock") {
            return (
                status,
                json!({"error": "invalid_client", "error_description": format!("client authentication failed for {CLIENT_SECRET}")}),
            );
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let token = match form.get("grant_type").map(String::as_str) {
            Some("client_credentials") if authorization == Some(CLIENT_BASIC) => {
                format!("cc-token-{n}")
            }
            Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
                let subjects = self.subjects.lock().expect("lock");
                match form.get("subject_token").and_then(|t| subjects.get(t)) {
                    Some(person) => format!("exchanged-for-{person}-{n}"),
                    None => return (400, json!({"error": "invalid_grant"})),
                }
            }
            _ => return (401, json!({"error": "invalid_client"})),
        };
        let lifetime = self.lifetime.load(Ordering::SeqCst);
        // The server holds a token to nine tenths of the lifetime it is issued with (as one whose
        // clock runs ahead would): a client must fetch a new one well before it expires.
        self.gate
            .accept(&token, Some(Duration::from_secs(lifetime) * 9 / 10));
        (
            200,
            json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime}),
        )
    }
}

async fn token_endpoint(gate: Arc<Gatekeeper>) -> (Arc<TokenEndpoint>, String) {
    let endpoint = Arc::new(TokenEndpoint {
        gate,
        lifetime: AtomicU64::new(3600),
        issued: AtomicUsize::new(0),
        subjects: Mutex::default(),
        forms: Mutex::default(),
        failing: Mutex::default(),
    });
    let served = endpoint.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let endpoint = served.clone();
            async move {
                let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
                let (status, answer) = endpoint.answer(authorization, &body);
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    axum::Json(answer),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, format!("http://{addr}/token"))
}

fn server(addr: SocketAddr, auth: Value) -> Value {
    json!({ "mcp_url": format!("http://{addr}/mcp"), "tools": ["ping"], "timeout": "10s", "auth": auth })
}

/// Calls `tool` in a workflow of its own as caller `caller`; the result or the error, as text.
async fn call(orchestrator: &testing::RunningOrchestrator, tool: &str) -> Result<Value, String> {
    let gateway = &orchestrator.gateway;
    let workflow = gateway
        .start_workflow(None, Value::Null, "test")
        .await
        .expect("a workflow");
    let spec = CallSpec {
        workflow_id: workflow.id.clone(),
        tool: tool.into(),
        arguments: json!({}),
        caller: "test".into(),
        step: None,
    };
    match gateway.call(spec).await {
        Ok(report) => match report.result {
            CallResult::Succeeded(value) => Ok(value),
            CallResult::Failed(failure) => Err(format!("{}: {}", failure.code, failure.message)),
            CallResult::Denied(violations) => Err(format!("denied: {violations:?}")),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The health of `server` in the status once `holds` is true of it (a condition with a deadline).
async fn health_of(
    orchestrator: &testing::RunningOrchestrator,
    server: &str,
    holds: impl Fn(&ServerHealth) -> bool,
) -> ServerHealth {
    common::wait_until("the server's health", || {
        let found = orchestrator
            .gateway
            .status(0)
            .downstream
            .into_iter()
            .find(|h| h.server == server && holds(h));
        async move {
            if found.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found
        }
    })
    .await
}

/// Every file under `dir` as text.
fn all_text(dir: &std::path::Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            text.push_str(&all_text(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    text
}

/// Static and client-credentials tokens: calls succeed with them and fail, naming the server,
/// without them; the OAuth token is fetched once for many calls, again after a `401`, and again
/// before it expires; a failing token endpoint is named with its status; and no secret appears
/// in the audit log or an answer (the daemon's log: [`the_daemon_says_each_credential_and_logs_no_secret`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_and_oauth_credentials_reach_the_server_and_no_secret_leaks() {
    let gate = Arc::new(Gatekeeper::default());
    gate.accept(STATIC_TOKEN, None);
    let addr = protected_server(gate.clone()).await;
    let (endpoint, token_url) = token_endpoint(gate.clone()).await;
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("static-token");
    std::fs::write(&token_file, format!("{STATIC_TOKEN}\n")).expect("write");

    let config = json!({
        "servers": {
            "plain": server(addr, Value::Null),
            "keyed": server(addr, json!({"type": "bearer", "token": {"token_file": token_file}})),
            "unset": server(addr, json!({"type": "bearer", "token": {"token_env": "CONDUCTOR_TEST_NEVER_SET_27"}})),
            "oauth": server(addr, json!({
                "type": "oauth_client_credentials", "token_url": token_url,
                "client_id": "gateway", "client_secret": {"token": CLIENT_SECRET},
                "scope": "tools.call", "audience": "https://tools.test"
            }))
        }
    });
    let mut config = config;
    for (name, prefix) in [
        ("plain", "p_"),
        ("keyed", "k_"),
        ("unset", "u_"),
        ("oauth", "o_"),
    ] {
        config["servers"][name]["prefix"] = json!(prefix);
        if config["servers"][name]["auth"].is_null() {
            config["servers"][name]
                .as_object_mut()
                .expect("object")
                .remove("auth");
        }
    }
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let mut answers = Vec::new();

    // Static: the configured token reaches the server; no token, or an unset one, fails by name.
    let keyed = call(&orchestrator, "k_ping").await;
    assert!(keyed.is_ok(), "{keyed:?}");
    let plain = call(&orchestrator, "p_ping").await.expect_err("no token");
    assert!(
        plain.contains("\"plain\"") && plain.contains("401"),
        "{plain}"
    );
    let unset = call(&orchestrator, "u_ping").await.expect_err("no token");
    assert!(
        unset.contains("servers.unset.auth.token")
            && unset.contains("CONDUCTOR_TEST_NEVER_SET_27 is not set"),
        "{unset}"
    );
    answers.extend([format!("{keyed:?}"), plain, unset]);

    // OAuth: one token for three calls, sent as the bearer, asked for with the scope and audience.
    for _ in 0..3 {
        answers.push(format!(
            "{:?}",
            call(&orchestrator, "o_ping").await.expect("oauth call")
        ));
    }
    assert_eq!(endpoint.issued(), 1, "the token is cached");
    assert!(gate.seen().contains(&"cc-token-1".to_owned()));
    let form = endpoint.forms.lock().expect("lock")[0].clone();
    assert_eq!(form.get("scope").map(String::as_str), Some("tools.call"));
    assert_eq!(
        form.get("audience").map(String::as_str),
        Some("https://tools.test")
    );
    assert!(
        !form.values().any(|v| v.contains(CLIENT_SECRET)),
        "the secret goes in HTTP Basic"
    );

    // The server revokes the token: the call is refused once, a new token is fetched, the call
    // is sent again and succeeds.
    let refused = gate.refused.load(Ordering::SeqCst);
    gate.revoke("cc-token-1");
    answers.push(format!(
        "{:?}",
        call(&orchestrator, "o_ping")
            .await
            .expect("retried after 401")
    ));
    assert_eq!(endpoint.issued(), 2, "a 401 fetches a new token");
    assert_eq!(gate.refused.load(Ordering::SeqCst), refused + 1);
    assert_eq!(gate.seen().last().map(String::as_str), Some("cc-token-2"));

    // Calls at once, all refused together (the server holds them until all eight have come) with
    // the revoked token: one fetch serves them all (a 401 drops only the token it was sent with, so
    // the new one is not dropped by the others' 401s).
    gate.revoke("cc-token-2");
    *gate.hold.lock().expect("lock") = Some((
        "cc-token-2".to_owned(),
        Arc::new(tokio::sync::Barrier::new(8)),
    ));
    let together = futures::future::join_all((0..8).map(|_| call(&orchestrator, "o_ping"))).await;
    assert!(together.iter().all(Result::is_ok), "{together:?}");
    assert_eq!(endpoint.issued(), 3, "one fetch for calls refused together");
    answers.extend(together.iter().map(|a| format!("{a:?}")));

    // A short-lived token (2 s; the server holds it to 1.8 s) is fetched again before it expires:
    // a new one is fetched while the old one still works, with no 401 on the way.
    endpoint.lifetime.store(2, Ordering::SeqCst);
    gate.revoke("cc-token-3");
    answers.push(format!(
        "{:?}",
        call(&orchestrator, "o_ping").await.expect("call")
    ));
    assert_eq!(endpoint.issued(), 4);
    let refused = gate.refused.load(Ordering::SeqCst);
    common::wait_until("a token fetched before it expires", || {
        let endpoint = endpoint.clone();
        let orchestrator = &orchestrator;
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let answer = call(orchestrator, "o_ping").await;
            assert!(answer.is_ok(), "{answer:?}");
            (endpoint.issued() > 4).then_some(())
        }
    })
    .await;
    assert_eq!(
        gate.refused.load(Ordering::SeqCst),
        refused,
        "the token was renewed before the server refused it"
    );
    assert!(gate.seen().contains(&"cc-token-5".to_owned()));

    // A token endpoint that refuses: the error names the server, the endpoint and its status,
    // and not the secret it echoed back.
    endpoint.lifetime.store(3600, Ordering::SeqCst);
    *endpoint.failing.lock().expect("lock") = Some(401);
    gate.accepted.lock().expect("lock").clear();
    let failed = call(&orchestrator, "o_ping").await.expect_err("no token");
    assert!(
        failed.contains("\"oauth\"") && failed.contains(&token_url) && failed.contains("401"),
        "{failed}"
    );
    answers.push(failed);

    orchestrator.stop().await;
    let recorded = all_text(audit.path());
    assert!(recorded.contains("o_ping"), "the audit log was read");
    let issued: Vec<String> = (1..=endpoint.issued())
        .map(|n| format!("cc-token-{n}"))
        .collect();
    for secret in [
        STATIC_TOKEN,
        CLIENT_SECRET,
        "Z2F0ZXdheTpjYy1zZWNyZXQtN2YzYQ",
    ]
    .into_iter()
    .chain(issued.iter().map(String::as_str))
    {
        assert!(!recorded.contains(secret), "{secret} is in the audit log");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "{secret} is in an answer: {answer}"
            );
        }
    }
}

fn grpc_request<T>(body: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    request
}

/// Token exchange: each caller's own JWT is exchanged, and the server sees a token for that person
/// (two people behind one client, one over MCP and one over gRPC); the exchanged token is cached per
/// caller; a caller with a static token (nothing to exchange) is refused, naming the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_sends_each_caller_a_token_of_its_own() {
    let gate = Arc::new(Gatekeeper::default());
    let addr = protected_server(gate.clone()).await;
    let (endpoint, token_url) = token_endpoint(gate.clone()).await;
    let jwks_url = serve_jwks(JwkSet {
        keys: vec![jwk(TRUSTED_KEY, "k1")],
    })
    .await;
    let resource = "http://127.0.0.1/mcp";
    let now = jsonwebtoken::get_current_timestamp();
    let person = |sub: &str| {
        jwt(
            TRUSTED_KEY,
            "k1",
            json!({ "iss": ISSUER, "aud": resource, "sub": sub, "exp": now + 600 }),
        )
    };
    let (alice, bob) = (person("alice"), person("bob"));
    endpoint.subjects.lock().expect("lock").extend([
        (alice.clone(), "alice".to_owned()),
        (bob.clone(), "bob".to_owned()),
    ]);
    let config = json!({
        "servers": { "tickets": server(addr, json!({
            "type": "token_exchange", "token_url": token_url, "audience": "https://tickets.test"
        })) },
        "clients": {
            "agents": { "tools": ["*"], "jwt_subjects": ["alice", "bob"] },
            "robot": { "tools": ["*"], "token": "robot-static-token" }
        },
        "auth": { "resource": resource, "jwt": { "issuer": ISSUER, "jwks_url": jwks_url } }
    });
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");

    // Before anyone calls, the health check has nobody to check the server as: not started.
    let idle = health_of(&orchestrator, "tickets", |_| true).await;
    assert_eq!(idle.state, Reachability::NotStarted, "{idle:?}");

    // Alice over MCP, twice: one exchange, her token both times.
    let session = open_session_as(orchestrator.http_addr, Some(&alice)).await;
    for _ in 0..2 {
        let reply = call_in_session(
            orchestrator.http_addr,
            Some(&alice),
            &session,
            "ping",
            json!({}),
        )
        .await;
        assert!(call_outcome(&reply).is_ok(), "{reply:?}");
    }
    assert_eq!(endpoint.issued(), 1, "alice's exchanged token is cached");
    let form = endpoint.forms.lock().expect("lock")[0].clone();
    assert_eq!(form.get("subject_token"), Some(&alice));
    assert_eq!(
        form.get("audience").map(String::as_str),
        Some("https://tickets.test")
    );
    let seen = gate.seen();
    assert!(
        seen.iter().all(|t| t == "exchanged-for-alice-1"),
        "{seen:?}"
    );

    // Bob over gRPC, behind the same client: a token of his own.
    let mut client = common::connect(&orchestrator.grpc_url()).await;
    let workflow = client
        .start_workflow(grpc_request(pb::StartWorkflowRequest::default(), &bob))
        .await
        .expect("bob starts a workflow")
        .into_inner();
    let called = client
        .call_tool(grpc_request(
            pb::WorkflowCallRequest {
                workflow_id: workflow.id.clone(),
                tool: "ping".into(),
                arguments_json: "{}".into(),
            },
            &bob,
        ))
        .await
        .expect("bob's call")
        .into_inner();
    assert!(
        matches!(
            called.outcome,
            Some(pb::workflow_call_response::Outcome::ResultJson(_))
        ),
        "{called:?}"
    );
    assert_eq!(endpoint.issued(), 2);
    assert_eq!(
        gate.seen().last().map(String::as_str),
        Some("exchanged-for-bob-2")
    );

    // Each person has a session of their own: none that carried Alice's token carried Bob's.
    let sessions = gate.sessions.lock().expect("lock").clone();
    let of = |person: &str| -> std::collections::HashSet<String> {
        sessions
            .iter()
            .filter(|(token, _)| token.starts_with(&format!("exchanged-for-{person}-")))
            .map(|(_, session)| session.clone())
            .collect()
    };
    assert!(
        !of("alice").is_empty() && !of("bob").is_empty(),
        "{sessions:?}"
    );
    assert!(of("alice").is_disjoint(&of("bob")), "{sessions:?}");

    // A static token has nothing to exchange: refused, naming the server, without touching the
    // session the others share (Alice's next call opens none).
    let opened = gate.opened.load(Ordering::SeqCst);
    let workflow = client
        .start_workflow(grpc_request(
            pb::StartWorkflowRequest::default(),
            "robot-static-token",
        ))
        .await
        .expect("robot starts a workflow")
        .into_inner();
    let refused = client
        .call_tool(grpc_request(
            pb::WorkflowCallRequest {
                workflow_id: workflow.id,
                tool: "ping".into(),
                arguments_json: "{}".into(),
            },
            "robot-static-token",
        ))
        .await;
    let refused = refused.expect_err("nothing to exchange");
    assert!(
        refused.message().contains("server \"tickets\"")
            && refused.message().contains("no JWT to exchange"),
        "{refused:?}"
    );
    assert_eq!(endpoint.issued(), 2, "nothing was exchanged for the robot");
    let reply = call_in_session(
        orchestrator.http_addr,
        Some(&alice),
        &session,
        "ping",
        json!({}),
    )
    .await;
    assert!(call_outcome(&reply).is_ok(), "{reply:?}");
    assert_eq!(
        gate.opened.load(Ordering::SeqCst),
        opened,
        "the session was kept"
    );
    // Once someone has called, the check pings in the last caller's session, with their token.
    let up = health_of(&orchestrator, "tickets", |h| {
        h.state != Reachability::NotStarted
    })
    .await;
    assert_eq!(up.state, Reachability::Up, "{up:?}");
    assert_eq!(
        endpoint.issued(),
        2,
        "the check exchanged nothing of its own"
    );

    orchestrator.stop().await;
    let recorded = all_text(audit.path());
    for secret in [
        alice.as_str(),
        bob.as_str(),
        "exchanged-for-",
        "robot-static-token",
    ] {
        assert!(!recorded.contains(secret), "{secret} is in the audit log");
    }
}

/// Calls `tool` over gRPC in a new workflow of `client`'s orchestrator: its result, or the error.
async fn grpc_call(client: &mut common::Client, tool: &str) -> String {
    let workflow = client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("a workflow")
        .into_inner();
    let called = client
        .call_tool(pb::WorkflowCallRequest {
            workflow_id: workflow.id,
            tool: tool.into(),
            arguments_json: "{}".into(),
        })
        .await;
    format!("{called:?}")
}

/// The real daemon says at start-up which credential each HTTP MCP server is sent and whether each
/// secret is there (warning about the missing one), and nothing it logs, from start to stop,
/// through a 401 and a failing token endpoint, holds a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_says_each_credential_and_logs_no_secret() {
    let gate = Arc::new(Gatekeeper::default());
    gate.accept(STATIC_TOKEN, None);
    let addr = protected_server(gate.clone()).await;
    let (endpoint, token_url) = token_endpoint(gate.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("static-token");
    std::fs::write(&token_file, STATIC_TOKEN).expect("write");
    let mut config = json!({ "servers": {
        "keyed": server(addr, json!({"type": "bearer", "token": {"token_file": token_file}})),
        "unset": server(addr, json!({"type": "bearer", "token": {"token_env": "CONDUCTOR_TEST_NEVER_SET_27"}})),
        "oauth": server(addr, json!({
            "type": "oauth_client_credentials", "token_url": token_url,
            "client_id": "gateway", "client_secret": {"token": CLIENT_SECRET}
        }))
    }});
    for (name, prefix) in [("keyed", "k_"), ("unset", "u_"), ("oauth", "o_")] {
        config["servers"][name]["prefix"] = json!(prefix);
    }
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).expect("config");
    let audit = dir.path().join("audit");
    let daemon = common::spawn_orchestrator_binary(&config_path, &audit, &[]);
    let early = daemon.early.join("\n");
    assert!(
        early.contains("server=keyed")
            && early.contains("bearer: servers.keyed.auth.token from file")
            && early.contains("(present)"),
        "{early}"
    );
    assert!(
        early.contains("WARN")
            && early.contains("server=unset")
            && early.contains("CONDUCTOR_TEST_NEVER_SET_27 is not set"),
        "{early}"
    );
    assert!(
        early.contains("oauth_client_credentials: servers.oauth.auth.client_secret from the configuration file (present)"),
        "{early}"
    );

    let mut client = common::connect(&daemon.url).await;
    let mut answers = vec![
        grpc_call(&mut client, "k_ping").await,
        grpc_call(&mut client, "u_ping").await,
        grpc_call(&mut client, "o_ping").await,
    ];
    gate.revoke("cc-token-1");
    answers.push(grpc_call(&mut client, "o_ping").await);
    assert_eq!(endpoint.issued(), 2, "{answers:#?}");
    *endpoint.failing.lock().expect("lock") = Some(400);
    gate.accepted.lock().expect("lock").clear();
    answers.push(grpc_call(&mut client, "o_ping").await);
    assert!(
        answers[0].contains("pong") && answers[2].contains("pong"),
        "{answers:#?}"
    );
    assert!(
        answers[4].contains("\\\"oauth\\\"") && answers[4].contains("400"),
        "{answers:#?}"
    );

    let log = daemon.kill().join("\n");
    assert!(log.contains("refused its access token (401)"), "{log}");
    let recorded = all_text(&audit);
    for secret in [
        STATIC_TOKEN,
        CLIENT_SECRET,
        "cc-token-",
        "Z2F0ZXdheTpjYy1zZWNyZXQtN2YzYQ",
    ] {
        assert!(!log.contains(secret), "{secret} is in the log: {log}");
        assert!(!recorded.contains(secret), "{secret} is in the audit log");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "{secret} is in an answer: {answer}"
            );
        }
    }
}

/// Serves `app` over TLS with the certificate `cert` on a loopback port (tokio-rustls around each
/// accepted connection, hyper's HTTP/1 on top); with `client_ca`, only to clients with a
/// certificate that CA signed (mutual TLS).
async fn serve_tls(
    app: axum::Router,
    cert: &CertFiles,
    client_ca: Option<&std::path::Path>,
) -> SocketAddr {
    conductor_proto::tls::install_provider();
    let chain = conductor_proto::tls::load_certificates(&cert.cert_file).expect("certificate");
    let key = conductor_proto::tls::load_private_key(&cert.key_file).expect("key");
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(file) => {
            let roots = conductor_proto::tls::load_roots(file).expect("client CA");
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends its handshake: nothing to serve.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// An https MCP server that wants a bearer token, reached with `servers.NAME.tls.ca_file` (a CA the
/// test makes): the call succeeds with the token; the same server under a CA file that did not sign
/// its certificate is refused, the error naming that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_server_is_reached_through_its_ca_file_and_a_wrong_ca_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path(), "downstream");
    let stranger = TestCa::new(dir.path(), "stranger");
    let gate = Arc::new(Gatekeeper::default());
    gate.accept(STATIC_TOKEN, None);
    let addr = serve_tls(protected_app(gate.clone()), &ca.server("mcp"), None).await;
    let token_file = dir.path().join("static-token");
    std::fs::write(&token_file, STATIC_TOKEN).expect("write");
    let https = |prefix: &str, ca_file: &std::path::Path| {
        json!({
            "mcp_url": format!("https://127.0.0.1:{}/mcp", addr.port()), "tools": ["ping"],
            "prefix": prefix, "timeout": "10s", "tls": { "ca_file": ca_file },
            "auth": {"type": "bearer", "token": {"token_file": token_file}}
        })
    };
    let config = json!({ "servers": {
        "secure": https("s_", &ca.ca_file),
        "misled": https("m_", &stranger.ca_file),
    }});
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");

    let secure = call(&orchestrator, "s_ping").await;
    assert!(secure.is_ok(), "{secure:?}");
    assert!(gate.seen().contains(&STATIC_TOKEN.to_owned()));
    let seen = gate.seen().len();
    let misled = call(&orchestrator, "m_ping").await.expect_err("a wrong CA");
    assert!(
        misled.contains("\"misled\"")
            && misled.contains(&stranger.ca_file.display().to_string())
            && misled.contains("servers.misled.tls.ca_file"),
        "{misled}"
    );
    assert!(!misled.contains(STATIC_TOKEN), "{misled}");
    assert_eq!(
        gate.seen().len(),
        seen,
        "nothing reached the server over the refused connection"
    );
    orchestrator.stop().await;
}

/// An https MCP server that requires a client certificate (mutual TLS): reached with
/// `servers.NAME.tls`'s `cert_file` and `key_file`; without them, the call fails naming the server
/// and the settings to give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_tls_server_is_reached_with_the_configured_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new(dir.path(), "downstream");
    let gate = Arc::new(Gatekeeper::default());
    gate.accept(STATIC_TOKEN, None);
    let addr = serve_tls(
        protected_app(gate.clone()),
        &ca.server("mcp"),
        Some(&ca.ca_file),
    )
    .await;
    let token_file = dir.path().join("static-token");
    std::fs::write(&token_file, STATIC_TOKEN).expect("write");
    let gateway = ca.client("conductorio");
    let https = |prefix: &str, tls: Value| {
        json!({
            "mcp_url": format!("https://127.0.0.1:{}/mcp", addr.port()), "tools": ["ping"],
            "prefix": prefix, "timeout": "10s", "tls": tls,
            "auth": {"type": "bearer", "token": {"token_file": token_file}}
        })
    };
    let config = json!({ "servers": {
        "mutual": https("m_", json!({"ca_file": ca.ca_file, "cert_file": gateway.cert_file, "key_file": gateway.key_file})),
        "anonymous": https("a_", json!({"ca_file": ca.ca_file})),
    }});
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config.to_string(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let mutual = call(&orchestrator, "m_ping").await;
    assert!(mutual.is_ok(), "{mutual:?}");
    let without = call(&orchestrator, "a_ping")
        .await
        .expect_err("no client certificate");
    assert!(
        without.contains("\"anonymous\"")
            && without.contains("servers.anonymous.tls.cert_file and key_file"),
        "{without}"
    );
    orchestrator.stop().await;
}

/// A rotated secret file is read on reload: the server's client is made again with the new token
/// (the old one, refused by then, is not sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sends_the_rotated_token() {
    let gate = Arc::new(Gatekeeper::default());
    gate.accept("first-token-a1", None);
    let addr = protected_server(gate.clone()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token-a1").expect("write");
    let config = json!({ "servers": {
        "keyed": server(addr, json!({"type": "bearer", "token": {"token_file": token_file}}))
    }})
    .to_string();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, &config).expect("config");
    let orchestrator = testing::spawn(&config, Some(&config_path), &dir.path().join("audit"))
        .await
        .expect("orchestrator starts");
    assert!(call(&orchestrator, "ping").await.is_ok());

    std::fs::write(&token_file, "second-token-b2").expect("rotate");
    gate.revoke("first-token-a1");
    gate.accept("second-token-b2", None);
    let stale = call(&orchestrator, "ping")
        .await
        .expect_err("the old token until a reload");
    assert!(stale.contains("401"), "{stale}");
    orchestrator.gateway.reload_config().await.expect("reloads");
    let fresh = call(&orchestrator, "ping").await;
    assert!(fresh.is_ok(), "{fresh:?}");
    assert_eq!(
        gate.seen().last().map(String::as_str),
        Some("second-token-b2")
    );
    orchestrator.stop().await;
}
