//! conductorctl and the PostgreSQL audit store (issue 23), on a real temporary PostgreSQL server
//! started by the test: `audit verify --store URL` (the chain verified offline from the database),
//! `status` on a standby, and `cluster status` against each node of a cluster.

mod common;

use common::{ctl_bare, output};
use conductor_audit::pg::PgOptions;
use conductor_audit::testing::TempPostgres;
use conductor_audit::{AuditLog, AuditOptions, StoreOptions};
use serde_json::{Value, json};

#[tokio::test]
async fn audit_verify_store_checks_the_chain_the_database_holds() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("cli_verify")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        store: StoreOptions::Postgres(PgOptions::new(&url)),
        ..AuditOptions::new(dir.path())
    };
    let (log, _) = AuditLog::<Value>::open(options, |_| {}).await.unwrap();
    for n in 1..=4 {
        log.append(json!({"kind": "note", "n": n})).await.unwrap();
    }
    log.close().await;

    let verify = |url: String| async move {
        let mut command = ctl_bare();
        command.args(["audit", "verify", "--json", "--store", &url]);
        output(command, None).await
    };
    let intact = verify(url.clone()).await;
    assert_eq!(intact.code, 0, "{}", intact.text());
    let report: Value = serde_json::from_str(&intact.stdout).expect("JSON");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], 4, "{report}");
    assert_eq!(report["store"], "postgres", "{report}");

    let db = TempPostgres::client(&url).await.unwrap();
    db.execute(
        r#"UPDATE audit_records SET line = replace(line, '"n":2', '"n":7') WHERE seq = 2"#,
        &[],
    )
    .await
    .unwrap();
    let broken = verify(url.clone()).await;
    assert_ne!(broken.code, 0, "{}", broken.text());
    let report: Value = serde_json::from_str(&broken.stdout).expect("JSON");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_seq"], 2, "{report}");

    let empty = server.create_database("cli_empty").await.unwrap();
    let refused = verify(empty).await;
    assert_ne!(refused.code, 0, "{}", refused.text());
    assert!(
        refused.stderr.contains("holds no Conductorio audit log"),
        "{}",
        refused.text()
    );
}

/// `conductorctl status` against a warm standby (issue 23) says whom it follows, where, and how far
/// behind it is; `--json` carries the same as `standby`, which is null on the active node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_on_a_standby_names_the_active_node_and_the_lag() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("cli_standby_status")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let stack =
        common::Stack::start_with(json!({"store": {"postgres": {"url": url, "lease_ttl": "2s"}}}))
            .await;
    let config = std::fs::read_to_string(&stack.config_path).unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let b = conductor_orchestrator::testing::spawn(&config, None, b_dir.path())
        .await
        .expect("B starts as a standby");
    let a_grpc = stack.url.trim_start_matches("http://").to_owned();

    let mut command = common::ctl_command(&b.grpc_url());
    command.args(["status", "--json"]);
    let json_status = output(command, None).await;
    assert_eq!(json_status.code, 0, "{}", json_status.text());
    let status: Value = serde_json::from_str(&json_status.stdout).expect("JSON");
    assert_eq!(
        status["standby"]["active_grpc"],
        a_grpc.as_str(),
        "{status}"
    );
    assert_eq!(status["standby"]["problem"], "", "{status}");

    let mut command = common::ctl_command(&b.grpc_url());
    command.arg("status");
    let text = output(command, None).await;
    assert_eq!(text.code, 0, "{}", text.text());
    assert!(
        text.stdout.contains("standby:") && text.stdout.contains(&a_grpc),
        "{}",
        text.stdout
    );

    let active = stack.ctl(&["status", "--json"]).await;
    let active: Value = serde_json::from_str(&active.stdout).expect("JSON");
    assert_eq!(active["standby"], Value::Null, "{active}");
    b.stop().await;
    stack.stop().await;
}

/// `conductorctl cluster status` (issue 23, item 8), the real binary against both nodes of a
/// cluster: the same active node, epoch and lease from either, the standby with its lag and last
/// report; and against a node alone on files, "no cluster" as an answer (exit 0), not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_the_same_cluster_from_either_node_and_no_cluster_alone() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("cli_cluster_status")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let stack =
        common::Stack::start_with(json!({"store": {"postgres": {"url": url, "lease_ttl": "2s"}}}))
            .await;
    let config = std::fs::read_to_string(&stack.config_path).unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let b = conductor_orchestrator::testing::spawn(&config, None, b_dir.path())
        .await
        .expect("B starts as a standby");
    let a_grpc = stack.url.trim_start_matches("http://").to_owned();
    let cluster_json = |url: String| async move {
        let mut command = common::ctl_command(&url);
        command.args(["cluster", "status", "--json"]);
        let answer = output(command, None).await;
        assert_eq!(answer.code, 0, "{}", answer.text());
        serde_json::from_str::<Value>(&answer.stdout).expect("JSON")
    };

    // B reports itself with its first look at the lease; until then only A is listed.
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let on_b = loop {
        let seen = cluster_json(b.grpc_url()).await;
        if seen["nodes"].as_array().is_some_and(|n| n.len() == 2) {
            break seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never listed itself: {seen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let on_a = cluster_json(stack.url.clone()).await;
    let a_name = on_a["answered_by"].as_str().expect("A's name").to_owned();
    let b_name = on_b["answered_by"].as_str().expect("B's name").to_owned();
    assert_ne!(a_name, b_name);
    for view in [&on_a, &on_b] {
        assert_eq!(view["clustered"], true, "{view}");
        assert_eq!(view["active"], a_name.as_str(), "{view}");
        assert_eq!(view["active_grpc"], a_grpc.as_str(), "{view}");
        assert_eq!(view["epoch"], 1, "{view}");
        assert!(view["lease_valid_for_ms"].as_i64() > Some(0), "{view}");
        assert_eq!(view["nodes"][0]["name"], a_name.as_str(), "{view}");
        assert_eq!(view["nodes"][0]["state"], "active", "{view}");
    }
    let standby = &on_b["nodes"][1];
    assert_eq!(standby["name"], b_name.as_str(), "{on_b}");
    assert_eq!(standby["state"], "standby", "{on_b}");
    assert_eq!(standby["answering"], true, "{on_b}");
    assert_eq!(
        standby["grpc"],
        b.grpc_url().trim_start_matches("http://"),
        "{on_b}"
    );
    for field in ["applied_seq", "lag_records", "lag_ms", "last_report_ms_ago"] {
        assert!(standby[field].is_u64(), "{field} in {on_b}");
    }

    let mut command = common::ctl_command(&b.grpc_url());
    command.args(["cluster", "status"]);
    let text = output(command, None).await;
    assert_eq!(text.code, 0, "{}", text.text());
    assert!(
        text.stdout
            .contains(&format!("active: {a_name} (gRPC {a_grpc}"))
            && text.stdout.contains("epoch 1, lease valid for")
            && text.stdout.contains(&format!("{b_name} *"))
            && text.stdout.contains("standby"),
        "{}",
        text.stdout
    );
    b.stop().await;
    stack.stop().await;

    let alone = common::Stack::start().await;
    let text = alone.ctl(&["cluster", "status"]).await;
    assert_eq!(text.code, 0, "{}", text.text());
    assert!(text.stdout.starts_with("no cluster:"), "{}", text.stdout);
    let json_answer = alone.ctl(&["cluster", "status", "--json"]).await;
    assert_eq!(json_answer.code, 0, "{}", json_answer.text());
    let answer: Value = serde_json::from_str(&json_answer.stdout).expect("JSON");
    assert_eq!(answer, json!({"clustered": false}));
    alone.stop().await;
}
