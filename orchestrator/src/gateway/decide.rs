//! The decision of one call: the policy engine asked under the state lock, and the decision (with,
//! for an allowed call, its `call_started`) committed in the same section. The rest of a call's path
//! is in `call.rs`.

use super::Gateway;
use super::call::CallSpec;
use crate::audit::{AuditEvent, DecisionKind};
use crate::config::{Config, Step};
use crate::error::Error;
use crate::policy::{self, CallRequest, Decision, RateState, Violation};
use conductor_audit::{Admit, Queued};
use std::sync::Arc;
use std::time::Duration;

/// Where an allowed call goes, resolved under the lock from the workflow's configuration.
pub(super) struct Dispatch {
    pub config: Arc<Config>,
    pub server: String,
    pub remote: String,
    pub timeout: Duration,
    pub kind: crate::config::RouteKind,
}

/// What the engine said, once committed; `recorded` resolves when the decision is durable.
pub(super) struct Decided {
    pub verdict: Verdict,
    pub recorded: Queued<AuditEvent>,
}

pub(super) enum Verdict {
    Run(Dispatch),
    Deny(Vec<Violation>),
    Gate {
        gate: policy::ApprovalGate,
        config_version: String,
    },
}

impl Gateway {
    /// Decides under the state lock (so exclusive groups hold under any interleaving) and commits
    /// the decision in the same section. Refused before anything changes when the log cannot take a
    /// new intent.
    pub(super) fn decide(
        &self,
        spec: &CallSpec,
        call_id: &str,
        approval_granted: bool,
        now: i64,
    ) -> Result<Decided, Error> {
        let span = crate::telemetry::spans::decision(&spec.tool);
        let _decision = span.enter();
        let learned = self.learned_labels(&spec.tool);
        let mut state = self.inner.state();
        let state = &mut *state;
        let workflow = state
            .workflows
            .get(spec.workflow_id.as_str())
            .ok_or_else(|| Error::WorkflowNotFound(spec.workflow_id.clone()))?;
        if workflow.state.is_finished() {
            return Err(Error::WorkflowFinished {
                id: spec.workflow_id.clone(),
                state: workflow.state.as_str(),
            });
        }
        let config = workflow.config.clone();
        let (tool, route) = config
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
        crate::auth::permit_approval_reads(&config, &spec.caller, tool)?;
        let step: Option<&Step> = spec
            .step
            .and_then(|i| workflow.template.as_ref().and_then(|t| t.steps.get(i)));
        let request = CallRequest {
            workflow_id: &spec.workflow_id,
            tool,
            caller: crate::config::caller_name(&spec.caller),
            template: workflow.template.as_ref().map(|t| t.name.as_str()),
            arguments: Some(&spec.arguments),
            learned_labels: &learned,
            step_gate: step.and_then(|s| s.gate.as_ref()),
            approval_granted,
            allowed: workflow.allowed.as_ref(),
            order: workflow.step_order(spec.step),
            now_ms: now,
        };
        let rates = RateState {
            global: &state.buckets,
            workflow: &workflow.buckets,
        };
        // Labels follow the agent (SPEC §9.7): an MCP caller's other running workflows (of its
        // session, or of its session-free identity and client) are one context with this one; and
        // under `flow_scope` `caller`, what the caller's other sessions and workflows brought in
        // within the window counts too. A copy of the history only when they add a label.
        let mut extra = super::context::shares_context(&config, &workflow.caller)
            .then(|| state.context_labels(&workflow.caller, &workflow.id))
            .flatten();
        if let crate::config::FlowScope::Caller { window } = config.flow_scope
            && config.tells_apart(crate::config::caller_name(&workflow.caller))
            && let Some(followed) = state.caller_labels(
                crate::config::caller_name(&workflow.caller),
                now.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX)),
            )
        {
            extra = Some(match extra {
                Some(context) => context.with(&followed).unwrap_or(context),
                None => followed,
            });
        }
        let followed = extra
            .and_then(|extra| workflow.history.labels.with(&extra))
            .map(|labels| {
                let mut history = workflow.history.clone();
                history.labels = labels;
                history
            });
        let (decision, trace) = policy::decide_traced(
            &config.policies,
            followed.as_ref().unwrap_or(&workflow.history),
            &state.running,
            rates,
            &request,
        );
        let (kind, violations, gate, gate_reason) = match &decision {
            Decision::Allow => (DecisionKind::Allow, Vec::new(), None, None),
            Decision::Deny { violations } => (DecisionKind::Deny, violations.clone(), None, None),
            Decision::NeedsApproval { gate, reason } => (
                DecisionKind::NeedsApproval,
                Vec::new(),
                Some(gate.id.to_string()),
                (!reason.is_empty()).then(|| reason.clone()),
            ),
        };
        let workflow_labels = workflow
            .history
            .labels
            .names()
            .iter()
            .map(|l| l.to_string())
            .collect();
        let event = AuditEvent::CallDecided {
            workflow_id: spec.workflow_id.clone(),
            call_id: call_id.to_owned(),
            tool: spec.tool.clone(),
            step: step.map(|s| s.name.clone()),
            arguments: spec.arguments.clone(),
            caller: spec.caller.clone(),
            decision: kind,
            violations,
            gate,
            config_version: config.version.clone(),
            labels: trace.labels.iter().map(|l| l.to_string()).collect(),
            workflow_labels,
            conditions: trace.conditions,
            gate_reason,
            trace: crate::telemetry::propagation::trace_ref(),
        };
        if let AuditEvent::CallDecided {
            decision,
            violations,
            gate,
            labels,
            workflow_labels,
            conditions,
            ..
        } = &event
            && span.is_exported()
        {
            crate::telemetry::spans::decided(
                &span,
                crate::telemetry::spans::Decided {
                    call_id,
                    workflow_id: &spec.workflow_id,
                    outcome: match decision {
                        DecisionKind::Allow => "allow",
                        DecisionKind::Deny => "deny",
                        DecisionKind::NeedsApproval => "needs_approval",
                    },
                    rules: violations
                        .iter()
                        .map(|v| v.rule_id.as_str())
                        .chain(gate.as_deref())
                        .collect(),
                    workflow_labels,
                    tool_labels: labels,
                    conditions: conditions
                        .iter()
                        .map(|c| {
                            let value = match c.value {
                                Some(true) => "true",
                                Some(false) => "false",
                                None => "error",
                            };
                            format!("{}={value}", c.rule_id)
                        })
                        .collect(),
                },
            );
        }
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
                    kind: route.kind,
                })
            }
            Decision::Deny { violations } => Verdict::Deny(violations),
            Decision::NeedsApproval { gate, .. } => Verdict::Gate {
                gate,
                config_version: config.version.clone(),
            },
        };
        // An approved call was admitted when it was first decided: its second decision records
        // what follows from the approval, and is never refused half-way.
        let admit = if approval_granted {
            Admit::Outcome
        } else {
            Admit::Intent
        };
        let mut recorded = self.inner.commit(state, event, admit)?;
        if let Verdict::Run(dispatch) = &verdict {
            recorded = self.inner.commit(
                state,
                AuditEvent::CallStarted {
                    workflow_id: spec.workflow_id.clone(),
                    call_id: call_id.to_owned(),
                    tool: spec.tool.clone(),
                    server: dispatch.server.clone(),
                    trace: crate::telemetry::propagation::trace_ref(),
                },
                Admit::Outcome,
            )?;
        }
        Ok(Decided { verdict, recorded })
    }
}
