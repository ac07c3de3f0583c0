//! The lease: which node may write, by the database's clock alone.
//!
//! One row (`cluster_lease`): holder, advertised addresses, an epoch that only grows, and
//! `valid_until`, always computed from the database's `NOW()` (never a node's clock). A node takes
//! only an expired lease, bumping the epoch and, in the same transaction, stamping that epoch on
//! the chain head, which is what fences the node before it: its next batch finds another epoch
//! there and writes nothing. The holder renews with `UPDATE … WHERE holder = $me AND epoch =
//! $mine` every third of the lease, each attempt cut off after two thirds of it; the moment an
//! attempt fails or times out, the node admits no new intents (health names why), and it resumes
//! when a renewal succeeds again. A lease taken over is lost for good: the node writes nothing
//! more. Closing the log gives the lease up, so another node need not wait for it to expire.
//!
//! Taking and renewing the lease also report this node in `cluster_nodes` (see `nodes`), in the
//! same transaction: a renewal is one statement, whose one row affected means renewed.

use super::nodes::{FORGET_AFTER, NodeRole, RENEW_AND_REPORT, Report, Reporter, seq_column};
use super::{PgRuntime, connect};
use crate::AuditError;
use crate::pg::read::Head;
use crate::writer::Shared;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub epoch: i64,
    /// When, by this node's clock, the statement that took it was sent: the database's `NOW()`
    /// it ran at is no earlier, so the lease holds at least until this plus its length.
    pub asked: Instant,
}

/// Takes the lease once it is free or expired, waiting up to `wait` for it. Returns the lease
/// and the chain head as it stands under the new epoch (nobody can move it after this commits).
pub(crate) async fn acquire(
    pool: &deadpool_postgres::Pool,
    holder: &str,
    advertise: &str,
    ttl: Duration,
    wait: Duration,
) -> Result<(Lease, Head), AuditError> {
    let what = "acquiring the lease";
    let failed = |e: tokio_postgres::Error| AuditError::store(what, &e);
    let deadline = Instant::now() + wait;
    loop {
        let mut client = connect(pool).await?;
        let asked = Instant::now();
        let txn = client.transaction().await.map_err(failed)?;
        let taken = txn
            .query_opt(
                "UPDATE cluster_lease
                 SET holder = $1, advertise = $2::text::jsonb, epoch = epoch + 1,
                     valid_until = NOW() + make_interval(secs => $3::float8), acquired_at = NOW()
                 WHERE id = 1 AND valid_until < NOW()
                 RETURNING epoch",
                &[&holder, &advertise, &ttl.as_secs_f64()],
            )
            .await
            .map_err(failed)?;
        if let Some(row) = taken {
            let epoch: i64 = row.get(0);
            let head = txn
                .query_one(
                    "UPDATE audit_chain_head SET epoch = $1 WHERE id = 1 RETURNING seq, hash",
                    &[&epoch],
                )
                .await
                .map_err(failed)?;
            let head = Head {
                seq: u64::try_from(head.get::<_, i64>(0)).unwrap_or(0),
                hash: head.get(1),
            };
            // It applies every record up to the head before it writes (reading them at start,
            // or to the end of what it followed when it takes over).
            let reporter = Reporter {
                name: holder.to_owned(),
                advertise: advertise.to_owned(),
                lease_ttl: ttl,
            };
            let report = Report {
                role: NodeRole::Active,
                applied_seq: head.seq,
                head_seq: head.seq,
                epoch,
            };
            reporter.report(&txn, report).await?;
            txn.commit().await.map_err(failed)?;
            tracing::info!(epoch, holder, "took the PostgreSQL store's lease");
            return Ok((Lease { epoch, asked }, head));
        }
        drop(txn);
        let row = client
            .query_one(
                "SELECT holder, advertise::text,
                        (EXTRACT(EPOCH FROM (valid_until - NOW())) * 1000)::bigint
                 FROM cluster_lease WHERE id = 1",
                &[],
            )
            .await
            .map_err(failed)?;
        let (other, advertised, valid_for_ms): (String, String, i64) =
            (row.get(0), row.get(1), row.get(2));
        let now = Instant::now();
        if now >= deadline {
            return Err(AuditError::LeaseHeld {
                holder: other,
                advertise: advertised,
                valid_for_ms,
            });
        }
        tracing::info!(
            holder = %other,
            valid_for_ms,
            "another node holds the PostgreSQL store's lease; waiting for it to expire"
        );
        let expires_in = Duration::from_millis(u64::try_from(valid_for_ms).unwrap_or(0));
        let pause = expires_in
            .min(ttl / 3)
            .min(deadline - now)
            .max(Duration::from_millis(20));
        drop(client);
        tokio::time::sleep(pause).await;
    }
}

/// The renewal task's controls, shared with the store.
#[derive(Debug)]
pub(crate) struct LeaseState {
    /// The lease's epoch.
    pub epoch: i64,
    stop: Notify,
    stopped: AtomicBool,
    /// The lease was taken over: nothing more is written or renewed.
    pub lost: AtomicBool,
    /// Until when the lease surely holds by this node's clock: from when the last statement that
    /// took or renewed it was sent, plus its length. A monotonic clock, which goes on while the
    /// process is stopped, so a node that was paused past it knows on waking, before any renewal.
    holds_until: std::sync::Mutex<Instant>,
    /// Test builds: renewals are skipped while set, as if this node were paused.
    #[cfg(feature = "fault-injection")]
    pub paused: AtomicBool,
}

impl LeaseState {
    /// The state of `lease`, `ttl` long.
    pub fn new(lease: Lease, ttl: Duration) -> Self {
        LeaseState {
            epoch: lease.epoch,
            stop: Notify::new(),
            stopped: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            holds_until: std::sync::Mutex::new(lease.asked + ttl),
            #[cfg(feature = "fault-injection")]
            paused: AtomicBool::new(false),
        }
    }

    /// Whether the lease still surely holds now: not taken over, and not past the time a
    /// renewal would have had to happen by (see `holds_until`).
    pub fn in_force(&self) -> bool {
        !self.lost.load(Ordering::Acquire)
            && Instant::now() < *self.holds_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn renewed(&self, asked: Instant, ttl: Duration) {
        let mut until = self.holds_until.lock().unwrap_or_else(|e| e.into_inner());
        *until = (*until).max(asked + ttl);
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop.notify_one();
    }
}

/// Everything the renewal task needs.
pub(crate) struct Renewal {
    pub pool: deadpool_postgres::Pool,
    pub holder: String,
    /// This node's advertised addresses, reported with each renewal.
    pub advertise: String,
    pub lease: Lease,
    pub ttl: Duration,
    pub shared: Arc<Shared>,
    pub state: Arc<LeaseState>,
}

impl Renewal {
    /// Renews the lease until stopped or lost; see the module's header for what failing means.
    pub fn spawn(self, runtime: &PgRuntime) {
        runtime.spawn(async move { self.run().await });
    }

    async fn run(self) {
        let mut healthy = true;
        loop {
            let wait = if healthy {
                self.ttl / 3
            } else {
                (self.ttl / 10).min(Duration::from_millis(200))
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.state.stop.notified() => {}
            }
            if self.state.stopped.load(Ordering::Acquire) {
                return;
            }
            #[cfg(feature = "fault-injection")]
            if self.state.paused.load(Ordering::Acquire) {
                continue;
            }
            let asked = Instant::now();
            let answer = tokio::time::timeout(self.ttl * 2 / 3, self.renew()).await;
            let problem = match answer {
                Ok(Ok(true)) => {
                    self.state.renewed(asked, self.ttl);
                    if !healthy {
                        tracing::info!(
                            "the PostgreSQL store's lease is renewed again; new calls are admitted"
                        );
                        self.shared.set_lease_problem(None);
                    }
                    healthy = true;
                    continue;
                }
                Ok(Ok(false)) => {
                    let lost = self.taken_over().await;
                    self.report_fenced(&lost).await;
                    self.state.lost.store(true, Ordering::Release);
                    tracing::error!(%lost, "lost the PostgreSQL store's lease");
                    self.shared.set_lease_problem(Some(lost.to_string()));
                    return;
                }
                Ok(Err(error)) => format!(
                    "the PostgreSQL store's lease cannot be renewed ({error}); no new calls are admitted until it is"
                ),
                Err(_) => format!(
                    "renewing the PostgreSQL store's lease got no answer within {:?}; no new calls are admitted until it does",
                    self.ttl * 2 / 3
                ),
            };
            if healthy {
                tracing::error!(%problem, "cannot renew the lease");
            }
            healthy = false;
            self.shared.set_lease_problem(Some(problem));
        }
    }

    /// One renewal, reporting this node with it: `false` when the row is no longer this node's.
    async fn renew(&self) -> Result<bool, AuditError> {
        let client = connect(&self.pool).await?;
        let written = seq_column(self.shared.last_seq.load(Ordering::Acquire));
        let renewed = client
            .execute(
                RENEW_AND_REPORT,
                &[
                    &self.holder,
                    &NodeRole::Active.as_str(),
                    &self.advertise,
                    &written,
                    &written,
                    &self.reporter().lease_ttl_ms(),
                    &self.lease.epoch,
                    &self.ttl.as_secs_f64(),
                    &FORGET_AFTER.as_secs_f64(),
                ],
            )
            .await
            .map_err(|e| AuditError::store("renewing the lease", &e))?;
        Ok(renewed == 1)
    }

    fn reporter(&self) -> Reporter {
        Reporter {
            name: self.holder.clone(),
            advertise: self.advertise.clone(),
            lease_ttl: self.ttl,
        }
    }

    /// Says once in `cluster_nodes` that this node was fenced out (best effort: a node that says
    /// nothing more is shown as gone soon anyway).
    async fn report_fenced(&self, lost: &AuditError) {
        let AuditError::LostLease { now, .. } = lost else {
            return;
        };
        let written = self.shared.last_seq.load(Ordering::Acquire);
        let report = Report {
            role: NodeRole::Fenced,
            applied_seq: written,
            head_seq: written,
            epoch: *now,
        };
        let reporter = self.reporter();
        let reported = tokio::time::timeout(self.ttl, async {
            let client = connect(&self.pool).await?;
            reporter.report(&client, report).await
        })
        .await;
        if let Ok(Err(error)) = reported {
            tracing::debug!(%error, "could not report this node as fenced");
        }
    }

    /// Says who took the lease, as well as it can be read.
    async fn taken_over(&self) -> AuditError {
        who_holds(&self.pool, self.lease.epoch).await
    }
}

/// The error for a lease that `mine` no longer holds, naming who does.
pub(crate) async fn who_holds(pool: &deadpool_postgres::Pool, mine: i64) -> AuditError {
    match connect(pool).await {
        Ok(client) => who_holds_on(&client, mine).await,
        Err(_) => lost_to(None, mine),
    }
}

/// [`who_holds`], asked on `client`.
pub(crate) async fn who_holds_on(client: &tokio_postgres::Client, mine: i64) -> AuditError {
    let row = client
        .query_opt("SELECT holder, epoch FROM cluster_lease WHERE id = 1", &[])
        .await
        .ok()
        .flatten();
    lost_to(row, mine)
}

fn lost_to(row: Option<tokio_postgres::Row>, mine: i64) -> AuditError {
    let (holder, now) = row.map_or_else(
        || ("another node".to_owned(), mine + 1),
        |row| (row.get::<_, String>(0), row.get::<_, i64>(1)),
    );
    AuditError::LostLease { mine, holder, now }
}

/// Gives the lease up (it expires at once), so that another node may take it without waiting.
pub(crate) async fn release(
    pool: &deadpool_postgres::Pool,
    holder: &str,
    lease: Lease,
) -> Result<(), AuditError> {
    let client = connect(pool).await?;
    client
        .execute(
            "UPDATE cluster_lease SET valid_until = '-infinity'
             WHERE id = 1 AND holder = $1 AND epoch = $2",
            &[&holder, &lease.epoch],
        )
        .await
        .map_err(|e| AuditError::store("giving the lease up", &e))?;
    Ok(())
}
