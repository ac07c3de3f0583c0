//! `conductor-audit`: Conductorio's durable, tamper-evident, append-only audit log.
//!
//! Every event becomes one JSON line carrying a sequence number, a timestamp and the hash of the
//! previous line, so that [`verify_dir`] proves no line was changed, removed, inserted or reordered.
//! A single writer thread group-commits concurrent appends (one write and one `fdatasync` per batch),
//! so acknowledging a call only after its record is durable stays cheap.
//!
//! Modules, one concept each:
//! - `record`: the line format (pure, fuzzable): [`Record`], [`parse_line`], [`line_hash`].
//! - `segment`: the files of a log directory and reading their lines.
//! - `chain`: walking and verifying the hash chain, [`verify_dir`].
//! - `open`: start-up scan, torn-line repair and recovery.
//! - `writer`: the group-commit writer thread.
//! - `log`: the [`AuditLog`] handle callers use.
//! - `read`: [`read_from`], streaming records for replay and queries.
//! - `tagged`: [`KindTagged`], events as `kind`-tagged objects read in one pass.
//! - `digest`: [`approval_digest`], what an approval covers (RFC 8785 canonical JSON).

mod chain;
mod digest;
mod error;
mod lock;
mod log;
mod open;
mod options;
mod read;
mod record;
mod segment;
mod tagged;
mod writer;

pub use chain::{VerifyReport, verify_dir};
pub use digest::{approval_digest, approval_digest_of_text};
pub use error::{AuditError, VerifyFailure};
pub use log::AuditLog;
pub use open::OpenReport;
pub use options::AuditOptions;
pub use read::read_from;
pub use record::{GENESIS_PREV, LineHeader, Record, line_hash, parse_line};
pub use tagged::{KIND, KindTagged};
