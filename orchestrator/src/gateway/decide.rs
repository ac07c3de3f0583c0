//! The decision of one call: the policy engine asked under the state lock, the workflow updated, the
//! decision recorded. The rest of a call's path is in `call.rs`.

use super::call::CallSpec;
use super::{Gateway, now_ms};
use crate::audit::{AuditEvent, DecisionKind};
use crate::config::{Config, Step};
use crate::error::Error;
use crate::policy::{self, CallRequest, Decision, Name, RateState, RunningCall, Violation};
use crate::workflow::{CallEntry, CallStatus};
use std::sync::Arc;
use std::time::Duration;

/// Where an allowed call goes, resolved under the lock from the workflow's configuration.
pub(super) struct Dispatch {
    pub config: Arc<Config>,
    pub server: String,
    pub remote: String,
    pub timeout: Duration,
}

/// What the engine said, after the state was updated under the lock.
pub(super) enum Verdict {
    Run(Dispatch),
    Deny(Vec<Violation>),
    Gate {
        gate: policy::ApprovalGate,
        config_version: String,
    },
}

impl Gateway {
    /// Decides under the state lock (so exclusive groups hold under any interleaving), updates the
    /// workflow, then records the decision. Denials are durable before they are returned.
    pub(super) async fn decide(
        &self,
        spec: &CallSpec,
        call_id: &str,
        approval_granted: bool,
    ) -> Result<Verdict, Error> {
        let now = now_ms();
        let (verdict, event) = {
            let mut state = self.inner.state();
            let state = &mut *state;
            let workflow = state
                .workflows
                .get_mut(spec.workflow_id.as_str())
                .ok_or_else(|| Error::WorkflowNotFound(spec.workflow_id.clone()))?;
            if workflow.state.is_finished() {
                return Err(Error::WorkflowFinished {
                    id: spec.workflow_id.clone(),
                    state: workflow.state.as_str(),
                });
            }
            let config = workflow.config.clone();
            let (tool, route) =
                config
                    .tools
                    .get_key_value(spec.tool.as_str())
                    .ok_or_else(|| Error::UnknownTool {
                        tool: spec.tool.clone(),
                        known: config
                            .tools
                            .keys()
                            .map(|t| t.as_ref())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
            let template = workflow.template.clone();
            let step: Option<&Step> = spec
                .step
                .and_then(|i| template.as_ref().and_then(|t| t.steps.get(i)));
            let request = CallRequest {
                workflow_id: &spec.workflow_id,
                tool,
                step_gate: step.and_then(|s| s.gate.as_ref()),
                approval_granted,
                allowed: workflow.allowed.as_ref(),
                now_ms: now,
            };
            let rates = RateState {
                global: &state.buckets,
                workflow: &workflow.buckets,
            };
            let decision = policy::decide(
                &config.policies,
                &workflow.history,
                &state.running,
                rates,
                &request,
            );
            let (kind, violations, gate) = match &decision {
                Decision::Allow => (DecisionKind::Allow, Vec::new(), None),
                Decision::Deny { violations } => (DecisionKind::Deny, violations.clone(), None),
                Decision::NeedsApproval { gate } => (
                    DecisionKind::NeedsApproval,
                    Vec::new(),
                    Some(gate.id.to_string()),
                ),
            };
            let call_id: Name = call_id.into();
            let status = match &decision {
                Decision::Allow => {
                    state.running.insert(
                        tool,
                        RunningCall {
                            workflow_id: workflow.id.clone(),
                            call_id: call_id.clone(),
                        },
                    );
                    policy::consume(
                        &config.policies,
                        tool,
                        &mut state.buckets,
                        &mut workflow.buckets,
                        now,
                    );
                    CallStatus::Running
                }
                Decision::Deny { violations } => {
                    workflow.violations += violations.len() as u32;
                    CallStatus::Denied {
                        violations: violations.clone(),
                    }
                }
                Decision::NeedsApproval { .. } => CallStatus::WaitingApproval {
                    approval_id: String::new(),
                },
            };
            workflow.record_call(CallEntry {
                call_id: call_id.clone(),
                tool: tool.clone(),
                step: step.map(|s| s.name.clone()),
                status,
                started_at_ms: now,
                duration_us: 0,
                approval_id: None,
                gate: gate.clone(),
            });
            workflow.refresh_state();
            let event = AuditEvent::CallDecided {
                workflow_id: spec.workflow_id.clone(),
                call_id: call_id.to_string(),
                tool: spec.tool.clone(),
                step: step.map(|s| s.name.clone()),
                arguments: spec.arguments.clone(),
                caller: spec.caller.clone(),
                decision: kind,
                violations,
                gate,
                config_version: config.version.clone(),
            };
            let verdict = match decision {
                Decision::Allow => {
                    let server_timeout = config
                        .servers
                        .get(&route.server)
                        .map_or(Duration::from_secs(30), |s| s.timeout);
                    let timeout = config
                        .policies
                        .tool(tool)
                        .and_then(|p| p.limits.timeout)
                        .unwrap_or(server_timeout);
                    Verdict::Run(Dispatch {
                        config: config.clone(),
                        server: route.server.clone(),
                        remote: route.remote_name.clone(),
                        timeout,
                    })
                }
                Decision::Deny { violations } => Verdict::Deny(violations),
                Decision::NeedsApproval { gate } => Verdict::Gate {
                    gate,
                    config_version: config.version.clone(),
                },
            };
            (verdict, event)
        };
        match &verdict {
            Verdict::Run(_) => self.inner.audit.submit(event).await?,
            Verdict::Deny(violations) => {
                self.inner.metrics.call_denied(
                    &spec.tool,
                    violations
                        .iter()
                        .map(|v| (v.rule_id.as_str(), v.rule_kind.as_str())),
                );
                self.inner.audit.append(event).await?;
            }
            Verdict::Gate { .. } => {
                self.inner.audit.append(event).await?;
            }
        }
        Ok(verdict)
    }
}
