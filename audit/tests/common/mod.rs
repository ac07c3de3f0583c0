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

/// Every file of `dir` is plain JSONL: no zeros, every line ends in `\n`.
pub fn assert_plain_jsonl(dir: &Path) {
    for file in log_files(dir) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.contains(&0), "{} holds zeros", file.display());
        assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "{} ends mid-line",
            file.display()
        );
    }
}

/// A log of `max_file_bytes` whose writer has moved to a prepared file: records are appended until a
/// second file appears (the writer takes the spare only when it is ready, so this waits for it).
pub async fn log_on_a_prepared_file(dir: &Path, max_file_bytes: u64) -> (AuditLog<Ev>, u64) {
    let (log, _, _) = open(AuditOptions {
        max_file_bytes,
        ..options(dir)
    })
    .await
    .unwrap();
    let mut n = 0;
    let mut appended = || {
        n += 1;
        n
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log_files(dir).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no prepared file taken"
        );
        log.append(note(appended())).await.unwrap();
    }
    (log, n)
}

/// A crash leaves the files as they are while the log is open (what the page cache holds survives
/// a process's death): the copy of an open log's directory is what a restart finds.
pub fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "jsonl") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}
