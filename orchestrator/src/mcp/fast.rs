//! The sessions of the Streamable HTTP front, and the JSON fast path for their `tools/call`s.
//!
//! The SDK answers every request of a session with a `text/event-stream` of its own, through a
//! per-session worker and a spawned service task. The specification lets a server answer a POSTed
//! request with a single `application/json` body instead, and a tool call that needs no stream (no
//! `progressToken`: nothing is sent before the result) has nothing else to say. Such a call, in a
//! session this front has seen initialized, is served here: the body is read once, the call goes
//! through the session's own handler ([`Session::call_tool`], the same code the SDK path runs), and
//! the answer is one JSON body. Everything else (`initialize`, `tools/list`, notifications,
//! progress, `GET` streams, `DELETE`, anything unusual) goes to the SDK unchanged.
//!
//! Because calls on the fast path never reach the SDK's session worker, the idle time-out of
//! sessions is kept here, from every request of a session on either path: a session nobody talks
//! to for `mcp.session_idle_timeout` (and with no request in flight) is closed as a `DELETE` would
//! close it, so its ad-hoc workflow completes and its approvals expire.

use super::handler::{CallContext, Session, WORKFLOW_HEADER, WORKFLOW_META_KEY};
use crate::auth::Identity;
use crate::auth::http::SessionTag;
use crate::gateway::Gateway;
use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{CallToolRequestParams, RequestId, ServerResult};
use rmcp::transport::streamable_http_server::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

const SESSION_HEADER: &str = "mcp-session-id";
/// The protocol versions that have sessions (the handshake-free era has none).
const SESSION_ERAS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// The largest body read here (the SDK's own limit; larger bodies go to it and get its answer).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Where the handler of a new session leaves its address during `initialize`, for this layer to
/// register once the response names the session.
#[derive(Clone, Default)]
pub struct Slot(Arc<OnceLock<Weak<Session>>>);

impl Slot {
    pub(super) fn fill(&self, session: Weak<Session>) {
        let _ = self.0.set(session);
    }
}

/// The sessions this front opened, with their activity.
pub struct Sessions {
    map: Mutex<HashMap<Arc<str>, Arc<Entry>>>,
    gateway: Gateway,
    /// The `Host`s the front serves (DNS rebinding): a request naming another goes to the SDK, which
    /// refuses it.
    hosts: Vec<String>,
    manager: Arc<LocalSessionManager>,
    idle: Duration,
    epoch: Instant,
}

struct Entry {
    session: Weak<Session>,
    /// Milliseconds since `Sessions::epoch` of the last request.
    last_active: AtomicU64,
    /// Requests in flight (a call waiting for a person keeps its session alive).
    busy: AtomicUsize,
}

/// Counts a request in flight for as long as it lives.
struct Busy(Arc<Entry>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sessions {
    /// The sessions of `manager`, closed after `idle` without a request; reaped in the background
    /// for as long as the returned value lives.
    pub fn start(
        gateway: Gateway,
        manager: Arc<LocalSessionManager>,
        idle: Duration,
        hosts: Vec<String>,
    ) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            map: Mutex::default(),
            gateway,
            hosts,
            manager,
            idle,
            epoch: Instant::now(),
        });
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(reap(Arc::downgrade(&sessions), tick));
        sessions
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn register(&self, id: &str, session: Weak<Session>) {
        let entry = Entry {
            session,
            last_active: AtomicU64::new(self.now_ms()),
            busy: AtomicUsize::new(0),
        };
        let mut map = self.lock();
        map.insert(Arc::from(id), Arc::new(entry));
        self.gateway.metrics().set_mcp_sessions(map.len());
    }

    /// The entry of session `id`, marked active now.
    fn touch(&self, id: &str) -> Option<Arc<Entry>> {
        let entry = self.lock().get(id).cloned()?;
        entry.last_active.store(self.now_ms(), Ordering::Relaxed);
        Some(entry)
    }

    fn forget(&self, id: &str) {
        let mut map = self.lock();
        map.remove(id);
        self.gateway.metrics().set_mcp_sessions(map.len());
    }

    /// Closes the sessions idle for longer than the time-out, and forgets those already gone.
    async fn reap(&self) {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<Arc<str>> = {
            let mut map = self.lock();
            let expired: Vec<Arc<str>> = map
                .iter()
                .filter(|(_, e)| {
                    e.session.strong_count() == 0
                        || (e.busy.load(Ordering::Relaxed) == 0
                            && now.saturating_sub(e.last_active.load(Ordering::Relaxed)) > idle_ms)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                map.remove(id);
            }
            self.gateway.metrics().set_mcp_sessions(map.len());
            expired
        };
        for id in expired {
            tracing::debug!("closing an idle MCP session");
            if let Err(e) = self.manager.close_session(&id).await {
                tracing::warn!(error = %e, "an idle MCP session could not be closed");
            }
        }
    }
}

async fn reap(sessions: Weak<Sessions>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        sessions.reap().await;
    }
}

/// The `/mcp` layer: registers new sessions, keeps their activity, and serves plain tool calls of
/// known sessions as JSON. It runs after authentication, so the request carries its identity.
pub async fn serve(
    State(sessions): State<Arc<Sessions>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(id) = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return open(&sessions, request, next).await;
    };
    let Some(entry) = sessions.touch(&id) else {
        return next.run(request).await;
    };
    match *request.method() {
        Method::DELETE => {
            let response = next.run(request).await;
            if response.status().is_success() {
                sessions.forget(&id);
            }
            response
        }
        Method::POST => {
            entry.busy.fetch_add(1, Ordering::Relaxed);
            let busy = Busy(entry);
            let response = post(&busy.0, &sessions.hosts, request, next).await;
            let streamed = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            if !streamed {
                return response;
            }
            // The guard lives as long as the event stream, which lasts the whole call.
            let (parts, body) = response.into_parts();
            let body = Body::from_stream(tokio_stream::StreamExt::map(
                body.into_data_stream(),
                move |chunk| {
                    let _ = &busy;
                    chunk
                },
            ));
            Response::from_parts(parts, body)
        }
        _ => next.run(request).await,
    }
}

/// A request without a session: an `initialize` opens one, which is registered with the handler
/// that serves it.
async fn open(sessions: &Sessions, mut request: Request, next: Next) -> Response {
    let slot = Slot::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    if response.status().is_success()
        && let Some(id) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
    {
        sessions.register(id, slot.0.get().cloned().unwrap_or_default());
    }
    response
}

/// A POST in a known session: a plain tool call is answered here, anything else by the SDK.
async fn post(entry: &Entry, hosts: &[String], request: Request, next: Next) -> Response {
    let session = match entry.session.upgrade() {
        Some(session) if eligible(request.headers()) && host_allowed(request.headers(), hosts) => {
            session
        }
        _ => return next.run(request).await,
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: the body exceeds {MAX_BODY_BYTES} bytes or could not be read: {e}\n"),
            )
                .into_response();
        }
    };
    let Some((id, params)) = plain_call(&bytes) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let named_workflow = params
        .meta
        .as_ref()
        .and_then(|meta| meta.0.get(WORKFLOW_META_KEY))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            parts
                .headers
                .get(WORKFLOW_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let context = CallContext {
        identity: parts
            .extensions
            .get::<Identity>()
            .cloned()
            .unwrap_or_else(Identity::anonymous),
        client: session.client().map(str::to_owned),
        tag: parts.extensions.get::<SessionTag>().cloned(),
        in_session: true,
        named_workflow,
        progress: None,
    };
    let answer = match session.call_tool(params, context).await {
        Ok(result) => serde_json::to_vec(&Answer {
            jsonrpc: "2.0",
            id: &id,
            result: Some(&ServerResult::from(result)),
            error: None,
        }),
        Err(error) => serde_json::to_vec(&Answer::<()> {
            jsonrpc: "2.0",
            id: &id,
            result: None,
            error: Some(&error),
        }),
    };
    match answer {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Bytes::from(body),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the answer could not be encoded: {e}\n"),
        )
            .into_response(),
    }
}

/// Whether the request's headers allow a JSON answer that the SDK would give as a stream: a JSON
/// body, a client that accepts both forms (as the SDK requires), a session-era protocol version.
fn eligible(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let json = text("content-type").is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
    });
    let accepts = |mime: &str| {
        headers.get_all(header::ACCEPT).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|range| {
                    range
                        .split(';')
                        .next()
                        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(mime))
                })
            })
        })
    };
    let era = text("mcp-protocol-version").is_none_or(|v| SESSION_ERAS.contains(&v));
    json && era && accepts("application/json") && accepts("text/event-stream")
}

/// Whether the request's `Host` is one the front serves, as the SDK checks it: the host, and the
/// port when the allowed entry names one.
fn host_allowed(headers: &HeaderMap, hosts: &[String]) -> bool {
    let authority = |text: &str| -> Option<(String, Option<u16>)> {
        match text.parse::<axum::http::uri::Authority>() {
            Ok(a) => Some((
                a.host().trim_matches(['[', ']']).to_ascii_lowercase(),
                a.port_u16(),
            )),
            Err(_) if !text.is_empty() => {
                Some((text.trim_matches(['[', ']']).to_ascii_lowercase(), None))
            }
            Err(_) => None,
        }
    };
    let Some((host, port)) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<axum::http::uri::Authority>().ok())
        .map(|a| {
            (
                a.host().trim_matches(['[', ']']).to_ascii_lowercase(),
                a.port_u16(),
            )
        })
    else {
        return false;
    };
    hosts
        .iter()
        .filter_map(|h| authority(h))
        .any(|(allowed, allowed_port)| {
            allowed == host && allowed_port.is_none_or(|p| port == Some(p))
        })
}

/// A JSON-RPC request as read here: only what decides whether it is a plain tool call.
#[derive(Deserialize)]
struct Frame<'a> {
    jsonrpc: &'a str,
    id: RequestId,
    method: &'a str,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

/// The id and parameters of a `tools/call` that asks for nothing but its result (no progress, no
/// per-request protocol metadata), or `None` for anything else.
fn plain_call(body: &[u8]) -> Option<(RequestId, CallToolRequestParams)> {
    let frame: Frame = serde_json::from_slice(body).ok()?;
    if frame.jsonrpc != "2.0" || frame.method != "tools/call" {
        return None;
    }
    let params: CallToolRequestParams = serde_json::from_str(frame.params?.get()).ok()?;
    let plain = params
        .meta
        .as_ref()
        .is_none_or(|meta| meta.0.keys().all(|key| key == WORKFLOW_META_KEY))
        && params.input_responses.is_none()
        && params.request_state.is_none();
    plain.then_some((frame.id, params))
}

#[derive(Serialize)]
struct Answer<'a, T: Serialize> {
    jsonrpc: &'static str,
    id: &'a RequestId,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a rmcp::ErrorData>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_tool_calls_take_the_fast_path() {
        let plain = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"a":1}}}"#;
        let (id, params) = plain_call(plain).expect("a plain call");
        assert_eq!(id, RequestId::Number(7));
        assert_eq!(params.name, "echo");
        let named = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","_meta":{"io.conductorio/workflowId":"wf-1"}}}"#;
        assert!(plain_call(named).is_some());
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":3}}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}]"#,
            br#"not json"#,
        ] {
            assert!(
                plain_call(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn only_served_hosts_take_the_fast_path() {
        let hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "api.example.com:8443"]
            .map(str::to_owned)
            .to_vec();
        let with_host = |host: &'static str| {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_static(host));
            map
        };
        for served in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "api.example.com:8443",
        ] {
            assert!(host_allowed(&with_host(served), &hosts), "{served}");
        }
        for other in [
            "evil.example",
            "api.example.com",
            "api.example.com:443",
            "127.0.0.2:8080",
        ] {
            assert!(!host_allowed(&with_host(other), &hosts), "{other}");
        }
        assert!(!host_allowed(&HeaderMap::new(), &hosts), "no Host at all");
    }

    #[test]
    fn only_requests_that_accept_both_forms_in_a_session_era_are_eligible() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_static(value));
            }
            map
        };
        let base = [
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        assert!(eligible(&headers(&base)));
        assert!(eligible(&headers(&[
            ("content-type", "application/json; charset=utf-8"),
            ("accept", "application/json"),
            ("accept", "text/event-stream"),
            ("mcp-protocol-version", "2025-06-18"),
        ])));
        assert!(!eligible(&headers(&[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ])));
        assert!(!eligible(&headers(&[
            ("content-type", "text/plain"),
            ("accept", "application/json, text/event-stream"),
        ])));
        assert!(!eligible(&headers(&[
            base[0],
            base[1],
            ("mcp-protocol-version", "2026-07-28"),
        ])));
    }
}
