//! The seam between the group commit and where records are kept.
//!
//! The `writer` module owns everything a store has in common: the queue, the batches and who leads
//! them, the hash chain, the backlog of an unwritable log and its retries, acknowledgements and
//! health. A [`Store`] only makes one batch of finished lines durable, all or nothing. Two
//! implementations: the `files` module (the default, local files) and the `pg` module (PostgreSQL,
//! fenced by a lease). A store never assigns a seq, never hashes and never acknowledges.

use crate::AuditError;

/// One batch of lines, chained and hashed, ready to be made durable.
pub(crate) struct Batch<'a> {
    /// Every line of the batch, each ending in `\n`, in seq order.
    pub text: &'a [u8],
    /// Each line's place in the chain and where it ends in `text`.
    pub lines: &'a [LineMeta],
    /// The seq of the record before the batch (0 when the batch starts the log).
    pub prev_seq: u64,
    /// The hash of that record (the genesis `prev` when the batch starts the log).
    pub prev_hash: &'a str,
}

/// A line of a [`Batch`].
#[derive(Debug, Clone)]
pub(crate) struct LineMeta {
    pub seq: u64,
    pub ts_ms: i64,
    /// The record's `prev`: the hash of the line before it.
    pub prev: String,
    pub hash: String,
    /// Where the line (its `\n` included) ends in [`Batch::text`].
    pub end: usize,
}

impl Batch<'_> {
    /// The seq of the first line.
    pub fn first_seq(&self) -> u64 {
        self.prev_seq + 1
    }

    /// Each line's metadata with its text (without the `\n`).
    pub fn each(&self) -> impl Iterator<Item = (&LineMeta, &[u8])> {
        let mut start = 0;
        self.lines.iter().map(move |meta| {
            let line = &self.text[start..meta.end.saturating_sub(1).max(start)];
            start = meta.end;
            (meta, line)
        })
    }
}

/// Where a log's records are made durable. Called by the batch's leader only, one batch at a
/// time; it blocks its thread until the batch is durable or has failed.
pub(crate) trait Store: Send {
    /// Makes `batch` durable, all of it or none of it. On `Err` nothing of the batch may be
    /// readable later as part of the log, so that the same seqs can be written again.
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), AuditError>;

    /// After a batch was written: housekeeping (files roll over to the next one). `next_seq` is
    /// the seq the next batch starts at.
    fn written(&mut self, next_seq: u64) {
        let _ = next_seq;
    }

    /// The log is closing and everything was written (or given up): make it all durable, let go
    /// of what the store holds.
    fn finish(&mut self);
}
