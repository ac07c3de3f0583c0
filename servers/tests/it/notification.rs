//! The notification server over gRPC: a real, well-formed outbox.

use conductor_servers::ServerKind;
use conductor_servers::testing::spawn;
use serde_json::{Value, json};

use crate::common::call;

fn outbox_lines(dir: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("outbox.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn sends_are_appended_to_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Notification, dir.path()).await;

    let first = call(
        &server,
        "send_notification",
        json!({"channel": "email", "recipient": "ops@example.com", "subject": "Backup done", "body": "3 records"}),
    )
    .await
    .ok();
    assert_eq!(first["channel"], "email");
    assert_eq!(first["recipient"], "ops@example.com");
    call(
        &server,
        "send_notification",
        json!({"channel": "slack", "recipient": "#ops", "body": "hello"}),
    )
    .await
    .ok();

    let lines = outbox_lines(dir.path());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], first["delivery_id"]);
    assert_eq!(lines[0]["channel"], "email");
    assert_eq!(lines[0]["recipient"], "ops@example.com");
    assert_eq!(lines[0]["subject"], "Backup done");
    assert_eq!(lines[0]["body"], "3 records");
    assert_eq!(lines[0]["workflow_id"], "wf-test");
    assert!(lines[0]["at_ms"].as_i64().unwrap() > 0);
    assert_eq!(lines[1]["channel"], "slack");
    assert_eq!(lines[1]["subject"], Value::Null);

    let listed = call(&server, "list_notifications", json!({"limit": 1}))
        .await
        .ok();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["notifications"][0]["recipient"], "#ops");

    let status = call(
        &server,
        "send_notification",
        json!({"channel": "pigeon", "recipient": "x", "body": "y"}),
    )
    .await
    .status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("/channel"),
        "{}",
        status.message()
    );
    server.stop().await;

    // The outbox survives a restart and stays listable.
    let server = spawn(ServerKind::Notification, dir.path()).await;
    let listed = call(&server, "list_notifications", json!({})).await.ok();
    assert_eq!(listed["count"], 2);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_sends_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Notification, dir.path()).await;
    let client = server.tool_client().await;
    let long_body = "z".repeat(64 * 1024);
    let calls = (0..50).map(|i| {
        let mut client = client.clone();
        let args = json!({"channel": "log", "recipient": format!("r{i}"), "body": format!("{i}:{long_body}")});
        async move {
            client
                .call_tool(conductor_proto::v1::CallToolRequest {
                    tool: "send_notification".into(),
                    arguments_json: args.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    });
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let lines = outbox_lines(dir.path());
    assert_eq!(lines.len(), 50);
    let mut recipients: Vec<String> = lines
        .iter()
        .map(|l| l["recipient"].as_str().unwrap().to_owned())
        .collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 50);
    assert!(
        lines
            .iter()
            .all(|l| l["body"].as_str().unwrap().ends_with(&long_body))
    );
    server.stop().await;
}
