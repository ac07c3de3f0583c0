//! The gateway: the orchestrator's live state and every operation on it, shared by the gRPC front, the
//! MCP front and template runs.
//!
//! State lives behind one `std::sync::Mutex`, held only for short synchronous sections and never across
//! an `.await`: deciding a call and marking it running happen in one section, so exclusive groups hold
//! under any interleaving. The audit log is the memory: the state is rebuilt from it on start.

mod call;
mod control;
mod decide;
mod gate;
mod replay;
mod view;

pub use call::{CallReport, CallResult, CallSpec};
pub use control::constant_time_eq;
pub use view::{Outlook, StatusSnapshot, WorkflowView};

use crate::approval::Approvals;
use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::config::{Config, Transport};
use crate::downstream::Downstream;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::policy::{Buckets, Map, Name, RunningCalls};
use crate::workflow::Workflow;
use arc_swap::ArcSwap;
use conductor_audit::AuditOptions;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Milliseconds since the Unix epoch: the one clock read of the gateway (the engine never reads one).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[derive(Default)]
pub(crate) struct State {
    pub workflows: Map<Name, Workflow>,
    pub running: RunningCalls,
    /// Orchestrator-wide rate limits.
    pub buckets: Buckets,
    /// Finished workflows, oldest first: only the newest [`FINISHED_KEPT`] stay in memory (the audit
    /// log keeps them all), so a long-running daemon's memory does not grow with its history.
    pub finished: VecDeque<Name>,
}

/// How many finished workflows stay in memory for `workflow`, `workflows` and the dashboard.
pub const FINISHED_KEPT: usize = 10_000;

impl State {
    /// Notes that a workflow finished and forgets the oldest finished ones beyond [`FINISHED_KEPT`].
    pub fn finished(&mut self, id: Name) {
        self.finished.push_back(id);
        while self.finished.len() > FINISHED_KEPT {
            if let Some(old) = self.finished.pop_front() {
                self.workflows.remove(&old);
            }
        }
    }
}

pub(crate) struct Inner {
    pub config: ArcSwap<Config>,
    pub config_path: Option<PathBuf>,
    state: Mutex<State>,
    pub audit: AuditLog,
    pub downstream: Downstream,
    pub approvals: Approvals,
    pub metrics: Metrics,
    pub tasks: TaskTracker,
    /// Cancelled when the orchestrator begins to stop: waits for approvals end (they stay pending in the
    /// log and resume on the next start), new calls are refused.
    pub shutdown: CancellationToken,
}

impl Inner {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap handle to the orchestrator's state and operations.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

/// What the gateway needs to start.
pub struct GatewayOptions {
    pub config: Config,
    /// Where the configuration came from, for reloads.
    pub config_path: Option<PathBuf>,
    pub audit: AuditOptions,
}

impl Gateway {
    /// Opens the audit log, rebuilds the state from it, and resumes what was in progress: calls that were
    /// running are marked interrupted, pending approvals wait again, template runs continue.
    pub async fn start(options: GatewayOptions) -> Result<Gateway, Error> {
        let config = Arc::new(options.config);
        let ledger_url = config.approval_ledger.as_ref().and_then(|name| {
            match config.servers.get(name).map(|s| &s.transport) {
                Some(Transport::Grpc { url }) => Some(url.clone()),
                _ => None,
            }
        });
        let approvals = Approvals::new(ledger_url.as_deref())?;
        let mut state = State::default();
        let mut replayer = replay::Replayer {
            state: &mut state,
            config: &config,
            unfinished: Map::default(),
        };
        let (audit, report) =
            AuditLog::open_as(options.audit, |record| replayer.apply(record)).await?;
        let unfinished = std::mem::take(&mut replayer.unfinished);
        let mut ended: Vec<(i64, Name)> = state
            .workflows
            .values()
            .filter(|w| w.state.is_finished())
            .map(|w| (w.finished_at_ms.unwrap_or(0), w.id.clone()))
            .collect();
        ended.sort();
        for (_, id) in ended {
            state.finished(id);
        }
        if let Some(torn) = &report.torn_line_repaired {
            tracing::warn!(%torn, "the audit log ended in a torn line (a crash mid-write); it was cut off");
        }
        tracing::info!(
            records = report.records,
            workflows = state.workflows.len(),
            "audit log opened and state rebuilt"
        );
        let gateway = Gateway {
            inner: Arc::new(Inner {
                config: ArcSwap::new(config.clone()),
                config_path: options.config_path.clone(),
                state: Mutex::new(state),
                audit,
                downstream: Downstream::default(),
                approvals,
                metrics: Metrics::default(),
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
            }),
        };
        gateway
            .inner
            .audit
            .append(AuditEvent::ConfigLoaded {
                config_version: config.version.clone(),
                path: options.config_path.map(|p| p.display().to_string()),
            })
            .await?;
        gateway.resume(unfinished.into_values().collect()).await?;
        Ok(gateway)
    }

    async fn resume(&self, unfinished: Vec<replay::Unfinished>) -> Result<(), Error> {
        let mut waiting_steps = HashMap::new();
        for call in unfinished {
            let step_index = call
                .step
                .as_ref()
                .and_then(|step| self.step_index(&call.workflow_id, step));
            let spec = CallSpec {
                workflow_id: call.workflow_id.clone(),
                tool: call.tool.clone(),
                arguments: call.arguments(),
                caller: call.caller,
                step: step_index,
            };
            match call.approval {
                Some(approval) => {
                    tracing::info!(approval = %approval.id, workflow = %call.workflow_id, "approval still pending after restart");
                    if step_index.is_some() {
                        waiting_steps
                            .insert(call.workflow_id.clone(), (spec, call.call_id, approval));
                    } else {
                        let gateway = self.clone();
                        self.inner.tasks.spawn(async move {
                            if let Err(e) =
                                gateway.execute(spec, Some((call.call_id, approval))).await
                            {
                                tracing::warn!(error = %e, "resumed call failed");
                            }
                        });
                    }
                }
                None => {
                    let message =
                        "the orchestrator stopped while the call ran; its effect is unknown"
                            .to_owned();
                    self.settle_finished(
                        &spec,
                        &call.call_id,
                        Outcome::Interrupted,
                        Some(message.clone()),
                        || None,
                        0,
                    );
                    self.inner
                        .audit
                        .append(AuditEvent::CallFinished {
                            workflow_id: call.workflow_id,
                            call_id: call.call_id,
                            tool: call.tool,
                            outcome: Outcome::Interrupted,
                            duration_us: 0,
                            error: Some(message),
                            result: None,
                        })
                        .await?;
                }
            }
        }
        let templated: Vec<Name> = {
            let state = self.inner.state();
            state
                .workflows
                .values()
                .filter(|w| w.template.is_some() && !w.state.is_finished())
                .map(|w| w.id.clone())
                .collect()
        };
        for id in templated {
            let resumed = waiting_steps.remove(&*id);
            crate::runner::spawn(self.clone(), id, resumed);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_finished_workflows_stay_in_memory() {
        let config = Arc::new(
            Config::from_slice(
                br#"{"servers": {"s": {"grpc": "http://127.0.0.1:1", "tools": ["t"]}}}"#,
            )
            .expect("config"),
        );
        let mut state = State::default();
        for i in 0..FINISHED_KEPT + 5 {
            let id: Name = format!("wf-{i}").into();
            let workflow = Workflow::new(
                id.clone(),
                None,
                config.clone(),
                "test".into(),
                serde_json::Value::Null,
                0,
            );
            state.workflows.insert(id.clone(), workflow);
            state.finished(id);
        }
        let running: Name = "wf-running".into();
        state.workflows.insert(
            running.clone(),
            Workflow::new(
                running.clone(),
                None,
                config,
                "test".into(),
                serde_json::Value::Null,
                0,
            ),
        );
        assert_eq!(state.workflows.len(), FINISHED_KEPT + 1);
        assert!(!state.workflows.contains_key("wf-4") && state.workflows.contains_key("wf-5"));
        assert!(
            state.workflows.contains_key(&running),
            "running workflows are never forgotten"
        );
    }
}
