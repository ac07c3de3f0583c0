//! Tamper evidence and crash repair: verify_dir on edited logs, torn last lines, broken chains
//! with and without `recover`.

mod common;

use common::{
    damaged_files, lines, log_files, note, open, options, read_all, write_lines, write_log,
};
use conductor_audit::{AuditError, AuditOptions, VerifyFailure, verify_dir};
use std::path::Path;

/// A 10-record log in one file, edited by `edit`; returns the first failure verify_dir finds.
async fn failure_after(edit: impl FnOnce(&mut Vec<String>)) -> VerifyFailure {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, u64::MAX).await;
    let file = &log_files(dir.path())[0];
    let mut text = lines(file);
    edit(&mut text);
    write_lines(file, &text);
    let report = verify_dir(dir.path()).unwrap();
    assert!(!report.ok, "{report:?}");
    report.failure.unwrap()
}

#[tokio::test]
async fn an_intact_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, u64::MAX).await;
    let report = verify_dir(dir.path()).unwrap();
    assert!(
        report.ok && report.records == 10 && report.files == 1,
        "{report:?}"
    );
    assert_eq!((report.failure, report.torn_last_line), (None, None));
}

#[tokio::test]
async fn a_changed_line_is_found_at_its_seq() {
    let failure = failure_after(|l| l[4] = l[4].replace("note 5", "note X")).await;
    assert_eq!((failure.line, failure.seq), (5, 5));
    assert!(failure.message.contains("hash mismatch"), "{failure}");
}

#[tokio::test]
async fn a_deleted_line_is_found() {
    let failure = failure_after(|l| {
        l.remove(4);
    })
    .await;
    assert_eq!((failure.line, failure.seq), (5, 5));
    assert!(
        failure
            .message
            .contains("seq 6 follows seq 4: 1 record(s) missing"),
        "{failure}"
    );
}

#[tokio::test]
async fn an_inserted_copy_is_found() {
    let failure = failure_after(|l| {
        let copy = l[2].clone();
        l.insert(6, copy);
    })
    .await;
    assert_eq!((failure.line, failure.seq), (7, 7));
    assert!(
        failure.message.contains("duplicated or out of order"),
        "{failure}"
    );
}

#[tokio::test]
async fn swapped_lines_are_found() {
    let failure = failure_after(|l| l.swap(3, 4)).await;
    assert_eq!((failure.line, failure.seq), (4, 4));
}

#[tokio::test]
async fn a_changed_last_line_is_found() {
    let failure = failure_after(|l| l[9] = l[9].replace("note 10", "note 11")).await;
    assert_eq!((failure.line, failure.seq), (10, 10));
    assert!(failure.message.contains("hash mismatch"), "{failure}");
}

#[tokio::test]
async fn a_rewritten_prev_is_found() {
    let failure = failure_after(|l| {
        // Re-hash line 4 with a wrong prev: its own hash is right, the link is not.
        let body_end = l[3].rfind(",\"hash\":\"").unwrap();
        let mut body = l[3][..body_end].to_string();
        let start = body.find("\"prev\":\"").unwrap() + 8;
        body.replace_range(start..start + 64, &"a".repeat(64));
        let hash = conductor_audit::line_hash(body.as_bytes());
        l[3] = format!("{body},\"hash\":\"{hash}\"}}");
    })
    .await;
    assert_eq!((failure.line, failure.seq), (4, 4));
    assert!(failure.message.contains("prev does not match"), "{failure}");
}

/// Writes `tail` after a 5-record log, opens it, and checks the tail was cut and the log goes on.
async fn torn_tail_is_repaired(tail: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, u64::MAX).await;
    let file = log_files(dir.path())[0].clone();
    let intact_len = std::fs::metadata(&file).unwrap().len();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(tail);
    std::fs::write(&file, bytes).unwrap();
    let before = verify_dir(dir.path()).unwrap();
    assert!(before.ok && before.torn_last_line.is_some(), "{before:?}");
    assert_eq!(
        read_all(dir.path()).len(),
        5,
        "read_from stops at the torn line"
    );

    let (log, report, replayed) = open(options(dir.path())).await.unwrap();
    let description = report.torn_line_repaired.expect("torn line reported");
    assert!(description.contains(":6:"), "{description}");
    assert_eq!((report.records, replayed.len()), (5, 5));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), intact_len);
    assert_eq!(log.append(note(6)).await.unwrap().seq, 6);
    log.close().await;
    let after = verify_dir(dir.path()).unwrap();
    assert!(
        after.ok && after.records == 6 && after.torn_last_line.is_none(),
        "{after:?}"
    );
}

#[tokio::test]
async fn half_a_line_without_newline_is_cut_off() {
    torn_tail_is_repaired(b"{\"seq\":6,\"ts_ms\":1,\"prev\":\"00").await;
}

#[tokio::test]
async fn a_garbage_last_line_is_cut_off() {
    torn_tail_is_repaired(b"garbage \x00\xff\n").await;
}

/// A 10-record log whose line 3 (of the first file) is changed.
async fn log_with_line_3_changed(dir: &Path, max_file_bytes: u64) {
    write_log(dir, 10, max_file_bytes).await;
    let first = &log_files(dir)[0];
    let mut text = lines(first);
    text[2] = text[2].replace("note 3", "note three");
    write_lines(first, &text);
}

#[tokio::test]
async fn a_broken_chain_refuses_to_open_without_recover() {
    let dir = tempfile::tempdir().unwrap();
    log_with_line_3_changed(dir.path(), u64::MAX).await;
    let before = std::fs::read(&log_files(dir.path())[0]).unwrap();
    let err = open(options(dir.path())).await.unwrap_err();
    let AuditError::Broken(failure) = &err else {
        panic!("{err}")
    };
    assert_eq!(failure.seq, 3);
    assert!(err.to_string().contains("recover"), "{err}");
    assert_eq!(
        std::fs::read(&log_files(dir.path())[0]).unwrap(),
        before,
        "file changed"
    );
}

#[tokio::test]
async fn recover_keeps_the_valid_prefix_and_moves_the_damage_aside() {
    let dir = tempfile::tempdir().unwrap();
    log_with_line_3_changed(dir.path(), u64::MAX).await;
    let original = std::fs::read(&log_files(dir.path())[0]).unwrap();
    let (log, report, replayed) = open(AuditOptions {
        recover: true,
        ..options(dir.path())
    })
    .await
    .unwrap();
    assert_eq!(report.recovered_from.as_ref().map(|f| f.seq), Some(3));
    assert_eq!((report.records, report.last_seq, replayed.len()), (2, 2, 2));
    let damaged = damaged_files(dir.path());
    assert_eq!(damaged.len(), 1);
    assert_eq!(std::fs::read(&damaged[0]).unwrap(), original);
    assert_eq!(log.append(note(3)).await.unwrap().seq, 3);
    log.close().await;
    let report = verify_dir(dir.path()).unwrap();
    assert!(report.ok && report.records == 3, "{report:?}");
}

#[tokio::test]
async fn recover_moves_later_files_aside_too() {
    let dir = tempfile::tempdir().unwrap();
    log_with_line_3_changed(dir.path(), 500).await;
    let files = log_files(dir.path()).len();
    assert!(files >= 3, "{files} files");
    let (log, report, _) = open(AuditOptions {
        recover: true,
        ..options(dir.path())
    })
    .await
    .unwrap();
    assert_eq!(report.last_seq, 2);
    assert_eq!(report.files, 1);
    assert_eq!(damaged_files(dir.path()).len(), files);
    log.append(note(3)).await.unwrap();
    log.close().await;
    assert_eq!(read_all(dir.path()).len(), 3);
    assert!(verify_dir(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn damage_at_the_start_of_a_file_moves_the_whole_file_aside() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 300).await;
    let files = log_files(dir.path());
    // Remove the last line of the first file: the second file's name no longer follows on.
    let mut first = lines(&files[0]);
    let kept = first.len() as u64 - 1;
    first.pop();
    write_lines(&files[0], &first);
    let (log, report, _) = open(AuditOptions {
        recover: true,
        ..options(dir.path())
    })
    .await
    .unwrap();
    assert_eq!(report.last_seq, kept);
    let next = log.append(note(99)).await.unwrap();
    assert_eq!(next.seq, kept + 1);
    log.close().await;
    assert!(verify_dir(dir.path()).unwrap().ok);
    assert_eq!(damaged_files(dir.path()).len(), files.len() - 1);
}

#[tokio::test]
async fn an_intact_line_of_an_unknown_kind_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let (newer, _) =
        conductor_audit::AuditLog::<serde_json::Value>::open(options(dir.path()), |_| {})
            .await
            .unwrap();
    newer
        .append(serde_json::json!({"kind": "flag", "on": true}))
        .await
        .unwrap();
    newer
        .append(serde_json::json!({"kind": "added_later"}))
        .await
        .unwrap();
    newer.close().await;
    assert!(verify_dir(dir.path()).unwrap().ok);
    let err = open(AuditOptions {
        recover: true,
        ..options(dir.path())
    })
    .await
    .unwrap_err();
    let AuditError::Decode { line, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*line, 2);
    assert!(err.to_string().contains("newer version"), "{err}");
}

/// A log rewritten from some record on, every hash recomputed, chains again: only a record kept
/// elsewhere (an anchor) shows it. So does a log cut short before the anchor.
#[tokio::test]
async fn an_anchor_kept_elsewhere_finds_a_rewritten_or_shortened_log() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5, u64::MAX).await;
    let third = read_all(dir.path())[2].clone();
    let anchor: conductor_audit::Anchor = format!("{}:{}", third.seq, third.hash).parse().unwrap();
    let held = conductor_audit::verify_dir_against(dir.path(), Some(&anchor)).unwrap();
    assert!(held.ok && held.anchor_problem.is_none(), "{held:?}");

    // Another history of the same length: a valid chain, without the anchored record.
    let other = tempfile::tempdir().unwrap();
    let (log, _, _) = common::open(common::options(other.path())).await.unwrap();
    for n in 1..=5 {
        log.append(common::Ev::Flag { on: n % 2 == 0 })
            .await
            .unwrap();
    }
    log.close().await;
    let rewritten = conductor_audit::verify_dir_against(other.path(), Some(&anchor)).unwrap();
    assert!(
        !rewritten.ok && rewritten.failure.is_none(),
        "{rewritten:?}"
    );
    assert!(
        rewritten
            .anchor_problem
            .as_deref()
            .is_some_and(|p| p.contains("rewritten")),
        "{rewritten:?}"
    );
    assert_eq!(rewritten.first_bad_seq, Some(3), "the anchored record");

    let short = tempfile::tempdir().unwrap();
    write_log(short.path(), 2, u64::MAX).await;
    let cut = conductor_audit::verify_dir_against(short.path(), Some(&anchor)).unwrap();
    assert!(
        cut.anchor_problem
            .as_deref()
            .is_some_and(|p| p.contains("cut off its end")),
        "{cut:?}"
    );
    assert_eq!(cut.first_bad_seq, Some(3), "the first record missing");
    for bad in ["", "3", "0:ab", "x:y", "3:abc"] {
        assert!(bad.parse::<conductor_audit::Anchor>().is_err(), "{bad:?}");
    }
}
