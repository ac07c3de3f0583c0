//! A warm standby (issue 23, item 3): a node that cannot take the store's lease follows the node
//! that holds it. It reads the table by seq with `conductor_audit::pg::follow` (every line checked
//! against the chain), applies every record through the same `State::apply` as the active node
//! (SPEC §9.2), and hands it to its audit log's watchers; so every read (status, workflows, a
//! workflow, audit query and verify, pending approvals, `watch`) is served from that state, by the
//! same code as on the active node.
//!
//! It never appends: its audit log refuses every record (`AuditError::Standby`) with a reason
//! naming the active node and where it is reached (from the lease row, read again as it changes),
//! so calls, starts and approvals are refused before anything is applied, through the one commit
//! path, and a client knows where to go.
//!
//! Failover: when the lease row says the active node's lease expired, the standby takes it (the
//! epoch fences the old node out), applies every record up to the head that fixes, stops
//! following, and its log becomes the writer from that head on; it then resumes what the old node
//! left unfinished as a restart does.
//!
//! With each look at the lease it also reports itself in the store (`conductorctl cluster
//! status`): its name, addresses, applied seq and the head and epoch it saw.

use super::{Held, Role, StandbyView};
use crate::audit::{AuditEvent, AuditLog};
use crate::error::Error;
use crate::gateway::{Gateway, Parts};
use conductor_audit::pg::{ClusterNodes, LeaseView, NodeRole, Position, Report, follow};
use conductor_audit::{AuditOptions, Record, StoreOptions};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a standby reads the lease row and the chain head (who is active, how far behind).
const LEASE_LOOK_EVERY: Duration = Duration::from_millis(500);

/// Starts `parts` as a standby of the node holding the lease (`held`): opens a log that appends
/// nothing, then follows the table in the background until the gateway shuts down.
pub(crate) async fn start(parts: Parts, audit: AuditOptions, held: Held) -> Result<Gateway, Error> {
    let StoreOptions::Postgres(pg) = audit.store.clone() else {
        return Err(Error::Internal(
            "only a node on the PostgreSQL store can be a standby".into(),
        ));
    };
    let nodes = ClusterNodes::open(&pg)?;
    let view = StandbyView::of(&held);
    tracing::warn!(
        active = %held.holder,
        "another node holds the PostgreSQL store's lease: starting as a warm standby that follows it and serves reads"
    );
    let handle_key = super::handle_key(&audit).await?;
    let log = AuditLog::open_standby(audit, &pg, view.refusal()).await?;
    let gateway = Gateway::assemble(parts, log, 0, handle_key);
    gateway.inner.cluster.set(Some(view));

    let (records, mut feed) = mpsc::channel::<Record<AuditEvent>>(1024);
    let following = gateway.clone();
    // Stops following at shutdown, or when this node takes over.
    let stop = gateway.inner.shutdown.child_token();
    let stop_following = stop.clone();
    tokio::spawn(async move {
        let ended = tokio::select! {
            ended = follow(pg, Position::start(), records) => ended,
            () = stop.cancelled() => Ok(()),
        };
        if let Err(error) = ended {
            tracing::error!(%error, "the standby stopped following the audit store");
            following
                .inner
                .cluster
                .update(|view| view.broken = Some(error.to_string()));
        }
    });
    let applying = gateway.clone();
    let applier = tokio::spawn(async move {
        while let Some(record) = feed.recv().await {
            applying.apply_followed(record);
        }
    });
    let looking = gateway.clone();
    let following = Following {
        stop: stop_following,
        applier: Some(applier),
        nodes,
    };
    tokio::spawn(async move { looking.look_at_lease(following).await });
    Ok(gateway)
}

impl Gateway {
    /// A record the active node committed: applied as the active node applied it, then handed
    /// to this node's watchers.
    fn apply_followed(&self, record: Record<AuditEvent>) {
        let record = Arc::new(record);
        {
            let mut state = self.inner.state();
            state.apply(record.ts_ms, &record.event);
            self.inner
                .last_stamp
                .fetch_max(record.ts_ms, Ordering::Relaxed);
        }
        self.inner.audit.followed(record);
    }

    /// Reads the lease row and the chain head every [`LEASE_LOOK_EVERY`], until shutdown: who is
    /// active (named in every refusal), how far the head is, whether the store can be reached.
    async fn look_at_lease(&self, mut following: Following) {
        loop {
            let looked = self.inner.audit.store_lease().await;
            if let Ok(lease) = &looked
                && lease.valid_for_ms < 0
            {
                match self.take_over(&mut following).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(%error, "the active node's lease expired; taking it over failed")
                    }
                }
            }
            if let Ok(lease) = &looked {
                following.report(self.inner.audit.last_seq(), lease).await;
            }
            let refusal = self.inner.cluster.update(|view| match &looked {
                Ok(lease) => {
                    view.reachable = None;
                    view.head_seq = lease.head_seq;
                    if lease.holder != view.active || lease.advertise != view.advertise {
                        *view = StandbyView {
                            head_seq: lease.head_seq,
                            broken: view.broken.take(),
                            ..StandbyView::of(&Held {
                                holder: lease.holder.clone(),
                                advertise: lease.advertise.clone(),
                            })
                        };
                    }
                }
                Err(error) => view.reachable = Some(error.to_string()),
            });
            if let Some(refusal) = refusal {
                self.inner.audit.set_standby_reason(refusal);
            }
            tokio::select! {
                () = tokio::time::sleep(LEASE_LOOK_EVERY) => {}
                () = self.inner.shutdown.cancelled() => return,
            }
        }
    }

    /// The active node's lease expired: takes it (fencing every other node out), applies every
    /// record up to the head it fixed, stops following, and becomes the active node: its audit
    /// log writes from there on, and what the old node left unfinished is resumed as a restart
    /// resumes it (running calls recorded as interrupted, pending approvals waiting again).
    async fn take_over(&self, following: &mut Following) -> Result<(), Error> {
        let audit = &self.inner.audit;
        let taken = audit.take_lease().await?;
        tracing::warn!(
            head_seq = taken.head_seq(),
            "the active node's lease expired: this standby took it and is reading to the last record"
        );
        let mut applied = audit.subscribe();
        while audit.last_seq() < taken.head_seq() {
            tokio::select! {
                _ = applied.recv() => {}
                () = self.inner.shutdown.cancelled() => return Err(Error::ShuttingDown),
            }
        }
        following.stop.cancel();
        if let Some(applier) = following.applier.take() {
            let _ = applier.await;
        }
        // What the old node left unfinished, taken before this node admits a call of its own:
        // a call admitted here from the next moment on is running too, and is not the old
        // node's to end as interrupted.
        let unfinished = self.inner.state().unfinished();
        let last_stamp = self.inner.last_stamp.load(Ordering::Relaxed);
        audit.become_active(taken, last_stamp)?;
        self.inner.cluster.set(None);
        tracing::warn!("this node is now the active node");
        self.record_at_start(AuditEvent::ConfigLoaded {
            config_version: self.config().version.clone(),
            path: self
                .inner
                .config_path
                .as_ref()
                .map(|p| p.display().to_string()),
        })
        .await?;
        self.resume(unfinished).await
    }

    /// On a standby, what it follows and how far behind it is; `None` on the active node.
    pub fn standby(&self) -> Option<Standing> {
        let view = self.inner.cluster.get()?;
        let applied_seq = self.inner.audit.last_seq();
        Some(Standing {
            lag_records: view.head_seq.saturating_sub(applied_seq),
            applied_seq,
            problem: view.reachable.clone().or_else(|| view.broken.clone()),
            view,
        })
    }
}

/// The follower's controls, held by the task that may take over.
struct Following {
    stop: tokio_util::sync::CancellationToken,
    applier: Option<tokio::task::JoinHandle<()>>,
    /// Where this standby reports itself.
    nodes: ClusterNodes,
}

impl Following {
    /// Reports this standby (best effort, within one look's time: `cluster status` shows a
    /// standby that cannot report as gone, which is what it then is to the cluster).
    async fn report(&self, applied_seq: u64, lease: &LeaseView) {
        let report = Report {
            role: NodeRole::Standby,
            applied_seq,
            head_seq: lease.head_seq,
            epoch: lease.epoch,
        };
        match tokio::time::timeout(LEASE_LOOK_EVERY, self.nodes.report(report)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "could not report this standby"),
            Err(_) => tracing::debug!("reporting this standby got no answer in time"),
        }
    }
}

/// A standby's standing: whom it follows, how far behind, and whether it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub view: StandbyView,
    /// The seq of the last record applied here.
    pub applied_seq: u64,
    /// Records committed by the active node and not yet applied here (as of the last look).
    pub lag_records: u64,
    /// Why it cannot follow now (the store unreachable, a broken chain); `None` while healthy.
    pub problem: Option<String>,
}

impl Role {
    /// Changes the standby's view (nothing on the active node); returns the refusal it now gives.
    fn update(&self, change: impl FnOnce(&mut StandbyView)) -> Option<String> {
        let mut slot = self.lock();
        let view = slot.as_mut()?;
        change(view);
        Some(view.refusal())
    }
}
