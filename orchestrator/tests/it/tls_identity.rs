//! Client certificates as identities (issue 27): a verified certificate whose common name a client
//! lists as `tls_subject` is that client, over gRPC and MCP (the official Python SDK); one that no
//! client lists is refused by name; one of a CA the orchestrator does not trust never passes the
//! handshake.

use crate::common;
use crate::test_ca::TestCa;
use crate::tls::{grpc_client, https_get, listen_tls, python_probe, start, tool_names};
use conductor_proto::tls::ClientTls;
use conductor_proto::v1 as pb;
use conductor_servers::testing::spawn_all;
use serde_json::{Value, json};

#[tokio::test]
async fn a_client_certificate_proves_its_clients_identity_and_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "gateway");
    let clients_ca = TestCa::new(dir.path(), "clients");
    let stranger_ca = TestCa::new(dir.path(), "stranger");
    let cert = ca.server("gateway");
    let robot = clients_ca.client("robot-1");
    let unlisted = clients_ca.client("nobody-lists-me");
    let forged = stranger_ca.client("robot-1");
    let servers = spawn_all().await;
    let mut config = common::shipped_config(&servers);
    config["listen"] = listen_tls(&cert, Some((&clients_ca.ca_file, "optional")));
    config["auth"] = json!({ "required": true });
    config["clients"] = json!({
        "robot": { "tools": ["validate_data", "list_schemas"], "tls_subject": "robot-1" },
        "writer": { "tools": ["*"], "token": "writer-secret" }
    });
    let orchestrator = start(&config, &dir).await;

    // gRPC: the certificate is the credential; the robot sees its own allow-list.
    let as_robot = ClientTls {
        ca_file: Some(ca.ca_file.clone()),
        cert_file: Some(robot.cert_file.clone()),
        key_file: Some(robot.key_file.clone()),
    };
    let mut client = grpc_client(&orchestrator, &as_robot).await.expect("mTLS");
    let workflow = client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("the robot starts a workflow")
        .into_inner()
        .id;
    let call = |tool: &str| pb::WorkflowCallRequest {
        workflow_id: workflow.clone(),
        tool: tool.into(),
        arguments_json: "{}".into(),
    };
    client
        .call_tool(call("list_schemas"))
        .await
        .expect("a tool of the robot's allow-list");
    let denied = client
        .call_tool(call("list_backups"))
        .await
        .expect_err("a tool beyond it");
    let decision = common::denial(&denied);
    assert!(
        format!("{decision:?}").contains("allow-list of client robot"),
        "{decision:?}"
    );
    // Without a certificate (optional) nor a token: no identity where authentication is required.
    let mut nobody = grpc_client(&orchestrator, &ca.trusted())
        .await
        .expect("TLS");
    let status = tool_names(&mut nobody).await.expect_err("no credential");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    // A certificate of the right CA that names no client is refused, saying so.
    let as_unlisted = ClientTls {
        cert_file: Some(unlisted.cert_file.clone()),
        key_file: Some(unlisted.key_file.clone()),
        ..ca.trusted()
    };
    let mut client = grpc_client(&orchestrator, &as_unlisted)
        .await
        .expect("mTLS");
    let status = tool_names(&mut client).await.expect_err("unlisted");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("nobody-lists-me") && status.message().contains("tls_subject"),
        "{status:?}"
    );
    // The same name from a CA the orchestrator does not trust never gets past the handshake.
    let as_forged = ClientTls {
        cert_file: Some(forged.cert_file.clone()),
        key_file: Some(forged.key_file.clone()),
        ..ca.trusted()
    };
    let refused = match grpc_client(&orchestrator, &as_forged).await {
        Err(e) => format!("{e:?}"),
        Ok(mut c) => format!("{:?}", tool_names(&mut c).await.expect_err("forged")),
    };
    assert!(!refused.contains("validate_data"), "{refused}");

    // MCP over https with the Python SDK: the same identities.
    let url = orchestrator.http_url();
    let summary = python_probe(&url, &ca.ca_file, Some(&robot), Some("list_schemas")).await;
    let tools: Vec<&str> = summary["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"validate_data") && !tools.contains(&"create_backup"),
        "{summary}"
    );
    assert_eq!(summary["call"]["is_error"], json!(false), "{summary}");
    // The same name from a CA the orchestrator does not trust: the TLS connection is refused
    // (the SDK sees a transport error), where no credential at all gets an HTTP refusal.
    let refusal = python_probe(&url, &ca.ca_file, Some(&forged), None).await;
    let refusal = refusal["refused"]
        .as_str()
        .unwrap_or_else(|| panic!("{refusal}"));
    assert!(
        !refusal.starts_with("MCPError"),
        "a transport error: {refusal}"
    );
    let without = python_probe(&url, &ca.ca_file, None, None).await;
    let without = without["refused"]
        .as_str()
        .unwrap_or_else(|| panic!("{without}"));
    assert!(
        without.starts_with("MCPError"),
        "an HTTP refusal: {without}"
    );
    // /healthz is open to anyone who completes the handshake, so no answer means the handshake.
    let health = https_get(orchestrator.http_addr, &as_forged, "/healthz").await;
    assert!(!health.contains("200"), "{health}");
    let health = https_get(orchestrator.http_addr, &ca.trusted(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // What the server says about itself over TLS names https (the MCP authorization discovery).
    let metadata = https_get(
        orchestrator.http_addr,
        &ca.trusted(),
        "/.well-known/oauth-protected-resource",
    )
    .await;
    assert!(
        metadata.contains("\"resource\":\"https://127.0.0.1/mcp\""),
        "{metadata}"
    );
    orchestrator.stop().await;
    servers.stop().await;
}
