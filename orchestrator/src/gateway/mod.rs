//! The gateway: the orchestrator's live state and every operation on it, shared by the gRPC front, the
//! MCP front and template runs.
//!
//! The state is `conductor-core`'s [`State`], changed only by [`State::apply`] over audit events.
//! Every operation commits the same way ([`Inner::commit`]): under one short `std::sync::Mutex`
//! section (never held across an `.await`) it asks the log whether it takes the record, stamps it,
//! applies it and queues it, so the log's order is the order of the changes; it then awaits
//! durability outside the lock. Start-up applies every record of the log through the same function,
//! so the state after a restart is the state that was live.
//!
//! Write-ahead: a call's intent (its decision and `call_started`) is durable before the call is
//! forwarded, and while the log cannot be written no new intent is admitted: nothing runs
//! unrecorded.

mod call;
mod context;
mod control;
mod decide;
mod gate;
mod refusals;
mod runner;
mod view;

pub use call::{CallReport, CallResult, CallSpec};
pub use gate::DecisionRequest;
pub use refusals::{Refusal, check_id};
pub use view::{AuditState, Outlook, StatusSnapshot, WorkflowView};

use crate::audit::{AuditEvent, AuditLog, AuditRecord, Outcome};
use crate::config::{Config, Transport};
use crate::downstream::Downstream;
use crate::error::Error;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::policy::Map;
use arc_swap::ArcSwap;
use conductor_audit::{Admit, AuditOptions, Queued};
use conductor_core::State;
use conductor_core::state::Unfinished;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Milliseconds since the Unix epoch: the one clock read of the gateway (the engine never reads one).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) struct Inner {
    pub config: ArcSwap<Config>,
    pub config_path: Option<PathBuf>,
    state: Mutex<State>,
    /// The time of the last record committed: stamps never go back, so a record's time is the
    /// time its change was applied with.
    pub(crate) last_stamp: AtomicI64,
    pub audit: AuditLog,
    pub downstream: Downstream,
    pub ledger: Ledger,
    /// The calls waiting for a person's decision, by approval id: where a decision is handed over.
    waiters: Mutex<Map<String, oneshot::Sender<DecisionRequest>>>,
    /// Labels tools carry beyond the configured ones, learned from their servers' annotations
    /// (`openWorldHint`, `destructiveHint`); each decision records the labels it used.
    learned_labels: Mutex<Map<String, Vec<crate::policy::Name>>>,
    pub metrics: Metrics,
    /// Refused control requests, aggregated so that what they record is bounded.
    pub refusals: refusals::Refusals,
    pub tasks: TaskTracker,
    /// Cancelled when the orchestrator begins to stop: waits for approvals end (they stay pending in the
    /// log and resume on the next start), new calls are refused.
    pub shutdown: CancellationToken,
    /// This node's part in a cluster: active (the default) or a warm standby following the store.
    pub cluster: crate::cluster::Role,
    /// The key MCP workflow handles are sealed with (shared by every node of a cluster).
    pub handle_key: crate::mcp::HandleKey,
}

/// Beside N other calls in flight, the keeper waits (briefly: [`AuditOptions::gather_for`]) until
/// N / this many records are queued before it syncs. Below 8 calls in flight that is at most 1, so
/// no wait: there the path is bound by the syncs' latency. At 64 the machine is bound by CPU, which
/// each sync spends too (about 90 µs on the bench's VM): half as many syncs took 11% off the
/// orchestrator's CPU per gRPC call (`bench/RESULTS.md`, 2026-11-30T12:32Z).
const GATHER_ONE_SYNC_PER: usize = 4;

impl Inner {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiters(&self) -> MutexGuard<'_, Map<String, oneshot::Sender<DecisionRequest>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The one way the state changes: asks the log whether it takes the record (an intent is refused
    /// while the log cannot be written), stamps it, applies it and queues it, under the state lock
    /// the caller holds. Await the returned [`Queued`] outside the lock.
    pub fn commit(
        &self,
        state: &mut State,
        event: AuditEvent,
        admit: Admit,
    ) -> Result<Queued<AuditEvent>, Error> {
        self.audit.admit(admit)?;
        let at = now_ms().max(self.last_stamp.load(Ordering::Relaxed));
        self.last_stamp.store(at, Ordering::Relaxed);
        state.apply(at, &event);
        // A lone call writes and syncs its own record (no hand-off: the lowest latency). While
        // other calls run, the log's keeper commits instead, so that no runtime worker blocks on
        // the disk while those calls have work for it; and since their records are on their way,
        // it may wait briefly for a share of them, so that one sync serves them together.
        let own = usize::from(matches!(event, AuditEvent::CallStarted { .. }));
        let others = state.running.len().saturating_sub(own);
        let queued = self.audit.enqueue(at, event, Admit::Outcome)?;
        Ok(if others > 0 {
            queued.by_keeper(others / GATHER_ONE_SYNC_PER)
        } else {
            queued
        })
    }

    /// [`Inner::commit`] under a lock of its own, then waits until the record is durable.
    pub async fn record(&self, event: AuditEvent, admit: Admit) -> Result<Arc<AuditRecord>, Error> {
        Ok(self.record_in_batch(event, admit).await?.0)
    }

    /// [`Inner::record`], also saying how many records the batch that made it durable held.
    async fn record_in_batch(
        &self,
        event: AuditEvent,
        admit: Admit,
    ) -> Result<(Arc<AuditRecord>, usize), Error> {
        let queued = {
            let mut state = self.state();
            self.commit(&mut state, event, admit)?
        };
        Ok(queued.durable_in_batch().await?)
    }

    /// [`Inner::record`], noted as an audit commit event (`what` it records).
    pub async fn record_traced(
        &self,
        what: &'static str,
        event: AuditEvent,
        admit: Admit,
    ) -> Result<Arc<AuditRecord>, Error> {
        let started = std::time::Instant::now();
        let recorded = self.record_in_batch(event, admit).await;
        match &recorded {
            Ok((record, batch)) => crate::telemetry::spans::audit_committed(
                what,
                Ok((record.seq, *batch)),
                started.elapsed(),
            ),
            Err(e) => crate::telemetry::spans::audit_committed(what, Err(e), started.elapsed()),
        }
        recorded.map(|(record, _)| record)
    }
}

/// A cheap handle to the orchestrator's state and operations.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

/// What a gateway is made of besides its audit log, however it starts (from the log, or as a
/// standby following another node's).
pub(crate) struct Parts {
    pub config: Arc<Config>,
    pub config_path: Option<PathBuf>,
    pub state: State,
    pub ledger: Ledger,
}

/// What the gateway needs to start.
pub struct GatewayOptions {
    pub config: Config,
    /// Where the configuration came from, for reloads.
    pub config_path: Option<PathBuf>,
    pub audit: AuditOptions,
}

impl Gateway {
    /// What a downstream server's annotations say about one of its tools (by public name): the
    /// labels they mean under the running configuration join the tool's configured ones in every
    /// decision from now on (and are recorded with it, so a replay needs none of this).
    pub fn learn_tool_hints(&self, tool: &str, hints: conductor_core::config::ToolHints) {
        let labels = self.inner.config.load().annotation_labels.labels_for(hints);
        let mut learned = self
            .inner
            .learned_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if labels.is_empty() {
            learned.remove(tool);
        } else {
            learned.insert(tool.to_owned(), labels);
        }
    }

    /// The labels learned for `tool` (empty when none).
    pub(crate) fn learned_labels(&self, tool: &str) -> Vec<crate::policy::Name> {
        self.inner
            .learned_labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tool)
            .cloned()
            .unwrap_or_default()
    }

    /// Opens the audit log, rebuilds the state from it (the same transition as the live path), and
    /// resumes what was in progress: calls that were running are marked interrupted, pending
    /// approvals wait again, template runs continue.
    pub async fn start(options: GatewayOptions) -> Result<Gateway, Error> {
        // Downstream MCP servers and key sets may be https.
        crate::auth::install_tls_provider();
        let config = Arc::new(options.config);
        crate::downstream::credentials::log_credentials(&config);
        let ledger_url = config.approval_ledger.as_ref().and_then(|name| {
            match config.servers.get(name).map(|s| &s.transport) {
                Some(Transport::Grpc { url }) => Some(url.clone()),
                _ => None,
            }
        });
        let ledger_tls = config
            .approval_ledger
            .as_ref()
            .and_then(|name| config.servers.get(name)?.tls.as_ref());
        let ledger = Ledger::new(ledger_url.as_deref(), ledger_tls)?;
        let mut state = State::new(config.clone());
        let mut last_stamp = 0;
        let audit_options = options.audit.clone();
        let opened = AuditLog::open_replaying(
            options.audit,
            |record: conductor_audit::Replayed<crate::audit::ReplayEvent>| {
                last_stamp = record.ts_ms;
                state.apply(record.ts_ms, &record.event);
            },
        )
        .await;
        let (audit, report) = match opened {
            Err(conductor_audit::AuditError::LeaseHeld {
                holder, advertise, ..
            }) => {
                // Another node is active: this one follows it as a warm standby.
                let held = crate::cluster::Held { holder, advertise };
                let parts = Parts {
                    state: State::new(config.clone()),
                    config,
                    config_path: options.config_path,
                    ledger,
                };
                return crate::cluster::standby::start(parts, audit_options, held).await;
            }
            other => other?,
        };
        if let Some(torn) = &report.torn_line_repaired {
            tracing::warn!(%torn, "the audit log ended in a torn line (a crash mid-write); it was cut off");
        }
        tracing::info!(
            records = report.records,
            workflows = state.workflows.len(),
            "audit log opened and state rebuilt"
        );
        if state.seq() != report.last_seq {
            // The views' durability marks rest on this numbering (see `State::apply`).
            tracing::error!(
                applied = state.seq(),
                last_seq = report.last_seq,
                "the state did not apply one event per audit record; durability marks are off"
            );
        }
        let unfinished = state.unfinished();
        let handle_key = crate::cluster::handle_key(&audit_options).await?;
        let gateway = Gateway::assemble(
            Parts {
                config: config.clone(),
                config_path: options.config_path.clone(),
                state,
                ledger,
            },
            audit,
            last_stamp,
            handle_key,
        );
        if let Some(failure) = &report.recovered_from {
            gateway
                .record_at_start(AuditEvent::Recovered {
                    set_aside: report
                        .set_aside
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect(),
                    cut_seq: failure.seq,
                    reason: failure.to_string(),
                })
                .await?;
        }
        gateway
            .record_at_start(AuditEvent::ConfigLoaded {
                config_version: config.version.clone(),
                path: options.config_path.map(|p| p.display().to_string()),
            })
            .await?;
        gateway.resume(unfinished).await?;
        Ok(gateway)
    }

    /// Records what start-up found or did (a recovery, the configuration in force, the calls a stop
    /// interrupted). These are what already happened, so they are queued whatever the log's state
    /// (a fixed few per start). On a log that cannot take them (a full disk) they wait in its
    /// backlog and the orchestrator starts anyway, as a running one carries on: health says
    /// NOT_SERVING with the reason in `status`, every new call is refused, and once the disk takes
    /// records they are written in order and service resumes by itself. Exiting instead left
    /// nothing to answer a probe and nothing to resume.
    pub(crate) async fn record_at_start(&self, event: AuditEvent) -> Result<(), Error> {
        match self.inner.record(event, Admit::Outcome).await {
            Ok(_) => Ok(()),
            Err(Error::Audit(
                error @ (conductor_audit::AuditError::Io { .. }
                | conductor_audit::AuditError::Unwritable(_)),
            )) => {
                tracing::warn!(%error, "the audit log cannot be written at start: serving NOT_SERVING, refusing calls until it can; its records wait and are retried");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    pub(crate) async fn resume(&self, unfinished: Vec<Unfinished>) -> Result<(), Error> {
        let mut waiting_steps = HashMap::new();
        for call in unfinished {
            match call {
                Unfinished::Waiting(approval) => {
                    let approval = *approval;
                    tracing::info!(approval = %approval.id, workflow = %approval.workflow_id, "approval still pending after restart");
                    let spec = CallSpec {
                        workflow_id: approval.workflow_id.clone(),
                        tool: approval.tool.clone(),
                        arguments: approval.arguments.clone(),
                        caller: approval.requested_by.clone(),
                        step: approval
                            .step
                            .as_ref()
                            .and_then(|step| self.step_index(&approval.workflow_id, step)),
                    };
                    if spec.step.is_some() {
                        waiting_steps.insert(approval.workflow_id.clone(), (spec, approval));
                    } else {
                        let gateway = self.clone();
                        self.inner.tasks.spawn(async move {
                            if let Err(e) = gateway.execute(spec, Some(approval)).await {
                                tracing::warn!(error = %e, "resumed call failed");
                            }
                        });
                    }
                }
                Unfinished::Interrupted {
                    workflow_id,
                    call_id,
                    tool,
                } => {
                    self.record_at_start(AuditEvent::CallFinished {
                        workflow_id: workflow_id.to_string(),
                        call_id: call_id.to_string(),
                        tool: tool.to_string(),
                        outcome: Outcome::Interrupted,
                        duration_us: 0,
                        error: Some(
                            "the orchestrator stopped while the call ran; its effect is unknown"
                                .to_owned(),
                        ),
                        result: None,
                        details: None,
                        trace: None,
                    })
                    .await?;
                }
            }
        }
        let templated: Vec<String> = {
            let state = self.inner.state();
            state
                .active()
                .filter(|w| w.template.is_some())
                .map(|w| w.id.to_string())
                .collect()
        };
        for id in templated {
            let resumed = waiting_steps.remove(&id);
            runner::spawn(self.clone(), id.as_str().into(), resumed);
        }
        Ok(())
    }

    /// A gateway of `parts` over `audit`, its last record stamped `last_stamp`.
    pub(crate) fn assemble(
        parts: Parts,
        audit: AuditLog,
        last_stamp: i64,
        handle_key: crate::mcp::HandleKey,
    ) -> Gateway {
        Gateway {
            inner: Arc::new(Inner {
                config: ArcSwap::new(parts.config),
                config_path: parts.config_path,
                state: Mutex::new(parts.state),
                last_stamp: AtomicI64::new(last_stamp),
                audit,
                downstream: Downstream::default(),
                ledger: parts.ledger,
                waiters: Mutex::new(Map::default()),
                learned_labels: Mutex::new(Map::default()),
                metrics: Metrics::default(),
                refusals: refusals::Refusals::default(),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                cluster: crate::cluster::Role::default(),
                handle_key,
            }),
        }
    }

    fn step_index(&self, workflow_id: &str, step: &str) -> Option<usize> {
        let state = self.inner.state();
        state
            .workflows
            .get(workflow_id)?
            .template
            .as_ref()?
            .steps
            .iter()
            .position(|s| s.name == step)
    }

    /// The configuration new workflows start under.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Refuses new calls and ends waits for approvals; calls already forwarded finish.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Waits for every call and template run in progress, then flushes and closes the audit log.
    pub async fn shutdown(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.audit.close().await;
    }
}
