//! The one path every call takes, from the gRPC front, the MCP front and template runs alike:
//! request → decide → audit(decision) → [approval] → audit(intent) durable → forward →
//! audit(outcome) durable → reply.
//!
//! Each call runs in its own task, so a caller that goes away cannot leave a call half-recorded. A
//! call whose intent cannot be made durable is never forwarded: it ends `unavailable`, and that
//! ending is recorded as soon as the log can take it.

use super::decide::{Decided, Dispatch, Verdict};
use super::{Gateway, now_ms};
use crate::approval::Approval;
use crate::audit::{ApprovalVerdict, AuditEvent, AuditRecord, Outcome};
use crate::config::{RouteKind, Transport};
use crate::downstream::{Forward, RelaySink, SessionFree, ToolFailure};
use crate::error::Error;
use crate::metrics::Counted;
use crate::policy::Violation;
use crate::telemetry::{durations, spans};
use conductor_audit::Admit;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

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
    /// An MCP server's result exactly as it gave it, for the MCP front to pass on unchanged.
    pub served: Option<std::sync::Arc<Value>>,
}

impl Gateway {
    /// Runs a call to its end in a task of its own and returns its report.
    pub async fn call(&self, spec: CallSpec) -> Result<CallReport, Error> {
        self.call_with_progress(spec, None).await
    }

    /// [`Gateway::call`], sending the progress and log messages the tool sends (MCP servers do) to
    /// `progress`.
    pub async fn call_with_progress(
        &self,
        spec: CallSpec,
        progress: Option<RelaySink>,
    ) -> Result<CallReport, Error> {
        self.call_for(spec, progress, None).await
    }

    /// [`Gateway::call_with_progress`] for a session-free MCP client (`session_free`): a server
    /// that speaks its era is asked in it, with what the client said of itself and its answers to
    /// the server's last input requests (see [`SessionFree`]).
    pub async fn call_for(
        &self,
        spec: CallSpec,
        progress: Option<RelaySink>,
        session_free: Option<Arc<SessionFree>>,
    ) -> Result<CallReport, Error> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // Before any work that costs memory in proportion (the record, the text sent to the tool):
        // the fronts that parse JSON themselves have checked its text already, this covers the rest.
        self.config()
            .arguments
            .check_value("the arguments", &spec.arguments)
            .map_err(Error::InvalidArgument)?;
        let spec = self.bind_step(spec);
        let step_of = spec.step.map(|_| spec.workflow_id.clone());
        let gateway = self.clone();
        // A call whose caller goes away is withdrawn: a request for approval it waits on ends
        // (nobody would receive what an approval released), and a call that runs is cancelled at
        // its server (MCP's `notifications/cancelled`, gRPC's reset stream); either way it is
        // recorded to its end.
        let abandoned = CancellationToken::new();
        let withdraw = abandoned.clone().drop_guard();
        // The call's spans stay under its caller's (the request's SERVER span).
        let task = self.inner.tasks.spawn(spans::in_current(async move {
            gateway
                .execute_until(
                    spec,
                    None,
                    &abandoned,
                    progress.as_ref(),
                    session_free.as_deref(),
                )
                .await
        }));
        let report = task.await.map_err(|_| Error::ShuttingDown);
        withdraw.disarm();
        let report = report??;
        if let Some(workflow_id) = step_of {
            self.complete_if_every_step_done(&workflow_id).await;
        }
        Ok(report)
    }

    /// The call path. `resumed` is an approval request that was pending when the orchestrator
    /// restarted: the call then waits for it instead of being decided anew.
    pub(crate) async fn execute(
        &self,
        spec: CallSpec,
        resumed: Option<Approval>,
    ) -> Result<CallReport, Error> {
        self.execute_until(spec, resumed, &CancellationToken::new(), None, None)
            .await
    }

    /// [`Gateway::execute`], withdrawing the call's request for approval if `abandoned` is
    /// cancelled while it waits (its caller cancelled the request or went away).
    async fn execute_until(
        &self,
        spec: CallSpec,
        resumed: Option<Approval>,
        abandoned: &CancellationToken,
        progress: Option<&RelaySink>,
        session_free: Option<&SessionFree>,
    ) -> Result<CallReport, Error> {
        let (call_id, approval, decisions) = match resumed {
            Some(approval) => {
                let decisions = self.wait_for_decision(&approval.id);
                (approval.call_id.clone(), approval, decisions)
            }
            None => {
                self.know_labels_of(&spec.tool).await;
                let call_id = crate::ids::call_id();
                let Decided { verdict, recorded } =
                    self.decide(&spec, &call_id, false, now_ms())?;
                if let Err(e) = durable(recorded, "decision").await {
                    return Err(self.not_recorded(&spec, &call_id, e.into()).await);
                }
                match verdict {
                    Verdict::Run(dispatch) => {
                        return self
                            .forward(
                                &spec,
                                call_id,
                                dispatch,
                                None,
                                progress,
                                abandoned,
                                session_free,
                            )
                            .await;
                    }
                    Verdict::Deny(violations) => {
                        self.count_denied(&spec.tool, &violations);
                        return Ok(CallReport {
                            call_id,
                            tool: spec.tool,
                            result: CallResult::Denied(violations),
                            duration_us: 0,
                            approval: None,
                            served: None,
                        });
                    }
                    Verdict::Gate {
                        gate,
                        config_version,
                    } => {
                        // The gated path is boxed: the task of every call carries only the
                        // size of the common path.
                        let (approval, decisions) =
                            Box::pin(self.request_approval(&spec, &call_id, &gate, config_version))
                                .await?;
                        (call_id, approval, decisions)
                    }
                }
            }
        };
        let waiting = spans::approval_wait(&approval.id, &approval.gate);
        let approval = match waiting
            .wrap(Box::pin(
                self.await_approval(approval, decisions, abandoned),
            ))
            .await
        {
            Ok(approval) => approval,
            // The wait ended with the orchestrator: the request stays pending and resumes.
            Err(Error::ShuttingDown) => return Err(Error::ShuttingDown),
            // The decision is in the state but could not be made durable: the call does not run,
            // and its ending is queued behind the decision, so the log closes it as the state does.
            Err(e) => {
                self.end_unrun(&spec, &call_id, Outcome::Unavailable, e.to_string())
                    .await;
                return Err(e);
            }
        };
        spans::approval_decided(
            &waiting,
            match approval.verdict {
                Some(ApprovalVerdict::Approved) => "approved",
                Some(ApprovalVerdict::Denied) => "denied",
                Some(ApprovalVerdict::Expired) => "expired",
                None => "pending",
            },
            &approval.decided_by,
            std::time::Duration::from_millis(
                u64::try_from(
                    approval
                        .decided_at_ms
                        .saturating_sub(approval.requested_at_ms),
                )
                .unwrap_or(0),
            ),
        );
        let released = approval.verdict == Some(ApprovalVerdict::Approved)
            && approval.arguments_digest == crate::approval::digest(&spec.arguments);
        if !released {
            let refusal = approval.refusal();
            self.count_denied(&spec.tool, std::slice::from_ref(&refusal));
            return Ok(CallReport {
                call_id,
                tool: spec.tool,
                result: CallResult::Denied(vec![refusal]),
                duration_us: 0,
                approval: Some(approval),
                served: None,
            });
        }
        // Its workflow may have ended (or its tool gone with a reload) since the request: the call
        // is open in the log, so it is closed there, as a call that did not run.
        let Decided { verdict, recorded } = match self.decide(&spec, &call_id, true, now_ms()) {
            Ok(decided) => decided,
            Err(e) => {
                self.end_unrun(&spec, &call_id, Outcome::Unavailable, e.to_string())
                    .await;
                return Err(e);
            }
        };
        if let Err(e) = durable(recorded, "decision").await {
            return Err(self.not_recorded(&spec, &call_id, e.into()).await);
        }
        match verdict {
            Verdict::Run(dispatch) => {
                self.forward(
                    &spec,
                    call_id,
                    dispatch,
                    Some(approval),
                    progress,
                    abandoned,
                    session_free,
                )
                .await
            }
            Verdict::Deny(violations) => {
                self.count_denied(&spec.tool, &violations);
                Ok(CallReport {
                    call_id,
                    tool: spec.tool,
                    result: CallResult::Denied(violations),
                    duration_us: 0,
                    approval: Some(approval),
                    served: None,
                })
            }
            Verdict::Gate { .. } => Err(Error::Internal(
                "an approved call was gated again; this is a bug".into(),
            )),
        }
    }

    /// Ends a call whose intent could not be made durable: it is not forwarded, its ending is
    /// committed (and written as soon as the log can take it, after the intent), and its caller is
    /// told why. Returns the error to answer with.
    pub(super) async fn not_recorded(&self, spec: &CallSpec, call_id: &str, error: Error) -> Error {
        tracing::warn!(call = %call_id, tool = %spec.tool, %error, "call not forwarded: its intent could not be recorded");
        self.end_unrun(spec, call_id, Outcome::Unavailable, error.to_string())
            .await;
        error
    }

    /// Commits the ending of a call that did not run. Its record is an outcome: queued even while
    /// the log cannot be written, so the log and the state agree once it can.
    pub(super) async fn end_unrun(
        &self,
        spec: &CallSpec,
        call_id: &str,
        outcome: Outcome,
        message: String,
    ) {
        let finished = AuditEvent::CallFinished {
            workflow_id: spec.workflow_id.clone(),
            call_id: call_id.to_owned(),
            tool: spec.tool.clone(),
            outcome,
            duration_us: 0,
            error: Some(message),
            result: None,
            details: None,
            trace: crate::telemetry::propagation::trace_ref(),
        };
        if let Err(e) = self.inner.record(finished, Admit::Outcome).await {
            tracing::warn!(call = %call_id, error = %e, "the ending of a call that did not run is not durable yet; it is written when the log can take it");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        spec: &CallSpec,
        call_id: String,
        dispatch: Dispatch,
        approval: Option<Approval>,
        progress: Option<&RelaySink>,
        abandoned: &CancellationToken,
        session_free: Option<&SessionFree>,
    ) -> Result<CallReport, Error> {
        let Dispatch {
            config,
            server,
            remote,
            timeout,
            kind,
        } = dispatch;
        let started = Instant::now();
        // Recorded as started, but this node may have been paused (or cut off from the store)
        // since, long enough for another to take its lease over and record the call as
        // interrupted: then it is not sent. (The check is by this node's own clock, just before
        // the send; see `AuditLog::lease_in_force`.)
        let result = match (
            self.inner.audit.lease_in_force(),
            config.servers.get(&server),
        ) {
            (Err(ran_out), _) => Err(Error::Audit(ran_out)),
            (Ok(()), None) => Err(Error::Unavailable {
                server: server.clone(),
                message: "no longer configured".into(),
            }),
            (Ok(()), Some(server_config)) => {
                // A tool's own time-out replaces its server's; the common case borrows.
                let server_config = if server_config.timeout == timeout {
                    Cow::Borrowed(server_config)
                } else {
                    let mut own = server_config.clone();
                    own.timeout = timeout;
                    Cow::Owned(own)
                };
                // What the server sends on the way goes to the caller through a relay that
                // records the server's own requests (who asked what, and how it ended).
                let relaying =
                    progress.map(|sink| self.recording_asks(sink, spec, &call_id, &server));
                let forward = Forward {
                    server: &server_config,
                    remote_name: &remote,
                    arguments: &spec.arguments,
                    workflow_id: &spec.workflow_id,
                    call_id: &call_id,
                    relay: relaying.as_ref().map(|(relay, _)| relay),
                    kind,
                    cancel: Some(abandoned),
                    session_free,
                };
                // A session-free client's answers to the server's last input requests go with
                // this call: recorded as answered, as a server's request relayed on a stream is.
                // Only an HTTP MCP server can have asked for them; answers sent to any other were
                // asked by nobody, and are not recorded (an anonymous request would otherwise
                // write a record per key it made up).
                if let Some(answers) = session_free.and_then(|c| c.input_responses.as_ref())
                    && matches!(server_config.transport, Transport::McpHttp { .. })
                {
                    self.record_answers(spec, &call_id, &server, answers).await;
                }
                // As the caller: a server that exchanges callers' tokens is sent one for it.
                let client = spans::client(&spans::Downstream {
                    server: &server,
                    tool: &remote,
                    grpc: matches!(server_config.transport, Transport::Grpc { .. }),
                    url: match &server_config.transport {
                        Transport::Grpc { url } | Transport::McpHttp { url } => Some(url),
                        Transport::McpStdio { .. } => None,
                    },
                    method: mcp_method(kind),
                });
                let sent = Instant::now();
                // Boxed: the clients' futures are large (10–20 KiB), and every enclosing future
                // (this one, the call's task) would otherwise carry their size and be copied whole
                // at each move (a spawn, a first poll): 8% of a call's CPU went to `memmove`
                // (bench/RESULTS.md, issue 26).
                let forwarding = client.wrap(crate::downstream::credentials::as_caller(
                    &spec.caller,
                    Box::pin(self.inner.downstream.call(forward)),
                ));
                // A caller with no stream cannot be asked anything: what the server asked is
                // refused at once, and recorded (below) as a relayed request is.
                let (answer, refused) = if relaying.is_some() {
                    (forwarding.await, Vec::new())
                } else {
                    crate::downstream::noting_refusals(forwarding).await
                };
                let error_type = downstream_finished(&client, &answer);
                if !matches!(server_config.transport, Transport::Grpc { .. }) {
                    self.inner.metrics.operation_durations.record(
                        durations::Side::Client,
                        mcp_method(kind),
                        Some(&remote),
                        error_type,
                        sent.elapsed(),
                    );
                }
                for method in refused {
                    let why = crate::downstream::AskRefused::cannot_answer(&method).message;
                    self.record_asked(spec, &call_id, &server, method, "refused", Some(why))
                        .await;
                }
                // Everything the server sent before its answer reaches the caller before it.
                if let Some((relay, relayed)) = relaying {
                    drop(relay);
                    let _ = relayed.await;
                }
                if let Ok(reply) = &answer
                    && let Ok(outcome) = &reply.outcome
                    && let Some(asked) = outcome.get("inputRequests").and_then(Value::as_object)
                    && reply.served.as_deref().is_some_and(|served| {
                        served.get("resultType").and_then(Value::as_str) == Some("input_required")
                    })
                {
                    let methods = asked
                        .values()
                        .map(|method| method.as_str().unwrap_or("unknown").to_owned());
                    self.record_each(spec, &call_id, &server, methods, "asked")
                        .await;
                }
                answer
            }
        };
        let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The result moves into its record and back out once that is durable (copied only when a
        // watcher shares the record), so a large result is held once, not twice.
        let mut result = result;
        let result_value = match result.as_mut().map(|r| &mut r.outcome) {
            Ok(Ok(value)) => Some(std::mem::take(value)),
            _ => None,
        };
        let (outcome, error, details) = match result.as_ref().map(|r| &r.outcome) {
            Ok(Ok(_)) => (Outcome::Succeeded, None, None),
            Ok(Err(failure)) => (
                Outcome::Failed,
                Some(format!("{}: {}", failure.code, failure.message)),
                failure.details.clone(),
            ),
            Err(
                e @ (Error::Unavailable { .. }
                | Error::Audit(conductor_audit::AuditError::LeaseRanOut { .. })),
            ) => (Outcome::Unavailable, Some(e.to_string()), None),
            Err(e) => (Outcome::Failed, Some(e.to_string()), None),
        };
        self.inner.metrics.call_finished(
            &spec.tool,
            if outcome == Outcome::Succeeded {
                Counted::Success
            } else {
                Counted::Failure
            },
            duration_us,
        );
        let recorded = self
            .inner
            .record_traced(
                "outcome",
                AuditEvent::CallFinished {
                    workflow_id: spec.workflow_id.clone(),
                    call_id: call_id.clone(),
                    tool: spec.tool.clone(),
                    outcome,
                    duration_us,
                    error,
                    result: result_value,
                    details,
                    trace: crate::telemetry::propagation::trace_ref(),
                },
                Admit::Outcome,
            )
            .await?;
        let reply = result?;
        let result = match reply.outcome {
            Ok(_) => CallResult::Succeeded(recorded_result(recorded)),
            Err(failure) => CallResult::Failed(failure),
        };
        Ok(CallReport {
            call_id,
            tool: spec.tool.clone(),
            result,
            duration_us,
            approval,
            served: reply.served,
        })
    }

    /// A relay in front of `front` (the caller's) that passes on what the server sends, and records
    /// each of the server's own requests to the client with its outcome (`server_asked`), never
    /// what was asked or answered. It ends when the returned sender is dropped, once it has passed
    /// everything on.
    fn recording_asks(
        &self,
        front: &RelaySink,
        spec: &CallSpec,
        call_id: &str,
        server: &str,
    ) -> (RelaySink, tokio::task::JoinHandle<()>) {
        use crate::downstream::{Ask, AskRefused, Relayed};
        let (relay, mut relayed) = tokio::sync::mpsc::channel(64);
        let front = front.clone();
        let gateway = self.clone();
        let (workflow_id, tool) = (spec.workflow_id.clone(), spec.tool.clone());
        let (call_id, server) = (call_id.to_owned(), server.to_owned());
        let task = self.inner.tasks.spawn(async move {
            while let Some(update) = relayed.recv().await {
                let Relayed::Ask(ask) = update else {
                    let _ = front.try_send(update);
                    continue;
                };
                let Ask {
                    method,
                    params,
                    answer,
                } = ask;
                let (asked, answered) = tokio::sync::oneshot::channel();
                let passed = Ask {
                    method: method.clone(),
                    params,
                    answer: asked,
                };
                let result = match front.send(Relayed::Ask(passed)).await {
                    Ok(()) => answered
                        .await
                        .unwrap_or_else(|_| Err(AskRefused::cannot_answer(&method))),
                    Err(_) => Err(AskRefused::cannot_answer(&method)),
                };
                let event = AuditEvent::ServerAsked {
                    workflow_id: workflow_id.clone(),
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    server: server.clone(),
                    method,
                    outcome: if result.is_ok() { "answered" } else { "refused" }.to_owned(),
                    error: result.as_ref().err().map(|refused| refused.message.clone()),
                };
                if let Err(e) = gateway.inner.record(event, Admit::Outcome).await {
                    tracing::warn!(call = %call_id, error = %e, "a server's request to the client could not be recorded yet");
                }
                let _ = answer.send(result);
            }
        });
        (relay, task)
    }

    /// Records one of a server's requests to the client of a call (`server_asked`): who asked
    /// what, and how it ended, never what was asked or answered.
    async fn record_asked(
        &self,
        spec: &CallSpec,
        call_id: &str,
        server: &str,
        method: String,
        outcome: &str,
        error: Option<String>,
    ) {
        let event = AuditEvent::ServerAsked {
            workflow_id: spec.workflow_id.clone(),
            call_id: call_id.to_owned(),
            tool: spec.tool.clone(),
            server: server.to_owned(),
            method,
            outcome: outcome.to_owned(),
            error,
        };
        if let Err(e) = self.inner.record(event, Admit::Outcome).await {
            tracing::warn!(call = %call_id, error = %e, "a server's request to the client could not be recorded yet");
        }
    }

    /// Records the answers a session-free client brings to the input a server asked for in the
    /// last round (SEP-2322): one `server_asked` per answer, `answered` (or `refused` when the
    /// client's answer is an error or a declined elicitation). The method is read from the
    /// answer's shape, since the retry names only the keys.
    async fn record_answers(&self, spec: &CallSpec, call_id: &str, server: &str, answers: &Value) {
        let Some(answers) = answers.as_object() else {
            return;
        };
        let recorded = answers.len().min(crate::downstream::MAX_ASKS_RECORDED);
        for answer in answers.values().take(recorded) {
            let method = if answer.get("action").is_some() {
                "elicitation/create"
            } else if answer.get("roots").is_some() {
                "roots/list"
            } else if answer.get("role").is_some() || answer.get("model").is_some() {
                "sampling/createMessage"
            } else {
                "unknown"
            };
            let declined = answer
                .get("action")
                .and_then(Value::as_str)
                .filter(|action| *action != "accept");
            let (outcome, error) = match (answer.get("error"), declined) {
                (Some(_), _) => (
                    "refused",
                    Some("the client answered with an error".to_owned()),
                ),
                (None, Some(action)) => {
                    ("refused", Some(format!("the client's user chose {action}")))
                }
                (None, None) => ("answered", None),
            };
            self.record_asked(spec, call_id, server, method.to_owned(), outcome, error)
                .await;
        }
        self.record_left_out(spec, call_id, server, answers.len() - recorded, "answered")
            .await;
    }

    /// Records each of `methods` as a server's request with `outcome`, up to
    /// [`crate::downstream::MAX_ASKS_RECORDED`] of them; the rest in one record that counts them.
    async fn record_each(
        &self,
        spec: &CallSpec,
        call_id: &str,
        server: &str,
        methods: impl ExactSizeIterator<Item = String>,
        outcome: &str,
    ) {
        let total = methods.len();
        let recorded = total.min(crate::downstream::MAX_ASKS_RECORDED);
        for method in methods.take(recorded) {
            self.record_asked(spec, call_id, server, method, outcome, None)
                .await;
        }
        self.record_left_out(spec, call_id, server, total - recorded, outcome)
            .await;
    }

    /// One record for `left_out` requests (or answers) beyond what a call records one by one.
    async fn record_left_out(
        &self,
        spec: &CallSpec,
        call_id: &str,
        server: &str,
        left_out: usize,
        outcome: &str,
    ) {
        if left_out > 0 {
            let why = format!(
                "{left_out} more in this round, beyond the {} a call records one by one",
                crate::downstream::MAX_ASKS_RECORDED
            );
            self.record_asked(spec, call_id, server, "unknown".into(), outcome, Some(why))
                .await;
        }
    }

    /// Counts a denial under each blocking rule's kind: a refused flow gate under `flow`.
    fn count_denied(&self, tool: &str, violations: &[Violation]) {
        let config = self.config();
        self.inner.metrics.call_denied(
            tool,
            violations
                .iter()
                .map(|v| (v.rule_id.as_str(), config.policies.counted_kind(v).as_str())),
        );
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
}

/// The result a durable `call_finished` record carries: moved out when nothing else holds the
/// record any more, else copied (a watcher shares it).
fn recorded_result(record: Arc<AuditRecord>) -> Value {
    match Arc::try_unwrap(record) {
        Ok(AuditRecord {
            event:
                AuditEvent::CallFinished {
                    result: Some(value),
                    ..
                },
            ..
        }) => value,
        Ok(_) => Value::Null,
        Err(shared) => match &shared.event {
            AuditEvent::CallFinished {
                result: Some(value),
                ..
            } => value.clone(),
            _ => Value::Null,
        },
    }
}

/// Waits until a queued record is durable, noted as an audit commit event (`what` it records).
async fn durable(
    recorded: conductor_audit::Queued<AuditEvent>,
    what: &'static str,
) -> Result<Arc<AuditRecord>, conductor_audit::AuditError> {
    let started = Instant::now();
    let durable = recorded.durable_in_batch().await;
    match &durable {
        Ok((record, batch)) => {
            spans::audit_committed(what, Ok((record.seq, *batch)), started.elapsed())
        }
        Err(e) => spans::audit_committed(what, Err(e), started.elapsed()),
    }
    durable.map(|(record, _)| record)
}

/// Ends a downstream call's CLIENT span with its outcome; returns its `error.type`.
fn downstream_finished(
    span: &spans::CallSpan,
    answer: &Result<crate::downstream::ToolReply, Error>,
) -> Option<&'static str> {
    let error_type = match answer {
        Ok(reply) => match &reply.outcome {
            Ok(_) => None,
            Err(_) => Some("tool_error"),
        },
        Err(Error::Unavailable { .. }) => Some("unavailable"),
        Err(Error::Cancelled { .. }) => Some("cancelled"),
        Err(_) => Some("downstream_error"),
    };
    spans::finish(span, error_type);
    error_type
}

/// The MCP method a route is called with.
fn mcp_method(kind: RouteKind) -> &'static str {
    match kind {
        RouteKind::Tool => "tools/call",
        RouteKind::ReadResource => "resources/read",
        RouteKind::GetPrompt => "prompts/get",
    }
}
