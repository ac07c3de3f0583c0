//! The PostgreSQL store on a real, temporary PostgreSQL server (started by the tests; a test fails,
//! saying why, when it cannot be started): the same group commit and chain as the files, the rows
//! kept with each record's exact line text, the schema versioned, the fence refusing a node whose
//! lease was taken over inside the batch's own transaction, and a server stopped mid-run failing
//! closed and resuming by itself.

use conductor_audit::pg::{PgOptions, SCHEMA_VERSION, verify_postgres};
use conductor_audit::testing::TempPostgres;
use conductor_audit::{
    Admit, AuditError, AuditLog, AuditOptions, OpenReport, Record, StoreOptions, line_hash,
    parse_line,
};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::{Duration, Instant};

/// Shaped like the orchestrator's events, with the fields the table indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Ev {
    CallDecided {
        workflow_id: String,
        tool: String,
        caller: String,
    },
    Note {
        text: String,
    },
}

fn call(n: u64) -> Ev {
    Ev::CallDecided {
        workflow_id: format!("wf-{}", n % 3),
        tool: format!("tool_{n}"),
        caller: "agent".into(),
    }
}

/// A fresh database on the shared server, and the options of a log in it.
async fn database(name: &str) -> (tempfile::TempDir, String) {
    let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server
        .create_database(name)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    (tempfile::tempdir().unwrap(), url)
}

fn options(dir: &tempfile::TempDir, pg: PgOptions) -> AuditOptions {
    AuditOptions {
        store: StoreOptions::Postgres(pg),
        ..AuditOptions::new(dir.path())
    }
}

async fn open(
    options: AuditOptions,
) -> Result<(AuditLog<Ev>, OpenReport, Vec<Record<Ev>>), AuditError> {
    let mut replayed = Vec::new();
    let (log, report) = AuditLog::open(options, |r: Record<Ev>| replayed.push(r)).await?;
    Ok((log, report, replayed))
}

/// `(seq, line, kind, workflow, caller, tool, epoch)` of every row, in seq order.
type Row = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

async fn rows(url: &str) -> Vec<Row> {
    let client = TempPostgres::client(url).await.unwrap();
    client
        .query(
            "SELECT seq, line, kind, workflow, caller, tool, epoch FROM audit_records ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

/// Waits (polling, up to a generous deadline that only bounds a failure) until `condition`.
async fn wait_for<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn records_are_rows_with_their_exact_lines_and_reopening_rebuilds_the_same_state() {
    let (dir, url) = database("round_trip").await;
    let (log, report, replayed) = open(options(&dir, PgOptions::new(&url))).await.unwrap();
    assert_eq!((report.records, report.last_seq), (0, 0));
    assert!(replayed.is_empty());

    // Concurrent appends share batches; a NUL in an event survives in the line.
    let mut written = Vec::new();
    let appends: Vec<_> = (1..=12).map(|n| log.append(call(n))).collect();
    for record in futures_join(appends).await {
        written.push(record.unwrap());
    }
    let nul = log
        .append(Ev::Note {
            text: "a \u{0} inside".into(),
        })
        .await
        .unwrap();
    written.push(nul);
    assert_eq!(log.last_seq(), 13);
    log.close().await;

    let rows = rows(&url).await;
    assert_eq!(rows.len(), 13);
    for ((seq, line, kind, workflow, caller, tool, epoch), record) in rows.iter().zip(&written) {
        assert_eq!(*seq as u64, record.seq);
        let header = parse_line(line.as_bytes()).unwrap();
        assert_eq!(
            header.hash, record.hash,
            "the line is the record's exact text"
        );
        assert_eq!(
            line_hash(&line.as_bytes()[..header.body_end]),
            record.hash,
            "the chain verifies from the database's text"
        );
        assert_eq!(*epoch, 1);
        match &record.event {
            Ev::CallDecided {
                workflow_id,
                tool: t,
                caller: c,
            } => {
                assert_eq!(kind.as_deref(), Some("call_decided"));
                assert_eq!(workflow.as_deref(), Some(workflow_id.as_str()));
                assert_eq!(tool.as_deref(), Some(t.as_str()));
                assert_eq!(caller.as_deref(), Some(c.as_str()));
            }
            Ev::Note { .. } => {
                assert_eq!(kind.as_deref(), Some("note"));
                assert!(line.contains(r"\u0000"), "{line}");
            }
        }
    }

    let pg = PgOptions::new(&url);
    let report = verify_postgres(&pg, None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 13);
    assert_eq!(report.last_hash, written[12].hash);

    // Reopened, the same records come back through the replay, and the chain goes on.
    let (log, report, replayed) = open(options(&dir, pg)).await.unwrap();
    assert_eq!((report.records, report.last_seq), (13, 13));
    let written: Vec<Record<Ev>> = written.iter().map(|r| (**r).clone()).collect();
    assert_eq!(replayed, written);
    let next = log.append(call(99)).await.unwrap();
    assert_eq!(
        (next.seq, next.prev.as_str()),
        (14, written[12].hash.as_str())
    );

    // Queries and watchers read the rows back from any seq, beside the writer.
    let reader = log.clone();
    let read: Vec<Record<Ev>> = tokio::task::spawn_blocking(move || {
        reader
            .read_from::<Ev>(5)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        read.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (5..=14).collect::<Vec<_>>()
    );
    assert_eq!(read[0], written[4]);
    log.close().await;
}

/// Awaits every future, polled together (so that their appends queue before the first leads);
/// the results in order.
async fn futures_join<T>(futures: Vec<impl Future<Output = T>>) -> Vec<T> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<T>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in results.iter_mut().zip(pinned.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *slot = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_schema_newer_than_known_is_refused_and_a_changed_row_is_found() {
    let (dir, url) = database("schema_and_tamper").await;
    let pg = PgOptions::new(&url);
    let (log, _, _) = open(options(&dir, pg.clone())).await.unwrap();
    for n in 1..=5 {
        log.append(call(n)).await.unwrap();
    }
    log.close().await;
    let client = TempPostgres::client(&url).await.unwrap();

    client
        .execute(
            "UPDATE audit_records SET line = replace(line, 'tool_3', 'tool_X') WHERE seq = 3",
            &[],
        )
        .await
        .unwrap();
    let report = verify_postgres(&pg, None).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.first_bad_seq, Some(3), "{report:?}");
    assert_eq!(report.records, 2);
    let error = open(options(&dir, pg.clone())).await.unwrap_err();
    assert!(matches!(error, AuditError::Broken(_)), "{error}");

    client
        .execute(
            "UPDATE audit_records SET line = replace(line, 'tool_X', 'tool_3') WHERE seq = 3",
            &[],
        )
        .await
        .unwrap();
    client
        .execute("DELETE FROM audit_records WHERE seq = 5", &[])
        .await
        .unwrap();
    let report = verify_postgres(&pg, None).await.unwrap();
    assert!(!report.ok);
    let failure = report.failure.unwrap();
    assert!(
        failure.message.contains("removed from the end"),
        "{failure}"
    );

    client
        .execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let error = open(options(&dir, pg.clone())).await.unwrap_err();
    assert!(
        matches!(error, AuditError::SchemaTooNew { found, known } if found == SCHEMA_VERSION + 1 && known == SCHEMA_VERSION),
        "{error}"
    );
    assert!(
        error.to_string().contains("upgrade the orchestrator"),
        "{error}"
    );
    let error = verify_postgres(&pg, None).await.unwrap_err();
    assert!(matches!(error, AuditError::SchemaTooNew { .. }), "{error}");
}

#[tokio::test]
async fn a_node_whose_lease_was_taken_over_writes_nothing_more() {
    let (dir_a, url) = database("fence").await;
    let dir_b = tempfile::tempdir().unwrap();
    let short = |holder: &str| PgOptions {
        lease_ttl: Duration::from_millis(600),
        holder: holder.into(),
        acquire_wait: Duration::from_secs(60),
        ..PgOptions::new(&url)
    };
    let (a, _, _) = open(options(&dir_a, short("node-a"))).await.unwrap();
    for n in 1..=3 {
        a.append(call(n)).await.unwrap();
    }
    assert_eq!(a.holds_lease(), Some(true));

    // A stops renewing (as if SIGSTOPped); B takes the lease once it has expired by the
    // database's clock, and reads A's records.
    a.pause_lease_renewal(true);
    let (b, report, replayed) = open(options(&dir_b, short("node-b"))).await.unwrap();
    assert_eq!(report.last_seq, 3);
    assert_eq!(replayed.len(), 3);
    for n in 4..=5 {
        b.append(call(n)).await.unwrap();
    }

    // A wakes up, unaware: its next batch is refused inside its own transaction.
    a.pause_lease_renewal(false);
    let refused = a.append(call(100)).await.unwrap_err();
    assert!(
        matches!(&refused, AuditError::LostLease { mine: 1, holder, now: 2 } if holder == "node-b"),
        "{refused}"
    );
    assert_eq!(a.holds_lease(), Some(false));
    let health = a.health().unwritable.expect("A says it cannot write");
    assert!(health.reason.contains("lost"), "{health:?}");
    assert!(matches!(
        a.admit(Admit::Intent),
        Err(AuditError::Unwritable(_))
    ));

    // Nothing of A's was written, no seq twice, and B goes on.
    b.append(call(6)).await.unwrap();
    let rows = rows(&url).await;
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let epochs: Vec<i64> = rows.iter().map(|r| r.6).collect();
    assert_eq!(epochs, vec![1, 1, 1, 2, 2, 2]);
    assert!(!rows.iter().any(|r| r.5.as_deref() == Some("tool_100")));
    a.close().await;
    // A's closing did not give B's lease away.
    b.append(call(7)).await.unwrap();
    b.close().await;
    let report = verify_postgres(&short("verifier"), None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 7);
}

#[tokio::test]
async fn postgres_stopped_mid_run_fails_closed_and_service_resumes_by_itself() {
    let server = TempPostgres::start().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
    let url = server.create_database("outage").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pg = PgOptions {
        lease_ttl: Duration::from_millis(900),
        ..PgOptions::new(&url)
    };
    let (log, _, _) = open(options(&dir, pg.clone())).await.unwrap();
    let mut acknowledged = Vec::new();
    for n in 1..=4 {
        acknowledged.push(log.append(call(n)).await.unwrap());
    }

    server.stop().unwrap();
    let error = log.append(call(5)).await.unwrap_err();
    assert!(error.to_string().contains("PostgreSQL"), "{error}");
    wait_for("health to say why", || async {
        log.health().unwritable.is_some()
    })
    .await;
    let reason = log.health().unwritable.unwrap().reason;
    assert!(reason.contains("PostgreSQL"), "{reason}");
    assert!(matches!(
        log.admit(Admit::Intent),
        Err(AuditError::Unwritable(_))
    ));

    server.start_again().unwrap();
    wait_for("service to resume", || async {
        log.health().unwritable.is_none() && log.admit(Admit::Intent).is_ok()
    })
    .await;
    acknowledged.push(log.append(call(6)).await.unwrap());
    log.close().await;

    // Every acknowledged record is there, once; the refused one is there at most once (refused
    // at admission it was never queued; refused by the write it was kept and written on retry).
    let rows = rows(&url).await;
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=rows.len() as i64).collect::<Vec<_>>());
    for record in &acknowledged {
        let row = &rows[record.seq as usize - 1];
        assert_eq!(parse_line(row.1.as_bytes()).unwrap().hash, record.hash);
    }
    let refused = rows.iter().filter(|r| r.5.as_deref() == Some("tool_5"));
    assert!(refused.count() <= 1);
    let report = verify_postgres(&pg, None).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn a_second_node_is_told_who_holds_the_lease() {
    let (dir_a, url) = database("held").await;
    let dir_b = tempfile::tempdir().unwrap();
    let (a, _, _) = open(options(
        &dir_a,
        PgOptions {
            holder: "node-a".into(),
            advertise: r#"{"grpc":"10.0.0.5:50051"}"#.into(),
            ..PgOptions::new(&url)
        },
    ))
    .await
    .unwrap();
    let error = open(options(
        &dir_b,
        PgOptions {
            acquire_wait: Duration::ZERO,
            ..PgOptions::new(&url)
        },
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&error, AuditError::LeaseHeld { holder, advertise, .. } if holder == "node-a" && advertise.contains("10.0.0.5:50051")),
        "{error}"
    );
    // Closing gives the lease up: the next node takes it at once.
    a.close().await;
    let (b, _, _) = open(options(
        &dir_b,
        PgOptions {
            acquire_wait: Duration::ZERO,
            ..PgOptions::new(&url)
        },
    ))
    .await
    .unwrap();
    b.close().await;
}

#[tokio::test]
async fn a_node_learns_from_its_renewal_that_its_lease_was_taken_and_admits_nothing() {
    let (dir_a, url) = database("renewal_lost").await;
    let dir_b = tempfile::tempdir().unwrap();
    let short = |holder: &str| PgOptions {
        lease_ttl: Duration::from_millis(600),
        holder: holder.into(),
        acquire_wait: Duration::from_secs(60),
        ..PgOptions::new(&url)
    };
    let (a, _, _) = open(options(&dir_a, short("node-a"))).await.unwrap();
    a.append(call(1)).await.unwrap();
    a.pause_lease_renewal(true);
    let (b, _, _) = open(options(&dir_b, short("node-b"))).await.unwrap();

    // A renews again and finds the row another node's: it stops admitting intents, without
    // having tried to write anything.
    a.pause_lease_renewal(false);
    wait_for("A to learn it lost the lease", || async {
        a.holds_lease() == Some(false)
    })
    .await;
    let reason = a.health().unwritable.expect("A says why").reason;
    assert!(
        reason.contains("lost") && reason.contains("node-b"),
        "{reason}"
    );
    assert!(matches!(
        a.admit(Admit::Intent),
        Err(AuditError::Unwritable(_))
    ));
    // B is unaffected, and A's closing leaves B's lease alone.
    a.close().await;
    b.append(call(2)).await.unwrap();
    b.close().await;
    let epochs: Vec<i64> = rows(&url).await.iter().map(|r| r.6).collect();
    assert_eq!(epochs, vec![1, 2]);
}

#[tokio::test]
async fn a_follower_sees_every_record_in_order_once_and_stops_at_a_broken_chain() {
    use conductor_audit::pg::{Position, follow};
    let (dir, url) = database("follow").await;
    let (log, _, _) = open(options(&dir, PgOptions::new(&url))).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let follower = tokio::spawn(follow::<Ev>(PgOptions::new(&url), Position::start(), tx));

    let mut written = Vec::new();
    for round in 0..5 {
        let batch: Vec<_> = (0..7).map(|i| log.append(call(round * 10 + i))).collect();
        for record in futures_join(batch).await {
            written.push(record.unwrap());
        }
    }
    for expected in &written {
        let got = rx.recv().await.expect("the follower goes on");
        assert_eq!(got, **expected);
    }
    // Caught up, it wakes for what comes next.
    let late = log.append(call(999)).await.unwrap();
    assert_eq!(rx.recv().await.expect("the late record"), *late);
    drop(rx);
    follower.await.unwrap().expect("ends when nobody listens");

    // From a position, it goes on after it.
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let from = Position {
        seq: written[29].seq,
        hash: written[29].hash.clone(),
    };
    let follower = tokio::spawn(follow::<Ev>(PgOptions::new(&url), from, tx));
    for expected in written[30..].iter().chain([&late]) {
        assert_eq!(rx.recv().await.expect("the rest"), **expected);
    }
    drop(rx);
    follower.await.unwrap().unwrap();
    log.close().await;

    // A changed row ends the follow, after the records before it.
    let db = TempPostgres::client(&url).await.unwrap();
    db.execute(
        "UPDATE audit_records SET line = replace(line, 'agent', 'agenT') WHERE seq = 5",
        &[],
    )
    .await
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let broken = follow::<Ev>(PgOptions::new(&url), Position::start(), tx).await;
    assert!(
        matches!(&broken, Err(AuditError::Broken(failure)) if failure.seq == 5),
        "{broken:?}"
    );
    let mut before = Vec::new();
    while let Ok(record) = rx.try_recv() {
        before.push(record.seq);
    }
    assert_eq!(before, vec![1, 2, 3, 4]);
}

/// Sends `SIGCONT` to a paused PostgreSQL backend when dropped, so that a failing test never leaves
/// the shared server with a stopped process.
struct Paused(String);

impl Paused {
    fn pause(pid: i32) -> Self {
        signal("-STOP", &pid.to_string());
        Paused(pid.to_string())
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(which: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([which, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}: {status}");
}

/// A database host that froze mid-batch: the writer's backend is paused (SIGSTOP) with the batch's
/// statement unread in its socket. The batch times out, the log fails closed, and its retry is
/// written on a new connection. When the paused backend resumes and runs the stale statement, the
/// fence's chain check makes it change nothing: every record is in the table once, in order.
#[tokio::test]
async fn a_batch_that_reaches_the_database_after_its_retry_was_written_changes_nothing() {
    let (dir, url) = database("late_statement").await;
    let pg = PgOptions::new(&url);
    let options = AuditOptions {
        stall_after: Duration::from_millis(500),
        ..options(&dir, pg.clone())
    };
    let (log, _, _) = open(options).await.unwrap();
    log.append(call(1)).await.unwrap();
    // The writer's backend: the one whose last statement moved the chain head.
    let admin = TempPostgres::client(&url).await.unwrap();
    let writer: i32 = admin
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND query LIKE '%UPDATE audit_chain_head SET%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let paused = Paused::pause(writer);
    let error = log.append(call(2)).await.unwrap_err();
    assert!(error.to_string().contains("no answer within"), "{error}");
    // The record refused by the write is kept and written again, on another connection.
    wait_for("the retry to be written", || async {
        log.health().unwritable.is_none() && log.health().queued == 0
    })
    .await;
    drop(paused);
    // The resumed backend runs the stale statement (or finds its client gone) meanwhile.
    wait_for("the paused backend to finish", || async {
        admin
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[&writer],
            )
            .await
            .unwrap()
            .is_none()
    })
    .await;
    log.append(call(3)).await.unwrap();
    log.close().await;

    let rows = rows(&url).await;
    let tools: Vec<_> = rows
        .iter()
        .map(|r| r.5.clone().unwrap_or_default())
        .collect();
    assert_eq!(tools, ["tool_1", "tool_2", "tool_3"]);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    let report = verify_postgres(&pg, None).await.unwrap();
    assert!(report.ok, "{report:?}");
}
