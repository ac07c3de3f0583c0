//! Options of an audit log, checked once before anything touches the disk.

use crate::AuditError;
use crate::pg::PgOptions;
use std::path::PathBuf;
use std::time::Duration;

/// How to open an audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The directory holding the `audit-<seq>.jsonl` files; created if missing.
    pub dir: PathBuf,
    /// A file is closed and the next one started once a batch leaves it larger than this, so that
    /// old files can be archived and `read_from` can skip them whole. Files are prepared (zero-filled)
    /// ahead of need at sizes doubling from 1 MiB up to this (at most 64 MiB), and a file is also
    /// closed when its prepared room is nearly used; a closed file is cut to its content.
    pub max_file_bytes: u64,
    /// `fdatasync` every batch before acknowledging it. Turn off only for tests and benchmarks:
    /// without it an acknowledged record can be lost in a crash.
    pub fsync: bool,
    /// On a broken chain, move the damaged part aside and continue instead of failing to open.
    pub recover: bool,
    /// Records that may wait to be written before new intents are refused (admission control; see
    /// [`crate::AuditLog::enqueue`]).
    pub channel_capacity: usize,
    /// Records a subscriber may fall behind before it gets `RecvError::Lagged`.
    pub broadcast_capacity: usize,
    /// Longest the keeper waits for more records before it commits a batch that callers said is
    /// worth growing ([`crate::Queued::by_keeper`]): one sync then serves more records, at the
    /// cost of at most this much latency for the records already queued.
    pub gather_for: Duration,
    /// A write and sync that has not returned after this long means a stalled disk: the log counts
    /// as unwritable (new intents refused, health says why) until it returns.
    pub stall_after: Duration,
    /// Where the records are kept: files in `dir` (the default), or PostgreSQL.
    pub store: StoreOptions,
}

/// Where an audit log keeps its records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreOptions {
    /// Local files in [`AuditOptions::dir`], one writer per directory (its `.lock`).
    #[default]
    Files,
    /// Rows in PostgreSQL, one writer at a time by a fenced lease; `dir` still holds local
    /// secrets beside the log (such as the MCP front's handle key), never records.
    Postgres(PgOptions),
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            dir: PathBuf::from("audit_logs"),
            max_file_bytes: 64 * 1024 * 1024,
            fsync: true,
            recover: false,
            channel_capacity: 4096,
            broadcast_capacity: 4096,
            gather_for: Duration::from_micros(300),
            stall_after: Duration::from_secs(5),
            store: StoreOptions::Files,
        }
    }
}

impl AuditOptions {
    /// Options for `dir` with every other setting at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AuditOptions {
            dir: dir.into(),
            ..AuditOptions::default()
        }
    }

    /// Rejects values tokio's channels would panic on, or that would make one file per record.
    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        if self.max_file_bytes == 0 {
            return Err(AuditError::InvalidOptions(
                "max_file_bytes must be greater than zero".into(),
            ));
        }
        if self.channel_capacity == 0 {
            return Err(AuditError::InvalidOptions(
                "channel_capacity must be greater than zero".into(),
            ));
        }
        if self.stall_after.is_zero() {
            return Err(AuditError::InvalidOptions(
                "stall_after must be longer than zero".into(),
            ));
        }
        if self.broadcast_capacity == 0 {
            return Err(AuditError::InvalidOptions(
                "broadcast_capacity must be greater than zero".into(),
            ));
        }
        if let StoreOptions::Postgres(pg) = &self.store {
            pg.validate()?;
        }
        Ok(())
    }
}
