//! Hostile requests to a running orchestrator: oversized gRPC and HTTP messages, backup names that try
//! to leave the backup directory, and control actions (deny, reload) without the control token. Each is
//! refused with a clear error, leaves nothing behind, and the daemon keeps serving.

use crate::common;
use crate::mcp_support;

use common::*;
use conductor_orchestrator::audit::{AuditEvent, Outcome};
use conductor_proto::v1 as pb;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;

/// The orchestrator's gRPC limit (16 MiB), exceeded.
const OVERSIZED: usize = 16 * 1024 * 1024 + 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_grpc_call_is_refused_clearly_and_the_daemon_keeps_serving() {
    let h = Harness::shipped().await;
    let wf = h.start_workflow("", json!({})).await;
    let big = "x".repeat(OVERSIZED);
    let mut client = h.client.clone().max_encoding_message_size(usize::MAX);
    let status = client
        .call_tool(pb::WorkflowCallRequest {
            workflow_id: wf.clone(),
            tool: "validate_data".into(),
            arguments_json: format!(r#"{{"records":[{{"s":"{big}"}}],"schema":"customer"}}"#),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{status:?}"
    );
    assert!(
        status.message().contains("too large") || status.message().contains("length"),
        "the message says what is wrong: {status:?}"
    );
    // Nothing was decided or recorded for it, and the same connection still serves calls.
    assert!(
        !h.audit_records()
            .iter()
            .any(|r| matches!(&r.event, AuditEvent::CallDecided { .. })),
        "the refused message never reached the call path"
    );
    let ok = h
        .call(
            &wf,
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        )
        .await
        .expect("the daemon keeps serving");
    assert_eq!(result_of(&ok)["valid"], json!(true));
}

/// Sends `head` and then `body_len` bytes of `filler` while reading the reply, tolerating a server that
/// answers and closes before the whole body is sent. Returns the reply's status code (0 if none).
async fn post_streaming(addr: std::net::SocketAddr, head: String, body_len: usize) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        while sent < body_len {
            let n = chunk.len().min(body_len - sent);
            write.write_all(&chunk[..n]).await?;
            sent += n;
        }
        write.shutdown().await
    });
    let mut reply = Vec::new();
    let read_all = async {
        let mut buf = [0u8; 4096];
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
            // The status line and headers are all we need.
            if reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the server answered an oversized body in time");
    writer.abort();
    String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_mcp_body_gets_413_and_the_server_stays_up() {
    let h = Harness::shipped().await;
    let addr = h.orchestrator.http_addr;
    let head = |len: usize| {
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // A real 6 MiB body (over the 4 MiB limit).
    let status = post_streaming(addr, head(6 << 20), 6 << 20).await;
    assert_eq!(status, 413, "a 6 MiB body");
    // A declared length of 100 GB with only a little sent: refused, not waited for.
    let status = post_streaming(addr, head(100_000_000_000), 1024).await;
    assert!(
        (400..500).contains(&status),
        "a 100 GB Content-Length: {status}"
    );
    let reply = mcp_support::raw_post(addr, &[], mcp_support::INITIALIZE).await;
    assert_eq!(
        reply.status, 200,
        "the server still accepts sessions: {reply:?}"
    );
    let healthy = reqwest_free_get(addr, "/healthz").await;
    assert!(healthy.starts_with("HTTP/1.1 200"), "{healthy}");
}

/// A GET over a fresh connection, returning the raw reply.
async fn reqwest_free_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_names_that_escape_are_refused_through_the_orchestrator() {
    let servers = conductor_servers::testing::spawn_all().await;
    let backup_dir = servers.data_dir.path().join("backup").join("backups");
    let outside = tempfile::tempdir().expect("outside dir");
    let target = outside.path().join("target.json");
    std::os::unix::fs::symlink(&target, backup_dir.join("planted.json")).expect("plant a symlink");
    let config = config_with(&servers, json!([]), json!({}));
    let h = Harness::with_servers(servers, config).await;
    let wf = h.start_workflow("", json!({})).await;

    let escaping = [
        "../x",
        "../../outside/x",
        "/etc/passwd",
        "bad\0name",
        "..",
        "a/../../b",
        "..",
    ];
    for name in escaping {
        for (tool, args) in [
            (
                "create_backup",
                json!({"name": name, "data": "pwned", "overwrite": true}),
            ),
            ("restore_backup", json!({"name": name})),
        ] {
            let status = h.call(&wf, tool, args).await.unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{tool} {name:?}: {status:?}"
            );
            assert!(
                status.message().contains("name"),
                "{tool} {name:?}: {status:?}"
            );
        }
    }
    // The planted symlink is neither written through nor read through.
    for (tool, args) in [
        (
            "create_backup",
            json!({"name": "planted", "data": "pwned", "overwrite": true}),
        ),
        ("restore_backup", json!({"name": "planted"})),
    ] {
        let response = h
            .call(&wf, tool, args)
            .await
            .expect("a tool error, not a status");
        match response.outcome {
            Some(pb::workflow_call_response::Outcome::Error(error)) => {
                assert_eq!(error.code, "unsafe_name", "{tool}: {error:?}")
            }
            other => panic!("{tool} through a planted symlink: {other:?}"),
        }
    }
    assert!(!target.exists(), "nothing was written through the symlink");
    assert_eq!(std::fs::read_dir(outside.path()).expect("dir").count(), 0);
    let mut left: Vec<String> = std::fs::read_dir(&backup_dir)
        .expect("backup dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["planted.json"],
        "no file appeared in the backup directory either"
    );
    // Every refusal is audited as a failed call; the valid name still works.
    let failed = h
        .audit_records()
        .iter()
        .filter(|r| {
            matches!(
                &r.event,
                AuditEvent::CallFinished {
                    outcome: Outcome::Failed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(failed, escaping.len() * 2 + 2);
    h.call(&wf, "create_backup", json!({"name": "fine", "data": [1]}))
        .await
        .expect("a plain name works");
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

fn deny(id: &str) -> pb::ApprovalDecisionRequest {
    pb::ApprovalDecisionRequest {
        approval_id: id.into(),
        approver: "mallory".into(),
        reason: "no".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_and_reload_need_the_control_token_and_refusals_are_audited() {
    let servers = conductor_servers::testing::spawn_all().await;
    let rules = json!([{ "id": "listing-needs-approval", "kind": "approval", "tool": "list_backups", "timeout": "1h" }]);
    let mut config = config_with(&servers, rules, json!({}));
    config["control"] = json!({ "token": "s3cret" });
    let h = Harness::with_servers(servers, config.clone()).await;
    let wf = h.start_workflow("", json!({})).await;
    let waiting = {
        let (client, wf) = (h.client.clone(), wf.clone());
        tokio::spawn(async move {
            let mut client = client;
            client
                .call_tool(pb::WorkflowCallRequest {
                    workflow_id: wf,
                    tool: "list_backups".into(),
                    arguments_json: "{}".into(),
                })
                .await
        })
    };
    let pending = h.wait_pending(&wf).await;

    let mut client = h.client.clone();
    for (token, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some("guess"), tonic::Code::Unauthenticated),
    ] {
        let status = client
            .deny(with_token(deny(&pending.id), token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "deny with {token:?}: {status:?}");
        assert!(status.message().contains("token"), "{status:?}");
    }
    assert_eq!(
        h.pending()
            .await
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        [pending.id.as_str()],
        "a refused deny decides nothing"
    );

    // A changed file on disk, and reloads without the right token: the running configuration stays.
    let version = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            client
                .status(pb::StatusRequest::default())
                .await
                .expect("status")
                .into_inner()
                .config_version
        }
    };
    let before = version(&mut client).await;
    config["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({ "id": "extra", "kind": "sequence", "tool": "process_data", "after": ["validate_data"] }));
    std::fs::write(
        h.config_path(),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .expect("write");
    for (token, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some("guess"), tonic::Code::Unauthenticated),
    ] {
        let status = client
            .reload_config(with_token(pb::ReloadConfigRequest {}, token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "reload with {token:?}: {status:?}");
        assert_eq!(
            version(&mut client).await,
            before,
            "a refused reload changes nothing"
        );
    }
    let reloaded = client
        .reload_config(with_token(pb::ReloadConfigRequest {}, Some("s3cret")))
        .await
        .expect("reload with the token")
        .into_inner();
    assert_ne!(reloaded.config_version, before);

    client
        .deny(with_token(deny(&pending.id), Some("s3cret")))
        .await
        .expect("deny with the token");
    let status = waiting.await.expect("task").unwrap_err();
    let decision = denial(&status);
    assert!(
        decision.violations[0]
            .message
            .contains("denied by operator (control token; as \"mallory\")"),
        "only the authorised deny decided: {:?}",
        decision.violations
    );
    let refused: Vec<(String, String)> = h
        .audit_records()
        .into_iter()
        .filter_map(|r| match r.event {
            AuditEvent::ControlRefused { action, target, .. } => Some((action, target)),
            _ => None,
        })
        .collect();
    let id = pending.id.clone();
    let config_target = "configuration".to_owned();
    assert_eq!(
        refused,
        [
            ("deny".to_owned(), id.clone()),
            ("deny".to_owned(), id),
            ("reload".to_owned(), config_target.clone()),
            ("reload".to_owned(), config_target),
        ]
    );
}
