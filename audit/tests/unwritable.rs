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
