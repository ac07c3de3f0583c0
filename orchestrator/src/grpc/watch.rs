//! `Watch`: replays past events from the audit files (when a start sequence is given), then follows the
//! live stream of durable records.
//!
//! Each watcher has its own task and a bounded channel: a slow watcher only slows itself. When it falls
//! behind the live broadcast it is told (`Lagged`) and caught up from the files, so it misses nothing.

use super::convert;
use crate::audit::{AuditEvent, AuditRecord};
use crate::gateway::Gateway;
use conductor_proto::v1 as pb;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type WatchStream = ReceiverStream<Result<pb::WatchEvent, Status>>;

/// How many events may wait for one slow watcher before it is caught up from the files instead.
const WATCHER_BUFFER: usize = 256;

pub fn start(gateway: Gateway, request: pb::WatchRequest) -> WatchStream {
    let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
    let live = gateway.audit().subscribe();
    let filter = Some(request.workflow_id).filter(|w| !w.is_empty());
    let next = if request.from_seq > 0 {
        request.from_seq
    } else {
        gateway.audit().last_seq() + 1
    };
    tokio::spawn(async move {
        let watcher = Watcher {
            gateway,
            tx,
            filter,
            next,
        };
        watcher.run(live).await;
    });
    ReceiverStream::new(rx)
}

struct Watcher {
    gateway: Gateway,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    filter: Option<String>,
    /// The next sequence number this watcher has not seen.
    next: u64,
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<Arc<AuditRecord>>) {
        if self.catch_up().await.is_err() {
            return;
        }
        let shutdown = self.gateway.inner.shutdown.clone();
        loop {
            let received = tokio::select! {
                received = live.recv() => received,
                () = shutdown.cancelled() => {
                    let _ = self.tx.try_send(Err(Status::unavailable("the orchestrator is shutting down; reconnect with from_seq to resume")));
                    return;
                }
            };
            match received {
                Ok(record) => {
                    if record.seq < self.next {
                        continue;
                    }
                    if record.seq > self.next && self.catch_up().await.is_err() {
                        return;
                    }
                    if record.seq >= self.next && self.send(&record).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let notice = pb::WatchEvent {
                        seq: self.next,
                        body: Some(pb::watch_event::Body::Lagged(pb::Lagged {
                            missed,
                            resume_from: self.next,
                        })),
                        workflow: None,
                    };
                    if self.tx.send(Ok(notice)).await.is_err() || self.catch_up().await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sends every record from `next` that is already durable (in the files or the rows).
    async fn catch_up(&mut self) -> Result<(), ()> {
        let last = self.gateway.audit().last_seq();
        if self.next > last {
            return Ok(());
        }
        let audit = self.gateway.audit().clone();
        let from = self.next;
        let (batch_tx, mut batch_rx) = mpsc::channel::<AuditRecord>(WATCHER_BUFFER);
        let reader = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let records = audit
                .read_from::<AuditEvent>(from)
                .map_err(|e| e.to_string())?;
            for record in records {
                let record = record.map_err(|e| e.to_string())?;
                if record.seq > last {
                    break;
                }
                if batch_tx.blocking_send(record).is_err() {
                    break;
                }
            }
            Ok(())
        });
        while let Some(record) = batch_rx.recv().await {
            if record.seq >= self.next {
                self.send(&record).await?;
            }
        }
        match reader.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => {
                let _ = self
                    .tx
                    .send(Err(Status::internal(format!(
                        "cannot read the audit log: {message}"
                    ))))
                    .await;
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    async fn send(&mut self, record: &AuditRecord) -> Result<(), ()> {
        self.next = record.seq + 1;
        let workflow_id = record.event.workflow_id();
        if let Some(filter) = &self.filter
            && workflow_id != Some(filter.as_str())
        {
            return Ok(());
        }
        let workflow = workflow_id
            .and_then(|id| self.gateway.workflow_summary(id))
            .map(|view| convert::workflow(&view));
        let event = pb::WatchEvent {
            seq: record.seq,
            body: Some(pb::watch_event::Body::Event(convert::audit_event(record))),
            workflow,
        };
        self.tx.send(Ok(event)).await.map_err(|_| ())
    }
}
