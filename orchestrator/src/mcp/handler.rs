//! The MCP `ServerHandler`: `tools/list` from the gateway's catalogue, `tools/call` through the one call
//! path ([`Gateway::call`]), and the `conductor_start_workflow` tool that (re)binds the session.
//!
//! It never decides anything itself: policies, audit and metrics all happen in the gateway. It only
//! translates, and keeps which workflow this MCP session is.

use super::handle::{HANDLE_ARGUMENT, HANDLE_META_KEY, HandleKey};
use super::reply;
use super::sessions::SessionTag;
use super::waiting::ApprovalProgress;
use crate::auth::Identity;
use crate::config::SessionFreeWorkflow;
use crate::downstream::SessionFree;
use crate::error::Error;
use crate::gateway::{CallSpec, Gateway};
use rmcp::model::RequestId;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressToken, ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig, Tool,
};
#[allow(deprecated)]
use rmcp::model::{SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The tool that starts a new workflow for the session, ad hoc or from a template.
pub const START_WORKFLOW_TOOL: &str = "conductor_start_workflow";
/// The tool that ends the caller's workflow (the handle's, the session's, or the identity's
/// current one).
pub const END_WORKFLOW_TOOL: &str = "conductor_end_workflow";
/// `_meta` key (in results, and accepted in requests) naming the workflow a call belongs to.
pub const WORKFLOW_META_KEY: &str = "io.conductorio/workflowId";
/// HTTP header naming the workflow a request belongs to (for clients without sessions).
pub const WORKFLOW_HEADER: &str = "x-conductor-workflow";

/// Where the handler is served, for the caller name recorded with each workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    Http,
    Stdio,
}

/// One MCP session's handler. Streamable HTTP keeps a [`Session`] per session and wraps it in a
/// handler per request (and builds a fresh one per request in the session-free 2026-07-28 era);
/// stdio has exactly one. Clones share the session.
#[derive(Clone)]
pub struct ConductorMcp {
    session: Arc<Session>,
}

/// What one MCP session keeps: its workflow, and the ad-hoc workflows it started, ended when the
/// session ends (its last holder lets go) so that they do not stay "active" on the
/// dashboard forever. Only a real session records any: a handler that serves one session-free
/// request leaves its workflow open, since its client continues it by id (`X-Conductor-Workflow` or
/// `_meta`).
pub(super) struct Session {
    pub(super) gateway: Gateway,
    pub(super) front: Front,
    /// What every handler of the front shares: the handle key, and the lock under which a
    /// session-free identity's current workflow is found or started (so two first calls start
    /// one).
    pub(super) shared: Arc<FrontShared>,
    /// The workflow of this session, started lazily at the first `tools/call`. An async mutex, so two
    /// concurrent first calls start one workflow, not two.
    workflow: tokio::sync::Mutex<Option<String>>,
    started: std::sync::Mutex<Vec<String>>,
    /// The client's name from its `initialize`, for requests served without the SDK's session (the
    /// HTTP front serves each request on its own, see `super::streamable`).
    client: std::sync::OnceLock<String>,
    /// The protocol version `initialize` agreed on.
    protocol: std::sync::OnceLock<ProtocolVersion>,
    /// The requests being answered now, by JSON-RPC id: where the client's
    /// `notifications/cancelled` finds the request it names.
    inflight: std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>,
    /// The least severe log message the client wants (`logging/setLevel`); none: it asked for none.
    pub(super) log_level: std::sync::Mutex<Option<super::offered::Severity>>,
    /// What the client said it can answer (sampling, elicitation, roots) in its `initialize`.
    capabilities: std::sync::OnceLock<ClientCapabilities>,
    /// The requests sent to the client on a call's stream (a server's sampling or elicitation,
    /// relayed), by the id they went out under: where the client's answer goes back to.
    asked: std::sync::Mutex<std::collections::HashMap<String, Asked>>,
    /// The ids requests to the client go out under: one sequence for the session, since each
    /// request's handler numbers its own from zero.
    ask_ids: std::sync::atomic::AtomicI64,
    /// What the servers announce to this session (the resources it subscribed to that changed),
    /// for its standalone event streams; made when the first is opened.
    announced: std::sync::OnceLock<tokio::sync::broadcast::Sender<Arc<str>>>,
}

/// A request sent to the client, waiting for its answer.
struct Asked {
    /// The id its handler gave it.
    original: RequestId,
    /// The handler's way in.
    back: tokio::sync::mpsc::Sender<rmcp::model::ClientJsonRpcMessage>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let started = std::mem::take(self.started.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.gateway.end_session_workflows(started);
    }
}

/// A request being answered; it stops being cancellable when this is dropped.
pub(super) struct Tracked {
    session: Arc<Session>,
    key: String,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.session
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// What every handler of one front shares.
pub struct FrontShared {
    pub handles: HandleKey,
    opening: tokio::sync::Mutex<()>,
    /// Which server offers which resource and prompt, as their lists last said.
    pub(super) owners: std::sync::Mutex<super::offered::Owners>,
    /// The resources sessions subscribed to (`resources/subscribe`): server, URI and session.
    subscribed: std::sync::Mutex<Vec<(String, String, std::sync::Weak<Session>)>>,
}

/// How many resource subscriptions the sessions of one front hold at most (the oldest of an ended
/// session go first); past it a subscription is still forwarded, but its updates not relayed.
const MAX_SUBSCRIPTIONS: usize = 10_000;

impl FrontShared {
    pub fn new(handles: HandleKey) -> Arc<FrontShared> {
        Arc::new(FrontShared {
            handles,
            opening: tokio::sync::Mutex::new(()),
            owners: std::sync::Mutex::default(),
            subscribed: std::sync::Mutex::default(),
        })
    }

    /// Relays what the servers say changed to the sessions subscribed to it, until the servers'
    /// clients or the front are gone.
    pub(super) async fn relay_updates(
        front: std::sync::Weak<Self>,
        mut updates: tokio::sync::broadcast::Receiver<crate::downstream::ResourceUpdated>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let updated = match updates.recv().await {
                Ok(updated) => updated,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "resource updates came faster than they could be relayed; some were not"
                    );
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let notification: Arc<str> = json!({
                "jsonrpc": "2.0",
                "method": "notifications/resources/updated",
                "params": { "uri": updated.uri },
            })
            .to_string()
            .into();
            let Some(front) = front.upgrade() else {
                return;
            };
            let sessions: Vec<Arc<Session>> = front
                .subscriptions()
                .iter()
                .filter(|(server, uri, _)| *server == updated.server && *uri == updated.uri)
                .filter_map(|(_, _, session)| session.upgrade())
                .collect();
            for session in sessions {
                session.announce(&notification);
            }
        }
    }

    fn subscriptions(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(String, String, std::sync::Weak<Session>)>> {
        self.subscribed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `session` subscribed to `uri` of `server` (or, `subscribe` false, no longer is).
    pub(super) fn subscribe(
        &self,
        session: &Arc<Session>,
        server: &str,
        uri: &str,
        subscribe: bool,
    ) {
        let mut subscribed = self.subscriptions();
        subscribed.retain(|(s, u, held)| {
            held.strong_count() > 0
                && !(s == server && u == uri && std::ptr::eq(held.as_ptr(), Arc::as_ptr(session)))
        });
        if !subscribe {
            return;
        }
        if subscribed.len() >= MAX_SUBSCRIPTIONS {
            tracing::warn!(
                limit = MAX_SUBSCRIPTIONS,
                "too many resource subscriptions: this one's updates are not relayed"
            );
            return;
        }
        subscribed.push((server.to_owned(), uri.to_owned(), Arc::downgrade(session)));
    }
}

/// What a call needs to know about its request, however it arrived: through the SDK's service
/// ([`CallContext::of`]) or the JSON fast path.
pub(super) struct CallContext {
    /// Who is calling: the identity its credential proves (stdio: the configured one).
    pub identity: Identity,
    /// The client's self-chosen name, a label.
    pub client: Option<String>,
    /// A keyed hash of the transport session (never the session id), a label.
    pub tag: Option<SessionTag>,
    /// Whether the request belongs to a transport session (stdio, or HTTP with `Mcp-Session-Id`).
    pub in_session: bool,
    /// The workflow the request names (`_meta` or `X-Conductor-Workflow`), if any.
    pub named_workflow: Option<String>,
    /// The workflow handle the call passed in [`HANDLE_ARGUMENT`], if any (taken out of its
    /// arguments before anything records or forwards them).
    pub handle: Option<String>,
    /// Where progress goes while the call waits for a person, when the client asked for it.
    pub progress: Option<(ProgressToken, Peer<RoleServer>)>,
    /// Where the tool's log messages and the server's requests go, when the client set a log
    /// level or can be asked for sampling or elicitation.
    pub peer: Option<Peer<RoleServer>>,
    /// What a session-free (2026-07-28) client said of itself in this request's `_meta`, and its
    /// answers to a server's input requests: such a client is served in its own era by a server
    /// that speaks it (see [`SessionFree`]).
    pub session_free: Option<SessionFree>,
    /// What its SERVER span needs: the request's id, the caller's trace context.
    pub inbound: crate::telemetry::spans::Inbound,
}

impl CallContext {
    /// The context of a request served by the SDK.
    pub(super) fn of(session: &Session, context: &RequestContext<RoleServer>) -> Self {
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let (identity, tag, in_session) = match session.front {
            Front::Stdio => (Identity::stdio(&session.gateway.config()), None, true),
            Front::Http => (
                parts
                    .and_then(|p| p.extensions.get::<Identity>())
                    .cloned()
                    .unwrap_or_else(Identity::anonymous),
                parts
                    .and_then(|p| p.extensions.get::<SessionTag>())
                    .cloned(),
                request_header(context, "mcp-session-id").is_some(),
            ),
        };
        let named_workflow = context
            .meta
            .0
            .get(WORKFLOW_META_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| request_header(context, WORKFLOW_HEADER));
        CallContext {
            identity,
            client: context.client_info().map(|info| info.name),
            tag,
            in_session,
            named_workflow,
            handle: None,
            progress: context
                .meta
                .get_progress_token()
                .map(|token| (token, context.peer.clone())),
            peer: session.streams().then(|| context.peer.clone()),
            session_free: (session.front == Front::Http
                && request_header(context, "mcp-session-id").is_none())
            .then(|| SessionFree {
                capabilities: context
                    .meta
                    .0
                    .get("io.modelcontextprotocol/clientCapabilities")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
                log_level: context
                    .meta
                    .0
                    .get("io.modelcontextprotocol/logLevel")
                    .cloned(),
                input_responses: None,
                request_state: None,
            }),
            inbound: crate::telemetry::spans::Inbound::of(
                Some(context.id.to_string()),
                Some(&context.meta.0.0),
                parts,
                session.front == Front::Stdio,
            ),
        }
    }

    /// The caller recorded with a workflow: the identity, then as labels the client's name and the
    /// session's tag.
    pub(super) fn caller(&self, front: Front) -> String {
        let client = self.client.as_deref().unwrap_or("unknown-client");
        let session = match (front, &self.tag) {
            (Front::Stdio, _) => "stdio".to_owned(),
            (Front::Http, Some(tag)) => format!("http session {}", tag.0),
            (Front::Http, None) => "http".to_owned(),
        };
        let label = format!("mcp client {:?}, {session}", crate::auth::sanitize(client));
        self.identity.caller(&label)
    }
}

impl ConductorMcp {
    pub fn new(gateway: Gateway, front: Front, shared: Arc<FrontShared>) -> Self {
        ConductorMcp {
            session: Arc::new(Session {
                gateway,
                front,
                shared,
                workflow: tokio::sync::Mutex::default(),
                started: std::sync::Mutex::default(),
                client: std::sync::OnceLock::new(),
                protocol: std::sync::OnceLock::new(),
                inflight: std::sync::Mutex::default(),
                log_level: std::sync::Mutex::default(),
                capabilities: std::sync::OnceLock::new(),
                asked: std::sync::Mutex::default(),
                ask_ids: std::sync::atomic::AtomicI64::new(1),
                announced: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The handler of an open session, for one request.
    pub(super) fn of(session: Arc<Session>) -> Self {
        ConductorMcp { session }
    }

    /// The session this handler serves, for the HTTP front to keep between requests.
    pub(super) fn shared(&self) -> Arc<Session> {
        Arc::clone(&self.session)
    }
}

impl Session {
    /// Keeps `cancel` as the way to stop request `id` until the returned guard is dropped.
    pub(super) fn track(self: &Arc<Self>, id: &RequestId, cancel: CancellationToken) -> Tracked {
        let key = id.to_string();
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), cancel);
        Tracked {
            session: Arc::clone(self),
            key,
        }
    }

    /// The client's `notifications/cancelled` for request `id`: stops it, if it is still being
    /// answered.
    pub(super) fn cancel(&self, id: &RequestId) {
        let cancel = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.to_string());
        if let Some(cancel) = cancel {
            tracing::info!(request = %id, "the MCP client cancelled a request");
            cancel.cancel();
        }
    }

    /// The session's workflow, if it has one and no first call is starting it right now.
    pub(super) fn bound_workflow(&self) -> Option<String> {
        self.workflow
            .try_lock()
            .ok()
            .and_then(|bound| bound.clone())
    }

    pub(super) fn client(&self) -> Option<&str> {
        self.client.get().map(String::as_str)
    }

    /// Whether the client said it can answer a server's request of `method` (sampling,
    /// elicitation, roots).
    pub(super) fn can_answer(&self, method: &str) -> bool {
        let Some(capabilities) = self.capabilities.get() else {
            return false;
        };
        match method {
            "sampling/createMessage" => capabilities.sampling.is_some(),
            "elicitation/create" => capabilities.elicitation.is_some(),
            "roots/list" => capabilities.roots.is_some(),
            _ => false,
        }
    }

    /// What the client can answer when a server asks it something during a call.
    pub(super) fn answerable(&self) -> super::waiting::Answerable {
        super::waiting::Answerable {
            sampling: self.can_answer("sampling/createMessage"),
            elicitation: self.can_answer("elicitation/create"),
            roots: self.can_answer("roots/list"),
        }
    }

    /// Whether a call of this session must answer on a stream: the client hears log messages, or
    /// can be asked for sampling or elicitation.
    pub(super) fn streams(&self) -> bool {
        self.wants_logs()
            || self.can_answer("sampling/createMessage")
            || self.can_answer("elicitation/create")
    }

    /// Gives a request to the client the session's next id, and remembers where its answer goes.
    pub(super) fn asking(
        &self,
        original: RequestId,
        back: tokio::sync::mpsc::Sender<rmcp::model::ClientJsonRpcMessage>,
    ) -> RequestId {
        let id = RequestId::Number(
            self.ask_ids
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Asked { original, back });
        id
    }

    /// Sends `notification` on the session's standalone event streams, if any is open.
    fn announce(&self, notification: &Arc<str>) {
        if let Some(announced) = self.announced.get() {
            let _ = announced.send(Arc::clone(notification));
        }
    }

    /// What the servers announce to this session, for one of its standalone event streams.
    pub(super) fn announcements(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.announced
            .get_or_init(|| tokio::sync::broadcast::channel(16).0)
            .subscribe()
    }

    /// Forgets the requests to the client that went out under `ids` (their call has ended).
    pub(super) fn forget_asked(&self, ids: &[RequestId]) {
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        for id in ids {
            asked.remove(&id.to_string());
        }
    }

    /// The client's answer to a request sent to it: back to the call that asked, under the id
    /// that call gave it. An answer to nothing asked is dropped.
    pub(super) fn answered(&self, message: rmcp::model::ClientJsonRpcMessage) {
        use rmcp::model::ClientJsonRpcMessage;
        let id = match &message {
            ClientJsonRpcMessage::Response(response) => &response.id,
            ClientJsonRpcMessage::Error(error) => match &error.id {
                Some(id) => id,
                None => return,
            },
            _ => return,
        };
        let Some(asked) = self
            .asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.to_string())
        else {
            tracing::debug!(%id, "an answer to no request of this session");
            return;
        };
        let message = match message {
            ClientJsonRpcMessage::Response(mut response) => {
                response.id = asked.original;
                ClientJsonRpcMessage::Response(response)
            }
            ClientJsonRpcMessage::Error(mut error) => {
                error.id = Some(asked.original);
                ClientJsonRpcMessage::Error(error)
            }
            other => other,
        };
        let _ = asked.back.try_send(message);
    }

    /// What the client said in its `initialize`, as the SDK's handshake would have kept it: its
    /// name, what it can answer and the agreed version (the rest is never read).
    pub(super) fn peer_info(&self) -> Option<InitializeRequestParams> {
        let name = self.client.get()?;
        let info = InitializeRequestParams::new(
            self.capabilities.get().cloned().unwrap_or_default(),
            Implementation::new(name.clone(), ""),
        );
        Some(match self.protocol.get() {
            Some(version) => info.with_protocol_version(version.clone()),
            None => info,
        })
    }

    /// Remembers an ad-hoc workflow this session started, to end it with the session.
    fn started_ad_hoc(&self, id: &str, context: &CallContext) {
        if context.in_session {
            self.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(id.to_owned());
        }
    }

    /// The workflow a handle or the request names, checked: the handle must open for the caller's
    /// identity, and the workflow must be the caller's (or granted by `act_for`).
    fn named(&self, context: &CallContext) -> Result<Option<String>, Error> {
        let id = match (&context.handle, &context.named_workflow) {
            (Some(handle), _) => self
                .shared
                .handles
                .open(handle, &context.identity.name)
                .map_err(|refused| Error::PermissionDenied(refused.to_string()))?,
            (None, Some(id)) => id.clone(),
            (None, None) => return Ok(None),
        };
        let view = self.gateway.workflow(&id, false)?;
        crate::auth::permit_owner(&self.gateway.config(), &context.identity, &id, &view.caller)?;
        Ok(Some(id))
    }

    /// The workflow the caller acts in now, without starting one: the handle's or the named one,
    /// the session's, or (session-free) the identity's current one.
    pub(super) async fn current(&self, context: &CallContext) -> Result<Option<String>, Error> {
        if let Some(id) = self.named(context)? {
            return Ok(Some(id));
        }
        if context.in_session {
            return Ok(self.workflow.lock().await.clone());
        }
        Ok(if self.keeps_identity_workflow(context) {
            self.gateway.current_ad_hoc(&context.caller(self.front))
        } else {
            None
        })
    }

    /// Whether a session-free call without a handle goes to its identity's current workflow:
    /// `mcp.session_free_workflow` says so, and the identity is one agent's (callers without a
    /// credential share `anonymous`, so only a single-user setup gives it a current workflow).
    fn keeps_identity_workflow(&self, context: &CallContext) -> bool {
        let config = self.gateway.config();
        config.mcp.session_free_workflow == SessionFreeWorkflow::Identity
            && config.tells_apart(&context.identity.name)
    }

    /// The workflow a call belongs to, and whether this call opened it: the handle's or the named
    /// one; else the session's, started now if this is its first call; else (session-free) the
    /// identity's current ad-hoc workflow, or a new one.
    pub(super) async fn workflow_for(
        &self,
        context: &CallContext,
    ) -> Result<(String, bool), Error> {
        if let Some(id) = self.named(context)? {
            return Ok((id, false));
        }
        let caller = context.caller(self.front);
        if context.in_session {
            let mut bound = self.workflow.lock().await;
            if let Some(id) = bound.as_ref() {
                return Ok((id.clone(), false));
            }
            let view = self
                .gateway
                .start_workflow(None, Value::Null, &caller)
                .await?;
            tracing::info!(workflow = %view.id, caller = %view.caller, "MCP session bound to a new ad-hoc workflow");
            self.started_ad_hoc(&view.id, context);
            *bound = Some(view.id.clone());
            return Ok((view.id, true));
        }
        let _opening = if self.keeps_identity_workflow(context) {
            let opening = self.shared.opening.lock().await;
            if let Some(id) = self.gateway.current_ad_hoc(&caller) {
                return Ok((id, false));
            }
            Some(opening)
        } else {
            None
        };
        let view = self
            .gateway
            .start_workflow(None, Value::Null, &caller)
            .await?;
        tracing::info!(workflow = %view.id, caller = %view.caller, "session-free MCP caller given a new ad-hoc workflow");
        Ok((view.id, true))
    }

    /// The handle of `workflow_id` for this caller, when it speaks without a session (in a
    /// session, the session keeps the workflow).
    fn handle_for(&self, workflow_id: &str, context: &CallContext) -> Option<String> {
        (!context.in_session).then(|| {
            self.shared
                .handles
                .seal(workflow_id, &context.identity.name)
        })
    }

    /// `conductor_start_workflow`: starts a workflow (from `template`, with `input`) carrying the
    /// labels of the workflow the caller acts in now, and makes later calls belong to it: the
    /// session's, or, without a session, those that pass its handle (an ad-hoc one also becomes
    /// the identity's current workflow).
    async fn start_workflow(
        &self,
        arguments: Map<String, Value>,
        context: &CallContext,
    ) -> Result<CallToolResult, Error> {
        let template = match arguments.get("template") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "template must be a template name (a string), not {other}"
                )));
            }
        };
        if let Some(unknown) = arguments
            .keys()
            .find(|k| !matches!(k.as_str(), "template" | "input"))
        {
            return Err(Error::InvalidArgument(format!(
                "{START_WORKFLOW_TOOL} takes \"template\", \"input\" and \"{HANDLE_ARGUMENT}\", not {unknown:?}"
            )));
        }
        let input = arguments.get("input").cloned().unwrap_or(Value::Null);
        let from = self.current(context).await?;
        let mut bound = match context.in_session {
            true => Some(self.workflow.lock().await),
            false => None,
        };
        let view = self
            .gateway
            .start_workflow_from(
                template,
                input,
                &context.caller(self.front),
                from.as_deref(),
            )
            .await?;
        if view.template.is_none() {
            self.started_ad_hoc(&view.id, context);
        }
        if let Some(bound) = bound.as_mut() {
            **bound = Some(view.id.clone());
        }
        let handle = self.handle_for(&view.id, context);
        let labels = self.gateway.workflow_labels(&view.id);
        let summary = json!({
            "workflow_id": view.id,
            "workflow_handle": handle,
            "template": view.template,
            "steps_total": view.steps_total,
            "next_step": view.next_step,
            "labels": labels,
        });
        let started = match &view.template {
            Some(name) => format!(
                "Started workflow {} of template {name}; the next step is {}.",
                view.id,
                view.next_step.as_deref().unwrap_or("none")
            ),
            None => format!("Started the new ad-hoc workflow {}.", view.id),
        };
        let keep = match &handle {
            Some(handle) => format!(
                " To make a call part of it, pass \"{HANDLE_ARGUMENT}\": \"{handle}\" among the call's arguments."
            ),
            None => " Later calls of this session belong to it.".to_owned(),
        };
        let carried = if labels.is_empty() {
            String::new()
        } else {
            format!(
                " It carries the flow labels your context has seen ({}): flow rules still apply.",
                labels.join(", ")
            )
        };
        let result = reply::with_workflow(
            CallToolResult::structured(summary),
            &view.id,
            Some(format!("{started}{keep}{carried}")),
        );
        Ok(with_handle(result, handle))
    }

    /// `conductor_end_workflow`: ends the workflow the caller acts in (its pending approvals expire;
    /// running calls finish and are recorded). A template run is cancelled.
    async fn end_workflow(&self, context: &CallContext) -> Result<CallToolResult, Error> {
        let Some(id) = self.current(context).await? else {
            return Err(Error::InvalidArgument(format!(
                "there is no workflow to end: pass \"{HANDLE_ARGUMENT}\" with the handle of the workflow to end"
            )));
        };
        let view = self.gateway.workflow(&id, false)?;
        if view.state.is_finished() {
            // Already ended: nothing to do, and the answer says how it ended.
        } else if view.template.is_some() {
            self.gateway
                .cancel_workflow(&id, "ended by the MCP client", &context.caller(self.front))
                .await?;
        } else {
            self.gateway
                .end_ad_hoc(&id, "ended by the MCP client", &context.identity.name)
                .await?;
        }
        if context.in_session {
            let mut bound = self.workflow.lock().await;
            if bound.as_deref() == Some(id.as_str()) {
                *bound = None;
            }
        }
        let view = self.gateway.workflow(&id, false)?;
        let summary = json!({ "workflow_id": view.id, "state": state_name(view.state) });
        Ok(reply::with_workflow(
            CallToolResult::structured(summary),
            &id,
            Some(format!("Workflow {id} has {}.", view.state.as_str())),
        ))
    }

    /// One `tools/call`, however it arrived. Refusals and tool failures are tool results; only a
    /// request that cannot be a call (a protocol error) is an `Err`.
    pub(super) async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: CallContext,
    ) -> Result<CallToolResponse, ErrorData> {
        use crate::telemetry::{durations, spans};
        let tool = request.name.to_string();
        let received = std::time::Instant::now();
        let span = spans::mcp_server(&spans::McpRequest {
            method: "tools/call",
            target: Some(&tool),
            resource: None,
            inbound: &context.inbound,
            session: context.tag.as_ref().map(|t| t.0.as_str()),
            protocol: self.protocol.get().map(|p| p.as_str()),
        });
        let answer = match span.wrap(self.call(request, context)).await {
            Ok(result) => Ok(result),
            Err(error) => reply::error(&tool, error).map(Into::into),
        };
        let error_type = spans::mcp_error_type(&answer);
        spans::finish(&span, error_type.as_deref());
        self.gateway.metrics().operation_durations.record(
            durations::Side::Server,
            "tools/call",
            Some(&tool),
            error_type.as_deref(),
            received.elapsed(),
        );
        answer
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        mut context: CallContext,
    ) -> Result<CallToolResponse, Error> {
        // A session-free client's answers to the input a server asked for go with its retry.
        if let Some(session_free) = context.session_free.as_mut() {
            session_free.input_responses = request
                .input_responses
                .as_ref()
                .and_then(|responses| serde_json::to_value(responses).ok());
            session_free.request_state = request.request_state.clone().map(Value::String);
        }
        let mut arguments = request.arguments.unwrap_or_default();
        context.handle = match arguments.remove(HANDLE_ARGUMENT) {
            None | Some(Value::Null) => None,
            Some(Value::String(handle)) => Some(handle),
            Some(_) => {
                return Err(Error::InvalidArgument(format!(
                    "\"{HANDLE_ARGUMENT}\" is a workflow handle (a string a result gave you)"
                )));
            }
        };
        if request.name == START_WORKFLOW_TOOL {
            return self
                .start_workflow(arguments, &context)
                .await
                .map(Into::into);
        }
        if request.name == END_WORKFLOW_TOOL {
            return self.end_workflow(&context).await.map(Into::into);
        }
        let (workflow_id, opened) = self.workflow_for(&context).await?;
        let spec = CallSpec {
            workflow_id: workflow_id.clone(),
            tool: request.name.to_string(),
            arguments: Value::Object(arguments),
            caller: context.caller(self.front),
            step: None,
        };
        let handle = self.handle_for(&workflow_id, &context);
        // A client that asked for progress hears the wait for a person, then the tool's own; one
        // that set a log level hears the tool's log messages from that level up.
        let least = *self.log_level.lock().unwrap_or_else(|e| e.into_inner());
        let (sink, updates) = match (&context.progress, &context.peer) {
            (None, None) => (None, None),
            _ => {
                let (sink, updates) = tokio::sync::mpsc::channel(64);
                (Some(sink), Some(updates))
            }
        };
        let progress = match (context.progress, updates) {
            (Some((token, peer)), Some(updates)) => Ok(ApprovalProgress::new(
                &self.gateway,
                &spec,
                token,
                peer,
            )
            .relaying(updates, least, self.answerable())),
            (_, updates) => Err(updates.zip(context.peer)),
        };
        let call = self
            .gateway
            .call_for(spec, sink, context.session_free.map(Arc::new));
        let report = match progress {
            Ok(progress) => progress.run_while(call).await?,
            Err(Some((updates, peer))) => {
                super::waiting::relaying(call, updates, &peer, least, self.answerable()).await?
            }
            Err(None) => call.await?,
        };
        // A server that needs the client's input first: its request goes to the client as it gave
        // it, with the workflow's handle, and the client's retry brings the answers.
        if let Some(mut needs) = reply::input_required(&report) {
            if let Some(handle) = handle {
                needs
                    .meta
                    .get_or_insert_with(Default::default)
                    .0
                    .insert(HANDLE_META_KEY.to_owned(), Value::String(handle));
            }
            return Ok(CallToolResponse::InputRequired(needs));
        }
        let denied = matches!(report.result, crate::gateway::CallResult::Denied(_));
        let mut result = reply::report(report, &workflow_id);
        if let Some(handle) = &handle {
            if opened {
                result.content.push(rmcp::model::ContentBlock::text(format!(
                    "Conductorio: this call opened workflow {workflow_id}; your calls without \"{HANDLE_ARGUMENT}\" go to your current workflow. To keep this one whatever happens, pass \"{HANDLE_ARGUMENT}\": \"{handle}\" among a call's arguments."
                )));
            } else if denied {
                result.content.push(rmcp::model::ContentBlock::text(format!(
                    "This refusal is about workflow {workflow_id}: once you have done what it asks in the same workflow, the call is allowed. Calls without \"{HANDLE_ARGUMENT}\" go to your current workflow; to be sure of this one, pass \"{HANDLE_ARGUMENT}\": \"{handle}\"."
                )));
            }
        }
        Ok(with_handle(result, handle).into())
    }
}

/// Adds the workflow handle to a result's `_meta` (session-free callers only).
fn with_handle(mut result: CallToolResult, handle: Option<String>) -> CallToolResult {
    if let Some(handle) = handle {
        result
            .meta
            .get_or_insert_with(Default::default)
            .0
            .insert(HANDLE_META_KEY.to_owned(), Value::String(handle));
    }
    result
}

/// A workflow's state as one word, for programs.
fn state_name(state: crate::workflow::WorkflowState) -> &'static str {
    use crate::workflow::WorkflowState;
    match state {
        WorkflowState::Running => "running",
        WorkflowState::WaitingApproval => "waiting_approval",
        WorkflowState::Completed => "completed",
        WorkflowState::Failed => "failed",
        WorkflowState::Cancelled => "cancelled",
    }
}

impl ServerHandler for ConductorMcp {
    fn get_info(&self) -> ServerConfig {
        // What MCP servers offer besides tools is offered when a server's is configured.
        let config = self.session.gateway.config();
        let offers = |kind| config.tools.values().any(|route| route.kind == kind);
        let mut capabilities = ServerCapabilities::builder().enable_tools().build();
        if offers(crate::config::RouteKind::ReadResource) {
            let mut resources = rmcp::model::ResourcesCapability::default();
            resources.subscribe = Some(true);
            capabilities.resources = Some(resources);
        }
        if offers(crate::config::RouteKind::GetPrompt) {
            capabilities.prompts = Some(rmcp::model::PromptsCapability::default());
        }
        if offers(crate::config::RouteKind::ReadResource)
            || offers(crate::config::RouteKind::GetPrompt)
        {
            capabilities.completions = Some(Default::default());
            capabilities.logging = Some(Default::default());
        }
        let mut info = ServerConfig::new(capabilities)
            .with_instructions(format!(
                "Conductorio forwards these tools under workflow policies. Your calls belong to one workflow: a call that is out of order is refused with the rule and what to call first; a call that needs a person's approval waits for it. Without a session, your calls go to your current workflow; to be sure of one, pass the handle a result gave you in the argument {HANDLE_ARGUMENT}. To run a named template, call {START_WORKFLOW_TOOL} first; call {END_WORKFLOW_TOOL} when done."
            ));
        info.server_info = Implementation::new("conductorio", env!("CARGO_PKG_VERSION"));
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let session = &self.session;
        let call = CallContext::of(session, &context);
        let listed = async {
            let workflow = session.workflow.lock().await.clone();
            let caller = call.caller(session.front);
            let mut tools: Vec<Tool> = session
                .gateway
                .tools_for(&caller, workflow.as_deref())
                .await
                .into_iter()
                .map(reply::tool)
                .collect();
            tools.push(start_workflow_tool());
            tools.push(end_workflow_tool());
            if !call.in_session {
                for tool in &mut tools {
                    offer_handle(tool);
                }
            }
            Ok(ListToolsResult::with_all_items(tools))
        };
        self.traced("tools/list", &call, listed).await
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let call = CallContext::of(&self.session, &context);
        let initialized = async {
            let _ = self.session.client.set(request.client_info.name.clone());
            let _ = self.session.capabilities.set(request.capabilities.clone());
            context.peer.set_peer_info(request.clone());
            let result = self.negotiate_initialize(&request)?;
            let _ = self.session.protocol.set(result.protocol_version.clone());
            Ok(result)
        };
        self.traced("initialize", &call, initialized).await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let call = self.context(&context);
        let listed = async {
            self.session
                .list_resources(&call)
                .await
                .map_err(protocol_error)
        };
        self.traced("resources/list", &call, listed).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let call = self.context(&context);
        let listed = async {
            self.session
                .list_resource_templates(&call)
                .await
                .map_err(protocol_error)
        };
        self.traced("resources/templates/list", &call, listed).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let call = self.context(&context);
        let span = self.server_span("resources/read", None, Some(&request.uri), &call);
        let read = async {
            self.session
                .read_resource(request, call)
                .await
                .map_err(protocol_error)
        };
        self.served("resources/read", span, read).await
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let call = self.context(&context);
        let span = self.server_span("resources/subscribe", None, Some(&request.uri), &call);
        // Its updates reach this session's standalone event stream, from the moment the server
        // is asked; a subscription the server refuses is forgotten again.
        let owner = std::sync::Mutex::new(None);
        let subscribing = |server: &str| {
            self.session
                .shared
                .subscribe(&self.session, server, &request.uri, true);
            *owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.to_owned());
        };
        let subscribed = span
            .wrap(self.session.subscription(
                "resources/subscribe",
                &request.uri,
                &call,
                subscribing,
            ))
            .await;
        let owner = owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if subscribed.is_err()
            && let Some(server) = owner
        {
            self.session
                .shared
                .subscribe(&self.session, &server, &request.uri, false);
        }
        let answer = subscribed.map(|_| ()).map_err(protocol_error);
        self.served("resources/subscribe", span, std::future::ready(answer))
            .await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let call = self.context(&context);
        let span = self.server_span("resources/unsubscribe", None, Some(&request.uri), &call);
        let unsubscribing = |server: &str| {
            self.session
                .shared
                .subscribe(&self.session, server, &request.uri, false);
        };
        let unsubscribed = async {
            self.session
                .subscription("resources/unsubscribe", &request.uri, &call, unsubscribing)
                .await
                .map(|_| ())
                .map_err(protocol_error)
        };
        self.served("resources/unsubscribe", span, unsubscribed)
            .await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let call = self.context(&context);
        let listed = async {
            self.session
                .list_prompts(&call)
                .await
                .map_err(protocol_error)
        };
        self.traced("prompts/list", &call, listed).await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let call = self.context(&context);
        let span = self.server_span("prompts/get", Some(&request.name), None, &call);
        let got = async {
            self.session
                .get_prompt(request, call)
                .await
                .map_err(protocol_error)
        };
        self.served("prompts/get", span, got).await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let call = self.context(&context);
        let completed = async {
            self.session
                .complete(request, &call)
                .await
                .map_err(protocol_error)
        };
        self.traced("completion/complete", &call, completed).await
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let call = self.context(&context);
        self.session
            .set_level(request.level, &call)
            .await
            .map_err(protocol_error)
    }

    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        // Whatever the capabilities offered admit (the SDK keeps to them): what the servers
        // behind announce is relayed (see `offered`).
        Some(requested.clone())
    }

    async fn listen(
        &self,
        subscription: rmcp::service::SubscriptionContext,
    ) -> Result<(), ErrorData> {
        let call = self.context(subscription.request_context());
        self.session
            .listen(subscription, call)
            .await
            .map_err(protocol_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = CallContext::of(&self.session, &context);
        // A request the client cancels (or leaves) stops here: a call still waiting for approval
        // is then withdrawn (see `Gateway::call`).
        tokio::select! {
            answer = self.session.call_tool(request, call) => answer,
            () = context.ct.cancelled() => Err(ErrorData::invalid_request("the request was cancelled", None)),
        }
    }
}

/// A front error as MCP's: the request names what was wrong.
fn protocol_error(error: Error) -> ErrorData {
    ErrorData::from(error)
}

impl ConductorMcp {
    /// Runs a request other than `tools/call` in its SERVER span (named by its method), and counts
    /// it in `mcp.server.operation.duration`.
    async fn traced<T>(
        &self,
        method: &'static str,
        call: &CallContext,
        work: impl std::future::Future<Output = Result<T, ErrorData>>,
    ) -> Result<T, ErrorData> {
        let span = self.server_span(method, None, None, call);
        self.served(method, span, work).await
    }

    /// The SERVER span of a request other than `tools/call`: `target` is the prompt's name (of
    /// `prompts/get`), `resource` the URI a `resources/*` request names.
    fn server_span(
        &self,
        method: &'static str,
        target: Option<&str>,
        resource: Option<&str>,
        call: &CallContext,
    ) -> crate::telemetry::spans::CallSpan {
        crate::telemetry::spans::mcp_server(&crate::telemetry::spans::McpRequest {
            method,
            target,
            resource,
            inbound: &call.inbound,
            session: call.tag.as_ref().map(|t| t.0.as_str()),
            protocol: self.session.protocol.get().map(|p| p.as_str()),
        })
    }

    /// Runs `work` in `span`, ends it with the answer's `error.type`, and counts it in
    /// `mcp.server.operation.duration`.
    async fn served<T>(
        &self,
        method: &'static str,
        span: crate::telemetry::spans::CallSpan,
        work: impl std::future::Future<Output = Result<T, ErrorData>>,
    ) -> Result<T, ErrorData> {
        use crate::telemetry::{durations, spans};
        let received = std::time::Instant::now();
        let answer = span.wrap(work).await;
        let error_type = answer.as_ref().err().map(|e| e.code.0.to_string());
        spans::finish(&span, error_type.as_deref());
        self.session.gateway.metrics().operation_durations.record(
            durations::Side::Server,
            method,
            None,
            error_type.as_deref(),
            received.elapsed(),
        );
        answer
    }

    /// The context of a request that is no tool call (resources, prompts, completion, logging).
    fn context(&self, context: &RequestContext<RoleServer>) -> CallContext {
        let mut call = CallContext::of(&self.session, context);
        call.handle = context
            .meta
            .0
            .get(HANDLE_META_KEY)
            .and_then(Value::as_str)
            .map(str::to_owned);
        call
    }
}

fn start_workflow_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "template": { "type": "string", "description": "A template name from the orchestrator's configuration; omit for a new ad-hoc workflow." },
            "input": { "type": "object", "description": "The template's input (its ${input.x} values)." }
        },
        "additionalProperties": false
    });
    let schema = schema.as_object().cloned().unwrap_or_default();
    Tool::new(
        START_WORKFLOW_TOOL,
        "Start a new workflow (ad hoc, or from a named template) and make later calls belong to it. A template's steps must then be called in order. The new workflow keeps the flow labels of the data you have already read, so flow rules still apply.",
        Arc::new(schema),
    )
}

fn end_workflow_tool() -> Tool {
    let schema = json!({ "type": "object", "properties": {}, "additionalProperties": false });
    let schema = schema.as_object().cloned().unwrap_or_default();
    Tool::new(
        END_WORKFLOW_TOOL,
        "End your current workflow when its work is done (a template run is cancelled); its pending approvals expire.",
        Arc::new(schema),
    )
}

/// Adds the optional [`HANDLE_ARGUMENT`] to a tool offered to a session-free client, described so
/// that a model knows what to pass. A tool that already has an argument of that name keeps its own
/// (the name is reserved; such a tool cannot be given a handle).
fn offer_handle(tool: &mut Tool) {
    let mut schema = (*tool.input_schema).clone();
    let properties = schema
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(properties) = properties else {
        return;
    };
    if properties.contains_key(HANDLE_ARGUMENT) {
        tracing::warn!(tool = %tool.name, "a tool has an argument named {HANDLE_ARGUMENT}: it is offered without a workflow handle");
        return;
    }
    properties.insert(
        HANDLE_ARGUMENT.to_owned(),
        json!({
            "type": "string",
            "description": "Conductorio workflow handle: to continue a workflow, pass the handle a result gave you (io.conductorio/workflowHandle, or the text of conductor_start_workflow). Without it, the call goes to your current workflow. Conductorio removes it before the tool sees the arguments."
        }),
    );
    tool.input_schema = Arc::new(schema);
}

/// A header of the HTTP request that carried this MCP request (none over stdio).
fn request_header(context: &RequestContext<RoleServer>, name: &str) -> Option<String> {
    let parts = context.extensions.get::<axum::http::request::Parts>()?;
    parts.headers.get(name)?.to_str().ok().map(str::to_owned)
}
