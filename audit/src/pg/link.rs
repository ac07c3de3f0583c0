//! The writer's own connection, driven by the thread that writes.
//!
//! A batch's leader blocks its thread until the batch is committed. Handing the statement to
//! another thread (a runtime worker driving a pooled connection) and waiting there for the answer
//! to be handed back costs two thread wake-ups per batch, and on an idle virtual machine a
//! wake-up can cost more than PostgreSQL's commit itself (bench/RESULTS.md, figure 9). So the
//! writer keeps one connection of its own, on a single-threaded runtime that the leader drives
//! while it waits: the statement goes out on the socket, and the answer comes in, on the leader's
//! thread. One leader at a time (the group commit's rule) is what makes one connection enough.

use super::PgOptions;
use super::append::{APPEND, Rows, append};
use crate::AuditError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// What a connection's I/O is, whatever its TLS: it ends when the connection does.
type Driven = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// The writer's connection, opened on first use and again after any failure.
pub(crate) struct Link {
    options: PgOptions,
    /// Created on the first write (always on a thread that may block), never inside a task.
    runtime: Option<tokio::runtime::Runtime>,
    open: Option<Open>,
}

/// An open connection: the client, the batch's statement prepared on it, and its I/O.
struct Open {
    client: tokio_postgres::Client,
    statement: tokio_postgres::Statement,
    driven: Driven,
}

impl Link {
    pub(super) fn new(options: &PgOptions) -> Self {
        Link {
            options: options.clone(),
            runtime: None,
            open: None,
        }
    }

    /// Appends `rows` under `epoch` (see [`append`]) on this thread, opening the connection
    /// first if need be, for at most `timeout`. On any failure the connection is closed, to be
    /// opened anew by the next batch: one that failed mid-statement is in no known state.
    pub(super) fn append(
        &mut self,
        epoch: i64,
        rows: &Rows,
        timeout: Duration,
    ) -> Result<(), AuditError> {
        let Link {
            options,
            runtime,
            open,
        } = self;
        let runtime = match runtime {
            Some(runtime) => runtime,
            None => runtime.insert(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        AuditError::Internal(format!(
                            "cannot start the PostgreSQL writer's runtime: {e}"
                        ))
                    })?,
            ),
        };
        let work = async {
            let appended = tokio::time::timeout(timeout, async {
                if let Some(link) = open.as_mut()
                    && link.ended().await
                {
                    *open = None;
                }
                let Open {
                    client,
                    statement,
                    driven,
                } = match open {
                    Some(open) => open,
                    None => open.insert(Open::connect(options).await?),
                };
                tokio::select! {
                    biased;
                    done = append(client, statement, epoch, rows) => done,
                    ended = driven.as_mut() => Err(closed("writing a batch", ended)),
                }
            })
            .await;
            appended.unwrap_or_else(|_| {
                Err(AuditError::Store {
                    what: "writing a batch".into(),
                    message: format!("no answer within {timeout:?}"),
                })
            })
        };
        // A leader on a multi-threaded runtime's worker commits with the worker handed off
        // (`Core::lead_once`), where another runtime may be driven, as it may on a thread of no
        // runtime (the keeper). A task of a single-threaded runtime may not: it hands the batch
        // to a thread of its own.
        let result = if tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
        {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| runtime.block_on(work))
                    .join()
                    .unwrap_or_else(|_| {
                        Err(AuditError::Internal(
                            "the PostgreSQL writer's thread panicked".into(),
                        ))
                    })
            })
        } else {
            runtime.block_on(work)
        };
        if result.is_err() {
            self.open = None;
        }
        result
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.open = None;
        // A log may be dropped inside a task (a failed open): never block there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Open {
    /// Whether the connection ended since the last batch (the server closed it, or restarted).
    /// It is driven only while a batch is written, so what happened to it meanwhile is read now:
    /// the yield lets the runtime take in its socket's events, one poll of its I/O acts on them.
    /// A batch then goes out on a new connection instead of failing on a dead one.
    async fn ended(&mut self) -> bool {
        tokio::task::yield_now().await;
        std::future::poll_fn(|cx| std::task::Poll::Ready(self.driven.as_mut().poll(cx).is_ready()))
            .await
    }

    async fn connect(options: &PgOptions) -> Result<Open, AuditError> {
        let failed = |e: tokio_postgres::Error| AuditError::store("connecting", &e);
        let config = options.pg_config()?;
        let (client, mut driven): (_, Driven) = match &options.ca_file {
            None => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                (client, Box::pin(connection))
            }
            Some(ca_file) => {
                let (client, connection) =
                    config.connect(super::tls(ca_file)?).await.map_err(failed)?;
                (client, Box::pin(connection))
            }
        };
        let statement = tokio::select! {
            biased;
            prepared = client.prepare(APPEND) => prepared.map_err(failed)?,
            ended = driven.as_mut() => return Err(closed("connecting", ended)),
        };
        Ok(Open {
            client,
            statement,
            driven,
        })
    }
}

/// The error for a connection whose I/O ended while `what` waited on it.
fn closed(what: &str, ended: Result<(), tokio_postgres::Error>) -> AuditError {
    match ended {
        Ok(()) => AuditError::Store {
            what: what.into(),
            message: "the server closed the connection".into(),
        },
        Err(e) => AuditError::store(what, &e),
    }
}
