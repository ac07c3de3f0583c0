//! What a warm standby needs of the store beside [`follow`](super::follow): a reader for queries
//! (the same as the active node's), a store that never writes, and a look at the lease and the
//! chain head (who is active, where it can be reached, how far the head is).
//!
//! Until it takes the lease over, a standby never writes a record: the only row it writes is its
//! own report in `cluster_nodes` (see `nodes`).

use super::lease::{Lease, Renewal, acquire};
use super::{LeaseState, PgOptions, PgReader, PgRuntime, PgStore, connect, pool};
use crate::AuditError;
use crate::store::{Batch, Store};

/// The lease row and the chain head, as one read sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The active node's name (empty when no node ever took the lease).
    pub holder: String,
    /// Its advertised addresses, JSON object text (`{"grpc": …, "http": …}`).
    pub advertise: String,
    pub epoch: i64,
    /// How long the lease is still valid by the database's clock (negative once expired).
    pub valid_for_ms: i64,
    /// The seq of the last committed record.
    pub head_seq: u64,
}

/// The store's side of a standby: reads, and the lease and head on demand.
#[derive(Clone)]
pub(crate) struct StandbyStore {
    pub reader: PgReader,
}

impl StandbyStore {
    pub fn open(options: &PgOptions) -> Result<Self, AuditError> {
        options.validate()?;
        Ok(StandbyStore {
            reader: PgReader {
                runtime: PgRuntime::start()?,
                pool: pool(options)?,
            },
        })
    }

    /// Reads the lease row and the chain head in one statement.
    pub async fn lease(&self) -> Result<LeaseView, AuditError> {
        let pool = self.reader.pool.clone();
        let (done, answer) = tokio::sync::oneshot::channel();
        self.reader.runtime.spawn(async move {
            let _ = done.send(read_lease(&pool).await);
        });
        answer.await.map_err(|_| {
            AuditError::Internal("reading the lease stopped without an answer".into())
        })?
    }
}

pub(super) async fn read_lease(pool: &deadpool_postgres::Pool) -> Result<LeaseView, AuditError> {
    let client = connect(pool).await?;
    let row = client
        .query_one(
            "SELECT l.holder, l.advertise::text, l.epoch,
                    GREATEST(LEAST(EXTRACT(EPOCH FROM (l.valid_until - NOW())) * 1000,
                                   9.0e15), -9.0e15)::bigint,
                    h.seq
             FROM cluster_lease l, audit_chain_head h WHERE l.id = 1 AND h.id = 1",
            &[],
        )
        .await
        .map_err(|e| AuditError::store("reading the lease", &e))?;
    Ok(LeaseView {
        holder: row.get(0),
        advertise: row.get(1),
        epoch: row.get(2),
        valid_for_ms: row.get(3),
        head_seq: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
    })
}

/// The lease a standby took once the active node's had expired, and the chain head under it
/// (which nobody else can move now).
#[derive(Debug)]
pub struct TakenLease {
    lease: Lease,
    head_seq: u64,
    head_hash: String,
}

impl TakenLease {
    /// The seq of the last record: the standby applies up to it before it writes.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    pub(crate) fn chain(&self) -> crate::chain::ChainState {
        crate::chain::ChainState {
            next_seq: self.head_seq + 1,
            prev: self.head_hash.clone(),
        }
    }
}

impl StandbyStore {
    /// Takes the lease if it is free or expired (no waiting).
    pub async fn take_lease(&self, options: &PgOptions) -> Result<TakenLease, AuditError> {
        let (pool, options) = (self.reader.pool.clone(), options.clone());
        let (done, answer) = tokio::sync::oneshot::channel();
        self.reader.runtime.spawn(async move {
            let taken = acquire(
                &pool,
                &options.holder,
                &options.advertise,
                options.lease_ttl,
                std::time::Duration::ZERO,
            )
            .await
            .map(|(lease, head)| TakenLease {
                lease,
                head_seq: head.seq,
                head_hash: head.hash,
            });
            let _ = done.send(taken);
        });
        answer.await.map_err(|_| {
            AuditError::Internal("taking the lease stopped without an answer".into())
        })?
    }

    /// The store to write with under `taken`, its lease renewed from now on.
    pub fn writer(
        &self,
        options: &PgOptions,
        taken: &TakenLease,
        shared: std::sync::Arc<crate::writer::Shared>,
        write_timeout: std::time::Duration,
    ) -> PgStore {
        let state = std::sync::Arc::new(LeaseState::new(taken.lease, options.lease_ttl));
        Renewal {
            pool: self.reader.pool.clone(),
            holder: options.holder.clone(),
            advertise: options.advertise.clone(),
            lease: taken.lease,
            ttl: options.lease_ttl,
            shared,
            state: std::sync::Arc::clone(&state),
        }
        .spawn(&self.reader.runtime);
        PgStore {
            runtime: std::sync::Arc::clone(&self.reader.runtime),
            pool: self.reader.pool.clone(),
            holder: options.holder.clone(),
            lease: taken.lease,
            state,
            write_timeout,
            link: super::link::Link::new(options),
        }
    }
}

/// The writer's store on a standby: it refuses every batch (the log admits none anyway).
pub(crate) struct NoWrites;

impl Store for NoWrites {
    fn write(&mut self, _batch: &Batch<'_>) -> Result<(), AuditError> {
        Err(AuditError::Unwritable(
            "this orchestrator is a standby: it writes no audit records".into(),
        ))
    }

    fn finish(&mut self) {}
}
