//! The validation server over gRPC.

use conductor_servers::testing::{spawn, spawn_with};
use conductor_servers::{ServerKind, ServerOptions};
use serde_json::json;

use crate::common::{call, details};

#[tokio::test]
async fn valid_batch_passes_and_invalid_batch_lists_every_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Validation, dir.path()).await;

    let records = json!([
        {"id": "c1", "name": "Ada", "email": "ada@example.com", "age": 36},
        {"id": "c2", "name": "Grace", "email": "grace@example.org", "country": "US"},
    ]);
    let result = call(
        &server,
        "validate_data",
        json!({"schema": "customer", "records": records}),
    )
    .await
    .ok();
    assert_eq!(
        result,
        json!({"valid": true, "count": 2, "records": records})
    );

    let records = json!([
        {"id": "c1", "name": "Ada", "email": "ada@example.com"},
        {"id": "c2", "name": "Bob", "email": "bob-at-example"},
        {"id": "c3", "name": "Cy", "email": "cy@example.com"},
        {"id": "c4", "email": "d@example.com", "age": -3},
        {"id": "c5", "name": "Eve", "email": "eve@example.com"},
    ]);
    let error = call(
        &server,
        "validate_data",
        json!({"schema": "customer", "records": records}),
    )
    .await
    .tool_error();
    assert_eq!(error.code, "validation_failed");
    assert_eq!(error.message, "2 of 5 records are invalid");
    let invalid = details(&error)["invalid"].as_array().unwrap().clone();
    let found: Vec<(u64, String)> = invalid
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(found.len(), 3, "{invalid:?}");
    for expected in [(1, "/email"), (3, "/name"), (3, "/age")] {
        assert!(
            found.contains(&(expected.0, expected.1.to_owned())),
            "{expected:?} not in {found:?}"
        );
    }
    assert!(
        invalid
            .iter()
            .all(|e| !e["reason"].as_str().unwrap().is_empty())
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_arguments_and_unknown_schema() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Validation, dir.path()).await;

    let status = call(&server, "validate_data", json!({"schema": "customer"}))
        .await
        .status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        status.message(),
        r#"invalid arguments for validate_data: "records" is a required property"#
    );

    let status = call(
        &server,
        "validate_data",
        json!({"schema": "order", "records": [1]}),
    )
    .await
    .status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("at /records/0: "),
        "{}",
        status.message()
    );

    let error = call(
        &server,
        "validate_data",
        json!({"schema": "invoice", "records": []}),
    )
    .await
    .tool_error();
    assert_eq!(error.code, "unknown_schema");
    assert!(
        error.message.contains("customer, order"),
        "{}",
        error.message
    );

    let orders = json!([{"id": "o1", "customer_id": "c1", "amount": 12.5}]);
    let result = call(
        &server,
        "validate_data",
        json!({"schema": "order", "records": orders}),
    )
    .await
    .ok();
    assert_eq!(result["count"], 1);
    server.stop().await;
}

#[tokio::test]
async fn configured_schemas_are_listed_and_used() {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas.json");
    std::fs::write(
        &schemas,
        r#"{"ticket": {"type": "object", "required": ["title"], "properties": {"title": {"type": "string"}}}}"#,
    )
    .unwrap();
    let options = ServerOptions {
        schemas: Some(schemas),
        ..ServerOptions::new(dir.path().join("data"))
    };
    let server = spawn_with(ServerKind::Validation, options).await;

    let listed = call(&server, "list_schemas", json!({})).await.ok();
    let names: Vec<&str> = listed["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["customer", "order", "ticket"]);

    let error = call(
        &server,
        "validate_data",
        json!({"schema": "ticket", "records": [{"title": 5}]}),
    )
    .await
    .tool_error();
    assert_eq!(details(&error)["invalid"][0]["field"], "/title");
    server.stop().await;
}
