//! `conductorctl audit verify --store URL`: the chain verified offline from a PostgreSQL audit store
//! (issue 23), on a real temporary PostgreSQL server started by the test.

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
