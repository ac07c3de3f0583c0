//! Group commit, led by the callers that wait on their records.
//!
//! Appends queue in memory ([`Core::push`]). The first caller to wait on a record while nobody is
//! committing becomes the *leader*: it takes every queued append (up to [`MAX_BATCH`]), chains and
//! hashes them, writes them with one `pwrite` at the end of the file's content (in place, into zeros
//! prepared ahead: see the `prepare` module), makes them durable with one `fdatasync`, then
//! acknowledges and publishes them and steps down. A lone call therefore writes and syncs its own
//! record on its own thread, with no hand-off to another thread and back; concurrent calls share
//! the leader's sync.
//!
//! A caller that asks for it ([`crate::Queued::by_keeper`]: one whose thread has other work to
//! do) never leads; its records are committed by the keeper. Such a caller also says how many
//! queued records make a batch worth its sync (it knows how many other calls are in flight), and
//! the keeper waits up to [`crate::AuditOptions::gather_for`] for that many: under load, one sync
//! (which costs CPU, not only time) then serves more records.
//!
//! A caller leads one batch only. Appends that queued during it are led by the *keeper* thread,
//! which leads until the queue is empty, so no caller waits on the disk for others' records
//! longer than one batch. The keeper also leads records nobody waits on (a [`crate::Queued`]
//! dropped unawaited), retries an unwritable log's backlog, and commits what is left on close.
//! Only the leader touches the file (`leading` under the queue's lock makes it one at a time), and
//! a leader never awaits: it blocks its thread for one write and one sync, then lets go.
//!
//! When a batch cannot be written (a full disk, a read-only remount), the file is cut back to its
//! last whole line, every waiter is told at once, and the log turns *unwritable*: the records it
//! holds (the failed batch and whatever arrives meanwhile) wait in a backlog whose size is bounded
//! by the log's admission control ([`crate::AuditLog::enqueue`] refuses new intents while the log
//! is unwritable), and the keeper tries them again every [`RETRY_EVERY`] until the disk takes
//! them, in order, with the chain intact. Nothing is dropped and nothing is retried behind a
//! caller's back: a caller learns that its record is not durable, and decides what that means.

use crate::chain::ChainState;
pub(crate) use crate::health::{Shared, unix_ms};
use crate::record::write_line;
use crate::store::{Batch, LineMeta, Store};
use crate::{AuditError, Record};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// Most appends in one batch: bounds the write size and the latency of the first waiter.
pub(crate) const MAX_BATCH: usize = 1024;

/// How often an unwritable log tries its backlog again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How an `append` learns that its record is durable, and how many records its batch made durable
/// with it (or why not).
pub(crate) type Ack<E> = oneshot::Sender<Result<Committed<E>, AuditError>>;

/// A durable record and the size of the batch it was written in.
pub(crate) type Committed<E> = (Arc<Record<E>>, usize);

/// The queue, the writer and the keeper's signal, shared by every handle and queued record.
pub(crate) struct Core<E> {
    queue: Mutex<Queue<E>>,
    /// Wakes the keeper: records nobody leads, a retry falling due, or the end.
    kick: Condvar,
    /// Wakes the keeper while it gathers a batch: enough records queued, or no more waiting.
    more: Condvar,
    /// Locked by the leader only (so never contended): the file and the chain.
    writer: Mutex<Writer<E>>,
}

struct Queue<E> {
    pending: Vec<Pending<E>>,
    /// How many records were ever pushed: the ticket of the newest.
    pushed: u64,
    /// Someone (a caller or the keeper) is committing.
    leading: bool,
    /// The keeper should lead: records are queued that no waiting caller will lead.
    wanted: bool,
    /// How many queued records the keeper's next batch is worth waiting for (the largest
    /// [`crate::Queued::by_keeper`] asked for since its last batch).
    gather: usize,
    /// The keeper is waiting for `gather` records.
    gathering: bool,
    /// When the keeper retries the backlog of an unwritable log.
    retry_at: Option<Instant>,
    /// Close was asked for: commit everything, sync, stop; then tell these.
    stopping: bool,
    closers: Vec<oneshot::Sender<()>>,
    /// The keeper has stopped: nothing more is queued.
    stopped: bool,
}

impl<E: Send + Sync + 'static> Core<E> {
    /// The core of a log whose next record continues `chain`, and its keeper thread, which stops
    /// after [`Core::stop`] once everything queued is committed.
    pub(crate) fn start(
        gather_for: Duration,
        chain: ChainState,
        last_ts_ms: i64,
        store: Box<dyn Store>,
        broadcast: broadcast::Sender<Arc<Record<E>>>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Self>, AuditError> {
        let writer = Writer {
            gather_for,
            store,
            chain,
            last_ts_ms,
            batch: Vec::with_capacity(MAX_BATCH),
            backlog: Vec::new(),
            next_retry: Instant::now(),
            buf: Vec::with_capacity(256 * 1024),
            lines: Vec::with_capacity(MAX_BATCH),
            shared,
            broadcast,
        };
        let core = Arc::new(Core {
            queue: Mutex::new(Queue {
                pending: Vec::with_capacity(MAX_BATCH),
                pushed: 0,
                leading: false,
                wanted: false,
                gather: 0,
                gathering: false,
                retry_at: None,
                stopping: false,
                closers: Vec::new(),
                stopped: false,
            }),
            kick: Condvar::new(),
            more: Condvar::new(),
            writer: Mutex::new(writer),
        });
        let keeper = Arc::clone(&core);
        std::thread::Builder::new()
            .name("audit-keeper".into())
            .spawn(move || keeper.keep())
            .map_err(|e| {
                AuditError::Internal(format!("cannot start the audit keeper thread: {e}"))
            })?;
        Ok(core)
    }

    /// A standby's log becomes the writer: the next record continues `chain` (the head it read
    /// to) in `store`. Nothing is queued then (a standby's log admits nothing).
    pub(crate) fn take_over(&self, chain: ChainState, last_ts_ms: i64, store: Box<dyn Store>) {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer.chain = chain;
        writer.last_ts_ms = last_ts_ms;
        writer.store = store;
    }

    /// The keeper thread: leads whatever no caller leads, until the log stops.
    fn keep(&self) {
        loop {
            self.wait_for_work();
            // A caller may have started leading since: then it kicks again if it leaves work.
            let Some(mut leader) = self.lead(true) else {
                continue;
            };
            while leader.commit_next() {}
            let mut queue = self.lock();
            if !queue.stopping || !queue.pending.is_empty() {
                // Not stopping, or outcomes of what was already admitted still came in.
                continue;
            }
            queue.stopped = true;
            let closers = std::mem::take(&mut queue.closers);
            drop(queue);
            leader.finish();
            drop(leader);
            for done in closers {
                let _ = done.send(());
            }
            return;
        }
    }

    /// Sleeps until nobody leads and there is work: records no caller leads, a retry falling
    /// due, or the end.
    fn wait_for_work(&self) {
        let mut queue = self.lock();
        loop {
            let retry_due = queue.retry_at.is_some_and(|at| Instant::now() >= at);
            if !queue.leading && (queue.wanted || queue.stopping || retry_due) {
                return;
            }
            queue = match queue.retry_at.filter(|_| !queue.leading) {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.kick
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .kick
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

impl<E> Core<E> {
    fn lock(&self) -> MutexGuard<'_, Queue<E>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an append; returns its ticket, or `Closed` once the log has stopped.
    pub(crate) fn push(
        &self,
        ts_ms: i64,
        event: E,
        json: Vec<u8>,
        ack: Ack<E>,
    ) -> Result<u64, AuditError> {
        let mut queue = self.lock();
        if queue.stopped {
            return Err(AuditError::Closed);
        }
        queue.pushed += 1;
        queue.pending.push(Pending {
            ts_ms,
            event,
            json,
            ack: Some(ack),
        });
        if queue.gathering && queue.pending.len() >= queue.gather {
            self.more.notify_one();
        }
        Ok(queue.pushed)
    }

    /// A caller about to wait on a record: if nobody is committing, it commits the queue's first
    /// batch (its own record among it) on its own thread.
    pub(crate) fn lead_once(&self) {
        if let Some(mut leader) = self.lead(false) {
            // On a runtime worker the write and sync run with the worker handed off: a disk that
            // hangs then holds this thread alone, not the tasks queued on its worker (the one in
            // its LIFO slot, which no other worker takes, may be a listener's accept loop).
            let on_worker = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if on_worker {
                tokio::task::block_in_place(|| leader.commit_next());
            } else {
                leader.commit_next();
            }
        }
    }

    /// A caller waits on a record that the keeper is to commit, in a batch worth waiting for
    /// `gather` records.
    pub(crate) fn to_keeper(&self, gather: usize) {
        let mut queue = self.lock();
        queue.gather = queue.gather.max(gather);
        self.want_keeper(queue);
    }

    /// Before the keeper takes a batch: while fewer records are queued than callers said are worth
    /// waiting for, waits for more, up to `longest`. A caller that would commit its own record
    /// meanwhile (nothing else in flight), or close, ends the wait. Returns the queue, locked, for
    /// the batch to be taken.
    fn gather(&self, longest: Duration) -> MutexGuard<'_, Queue<E>> {
        let mut queue = self.lock();
        if queue.pending.is_empty() || queue.pending.len() >= queue.gather.min(MAX_BATCH) {
            return queue;
        }
        let deadline = Instant::now() + longest;
        queue.gathering = true;
        while queue.pending.len() < queue.gather.min(MAX_BATCH) && !queue.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            queue = self
                .more
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        queue.gathering = false;
        queue
    }

    /// The record of `ticket` will not be waited on. The newest queued record is the one whose
    /// owner leads for everything before it; if that is this one and nobody leads, the keeper does.
    pub(crate) fn unawaited(&self, ticket: u64) {
        let queue = self.lock();
        if queue.pushed == ticket {
            self.want_keeper(queue);
        }
    }

    /// Wakes the keeper for what is queued, unless someone leads (who hands it on when done).
    fn want_keeper(&self, mut queue: MutexGuard<'_, Queue<E>>) {
        if !queue.leading && !queue.pending.is_empty() {
            queue.wanted = true;
            self.kick.notify_one();
        }
    }

    /// Asks the keeper to commit everything queued, sync and stop; `done` hears when it has (at
    /// once if it already has).
    pub(crate) fn stop(&self, done: Option<oneshot::Sender<()>>) {
        let mut queue = self.lock();
        if queue.stopped {
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        }
        queue.stopping = true;
        queue.closers.extend(done);
        self.kick.notify_one();
        self.more.notify_one();
    }

    /// Becomes the leader, unless someone is; a caller only when there is something to commit.
    fn lead(&self, keeper: bool) -> Option<Leader<'_, E>> {
        {
            let mut queue = self.lock();
            if queue.leading || (!keeper && queue.pending.is_empty()) {
                if !keeper && queue.gathering {
                    // This caller would have committed its own record: the keeper need not wait.
                    queue.gather = 0;
                    self.more.notify_one();
                }
                return None;
            }
            queue.leading = true;
            if keeper {
                queue.wanted = false;
            }
        }
        Some(Leader {
            core: self,
            keeper,
            writer: Some(self.writer.lock().unwrap_or_else(PoisonError::into_inner)),
        })
    }
}

/// The one committing; stepping down (also on unwinding) hands what is left to the keeper.
struct Leader<'a, E> {
    core: &'a Core<E>,
    keeper: bool,
    writer: Option<MutexGuard<'a, Writer<E>>>,
}

impl<E> std::ops::Deref for Leader<'_, E> {
    type Target = Writer<E>;
    fn deref(&self) -> &Writer<E> {
        self.writer.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl<E> std::ops::DerefMut for Leader<'_, E> {
    fn deref_mut(&mut self) -> &mut Writer<E> {
        self.writer.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<E> Leader<'_, E> {
    /// Takes the next batch from the queue and commits it (or, while the log is unwritable, adds
    /// it to the backlog and retries that when due). Returns whether the queue had anything.
    fn commit_next(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.batch);
        {
            let mut queue = if self.keeper && self.backlog.is_empty() {
                self.core.gather(self.gather_for)
            } else {
                self.core.lock()
            };
            queue.gather = 0;
            if queue.pending.len() <= MAX_BATCH {
                std::mem::swap(&mut queue.pending, &mut batch);
            } else {
                batch.extend(queue.pending.drain(..MAX_BATCH));
            }
        }
        let took = !batch.is_empty();
        if took && self.keeper {
            self.shared.keeper_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.take(&mut batch);
        self.batch = batch;
        took
    }
}

impl<E> Drop for Leader<'_, E> {
    fn drop(&mut self) {
        let retry_at = self
            .writer
            .take()
            .and_then(|writer| (!writer.backlog.is_empty()).then_some(writer.next_retry));
        let mut queue = self.core.lock();
        queue.leading = false;
        queue.retry_at = retry_at;
        if !queue.pending.is_empty() {
            queue.wanted = true;
        }
        if queue.wanted || queue.stopping || retry_at.is_some() {
            self.core.kick.notify_one();
        }
    }
}

/// An event waiting to be written; `ack` is taken once its waiter has been told.
pub(crate) struct Pending<E> {
    ts_ms: i64,
    event: E,
    json: Vec<u8>,
    ack: Option<Ack<E>>,
}

struct Writer<E> {
    /// See [`crate::AuditOptions::gather_for`].
    gather_for: Duration,
    /// Where batches are made durable: files or PostgreSQL.
    store: Box<dyn Store>,
    chain: ChainState,
    last_ts_ms: i64,
    /// The batch being committed (kept for its capacity).
    batch: Vec<Pending<E>>,
    /// Records that could not be written yet, oldest first: written before anything newer.
    backlog: Vec<Pending<E>>,
    /// When the backlog is tried again: a deadline, so records arriving meanwhile cannot put the
    /// retry off.
    next_retry: Instant,
    /// The batch's lines (kept for its capacity).
    buf: Vec<u8>,
    /// Each line's place in the chain (kept for its capacity).
    lines: Vec<LineMeta>,
    shared: Arc<Shared>,
    broadcast: broadcast::Sender<Arc<Record<E>>>,
}

impl<E> Writer<E> {
    /// Commits `batch`, or, while the log is unwritable, queues it behind the backlog (its waiters
    /// hear at once) and retries the backlog when due.
    fn take(&mut self, batch: &mut Vec<Pending<E>>) {
        if self.backlog.is_empty() {
            if !self.commit(batch) {
                self.next_retry = Instant::now() + RETRY_EVERY;
            }
            return;
        }
        let reason = self.reason();
        for mut pending in batch.drain(..) {
            if let Some(ack) = pending.ack.take() {
                let _ = ack.send(Err(AuditError::Unwritable(reason.clone())));
            }
            self.backlog.push(pending);
        }
        if Instant::now() >= self.next_retry {
            self.retry_backlog();
            self.next_retry = Instant::now() + RETRY_EVERY;
        }
    }

    fn reason(&self) -> String {
        self.shared.unwritable().map_or_else(
            || "the audit log cannot be written".to_owned(),
            |u| u.reason,
        )
    }

    /// Writes the backlog again (in batches); the log is writable again once it is empty.
    fn retry_backlog(&mut self) {
        while !self.backlog.is_empty() {
            let rest = self.backlog.split_off(self.backlog.len().min(MAX_BATCH));
            let mut batch = std::mem::replace(&mut self.backlog, rest);
            let written = self.commit(&mut batch);
            if !written {
                return;
            }
        }
        self.shared.set_writable();
        tracing::info!("the audit log can be written again; service resumes");
    }

    /// Writes one batch and tells every waiter the outcome. A batch that cannot be written goes to
    /// the front of the backlog (before anything newer) and the log turns unwritable. Returns
    /// whether it was written.
    fn commit(&mut self, batch: &mut Vec<Pending<E>>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let mut seq = self.chain.next_seq;
        let mut prev = self.chain.prev.clone();
        let mut last_ts_ms = self.last_ts_ms;
        self.buf.clear();
        self.lines.clear();
        for pending in batch.iter() {
            // Stamped by the caller; never earlier than the record before it.
            last_ts_ms = pending.ts_ms.max(last_ts_ms);
            let hash = write_line(&mut self.buf, seq, last_ts_ms, &prev, &pending.json);
            self.lines.push(LineMeta {
                seq,
                ts_ms: last_ts_ms,
                prev: std::mem::replace(&mut prev, hash.clone()),
                hash,
                end: self.buf.len(),
            });
            seq += 1;
        }
        match self.write_batch() {
            Ok(()) => {
                self.chain = ChainState {
                    next_seq: seq,
                    prev,
                };
                self.last_ts_ms = last_ts_ms;
                self.shared.last_seq.store(seq - 1, Ordering::Release);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                let size = batch.len();
                for (pending, line) in batch.drain(..).zip(self.lines.drain(..)) {
                    let record = Arc::new(Record {
                        seq: line.seq,
                        ts_ms: line.ts_ms,
                        prev: line.prev,
                        event: pending.event,
                        hash: line.hash,
                    });
                    let _ = self.broadcast.send(Arc::clone(&record));
                    if let Some(ack) = pending.ack {
                        let _ = ack.send(Ok((record, size)));
                    }
                }
                self.store.written(seq);
                true
            }
            Err(error) => {
                let first = self.backlog.is_empty();
                self.shared.set_unwritable(error.to_string());
                if first {
                    tracing::error!(%error, records = batch.len(), "the audit log cannot be written: new calls are refused until it can; retrying every {RETRY_EVERY:?}");
                }
                let mut failed: Vec<Pending<E>> = std::mem::take(batch);
                for pending in &mut failed {
                    if let Some(ack) = pending.ack.take() {
                        let _ = ack.send(Err(duplicate(&error)));
                    }
                }
                failed.append(&mut self.backlog);
                self.backlog = failed;
                false
            }
        }
    }

    /// Hands the batch in `buf` and `lines` to the store; the time it takes is what health
    /// judges a stall by.
    fn write_batch(&mut self) -> Result<(), AuditError> {
        let batch = Batch {
            text: &self.buf,
            lines: &self.lines,
            prev_seq: self.chain.next_seq - 1,
            prev_hash: &self.chain.prev,
        };
        self.shared
            .writing_since_ms
            .store(unix_ms(), Ordering::Release);
        #[cfg(feature = "fault-injection")]
        while self.shared.inject_stall.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let result = self.store.write(&batch);
        self.shared.writing_since_ms.store(0, Ordering::Release);
        result
    }

    /// Last chance for the backlog, then the store makes everything durable and lets go.
    fn finish(&mut self) {
        if !self.backlog.is_empty() {
            self.retry_backlog();
            if !self.backlog.is_empty() {
                tracing::error!(
                    lost = self.backlog.len(),
                    reason = %self.reason(),
                    "the audit writer stopped with records it could not write (their callers were told)"
                );
            }
        }
        self.store.finish();
    }
}

/// The same error for each waiter of a failed batch (`io::Error` is not `Clone`).
fn duplicate(error: &AuditError) -> AuditError {
    match error {
        AuditError::Io { path, source } => AuditError::Io {
            path: path.clone(),
            source: source.raw_os_error().map_or_else(
                || std::io::Error::new(source.kind(), source.to_string()),
                std::io::Error::from_raw_os_error,
            ),
        },
        AuditError::LostLease { mine, holder, now } => AuditError::LostLease {
            mine: *mine,
            holder: holder.clone(),
            now: *now,
        },
        AuditError::Store { what, message } => AuditError::Store {
            what: what.clone(),
            message: message.clone(),
        },
        other => AuditError::Unwritable(other.to_string()),
    }
}
