//! Measurements, run by hand in release:
//! `cargo test -p conductor-audit --release --test throughput -- --ignored --nocapture`.

mod common;

use common::{Ev, options};
use conductor_audit::{Admit, AuditLog, AuditOptions, Record};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn records_per_second_with_64_appenders_and_fsync() {
    const APPENDERS: u64 = 64;
    const EACH: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::<Ev>::open(AuditOptions::new(dir.path()), |_| {})
        .await
        .unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..APPENDERS {
        let log = log.clone();
        tasks.spawn(async move {
            for i in 0..EACH {
                log.append(common::note(task * EACH + i)).await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed();
    let records = APPENDERS * EACH;
    println!(
        "{records} records by {APPENDERS} appenders with fsync in {elapsed:?}: {:.0} records/s, {} batches",
        records as f64 / elapsed.as_secs_f64(),
        log.batches_committed()
    );
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release"]
async fn opening_a_million_records() {
    const RECORDS: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::<Ev>::open(options(dir.path()), |_| {})
        .await
        .unwrap();
    for n in 0..RECORDS {
        let text = format!(
            "workflow wf-{n} call c-{n} tool search finished in 12 ms with a result of 3 items"
        );
        // Queued without waiting: `close` below waits for all of them.
        let _queued = log
            .enqueue(0, Ev::Note { n, text }, Admit::Outcome)
            .unwrap();
    }
    log.close().await;
    let bytes: u64 = common::log_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();

    let started = Instant::now();
    let mut replayed = 0u64;
    let (log, report) = AuditLog::<Ev>::open(options(dir.path()), |r: Record<Ev>| {
        replayed += r.seq.min(1);
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!((report.records, replayed), (RECORDS, RECORDS));
    println!(
        "opened {RECORDS} records ({} MB) in {elapsed:?}",
        bytes / 1_000_000
    );
    log.close().await;

    let started = Instant::now();
    let report = conductor_audit::verify_dir(dir.path()).unwrap();
    assert!(report.ok);
    println!("verify_dir of {RECORDS} records in {:?}", started.elapsed());
}
