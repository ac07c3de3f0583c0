//! Appending, group commit, reopening, subscribing and closing, on real files.

mod common;

use common::{Ev, log_files, note, open, options, read_all, wait_until, write_log};
use conductor_audit::{Admit, AuditError, AuditLog, AuditOptions, read_from, verify_dir};
use std::collections::HashMap;
use tokio::sync::broadcast::error::RecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_gapless_durable_and_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report, _) = open(AuditOptions::new(dir.path())).await.unwrap();
    assert_eq!((report.records, report.last_seq, report.files), (0, 0, 1));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64u64 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut written = Vec::new();
            for i in 0..20 {
                written.push(log.append(note(task * 100 + i)).await.unwrap());
            }
            written
        });
    }
    let mut acked = HashMap::new();
    while let Some(written) = tasks.join_next().await {
        for record in written.unwrap() {
            acked.insert(record.seq, record);
        }
    }
    assert_eq!(log.last_seq(), 1280);
    let batches = log.batches_committed();
    assert!(
        batches < 1280,
        "{batches} batches for 1280 records: no group commit"
    );
    log.close().await;

    let on_disk = read_all(dir.path());
    let seqs: Vec<u64> = on_disk.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=1280).collect::<Vec<_>>());
    for record in &on_disk {
        assert_eq!(**acked.get(&record.seq).unwrap(), *record);
    }
    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.records, 1280);
}

#[tokio::test]
async fn reopening_replays_in_order_and_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, u64::MAX).await;
    let (log, report, replayed) = open(options(dir.path())).await.unwrap();
    assert_eq!((report.records, report.last_seq, report.files), (10, 10, 1));
    assert_eq!(report.torn_line_repaired, None);
    let events: Vec<Ev> = replayed.iter().map(|r| r.event.clone()).collect();
    assert_eq!(events, (1..=10).map(note).collect::<Vec<_>>());
    assert_eq!(log.last_seq(), 10);
    let next = log.append(Ev::Flag { on: true }).await.unwrap();
    assert_eq!(next.seq, 11);
    assert_eq!(next.prev, replayed[9].hash);
    assert!(next.ts_ms >= replayed[9].ts_ms);
    log.close().await;
    assert!(verify_dir(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn rotation_spreads_the_chain_over_files_and_read_from_skips_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40, 1000).await;
    let files = log_files(dir.path());
    assert!(files.len() >= 4, "{files:?}");
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.ok && report.records == 40 && report.files == files.len());

    // Each file is named by its first seq, and the chain continues across them.
    let (_, report, replayed) = open(options(dir.path())).await.unwrap();
    assert_eq!(report.records, 40);
    assert_eq!(replayed.len(), 40);

    let from_30: Vec<u64> = read_from::<Ev>(dir.path(), 30)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(from_30, (30..=40).collect::<Vec<_>>());
    // Files before the one holding seq 30 are not opened: making them unreadable changes nothing.
    std::fs::write(&files[0], b"not a log\n").unwrap();
    assert_eq!(read_from::<Ev>(dir.path(), 30).unwrap().count(), 11);
    assert_eq!(read_from::<Ev>(dir.path(), 41).unwrap().count(), 0);
    assert!(
        read_from::<Ev>(dir.path(), 1)
            .unwrap()
            .next()
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn subscribers_see_durable_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(options(dir.path())).await.unwrap();
    let mut feed = log.subscribe();
    for i in 1..=10 {
        log.append(note(i)).await.unwrap();
    }
    for seq in 1..=10 {
        let record = feed.recv().await.unwrap();
        assert_eq!(record.seq, seq);
        assert!(log.last_seq() >= seq, "published before durable");
    }
    log.close().await;
}

#[tokio::test]
async fn a_lagging_subscriber_is_told_it_lagged() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions {
        broadcast_capacity: 4,
        ..options(dir.path())
    })
    .await
    .unwrap();
    let mut feed = log.subscribe();
    for i in 1..=20 {
        log.append(note(i)).await.unwrap();
    }
    assert!(matches!(feed.recv().await, Err(RecvError::Lagged(16))));
    assert_eq!(feed.recv().await.unwrap().seq, 17);
    log.close().await;
}

#[tokio::test]
async fn close_flushes_queued_records_and_refuses_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions::new(dir.path())).await.unwrap();
    for i in 1..=200 {
        let _queued = log.enqueue(0, note(i), Admit::Outcome).unwrap();
    }
    let clone = log.clone();
    log.close().await;
    assert_eq!(read_all(dir.path()).len(), 200);
    assert!(matches!(
        clone.append(note(0)).await,
        Err(AuditError::Closed)
    ));
    assert!(matches!(
        clone.enqueue(0, note(0), Admit::Outcome).err(),
        Some(AuditError::Closed)
    ));
    clone.close().await;
}

#[tokio::test]
async fn dropping_every_handle_still_writes_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(options(dir.path())).await.unwrap();
    for i in 1..=50 {
        log.append(note(i)).await.unwrap();
    }
    drop(log);
    wait_until("the writer to drain", || read_all(dir.path()).len() == 50);
}

#[tokio::test]
async fn events_clashing_with_record_fields_are_refused_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    // serde_json::Value stands in for an event type that can serialize to anything.
    let (log, _) = AuditLog::<serde_json::Value>::open(options(dir.path()), |_| {})
        .await
        .unwrap();
    let err = log
        .append(serde_json::json!({"kind": "x", "hash": "mine"}))
        .await
        .unwrap_err();
    assert!(matches!(err, AuditError::Encode(_)), "{err}");
    assert!(err.to_string().contains("`hash`"), "{err}");
    let err = log.append(serde_json::json!([1, 2])).await.unwrap_err();
    assert!(matches!(err, AuditError::Encode(_)), "{err}");
    assert_eq!(log.append(serde_json::json!({})).await.unwrap().seq, 1);
    log.close().await;
    assert!(verify_dir(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(AuditOptions {
        channel_capacity: 0,
        ..options(dir.path())
    })
    .await
    .unwrap_err();
    assert!(matches!(err, AuditError::InvalidOptions(_)), "{err}");
}

#[tokio::test]
async fn a_second_writer_of_the_same_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || conductor_audit::AuditOptions::new(dir.path());
    let (first, _) = conductor_audit::AuditLog::<serde_json::Value>::open(options(), |_| {})
        .await
        .expect("first");
    let second = conductor_audit::AuditLog::<serde_json::Value>::open(options(), |_| {}).await;
    match second {
        Err(conductor_audit::AuditError::Locked(path)) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    first.close().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match conductor_audit::AuditLog::<serde_json::Value>::open(options(), |_| {}).await {
            Ok(_) => break,
            Err(conductor_audit::AuditError::Locked(_)) if std::time::Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            Err(e) => panic!("reopen after close: {e}"),
        }
    }
}

#[tokio::test]
async fn a_lone_caller_writes_and_syncs_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions::new(dir.path())).await.unwrap();
    for i in 1..=20 {
        assert_eq!(log.append(note(i)).await.unwrap().seq, i);
    }
    // One at a time, nobody else commits: each caller led the batch of its own record.
    assert_eq!(log.batches_committed(), 20);
    assert_eq!(log.batches_led_by_keeper(), 0);
    log.close().await;
    assert_eq!(read_all(dir.path()).len(), 20);
}

/// Whoever waits on a record learns how many records the batch that made it durable held, for the
/// trace of its commit: a lone record is a batch of one; three queued together share one batch.
#[tokio::test]
async fn a_waiter_learns_the_size_of_the_batch_its_record_was_committed_in() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions::new(dir.path())).await.unwrap();
    let lone = log.enqueue(0, note(1), Admit::Outcome).unwrap();
    let (record, size) = lone.durable_in_batch().await.unwrap();
    assert_eq!((record.seq, size), (1, 1));
    let queued: Vec<_> = (2..=4)
        .map(|i| log.enqueue(0, note(i), Admit::Outcome).unwrap())
        .collect();
    for (queued, seq) in queued.into_iter().rev().zip([4, 3, 2]) {
        let (record, size) = queued.durable_in_batch().await.unwrap();
        assert_eq!((record.seq, size), (seq, 3));
    }
    assert_eq!(log.batches_committed(), 2);
    log.close().await;
}

#[tokio::test]
async fn a_record_left_to_the_keeper_is_committed_by_it_and_never_on_the_callers_thread() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions::new(dir.path())).await.unwrap();
    for i in 1..=5 {
        let queued = log
            .enqueue(0, note(i), Admit::Outcome)
            .unwrap()
            .by_keeper(0);
        assert_eq!(queued.durable().await.unwrap().seq, i);
    }
    // Nobody else was committing, yet every batch was the keeper's: the callers never led.
    assert_eq!(log.batches_committed(), 5);
    assert_eq!(log.batches_led_by_keeper(), 5);
    // Inline records after them are led by their callers again. The keeper may still take one
    // that is queued while it steps down from its last batch (it leads until it finds the queue
    // empty), so this asks only that callers lead again soon, not at once.
    let mut seq = 5;
    while log.batches_committed() - log.batches_led_by_keeper() == 0 {
        seq += 1;
        assert!(seq <= 50, "no caller led again after by_keeper records");
        assert_eq!(log.append(note(seq)).await.unwrap().seq, seq);
    }
    log.close().await;
    assert_eq!(read_all(dir.path()).len() as u64, seq);
}

#[tokio::test]
async fn records_nobody_waits_on_are_written_while_the_log_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(options(dir.path())).await.unwrap();
    for i in 1..=3 {
        drop(log.enqueue(0, note(i), Admit::Outcome).unwrap());
    }
    wait_until("the keeper to write unawaited records", || {
        read_all(dir.path()).len() == 3
    });
    assert!(log.batches_led_by_keeper() >= 1);
    // A record whose owner waits leads for the unawaited one queued before it.
    drop(log.enqueue(0, note(4), Admit::Outcome).unwrap());
    let last = log.enqueue(0, note(5), Admit::Outcome).unwrap();
    assert_eq!(last.durable().await.unwrap().seq, 5);
    assert_eq!(read_all(dir.path()).len(), 5);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_and_the_keeper_share_the_work_without_losing_or_reordering_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions::new(dir.path())).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16u64 {
        let log = log.clone();
        tasks.spawn(async move {
            for i in 0..50u64 {
                let n = task * 1000 + i;
                // As the gateway does: two records queued together, only the second awaited;
                // every fifth round queues one more that nobody waits on.
                drop(log.enqueue(0, note(n), Admit::Outcome).unwrap());
                let second = log.enqueue(0, note(n + 500), Admit::Outcome).unwrap();
                if i % 5 == 0 {
                    drop(log.enqueue(0, note(n + 900), Admit::Outcome).unwrap());
                }
                let record = second.durable().await.unwrap();
                assert_eq!(record.event, note(n + 500));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let expected = 16 * (50 * 2 + 10);
    wait_until("every record on disk", || {
        read_all(dir.path()).len() == expected
    });
    assert!(log.batches_committed() < expected as u64);
    log.close().await;
    let on_disk = read_all(dir.path());
    assert_eq!(
        on_disk.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=expected as u64).collect::<Vec<_>>()
    );
    // Each task's records are in the order it queued them.
    let mut order: HashMap<u64, Vec<u64>> = HashMap::new();
    for record in &on_disk {
        let Ev::Note { n, .. } = record.event else {
            panic!("unexpected event {:?}", record.event)
        };
        order.entry(n / 1000).or_default().push(n);
    }
    for (task, seen) in order {
        let queued: Vec<u64> = (0..50u64)
            .flat_map(|i| {
                let n = task * 1000 + i;
                [Some(n), Some(n + 500), (i % 5 == 0).then_some(n + 900)]
            })
            .flatten()
            .collect();
        assert_eq!(seen, queued, "task {task}");
    }
    assert!(verify_dir(dir.path()).unwrap().ok);
}

/// Options whose keeper waits up to `gather_for` for the batch its callers asked for.
fn gathering(dir: &std::path::Path, gather_for: std::time::Duration) -> AuditOptions {
    AuditOptions {
        gather_for,
        ..AuditOptions::new(dir)
    }
}

/// Fails instead of hanging: the keeper's wait is meant to end well before this.
async fn soon<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

#[tokio::test]
async fn the_keeper_gathers_the_batch_its_callers_asked_for_and_one_sync_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    // So long that only the fourth record can end the wait.
    let (log, _, _) = open(gathering(dir.path(), std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    let mut waiting = Vec::new();
    for i in 1..=3 {
        let queued = log.enqueue(0, note(i), Admit::Outcome).unwrap();
        waiting.push(tokio::spawn(queued.by_keeper(4).durable()));
    }
    // Three records of a batch worth four: the keeper waits for the fourth.
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(
        log.batches_committed(),
        0,
        "the keeper committed before its batch was full"
    );
    let queued = log.enqueue(0, note(4), Admit::Outcome).unwrap();
    waiting.push(tokio::spawn(queued.by_keeper(4).durable()));
    let mut seqs = Vec::new();
    for waiter in waiting {
        seqs.push(
            soon("a gathered record", waiter)
                .await
                .unwrap()
                .unwrap()
                .seq,
        );
    }
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(
        (log.batches_committed(), log.batches_led_by_keeper()),
        (1, 1)
    );
    log.close().await;
    assert_eq!(read_all(dir.path()).len(), 4);
}

#[tokio::test]
async fn a_batch_that_never_fills_is_committed_once_gather_for_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(gathering(dir.path(), std::time::Duration::from_millis(20)))
        .await
        .unwrap();
    let queued = log.enqueue(0, note(1), Admit::Outcome).unwrap();
    let record = soon("a lone gathered record", queued.by_keeper(100).durable())
        .await
        .unwrap();
    assert_eq!(record.seq, 1);
    assert_eq!(log.batches_committed(), 1);
    log.close().await;
}

#[tokio::test]
async fn a_caller_with_nothing_else_in_flight_or_close_ends_the_keepers_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(gathering(dir.path(), std::time::Duration::from_secs(60)))
        .await
        .unwrap();
    // A caller that would lead its own record does not wait behind the keeper's gathering.
    let queued = log.enqueue(0, note(1), Admit::Outcome).unwrap();
    let gathered = tokio::spawn(queued.by_keeper(100).durable());
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(
        soon("an inline append", log.append(note(2)))
            .await
            .unwrap()
            .seq,
        2
    );
    assert_eq!(
        soon("the gathered record", gathered)
            .await
            .unwrap()
            .unwrap()
            .seq,
        1
    );
    // Nor does close: what the keeper gathers is committed at once.
    let queued = log.enqueue(0, note(3), Admit::Outcome).unwrap();
    let gathered = tokio::spawn(queued.by_keeper(100).durable());
    std::thread::sleep(std::time::Duration::from_millis(20));
    soon("close", log.close()).await;
    assert_eq!(
        soon("the record closed on", gathered)
            .await
            .unwrap()
            .unwrap()
            .seq,
        3
    );
    assert_eq!(read_all(dir.path()).len(), 3);
}
