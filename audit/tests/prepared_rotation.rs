//! Moving from one prepared file to the next, and what a crash in the middle of it leaves. The
//! writer links the spare under the next file's name and leaves making that name durable (and
//! removing the spare's own) to the preparing thread; a crash before then leaves the live file's
//! records under the spare's name, and start-up gives them theirs back.

mod common;

use common::{
    assert_plain_jsonl, crash_copy, log_files, log_on_a_prepared_file, note, open, options,
    read_all, wait_until,
};
use conductor_audit::{AuditOptions, verify_dir};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The name the spare waits under (README: "the file `.next-segment.prepared`").
const SPARE: &str = ".next-segment.prepared";

/// Whether `path` ends in zeros: a prepared file not yet sealed.
fn ends_in_zeros(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let size = file.metadata().unwrap().len();
    let mut last = [1u8];
    size > 0 && file.read_at(&mut last, size - 1).unwrap() == 1 && last[0] == 0
}

/// Names in `dir` that start with the spare's name.
fn spares(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(SPARE))
        .collect()
}

#[tokio::test]
async fn rotation_goes_from_prepared_file_to_prepared_file_and_seals_each_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let max_file_bytes = 128 * 1024;
    let (log, _, _) = open(AuditOptions {
        max_file_bytes,
        ..options(dir.path())
    })
    .await
    .unwrap();
    // Appends until three different files have been live while prepared (zeros after their
    // content); a file started plain because no spare was ready in time does not count.
    let mut prepared: Vec<PathBuf> = Vec::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while prepared.len() < 3 {
        assert!(Instant::now() < deadline, "prepared so far: {prepared:?}");
        n += 1;
        log.append(note(n)).await.unwrap();
        let live = log_files(dir.path()).pop().unwrap();
        if !prepared.contains(&live) && ends_in_zeros(&live) {
            prepared.push(live);
        }
    }
    // Each file the writer left is sealed while the log runs, not only on close.
    wait_until("the files left to be sealed", || {
        let files = log_files(dir.path());
        files[..files.len() - 1].iter().all(|f| !ends_in_zeros(f))
    });
    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.ok && verified.records == n, "{verified:?}");
    assert_eq!(read_all(dir.path()).len() as u64, n);

    log.close().await;
    assert_plain_jsonl(dir.path());
    assert!(spares(dir.path()).is_empty(), "{:?}", spares(dir.path()));
    // (The last may be empty: the writer moves on after the batch that fills a file.)
    let files = log_files(dir.path());
    for file in &files[..files.len() - 1] {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size > 0, "{} is empty", file.display());
    }
    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.ok && verified.records == n, "{verified:?}");
}

/// A log on a prepared file with 10 more records acknowledged, copied as a crash would leave it
/// (see `crash_copy`) into `<dir>/crashed`; returns that directory and how many records it holds.
async fn crashed_on_a_prepared_file(dir: &Path) -> (PathBuf, u64) {
    let (log, written) = log_on_a_prepared_file(dir, 256 * 1024).await;
    for i in 1..=10 {
        log.append(note(written + i)).await.unwrap();
    }
    let crashed = dir.join("crashed");
    crash_copy(dir, &crashed);
    log.close().await;
    (crashed, written + 10)
}

#[tokio::test]
async fn records_under_the_spares_name_only_are_given_their_file_back_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (crashed, records) = crashed_on_a_prepared_file(dir.path()).await;
    // The live file's name never reached the disk: its records are under the spare's name only.
    let live = log_files(&crashed).pop().unwrap();
    let in_live = std::fs::read(&live)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;
    assert!(in_live >= 10);
    std::fs::rename(&live, crashed.join(SPARE)).unwrap();
    assert_eq!(
        read_all(&crashed).len() as u64,
        records - in_live,
        "no reader lists the spare"
    );

    let (log, report, replayed) = open(options(&crashed)).await.unwrap();
    assert_eq!((report.records, replayed.len() as u64), (records, records));
    assert!(live.exists(), "the file has its name back");
    assert!(spares(&crashed).is_empty(), "{:?}", spares(&crashed));
    let next = log.append(note(0)).await.unwrap();
    assert_eq!(next.seq, records + 1);
    log.close().await;
    let verified = verify_dir(&crashed).unwrap();
    assert!(
        verified.ok && verified.records == records + 1,
        "{verified:?}"
    );
    assert_plain_jsonl(&crashed);
}

#[tokio::test]
async fn a_spare_still_linked_beside_its_new_name_is_only_unlinked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (crashed, records) = crashed_on_a_prepared_file(dir.path()).await;
    // The new name reached the disk, the removal of the spare's own name did not.
    let live = log_files(&crashed).pop().unwrap();
    std::fs::hard_link(&live, crashed.join(SPARE)).unwrap();

    let (log, report, _) = open(options(&crashed)).await.unwrap();
    assert_eq!(report.records, records);
    assert!(live.exists());
    log.close().await;
    assert!(spares(&crashed).is_empty(), "{:?}", spares(&crashed));
    let verified = verify_dir(&crashed).unwrap();
    assert!(verified.ok && verified.records == records, "{verified:?}");
}

#[tokio::test]
async fn a_spare_of_zeros_is_removed_and_one_that_is_not_a_log_file_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    common::write_log(dir.path(), 5, u64::MAX).await;
    // Prepared, never taken: nothing in it.
    std::fs::write(dir.path().join(SPARE), vec![0; 64 * 1024]).unwrap();
    let (log, report, _) = open(options(dir.path())).await.unwrap();
    assert_eq!(report.records, 5);
    log.close().await;
    assert!(spares(dir.path()).is_empty(), "{:?}", spares(dir.path()));

    // Something else under the spare's name is kept for a person to look at, not removed.
    let mut foreign = b"not a record\n".to_vec();
    foreign.extend_from_slice(&[0; 4096]);
    std::fs::write(dir.path().join(SPARE), &foreign).unwrap();
    let (log, report, _) = open(options(dir.path())).await.unwrap();
    assert_eq!(report.records, 5);
    log.close().await;
    let left = spares(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with(&format!("{SPARE}.damaged-")),
        "{left:?}"
    );
    assert_eq!(std::fs::read(dir.path().join(&left[0])).unwrap(), foreign);
    assert!(verify_dir(dir.path()).unwrap().ok);
}
