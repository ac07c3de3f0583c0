//! Figure 0 (issue 26): one durable record through the audit log, against the device floor measured
//! in the same directory in the same rounds.
//!
//! The log is the real one (`conductor_audit::AuditLog`, `fsync` on, default options), written by
//! one caller at a time on a thread of its own, so each append leads its own write and sync: the
//! log's cost over the device, without the orchestrator's runtime around it. The log starts on a
//! plain file and moves to a prepared one once it holds 64 KiB and the spare is ready; the warm-up
//! appends until it has, so every timed record is written in place.
//!
//! Each round interleaves the four measurements a block of [`BLOCK`] samples at a time (the floor,
//! the log, `pwrite` + `fdatasync`, append + `fdatasync`), so that all four see the same disk: on a
//! shared VM its latency moves by an order of magnitude from one second to the next. The goal is
//! judged on the median over rounds of each round's ratio.

use crate::fsync::{Probe, ProbeKind, RECORD};
use crate::report::Report;
use crate::stats::{Latencies, median, median_of};
use crate::suite::Scale;
use anyhow::{Context, Result, bail};
use conductor_audit::{AuditLog, AuditOptions};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// A record of about [`RECORD`] bytes once the chain fields are added.
fn event(n: u64) -> Value {
    json!({ "kind": "bench_record", "n": n, "pad": "x".repeat(RECORD - 260) })
}

/// Figure 0.
pub async fn one_durable_record(report: &mut Report, scale: &Scale, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let log_dir = dir.join("figure-0-log");
    let samples = scale.fsync_samples;
    let rounds = scale.rounds;
    let (floor, in_place, append, log) = tokio::task::spawn_blocking({
        let dir = dir.to_path_buf();
        move || -> Result<_> {
            let runtime = tokio::runtime::Builder::new_current_thread().build()?;
            let log = runtime.block_on(warm_log(&log_dir))?;
            let (mut floor, mut in_place, mut append, mut ours) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let mut n = 1_000_000;
            for _ in 0..rounds {
                let mut floor_probe = Probe::new(&dir, ProbeKind::Floor, samples)?;
                let mut in_place_probe = Probe::new(&dir, ProbeKind::InPlace, samples)?;
                let mut append_probe = Probe::new(&dir, ProbeKind::Append, samples)?;
                let mut log_latencies = Latencies::new();
                let started = Instant::now();
                let mut left = samples;
                while left > 0 {
                    let block = left.min(BLOCK);
                    floor_probe.sample(block)?;
                    runtime.block_on(appends(&log, block, &mut n, &mut log_latencies))?;
                    in_place_probe.sample(block)?;
                    append_probe.sample(block)?;
                    left -= block;
                }
                let elapsed = started.elapsed();
                floor.push(floor_probe.finish(elapsed));
                ours.push(log_latencies.summary(elapsed));
                in_place.push(in_place_probe.finish(elapsed));
                append.push(append_probe.finish(elapsed));
            }
            runtime.block_on(log.close());
            Ok((floor, in_place, append, ours))
        }
    })
    .await??;
    let ratio = median(floor.iter().zip(&log).map(|(f, l)| l.p50_us / f.p50_us));
    let (floor, in_place, append, log) = (
        median_of(&floor),
        median_of(&in_place),
        median_of(&append),
        median_of(&log),
    );
    report.info(
        0,
        "device floor: pre-zeroed pwrite + O_DSYNC, p50",
        floor.p50_us,
        "µs",
    );
    report.info(
        0,
        "pre-zeroed pwrite + fdatasync, p50",
        in_place.p50_us,
        "µs",
    );
    report.info(
        0,
        "append + fdatasync (the file grows), p50",
        append.p50_us,
        "µs",
    );
    report.info(
        0,
        "one durable record through the audit log, p50",
        log.p50_us,
        "µs",
    );
    report.info(
        0,
        "one durable record through the audit log, p99",
        log.p99_us,
        "µs",
    );
    report.goal(
        0,
        "durable record p50 / device floor p50",
        ratio,
        "×",
        "≤ 1.2× the device floor".into(),
        ratio <= 1.2,
        false,
    );
    report.detail("0_floor", floor);
    report.detail("0_in_place_fdatasync", in_place);
    report.detail("0_append_fdatasync", append);
    report.detail("0_audit_log", log);
    Ok(())
}

/// Opens a fresh log in `dir` and appends until its writer has moved to a prepared file.
async fn warm_log(dir: &Path) -> Result<AuditLog<Value>> {
    let (log, _) = AuditLog::open(AuditOptions::new(dir), |_| {}).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    while log_files(dir)? < 2 {
        if Instant::now() > deadline {
            bail!("the audit log did not move to a prepared file within a minute");
        }
        n += 1;
        log.append(event(n)).await.context("warm-up append")?;
    }
    Ok(log)
}

fn log_files(dir: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .count())
}

/// Samples each measurement takes in a row before the next takes its turn.
const BLOCK: usize = 50;

/// `samples` appends, one at a time, each awaited until durable, into `latencies`.
async fn appends(
    log: &AuditLog<Value>,
    samples: usize,
    n: &mut u64,
    latencies: &mut Latencies,
) -> Result<()> {
    for _ in 0..samples {
        *n += 1;
        // The caller builds its event before the clock starts: what is timed is the log's part
        // (encoding, chaining, the write and its sync).
        let event = event(*n);
        let t = Instant::now();
        log.append(event).await?;
        latencies.record(t.elapsed());
    }
    Ok(())
}
