//! A warm standby's log (issue 23): opened without the lease, it appends nothing (every record is
//! refused, naming the active node) while the records another node commits are handed to it
//! ([`AuditLog::followed`]) for its watchers; once the active node's lease expired it may take the
//! lease and become the writer from the head it read to.

use super::{AuditLog, Inner};
use crate::health::Shared;
use crate::writer::Core;
use crate::{AuditError, AuditOptions, Record, StoreOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::broadcast;

impl<E> AuditLog<E>
where
    E: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Opens the log of a warm standby on the PostgreSQL store `pg`: it appends nothing (every
    /// record is refused with `reason`, e.g. naming the active node), and reads, verifies and
    /// watchers see what [`AuditLog::followed`] hands it (from [`crate::pg::follow`]). It takes no
    /// lease and writes no row.
    pub async fn open_standby(
        options: AuditOptions,
        pg: &crate::pg::PgOptions,
        reason: String,
    ) -> Result<AuditLog<E>, AuditError> {
        let standby_store = crate::pg::StandbyStore::open(pg)?;
        let shared = Arc::new(Shared::new(options.stall_after));
        let (broadcast, _) = broadcast::channel(options.broadcast_capacity);
        let core = Core::start(
            options.gather_for,
            crate::chain::ChainState::genesis(),
            0,
            Box::new(crate::pg::NoWrites),
            broadcast.clone(),
            Arc::clone(&shared),
        )?;
        let inner = Inner {
            core,
            capacity: options.channel_capacity,
            broadcast,
            shared,
            stall_after: options.stall_after,
            dir: options.dir,
            lease: std::sync::Mutex::new(None),
            store: StoreOptions::Postgres(pg.clone()),
            pg_reader: Some(standby_store.reader.clone()),
            closed: AtomicBool::new(false),
            standby: std::sync::Mutex::new(Some(reason)),
            standby_store: Some(standby_store),
        };
        Ok(AuditLog {
            inner: Arc::new(inner),
        })
    }
}

impl<E> AuditLog<E> {
    /// On a standby: a record the active node committed (read and verified by the follower), now
    /// applied here; watchers get it and `last_seq` moves to it.
    pub fn followed(&self, record: Arc<Record<E>>) {
        self.inner
            .shared
            .last_seq
            .store(record.seq, Ordering::Release);
        let _ = self.inner.broadcast.send(record);
    }

    /// Why this node appends nothing (`Some` on a standby).
    pub fn standby(&self) -> Option<String> {
        self.inner
            .standby
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// On a standby: says anew why it appends nothing (the active node may have changed).
    pub fn set_standby_reason(&self, reason: String) {
        let mut slot = self.inner.standby.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            *slot = Some(reason);
        }
    }

    /// On a standby whose active node's lease expired: takes the lease (fencing every other node
    /// out). Nothing is written yet: apply every record up to [`TakenLease::head_seq`], stop
    /// following, then [`AuditLog::become_active`].
    ///
    /// [`TakenLease::head_seq`]: crate::pg::TakenLease::head_seq
    pub async fn take_lease(&self) -> Result<crate::pg::TakenLease, AuditError> {
        match (&self.inner.standby_store, &self.inner.store) {
            (Some(store), StoreOptions::Postgres(pg)) => store.take_lease(pg).await,
            _ => Err(AuditError::InvalidOptions(
                "only a standby takes the lease this way".into(),
            )),
        }
    }

    /// After [`AuditLog::take_lease`], once every record up to its head was applied here and
    /// nothing follows the table any more: this log writes from now on, continuing the chain at
    /// that head (the last record stamped `last_ts_ms`), its lease renewed; records are admitted.
    pub fn become_active(
        &self,
        taken: crate::pg::TakenLease,
        last_ts_ms: i64,
    ) -> Result<(), AuditError>
    where
        E: Send + Sync + 'static,
    {
        let (Some(store), StoreOptions::Postgres(pg)) =
            (&self.inner.standby_store, &self.inner.store)
        else {
            return Err(AuditError::InvalidOptions(
                "only a standby becomes active this way".into(),
            ));
        };
        let writer = store.writer(
            pg,
            &taken,
            Arc::clone(&self.inner.shared),
            self.inner.stall_after,
        );
        *self.inner.lease.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::clone(&writer.state));
        self.inner
            .core
            .take_over(taken.chain(), last_ts_ms, Box::new(writer));
        self.inner
            .shared
            .last_seq
            .store(taken.head_seq(), Ordering::Release);
        *self.inner.standby.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// On a standby: the lease row and the chain head as the store has them now.
    pub async fn store_lease(&self) -> Result<crate::pg::LeaseView, AuditError> {
        match &self.inner.standby_store {
            Some(store) => store.lease().await,
            None => Err(AuditError::InvalidOptions(
                "only a standby reads the lease this way".into(),
            )),
        }
    }
}
