//! Shared set-up for the integration tests: a small event type, opening a log in a temp dir, and
//! reading or rewriting its files line by line.
#![allow(dead_code)]

use conductor_audit::{AuditLog, AuditOptions, OpenReport, Record};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An event shaped like the orchestrator's: an internally tagged enum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ev {
    Note { n: u64, text: String },
    Flag { on: bool },
}

pub fn note(n: u64) -> Ev {
    Ev::Note {
        n,
        text: format!("note {n}"),
    }
}

/// Options for `dir` without fsync (tests that check durability turn it on).
pub fn options(dir: &Path) -> AuditOptions {
    AuditOptions {
        fsync: false,
        ..AuditOptions::new(dir)
    }
}

/// Opens a log, collecting what `replay` saw.
pub async fn open(
    options: AuditOptions,
) -> Result<(AuditLog<Ev>, OpenReport, Vec<Record<Ev>>), conductor_audit::AuditError> {
    let mut replayed = Vec::new();
    let (log, report) = AuditLog::open(options, |r: Record<Ev>| replayed.push(r)).await?;
    Ok((log, report, replayed))
}

/// A closed log of `n` notes in `dir`.
pub async fn write_log(dir: &Path, n: u64, max_file_bytes: u64) {
    let (log, _, _) = open(conductor_audit::AuditOptions {
        max_file_bytes,
        ..options(dir)
    })
    .await
    .unwrap();
    for i in 1..=n {
        log.append(note(i)).await.unwrap();
    }
    log.close().await;
}

/// The log files of `dir`, in order.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Files moved aside by recovery.
pub fn damaged_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .collect()
}

/// The lines of a file, without their `\n`.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Rewrites a file from lines, each ending in `\n`.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Waits until `condition` holds, failing after a generous deadline.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every record in `dir`, read back.
pub fn read_all(dir: &Path) -> Vec<Record<Ev>> {
    conductor_audit::read_from(dir, 1)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}
