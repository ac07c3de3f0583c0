//! `conductor-audit`: Conductorio's durable, tamper-evident, append-only audit log.
//!
//! Every event becomes one JSON line carrying a sequence number, a timestamp and the hash of the
//! previous line, so that [`verify_dir`] proves no line was changed, removed, inserted or reordered.
//! Concurrent appends are group-committed (one write in place and one `fdatasync` per batch, into a
//! file prepared full of zeros so that the sync is one round trip to the disk) by the caller
//! that waits first, or by a keeper thread when others queued meanwhile, so acknowledging a call
//! only after its record is durable stays cheap, and costs a lone call no thread hand-off. A log that cannot be
//! written fails closed: callers hear at once, new intents are refused ([`Admit`]), and the writer
//! retries by itself until the disk takes its bounded backlog again.
//!
//! Modules, one concept each:
//! - `record`: the line format (pure, fuzzable): [`Record`], [`parse_line`], [`line_hash`].
//! - `segment`: the files of a log directory and reading their lines (up to the zeros that end a
//!   prepared file's content).
//! - `prepare`: the next file, zero-filled and synced ahead of need, and sealing the ones left.
//! - `chain`: walking and verifying the hash chain, [`verify_dir`].
//! - `open`: start-up scan, torn-line repair and recovery.
//! - `writer`: group commit: the queue, its leaders and the keeper thread, above the seam.
//! - `health`: what the writer publishes (writable or why not, the lease, the counters).
//! - `store`: the seam: a [`Store`](store) makes one chained batch durable, all or nothing.
//! - `files`: the default store, local files (one write in place and one sync per batch).
//! - `opening`: where the writer starts, per store (the files' scan, or the rows read back).
//! - `log`: the [`AuditLog`] handle callers use; `log/standby`: a warm standby's log, which
//!   appends nothing until it takes the lease.
//! - `read`: [`read_from`], streaming records for replay and queries.
//! - [`pg`]: the PostgreSQL store: rows, a fenced lease, reading back and verifying.

mod chain;
mod error;
mod files;
mod health;
mod lock;
mod log;
mod open;
mod opening;
mod options;
pub mod pg;
mod prepare;
mod read;
mod record;
mod segment;
mod store;
/// Test builds only: a temporary PostgreSQL server for the store's tests.
#[cfg(feature = "fault-injection")]
pub mod testing;
mod writer;

pub use chain::{Anchor, VerifyReport, verify_dir, verify_dir_against};
pub use error::{AuditError, VerifyFailure};
pub use health::Unwritable;
pub use log::{Admit, AuditHealth, AuditLog, Queued, Records};
pub use open::OpenReport;
pub use options::{AuditOptions, StoreOptions};
pub use read::read_from;
pub use record::{GENESIS_PREV, LineHeader, Record, Replayed, line_hash, parse_line};
