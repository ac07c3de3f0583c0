//! Workflow lifecycle and the control operations: start, finish, cancel, approve/deny, status, reload.

use super::refusals::Refusal;
use super::view::WorkflowView;
use super::{Gateway, now_ms};
use crate::approval::Approval;
use crate::audit::{ApprovalVerdict, AuditEvent, WorkflowEnd};
use crate::config::Config;
use crate::error::Error;
use crate::policy::Name;
use crate::workflow::WorkflowState;
use conductor_audit::Admit;
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

impl Gateway {
    /// Starts a workflow: ad hoc (no template) or a template run that the caller drives step by step.
    pub async fn start_workflow(
        &self,
        template: Option<&str>,
        input: Value,
        caller: &str,
    ) -> Result<WorkflowView, Error> {
        self.start_workflow_from(template, input, caller, None)
            .await
    }

    /// [`Gateway::start_workflow`], carrying the flow labels of workflow `from` (the context the
    /// new workflow is started in: a session's, a handle's, an identity's current one) into the
    /// new one, each with the call that brought it in: starting a workflow sheds no label.
    pub async fn start_workflow_from(
        &self,
        template: Option<&str>,
        input: Value,
        caller: &str,
        from: Option<&str>,
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
        config
            .arguments
            .check_value("the workflow input", &input)
            .map_err(Error::InvalidArgument)?;
        // A template's declared inputs are checked (and defaults filled in) before anything runs.
        let input = match &template {
            Some(t) => crate::template::check_input(&t.inputs, &input).map_err(|problems| {
                Error::InvalidArgument(format!(
                    "template {} cannot start: {}\n  an input that passes: {}",
                    t.name,
                    problems.join("; "),
                    crate::template::example(&t.inputs)
                ))
            })?,
            None => input,
        };
        let id = format!("wf-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let caller = if caller.is_empty() {
            "anonymous".to_owned()
        } else {
            caller.to_owned()
        };
        let (queued, view) = {
            let mut state = self.inner.state();
            let labels = from
                .and_then(|from| state.workflows.get(from))
                .map(|from| {
                    let mut carried = crate::policy::LabelSet::default();
                    carried.carry(&from.history.labels, &from.id);
                    carried.sorted()
                })
                .unwrap_or_default();
            let started = AuditEvent::WorkflowStarted {
                workflow_id: id.clone(),
                template: template.map(|t| t.name.clone()),
                input,
                caller,
                config_version: config.version.clone(),
                labels,
            };
            state.set_config(config);
            let queued = self.inner.commit(&mut state, started, Admit::Intent)?;
            let view = state
                .workflows
                .get(id.as_str())
                .map(|w| WorkflowView::of(w, false, now_ms()));
            (queued, view)
        };
        self.inner.metrics.workflow_started();
        queued.durable().await?;
        view.ok_or(Error::WorkflowNotFound(id))
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
        let handle = super::runner::spawn(self.clone(), id.clone(), None);
        if wait {
            handle.await.map_err(|_| Error::ShuttingDown)?;
            return self.workflow_history(&view.id).await;
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
        let end = match state {
            WorkflowState::Completed => WorkflowEnd::Completed,
            WorkflowState::Cancelled => WorkflowEnd::Cancelled,
            _ => WorkflowEnd::Failed,
        };
        let queued = {
            let mut guard = self.inner.state();
            let Some(workflow) = guard.workflows.get(id) else {
                return Err(Error::WorkflowNotFound(id.to_owned()));
            };
            if workflow.state.is_finished() {
                return Ok(false);
            }
            let finished = AuditEvent::WorkflowFinished {
                workflow_id: id.to_owned(),
                state: end,
                error,
                duration_ms: workflow.duration_ms(now),
            };
            self.inner.commit(&mut guard, finished, Admit::Outcome)?
        };
        self.inner.metrics.workflow_finished(state);
        queued.durable().await?;
        Ok(true)
    }

    /// Ends the ad-hoc workflows of an MCP session that has ended, in a task of the gateway's own
    /// (so that shutdown waits for it); see [`Gateway::end_session_workflow`].
    pub fn end_session_workflows(&self, ids: Vec<String>) {
        if ids.is_empty() || self.inner.shutdown.is_cancelled() {
            return;
        }
        let gateway = self.clone();
        self.inner.tasks.spawn(async move {
            for id in ids {
                if let Err(e) = gateway.end_session_workflow(&id).await {
                    tracing::warn!(workflow = %id, error = %e, "could not end the workflow of an ended MCP session");
                }
            }
        });
    }

    /// Ends an ad-hoc workflow whose MCP session has ended: nobody can call in it any more.
    pub async fn end_session_workflow(&self, id: &str) -> Result<(), Error> {
        self.end_ad_hoc(id, "its MCP session ended", "mcp")
            .await
            .map(drop)
    }

    /// Completes an ad-hoc workflow (running calls still finish and are recorded) and expires its
    /// pending approvals, since nobody waits for them any more. Template workflows and ended ones
    /// are left as they are: a template ends by itself. Returns whether it ended it.
    pub async fn end_ad_hoc(&self, id: &str, reason: &str, by: &str) -> Result<bool, Error> {
        let ad_hoc = self
            .workflow(id, false)
            .is_ok_and(|w| w.template.is_none() && !w.state.is_finished());
        if !ad_hoc {
            return Ok(false);
        }
        let ended = self
            .finish_workflow(id, WorkflowState::Completed, Some(reason.to_owned()))
            .await?;
        if ended {
            self.expire_pending(id, by, reason).await;
        }
        Ok(ended)
    }

    /// Ends the ad-hoc workflows idle longer than the configuration's `workflows.idle_timeout`;
    /// returns how many. Run periodically by the server.
    pub async fn end_idle_workflows(&self) -> usize {
        if self.standby().is_some() {
            // The active node ends them; a standby applies its records.
            return 0;
        }
        let idle = self.config().ad_hoc_idle_timeout;
        let before = now_ms().saturating_sub(i64::try_from(idle.as_millis()).unwrap_or(i64::MAX));
        let ids = self.inner.state().idle_ad_hoc(before);
        let reason = format!(
            "idle for {} (ad-hoc workflows end after workflows.idle_timeout)",
            humantime::format_duration(idle)
        );
        let mut ended = 0;
        for id in ids {
            match self.end_ad_hoc(&id, &reason, "system:idle").await {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(workflow = %id, error = %e, "could not end an idle workflow")
                }
            }
        }
        ended
    }

    /// Expires the pending approvals of a workflow that has ended.
    async fn expire_pending(&self, id: &str, by: &str, reason: &str) {
        let pending: Vec<String> = self
            .inner
            .state()
            .approvals
            .pending_of(id)
            .map(|a| a.id.clone())
            .collect();
        for approval in pending {
            let _ = self
                .hand_over_decision(&approval, ApprovalVerdict::Expired, by, reason, None)
                .await;
        }
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
        self.expire_pending(id, "system:cancel", &format!("its workflow was {reason}"))
            .await;
        self.workflow(id, false)
    }

    pub fn pending_approvals(&self) -> Vec<Approval> {
        self.inner
            .state()
            .approvals
            .pending
            .values()
            .cloned()
            .collect()
    }

    pub fn approval(&self, id: &str) -> Option<Approval> {
        self.inner.state().approvals.get(id).cloned()
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
        self.hand_over_decision(id, verdict, approver, reason, digest)
            .await
    }

    /// Records a refused control action (approve, deny, cancel, reload) through the one commit path,
    /// bounded (see [`super::refusals`]): `/metrics` counts it, and the log gets its record at once
    /// when it is the first of its source, action and reason in an interval, else in one summary with
    /// the count
    /// later. Each record is a new one, not the outcome of an admitted one: while the log cannot be
    /// written it is refused like any intent, so refusals cannot grow the backlog.
    pub async fn record_control_refused(&self, refusal: Refusal<'_>) -> Result<(), Error> {
        self.inner.metrics.control_refused(refusal.action);
        let verdict = self.inner.refusals.admit(&refusal, Instant::now());
        if verdict.counted {
            self.schedule_refusal_summaries();
        }
        for record in verdict.records {
            self.inner.record(record, Admit::Intent).await?;
        }
        Ok(())
    }

    /// Writes the summaries of counted refusals when their interval ends (or when the orchestrator
    /// stops), in a task of the gateway's own; one such task at a time.
    fn schedule_refusal_summaries(&self) {
        let Some(at) = self.inner.refusals.schedule() else {
            return;
        };
        let gateway = self.clone();
        self.inner.tasks.spawn(async move {
            let stopping = tokio::select! {
                () = tokio::time::sleep_until(at.into()) => false,
                () = gateway.inner.shutdown.cancelled() => true,
            };
            let (summaries, waiting) = gateway.inner.refusals.flush(Instant::now(), stopping);
            for summary in summaries {
                if let Err(e) = gateway.inner.record(summary, Admit::Intent).await {
                    tracing::warn!(error = %e, "the summary of refused control requests could not be recorded (/metrics still counts them)");
                }
            }
            if waiting && !stopping {
                gateway.schedule_refusal_summaries();
            }
        });
    }

    /// Every tool with its description and schema (asking servers whose list is not known yet).
    pub async fn tools(&self) -> Vec<crate::downstream::ToolInfo> {
        let tools = self.inner.downstream.tools(&self.config()).await;
        for tool in &tools {
            self.learn_tool_hints(&tool.name, tool.hints);
        }
        tools
    }

    /// Before the first decision on a tool of an MCP server, asks that server for its list once, so
    /// that the labels its annotations give hold from the first call, not from the first listing.
    /// A server that cannot be listed is left to the call itself to report.
    pub(super) async fn know_labels_of(&self, tool: &str) {
        let config = self.config();
        let Some(route) = config.tools.get(tool) else {
            return;
        };
        let Some(server) = config.servers.get(&route.server) else {
            return;
        };
        if matches!(server.transport, crate::config::Transport::Grpc { .. })
            || self.inner.downstream.listed(&server.name)
        {
            return;
        }
        // Rare (once per server and reload), and its future is large: boxed, so that the task of
        // every call does not carry its size.
        match Box::pin(self.inner.downstream.list_and_keep(server)).await {
            Ok(list) => {
                for (public, route) in config.tools.iter().filter(|(_, r)| r.server == server.name)
                {
                    if let Some(info) = list.iter().find(|t| t.name == route.remote_name) {
                        self.learn_tool_hints(public, info.hints);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(server = %server.name, error = %e, "cannot list the tools of the server before its first call");
            }
        }
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

    /// The MCP servers whose resources (`kind` [`RouteKind::ReadResource`]) or prompts
    /// ([`RouteKind::GetPrompt`]) a caller may use, by the name rules know them by: those its
    /// workflow's allow-list (else its client's) admits.
    ///
    /// [`RouteKind::ReadResource`]: crate::config::RouteKind::ReadResource
    /// [`RouteKind::GetPrompt`]: crate::config::RouteKind::GetPrompt
    pub fn offering(
        &self,
        caller: &str,
        workflow_id: Option<&str>,
        kind: crate::config::RouteKind,
    ) -> Vec<(String, crate::config::ServerConfig)> {
        let allowed = workflow_id
            .and_then(|id| {
                self.inner
                    .state()
                    .workflows
                    .get(id)
                    .map(|w| w.allowed.clone())
            })
            .unwrap_or_else(|| self.config().allowed_for(caller, None));
        let config = self.config();
        config
            .tools
            .iter()
            .filter(|(name, route)| {
                route.kind == kind
                    && allowed
                        .as_ref()
                        .is_none_or(|list| list.tools.contains(name.as_ref()))
            })
            .filter_map(|(name, route)| {
                let server = config.servers.get(&route.server)?;
                Some((name.to_string(), server.clone()))
            })
            .collect()
    }

    /// An MCP request that reads what a server offers without changing it (lists, completion, the
    /// log level, subscriptions), sent as the client gave it. Reads of a resource and prompts go
    /// through [`Gateway::call`] instead: they are decided and recorded.
    pub async fn ask_server(
        &self,
        server: &crate::config::ServerConfig,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        self.inner
            .downstream
            .request(server, method, params, None)
            .await
    }

    /// Listens to one server's announcements for a session-free client (see
    /// [`crate::downstream::Downstream::listen`]).
    pub async fn listen_to(
        &self,
        server: &crate::config::ServerConfig,
        filter: &serde_json::Value,
        client: &crate::downstream::SessionFree,
        heard: &tokio::sync::mpsc::Sender<crate::downstream::Heard>,
    ) -> Result<(), Error> {
        self.inner
            .downstream
            .listen(server, filter, client, heard)
            .await
    }

    /// Validates the configuration file again and swaps it in; running workflows keep their version.
    pub async fn reload_config(&self) -> Result<(Arc<Config>, String, u32), Error> {
        let path = self.inner.config_path.clone().ok_or_else(|| {
            Error::InvalidArgument(
                "the orchestrator was started without a configuration file".into(),
            )
        })?;
        let config = match Config::load(&path) {
            Ok(config) => Arc::new(config),
            Err(error) => {
                let problems = match error.problems() {
                    [] => vec![error.to_string()],
                    problems => problems.iter().map(ToString::to_string).collect(),
                };
                // A new record (refused like any intent while the log cannot be written, so
                // repeated reloads cannot grow the backlog); the caller hears the problems either way.
                let refused = AuditEvent::ConfigRefused {
                    path: Some(path.display().to_string()),
                    problems,
                };
                if let Err(e) = self.inner.record(refused, Admit::Intent).await {
                    tracing::warn!(error = %e, "the refused reload could not be recorded");
                }
                return Err(error.into());
            }
        };
        // The new configuration takes effect only once its `config_loaded` record is durable: an
        // intent, so it is refused at once while the log cannot be written, and nothing is swapped
        // in before the record is kept. A reload answered as failed has changed nothing.
        let loaded = AuditEvent::ConfigLoaded {
            config_version: config.version.clone(),
            path: Some(path.display().to_string()),
        };
        let queued = {
            let mut state = self.inner.state();
            self.inner.commit(&mut state, loaded, Admit::Intent)?
        };
        if let Err(error) = queued.durable().await {
            // The disk failed after the record was admitted: it waits in the log's backlog and
            // will be written when the disk takes records, so the log says after it that this
            // configuration never took effect (an outcome of that record: always queued, and
            // written whether or not anyone waits on it).
            let refused = AuditEvent::ConfigRefused {
                path: Some(path.display().to_string()),
                problems: vec![format!(
                    "configuration {} was not put in force: its config_loaded record could not be made durable ({error}); configuration {} stays",
                    config.version,
                    self.config().version
                )],
            };
            let unawaited = {
                let mut state = self.inner.state();
                self.inner.commit(&mut state, refused, Admit::Outcome)
            };
            drop(unawaited);
            return Err(error.into());
        }
        let previous = self.inner.config.swap(config.clone());
        self.inner.downstream.forget_catalog();
        let on_previous = {
            let mut state = self.inner.state();
            state.set_config(config.clone());
            state
                .active()
                .filter(|w| w.config.version != config.version)
                .count()
        };
        tracing::info!(version = %config.version, previous = %previous.version, on_previous, "configuration reloaded");
        Ok((
            config,
            previous.version.clone(),
            u32::try_from(on_previous).unwrap_or(u32::MAX),
        ))
    }
}
