//! The processing server over gRPC.

use conductor_servers::ServerKind;
use conductor_servers::testing::spawn;
use serde_json::json;

use crate::common::{call, details};

#[tokio::test]
async fn normalises_dedupes_and_aggregates_real_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Processing, dir.path()).await;
    let records = json!([
        {"id": "1", "name": "  Ada   Lovelace ", "email": " Ada@Example.COM", "country": "UK", "spent": 120},
        {"id": "2", "name": "Grace Hopper", "email": "grace@example.org", "country": "US", "spent": 80.5},
        {"id": "3", "name": "Ada L.", "email": "ada@example.com ", "country": "UK", "spent": 999},
        {"id": "4", "name": "Alan\tTuring", "email": "alan@example.net", "country": "UK", "spent": 30},
    ]);
    let args = json!({
        "records": records,
        "dedupe_by": "email",
        "aggregate": {"group_by": "country", "sum": ["spent"]},
    });
    let result = call(&server, "process_data", args.clone()).await.ok();
    assert_eq!(
        result,
        json!({
            "count": 3,
            "duplicates_removed": 1,
            "aggregates": {"group_by": "country", "groups": [
                {"key": "UK", "count": 2, "sum": {"spent": 150}},
                {"key": "US", "count": 1, "sum": {"spent": 80.5}},
            ]},
            "records": [
                {"id": "1", "name": "Ada Lovelace", "email": "ada@example.com", "country": "UK", "spent": 120},
                {"id": "2", "name": "Grace Hopper", "email": "grace@example.org", "country": "US", "spent": 80.5},
                {"id": "4", "name": "Alan Turing", "email": "alan@example.net", "country": "UK", "spent": 30},
            ],
        })
    );
    // Deterministic: the same input gives the same output, byte for byte.
    let again = call(&server, "process_data", args).await.ok();
    assert_eq!(again.to_string(), result.to_string());

    // Without normalisation the two Ada addresses differ, so nothing is removed.
    let raw = call(
        &server,
        "process_data",
        json!({"records": records, "normalize": false, "dedupe_by": "email"}),
    )
    .await
    .ok();
    assert_eq!(raw["duplicates_removed"], 0);
    assert_eq!(raw["records"][0]["name"], "  Ada   Lovelace ");
    assert!(raw.get("aggregates").is_none());
    server.stop().await;
}

#[tokio::test]
async fn malformed_input_names_index_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Processing, dir.path()).await;

    let error = call(
        &server,
        "process_data",
        json!({"records": [{"id": 1}, {"name": "no id"}], "dedupe_by": "id"}),
    )
    .await
    .tool_error();
    assert_eq!(error.code, "malformed_input");
    assert!(
        error.message.contains("record 1") && error.message.contains("\"id\""),
        "{}",
        error.message
    );
    assert_eq!(details(&error), json!({"index": 1, "field": "id"}));

    let error = call(
        &server,
        "process_data",
        json!({"records": [{"a": 1}, "text"]}),
    )
    .await
    .tool_error();
    assert_eq!(error.code, "malformed_input");
    assert_eq!(error.message, "record 1 is a string, not an object");

    let status = call(
        &server,
        "process_data",
        json!({"records": [], "aggregate": {"sum": ["x"]}}),
    )
    .await
    .status();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("group_by"),
        "{}",
        status.message()
    );
    server.stop().await;
}
