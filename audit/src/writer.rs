//! The group-commit writer: one OS thread that owns the current file.
//!
//! It takes every queued append (up to [`MAX_BATCH`]) at once, chains and hashes them, writes them
//! with one `write_all` and makes them durable with one `fdatasync`, then acknowledges and
//! publishes them. It must never leave a partial line behind a failed batch, and never run on (or
//! block) a tokio worker.
//!
//! When a batch cannot be written (a full disk, a read-only remount), the file is cut back to its
//! last whole line, every waiter is told at once, and the writer turns *unwritable*: the records it
//! holds (the failed batch and whatever arrives meanwhile) wait in a backlog whose size is bounded
//! by the log's admission control ([`crate::AuditLog::enqueue`] refuses new intents while the log
//! is unwritable), and the writer tries them again every [`RETRY_EVERY`] until the disk takes
//! them, in order, with the chain intact. Nothing is dropped and nothing is retried behind a
//! caller's back: a caller learns that its record is not durable, and decides what that means.

use crate::chain::ChainState;
use crate::record::write_line;
use crate::segment::{segment_file_name, sync_dir};
use crate::{AuditError, Record};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, oneshot};

/// Most appends in one batch: bounds the write size and the latency of the first waiter.
pub(crate) const MAX_BATCH: usize = 1024;

/// How often an unwritable log tries its backlog again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_millis(200);

/// How an `append` learns that its record is durable (or why not).
pub(crate) type Ack<E> = oneshot::Sender<Result<Arc<Record<E>>, AuditError>>;

/// What handles send to the writer.
pub(crate) enum Command<E> {
    /// An event already encoded and stamped by the caller.
    Append {
        ts_ms: i64,
        event: E,
        json: Vec<u8>,
        ack: Ack<E>,
    },
    /// Commit what came before, sync, stop, then signal `done`.
    Close { done: oneshot::Sender<()> },
}

/// Why the log cannot be written, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritable {
    /// The error of the last failed attempt, naming the file and the OS error.
    pub reason: String,
    /// When the first attempt failed (ms since the Unix epoch).
    pub since_ms: i64,
}

/// State the writer publishes to the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub last_seq: AtomicU64,
    pub batches: AtomicU64,
    /// Records enqueued and not yet written (the backlog included): the admission control's count.
    pub queued: AtomicUsize,
    /// Set while the log cannot be written; `unwritable` says why.
    pub failing: AtomicBool,
    pub unwritable: Mutex<Option<Unwritable>>,
    /// `true` while records are written: health checks follow it without polling.
    pub writable: tokio::sync::watch::Sender<bool>,
    /// Test builds: the next writes fail as on a full disk while this is set.
    #[cfg(feature = "fault-injection")]
    pub inject_full_disk: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            last_seq: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            unwritable: Mutex::new(None),
            writable: tokio::sync::watch::Sender::new(true),
            #[cfg(feature = "fault-injection")]
            inject_full_disk: AtomicBool::new(false),
        }
    }
}

impl Shared {
    fn set_unwritable(&self, reason: String) {
        let mut slot = self.unwritable.lock().unwrap_or_else(|e| e.into_inner());
        let since_ms = slot.as_ref().map_or_else(unix_ms, |u| u.since_ms);
        *slot = Some(Unwritable { reason, since_ms });
        self.failing.store(true, Ordering::Release);
        self.writable.send_replace(false);
    }

    fn set_writable(&self) {
        *self.unwritable.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.failing.store(false, Ordering::Release);
        self.writable.send_replace(true);
    }

    pub fn unwritable(&self) -> Option<Unwritable> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        self.unwritable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the writer needs to know about its files.
#[derive(Debug)]
pub(crate) struct WriterConfig {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub fsync: bool,
    /// The directory's lock, held by the writer thread until its last record is written (never read:
    /// holding it is the point).
    #[allow(dead_code)]
    pub lock: std::fs::File,
}

/// The file being appended to.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub path: PathBuf,
    file: File,
    pub len: u64,
}

impl OpenSegment {
    /// Opens an existing log file for appending after its last line.
    pub fn open_existing(path: &Path) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        let len = file.metadata().map_err(|e| AuditError::io(path, e))?.len();
        Ok(OpenSegment {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// Creates the file whose first record will be `first_seq`, durably (directory synced).
    pub fn create(dir: &Path, first_seq: u64) -> Result<Self, AuditError> {
        let path = dir.join(segment_file_name(first_seq));
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        sync_dir(dir)?;
        let len = file.metadata().map_err(|e| AuditError::io(&path, e))?.len();
        Ok(OpenSegment { path, file, len })
    }
}

/// Starts the writer thread. It stops after a `Close` command or when every sender is dropped,
/// in both cases after committing what was queued.
pub(crate) fn spawn<E: Send + Sync + 'static>(
    config: WriterConfig,
    chain: ChainState,
    last_ts_ms: i64,
    segment: OpenSegment,
    rx: Receiver<Command<E>>,
    broadcast: broadcast::Sender<Arc<Record<E>>>,
    shared: Arc<Shared>,
) -> Result<(), AuditError> {
    let dir = config.dir.clone();
    let writer = Writer {
        config,
        segment: Some(segment),
        chain,
        last_ts_ms,
        backlog: Vec::new(),
        cut_to: None,
        buf: Vec::with_capacity(256 * 1024),
        shared,
        broadcast,
    };
    std::thread::Builder::new()
        .name("audit-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| AuditError::io(dir, e))?;
    Ok(())
}

/// An event waiting to be written; `ack` is taken once its waiter has been told.
struct Pending<E> {
    ts_ms: i64,
    event: E,
    json: Vec<u8>,
    ack: Option<Ack<E>>,
}

struct Writer<E> {
    config: WriterConfig,
    /// `None` only after creating the next file failed; the next batch tries again.
    segment: Option<OpenSegment>,
    chain: ChainState,
    last_ts_ms: i64,
    /// Records that could not be written yet, oldest first: written before anything newer.
    backlog: Vec<Pending<E>>,
    /// The length the current file must be cut back to before anything more is written: set when
    /// a failed write could not be undone at once.
    cut_to: Option<u64>,
    buf: Vec<u8>,
    shared: Arc<Shared>,
    broadcast: broadcast::Sender<Arc<Record<E>>>,
}

impl<E> Writer<E> {
    fn run(mut self, rx: Receiver<Command<E>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // When an unwritable log tries its backlog next: a deadline, so that records arriving
        // meanwhile cannot put the retry off.
        let mut next_retry = Instant::now();
        loop {
            let first = if self.backlog.is_empty() {
                match rx.recv() {
                    Ok(command) => command,
                    Err(_) => break,
                }
            } else {
                let wait = next_retry.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(command) => command,
                    Err(RecvTimeoutError::Timeout) => {
                        self.retry_backlog();
                        next_retry = Instant::now() + RETRY_EVERY;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut close = push(&mut batch, first);
            while close.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => close = push(&mut batch, command),
                    Err(_) => break,
                }
            }
            if self.backlog.is_empty() {
                if !self.commit(&mut batch) {
                    next_retry = Instant::now() + RETRY_EVERY;
                }
            } else {
                // Unwritable: newer records queue behind the backlog, and their waiters hear now.
                let reason = self.reason();
                for mut pending in batch.drain(..) {
                    if let Some(ack) = pending.ack.take() {
                        let _ = ack.send(Err(AuditError::Unwritable(reason.clone())));
                    }
                    self.backlog.push(pending);
                }
                if Instant::now() >= next_retry {
                    self.retry_backlog();
                    next_retry = Instant::now() + RETRY_EVERY;
                }
            }
            if let Some(done) = close {
                self.finish();
                let _ = done.send(());
                return;
            }
        }
        self.finish();
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
        let mut hashes = Vec::with_capacity(batch.len());
        for pending in batch.iter() {
            // Stamped by the caller; never earlier than the record before it.
            last_ts_ms = pending.ts_ms.max(last_ts_ms);
            let hash = write_line(&mut self.buf, seq, last_ts_ms, &prev, &pending.json);
            hashes.push((
                seq,
                last_ts_ms,
                std::mem::replace(&mut prev, hash.clone()),
                hash,
            ));
            seq += 1;
        }
        match self.write_buf() {
            Ok(()) => {
                self.chain = ChainState {
                    next_seq: seq,
                    prev,
                };
                self.last_ts_ms = last_ts_ms;
                self.shared.last_seq.store(seq - 1, Ordering::Release);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                self.shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                for (pending, (seq, ts_ms, prev, hash)) in batch.drain(..).zip(hashes) {
                    let record = Arc::new(Record {
                        seq,
                        ts_ms,
                        prev,
                        event: pending.event,
                        hash,
                    });
                    let _ = self.broadcast.send(Arc::clone(&record));
                    if let Some(ack) = pending.ack {
                        let _ = ack.send(Ok(record));
                    }
                }
                self.rotate_if_full();
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

    /// One `write_all` and one `fdatasync`; on failure, cuts the file back to where it was.
    fn write_buf(&mut self) -> Result<(), AuditError> {
        let segment = match &mut self.segment {
            Some(segment) => segment,
            None => self
                .segment
                .insert(OpenSegment::create(&self.config.dir, self.chain.next_seq)?),
        };
        if let Some(len) = self.cut_to {
            segment
                .file
                .set_len(len)
                .map_err(|e| AuditError::io(&segment.path, e))?;
            segment.len = len;
            self.cut_to = None;
        }
        let before = segment.len;
        #[cfg(feature = "fault-injection")]
        if self.shared.inject_full_disk.load(Ordering::Acquire) {
            return Err(AuditError::io(
                &segment.path,
                std::io::Error::from_raw_os_error(28),
            ));
        }
        let result = segment.file.write_all(&self.buf).and_then(|()| {
            if self.config.fsync {
                segment.file.sync_data()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                segment.len += self.buf.len() as u64;
                Ok(())
            }
            Err(error) => {
                if let Err(cut) = segment.file.set_len(before) {
                    tracing::error!(%cut, path = %segment.path.display(), "cannot cut a failed audit write back yet; nothing more is written until it can be");
                    self.cut_to = Some(before);
                }
                Err(AuditError::io(&segment.path, error))
            }
        }
    }

    /// Starts the next file, named by the next seq, once the current one is over the limit.
    fn rotate_if_full(&mut self) {
        let full = self
            .segment
            .as_ref()
            .is_some_and(|s| s.len > self.config.max_file_bytes);
        if !full {
            return;
        }
        self.segment = None;
        match OpenSegment::create(&self.config.dir, self.chain.next_seq) {
            Ok(segment) => self.segment = Some(segment),
            Err(error) => {
                tracing::warn!(%error, "cannot start the next audit file; retrying with the next batch")
            }
        }
    }

    /// Last chance for the backlog, then a full sync (even with `fsync` off).
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
        if let Some(segment) = &self.segment
            && let Err(error) = segment.file.sync_all()
        {
            tracing::error!(%error, path = %segment.path.display(), "final sync of the audit log failed");
        }
    }
}

/// Queues an append into `batch`, or returns the close signal.
fn push<E>(batch: &mut Vec<Pending<E>>, command: Command<E>) -> Option<oneshot::Sender<()>> {
    match command {
        Command::Append {
            ts_ms,
            event,
            json,
            ack,
        } => {
            batch.push(Pending {
                ts_ms,
                event,
                json,
                ack: Some(ack),
            });
            None
        }
        Command::Close { done } => Some(done),
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
        other => AuditError::Unwritable(other.to_string()),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
