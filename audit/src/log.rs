//! [`AuditLog`]: the cheap, cloneable handle callers append through.
//!
//! Start-up runs on a blocking thread. Writes are group-committed by whoever leads (see the
//! `writer` module): a caller waiting on its record may write and sync one batch on its own thread.

use crate::health::Unwritable;
use crate::opening::{open_files, open_postgres};
use crate::pg::{LeaseState, PgReader};
use crate::record::{Replayed, Verified, encode_event};
use crate::writer::{self, Core, Shared};
use crate::{Anchor, AuditError, AuditOptions, OpenReport, Record, StoreOptions, VerifyReport};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{broadcast, oneshot};

mod standby;

/// A handle on an open audit log; clones share the same writer.
///
/// Dropping every handle lets the writer commit what is queued and stop, but only [`close`]
/// waits for that: call it before the process exits.
///
/// [`close`]: AuditLog::close
pub struct AuditLog<E> {
    inner: Arc<Inner<E>>,
}

struct Inner<E> {
    core: Arc<Core<E>>,
    /// Records that may wait to be written before new intents are refused.
    capacity: usize,
    broadcast: broadcast::Sender<Arc<Record<E>>>,
    shared: Arc<Shared>,
    dir: PathBuf,
    /// The PostgreSQL store's lease controls (`None` for files, and on a standby until it takes
    /// the lease over).
    lease: std::sync::Mutex<Option<Arc<LeaseState>>>,
    /// Where the records are kept, for reading them back (`verify`).
    store: StoreOptions,
    /// Reads the PostgreSQL store's records (`None` for files).
    pg_reader: Option<PgReader>,
    closed: AtomicBool,
    /// Set on a warm standby: why this node appends nothing (every record is refused).
    standby: std::sync::Mutex<Option<String>>,
    /// A standby's view of the lease and the chain head.
    standby_store: Option<crate::pg::StandbyStore>,
    /// How long a batch may take before the store counts as stalled (for a standby that takes over).
    stall_after: std::time::Duration,
}

impl<E> Clone for AuditLog<E> {
    fn clone(&self) -> Self {
        AuditLog {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E> std::fmt::Debug for AuditLog<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

impl<E> AuditLog<E>
where
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Opens (or creates) the log: verifies the whole chain, cuts off a torn last line, calls
    /// `replay` for every valid record in order (streamed, never all in memory), then starts the
    /// writer. A broken chain is [`AuditError::Broken`] unless `options.recover` is set. If it
    /// fails, `replay` may already have seen the records before the failure.
    pub async fn open(
        options: AuditOptions,
        replay: impl FnMut(Record<E>),
    ) -> Result<(AuditLog<E>, OpenReport), AuditError> {
        Self::open_as::<E>(options, replay).await
    }

    /// [`open`](AuditLog::open), reading each record for `replay` as `R` rather than as the
    /// log's own event type: a projection that keeps only what the replay needs is read faster,
    /// since the parser skips the rest without building it.
    pub async fn open_as<R: DeserializeOwned + Send + 'static>(
        options: AuditOptions,
        replay: impl FnMut(Record<R>),
    ) -> Result<(AuditLog<E>, OpenReport), AuditError> {
        Self::open_with(options, replay).await
    }

    /// [`open_as`](AuditLog::open_as), handing `replay` each record's place and event only
    /// ([`Replayed`]): what rebuilding state from the log needs, read with less work per record.
    pub async fn open_replaying<R: DeserializeOwned + Send + 'static>(
        options: AuditOptions,
        replay: impl FnMut(Replayed<R>),
    ) -> Result<(AuditLog<E>, OpenReport), AuditError> {
        Self::open_with(options, replay).await
    }

    async fn open_with<R: DeserializeOwned + Send + 'static, T: Verified<R>>(
        options: AuditOptions,
        replay: impl FnMut(T),
    ) -> Result<(AuditLog<E>, OpenReport), AuditError> {
        options.validate()?;
        let shared = Arc::new(Shared::new(options.stall_after));
        let (report, opened) = match &options.store {
            StoreOptions::Files => open_files(&options, replay, &shared).await?,
            StoreOptions::Postgres(pg) => open_postgres(&options, pg, replay, &shared).await?,
        };
        let (broadcast, _) = broadcast::channel(options.broadcast_capacity);
        shared.last_seq.store(report.last_seq, Ordering::Release);
        let core = Core::start(
            options.gather_for,
            opened.chain,
            opened.last_ts_ms,
            opened.store,
            broadcast.clone(),
            Arc::clone(&shared),
        )?;
        let inner = Inner {
            core,
            capacity: options.channel_capacity,
            broadcast,
            shared,
            dir: options.dir,
            lease: std::sync::Mutex::new(opened.lease),
            store: options.store,
            pg_reader: opened.pg_reader,
            closed: AtomicBool::new(false),
            standby: std::sync::Mutex::new(None),
            standby_store: None,
            stall_after: options.stall_after,
        };
        Ok((
            AuditLog {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// Appends `event`, stamped now, and resolves once its record is durable (written, and
    /// `fdatasync`ed when `fsync` is on): acknowledge a call only after this. It may write and sync
    /// the batch its record is in on the calling thread (see [`Queued::durable`]). If the future
    /// is dropped after the event was queued, the record is still written. While the log cannot be
    /// written it fails at once ([`AuditError::Unwritable`]).
    pub async fn append(&self, event: E) -> Result<Arc<Record<E>>, AuditError> {
        self.enqueue(writer::unix_ms(), event, Admit::Intent)?
            .durable()
            .await
    }

    /// Queues `event` with its timestamp and returns at once, without blocking or awaiting, so that
    /// a caller can queue under its own short lock and the log's order is the order of its
    /// changes. [`Queued::durable`] then waits for the record to be durable.
    ///
    /// An [`Admit::Intent`] is refused while the log cannot be written, or when `channel_capacity`
    /// records already wait: nothing new starts that could not be recorded. An [`Admit::Outcome`]
    /// (what became of something already recorded) is always queued, so that the record of what
    /// happened is never dropped; its count is bounded by the intents admitted before it.
    pub fn enqueue(&self, ts_ms: i64, event: E, admit: Admit) -> Result<Queued<E>, AuditError> {
        self.admit(admit)?;
        let shared = &self.inner.shared;
        let json = encode_event(&event).map_err(AuditError::Encode)?;
        let (ack, done) = oneshot::channel();
        shared.queued.fetch_add(1, Ordering::AcqRel);
        match self.inner.core.push(ts_ms, event, json, ack) {
            Ok(ticket) => Ok(Queued {
                done: Some(done),
                ticket,
                keeper: None,
                core: Arc::clone(&self.inner.core),
            }),
            Err(error) => {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                Err(error)
            }
        }
    }
}

impl<E> AuditLog<E> {
    /// Whether a record of this kind would be queued now: a caller that changes its own state
    /// before queueing asks first, so that a refused record changes nothing.
    pub fn admit(&self, admit: Admit) -> Result<(), AuditError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(AuditError::Closed);
        }
        if let Some(reason) = self.standby() {
            return Err(AuditError::Standby(reason));
        }
        let shared = &self.inner.shared;
        if admit == Admit::Intent {
            if let Some(unwritable) = shared.unwritable() {
                return Err(AuditError::Unwritable(unwritable.reason));
            }
            let queued = shared.queued.load(Ordering::Acquire);
            if queued >= self.inner.capacity {
                return Err(AuditError::Backlogged(queued));
            }
        }
        Ok(())
    }
}

/// The records [`AuditLog::read_from`] reads, in order; it ends after an error.
pub type Records<R> = Box<dyn Iterator<Item = Result<Record<R>, AuditError>> + Send>;

/// Whether a record may be refused when the log cannot take more (see [`AuditLog::enqueue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Something about to happen: refused while the log cannot be written.
    Intent,
    /// What became of something already recorded: always queued.
    Outcome,
}

/// A queued record; [`Queued::durable`] resolves once it is durable, or with why it is not.
///
/// Dropped without `durable`, the record is still written: by whoever waits on a later record, or
/// by the log's keeper thread.
#[must_use = "a queued record says whether it became durable only when awaited"]
pub struct Queued<E> {
    /// `None` once `durable` took it.
    done: Option<oneshot::Receiver<Result<crate::writer::Committed<E>, AuditError>>>,
    ticket: u64,
    /// `None` if `durable` may commit on the calling thread; else the batch worth waiting for (see
    /// [`Queued::by_keeper`]).
    keeper: Option<usize>,
    core: Arc<Core<E>>,
}

impl<E> Queued<E> {
    /// Has [`Queued::durable`] leave the commit to the log's keeper thread instead of writing and
    /// syncing on the calling thread. For a caller whose thread has other work waiting (other
    /// calls on the same runtime): blocking it for a sync would hold that work up, while the keeper
    /// commits for everyone at the cost of one hand-off.
    ///
    /// `gather` is how many queued records make a batch worth its sync: a caller that knows more
    /// records are on their way (other calls in flight) lets the keeper wait for them, up to
    /// [`crate::AuditOptions::gather_for`], so that one sync serves them all. Each sync costs CPU as
    /// well as time, so under load fewer, larger batches leave more CPU for the calls. `0` or `1`:
    /// commit as soon as the keeper can.
    pub fn by_keeper(mut self, gather: usize) -> Self {
        self.keeper = Some(gather);
        self
    }

    /// Waits until the record is durable. If nobody is committing when it is called (and
    /// [`Queued::by_keeper`] was not), the calling thread commits the queue's first batch (its own
    /// record among it) before it returns the future: one `write` and one `fdatasync`, with no
    /// hand-off to another thread. Call it outside any lock.
    pub fn durable(self) -> impl Future<Output = Result<Arc<Record<E>>, AuditError>> {
        let committed = self.durable_in_batch();
        async move { committed.await.map(|(record, _)| record) }
    }

    /// [`Queued::durable`], also saying how many records the batch that made it durable held
    /// (itself included): for a trace of the commit.
    pub fn durable_in_batch(
        mut self,
    ) -> impl Future<Output = Result<(Arc<Record<E>>, usize), AuditError>> {
        let done = self.done.take();
        match self.keeper {
            None => self.core.lead_once(),
            Some(gather) => self.core.to_keeper(gather),
        }
        async move {
            match done {
                Some(done) => done.await.map_err(|_| AuditError::Closed)?,
                None => Err(AuditError::Closed),
            }
        }
    }
}

impl<E> Drop for Queued<E> {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.core.unawaited(self.ticket);
        }
    }
}

impl<E> Drop for Inner<E> {
    /// The last handle is gone: the keeper commits what is queued and stops.
    fn drop(&mut self) {
        self.core.stop(None);
    }
}

/// Whether the log can be written now, for health checks, metrics and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHealth {
    /// `None` while records are written; otherwise why not, and since when.
    pub unwritable: Option<Unwritable>,
    /// Records queued and not yet durable (the backlog of an unwritable log included).
    pub queued: usize,
}

impl<E> AuditLog<E> {
    /// Every record after it is durable, in order: the feed for live watchers. Subscribe before
    /// calling [`read_from`](crate::read_from) and skip seqs already seen, so that nothing falls
    /// between the two. A receiver that falls `broadcast_capacity` behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record<E>>> {
        self.inner.broadcast.subscribe()
    }

    /// The seq of the last durable record (0 when the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.last_seq.load(Ordering::Acquire)
    }

    /// How many batches the writer has committed: with `last_seq`, shows how well concurrent
    /// appends are grouped (one write and one sync per batch).
    pub fn batches_committed(&self) -> u64 {
        self.inner.shared.batches.load(Ordering::Relaxed)
    }

    /// How many of those batches the log's keeper thread led: the rest were written and synced by
    /// the caller waiting on them, with no hand-off to another thread.
    pub fn batches_led_by_keeper(&self) -> u64 {
        self.inner.shared.keeper_batches.load(Ordering::Relaxed)
    }

    /// Whether records can be written now, and how many wait.
    pub fn health(&self) -> AuditHealth {
        AuditHealth {
            unwritable: self.inner.shared.unwritable(),
            queued: self.inner.shared.queued.load(Ordering::Acquire),
        }
    }

    /// Follows whether the log can be written (`true`) or not, for health checks.
    pub fn watch_writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.shared.writable.subscribe()
    }

    /// Test builds: makes every write hang, as on a stalled disk, while `stalled` is true.
    #[cfg(feature = "fault-injection")]
    pub fn inject_stall(&self, stalled: bool) {
        self.inner
            .shared
            .inject_stall
            .store(stalled, Ordering::Release);
    }

    /// Test builds: makes every write fail as on a full disk (`ENOSPC`) while `full` is true.
    #[cfg(feature = "fault-injection")]
    pub fn inject_full_disk(&self, full: bool) {
        self.inner
            .shared
            .inject_full_disk
            .store(full, Ordering::Release);
    }

    /// Test builds: skips the PostgreSQL store's lease renewals while `paused` is true, as if
    /// this node were stopped (a no-op for files).
    #[cfg(feature = "fault-injection")]
    pub fn pause_lease_renewal(&self, paused: bool) {
        if let Some(lease) = self.lease() {
            lease.paused.store(paused, Ordering::Release);
        }
    }

    /// With the PostgreSQL store, whether this node still holds the lease (`false` once another
    /// node took it over); `None` with files.
    pub fn holds_lease(&self) -> Option<bool> {
        self.lease()
            .map(|lease| !lease.lost.load(Ordering::Acquire))
    }

    /// With the PostgreSQL store, `Err` once this node's lease may no longer hold: taken over, or
    /// past the time by which it would have had to be renewed (this node was paused or cut off).
    /// Asked just before a recorded call is sent to its server, so that a node that wakes from a
    /// pause does not send what the node that took over has recorded as interrupted. Always `Ok`
    /// with files.
    pub fn lease_in_force(&self) -> Result<(), AuditError> {
        match self.lease() {
            Some(lease) if !lease.in_force() => Err(AuditError::LeaseRanOut { epoch: lease.epoch }),
            _ => Ok(()),
        }
    }

    /// The lease's controls, once this node holds (or held) it.
    fn lease(&self) -> Option<Arc<LeaseState>> {
        self.inner
            .lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The records with `seq >= from_seq`, in order, from wherever they are kept (see
    /// [`crate::read_from`] for files). Blocks its thread as it reads: iterate it on a blocking
    /// thread. It sees the records written when each part of it is read.
    pub fn read_from<R: DeserializeOwned + Send + 'static>(
        &self,
        from_seq: u64,
    ) -> Result<Records<R>, AuditError> {
        match &self.inner.pg_reader {
            Some(reader) => Ok(Box::new(reader.read_from::<R>(from_seq))),
            None => Ok(Box::new(crate::read_from::<R>(&self.inner.dir, from_seq)?)),
        }
    }

    /// Where the records are kept.
    pub fn store(&self) -> &StoreOptions {
        &self.inner.store
    }

    /// Verifies the whole log where it is kept (see [`crate::verify_dir_against`] and
    /// [`crate::pg::verify_postgres`]), beside the live writer.
    pub async fn verify(&self, anchor: Option<&Anchor>) -> Result<VerifyReport, AuditError> {
        match &self.inner.store {
            StoreOptions::Files => {
                let (dir, anchor) = (self.inner.dir.clone(), anchor.cloned());
                tokio::task::spawn_blocking(move || {
                    crate::verify_dir_against(&dir, anchor.as_ref())
                })
                .await
                .map_err(|e| AuditError::Internal(format!("audit verify task failed: {e}")))?
            }
            StoreOptions::Postgres(pg) => crate::pg::verify_postgres(pg, anchor).await,
        }
    }

    /// The directory of the log files (with the PostgreSQL store, of the local secrets kept
    /// beside the log).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Commits everything queued so far, syncs and stops the writer; later appends fail with
    /// [`AuditError::Closed`]. Safe to call more than once and from several clones.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let (done, stopped) = oneshot::channel();
        self.inner.core.stop(Some(done));
        let _ = stopped.await;
    }
}
