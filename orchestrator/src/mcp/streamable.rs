//! The Streamable HTTP sessions (protocols 2024-11-05 … 2025-11-25), kept by the orchestrator
//! itself: `initialize` opens a session, and every request that names it (`POST`, `GET`, `DELETE`)
//! is answered here.
//!
//! The SDK's session manager keeps a worker task, channels and a service task per session: ~85 KiB
//! while the session only waits. Here an open session is its entry in [`Sessions`] and nothing else;
//! each request runs the session's handler on its own (`super::answer`), and a plain `tools/call`
//! skips even that (`super::fast`).
//!
//! Every request to `/mcp` passes this one layer, whatever its form (the host check,
//! `crate::host`, runs first: no `Host` is 400, a host not served 403, an absolute-form target is
//! checked by its own authority). It runs after authentication, so each request carries its
//! identity: a session is only reached by the identity that opened it (403 for another, 404 for an
//! id that is not open), and the session table's limits are kept here (`initialize` past
//! `max_sessions` gets 503, past `max_sessions_per_identity` 429; a `GET` stream past
//! `max_streams_per_session` 409, past `max_streams_per_identity` 429), each refusal a JSON-RPC
//! error naming the limit and what to do. A request of a session era that names no session and is
//! not an `initialize` gets 400.
//!
//! Only requests of the session-free era (an `MCP-Protocol-Version` without sessions) go on to the
//! SDK, and the SDK can open no session at all (legacy session mode off, a session manager that
//! refuses every session): there is no second session table to reach around this one.

use super::answer::{self, dispatch, event_stream, json};
use super::fast::{self, accepts, is_json, text};
use super::handler::{ConductorMcp, Front};
use super::sessions::{Busy, Entry, Refusal, Sessions};
use super::{MAX_BODY_BYTES, SESSION_HEADER, VERSION_HEADER};
use crate::auth::Identity;
use crate::gateway::Gateway;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::stream;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, ErrorCode, ErrorData, GetMeta, JsonRpcError,
    JsonRpcRequest, ProtocolVersion, RequestId, ServerJsonRpcMessage,
};
use serde::Deserialize;
use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The state of the session layer.
pub struct SessionFront {
    pub(super) sessions: Arc<Sessions>,
    pub(super) gateway: Gateway,
    pub(super) shared: Arc<super::FrontShared>,
}

/// The `/mcp` layer for sessions: opens them, serves their requests, ends them. Every request to
/// `/mcp` passes here (after the host check and authentication, whatever its form); only requests of
/// the session-free era go on to the SDK, which can open no session of its own.
pub async fn serve(
    State(front): State<Arc<SessionFront>>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let caller = request
        .extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or_else(Identity::anonymous);
    let Some(id) = headers.get(SESSION_HEADER) else {
        if !fast::session_era(headers) {
            return session_free(request, next).await;
        }
        return match *request.method() {
            Method::POST if is_json(headers) => open(&front, caller, request).await,
            Method::POST => text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type: Content-Type must be application/json",
            ),
            Method::GET | Method::DELETE => session_required(),
            _ => method_not_allowed(),
        };
    };
    let entry = id
        .to_str()
        .ok()
        .filter(|id| id.len() == 36)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or(Refusal::NotFound)
        .and_then(|id| front.sessions.owned(&id, &caller));
    let entry = match entry {
        Ok(entry) => entry,
        Err(refusal) => {
            if matches!(refusal, Refusal::Foreign) {
                tracing::warn!(identity = %caller.name, "MCP session used with another identity's credential: refused");
            }
            return refused(None, &refusal);
        }
    };
    request.extensions_mut().insert(entry.tag().clone());
    if !fast::session_era(request.headers()) {
        // A session-free request that also names its owner's session: served on its own, as the
        // era says (the session names nothing there).
        return next.run(request).await;
    }
    front.sessions.touch(&entry);
    match *request.method() {
        Method::POST => post(entry.busy(), request).await,
        Method::GET => standalone(&front.sessions, &entry, request.headers()),
        Method::DELETE => {
            front.sessions.close(&entry.id());
            StatusCode::OK.into_response()
        }
        _ => method_not_allowed(),
    }
}

/// A request of the session-free era: the SDK's, except a `tools/call` whose params are not a tool
/// call's, which gets `-32602` naming what is wrong as in a session (the SDK would answer
/// "method not found").
async fn session_free(request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !is_json(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match read(body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    if let fast::Body::InvalidParams(id, message) = fast::classify(&bytes) {
        return fast::invalid_params(&id, message);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// 400 for a request of a session era that names no session and is not an `initialize`.
fn session_required() -> Response {
    text(
        StatusCode::BAD_REQUEST,
        "Bad Request: Session ID is required (send initialize first; its answer's Mcp-Session-Id header names the session for every later request)",
    )
}

fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET, POST, DELETE")],
        "Method Not Allowed",
    )
        .into_response()
}

/// A request of a session era without a session: an `initialize` by `caller` opens one, if the
/// limits leave room; anything else is refused, since it would need a session.
async fn open(front: &SessionFront, caller: Identity, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match read(body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let Some(initialize) = initialize_request(&bytes) else {
        // Not an `initialize`: a frame that is no JSON-RPC message is refused as the SDK refuses it
        // (`super::frames` turns that into the JSON-RPC error); any other needs its session.
        if serde_json::from_slice::<ClientJsonRpcMessage>(&bytes).is_err() {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "fail to deserialize request body",
            );
        }
        return session_required();
    };
    if let Some(refusal) = refusal_of_initialize(&parts.headers, &initialize) {
        return refusal;
    }
    // Counted from here, so concurrent handshakes cannot pass a limit together; given back if the
    // handshake opens nothing.
    let admission = match front.sessions.admit(&caller) {
        Ok(admission) => admission,
        Err(refusal) => {
            tracing::info!(identity = %caller.name, limit = refusal.limit(), "MCP initialize refused: a session limit is reached");
            return refused(Some(initialize.id.clone()), &refusal);
        }
    };
    let handler = ConductorMcp::new(
        front.gateway.clone(),
        Front::Http,
        Arc::clone(&front.shared),
    );
    let session = handler.shared();
    let (first, rest) =
        match dispatch(handler, None, initialize, parts, CancellationToken::new()).await {
            Ok(answer) => answer,
            Err(refusal) => return refusal,
        };
    let opened = matches!(first, ServerJsonRpcMessage::Response(_));
    let mut response = match rest {
        None => json(&first),
        rest => event_stream(first, rest, ()),
    };
    if opened {
        let id = admission.open(session);
        if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
            response.headers_mut().insert(SESSION_HEADER, value);
        }
    }
    response
}

/// A session-level refusal as its HTTP status and a JSON-RPC error (answering `id`, the request's,
/// when there is one) whose message says what to do and whose `data` names the limit.
fn refused(id: Option<RequestId>, refusal: &Refusal) -> Response {
    let (status, code) = match refusal {
        Refusal::NotFound => (StatusCode::NOT_FOUND, ErrorCode::INVALID_REQUEST),
        Refusal::Foreign => (StatusCode::FORBIDDEN, ErrorCode::INVALID_REQUEST),
        Refusal::Sessions { .. } => (StatusCode::SERVICE_UNAVAILABLE, LIMIT_REACHED),
        Refusal::SessionStreams { .. } => (StatusCode::CONFLICT, LIMIT_REACHED),
        Refusal::IdentitySessions { .. } | Refusal::IdentityStreams { .. } => {
            (StatusCode::TOO_MANY_REQUESTS, LIMIT_REACHED)
        }
    };
    let data = refusal
        .limit()
        .map(|limit| serde_json::json!({ "limit": limit }));
    let error = JsonRpcError::new(id, ErrorData::new(code, refusal.to_string(), data));
    let mut response = match serde_json::to_vec(&error) {
        Ok(body) => fast::json_body(body),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    *response.status_mut() = status;
    response
}

/// The JSON-RPC code of a request refused at a limit (in the implementation-defined server-error
/// range).
const LIMIT_REACHED: ErrorCode = ErrorCode(-32000);

/// A POST in an open session.
async fn post(busy: Busy, request: Request) -> Response {
    let headers = request.headers();
    if !accepts(headers, "application/json") || !accepts(headers, "text/event-stream") {
        return text(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: Client must accept both application/json and text/event-stream",
        );
    }
    if !is_json(headers) {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type: Content-Type must be application/json",
        );
    }
    let (parts, body) = request.into_parts();
    let bytes = match read(body).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    // A client that asked for log messages, or can be asked for sampling or elicitation, reads the
    // call's stream: not the JSON fast path.
    match fast::classify(&bytes) {
        fast::Body::Plain(id, params) if !busy.session().streams() => {
            return fast::call(busy.session(), id, params, &parts).await;
        }
        fast::Body::InvalidParams(id, message) => return fast::invalid_params(&id, message),
        fast::Body::Plain(..) | fast::Body::Other => {}
    }
    let message = match serde_json::from_slice::<ClientJsonRpcMessage>(&bytes) {
        Ok(message) => message,
        // `super::frames` turns this into the JSON-RPC error.
        Err(e) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("fail to deserialize request body {e}"),
            );
        }
    };
    let request = match message {
        ClientJsonRpcMessage::Request(request) => request,
        ClientJsonRpcMessage::Notification(notification) => {
            // `cancelled` stops the request it names (a call waiting for approval is withdrawn);
            // `initialized` and the others need nothing.
            if let Ok(cancelled) =
                TryInto::<rmcp::model::CancelledNotification>::try_into(notification.notification)
                && let Some(id) = &cancelled.params.request_id
            {
                busy.session().cancel(id);
            }
            return StatusCode::ACCEPTED.into_response();
        }
        // The client's answer to a request a call sent it (a server's sampling or elicitation):
        // back to that call.
        answer => {
            busy.session().answered(answer);
            return StatusCode::ACCEPTED.into_response();
        }
    };
    // A request of MCP's own whose params are not what MCP says reaches the SDK as a request of no
    // known kind, which it would answer "method not found": answer what is wrong instead.
    if let ClientRequest::CustomRequest(custom) = &request.request
        && let Some(shape) = params_of(&custom.method)
    {
        return malformed(&request.id, &custom.method, shape);
    }
    // A client that asked for progress reads a stream, even when nothing precedes the answer.
    let progress = request.request.get_meta().get_progress_token().is_some();
    let progress = progress || busy.session().streams();
    let session = Arc::clone(busy.session());
    let peer_info = session.peer_info();
    let cancel = CancellationToken::new();
    let tracked = session.track(&request.id, cancel.clone());
    match dispatch(ConductorMcp::of(session), peer_info, request, parts, cancel).await {
        Ok((first, None)) if !progress => json(&first),
        // The guards live as long as the stream, which lasts the whole call.
        Ok((first, rest)) => event_stream(first, rest, (busy, tracked)),
        Err(refusal) => refusal,
    }
}

/// `GET` in a session: the stream on which a server may send messages of its own. This one sends
/// what the servers behind announce to the session (`notifications/resources/updated` for the
/// resources it subscribed to; progress goes on the stream of the call it is about), and stays
/// open, alive, until its session ends; a session and an identity hold only so many (see
/// `super::sessions`).
fn standalone(sessions: &Arc<Sessions>, entry: &Entry, headers: &HeaderMap) -> Response {
    if !accepts(headers, "text/event-stream") {
        return text(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: Client must accept text/event-stream",
        );
    }
    let slot = match sessions.open_stream(entry) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::info!(
                limit = refusal.limit(),
                "MCP GET stream refused: a stream limit is reached"
            );
            return refused(None, &refusal);
        }
    };
    // The slot lives as long as the stream: it is given back at once when the session ends, or
    // when the server notices the client has gone (a keep-alive it cannot write). What the servers
    // announce to the session (a resource it subscribed to changed) goes out on it.
    let announced = entry.session.announcements();
    let open = stream::unfold((slot, announced), |(slot, mut announced)| async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            tokio::select! {
                () = slot.session_ended() => return None,
                heard = announced.recv() => match heard {
                    Ok(message) => {
                        let event = Event::default().data(&*message);
                        return Some((Ok::<_, Infallible>(event), (slot, announced)));
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => {
                        slot.session_ended().await;
                        return None;
                    }
                },
            }
        }
    });
    answer::events(open)
}

/// The body, up to the limit.
async fn read(body: Body) -> Result<Bytes, Response> {
    to_bytes(body, MAX_BODY_BYTES).await.map_err(|e| {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Payload Too Large: the body exceeds {MAX_BODY_BYTES} bytes or could not be read: {e}"),
        )
    })
}

/// The body as an `initialize` request, or `None` for anything else (looked at cheaply first: most
/// bodies without a session are requests of the session-free era).
fn initialize_request(body: &[u8]) -> Option<JsonRpcRequest<ClientRequest>> {
    #[derive(Deserialize)]
    struct Method<'a> {
        #[serde(borrow)]
        method: Option<Cow<'a, str>>,
    }
    let method: Method = serde_json::from_slice(body).ok()?;
    if method.method.as_deref() != Some("initialize") {
        return None;
    }
    match serde_json::from_slice::<ClientJsonRpcMessage>(body).ok()? {
        ClientJsonRpcMessage::Request(request)
            if matches!(request.request, ClientRequest::InitializeRequest(_)) =>
        {
            Some(request)
        }
        _ => None,
    }
}

/// The SDK's refusal of an `initialize`, if its checks refuse it: both answer forms accepted, and an
/// `MCP-Protocol-Version` header (optional on this first request) that is known and agrees with
/// the body (and, in the versions that have them, an `Mcp-Method` header that says `initialize`).
fn refusal_of_initialize(
    headers: &HeaderMap,
    request: &JsonRpcRequest<ClientRequest>,
) -> Option<Response> {
    if !accepts(headers, "application/json") || !accepts(headers, "text/event-stream") {
        return Some(text(
            StatusCode::NOT_ACCEPTABLE,
            "Not Acceptable: Client must accept both application/json and text/event-stream",
        ));
    }
    let (Some(header), ClientRequest::InitializeRequest(initialize)) =
        (headers.get(VERSION_HEADER), &request.request)
    else {
        return None;
    };
    let Ok(header) = header.to_str() else {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "Bad Request: Invalid MCP-Protocol-Version header encoding",
        ));
    };
    if !ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .any(|v| v.as_str() == header)
    {
        return Some(text(
            StatusCode::BAD_REQUEST,
            &format!("Bad Request: Unsupported MCP-Protocol-Version: {header}"),
        ));
    }
    let asked = initialize.params.protocol_version.as_str();
    if header != asked {
        return Some(error_answer(
            request,
            ErrorData::invalid_request(
                format!(
                    "Invalid Request: MCP-Protocol-Version header ({header}) does not match initialize params.protocolVersion ({asked})"
                ),
                None,
            ),
        ));
    }
    let mut methods = headers.get_all("mcp-method").iter();
    let standard_headers = header >= ProtocolVersion::STANDARD_HEADERS.as_str();
    match (methods.next(), methods.next()) {
        (Some(method), None) if standard_headers && method != "initialize" => Some(error_answer(
            request,
            ErrorData::header_mismatch(
                format!(
                    "Mcp-Method header `{}` does not match body method `initialize`",
                    String::from_utf8_lossy(method.as_bytes())
                ),
                None,
            ),
        )),
        (Some(_), Some(_)) if standard_headers => Some(error_answer(
            request,
            ErrorData::header_mismatch(
                "multiple Mcp-Method header values supplied; initialize requires exactly one",
                None,
            ),
        )),
        _ => None,
    }
}

/// `400` with a JSON-RPC error answering `request`.
/// What the params of an MCP request of the session eras must be, for the methods whose params a
/// client can get wrong.
fn params_of(method: &str) -> Option<&'static str> {
    Some(match method {
        "tools/call" => r#"{"name": string, "arguments"?: object}"#,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => r#"{"uri": string}"#,
        "prompts/get" => r#"{"name": string, "arguments"?: {string: string}}"#,
        "completion/complete" => {
            r#"{"ref": {"type": "ref/prompt", "name": string} or {"type": "ref/resource", "uri": string}, "argument": {"name": string, "value": string}}"#
        }
        "logging/setLevel" => {
            r#"{"level": "debug", "info", "notice", "warning", "error", "critical", "alert" or "emergency"}"#
        }
        "tools/list" | "resources/list" | "resources/templates/list" | "prompts/list" => {
            r#"{"cursor"?: string}"#
        }
        _ => return None,
    })
}

/// The JSON-RPC `-32602` answer to a request whose params are not what its method takes.
fn malformed(id: &RequestId, method: &str, shape: &str) -> Response {
    let error = ErrorData::invalid_params(
        format!("the params of {method} are not what MCP says: it takes {shape}"),
        None,
    );
    match serde_json::to_vec(&JsonRpcError::new(Some(id.clone()), error)) {
        Ok(body) => fast::json_body(body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error_answer(request: &JsonRpcRequest<ClientRequest>, error: ErrorData) -> Response {
    let error = JsonRpcError::new(Some(request.id.clone()), error);
    let mut response = match serde_json::to_vec(&error) {
        Ok(body) => fast::json_body(body),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}
