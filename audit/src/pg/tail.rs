//! Following the log as another node writes it: the building block of a warm standby.
//!
//! One writer assigns every seq, so the table has no gaps for a reader to trip on: a follower
//! reads `WHERE seq > $last ORDER BY seq` a page at a time, checks each line against the chain
//! (the same check as start-up and `verify`), and hands the decoded records on in order, once
//! each. `LISTEN` on the channel the chain head's trigger notifies is only a wake-up; a poll every
//! [`POLL_FLOOR`] is the floor, so a lost notification (they go only to listeners connected at
//! the commit) costs latency, never a record. A lost connection is retried from where it was; a
//! broken chain ends the follow with [`AuditError::Broken`].

use super::read::{Pages, RowReader};
use super::{PgOptions, tls};
use crate::{AuditError, Record};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, mpsc};

/// The channel the chain head's trigger notifies on every batch.
pub const CHANNEL: &str = "audit_records";

/// How often a follower reads even without a notification.
pub const POLL_FLOOR: Duration = Duration::from_millis(250);

/// Where a follower starts: just after this record (`seq` 0 and the genesis hash: the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub hash: String,
}

impl Position {
    /// Before the first record.
    pub fn start() -> Self {
        Position {
            seq: 0,
            hash: crate::GENESIS_PREV.to_owned(),
        }
    }
}

/// Follows the log after `after`, sending every record (verified, in order, once) into `records`,
/// until the receiver is dropped (`Ok`) or the chain is found broken (`Err`). Connection losses are
/// retried, from where it was.
pub async fn follow<R: DeserializeOwned + Send + 'static>(
    options: PgOptions,
    after: Position,
    records: mpsc::Sender<Record<R>>,
) -> Result<(), AuditError> {
    options.validate()?;
    let mut reader = RowReader::after(after.seq, after.hash);
    let mut scratch = Vec::new();
    loop {
        let wake = Arc::new(Notify::new());
        let result = match listening_client(&options, Arc::clone(&wake)).await {
            Ok(client) => follow_on(&client, &wake, &mut reader, &records, &mut scratch).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(error @ (AuditError::Broken(_) | AuditError::Decode { .. })) => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "following the PostgreSQL audit store: retrying");
                tokio::select! {
                    () = tokio::time::sleep(POLL_FLOOR) => {}
                    () = records.closed() => return Ok(()),
                }
            }
        }
    }
}

/// Reads and sends until the receiver goes (`Ok`) or something fails.
async fn follow_on<R: DeserializeOwned>(
    client: &tokio_postgres::Client,
    wake: &Notify,
    reader: &mut RowReader,
    records: &mpsc::Sender<Record<R>>,
    scratch: &mut Vec<u8>,
) -> Result<(), AuditError> {
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| AuditError::store("listening for new records", &e))?;
    let pages = Pages::prepare(client).await?;
    loop {
        reader.more();
        while let Some(page) = reader.next_page(&pages).await? {
            for line in page {
                let (record, _) = crate::record::decode_record::<R>(line.as_bytes(), scratch)
                    .map_err(|message| AuditError::Decode {
                        file: PathBuf::from("audit_records"),
                        line: reader.chain.next_seq - 1,
                        message,
                    })?;
                if records.send(record).await.is_err() {
                    return Ok(());
                }
            }
        }
        if let Some(failure) = reader.failure.clone() {
            return Err(AuditError::Broken(failure));
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL_FLOOR) => {}
            () = records.closed() => return Ok(()),
        }
    }
}

/// A connection of its own (notifications need one), plain or over TLS as configured, whose
/// notifications (and its end) wake `wake`.
async fn listening_client(
    options: &PgOptions,
    wake: Arc<Notify>,
) -> Result<tokio_postgres::Client, AuditError> {
    let config = options.pg_config()?;
    let failed = |e: tokio_postgres::Error| AuditError::store("connecting", &e);
    match &options.ca_file {
        None => {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
            drive(connection, wake);
            Ok(client)
        }
        Some(ca_file) => {
            let (client, connection) = config.connect(tls(ca_file)?).await.map_err(failed)?;
            drive(connection, wake);
            Ok(client)
        }
    }
}

/// Drives `connection`, turning each notification into a wake-up.
fn drive<S, T>(mut connection: tokio_postgres::Connection<S, T>, wake: Arc<Notify>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    wake.notify_one();
                    return;
                }
            }
        }
    });
}
