//! Reading the rows back in seq order, checking the hash chain on each line's exact text as it
//! goes: for start-up (every record replayed through the same decoder as the files') and for
//! `audit verify` against the database. Reads only.

use super::{PgOptions, connect, pool};
use crate::chain::{Anchor, ChainState, VerifyReport};
use crate::record::{fast_header, parse_line};
use crate::{AuditError, VerifyFailure};
use std::path::PathBuf;

/// Rows read per query: bounds memory whatever the table's size.
const PAGE: i64 = 1000;

/// The page query, prepared once on a connection: each page is then one round trip.
pub(crate) struct Pages<'c> {
    client: &'c tokio_postgres::Client,
    statement: tokio_postgres::Statement,
}

impl<'c> Pages<'c> {
    pub async fn prepare(client: &'c tokio_postgres::Client) -> Result<Self, AuditError> {
        let statement = client
            .prepare(
                "SELECT seq, ts_ms, line FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(|e| AuditError::store("reading the audit records", &e))?;
        Ok(Pages { client, statement })
    }
}

/// The chain head row: the last record written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Where the rows are, as a failure names it.
const TABLE: &str = "audit_records";

/// Walks `audit_records` a page at a time, verifying each line against the chain.
pub(crate) struct RowReader {
    pub chain: ChainState,
    pub records: u64,
    pub last_ts_ms: i64,
    /// The first bad line; the walk stops there.
    pub failure: Option<VerifyFailure>,
    done: bool,
}

impl RowReader {
    pub fn new() -> Self {
        RowReader {
            chain: ChainState::genesis(),
            records: 0,
            last_ts_ms: 0,
            failure: None,
            done: false,
        }
    }

    /// A reader that continues the chain after record `seq` with `hash` (a follower's).
    pub fn after(seq: u64, hash: String) -> Self {
        RowReader {
            chain: ChainState {
                next_seq: seq + 1,
                prev: hash,
            },
            ..RowReader::new()
        }
    }

    /// Reads on past the end found so far (a follower's next round), unless the chain broke.
    pub fn more(&mut self) {
        self.done = self.failure.is_some();
    }

    /// The next page of verified lines (seq order), or `None` once the table is read or a bad line
    /// was found (`failure` says which). A page shorter than a whole one was the table's end: the
    /// walk is done without asking again (a follower asks again when woken).
    pub async fn next_page(
        &mut self,
        pages: &Pages<'_>,
    ) -> Result<Option<Vec<String>>, AuditError> {
        if self.done {
            return Ok(None);
        }
        let after = i64::try_from(self.chain.next_seq - 1).unwrap_or(i64::MAX);
        let rows = pages
            .client
            .query(&pages.statement, &[&after, &PAGE])
            .await
            .map_err(|e| AuditError::store("reading the audit records", &e))?;
        if rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX) {
            self.done = true;
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut page = Vec::with_capacity(rows.len());
        for row in rows {
            let (seq, ts_ms, line): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
            if let Err(message) = self.check(seq, line.as_bytes()) {
                self.failure = Some(VerifyFailure {
                    file: PathBuf::from(TABLE),
                    line: u64::try_from(seq).unwrap_or(0),
                    seq: self.chain.next_seq,
                    message,
                });
                self.done = true;
                break;
            }
            self.records += 1;
            self.last_ts_ms = ts_ms;
            page.push(line);
        }
        Ok((!page.is_empty()).then_some(page))
    }

    /// Checks one row's line against the chain (and its `seq` column against its text), and
    /// advances the chain past it.
    fn check(&mut self, seq: i64, line: &[u8]) -> Result<(), String> {
        let header = fast_header(line).map_or_else(|| parse_line(line), Ok)?;
        if i64::try_from(header.seq) != Ok(seq) {
            return Err(format!(
                "the row's seq column says {seq} but its line says {}: the row was changed",
                header.seq
            ));
        }
        self.chain.check(line, &header)?;
        self.chain.advance(&header);
        Ok(())
    }

    /// After the last page: the chain must end exactly at the head row, or records were removed
    /// from the end (or written around the fence).
    pub fn check_head(&mut self, head: &Head) {
        if self.failure.is_some() {
            return;
        }
        let last = self.chain.next_seq - 1;
        let message = if last < head.seq {
            format!(
                "the records end at seq {last} but the chain head says seq {}: records were removed from the end",
                head.seq
            )
        } else if last > head.seq {
            format!(
                "the records go on to seq {last} past the chain head's seq {}: written around the fence",
                head.seq
            )
        } else if last > 0 && head.hash != self.chain.prev {
            format!("seq {last} does not have the chain head's hash: the record was rewritten")
        } else {
            return;
        };
        self.failure = Some(VerifyFailure {
            file: PathBuf::from(TABLE),
            line: last.min(head.seq) + 1,
            seq: last.min(head.seq) + 1,
            message,
        });
    }
}

/// The chain head row.
pub(crate) async fn read_head(client: &tokio_postgres::Client) -> Result<Head, AuditError> {
    let row = client
        .query_one("SELECT seq, hash FROM audit_chain_head WHERE id = 1", &[])
        .await
        .map_err(|e| AuditError::store("reading the chain head", &e))?;
    Ok(Head {
        seq: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        hash: row.get(1),
    })
}

/// Reads every record as `R` into `pages`, a page at a time, verifying the chain up to `head`.
/// Returns the reader, whose `failure` says where the chain is broken, if it is.
pub(crate) async fn read_records<R: serde::de::DeserializeOwned>(
    client: &tokio_postgres::Client,
    head: &Head,
    pages: &tokio::sync::mpsc::Sender<Vec<crate::Record<R>>>,
) -> Result<RowReader, AuditError> {
    let mut reader = RowReader::new();
    let mut scratch = Vec::new();
    let paging = Pages::prepare(client).await?;
    while let Some(page) = reader.next_page(&paging).await? {
        let mut records = Vec::with_capacity(page.len());
        for line in page {
            let (record, _) = crate::record::decode_record::<R>(line.as_bytes(), &mut scratch)
                .map_err(|message| AuditError::Decode {
                    file: PathBuf::from(TABLE),
                    line: 0,
                    message,
                })?;
            records.push(record);
        }
        pages.send(records).await.map_err(|_| AuditError::Closed)?;
    }
    reader.check_head(head);
    Ok(reader)
}

/// Verifies the chain the database holds, offline (no orchestrator needed): every line's hash
/// and place, and that the records end at the chain head. With an `anchor`, also that the record
/// it names is still there with its hash. `Err` only when the database cannot be read.
pub async fn verify_postgres(
    options: &PgOptions,
    anchor: Option<&Anchor>,
) -> Result<VerifyReport, AuditError> {
    options.validate()?;
    let pool = pool(options)?;
    let client = connect(&pool).await?;
    super::schema::check_version(&client).await?;
    let head = read_head(&client).await?;
    let mut reader = RowReader::new();
    let mut anchored = None;
    let pages = Pages::prepare(&client).await?;
    while let Some(page) = reader.next_page(&pages).await? {
        if let Some(anchor) = anchor
            && anchored.is_none()
        {
            let first = reader.chain.next_seq - page.len() as u64;
            if let Some(line) = anchor
                .seq
                .checked_sub(first)
                .and_then(|i| page.get(usize::try_from(i).ok()?))
            {
                anchored = fast_header(line.as_bytes())
                    .map_or_else(|| parse_line(line.as_bytes()).ok(), Some)
                    .map(|h| h.hash == anchor.hash);
            }
        }
    }
    reader.check_head(&head);
    Ok(crate::chain::report(
        reader.records,
        0,
        reader.failure,
        None,
        reader.chain.prev,
        anchor,
        anchored,
    ))
}

/// Reads the store's records for queries and watchers, beside the live writer.
#[derive(Clone)]
pub(crate) struct PgReader {
    pub runtime: std::sync::Arc<super::PgRuntime>,
    pub pool: deadpool_postgres::Pool,
}

impl PgReader {
    /// The records with `seq >= from_seq`, in order, a page at a time. Blocks its thread on each
    /// page: iterate it off the async runtime (as the files' reader is).
    pub fn read_from<R: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        from_seq: u64,
    ) -> PgRecords<R> {
        PgRecords {
            reader: self.clone(),
            next: from_seq.max(1),
            page: std::collections::VecDeque::new(),
            done: false,
            scratch: Vec::new(),
        }
    }
}

/// The iterator of [`PgReader::read_from`]: after an error it ends.
pub(crate) struct PgRecords<R> {
    reader: PgReader,
    next: u64,
    page: std::collections::VecDeque<crate::Record<R>>,
    done: bool,
    scratch: Vec<u8>,
}

impl<R: serde::de::DeserializeOwned + Send + 'static> PgRecords<R> {
    fn fill(&mut self) -> Result<(), AuditError> {
        let pool = self.reader.pool.clone();
        let from = i64::try_from(self.next).unwrap_or(i64::MAX);
        let lines = self.reader.runtime.block_on(async move {
            let client = connect(&pool).await?;
            let rows = client
                .query(
                    "SELECT line FROM audit_records WHERE seq >= $1 ORDER BY seq LIMIT $2",
                    &[&from, &PAGE],
                )
                .await
                .map_err(|e| AuditError::store("reading the audit records", &e))?;
            Ok(rows
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>())
        })?;
        if (lines.len() as i64) < PAGE {
            self.done = true;
        }
        for line in lines {
            let (record, _) = crate::record::decode_record::<R>(line.as_bytes(), &mut self.scratch)
                .map_err(|message| AuditError::Decode {
                    file: PathBuf::from(TABLE),
                    line: self.next,
                    message,
                })?;
            self.next = record.seq + 1;
            self.page.push_back(record);
        }
        Ok(())
    }
}

impl<R: serde::de::DeserializeOwned + Send + 'static> Iterator for PgRecords<R> {
    type Item = Result<crate::Record<R>, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty()
            && !self.done
            && let Err(error) = self.fill()
        {
            self.done = true;
            return Some(Err(error));
        }
        self.page.pop_front().map(Ok)
    }
}
