//! The PostgreSQL [`Store`]: one statement, and so one transaction, per batch, fenced.
//!
//! The statement moves the chain head from the record the batch extends to its last record, only
//! where the head's epoch is this node's (the fence: a node that took over stamped its own), and
//! inserts the batch's rows only if the head moved. No rows inserted means nothing of the batch was
//! written; the store then reads the head to say why: the lease was taken over, or an earlier
//! attempt of the same batch did commit though its answer was lost (a connection cut at the
//! commit), in which case only the rest is written, so no seq is ever written twice.

use super::PgRuntime;
use super::lease::{Lease, LeaseState, who_holds_on};
use super::link::Link;
use crate::AuditError;
use crate::store::{Batch, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The batch's statement. `\u0000` cannot be held by `jsonb`: the `jsonb` copy shows U+FFFD in
/// its place; the line, which the chain covers, keeps it.
pub(super) const APPEND: &str = r"
WITH head AS (
    UPDATE audit_chain_head SET seq = $4, hash = $5
    WHERE id = 1 AND epoch = $1 AND seq = $2 AND hash = $3
    RETURNING 1
)
INSERT INTO audit_records (seq, ts_ms, ts, line, record, kind, workflow, caller, tool, epoch)
SELECT r.seq, r.ts_ms, to_timestamp(r.ts_ms / 1000.0), r.line, j.record,
       j.record->>'kind', j.record->>'workflow_id', j.record->>'caller', j.record->>'tool', $1
FROM unnest($6::bigint[], $7::bigint[], $8::text[]) AS r(seq, ts_ms, line)
CROSS JOIN LATERAL (SELECT replace(r.line, '\u0000', '\ufffd')::jsonb AS record) AS j
WHERE EXISTS (SELECT 1 FROM head)
";

/// Writes batches to PostgreSQL while this node holds the lease.
pub(crate) struct PgStore {
    pub runtime: Arc<PgRuntime>,
    pub pool: deadpool_postgres::Pool,
    pub holder: String,
    pub lease: Lease,
    pub state: Arc<LeaseState>,
    /// A batch with no answer after this long fails (and is retried: see the module's header).
    pub write_timeout: Duration,
    /// The connection batches are written on, driven by the leader's own thread.
    pub link: Link,
}

/// A batch, owned, as the statement's parameters want it.
pub(super) struct Rows {
    prev_seq: i64,
    prev_hash: String,
    seqs: Vec<i64>,
    ts_ms: Vec<i64>,
    lines: Vec<String>,
    hashes: Vec<String>,
}

impl Rows {
    fn of(batch: &Batch<'_>) -> Self {
        let mut rows = Rows {
            prev_seq: seq_column(batch.prev_seq),
            prev_hash: batch.prev_hash.to_owned(),
            seqs: Vec::with_capacity(batch.lines.len()),
            ts_ms: Vec::with_capacity(batch.lines.len()),
            lines: Vec::with_capacity(batch.lines.len()),
            hashes: Vec::with_capacity(batch.lines.len()),
        };
        for (meta, line) in batch.each() {
            rows.seqs.push(seq_column(meta.seq));
            rows.ts_ms.push(meta.ts_ms);
            rows.lines.push(String::from_utf8_lossy(line).into_owned());
            rows.hashes.push(meta.hash.clone());
        }
        rows
    }
}

/// Seqs fit a `bigint` for the next few billion years of records; saturates beyond.
fn seq_column(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Store for PgStore {
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), AuditError> {
        if batch.lines.is_empty() {
            return Ok(());
        }
        let rows = Rows::of(batch);
        let result = self
            .link
            .append(self.lease.epoch, &rows, self.write_timeout);
        if let Err(AuditError::LostLease { .. }) = &result {
            self.state.lost.store(true, Ordering::Release);
        }
        result
    }

    /// Stops renewing, and gives the lease up unless it was lost, so another node can take over
    /// at once.
    fn finish(&mut self) {
        self.state.stop();
        if self.state.lost.load(Ordering::Acquire) {
            return;
        }
        let (pool, holder, lease) = (self.pool.clone(), self.holder.clone(), self.lease);
        let released = self.runtime.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                super::lease::release(&pool, &holder, lease),
            )
            .await
            .unwrap_or(Ok(()))
        });
        if let Err(error) = released {
            tracing::warn!(%error, "could not give the PostgreSQL store's lease up; another node takes it when it expires");
        }
    }
}

/// Writes `rows` under `epoch` with `statement` (the prepared [`APPEND`]); see the module's
/// header.
pub(super) async fn append(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    epoch: i64,
    rows: &Rows,
) -> Result<(), AuditError> {
    let failed = |e: tokio_postgres::Error| AuditError::store("writing a batch", &e);
    let mut from = 0;
    loop {
        let (prev_seq, prev_hash) = match from {
            0 => (rows.prev_seq, rows.prev_hash.as_str()),
            _ => (rows.seqs[from - 1], rows.hashes[from - 1].as_str()),
        };
        let last = rows.seqs.len() - 1;
        let inserted = client
            .execute(
                statement,
                &[
                    &epoch,
                    &prev_seq,
                    &prev_hash,
                    &rows.seqs[last],
                    &rows.hashes[last],
                    &&rows.seqs[from..],
                    &&rows.ts_ms[from..],
                    &&rows.lines[from..],
                ],
            )
            .await
            .map_err(failed)?;
        if inserted as usize == rows.seqs.len() - from {
            return Ok(());
        }
        let head = client
            .query_one(
                "SELECT seq, hash, epoch FROM audit_chain_head WHERE id = 1",
                &[],
            )
            .await
            .map_err(failed)?;
        let (head_seq, head_hash, head_epoch): (i64, String, i64) =
            (head.get(0), head.get(1), head.get(2));
        if head_epoch != epoch {
            return Err(who_holds_on(client, epoch).await);
        }
        // An earlier attempt committed the batch up to the head (its answer was lost).
        let committed = usize::try_from(head_seq - rows.prev_seq).ok();
        match committed {
            Some(done) if done > from && rows.hashes.get(done - 1) == Some(&head_hash) => {
                if done == rows.seqs.len() {
                    return Ok(());
                }
                tracing::warn!(
                    head_seq,
                    "part of an audit batch was already committed by an attempt whose answer was lost; writing the rest"
                );
                from = done;
            }
            _ => {
                return Err(AuditError::Store {
                    what: "writing a batch".into(),
                    message: format!(
                        "the chain head in the database is seq {head_seq}, but this batch extends seq {prev_seq}: the table was changed by something other than this node"
                    ),
                });
            }
        }
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use crate::GENESIS_PREV;
    use crate::pg::{PgOptions, lease, pool, schema};
    use crate::record::write_line;
    use crate::store::LineMeta;
    use crate::testing::TempPostgres;

    /// A chained batch of `n` lines after `prev_seq`/`prev_hash`: its text and its lines.
    fn lines(prev_seq: u64, prev_hash: &str, n: u64) -> (Vec<u8>, Vec<LineMeta>) {
        let (mut text, mut metas, mut prev) = (Vec::new(), Vec::new(), prev_hash.to_owned());
        for seq in prev_seq + 1..=prev_seq + n {
            let hash = write_line(
                &mut text,
                seq,
                1_000 + seq as i64,
                &prev,
                br#"{"kind":"note"}"#,
            );
            metas.push(LineMeta {
                seq,
                ts_ms: 1_000 + seq as i64,
                prev: std::mem::replace(&mut prev, hash.clone()),
                hash,
                end: text.len(),
            });
        }
        (text, metas)
    }

    async fn seqs(url: &str) -> Vec<i64> {
        let client = TempPostgres::client(url).await.unwrap();
        client
            .query("SELECT seq FROM audit_records ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// A batch whose commit went through but whose answer was lost is retried as a whole (the
    /// writer does not know); only what is missing is written, nothing twice.
    #[tokio::test]
    async fn a_retried_batch_writes_only_what_an_earlier_attempt_did_not() {
        let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
        let url = server.create_database("retried_batch").await.unwrap();
        let options = PgOptions::new(&url);
        let pool = pool(&options).unwrap();
        schema::migrate(&mut crate::pg::connect(&pool).await.unwrap())
            .await
            .unwrap();
        let (held, _) = lease::acquire(&pool, "me", "{}", options.lease_ttl, options.acquire_wait)
            .await
            .unwrap();

        let client = crate::pg::connect(&pool).await.unwrap();
        let statement = client.prepare(APPEND).await.unwrap();
        let (text, metas) = lines(0, GENESIS_PREV, 5);
        let batch = |upto: usize| Batch {
            text: &text[..metas[upto - 1].end],
            lines: &metas[..upto],
            prev_seq: 0,
            prev_hash: GENESIS_PREV,
        };
        // The first attempt committed records 1 to 3 (its answer lost); the retry holds 1 to 5.
        append(&client, &statement, held.epoch, &Rows::of(&batch(3)))
            .await
            .unwrap();
        append(&client, &statement, held.epoch, &Rows::of(&batch(5)))
            .await
            .unwrap();
        assert_eq!(seqs(&url).await, vec![1, 2, 3, 4, 5]);
        // The whole batch again: already there, nothing written.
        append(&client, &statement, held.epoch, &Rows::of(&batch(5)))
            .await
            .unwrap();
        assert_eq!(seqs(&url).await, vec![1, 2, 3, 4, 5]);

        // A batch that does not extend the head (another chain) is refused, naming the head.
        let (text, metas) = lines(0, GENESIS_PREV, 7);
        let other: Vec<LineMeta> = metas
            .into_iter()
            .map(|mut m| {
                let other = if m.hash.starts_with('0') { "1" } else { "0" };
                m.hash.replace_range(..1, other);
                m
            })
            .collect();
        let refused = append(
            &client,
            &statement,
            held.epoch,
            &Rows::of(&Batch {
                text: &text,
                lines: &other,
                prev_seq: 0,
                prev_hash: GENESIS_PREV,
            }),
        )
        .await
        .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("chain head in the database is seq 5"),
            "{refused}"
        );

        // A fenced-out epoch writes nothing and learns who holds the lease.
        let admin = TempPostgres::client(&url).await.unwrap();
        admin
            .execute("UPDATE cluster_lease SET valid_until = '-infinity'", &[])
            .await
            .unwrap();
        let (taken, _) = lease::acquire(
            &pool,
            "other",
            "{}",
            options.lease_ttl,
            options.acquire_wait,
        )
        .await
        .unwrap();
        let (text, metas) = lines(5, &metas_hash(&url).await, 1);
        let lost = append(
            &client,
            &statement,
            held.epoch,
            &Rows::of(&Batch {
                text: &text,
                lines: &metas,
                prev_seq: 5,
                prev_hash: &metas[0].prev,
            }),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&lost, AuditError::LostLease { mine, holder, now } if *mine == held.epoch && holder == "other" && *now == taken.epoch),
            "{lost}"
        );
        assert_eq!(seqs(&url).await, vec![1, 2, 3, 4, 5]);
    }

    /// The rows are read back a page at a time: a table that ends on a page's edge, and one that
    /// ends inside its third page, are read whole and verified to the head, with nothing twice.
    #[tokio::test]
    async fn a_walk_reads_every_row_whether_the_table_ends_on_a_page_edge_or_not() {
        let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
        for n in [1000_u64, 2345] {
            let url = server.create_database(&format!("paged_{n}")).await.unwrap();
            let options = PgOptions::new(&url);
            let pool = pool(&options).unwrap();
            schema::migrate(&mut crate::pg::connect(&pool).await.unwrap())
                .await
                .unwrap();
            let (held, _) =
                lease::acquire(&pool, "me", "{}", options.lease_ttl, options.acquire_wait)
                    .await
                    .unwrap();
            let client = crate::pg::connect(&pool).await.unwrap();
            let statement = client.prepare(APPEND).await.unwrap();
            let (text, metas) = lines(0, GENESIS_PREV, n);
            let rows = Rows::of(&Batch {
                text: &text,
                lines: &metas,
                prev_seq: 0,
                prev_hash: GENESIS_PREV,
            });
            append(&client, &statement, held.epoch, &rows)
                .await
                .unwrap();

            let head = crate::pg::read::read_head(&client).await.unwrap();
            let (pages, mut read) = tokio::sync::mpsc::channel(64);
            let reader = crate::pg::read_records::<serde_json::Value>(&client, &head, &pages)
                .await
                .unwrap();
            drop(pages);
            let mut seqs = Vec::new();
            while let Some(page) = read.recv().await {
                seqs.extend(page.iter().map(|record| record.seq));
            }
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{n} rows");
            assert_eq!(reader.records, n);
            assert!(reader.failure.is_none(), "{:?}", reader.failure);
        }
    }

    /// The chain head's hash.
    async fn metas_hash(url: &str) -> String {
        let client = TempPostgres::client(url).await.unwrap();
        client
            .query_one("SELECT hash FROM audit_chain_head", &[])
            .await
            .unwrap()
            .get(0)
    }
}
