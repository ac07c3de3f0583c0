//! Bounds an attacker cannot get around (issue 29, items 4, 5 and 9), over the real fronts: what
//! refused control requests record (bounded, aggregated, each still counted in `/metrics`); a JWT
//! subject no client lists is its own identity, never `anonymous`; request arguments are bounded in
//! size and depth before any expensive work.

use crate::auth::{ISSUER, TRUSTED_KEY, call, jwk, jwt, serve_jwks};
use crate::common;
use crate::mcp_support::{INITIALIZE, raw_post};

use common::{Harness, read_audit};
use conductor_orchestrator::audit::{AuditEvent, AuditRecord};
use conductor_proto::v1 as pb;
use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;

const CONTROL: &str = "control-secret";
const RESOURCE: &str = "http://127.0.0.1/mcp";

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

/// The shipped servers with a control token and `extra` merged in at the top level.
async fn harness(extra: Value) -> Harness {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = common::config_with(&servers, json!([]), json!({}));
    config["control"] = json!({ "token": CONTROL });
    for (key, value) in extra.as_object().into_iter().flatten() {
        config[key] = value.clone();
    }
    Harness::with_servers(servers, config).await
}

/// The bytes of every file of the audit directory.
fn log_bytes(h: &Harness) -> u64 {
    std::fs::read_dir(&h.orchestrator.audit_dir)
        .expect("audit dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn refusals(records: &[AuditRecord]) -> Vec<(String, String, u64)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::ControlRefused {
                action,
                target,
                count,
                ..
            } => Some((action.clone(), target.clone(), *count)),
            _ => None,
        })
        .collect()
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    text
}

async fn approve(h: &Harness, id: &str, token: Option<&str>) -> tonic::Status {
    let body = pb::ApprovalDecisionRequest {
        approval_id: id.into(),
        ..Default::default()
    };
    h.client
        .clone()
        .approve(with_token(body, token))
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_cannot_grow_the_log_and_each_is_still_counted() {
    let h = harness(json!({})).await;
    let before = log_bytes(&h);
    let records_before = h.audit_records().len();

    // An id no id could be is refused before anything about it is recorded.
    let huge = format!("ap-{}", "x".repeat(120_000));
    let status = approve(&h, &huge, None).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("not an id"),
        "{}",
        status.message()
    );
    assert!(status.message().len() < 300, "the answer does not echo it");
    assert_eq!(h.audit_records().len(), records_before, "nothing recorded");

    // A flood of refusals from a caller without a credential: every one is answered as refused.
    const FLOOD: usize = 300;
    for i in 0..FLOOD {
        let status = approve(&h, &format!("ap-{i:012x}"), None).await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    for i in 0..FLOOD / 3 {
        let body = pb::CancelWorkflowRequest {
            workflow_id: format!("wf-{i:012x}"),
            ..Default::default()
        };
        let status = h.client.clone().cancel_workflow(body).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    let total = FLOOD + FLOOD / 3;

    // The log grew by a few bounded records, not one per refusal (it was ~350 bytes each).
    let records = h.audit_records();
    let recorded = refusals(&records[records_before..]);
    assert!(
        !recorded.is_empty() && recorded.len() <= 4,
        "one record per source, action and interval: {recorded:?}"
    );
    let grown = log_bytes(&h) - before;
    assert!(
        grown < 4 * 1024,
        "{total} refusals grew the log by {grown} bytes"
    );

    // /metrics counts each.
    let metrics = http_get(h.orchestrator.http_addr, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "conductor_control_refused_total{{action=\"approve\"}} {FLOOD}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "conductor_control_refused_total{{action=\"cancel\"}} {}",
            FLOOD / 3
        )),
        "{metrics}"
    );

    // When the orchestrator stops, the counted ones are written as summaries: the log accounts
    // for every refusal (the malformed id was answered before it was a refusal to record).
    let audit = h.orchestrator.audit_dir.clone();
    let Harness {
        orchestrator,
        servers,
        dir,
        ..
    } = h;
    orchestrator.stop().await;
    let recorded = refusals(&read_audit(&audit)[records_before..]);
    let counted: u64 = recorded.iter().map(|(_, _, count)| count).sum();
    assert_eq!(counted, total as u64, "{recorded:?}");
    assert!(recorded.len() <= 4, "{recorded:?}");
    assert!(
        recorded.iter().all(|(_, target, _)| target.len() <= 64),
        "{recorded:?}"
    );
    drop((servers, dir));
}

/// A JWT for `subject`, signed by the trusted key, valid for ten minutes.
fn token_for(subject: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    jwt(
        TRUSTED_KEY,
        "k1",
        json!({ "iss": ISSUER, "aud": RESOURCE, "sub": subject, "exp": now + 600, "nbf": now - 10 }),
    )
}

async fn jwt_harness(required: bool, default_client: Option<&str>) -> Harness {
    let jwks_url = serve_jwks(JwkSet {
        keys: vec![jwk(TRUSTED_KEY, "k1")],
    })
    .await;
    let mut jwt = json!({ "issuer": ISSUER, "jwks_url": jwks_url });
    if let Some(name) = default_client {
        jwt["default_client"] = json!(name);
    }
    harness(json!({
        "auth": { "required": required, "resource": RESOURCE, "jwt": jwt },
        "clients": {
            "agent": { "tools": ["*"], "jwt_subjects": ["agent-7"] },
            "staff": { "tools": ["list_schemas"], "read": true }
        },
        "listen": { "http_limits": { "max_sessions": 16, "max_sessions_per_identity": 2 } }
    }))
    .await
}

async fn start(h: &Harness, token: Option<&str>) -> Result<pb::WorkflowInfo, tonic::Status> {
    h.client
        .clone()
        .start_workflow(with_token(pb::StartWorkflowRequest::default(), token))
        .await
        .map(|r| r.into_inner())
}

async fn initialize(h: &Harness, token: Option<&str>) -> u16 {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    raw_post(h.orchestrator.http_addr, &headers, INITIALIZE)
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_jwt_subject_is_its_own_identity_never_anonymous() {
    let h = jwt_harness(false, Some("staff")).await;
    let (bob, eve) = (token_for("bob"), token_for("eve"));

    let bobs = start(&h, Some(&bob)).await.expect("bob starts a workflow");
    assert!(bobs.caller.starts_with("jwt:bob "), "{}", bobs.caller);
    let anonymous = start(&h, None).await.expect("anonymous starts one");
    assert!(
        anonymous.caller.starts_with("anonymous "),
        "{}",
        anonymous.caller
    );

    // Each acts in its own workflows only.
    for (who, token, workflow) in [
        ("eve in bob's", Some(eve.as_str()), &bobs.id),
        ("eve in an anonymous one", Some(eve.as_str()), &anonymous.id),
        ("anonymous in bob's", None, &bobs.id),
    ] {
        let status = call(&h, token, workflow, "list_schemas")
            .await
            .expect_err(who);
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{who}: {status:?}"
        );
        assert!(status.message().contains("owner rule"), "{who}: {status:?}");
    }

    // With the default client's allow-list, and nothing more.
    call(&h, Some(&bob), &bobs.id, "list_schemas")
        .await
        .expect("the default client's tool");
    let denied = call(&h, Some(&bob), &bobs.id, "list_backups")
        .await
        .expect_err("not on the default client's allow-list");
    assert_eq!(denied.code(), tonic::Code::FailedPrecondition, "{denied:?}");

    // Own session limits: bob's two sessions take nobody else's.
    assert_eq!(initialize(&h, Some(&bob)).await, 200);
    assert_eq!(initialize(&h, Some(&bob)).await, 200);
    assert_eq!(initialize(&h, Some(&bob)).await, 429, "bob's limit");
    assert_eq!(initialize(&h, Some(&eve)).await, 200, "eve has her own");
    assert_eq!(initialize(&h, None).await, 200, "anonymous has its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_required_authentication_an_unlisted_subject_needs_a_default_client() {
    let h = jwt_harness(true, None).await;
    let bob = token_for("bob");
    let status = start(&h, Some(&bob)).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("jwt:bob") && status.message().contains("default_client"),
        "{}",
        status.message()
    );
    assert_eq!(initialize(&h, Some(&bob)).await, 401);
    let listed = start(&h, Some(&token_for("agent-7")))
        .await
        .expect("a listed subject");
    assert!(listed.caller.starts_with("agent "), "{}", listed.caller);

    let h = jwt_harness(true, Some("staff")).await;
    let info = start(&h, Some(&bob))
        .await
        .expect("admitted by the default client");
    assert!(info.caller.starts_with("jwt:bob "), "{}", info.caller);
}

/// `levels` nested arrays around one number.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!([inner]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_past_the_configured_size_or_depth_are_refused_on_every_front() {
    use crate::mcp_support::{params, text};
    use rmcp::ServiceExt;
    let h = harness(json!({ "arguments": { "max_bytes": 4096, "max_depth": 8 } })).await;
    let workflow = start(&h, None).await.expect("a workflow").id;
    let records_before = h.audit_records().len();
    let big = json!({ "records": [{ "id": "1", "name": "x".repeat(5000) }] });
    let deep = json!({ "records": nested(8) });

    // gRPC: refused before the text is parsed, naming the limit and its value.
    for (arguments, limit, value) in [
        (&big, "arguments.max_bytes", "4096"),
        (&deep, "arguments.max_depth", "8"),
    ] {
        let status = h
            .call(&workflow, "list_schemas", arguments.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(limit) && status.message().contains(value),
            "{}",
            status.message()
        );
    }
    let body = pb::StartWorkflowRequest {
        input_json: json!({ "note": "x".repeat(5000) }).to_string(),
        ..Default::default()
    };
    let status = h.client.clone().start_workflow(body).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("arguments.max_bytes"),
        "{status:?}"
    );

    // MCP: a tool error that names the limit, as other invalid arguments are.
    let url = format!("{}/mcp", h.orchestrator.http_url());
    let client = ()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            url,
        ))
        .await
        .expect("the rmcp client initializes");
    for (arguments, limit) in [
        (&big, "arguments.max_bytes"),
        (&deep, "arguments.max_depth"),
    ] {
        let result = client
            .call_tool(params("list_schemas", arguments.clone()))
            .await
            .expect("tools/call answered");
        assert_eq!(result.is_error, Some(true), "{result:?}");
        assert!(text(&result).contains(limit), "{}", text(&result));
    }
    let start_workflow = params(
        "conductor_start_workflow",
        json!({ "input": { "note": "x".repeat(5000) } }),
    );
    let result = client.call_tool(start_workflow).await.expect("answered");
    assert_eq!(result.is_error, Some(true), "{result:?}");
    assert!(
        text(&result).contains("arguments.max_bytes"),
        "{}",
        text(&result)
    );

    // Within the limits, a call reaches its tool (whose schema may refuse it); the refused ones
    // left no record.
    if let Err(status) = h
        .call(&workflow, "list_schemas", json!({ "records": nested(6) }))
        .await
    {
        assert!(!status.message().contains("arguments.max_"), "{status:?}");
    }
    let refused_recorded = h.audit_records()[records_before..]
        .iter()
        .filter(|r| matches!(&r.event, AuditEvent::CallDecided { workflow_id, .. } if workflow_id == &workflow))
        .count();
    assert_eq!(refused_recorded, 1, "only the call within the limits");
    client.cancel().await.ok();
}
