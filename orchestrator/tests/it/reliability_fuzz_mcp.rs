//! Fuzzing the MCP JSON-RPC entry: a few thousand random and mutated JSON-RPC bodies POSTed to `/mcp`
//! with an MCP client's headers (with and without a live session). Every request gets an HTTP status
//! within its deadline, and afterwards the server still opens sessions and runs tool calls.

use crate::common;
use crate::mcp_support;

use common::*;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASES: u32 = 3_000;
/// A request that gets no answer within this is a hang.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Valid frames of every kind a client sends, to mutate.
fn seeds() -> Vec<Value> {
    let records = json!([{ "id": "1", "name": "Ada", "email": "ada@example.com" }]);
    vec![
        serde_json::from_str(mcp_support::INITIALIZE).expect("initialize"),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "validate_data", "arguments": {"records": records, "schema": "customer"}}}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "process_data", "arguments": {"records": records}, "_meta": {"progressToken": 1, "io.conductorio/workflowId": "wf-nope"}}}),
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "conductor_start_workflow", "arguments": {"template": "nope", "input": {}}}}),
        json!({"jsonrpc": "2.0", "id": 6, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 7, "method": "server/discover", "params": {}}),
        json!({"jsonrpc": "2.0", "id": 8, "method": "resources/list", "params": {"cursor": "x"}}),
        json!({"jsonrpc": "2.0", "id": 9, "result": {}}),
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}),
        json!([{"jsonrpc": "2.0", "id": 10, "method": "ping"}, {"jsonrpc": "2.0", "method": "notifications/initialized"}]),
    ]
}

fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(1e308)),
        Just(json!(u64::MAX)),
        ".{0,12}".prop_map(Value::String),
        select(vec![
            "2.0",
            "tools/call",
            "initialize",
            "validate_data",
            "",
            "\u{0}"
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                select(vec![
                    "jsonrpc",
                    "id",
                    "method",
                    "params",
                    "name",
                    "arguments",
                    "_meta",
                    "x"
                ]),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
    .boxed()
}

/// Replaces, removes or adds one node somewhere in `value`, as chosen by `at`.
fn mutate(value: &mut Value, at: usize, how: u8, with: Value) {
    let mut nodes = 0usize;
    fn walk(v: &mut Value, target: usize, seen: &mut usize, how: u8, with: &mut Option<Value>) {
        if with.is_none() {
            return;
        }
        if *seen == target {
            match (how, &mut *v) {
                (1, Value::Object(map)) if !map.is_empty() => {
                    let key = map
                        .keys()
                        .nth(target % map.len())
                        .cloned()
                        .unwrap_or_default();
                    map.remove(&key);
                    *with = None;
                }
                (2, Value::Object(map)) => {
                    let key = ["params", "id", "method", "jsonrpc", "x"][target % 5];
                    map.insert(key.to_owned(), with.take().unwrap_or_default());
                }
                _ => *v = with.take().unwrap_or_default(),
            }
            return;
        }
        *seen += 1;
        match v {
            Value::Array(items) => items
                .iter_mut()
                .for_each(|i| walk(i, target, seen, how, with)),
            Value::Object(map) => map
                .values_mut()
                .for_each(|i| walk(i, target, seen, how, with)),
            _ => {}
        }
    }
    count(value, &mut nodes);
    walk(value, at % nodes.max(1), &mut 0, how, &mut Some(with));
}

fn count(v: &Value, n: &mut usize) {
    *n += 1;
    match v {
        Value::Array(items) => items.iter().for_each(|i| count(i, n)),
        Value::Object(map) => map.values().for_each(|i| count(i, n)),
        _ => {}
    }
}

#[derive(Debug, Clone)]
struct Case {
    body: Vec<u8>,
    session: bool,
    version: Option<&'static str>,
    content_type: &'static str,
}

fn case() -> impl Strategy<Value = Case> {
    let seeds = seeds();
    let frame = (
        select(seeds),
        proptest::collection::vec((any::<usize>(), 0..3u8, any_json()), 0..3),
    )
        .prop_map(|(mut frame, edits)| {
            for (at, how, with) in edits {
                mutate(&mut frame, at, how, with);
            }
            frame.to_string().into_bytes()
        });
    let bytes_level = (frame.clone(), any::<Index>(), any::<u8>(), any::<bool>()).prop_map(
        |(mut body, at, byte, cut)| {
            let i = at.index(body.len().max(1));
            if cut {
                body.truncate(i);
            } else if i < body.len() {
                body[i] = byte;
            }
            body
        },
    );
    let body = prop_oneof![
        6 => frame,
        2 => bytes_level,
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (1..300usize).prop_map(|depth| ("[".repeat(depth) + &"]".repeat(depth)).into_bytes()),
    ];
    // Mostly the headers of a client in a live session, so most frames reach the MCP handler itself.
    let version = prop_oneof![
        6 => Just(Some("2025-11-25")),
        1 => proptest::option::of(select(vec!["2025-03-26", "2024-11-05", "2026-07-28", "1999-01-01", ""])),
    ];
    let content_type = prop_oneof![
        8 => Just("application/json"),
        1 => select(vec!["application/json; charset=utf-8", "text/plain", ""]),
    ];
    (body, proptest::bool::weighted(0.85), version, content_type).prop_map(
        |(body, session, version, content_type)| Case {
            body,
            session,
            version,
            content_type,
        },
    )
}

/// POSTs one case and returns the HTTP status (0 when the connection closed without one).
async fn post(addr: SocketAddr, session: Option<&str>, case: &Case) -> u16 {
    let mut head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        case.body.len()
    );
    if !case.content_type.is_empty() {
        head.push_str(&format!("Content-Type: {}\r\n", case.content_type));
    }
    if let Some(session) = session.filter(|_| case.session) {
        head.push_str(&format!("Mcp-Session-Id: {session}\r\n"));
    }
    if let Some(version) = case.version {
        head.push_str(&format!("MCP-Protocol-Version: {version}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let mut request = head.into_bytes();
    request.extend_from_slice(&case.body);
    // The server may answer and close before reading everything: a failed write is not a failure.
    let _ = stream.write_all(&request).await;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn random_json_rpc_frames_always_get_an_http_answer_and_the_server_stays_up() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (h, session) = runtime.block_on(async {
        let servers = conductor_servers::testing::spawn_all().await;
        // No approval gates or templates: a fuzzed tools/call must not wait for a person.
        let config = config_with(&servers, json!([
            { "id": "process-after-validate", "kind": "sequence", "tool": "process_data", "after": ["validate_data"] }
        ]), json!({}));
        let h = Harness::with_servers(servers, config).await;
        let opened = mcp_support::raw_post(h.orchestrator.http_addr, &[], mcp_support::INITIALIZE).await;
        let session = opened.header("mcp-session-id").expect("a session");
        (h, session)
    });
    let addr = h.orchestrator.http_addr;
    let mut runner = TestRunner::new(RunnerConfig {
        cases: CASES,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&case(), |case| {
        let status = runtime
            .block_on(async {
                tokio::time::timeout(ANSWER_DEADLINE, post(addr, Some(&session), &case)).await
            })
            .map_err(|_| {
                TestCaseError::fail(format!("no answer within {ANSWER_DEADLINE:?}: {case:?}"))
            })?;
        *statuses
            .lock()
            .expect("statuses")
            .entry(status)
            .or_default() += 1;
        prop_assert!(
            (100..600).contains(&status),
            "no HTTP status ({status}) for {:?}",
            String::from_utf8_lossy(&case.body)
        );
        prop_assert!(
            status < 500,
            "server error {status} for {:?}",
            String::from_utf8_lossy(&case.body)
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let statuses = statuses.into_inner().expect("statuses");
    eprintln!("HTTP statuses of the fuzzed frames: {statuses:?}");
    assert!(
        statuses.len() >= 3,
        "the frames reach more than one outcome: {statuses:?}"
    );
    runtime.block_on(async move {
        let reply = mcp_support::raw_post(addr, &[], mcp_support::INITIALIZE).await;
        assert_eq!(reply.status, 200, "the server still opens sessions: {reply:?}");
        let session = reply.header("mcp-session-id").expect("a session");
        let headers = [("Mcp-Session-Id", session.as_str()), ("MCP-Protocol-Version", "2025-11-25")];
        let initialized = mcp_support::raw_post(addr, &headers, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
        assert_eq!(initialized.status, 202, "{initialized:?}");
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "validate_data", "arguments": {"records": customers(), "schema": "customer"}}});
        let reply = mcp_support::raw_post(addr, &headers, &call.to_string()).await;
        assert!(reply.body.contains("\"isError\":false"), "a tool call still works: {reply:?}");
        let verify = conductor_audit::verify_dir(&h.orchestrator.audit_dir).expect("verify");
        assert!(verify.ok, "{verify:?}");
        drop(h);
    });
}
