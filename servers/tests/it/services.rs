//! What every server offers: its tools with parseable schemas, health, and reflection v1 and v1alpha.

use conductor_proto::v1::ListToolsRequest;
use conductor_servers::ServerKind;
use conductor_servers::testing::{RunningServer, spawn_all};
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::common::{Called, call_raw};

fn expected_tools(kind: ServerKind) -> &'static [&'static str] {
    match kind {
        ServerKind::Validation => &["list_schemas", "validate_data"],
        ServerKind::Processing => &["process_data"],
        ServerKind::Backup => &["create_backup", "list_backups", "restore_backup"],
        ServerKind::Notification => &["list_notifications", "send_notification"],
        ServerKind::Approval => &["get_approval", "list_approvals"],
    }
}

async fn services_v1(server: &RunningServer) -> Vec<String> {
    conductor_servers::testing::reflection_services_v1(server.channel().await).await
}

async fn services_v1alpha(server: &RunningServer) -> Vec<String> {
    conductor_servers::testing::reflection_services_v1alpha(server.channel().await).await
}

#[tokio::test]
async fn every_server_lists_tools_answers_health_and_reflection() {
    let servers = spawn_all().await;
    for kind in ServerKind::ALL {
        let server = servers.get(kind);

        let tools = server
            .tool_client()
            .await
            .list_tools(ListToolsRequest {})
            .await
            .unwrap()
            .into_inner()
            .tools;
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, expected_tools(kind), "{kind}");
        for tool in &tools {
            let schema: Value = serde_json::from_str(&tool.input_schema_json).unwrap();
            assert_eq!(schema["type"], "object", "{}", tool.name);
            assert_eq!(schema["additionalProperties"], false, "{}", tool.name);
            jsonschema::validator_for(&schema).unwrap();
            assert!(!tool.description.is_empty());
            assert_eq!(tool.server, kind.name());
        }

        let mut health = HealthClient::new(server.channel().await);
        for service in ["", "conductor.v1.ToolService"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "{kind} {service:?}");
        }

        let mut expected = vec![
            "conductor.v1.ToolService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        if kind == ServerKind::Approval {
            expected.insert(0, "conductor.v1.ApprovalLedger");
        }
        assert_eq!(services_v1(server).await, expected, "{kind} v1");
        assert_eq!(services_v1alpha(server).await, expected, "{kind} v1alpha");
    }
    servers.stop().await;
}

#[tokio::test]
async fn unknown_tool_and_bad_json_are_rejected_clearly() {
    let servers = spawn_all().await;
    let backup = servers.get(ServerKind::Backup);

    let status = call_raw(backup, "drop_database", "{}").await.status();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("\"drop_database\""),
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("create_backup, list_backups, restore_backup"),
        "{}",
        status.message()
    );

    let status = call_raw(backup, "list_backups", "{not json").await.status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("arguments are not valid JSON: "),
        "{}",
        status.message()
    );

    let status = call_raw(backup, "list_backups", r#"{"surprise": 1}"#)
        .await
        .status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("surprise"),
        "{}",
        status.message()
    );

    // Empty arguments text means "no arguments".
    assert!(matches!(
        call_raw(backup, "list_backups", "").await,
        Called::Ok(_)
    ));
    servers.stop().await;
}

#[tokio::test]
async fn oversized_messages_get_a_clear_error_and_the_server_keeps_serving() {
    let servers = spawn_all().await;
    let processing = servers.get(ServerKind::Processing);
    let big = "x".repeat(conductor_servers::serve::MAX_MESSAGE_BYTES + 1024);
    let mut client = processing
        .tool_client()
        .await
        .max_encoding_message_size(usize::MAX);
    let status = client
        .call_tool(conductor_proto::v1::CallToolRequest {
            tool: "process_data".into(),
            arguments_json: format!(r#"{{"records": [{{"s": "{big}"}}]}}"#),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(matches!(
        call_raw(processing, "process_data", r#"{"records": []}"#).await,
        Called::Ok(_)
    ));
    servers.stop().await;
}
