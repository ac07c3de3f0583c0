//! The MCP `ServerHandler`: `tools/list` from the gateway's catalogue, `tools/call` through the one call
//! path ([`Gateway::call`]), and the `conductor_start_workflow` tool that (re)binds the session.
//!
//! It never decides anything itself: policies, audit and metrics all happen in the gateway. It only
//! translates, and keeps which workflow this MCP session is.

use super::reply;
use super::sessions::SessionTag;
use super::waiting::ApprovalProgress;
use crate::auth::Identity;
use crate::error::Error;
use crate::gateway::{CallSpec, Gateway};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, Implementation,
    InitializeRequestParams, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ProgressToken, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, Peer, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The tool that starts a new workflow for the session, ad hoc or from a template.
pub const START_WORKFLOW_TOOL: &str = "conductor_start_workflow";
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
    gateway: Gateway,
    front: Front,
    /// The workflow of this session, started lazily at the first `tools/call`. An async mutex, so two
    /// concurrent first calls start one workflow, not two.
    workflow: tokio::sync::Mutex<Option<String>>,
    started: std::sync::Mutex<Vec<String>>,
    /// The client's name from its `initialize`, for requests served without the SDK's session (the
    /// HTTP front serves each request on its own, see `super::streamable`).
    client: std::sync::OnceLock<String>,
    /// The protocol version `initialize` agreed on.
    protocol: std::sync::OnceLock<ProtocolVersion>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let started = std::mem::take(self.started.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.gateway.end_session_workflows(started);
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
    /// Where progress goes while the call waits for a person, when the client asked for it.
    pub progress: Option<(ProgressToken, Peer<RoleServer>)>,
}

impl CallContext {
    /// The context of a request served by the SDK.
    fn of(session: &Session, context: &RequestContext<RoleServer>) -> Self {
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
            progress: context
                .meta
                .get_progress_token()
                .map(|token| (token, context.peer.clone())),
        }
    }

    /// The caller recorded with a workflow: the identity, then as labels the client's name and the
    /// session's tag.
    fn caller(&self, front: Front) -> String {
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
    pub fn new(gateway: Gateway, front: Front) -> Self {
        ConductorMcp {
            session: Arc::new(Session {
                gateway,
                front,
                workflow: tokio::sync::Mutex::default(),
                started: std::sync::Mutex::default(),
                client: std::sync::OnceLock::new(),
                protocol: std::sync::OnceLock::new(),
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
    pub(super) fn client(&self) -> Option<&str> {
        self.client.get().map(String::as_str)
    }

    /// What the client said in its `initialize`, as the SDK's handshake would have kept it: its name
    /// and the agreed version (the rest is never read).
    pub(super) fn peer_info(&self) -> Option<InitializeRequestParams> {
        let name = self.client.get()?;
        let info = InitializeRequestParams::new(
            ClientCapabilities::default(),
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

    /// The workflow a call belongs to: named by the request (`_meta` or header), else the session's,
    /// started now if this is the session's first call.
    async fn workflow_for(&self, context: &CallContext) -> Result<String, Error> {
        if let Some(id) = &context.named_workflow {
            let view = self.gateway.workflow(id, false)?;
            crate::auth::permit_owner(&self.gateway.config(), &context.identity, id, &view.caller)?;
            return Ok(id.clone());
        }
        let mut bound = self.workflow.lock().await;
        if let Some(id) = bound.as_ref() {
            return Ok(id.clone());
        }
        let view = self
            .gateway
            .start_workflow(None, Value::Null, &context.caller(self.front))
            .await?;
        tracing::info!(workflow = %view.id, caller = %view.caller, "MCP session bound to a new ad-hoc workflow");
        self.started_ad_hoc(&view.id, context);
        *bound = Some(view.id.clone());
        Ok(view.id)
    }

    /// `conductor_start_workflow`: starts a workflow (from `template`, with `input`) and binds the
    /// session to it; later calls of this session belong to it.
    async fn start_workflow(
        &self,
        arguments: Option<Map<String, Value>>,
        context: &CallContext,
    ) -> Result<CallToolResult, Error> {
        let arguments = arguments.unwrap_or_default();
        let template = match arguments.get("template") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name.as_str()),
            Some(other) => {
                return Err(Error::InvalidArgument(format!(
                    "template must be a template name (a string), not {other}"
                )));
            }
        };
        let input = arguments.get("input").cloned().unwrap_or(Value::Null);
        let view = self
            .gateway
            .start_workflow(template, input, &context.caller(self.front))
            .await?;
        if view.template.is_none() {
            self.started_ad_hoc(&view.id, context);
        }
        *self.workflow.lock().await = Some(view.id.clone());
        let summary = json!({ "workflow_id": view.id, "template": view.template, "steps_total": view.steps_total, "next_step": view.next_step });
        let text = match &view.template {
            Some(name) => format!(
                "This session now runs workflow {} of template {name}; the next step is {}.",
                view.id,
                view.next_step.as_deref().unwrap_or("none")
            ),
            None => format!("This session now runs the new ad-hoc workflow {}.", view.id),
        };
        Ok(reply::with_workflow(
            CallToolResult::structured(summary),
            &view.id,
            Some(text),
        ))
    }

    /// One `tools/call`, however it arrived. Refusals and tool failures are tool results; only a
    /// request that cannot be a call (a protocol error) is an `Err`.
    pub(super) async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: CallContext,
    ) -> Result<CallToolResponse, ErrorData> {
        let tool = request.name.to_string();
        match self.call(request, context).await {
            Ok(result) => Ok(result.into()),
            Err(error) => reply::error(&tool, error).map(Into::into),
        }
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        context: CallContext,
    ) -> Result<CallToolResult, Error> {
        if request.name == START_WORKFLOW_TOOL {
            return self.start_workflow(request.arguments, &context).await;
        }
        let workflow_id = self.workflow_for(&context).await?;
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let spec = CallSpec {
            workflow_id: workflow_id.clone(),
            tool: request.name.to_string(),
            arguments,
            caller: context.caller(self.front),
            step: None,
        };
        let progress = context
            .progress
            .map(|(token, peer)| ApprovalProgress::new(&self.gateway, &spec, token, peer));
        let call = self.gateway.call(spec);
        let report = match progress {
            Some(progress) => progress.run_while(call).await?,
            None => call.await?,
        };
        Ok(reply::report(report, &workflow_id))
    }
}

impl ServerHandler for ConductorMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_instructions(format!(
                "Conductorio forwards these tools under workflow policies. Your session is one workflow: a call that is out of order is refused with the rule and what to call first; a call that needs a person's approval waits for it. To run a named template, call {START_WORKFLOW_TOOL} first."
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
        let workflow = session.workflow.lock().await.clone();
        let caller = CallContext::of(session, &context).caller(session.front);
        let mut tools: Vec<Tool> = session
            .gateway
            .tools_for(&caller, workflow.as_deref())
            .await
            .into_iter()
            .map(reply::tool)
            .collect();
        tools.push(start_workflow_tool());
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        let _ = self.session.client.set(request.client_info.name.clone());
        context.peer.set_peer_info(request.clone());
        let result = self.negotiate_initialize(&request)?;
        let _ = self.session.protocol.set(result.protocol_version.clone());
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let call = CallContext::of(&self.session, &context);
        self.session.call_tool(request, call).await
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
        "Start a new workflow for this session (ad hoc, or from a named template) and make later calls belong to it. Calls are checked against the workflow's history, so a new workflow starts with a clean history.",
        Arc::new(schema),
    )
}

/// A header of the HTTP request that carried this MCP request (none over stdio).
fn request_header(context: &RequestContext<RoleServer>, name: &str) -> Option<String> {
    let parts = context.extensions.get::<axum::http::request::Parts>()?;
    parts.headers.get(name)?.to_str().ok().map(str::to_owned)
}
