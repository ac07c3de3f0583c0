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
    Command::new(env!("CARGO_BIN_EXE_backup-server"))
        .args(args)
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
