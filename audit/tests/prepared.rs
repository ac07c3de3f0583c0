//! Prepared files: the live file is zero-filled past its content and written in place; readers
//! stop at the zeros, a torn write before them is cut, anything else after them is reported, and a
//! file the writer leaves (or a closed log's last) is plain JSONL.

mod common;

use common::{
    assert_plain_jsonl, crash_copy, log_files, log_on_a_prepared_file, note, open, options,
    read_all, write_log,
};
use conductor_audit::{AuditError, AuditOptions, verify_dir};
use std::path::Path;

/// Appends `extra` to the (closed, sealed) last file of `dir`; returns the file and its length before.
fn append_to_last_file(dir: &Path, extra: &[u8]) -> (std::path::PathBuf, u64) {
    let file = log_files(dir).pop().expect("a log file");
    let mut bytes = std::fs::read(&file).unwrap();
    let before = bytes.len() as u64;
    bytes.extend_from_slice(extra);
    std::fs::write(&file, bytes).unwrap();
    (file, before)
}

#[tokio::test]
async fn zeros_after_the_last_line_are_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, u64::MAX).await;
    append_to_last_file(dir.path(), &[0; 100_000]);

    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.records, 5);
    assert_eq!(verified.torn_last_line, None, "zeros are no torn line");
    assert_eq!(read_all(dir.path()).len(), 5);

    let (log, report, replayed) = open(options(dir.path())).await.unwrap();
    assert_eq!((report.records, replayed.len()), (5, 5));
    assert_eq!(report.torn_line_repaired, None);
    assert_eq!(log.append(note(6)).await.unwrap().seq, 6);
    assert_eq!(
        read_all(dir.path()).len(),
        6,
        "written in place, before the zeros"
    );
    log.close().await;
    assert_plain_jsonl(dir.path());
    assert!(verify_dir(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn a_torn_write_before_the_zeros_is_cut_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, u64::MAX).await;
    let mut torn = b"{\"seq\":6,\"ts_ms\":1,\"prev\":\"00".to_vec();
    torn.extend_from_slice(&[0; 70_000]);
    let (file, intact) = append_to_last_file(dir.path(), &torn);

    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.ok, "{verified:?}");
    assert!(verified.torn_last_line.is_some(), "{verified:?}");
    assert_eq!(
        read_all(dir.path()).len(),
        5,
        "read_from stops at the torn line"
    );

    let (log, report, _) = open(options(dir.path())).await.unwrap();
    let description = report.torn_line_repaired.expect("torn line reported");
    assert!(description.contains(":6:"), "{description}");
    assert_eq!(report.records, 5);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), intact, "cut");
    assert_eq!(log.append(note(6)).await.unwrap().seq, 6);
    log.close().await;
    let after = verify_dir(dir.path()).unwrap();
    assert!(after.ok && after.records == 6 && after.torn_last_line.is_none());
    assert_plain_jsonl(dir.path());
}

#[tokio::test]
async fn bytes_other_than_zeros_after_the_end_are_reported_at_their_offset() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, u64::MAX).await;
    let mut extra = vec![0; 1000];
    extra.extend_from_slice(b"{\"hidden\":true}\n");
    let (_, intact) = append_to_last_file(dir.path(), &extra);

    let verified = verify_dir(dir.path()).unwrap();
    assert!(!verified.ok, "{verified:?}");
    assert_eq!(verified.records, 5);
    let failure = verified.failure.expect("a failure");
    assert_eq!((failure.seq, failure.line), (6, 6));
    let offset = intact + 1000;
    assert!(
        failure.message.contains(&format!("at byte {offset}")),
        "{failure}"
    );
    assert_eq!(verified.first_bad_seq, Some(6));
    assert_eq!(read_all(dir.path()).len(), 5, "readers stop at the zeros");

    // Opening refuses, as for any broken chain; recovery keeps the evidence aside.
    let refused = open(options(dir.path())).await.unwrap_err();
    assert!(matches!(refused, AuditError::Broken(_)), "{refused}");
    let (log, report, _) = open(AuditOptions {
        recover: true,
        ..options(dir.path())
    })
    .await
    .unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(report.set_aside.len(), 1);
    log.close().await;
    assert!(verify_dir(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn bytes_after_a_torn_line_and_its_zeros_are_reported_too() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3, u64::MAX).await;
    let mut extra = b"{\"seq\":4,".to_vec();
    extra.extend_from_slice(&[0; 500]);
    extra.extend_from_slice(b"junk");
    let (_, intact) = append_to_last_file(dir.path(), &extra);
    let verified = verify_dir(dir.path()).unwrap();
    assert!(!verified.ok, "{verified:?}");
    let failure = verified.failure.expect("a failure");
    let offset = intact + 9 + 500;
    assert!(
        failure.message.contains(&format!("at byte {offset}")),
        "{failure}"
    );
}

#[tokio::test]
async fn the_live_file_is_prepared_written_in_place_and_sealed_as_plain_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let (log, written) = log_on_a_prepared_file(dir.path(), 256 * 1024).await;
    let live = log_files(dir.path()).pop().unwrap();
    let size = std::fs::metadata(&live).unwrap().len();
    assert_eq!(
        size,
        256 * 1024,
        "the file taken was prepared to its capacity"
    );
    let bytes = std::fs::read(&live).unwrap();
    assert_eq!(bytes.last(), Some(&0), "zeros after the content");
    log.append(note(written + 1)).await.unwrap();
    assert_eq!(
        std::fs::metadata(&live).unwrap().len(),
        size,
        "a record is written in place: the size does not change"
    );
    // Readers (and verify) see every record, the live file's zeros notwithstanding.
    assert_eq!(read_all(dir.path()).len() as u64, written + 1);
    let verified = verify_dir(dir.path()).unwrap();
    assert!(
        verified.ok && verified.torn_last_line.is_none(),
        "{verified:?}"
    );

    log.close().await;
    assert_plain_jsonl(dir.path());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("prepared"))
        .collect();
    assert!(names.is_empty(), "the spare is removed on close: {names:?}");
    let verified = verify_dir(dir.path()).unwrap();
    assert!(
        verified.ok && verified.records == written + 1,
        "{verified:?}"
    );
}

#[tokio::test]
async fn a_crash_on_a_prepared_file_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (log, written) = log_on_a_prepared_file(dir.path(), 256 * 1024).await;
    let mut acked = Vec::new();
    for i in 1..=20 {
        acked.push(log.append(note(written + i)).await.unwrap());
    }
    let crashed = dir.path().join("crashed");
    crash_copy(dir.path(), &crashed);
    log.close().await;

    let (log, report, replayed) = open(options(&crashed)).await.unwrap();
    assert_eq!(report.records, written + 20);
    assert_eq!(report.torn_line_repaired, None);
    for record in &acked {
        assert_eq!(replayed[record.seq as usize - 1].event, record.event);
    }
    // The restart goes on writing in the prepared file it found.
    let next = log.append(note(0)).await.unwrap();
    assert_eq!(next.seq, written + 21);
    assert_eq!(next.prev, acked.last().unwrap().hash);
    log.close().await;
    let verified = verify_dir(&crashed).unwrap();
    assert!(
        verified.ok && verified.records == written + 21,
        "{verified:?}"
    );
    assert_plain_jsonl(&crashed);
}

/// Start-up seals an earlier file that a crash left with zeros after its content (the writer had
/// moved on to the next file before the old one was cut).
#[tokio::test]
async fn start_up_seals_an_earlier_file_left_with_zeros() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40, 1000).await;
    let files = log_files(dir.path());
    assert!(files.len() >= 2);
    let first_len = std::fs::metadata(&files[0]).unwrap().len();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(&files[0], bytes).unwrap();
    assert!(verify_dir(dir.path()).unwrap().ok);
    let (log, report, _) = open(options(dir.path())).await.unwrap();
    assert_eq!(report.records, 40);
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), first_len);
    log.close().await;
    assert_plain_jsonl(dir.path());
}
