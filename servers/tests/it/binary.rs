//! The real `backup-server` binary: starts on port 0, answers, stops on SIGTERM with status 0, and
//! fails clearly when its address is taken.

use std::process::Stdio;
use std::time::Duration;

use conductor_proto::v1::ListToolsRequest;
use conductor_proto::v1::tool_service_client::ToolServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

const DEADLINE: Duration = Duration::from_secs(30);

fn backup_server(args: &[&str]) -> Child {
    backup_server_with(args, &[])
}

fn backup_server_with(args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_backup-server"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Reads stderr until the `listening on ADDR` line, then keeps draining it so logging never blocks.
async fn listening_address(child: &mut Child) -> String {
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("listening on ") {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("the server exited without saying where it listens");
    })
    .await
    .expect("no `listening on` line in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

#[tokio::test]
async fn binary_serves_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("backup");
    let mut child = backup_server(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let addr = listening_address(&mut child).await;
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    let mut client = ToolServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let tools = client
        .list_tools(ListToolsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tools;
    assert_eq!(tools.len(), 3);
    assert!(
        data_dir.join("backups").is_dir(),
        "the data directory is created"
    );

    // A second server on the same address fails with the address and the reason.
    let second = backup_server(&["--listen", &addr, "--data-dir", data_dir.to_str().unwrap()]);
    let output = timeout(DEADLINE, second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    drop(client);
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = timeout(DEADLINE, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[tokio::test]
async fn log_format_json_writes_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("backup");
    let mut child = backup_server(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = timeout(DEADLINE, lines.next_line())
        .await
        .expect("a log line in time")
        .unwrap()
        .expect("the server logs before it serves");
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("{first:?} is not JSON: {e}"));
    assert!(line["fields"]["message"].is_string(), "{line}");
    assert!(!first.contains('\u{1b}'), "{first:?}");
    child.kill().await.unwrap();
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, a call whose metadata carries a `traceparent` is a SERVER
/// span of the caller's trace, child of the caller's span, exported to a real OTLP receiver; a
/// tool's failure is its `error.type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_continues_the_callers_trace() {
    use conductor_proto::v1::CallToolRequest;
    let receiver = conductor_servers::otlp_receiver::OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("backup");
    let mut child = backup_server_with(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let addr = listening_address(&mut child).await;
    let mut client = ToolServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut request = tonic::Request::new(CallToolRequest {
        tool: "restore_backup".into(),
        arguments_json: r#"{"name": "missing"}"#.into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    client.call_tool(request).await.unwrap();
    let spans = receiver
        .wait_for("the call's span", |spans| {
            spans.iter().any(|s| s.trace_id == trace_id)
        })
        .await;
    let span = spans.iter().find(|s| s.trace_id == trace_id).unwrap();
    assert_eq!(span.name, "conductor.v1.ToolService/CallTool");
    assert_eq!(span.kind, 2, "a SERVER span");
    assert_eq!(span.parent_span_id, caller_span);
    assert_eq!(span.service, "backup-server");
    assert_eq!(span.attribute("rpc.system"), Some("grpc"));
    assert_eq!(span.attribute("gen_ai.tool.name"), Some("restore_backup"));
    assert_eq!(span.attribute("error.type"), Some("not_found"));
    assert_eq!(span.status_code, 2);
    child.kill().await.unwrap();
}
