//! `ClusterStatus` (issue 23, item 8), against a real temporary PostgreSQL: any node of a cluster
//! answers with the same view of it (the active node, the epoch, the lease, each standby's lag),
//! a failover shows the new active node and the old one gone, a node alone on files says there is
//! no cluster, and the schema that holds the nodes' reports is migrated from the version before
//! it (a newer one is refused).

use crate::cluster_standby::{active_and_standby, note, on_postgres, status};
use crate::common;

use common::*;
use conductor_audit::StoreOptions;
use conductor_audit::testing::TempPostgres;
use conductor_orchestrator::Gateway;
use conductor_proto::v1 as pb;
use conductor_servers::testing::spawn_all;
use serde_json::json;

/// This node's name in the lease row and the nodes' table.
fn name_of(gateway: &Gateway) -> String {
    match gateway.audit().store() {
        StoreOptions::Postgres(pg) => pg.holder.clone(),
        StoreOptions::Files => panic!("a node on the PostgreSQL store expected"),
    }
}

async fn cluster(client: &mut Client) -> pb::ClusterStatusResponse {
    client
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .expect("cluster status")
        .into_inner()
}

fn node<'a>(status: &'a pb::ClusterStatusResponse, name: &str) -> Option<&'a pb::ClusterNode> {
    status.nodes.iter().find(|n| n.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_nodes_show_the_same_cluster_and_a_failover_shows_the_old_node_gone() {
    // Long enough that a renewal delayed on a loaded machine never lets B take over early.
    let (servers, config, _) = on_postgres("orchestrator_cluster_status", "2s").await;
    let (a, b, _b_dir) = active_and_standby(servers, config).await;
    let (a_name, b_name) = (name_of(&a.orchestrator.gateway), name_of(&b.gateway));
    let mut a_client = a.client.clone();
    let b_client = connect(&b.grpc_url()).await;
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("A serves");
    let a_seq = status(&mut a_client).await.last_seq;

    // Once B reported having applied A's records, both nodes answer with the same cluster.
    let on_b = wait_until("B to report it applied A's records", || {
        let mut b_client = b_client.clone();
        let b_name = b_name.clone();
        async move {
            let seen = cluster(&mut b_client).await;
            let b = node(&seen, &b_name)?;
            (b.applied_seq >= a_seq && b.head_seq >= a_seq).then_some(seen)
        }
    })
    .await;
    let on_a = cluster(&mut a_client).await;
    for (view, answering) in [(&on_a, &a_name), (&on_b, &b_name)] {
        assert!(view.clustered, "{view:?}");
        assert_eq!(&view.answered_by, answering);
        assert_eq!(view.active, a_name, "{view:?}");
        assert_eq!(view.epoch, 1, "{view:?}");
        assert_eq!(
            view.active_grpc,
            a.orchestrator.grpc_addr.to_string(),
            "{view:?}"
        );
        assert!(view.lease_valid_for_ms > 0, "{view:?}");
        assert!(view.head_seq >= a_seq, "{view:?}");
        let names: Vec<(&str, i32)> = view
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.state))
            .collect();
        assert_eq!(
            names,
            vec![
                (a_name.as_str(), pb::NodeState::Active as i32),
                (b_name.as_str(), pb::NodeState::Standby as i32),
            ],
            "the active node first, then the standby"
        );
        let answered: Vec<&str> = view
            .nodes
            .iter()
            .filter(|n| n.answering)
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(answered, vec![answering.as_str()]);
    }
    let standby = node(&on_b, &b_name).expect("B in the list");
    assert_eq!(standby.grpc, b.grpc_addr.to_string());
    assert_eq!(standby.epoch_seen, 1);
    assert_eq!(
        standby.lag_records,
        standby.head_seq - standby.applied_seq,
        "{standby:?}"
    );
    assert_eq!(standby.lease_ttl_ms, 2000);
    assert!(standby.last_report_ms_ago.is_some(), "{standby:?}");

    // A stops renewing (as if paused): B takes over, A is fenced out and, silent, gone.
    a.orchestrator.gateway.audit().pause_lease_renewal(true);
    let after = wait_until("B to show itself active and A gone", || {
        let mut b_client = b_client.clone();
        let (a_name, b_name) = (a_name.clone(), b_name.clone());
        async move {
            let seen = cluster(&mut b_client).await;
            let gone = node(&seen, &a_name)?.state == pb::NodeState::Gone as i32;
            (seen.active == b_name && gone).then_some(seen)
        }
    })
    .await;
    assert_eq!(after.epoch, 2, "{after:?}");
    assert_eq!(after.active_grpc, b.grpc_addr.to_string());
    assert_eq!(
        after.nodes.first().map(|n| (n.name.as_str(), n.state)),
        Some((b_name.as_str(), pb::NodeState::Active as i32)),
        "{after:?}"
    );
    // A, fenced but still up, reads the same from the store.
    let on_a = cluster(&mut a_client).await;
    assert_eq!((on_a.active.as_str(), on_a.epoch), (b_name.as_str(), 2));
    assert_eq!(
        node(&on_a, &a_name).map(|n| n.state),
        Some(pb::NodeState::Gone as i32)
    );
    b.stop().await;
}

#[tokio::test]
async fn a_node_alone_on_files_answers_that_there_is_no_cluster() {
    let h = Harness::shipped().await;
    let answer = cluster(&mut h.client.clone()).await;
    assert_eq!(answer, pb::ClusterStatusResponse::default());
    assert!(!answer.clustered);
}

/// Version 1 of the schema, as the build before the nodes' table created it.
const SCHEMA_V1: &str = "
    CREATE TABLE schema_version (
        version    integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT NOW()
    );
    CREATE TABLE audit_records (
        seq bigint PRIMARY KEY, ts_ms bigint NOT NULL, ts timestamptz NOT NULL, line text NOT NULL,
        record jsonb NOT NULL, kind text, workflow text, caller text, tool text,
        epoch bigint NOT NULL
    );
    CREATE INDEX audit_records_ts ON audit_records (ts);
    CREATE INDEX audit_records_kind ON audit_records (kind);
    CREATE INDEX audit_records_workflow ON audit_records (workflow);
    CREATE INDEX audit_records_caller ON audit_records (caller);
    CREATE INDEX audit_records_tool ON audit_records (tool);
    CREATE TABLE audit_chain_head (
        id integer PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, hash text NOT NULL,
        epoch bigint NOT NULL
    );
    INSERT INTO audit_chain_head VALUES
        (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', 0);
    CREATE FUNCTION audit_chain_head_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('audit_records', NEW.seq::text);
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER audit_chain_head_moved AFTER UPDATE OF seq ON audit_chain_head
        FOR EACH ROW EXECUTE FUNCTION audit_chain_head_notify();
    CREATE TABLE cluster_lease (
        id integer PRIMARY KEY CHECK (id = 1), holder text NOT NULL, advertise jsonb NOT NULL,
        epoch bigint NOT NULL, valid_until timestamptz NOT NULL, acquired_at timestamptz NOT NULL
    );
    INSERT INTO cluster_lease VALUES (1, '', '{}', 0, '-infinity', '-infinity');
    INSERT INTO schema_version (version) VALUES (1);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_schema_is_migrated_and_a_newer_one_refused() {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database("orchestrator_schema_v1")
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let db = TempPostgres::client(&url).await.unwrap();
    db.batch_execute(SCHEMA_V1)
        .await
        .expect("the version 1 schema");
    assert_eq!(
        conductor_audit::GENESIS_PREV,
        "0".repeat(64),
        "the chain's start as version 1 wrote it"
    );

    let servers = spawn_all().await;
    let mut config = shipped_config(&servers);
    config["store"] = json!({"postgres": {"url": url, "lease_ttl": "2s"}});
    let a = Harness::with_servers(servers, config.clone()).await;
    let wf = a.start_workflow("", json!({})).await;
    a.call(&wf, "send_notification", note(0))
        .await
        .expect("a node on the migrated schema serves");
    let versions: Vec<i32> = db
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2]);
    let seen = cluster(&mut a.client.clone()).await;
    let a_name = name_of(&a.orchestrator.gateway);
    assert_eq!(
        node(&seen, &a_name).map(|n| n.state),
        Some(pb::NodeState::Active as i32),
        "{seen:?}"
    );
    let Harness {
        orchestrator, dir, ..
    } = a;
    orchestrator.stop().await;

    db.execute("INSERT INTO schema_version (version) VALUES (3)", &[])
        .await
        .unwrap();
    let text = serde_json::to_string(&config).unwrap();
    let refused = conductor_orchestrator::testing::spawn(&text, None, &dir.path().join("again"))
        .await
        .err()
        .expect("a schema newer than this build knows is refused");
    let message = refused.to_string();
    assert!(
        message.contains("schema version 3, newer than the 2 this orchestrator knows"),
        "{message}"
    );
}
