//! The backup server over gRPC: real files, checksums, and no way out of the backup directory.

use conductor_servers::ServerKind;
use conductor_servers::testing::spawn;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::call;

#[tokio::test]
async fn create_list_restore_round_trip_with_a_real_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Backup, dir.path()).await;
    let data = json!({"customers": [{"id": "c1", "balance": 9007199254740993_i64}], "note": "é ✓"});

    let created = call(
        &server,
        "create_backup",
        json!({"name": "daily-2026.11.25", "data": data}),
    )
    .await
    .ok();
    let path = dir.path().join("backups").join("daily-2026.11.25.json");
    assert_eq!(
        std::path::Path::new(created["path"].as_str().unwrap()),
        path.canonicalize().unwrap()
    );
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk["data"], data);
    assert_eq!(on_disk["name"], "daily-2026.11.25");
    // The checksum is SHA-256 of the data's canonical text (sorted keys, compact).
    let canonical = r#"{"customers":[{"balance":9007199254740993,"id":"c1"}],"note":"é ✓"}"#;
    let expected = hex::encode(Sha256::digest(canonical.as_bytes()));
    assert_eq!(on_disk["sha256"], expected);
    assert_eq!(created["sha256"], expected);
    assert_eq!(created["bytes"], std::fs::metadata(&path).unwrap().len());

    let listed = call(&server, "list_backups", json!({})).await.ok();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["backups"][0]["name"], "daily-2026.11.25");
    assert_eq!(listed["backups"][0]["sha256"], expected);

    let restored = call(
        &server,
        "restore_backup",
        json!({"name": "daily-2026.11.25"}),
    )
    .await
    .ok();
    assert_eq!(restored["data"], data);
    assert_eq!(restored["sha256"], expected);

    let error = call(
        &server,
        "create_backup",
        json!({"name": "daily-2026.11.25", "data": 1}),
    )
    .await
    .tool_error();
    assert_eq!(error.code, "already_exists");
    call(
        &server,
        "create_backup",
        json!({"name": "daily-2026.11.25", "data": 1, "overwrite": true}),
    )
    .await
    .ok();
    let error = call(&server, "restore_backup", json!({"name": "missing"}))
        .await
        .tool_error();
    assert_eq!(error.code, "not_found");
    server.stop().await;
}

#[tokio::test]
async fn a_tampered_snapshot_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(ServerKind::Backup, dir.path()).await;
    call(
        &server,
        "create_backup",
        json!({"name": "ledger", "data": {"total": 100}}),
    )
    .await
    .ok();
    let path = dir.path().join("backups/ledger.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""total":100"#));
    std::fs::write(&path, text.replace(r#""total":100"#, r#""total":1000"#)).unwrap();

    let error = call(&server, "restore_backup", json!({"name": "ledger"}))
        .await
        .tool_error();
    assert_eq!(error.code, "checksum_mismatch");

    std::fs::write(&path, "{ not a snapshot").unwrap();
    let error = call(&server, "restore_backup", json!({"name": "ledger"}))
        .await
        .tool_error();
    assert_eq!(error.code, "corrupt_snapshot");
    server.stop().await;
}

#[tokio::test]
async fn names_that_escape_the_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let server = spawn(ServerKind::Backup, &data_dir).await;

    for name in [
        "../x",
        "../../outside/x",
        "/etc/passwd",
        "a/b",
        "bad\0name",
        "..",
        "a\\b",
    ] {
        for (tool, args) in [
            ("create_backup", json!({"name": name, "data": "pwned"})),
            ("restore_backup", json!({"name": name})),
        ] {
            let status = call(&server, tool, args).await.status();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{tool} {name:?}"
            );
            assert!(status.message().contains("/name"), "{}", status.message());
        }
    }

    // A snapshot-named symlink pointing outside is neither followed for writing nor for reading.
    let target = outside.join("target.json");
    std::os::unix::fs::symlink(&target, data_dir.join("backups/evil.json")).unwrap();
    for overwrite in [false, true] {
        let error = call(
            &server,
            "create_backup",
            json!({"name": "evil", "data": "pwned", "overwrite": overwrite}),
        )
        .await
        .tool_error();
        assert_eq!(error.code, "unsafe_name");
    }
    let error = call(&server, "restore_backup", json!({"name": "evil"}))
        .await
        .tool_error();
    assert_eq!(error.code, "unsafe_name");
    let listed = call(&server, "list_backups", json!({})).await.ok();
    assert_eq!(listed["count"], 0);

    // Nothing was written outside the backup directory.
    assert!(!target.exists());
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    let mut top: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["data", "outside"]);
    assert!(
        std::fs::symlink_metadata(data_dir.join("backups/evil.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    server.stop().await;
}
