//! The one path every call takes, from the gRPC front, the MCP front and template runs alike:
//! request → decide → audit(decision) → [approval] → forward → audit(outcome) → reply.
//!
//! Each call runs in its own task, so a caller that goes away cannot leave a call half-recorded.

use super::Gateway;
use super::decide::{Dispatch, Verdict};
use super::gate::approval_violation;
use crate::approval::{self, Approval};
use crate::audit::{ApprovalVerdict, AuditEvent, Outcome};
use crate::downstream::{Forward, ToolFailure};
use crate::error::Error;
use crate::metrics::Counted;
use crate::policy::Violation;
use crate::workflow::CallStatus;
use serde_json::Value;
use std::borrow::Cow;
use std::time::Instant;

/// A call asked for by a caller or a template step.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub workflow_id: String,
    pub tool: String,
    pub arguments: Value,
    pub caller: String,
    /// The template step this call is, if any.
    pub step: Option<usize>,
}

/// How a call ended, as its caller sees it.
#[derive(Debug, Clone)]
pub enum CallResult {
    Succeeded(Value),
    /// The tool ran and reported a failure.
    Failed(ToolFailure),
    /// A policy (or a person, at an approval gate) refused the call; it did not run.
    Denied(Vec<Violation>),
}

#[derive(Debug, Clone)]
pub struct CallReport {
    pub call_id: String,
    pub tool: String,
    pub result: CallResult,
    pub duration_us: u64,
    /// The approval that released the call, if it went through a gate.
    pub approval: Option<Approval>,
}

impl Gateway {
    /// Runs a call to its end in a task of its own and returns its report.
    pub async fn call(&self, spec: CallSpec) -> Result<CallReport, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let spec = self.bind_step(spec);
        let gateway = self.clone();
        let task = self
            .inner
            .tasks
            .spawn(async move { gateway.execute(spec, None).await });
        task.await.map_err(|_| Error::ShuttingDown)?
    }

    /// The call path. `resumed` carries an approval request that was pending when the orchestrator
    /// restarted: the call then waits for it instead of being decided anew.
    pub(crate) async fn execute(
        &self,
        spec: CallSpec,
        resumed: Option<(String, Approval)>,
    ) -> Result<CallReport, Error> {
        let (call_id, approval, decisions) = match resumed {
            Some((call_id, approval)) => {
                let decisions = self.inner.approvals.open(approval.clone());
                (call_id, approval, decisions)
            }
            None => {
                let call_id = crate::ids::call_id();
                match self.decide(&spec, &call_id, false).await? {
                    Verdict::Run(dispatch) => {
                        return self.forward(&spec, call_id, dispatch, None).await;
                    }
                    Verdict::Deny(violations) => {
                        return Ok(CallReport {
                            call_id,
                            tool: spec.tool,
                            result: CallResult::Denied(violations),
                            duration_us: 0,
                            approval: None,
                        });
                    }
                    Verdict::Gate {
                        gate,
                        config_version,
                    } => {
                        let (approval, decisions) = self
                            .request_approval(&spec, &call_id, &gate, config_version)
                            .await?;
                        (call_id, approval, decisions)
                    }
                }
            }
        };
        let approval = self.await_approval(approval, decisions).await?;
        let released = approval.verdict == Some(ApprovalVerdict::Approved)
            && approval.arguments_digest == approval::digest(&spec.arguments);
        if !released {
            let violation = approval_violation(&approval);
            self.settle_denied(&spec, &call_id, vec![violation.clone()]);
            return Ok(CallReport {
                call_id,
                tool: spec.tool,
                result: CallResult::Denied(vec![violation]),
                duration_us: 0,
                approval: Some(approval),
            });
        }
        match self.decide(&spec, &call_id, true).await? {
            Verdict::Run(dispatch) => self.forward(&spec, call_id, dispatch, Some(approval)).await,
            Verdict::Deny(violations) => Ok(CallReport {
                call_id,
                tool: spec.tool,
                result: CallResult::Denied(violations),
                duration_us: 0,
                approval: Some(approval),
            }),
            Verdict::Gate { .. } => unreachable!("an approved call is not gated again"),
        }
    }

    async fn forward(
        &self,
        spec: &CallSpec,
        call_id: String,
        dispatch: Dispatch,
        approval: Option<Approval>,
    ) -> Result<CallReport, Error> {
        let Dispatch {
            config,
            server,
            remote,
            timeout,
        } = dispatch;
        let started = Instant::now();
        let audit = &self.inner.audit;
        let result = match audit
            .submit(AuditEvent::CallStarted {
                workflow_id: spec.workflow_id.clone(),
                call_id: call_id.clone(),
                tool: spec.tool.clone(),
                server: server.clone(),
            })
            .await
        {
            Err(e) => Err(Error::from(e)),
            Ok(()) => match config.servers.get(&server) {
                None => Err(Error::Unavailable {
                    server: server.clone(),
                    message: "no longer configured".into(),
                }),
                Some(server_config) => {
                    // A tool's own time-out replaces its server's; the common case borrows.
                    let server_config = if server_config.timeout == timeout {
                        Cow::Borrowed(server_config)
                    } else {
                        let mut own = server_config.clone();
                        own.timeout = timeout;
                        Cow::Owned(own)
                    };
                    let forward = Forward {
                        server: &server_config,
                        remote_name: &remote,
                        arguments: &spec.arguments,
                        workflow_id: &spec.workflow_id,
                        call_id: &call_id,
                    };
                    self.inner.downstream.call(forward).await
                }
            },
        };
        let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (outcome, error, result_value) = match &result {
            Ok(Ok(value)) => (Outcome::Succeeded, None, Some(value.clone())),
            Ok(Err(failure)) => (
                Outcome::Failed,
                Some(format!("{}: {}", failure.code, failure.message)),
                None,
            ),
            Err(Error::Unavailable { .. }) | Err(Error::Audit(_)) => (
                Outcome::Unavailable,
                Some(
                    result
                        .as_ref()
                        .err()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
                None,
            ),
            Err(e) => (Outcome::Failed, Some(e.to_string()), None),
        };
        self.settle_finished(
            spec,
            &call_id,
            outcome,
            error.clone(),
            || result_value.clone(),
            duration_us,
        );
        self.inner.metrics.call_finished(
            &spec.tool,
            if outcome == Outcome::Succeeded {
                Counted::Success
            } else {
                Counted::Failure
            },
            duration_us,
        );
        self.inner
            .audit
            .append(AuditEvent::CallFinished {
                workflow_id: spec.workflow_id.clone(),
                call_id: call_id.clone(),
                tool: spec.tool.clone(),
                outcome,
                duration_us,
                error,
                result: result_value,
            })
            .await?;
        let result = match result? {
            Ok(value) => CallResult::Succeeded(value),
            Err(failure) => CallResult::Failed(failure),
        };
        Ok(CallReport {
            call_id,
            tool: spec.tool.clone(),
            result,
            duration_us,
            approval,
        })
    }

    /// Updates the workflow when a call has finished: the running set, the history, template progress.
    pub(crate) fn settle_finished(
        &self,
        spec: &CallSpec,
        call_id: &str,
        outcome: Outcome,
        error: Option<String>,
        result: impl FnOnce() -> Option<Value>,
        duration_us: u64,
    ) {
        let mut state = self.inner.state();
        let state = &mut *state;
        state.running.remove(&spec.tool, call_id);
        if let Some(workflow) = state.workflows.get_mut(spec.workflow_id.as_str()) {
            super::replay::apply_finished(workflow, call_id, outcome, error, result, duration_us);
        }
    }

    fn settle_denied(&self, spec: &CallSpec, call_id: &str, violations: Vec<Violation>) {
        self.inner.metrics.call_denied(
            &spec.tool,
            violations
                .iter()
                .map(|v| (v.rule_id.as_str(), v.rule_kind.as_str())),
        );
        let mut state = self.inner.state();
        if let Some(workflow) = state.workflows.get_mut(spec.workflow_id.as_str()) {
            workflow.violations += violations.len() as u32;
            workflow.set_status(call_id, CallStatus::Denied { violations });
            workflow.refresh_state();
        }
    }

    /// A call in a template workflow that is the template's next step (same tool) counts as that step,
    /// so a caller that drives a template itself (e.g. an MCP session bound to one) gets the step's gate
    /// and moves the template's progress.
    fn bind_step(&self, mut spec: CallSpec) -> CallSpec {
        if spec.step.is_none() {
            let state = self.inner.state();
            let next = state
                .workflows
                .get(spec.workflow_id.as_str())
                .and_then(|w| {
                    let template = w.template.as_ref().filter(|_| !w.state.is_finished())?;
                    let step = template.steps.get(w.steps_done)?;
                    (*step.tool == *spec.tool).then_some(w.steps_done)
                });
            spec.step = next;
        }
        spec
    }

    pub(super) fn workflow_caller(&self, workflow_id: &str) -> String {
        self.inner
            .state()
            .workflows
            .get(workflow_id)
            .map(|w| w.caller.clone())
            .unwrap_or_default()
    }

    pub(super) fn step_name(&self, workflow_id: &str, index: usize) -> Option<String> {
        let state = self.inner.state();
        let workflow = state.workflows.get(workflow_id)?;
        workflow
            .template
            .as_ref()?
            .steps
            .get(index)
            .map(|s| s.name.clone())
    }
}
