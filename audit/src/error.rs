//! Errors of the audit log, and the description of where a chain is broken.
//!
//! Messages name the file (and line) involved and say what to do, because the reader is usually an
//! operator looking at a log that will not open.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where and how the hash chain is broken: the first bad line found.
///
/// It is a value (not only an error) because `recover` reports it after moving the damage aside,
/// and `verify_dir` reports it without failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The file holding the first bad line.
    pub file: PathBuf,
    /// The bad line's number within `file`, counting from 1.
    pub line: u64,
    /// The first bad sequence number: the seq expected at that position.
    pub seq: u64,
    /// What is wrong, e.g. "hash mismatch: line changed".
    pub message: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (expected seq {}): {}",
            self.file.display(),
            self.line,
            self.seq,
            self.message
        )
    }
}

/// Everything that can go wrong with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file operation failed; `path` is the file or directory involved.
    #[error("audit log I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The chain does not verify. Nothing was changed on disk; open with `recover: true` to move the
    /// damaged part aside and continue from the last good record.
    #[error(
        "audit log chain is broken at {0}; inspect the file, or open the log in recovery mode (the orchestrator's --audit-recover) to move the damaged part aside"
    )]
    Broken(VerifyFailure),
    /// Another process (or another open log in this one) is writing this directory.
    #[error(
        "audit log {} is in use by another process (its .lock is held); stop that orchestrator or use another --audit-dir",
        .0.display()
    )]
    Locked(PathBuf),
    /// The log was closed (or its writer stopped); no more records can be appended.
    #[error("audit log is closed; no more records can be appended")]
    Closed,
    /// The event could not be turned into a JSON object with no reserved keys.
    #[error("cannot encode audit event: {0}")]
    Encode(#[source] serde_json::Error),
    /// A line of the chain is intact but its event cannot be decoded into the event type (for
    /// example a `kind` written by a newer version).
    #[error(
        "cannot decode audit record at {}:{line}: {message}; is this log from a newer version?",
        file.display()
    )]
    Decode {
        file: PathBuf,
        line: u64,
        message: String,
    },
    /// An option is out of range.
    #[error("invalid audit options: {0}")]
    InvalidOptions(String),
    /// The log cannot be written now (a full disk, a read-only file system): the record was not
    /// made durable. The writer keeps what it was given and retries by itself; new intents are
    /// refused until it can write again.
    #[error(
        "the audit log cannot be written ({0}); nothing new runs until it can, and the orchestrator retries by itself"
    )]
    Unwritable(String),
    /// This node is a warm standby: it appends nothing; the message names the active node.
    #[error("{0}")]
    Standby(String),
    /// Too many records wait to be written (the disk is slower than the calls): a new intent is
    /// refused rather than queued without bound.
    #[error("the audit log has {0} records waiting to be written; try again shortly")]
    Backlogged(usize),
    /// The PostgreSQL store cannot be reached or refused a statement; `what` says what was being
    /// done.
    #[error("the PostgreSQL audit store failed while {what}: {message}")]
    Store { what: String, message: String },
    /// The database holds a schema written by a newer version of the orchestrator.
    #[error(
        "the PostgreSQL audit store has schema version {found}, newer than the {known} this orchestrator knows; upgrade the orchestrator (or point it at another database)"
    )]
    SchemaTooNew { found: i32, known: i32 },
    /// Another node holds the store's lease and it did not expire while this one waited.
    #[error(
        "another orchestrator ({holder}, advertising {advertise}) holds the PostgreSQL store's lease, valid for {valid_for_ms} ms more; only one node writes at a time: stop it, or wait for its lease to expire"
    )]
    LeaseHeld {
        holder: String,
        advertise: String,
        valid_for_ms: i64,
    },
    /// This node's lease was taken over: another node writes the log now. Nothing of the batch was
    /// written, and nothing more will be by this node.
    #[error(
        "this orchestrator lost the PostgreSQL store's lease (epoch {mine}) to {holder} (epoch {now}); it writes nothing more and admits no new calls: restart it to follow the new writer"
    )]
    LostLease { mine: i64, holder: String, now: i64 },
    /// This node's lease ran out by its own clock before a call it had recorded could be sent to
    /// its server (the node was paused or cut off in between): the call is not sent, and the node
    /// that takes over records it as interrupted.
    #[error(
        "this orchestrator's lease on the PostgreSQL store (epoch {epoch}) ran out before the call could be sent to its server (the node was paused or cut off from the store): the call was not run; the node that takes over records it as interrupted"
    )]
    LeaseRanOut { epoch: i64 },
    /// A background task died; this is a bug.
    #[error("internal error in the audit log (a bug): {0}")]
    Internal(String),
}

impl AuditError {
    /// A PostgreSQL error while doing `what`, with the server's own message when it sent one.
    pub(crate) fn store(what: impl Into<String>, error: &tokio_postgres::Error) -> Self {
        let message = match error.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => error.to_string(),
        };
        AuditError::Store {
            what: what.into(),
            message,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}
