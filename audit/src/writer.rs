//! The group-commit writer: one OS thread that owns the current file.
//!
//! It takes every queued append (up to [`MAX_BATCH`]) at once, chains and hashes them, writes them
//! with one `write_all` and makes them durable with one `fdatasync`, then acknowledges and
//! publishes them. It must never leave a partial line behind a failed batch, and never run on (or
//! block) a tokio worker.

use crate::chain::ChainState;
use crate::record::write_line;
use crate::segment::{segment_file_name, sync_dir};
use crate::{AuditError, Record};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Most appends in one batch: bounds the write size and the latency of the first waiter.
pub(crate) const MAX_BATCH: usize = 1024;

/// How an `append` learns that its record is durable (or why not).
pub(crate) type Ack<E> = oneshot::Sender<Result<Arc<Record<E>>, AuditError>>;

/// What handles send to the writer.
pub(crate) enum Command<E> {
    /// An event already encoded by the caller; `ack` is `None` for `submit`.
    Append {
        event: E,
        json: Vec<u8>,
        ack: Option<Ack<E>>,
    },
    /// Commit what came before, sync, stop, then signal `done`.
    Close { done: oneshot::Sender<()> },
}

/// Counters the writer publishes to the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub last_seq: AtomicU64,
    pub batches: AtomicU64,
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
    rx: mpsc::Receiver<Command<E>>,
    broadcast: broadcast::Sender<Arc<Record<E>>>,
    shared: Arc<Shared>,
) -> Result<(), AuditError> {
    let dir = config.dir.clone();
    let writer = Writer {
        config,
        segment: Some(segment),
        chain,
        last_ts_ms,
        retry: Vec::new(),
        failed: None,
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

/// An event waiting to be written.
struct Pending<E> {
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
    /// Submitted events of a failed batch: written first in the next batch, so that a later
    /// successful `append` still implies every earlier `submit` is durable.
    retry: Vec<Pending<E>>,
    /// Set when a failed batch could not be cut back off the file; writing more would bury a
    /// partial line in the chain.
    failed: Option<String>,
    buf: Vec<u8>,
    shared: Arc<Shared>,
    broadcast: broadcast::Sender<Arc<Record<E>>>,
}

impl<E> Writer<E> {
    fn run(mut self, mut rx: mpsc::Receiver<Command<E>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            batch.append(&mut self.retry);
            let mut close = push(&mut batch, first);
            while close.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(command) => close = push(&mut batch, command),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
            if let Some(done) = close {
                self.finish();
                let _ = done.send(());
                return;
            }
        }
        self.finish();
    }

    /// Writes one batch and tells every waiter the outcome.
    fn commit(&mut self, batch: &mut Vec<Pending<E>>) {
        if batch.is_empty() {
            return;
        }
        if let Some(reason) = &self.failed {
            let lost = batch.iter().filter(|p| p.ack.is_none()).count();
            if lost > 0 {
                tracing::error!(
                    lost,
                    "audit writer has failed; submitted events were not written"
                );
            }
            for pending in batch.drain(..) {
                if let Some(ack) = pending.ack {
                    let _ = ack.send(Err(AuditError::WriterFailed(reason.clone())));
                }
            }
            return;
        }
        let ts_ms = unix_ms().max(self.last_ts_ms);
        let mut seq = self.chain.next_seq;
        let mut prev = self.chain.prev.clone();
        self.buf.clear();
        let mut written = Vec::with_capacity(batch.len());
        for pending in batch.drain(..) {
            let hash = write_line(&mut self.buf, seq, ts_ms, &prev, &pending.json);
            let record = Record {
                seq,
                ts_ms,
                prev: std::mem::replace(&mut prev, hash.clone()),
                event: pending.event,
                hash,
            };
            written.push((record, pending.json, pending.ack));
            seq += 1;
        }
        match self.write_buf() {
            Ok(()) => {
                self.chain = ChainState {
                    next_seq: seq,
                    prev,
                };
                self.last_ts_ms = ts_ms;
                self.shared.last_seq.store(seq - 1, Ordering::Release);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                for (record, _, ack) in written {
                    let record = Arc::new(record);
                    let _ = self.broadcast.send(Arc::clone(&record));
                    if let Some(ack) = ack {
                        let _ = ack.send(Ok(record));
                    }
                }
                self.rotate_if_full();
            }
            Err(error) => {
                tracing::error!(%error, records = written.len(), "audit batch failed; will retry with the next batch");
                for (record, json, ack) in written {
                    match ack {
                        Some(ack) => {
                            let _ = ack.send(Err(duplicate(&error)));
                        }
                        None => self.retry.push(Pending {
                            event: record.event,
                            json,
                            ack: None,
                        }),
                    }
                }
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
        let before = segment.len;
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
                    self.failed = Some(format!(
                        "writing {} failed ({error}) and cutting it back to {before} bytes failed too ({cut})",
                        segment.path.display()
                    ));
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

    /// Last chance for retried submits, then a full sync (even with `fsync` off).
    fn finish(&mut self) {
        if !self.retry.is_empty() {
            let mut batch = std::mem::take(&mut self.retry);
            self.commit(&mut batch);
            if !self.retry.is_empty() {
                tracing::error!(
                    lost = self.retry.len(),
                    "audit writer stopped with submitted events it could not write"
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
        Command::Append { event, json, ack } => {
            batch.push(Pending { event, json, ack });
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
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => AuditError::WriterFailed(other.to_string()),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
