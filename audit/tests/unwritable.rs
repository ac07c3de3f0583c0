//! A log that cannot be written fails closed: every waiter hears at once, new intents are refused,
//! what already happened stays queued (bounded), and the writer resumes by itself with the chain
//! intact once the disk takes records again.

mod common;

use common::{note, open, options, read_all, wait_until};
use conductor_audit::{Admit, AuditError, AuditOptions, verify_dir};

#[tokio::test]
async fn a_full_disk_refuses_intents_keeps_outcomes_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(options(dir.path())).await.unwrap();
    log.append(note(1)).await.unwrap();
    assert!(log.health().unwritable.is_none());

    log.inject_full_disk(true);
    let error = log.append(note(2)).await.unwrap_err();
    assert!(
        matches!(&error, AuditError::Io { source, .. } if source.raw_os_error() == Some(28)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&dir.path().display().to_string()),
        "the error names the audit directory: {error}"
    );
    let health = log.health();
    let unwritable = health
        .unwritable
        .expect("the log says it cannot be written");
    assert!(
        unwritable.reason.contains("No space left on device")
            || unwritable.reason.contains("os error 28"),
        "{unwritable:?}"
    );

    // A new intent is refused before it is queued; an outcome is queued and kept.
    let refused = log
        .enqueue(0, note(3), Admit::Intent)
        .err()
        .expect("refused");
    assert!(matches!(refused, AuditError::Unwritable(_)), "{refused}");
    let kept = log.enqueue(0, note(4), Admit::Outcome).expect("queued");
    assert!(matches!(
        kept.durable().await,
        Err(AuditError::Unwritable(_))
    ));
    assert_eq!(
        log.health().queued,
        2,
        "the failed record and the outcome wait"
    );
    assert_eq!(log.last_seq(), 1);

    log.inject_full_disk(false);
    wait_until("the log to be writable again", || {
        log.health().unwritable.is_none()
    });
    assert_eq!(log.health().queued, 0);
    let after = log.append(note(5)).await.unwrap();
    assert_eq!(after.seq, 4, "the kept records came first, in order");
    log.close().await;

    let events: Vec<_> = read_all(dir.path()).into_iter().map(|r| r.event).collect();
    assert_eq!(events, vec![note(1), note(2), note(4), note(5)]);
    let verified = verify_dir(dir.path()).unwrap();
    assert!(verified.ok, "{verified:?}");
}

#[tokio::test]
async fn outcomes_are_never_dropped_even_past_the_intent_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions {
        channel_capacity: 2,
        ..options(dir.path())
    })
    .await
    .unwrap();
    log.inject_full_disk(true);
    assert!(log.append(note(1)).await.is_err());
    for n in 2..=5 {
        let queued = log.enqueue(0, note(n), Admit::Outcome).unwrap();
        assert!(queued.durable().await.is_err());
    }
    assert!(matches!(
        log.enqueue(0, note(6), Admit::Intent).err(),
        Some(AuditError::Unwritable(_))
    ));
    log.inject_full_disk(false);
    wait_until("the backlog to drain", || log.health().queued == 0);
    // Writable again, with nothing waiting: intents are admitted.
    log.append(note(7)).await.unwrap();
    log.close().await;
    let seen: Vec<_> = read_all(dir.path()).into_iter().map(|r| r.event).collect();
    assert_eq!(seen, [1, 2, 3, 4, 5, 7].map(note).to_vec());
    assert!(verify_dir(dir.path()).unwrap().ok);
}

#[tokio::test]
async fn a_steady_stream_of_records_does_not_put_the_retry_off() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(options(dir.path())).await.unwrap();
    log.inject_full_disk(true);
    assert!(log.append(note(1)).await.is_err());
    log.inject_full_disk(false);
    // Outcomes keep arriving faster than the retry interval: the log still recovers while they do.
    let feeder = log.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut n = 100;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let _queued = feeder.enqueue(0, note(n), Admit::Outcome);
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    });
    wait_until("the log to be writable again under a steady stream", || {
        log.health().unwritable.is_none()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    thread.join().unwrap();
    log.close().await;
    assert!(verify_dir(dir.path()).unwrap().ok);
}

/// A log whose directory is removed while it is open: writes and syncs into the removed file
/// succeed, so only asking whether the file can still be found keeps a record from being
/// acknowledged where nobody will ever read it.
#[tokio::test]
async fn a_removed_directory_is_unwritable_until_it_exists_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("audit");
    let (log, _, _) = open(options(&dir)).await.unwrap();
    log.append(note(1)).await.unwrap();

    std::fs::remove_dir_all(&dir).unwrap();
    let error = log.append(note(2)).await.unwrap_err();
    assert!(error.to_string().contains("removed while open"), "{error}");
    let unwritable = log.health().unwritable.expect("unwritable");
    assert!(
        unwritable.reason.contains("removed while open"),
        "{unwritable:?}"
    );
    let refused = log
        .enqueue(0, note(3), Admit::Intent)
        .err()
        .expect("refused");
    assert!(matches!(refused, AuditError::Unwritable(_)), "{refused}");

    std::fs::create_dir(&dir).unwrap();
    wait_until("the log to be writable again", || {
        log.health().unwritable.is_none()
    });
    let after = log.append(note(4)).await.unwrap();
    assert_eq!(after.seq, 3, "the kept record came first");
    log.close().await;

    // The records acknowledged before the removal are gone with it, and the log says so.
    let events: Vec<_> = read_all(&dir).into_iter().map(|r| r.event).collect();
    assert_eq!(events, vec![note(2), note(4)]);
    let verified = verify_dir(&dir).unwrap();
    assert!(
        !verified.ok,
        "a log that lost its beginning does not verify: {verified:?}"
    );
}

/// A file replaced under the same name (moved aside, a new one put in its place) is not the one
/// being written: the next batch goes to a new file, and nothing is acknowledged in between.
#[tokio::test]
async fn a_replaced_file_is_noticed_and_the_next_records_start_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(options(dir.path())).await.unwrap();
    log.append(note(1)).await.unwrap();
    let [file] = common::log_files(dir.path()).try_into().expect("one file");
    let aside = dir.path().join("aside.jsonl.bak");
    std::fs::rename(&file, &aside).unwrap();
    std::fs::write(&file, b"").unwrap();

    let error = log.append(note(2)).await.unwrap_err();
    assert!(error.to_string().contains("replaced while open"), "{error}");
    wait_until("the log to be writable again", || {
        log.health().unwritable.is_none()
    });
    log.append(note(3)).await.unwrap();
    log.close().await;
    assert_eq!(
        std::fs::read_to_string(&aside).unwrap().lines().count(),
        1,
        "the moved file holds what was acknowledged before, and not the failed batch"
    );
    assert_eq!(
        common::log_files(dir.path()).len(),
        2,
        "a new file was started"
    );
}

/// A disk that hangs instead of failing: once a write and sync has not returned for
/// `stall_after`, the log says so and refuses new intents; when it returns, service resumes and
/// the record that waited is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_refuses_new_intents_and_says_why_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = open(AuditOptions {
        stall_after: std::time::Duration::from_millis(100),
        ..options(dir.path())
    })
    .await
    .unwrap();
    log.append(note(1)).await.unwrap();

    log.inject_stall(true);
    let waiting = tokio::spawn({
        let log = log.clone();
        async move { log.append(note(2)).await }
    });
    wait_until("the stall to be seen", || log.health().unwritable.is_some());
    let reason = log.health().unwritable.unwrap().reason;
    assert!(reason.contains("stalled disk"), "{reason}");
    let refused = log
        .enqueue(0, note(3), Admit::Intent)
        .err()
        .expect("refused");
    assert!(matches!(refused, AuditError::Unwritable(_)), "{refused}");
    assert!(
        !waiting.is_finished(),
        "the record in the stalled write waits for it"
    );

    log.inject_stall(false);
    let written = waiting
        .await
        .unwrap()
        .expect("written once the disk returns");
    assert_eq!(written.seq, 2);
    assert!(log.health().unwritable.is_none());
    log.append(note(4)).await.unwrap();
    log.close().await;
}
