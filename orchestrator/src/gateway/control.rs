//! Workflow lifecycle and the control operations: start, finish, cancel, approve/deny, status, reload.

use super::{Gateway, now_ms};
use crate::approval::Approval;
use crate::audit::{ApprovalVerdict, AuditEvent, WorkflowEnd};
use crate::config::Config;
use crate::error::Error;
use crate::metrics::{RuleStats, ToolStats};
use crate::policy::Name;
use crate::workflow::{CallEntry, Workflow, WorkflowState};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A copy of a workflow for display, taken under the lock.
#[derive(Debug, Clone)]
pub struct WorkflowView {
    pub id: String,
    pub template: Option<String>,
    pub state: WorkflowState,
    pub steps_done: usize,
    pub steps_total: usize,
    pub next_step: Option<String>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub duration_ms: u64,
    pub caller: String,
    pub error: Option<String>,
    pub config_version: String,
    pub violations: u32,
    /// The call history, when asked for.
    pub calls: Option<Vec<CallEntry>>,
    pub outputs: Option<Map<String, Value>>,
    /// What the engine would decide now for each tool the workflow may call, when asked for.
    pub outlook: Option<Vec<Outlook>>,
}

/// What the engine would decide now for one tool: so a person or an agent sees the next allowed steps.
#[derive(Debug, Clone)]
pub struct Outlook {
    pub tool: String,
    pub decision: crate::audit::DecisionKind,
    pub hint: String,
}

impl WorkflowView {
    pub(crate) fn of(workflow: &Workflow, with_history: bool, now: i64) -> Self {
        WorkflowView {
            id: workflow.id.to_string(),
            template: workflow.template.as_ref().map(|t| t.name.clone()),
            state: workflow.state,
            steps_done: workflow.steps_done,
            steps_total: workflow.steps_total(),
            next_step: workflow.next_step().map(str::to_owned),
            started_at_ms: workflow.started_at_ms,
            finished_at_ms: workflow.finished_at_ms,
            duration_ms: workflow.duration_ms(now),
            caller: workflow.caller.clone(),
            error: workflow.error.clone(),
            config_version: workflow.config.version.clone(),
            violations: workflow.violations,
            calls: with_history.then(|| workflow.calls.clone()),
            outputs: with_history.then(|| workflow.outputs.clone()),
            outlook: None,
        }
    }
}

/// Asks the engine about every tool the workflow may call, without changing anything.
fn outlook(state: &super::State, workflow: &Workflow, now: i64) -> Vec<Outlook> {
    use crate::audit::DecisionKind;
    use crate::policy::{CallRequest, Decision, RateState, decide};
    let config = &workflow.config;
    let rates = RateState {
        global: &state.buckets,
        workflow: &workflow.buckets,
    };
    config
        .tools
        .keys()
        .filter(|tool| {
            workflow
                .allowed
                .as_ref()
                .is_none_or(|a| a.tools.contains(*tool))
        })
        .map(|tool| {
            let request = CallRequest {
                workflow_id: &workflow.id,
                tool,
                step_gate: None,
                approval_granted: false,
                allowed: None,
                now_ms: now,
            };
            let (decision, hint) = match decide(
                &config.policies,
                &workflow.history,
                &state.running,
                rates,
                &request,
            ) {
                Decision::Allow => (DecisionKind::Allow, String::new()),
                Decision::NeedsApproval { gate } => (
                    DecisionKind::NeedsApproval,
                    format!("waits for approval (gate {})", gate.id),
                ),
                Decision::Deny { violations } => (
                    DecisionKind::Deny,
                    violations
                        .iter()
                        .map(|v| v.unblock_hint.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            Outlook {
                tool: tool.to_string(),
                decision,
                hint,
            }
        })
        .collect()
}

/// The dashboard's figures.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    pub active_workflows: u32,
    pub completed_today: u32,
    pub failed_today: u32,
    pub policy_violations: u64,
    pub pending_approvals: u32,
    /// The most recently started workflows first (active ones before finished ones).
    pub workflows: Vec<WorkflowView>,
    pub tools: BTreeMap<String, ToolStats>,
    pub rules: BTreeMap<String, RuleStats>,
    pub last_seq: u64,
    pub config_version: String,
    pub now_ms: i64,
}

const DAY_MS: i64 = 86_400_000;

impl Gateway {
    /// Starts a workflow: ad hoc (no template) or a template run that the caller drives step by step.
    pub async fn start_workflow(
        &self,
        template: Option<&str>,
        input: Value,
        caller: &str,
    ) -> Result<WorkflowView, Error> {
        let config = self.config();
        let template = match template.filter(|t| !t.is_empty()) {
            None => None,
            Some(name) => Some(config.template(name).cloned().ok_or_else(|| {
                Error::UnknownTemplate {
                    name: name.to_owned(),
                    known: config
                        .templates
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?),
        };
        if !input.is_object() && !input.is_null() {
            return Err(Error::InvalidArgument(
                "the workflow input must be a JSON object".into(),
            ));
        }
        let now = now_ms();
        let id: Name = format!("wf-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).into();
        let caller = if caller.is_empty() {
            "anonymous".to_owned()
        } else {
            caller.to_owned()
        };
        let workflow = Workflow::new(
            id.clone(),
            template.clone(),
            config.clone(),
            caller.clone(),
            input.clone(),
            now,
        );
        let view = WorkflowView::of(&workflow, false, now);
        self.inner.state().workflows.insert(id.clone(), workflow);
        self.inner.metrics.workflow_started();
        self.inner
            .audit
            .append(AuditEvent::WorkflowStarted {
                workflow_id: id.to_string(),
                template: template.map(|t| t.name.clone()),
                input,
                caller,
                config_version: config.version.clone(),
            })
            .await?;
        Ok(view)
    }

    /// Runs a template as a new workflow in the orchestrator; with `wait`, returns when it has ended.
    pub async fn run_template(
        &self,
        template: &str,
        input: Value,
        caller: &str,
        wait: bool,
    ) -> Result<WorkflowView, Error> {
        if template.is_empty() {
            return Err(Error::InvalidArgument("name the template to run".into()));
        }
        let view = self.start_workflow(Some(template), input, caller).await?;
        let id: Name = view.id.as_str().into();
        let handle = crate::runner::spawn(self.clone(), id.clone(), None);
        if wait {
            handle.await.map_err(|_| Error::ShuttingDown)?;
            return self.workflow(&view.id, true);
        }
        Ok(view)
    }

    /// Ends a workflow and records how; a workflow that has already ended stays as it is.
    pub(crate) async fn finish_workflow(
        &self,
        id: &str,
        state: WorkflowState,
        error: Option<String>,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let duration_ms = {
            let mut guard = self.inner.state();
            let Some(workflow) = guard.workflows.get_mut(id) else {
                return Err(Error::WorkflowNotFound(id.to_owned()));
            };
            if workflow.state.is_finished() {
                return Ok(false);
            }
            workflow.finish(state, error.clone(), now);
            let duration = workflow.duration_ms(now);
            guard.finished(id.into());
            duration
        };
        self.inner.metrics.workflow_finished(state);
        let end = match state {
            WorkflowState::Completed => WorkflowEnd::Completed,
            WorkflowState::Cancelled => WorkflowEnd::Cancelled,
            _ => WorkflowEnd::Failed,
        };
        self.inner
            .audit
            .append(AuditEvent::WorkflowFinished {
                workflow_id: id.to_owned(),
                state: end,
                error,
                duration_ms,
            })
            .await?;
        Ok(true)
    }

    /// Cancels a workflow: pending approvals of it expire, running calls finish and are recorded.
    pub async fn cancel_workflow(
        &self,
        id: &str,
        reason: &str,
        caller: &str,
    ) -> Result<WorkflowView, Error> {
        let reason = if reason.is_empty() {
            format!("cancelled by {caller}")
        } else {
            format!("cancelled by {caller}: {reason}")
        };
        if !self
            .finish_workflow(id, WorkflowState::Cancelled, Some(reason.clone()))
            .await?
        {
            let state = self.workflow(id, false)?.state;
            return Err(Error::WorkflowFinished {
                id: id.to_owned(),
                state: state.as_str(),
            });
        }
        for approval in self.inner.approvals.pending_of(id) {
            let _ = self
                .inner
                .approvals
                .decide(&approval, ApprovalVerdict::Expired, caller, &reason, None)
                .await;
        }
        self.workflow(id, false)
    }

    pub fn workflow(&self, id: &str, with_history: bool) -> Result<WorkflowView, Error> {
        let now = now_ms();
        let state = self.inner.state();
        let workflow = state
            .workflows
            .get(id)
            .ok_or_else(|| Error::WorkflowNotFound(id.to_owned()))?;
        let mut view = WorkflowView::of(workflow, with_history, now);
        if with_history && !workflow.state.is_finished() {
            view.outlook = Some(outlook(&state, workflow, now));
        }
        Ok(view)
    }

    /// Workflows, most recently started first.
    pub fn workflows(&self, active_only: bool, limit: usize) -> Vec<WorkflowView> {
        let now = now_ms();
        let state = self.inner.state();
        let mut list: Vec<&Workflow> = state
            .workflows
            .values()
            .filter(|w| !active_only || !w.state.is_finished())
            .collect();
        list.sort_by(|a, b| {
            b.started_at_ms
                .cmp(&a.started_at_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        list.into_iter()
            .take(limit)
            .map(|w| WorkflowView::of(w, false, now))
            .collect()
    }

    pub fn pending_approvals(&self) -> Vec<Approval> {
        self.inner.approvals.pending()
    }

    pub fn approval(&self, id: &str) -> Option<Approval> {
        self.inner.approvals.get(id)
    }

    /// Decides an approval; returns once the decision is durable.
    pub async fn decide_approval(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
    ) -> Result<Approval, Error> {
        self.decide_approval_checked(id, approve, approver, reason, None)
            .await
    }

    /// Decides an approval that must be for arguments with `digest` (when given).
    pub async fn decide_approval_checked(
        &self,
        id: &str,
        approve: bool,
        approver: &str,
        reason: &str,
        digest: Option<&str>,
    ) -> Result<Approval, Error> {
        let verdict = if approve {
            ApprovalVerdict::Approved
        } else {
            ApprovalVerdict::Denied
        };
        self.inner
            .approvals
            .decide(id, verdict, approver, reason, digest)
            .await
    }

    /// Checks the bearer token of a control action (approve, deny, cancel, reload); a refusal is recorded.
    pub async fn authorize_control(
        &self,
        token: Option<&str>,
        action: &str,
        target: &str,
        caller: &str,
    ) -> Result<(), Error> {
        let config = self.config();
        let Some(expected) = config.control_token.as_deref() else {
            return Ok(());
        };
        let refusal = match token {
            None => Error::Unauthenticated(format!(
                "{action} needs the control token: send `authorization: Bearer <token>` (conductorctl reads CONDUCTOR_TOKEN)"
            )),
            Some(given) if !constant_time_eq(given.as_bytes(), expected.as_bytes()) => {
                Error::PermissionDenied(format!("{action} refused: the control token is wrong"))
            }
            Some(_) => return Ok(()),
        };
        self.inner
            .audit
            .append(AuditEvent::ControlRefused {
                action: action.to_owned(),
                target: target.to_owned(),
                reason: refusal.to_string(),
                caller: caller.to_owned(),
            })
            .await?;
        Err(refusal)
    }

    pub fn status(&self, recent: usize) -> StatusSnapshot {
        let now = now_ms();
        let day_start = now - now.rem_euclid(DAY_MS);
        let (active, completed, failed, workflows) = {
            let state = self.inner.state();
            let mut active = 0;
            let mut completed = 0;
            let mut failed = 0;
            for w in state.workflows.values() {
                match w.state {
                    WorkflowState::Running | WorkflowState::WaitingApproval => active += 1,
                    WorkflowState::Completed if w.finished_at_ms.unwrap_or(0) >= day_start => {
                        completed += 1
                    }
                    WorkflowState::Failed | WorkflowState::Cancelled
                        if w.finished_at_ms.unwrap_or(0) >= day_start =>
                    {
                        failed += 1
                    }
                    _ => {}
                }
            }
            let mut list: Vec<&Workflow> = state.workflows.values().collect();
            list.sort_by(|a, b| {
                a.state
                    .is_finished()
                    .cmp(&b.state.is_finished())
                    .then_with(|| b.started_at_ms.cmp(&a.started_at_ms))
                    .then_with(|| b.id.cmp(&a.id))
            });
            let views = list
                .into_iter()
                .take(recent)
                .map(|w| WorkflowView::of(w, false, now))
                .collect::<Vec<_>>();
            (active, completed, failed, views)
        };
        StatusSnapshot {
            active_workflows: active,
            completed_today: completed,
            failed_today: failed,
            policy_violations: self.inner.metrics.total_violations(),
            pending_approvals: u32::try_from(self.inner.approvals.pending().len())
                .unwrap_or(u32::MAX),
            workflows,
            tools: self.inner.metrics.tools(),
            rules: self.inner.metrics.rules(),
            last_seq: self.inner.audit.last_seq(),
            config_version: self.config().version.clone(),
            now_ms: now,
        }
    }

    /// Every tool with its description and schema (asking servers whose list is not known yet).
    pub async fn tools(&self) -> Vec<crate::downstream::ToolInfo> {
        self.inner.downstream.tools(&self.config()).await
    }

    /// The tools a caller may call: those of its workflow's allow-list when it has a workflow, else its
    /// client's; tools it may not call are left out.
    pub async fn tools_for(
        &self,
        caller: &str,
        workflow_id: Option<&str>,
    ) -> Vec<crate::downstream::ToolInfo> {
        let allowed = match workflow_id {
            Some(id) => self
                .inner
                .state()
                .workflows
                .get(id)
                .map(|w| w.allowed.clone()),
            None => None,
        };
        let allowed = allowed.unwrap_or_else(|| self.config().allowed_for(caller, None));
        let tools = self.tools().await;
        match allowed {
            None => tools,
            Some(list) => tools
                .into_iter()
                .filter(|t| list.tools.contains(t.name.as_str()))
                .collect(),
        }
    }

    /// Validates the configuration file again and swaps it in; running workflows keep their version.
    pub async fn reload_config(&self) -> Result<(Arc<Config>, String, u32), Error> {
        let path = self.inner.config_path.clone().ok_or_else(|| {
            Error::InvalidArgument(
                "the orchestrator was started without a configuration file".into(),
            )
        })?;
        let config = Arc::new(Config::load(&path)?);
        let previous = self.inner.config.swap(config.clone());
        self.inner.downstream.forget_catalog();
        let on_previous = {
            let state = self.inner.state();
            state
                .workflows
                .values()
                .filter(|w| !w.state.is_finished() && w.config.version != config.version)
                .count()
        };
        self.inner
            .audit
            .append(AuditEvent::ConfigLoaded {
                config_version: config.version.clone(),
                path: Some(path.display().to_string()),
            })
            .await?;
        tracing::info!(version = %config.version, previous = %previous.version, on_previous, "configuration reloaded");
        Ok((
            config,
            previous.version.clone(),
            u32::try_from(on_previous).unwrap_or(u32::MAX),
        ))
    }
}

/// Compares secrets without an early exit that would leak how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
