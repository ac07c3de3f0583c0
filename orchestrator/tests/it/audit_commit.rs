//! Who writes and syncs a call's records. A lone call commits its own records on its own thread
//! (no hand-off: the lowest latency); while another call runs, the audit log's keeper thread commits
//! them, so that no runtime worker blocks on the disk while other calls have work for it. Either
//! way every record is durable before the call goes on.

use crate::common;

use common::*;
use conductor_orchestrator::audit::AuditEvent;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_call_syncs_its_own_records_and_a_call_beside_a_running_one_leaves_it_to_the_keeper()
{
    let (h, held) = with_a_stuck_notification_server().await;
    let audit = h.orchestrator.gateway.audit().clone();
    let workflow = h.start_workflow("", json!({})).await;

    let keeper_before = audit.batches_led_by_keeper();
    for _ in 0..3 {
        h.call(&workflow, "list_schemas", json!({}))
            .await
            .expect("a call to a live server");
    }
    assert_eq!(
        audit.batches_led_by_keeper(),
        keeper_before,
        "one call at a time: each wrote and synced its own records"
    );

    let running = h.spawn_call(&workflow, "list_notifications", json!({}));
    wait_for_stuck_calls(&h, 1).await;
    let keeper_before = audit.batches_led_by_keeper();
    let seq_before = audit.last_seq();
    h.call(&workflow, "list_schemas", json!({}))
        .await
        .expect("a call beside the running one");
    // Its decision and start (one batch) and its outcome (another), both the keeper's, and durable
    // when the call returned.
    assert!(
        audit.batches_led_by_keeper() >= keeper_before + 2,
        "beside a running call the keeper commits: {} batches before, {} after",
        keeper_before,
        audit.batches_led_by_keeper()
    );
    assert!(audit.last_seq() >= seq_before + 3);
    let records = h.audit_records();
    let finished = records.iter().filter(
        |r| matches!(&r.event, AuditEvent::CallFinished { tool, .. } if tool == "list_schemas"),
    );
    assert_eq!(finished.count(), 4, "every outcome is on disk");

    running.abort();
    held.abort();
}

/// An orchestrator whose notification server is a listener that takes connections and never
/// answers: a call to one of its tools stays running (its intent durable) until its time-out. The
/// listener lives as long as the returned task.
async fn with_a_stuck_notification_server() -> (Harness, tokio::task::JoinHandle<()>) {
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stuck_url = format!("http://{}", stuck.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = stuck.accept().await {
            connections.push(connection);
        }
    });
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config = config_with(&servers, json!([]), json!({}));
    config["servers"]["notification"]["grpc"] = json!(stuck_url);
    (Harness::with_servers(servers, config).await, held)
}

/// Waits until `n` calls to the stuck server have their intent on disk.
async fn wait_for_stuck_calls(h: &Harness, n: usize) {
    wait_until("the stuck calls to be running", || {
        let started = h
            .audit_records()
            .iter()
            .filter(|r| {
                matches!(&r.event, AuditEvent::CallStarted { tool, .. } if tool == "list_notifications")
            })
            .count();
        async move { (started >= n).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beside_many_running_calls_the_keeper_waits_for_more_records_only_briefly() {
    // Beside 12 running calls the keeper waits for 3 records before it syncs. None come here (the
    // 12 are stuck), so each of the call's records waits out `gather_for` and is then committed
    // on its own: the wait is bounded, and nothing is left behind.
    let (h, held) = with_a_stuck_notification_server().await;
    let audit = h.orchestrator.gateway.audit().clone();
    let workflow = h.start_workflow("", json!({})).await;
    let running: Vec<_> = (0..12)
        .map(|_| h.spawn_call(&workflow, "list_notifications", json!({})))
        .collect();
    wait_for_stuck_calls(&h, 12).await;

    let batches_before = audit.batches_committed();
    let keeper_before = audit.batches_led_by_keeper();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        h.call(&workflow, "list_schemas", json!({})),
    )
    .await
    .expect("a call beside many running ones is not held by the keeper's wait")
    .expect("the call succeeds");
    // Its decision and start, then its outcome, each committed by the keeper on its own. The
    // decision and the start are queued one after the other by the same task; on a loaded
    // machine that task can be held between the two past the keeper's wait, and the two then go
    // in batches of their own (seen in 2 full-suite runs of 6): three batches, never more.
    let (batches, by_keeper) = (
        audit.batches_committed() - batches_before,
        audit.batches_led_by_keeper() - keeper_before,
    );
    assert!(
        (2..=3).contains(&batches) && by_keeper >= 2,
        "{batches} batches, {by_keeper} of them the keeper's: each of the call's records should be committed by the keeper, in two or three batches"
    );
    let finished = h.audit_records().into_iter().filter(
        |r| matches!(&r.event, AuditEvent::CallFinished { tool, .. } if tool == "list_schemas"),
    );
    assert_eq!(finished.count(), 1, "the outcome is on disk");

    for call in running {
        call.abort();
    }
    held.abort();
}
