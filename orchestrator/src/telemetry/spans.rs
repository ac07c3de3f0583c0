//! The spans of a call, named and attributed per the OpenTelemetry MCP semantic conventions (the
//! GenAI conventions' `mcp.md`) and the gRPC ones: the SERVER span of each request, and under it
//! the policy decision, the wait for a person and the CLIENT span of the call to the tool's server;
//! each audit commit the call waits for is an event of the SERVER span.
//!
//! The spans are made with the OpenTelemetry SDK's tracer directly, each with all the attributes
//! known when it starts in one list (not through `tracing`: its bridge looked the span up in the
//! registry and took its locks for every attribute and every poll, about a third of what exporting
//! cost a call; bench figure 10). A span is the current OpenTelemetry context while the work it covers runs
//! ([`CallSpan::wrap`], [`CallSpan::enter`]): its children, what is injected downstream and the
//! trace ids the audit records come from that context.
//!
//! Without an exporter every constructor returns [`CallSpan::none`] having done nothing else (one
//! check of a static), and nothing is wrapped or attached.

use futures::future::Either;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{Link, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, ContextGuard, KeyValue, StringValue, Value as OtelValue};
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

/// The tracer of the running exporter; unset when nothing is exported.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Makes `tracer` the one every span of this process is started with (once a process).
pub(super) fn install(tracer: SdkTracer) -> Result<(), String> {
    TRACER
        .set(tracer)
        .map_err(|_| "traces are already exported by this process".to_owned())
}

/// Whether spans are exported at all.
#[inline]
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// One span of a call: its context (the span in it, the caller's baggage beside it), or nothing
/// when it is not exported. Clones are handles to the same span; it ends at [`CallSpan::end`], or
/// when the last handle is dropped.
#[derive(Debug, Clone, Default)]
pub struct CallSpan(Option<Context>);

impl CallSpan {
    /// A span that is not exported.
    pub fn none() -> Self {
        CallSpan(None)
    }

    /// Starts `builder`'s span under `parent`.
    fn start(tracer: &SdkTracer, builder: SpanBuilder, parent: &Context) -> Self {
        let span = tracer.build_with_context(builder, parent);
        CallSpan(Some(parent.with_span(span)))
    }

    /// Starts a span under the current context (the span of the work that runs now, if any).
    fn child(builder: SpanBuilder) -> Self {
        match TRACER.get() {
            Some(tracer) => Context::map_current(|parent| Self::start(tracer, builder, parent)),
            None => Self::none(),
        }
    }

    pub fn is_exported(&self) -> bool {
        self.0.is_some()
    }

    /// Sets one attribute.
    pub fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute);
        }
    }

    /// Sets several attributes at once (one lock of the span).
    pub fn set_all(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attributes(attributes);
        }
    }

    pub fn set_status(&self, status: Status) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(status);
        }
    }

    /// Ends the span now (later attributes are ignored).
    pub fn end(&self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }

    /// Runs `future` with this span as the current context; without a span, runs it as it is.
    pub fn wrap<F: std::future::Future>(&self, future: F) -> Either<WithContext<F>, F> {
        match &self.0 {
            Some(cx) => Either::Left(future.with_context(cx.clone())),
            None => Either::Right(future),
        }
    }

    /// Makes this span the current context until the guard is dropped (synchronous work).
    pub fn enter(&self) -> Option<ContextGuard> {
        self.0.as_ref().map(|cx| cx.clone().attach())
    }
}

/// Runs `future` in the current context (for a task spawned to do a request's work): the spans
/// it makes stay under the request's.
pub fn in_current<F: std::future::Future>(future: F) -> Either<WithContext<F>, F> {
    if enabled() {
        Either::Left(future.with_current_context())
    } else {
        Either::Right(future)
    }
}

/// A string attribute.
fn text(key: &'static str, value: impl Into<StringValue>) -> KeyValue {
    KeyValue::new(key, OtelValue::String(value.into()))
}

/// A list-of-strings attribute.
fn texts<'s>(key: &'static str, values: impl Iterator<Item = &'s str>) -> KeyValue {
    KeyValue::new(
        key,
        OtelValue::Array(
            values
                .map(|s| StringValue::from(s.to_owned()))
                .collect::<Vec<_>>()
                .into(),
        ),
    )
}

/// What the MCP front knows of a request besides its params, gathered where it arrived.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The JSON-RPC id.
    pub request_id: Option<String>,
    /// The caller's context in the request's `params._meta`, if any (read only when exported).
    pub meta_parent: Option<Context>,
    /// The context of the HTTP request's `traceparent` header, if any (read only when exported).
    pub http_parent: Option<Context>,
    /// Over stdio (`pipe`) rather than HTTP (`tcp`).
    pub stdio: bool,
    /// The peer's address, when known (read only when exported).
    pub client: Option<std::net::SocketAddr>,
}

impl Inbound {
    /// A request with this id and `_meta` that came over HTTP as `http` (none: stdio).
    pub fn of(
        request_id: Option<String>,
        meta: Option<&Map<String, Value>>,
        http: Option<&axum::http::request::Parts>,
        stdio: bool,
    ) -> Self {
        if !enabled() {
            return Inbound {
                request_id,
                stdio,
                ..Inbound::default()
            };
        }
        Inbound {
            request_id,
            meta_parent: meta.and_then(super::propagation::from_meta),
            http_parent: http.and_then(|parts| super::propagation::from_headers(&parts.headers)),
            stdio,
            client: http.and_then(|parts| {
                parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|info| info.0)
            }),
        }
    }
}

/// One MCP request as its SERVER span needs it.
pub struct McpRequest<'a> {
    pub method: &'static str,
    /// The tool's name (`tools/call`) or the prompt's (`prompts/get`): the span is named
    /// `{method} {target}`.
    pub target: Option<&'a str>,
    /// The resource's URI (`resources/read`, `resources/subscribe`, …).
    pub resource: Option<&'a str>,
    pub inbound: &'a Inbound,
    /// The session's keyed hash (never the session id).
    pub session: Option<&'a str>,
    pub protocol: Option<&'a str>,
}

/// The SERVER span of one MCP request: the caller's trace continued from `params._meta`, else from
/// the HTTP `traceparent` (linked when both are there); a new trace when neither.
pub fn mcp_server(request: &McpRequest<'_>) -> CallSpan {
    let Some(tracer) = TRACER.get() else {
        return CallSpan::none();
    };
    let inbound = request.inbound;
    let mut attributes = Vec::with_capacity(10);
    attributes.push(text("mcp.method.name", request.method));
    if let Some(target) = request.target {
        if request.method.starts_with("prompts/") {
            attributes.push(text("gen_ai.prompt.name", target.to_owned()));
        } else {
            attributes.push(text("gen_ai.tool.name", target.to_owned()));
            if request.method == "tools/call" {
                attributes.push(text("gen_ai.operation.name", "execute_tool"));
            }
        }
    }
    if let Some(uri) = request.resource {
        attributes.push(text("mcp.resource.uri", uri.to_owned()));
    }
    if let Some(id) = &inbound.request_id {
        attributes.push(text("jsonrpc.request.id", id.clone()));
    }
    if let Some(session) = request.session {
        attributes.push(text("mcp.session.id", session.to_owned()));
    }
    if let Some(protocol) = request.protocol {
        attributes.push(text("mcp.protocol.version", protocol.to_owned()));
    }
    attributes.push(text(
        "network.transport",
        if inbound.stdio { "pipe" } else { "tcp" },
    ));
    client_address(&mut attributes, inbound.client);
    let mut builder = tracer
        .span_builder(span_name(request.method, request.target))
        .with_kind(SpanKind::Server)
        .with_attributes(attributes);
    let root = Context::new();
    let parent = match (&inbound.meta_parent, &inbound.http_parent) {
        (Some(meta), Some(http)) => {
            builder =
                builder.with_links(vec![Link::with_context(http.span().span_context().clone())]);
            meta
        }
        (Some(parent), None) | (None, Some(parent)) => parent,
        (None, None) => &root,
    };
    CallSpan::start(tracer, builder, parent)
}

/// `client.address` and `client.port` of a SERVER span, when the peer is known.
fn client_address(attributes: &mut Vec<KeyValue>, client: Option<std::net::SocketAddr>) {
    if let Some(client) = client {
        attributes.push(text("client.address", ip_text(client.ip())));
        attributes.push(KeyValue::new("client.port", i64::from(client.port())));
    }
}

/// An address as text; IPv4 (every loopback and most peers) without the formatting machinery, which
/// cost more than the rest of the span's attributes together (bench figure 10).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// `{method} {target}`, or the method alone.
pub fn span_name(method: &'static str, target: Option<&str>) -> Cow<'static, str> {
    match target {
        Some(target) => Cow::Owned(joined(method, target)),
        None => Cow::Borrowed(method),
    }
}

/// `{head} {tail}`, without the formatting machinery (a span name a call).
fn joined(head: &str, tail: &str) -> String {
    let mut name = String::with_capacity(head.len() + 1 + tail.len());
    name.push_str(head);
    name.push(' ');
    name.push_str(tail);
    name
}

/// The `error.type` of an MCP answer: the JSON-RPC error code, or `tool_error` for a result with
/// `isError`; none for a success.
pub fn mcp_error_type<T: IsToolError>(answer: &Result<T, rmcp::ErrorData>) -> Option<String> {
    match answer {
        Ok(result) if result.is_tool_error() => Some("tool_error".to_owned()),
        Ok(_) => None,
        Err(error) => Some(error.code.0.to_string()),
    }
}

/// A result that may be a tool's failure.
pub trait IsToolError {
    fn is_tool_error(&self) -> bool;
}

impl IsToolError for rmcp::model::CallToolResult {
    fn is_tool_error(&self) -> bool {
        self.is_error == Some(true)
    }
}

impl IsToolError for rmcp::model::CallToolResponse {
    fn is_tool_error(&self) -> bool {
        matches!(self, rmcp::model::CallToolResponse::Complete(result) if result.is_tool_error())
    }
}

/// Any other result: never a tool's failure.
pub struct Answered;

impl IsToolError for Answered {
    fn is_tool_error(&self) -> bool {
        false
    }
}

/// Ends a span's story: `error.type` and an error status, or nothing for a success; the span ends.
pub fn finish(span: &CallSpan, error_type: Option<&str>) {
    if let Some(error_type) = error_type {
        span.set(text("error.type", error_type.to_owned()));
        span.set_status(Status::error(error_type.to_owned()));
    }
    span.end();
}

/// The SERVER span of a gRPC request (`package.Service/Method`), continuing the caller's trace from
/// its metadata.
pub fn grpc_server(
    path: &str,
    headers: &axum::http::HeaderMap,
    client: Option<std::net::SocketAddr>,
) -> CallSpan {
    let Some(tracer) = TRACER.get() else {
        return CallSpan::none();
    };
    let method = path.trim_start_matches('/');
    let (service, name) = method.split_once('/').unwrap_or((method, ""));
    let mut attributes = vec![
        text("rpc.system", "grpc"),
        text("rpc.service", service.to_owned()),
        text("rpc.method", name.to_owned()),
        text("network.transport", "tcp"),
    ];
    client_address(&mut attributes, client);
    let builder = tracer
        .span_builder(method.to_owned())
        .with_kind(SpanKind::Server)
        .with_attributes(attributes);
    match super::propagation::from_headers(headers) {
        Some(parent) => CallSpan::start(tracer, builder, &parent),
        None => CallSpan::start(tracer, builder, &Context::new()),
    }
}

/// Records a gRPC status code on a server or client span (an error status for any code but OK).
pub fn grpc_status(span: &CallSpan, code: i32) {
    if !span.is_exported() {
        return;
    }
    span.set(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
    if code != 0 {
        span.set(text("error.type", code.to_string()));
        span.set_status(Status::error(format!("gRPC status {code}")));
    }
}

/// The policy decision of a call (an INTERNAL span); its attributes come with [`decided`].
pub fn decision(tool: &str) -> CallSpan {
    if !enabled() {
        return CallSpan::none();
    }
    CallSpan::child(SpanBuilder::from_name(joined("policy decide", tool)))
}

/// What the engine decided, for the decision span.
pub struct Decided<'a> {
    pub call_id: &'a str,
    pub workflow_id: &'a str,
    pub outcome: &'static str,
    /// The rules that fired: those that refused the call, or the gate it waits at.
    pub rules: Vec<&'a str>,
    pub workflow_labels: &'a [String],
    pub tool_labels: &'a [String],
    /// Each condition evaluated, as `rule=true|false|error`.
    pub conditions: Vec<String>,
}

pub fn decided(span: &CallSpan, decided: Decided<'_>) {
    if !span.is_exported() {
        return;
    }
    span.set_all([
        text("conductor.call.id", decided.call_id.to_owned()),
        text("conductor.workflow.id", decided.workflow_id.to_owned()),
        text("conductor.decision", decided.outcome),
        texts("conductor.rules", decided.rules.iter().copied()),
        texts(
            "conductor.workflow.labels",
            decided.workflow_labels.iter().map(String::as_str),
        ),
        texts(
            "conductor.tool.labels",
            decided.tool_labels.iter().map(String::as_str),
        ),
        texts(
            "conductor.conditions",
            decided.conditions.iter().map(String::as_str),
        ),
    ]);
    if decided.outcome == "deny" {
        span.set_status(Status::error("denied by policy"));
    }
}

/// One audit commit the call waited for (`what`: the decision, or the outcome), as an event of the
/// span it runs in (the request's SERVER span): the record's sequence number, the size of the batch
/// that made it durable (`Ok((seq, batch))`) and how long the call waited for it, or why it failed.
/// An event rather than a span of its own: two fewer spans a call to make, end, convert and send
/// (bench figure 10).
pub fn audit_committed(
    what: &'static str,
    seq: Result<(u64, usize), &dyn std::fmt::Display>,
    waited: Duration,
) {
    if !enabled() {
        return;
    }
    let mut attributes = Vec::with_capacity(4);
    attributes.push(text("conductor.audit.record", what));
    attributes.push(KeyValue::new(
        "conductor.audit.wait_us",
        i64::try_from(waited.as_micros()).unwrap_or(i64::MAX),
    ));
    match seq {
        Ok((seq, batch)) => {
            attributes.push(KeyValue::new(
                "conductor.audit.seq",
                i64::try_from(seq).unwrap_or(i64::MAX),
            ));
            attributes.push(KeyValue::new(
                "conductor.audit.batch_size",
                i64::try_from(batch).unwrap_or(i64::MAX),
            ));
        }
        Err(error) => {
            attributes.push(text("error.type", "audit_unavailable"));
            attributes.push(text("error.message", error.to_string()));
        }
    }
    let name = match what {
        "decision" => "audit commit decision",
        "outcome" => "audit commit outcome",
        _ => "audit commit",
    };
    Context::map_current(|cx| cx.span().add_event(name, attributes));
}

/// The wait for a person's decision on an approval request.
pub fn approval_wait(approval_id: &str, gate: &str) -> CallSpan {
    if !enabled() {
        return CallSpan::none();
    }
    CallSpan::child(
        SpanBuilder::from_name(joined("approval wait", gate)).with_attributes([
            text("conductor.approval.id", approval_id.to_owned()),
            text("conductor.approval.gate", gate.to_owned()),
        ]),
    )
}

/// How the wait ended: the verdict, who decided, and how long it took; the span ends.
pub fn approval_decided(
    span: &CallSpan,
    verdict: &'static str,
    decided_by: &str,
    waited: Duration,
) {
    if !span.is_exported() {
        return;
    }
    span.set_all([
        text("conductor.approval.verdict", verdict),
        text("conductor.approval.decided_by", decided_by.to_owned()),
        KeyValue::new(
            "conductor.approval.wait_ms",
            i64::try_from(waited.as_millis()).unwrap_or(i64::MAX),
        ),
    ]);
    if verdict != "approved" {
        span.set_status(Status::error(format!("approval {verdict}")));
    }
    span.end();
}

/// Where a downstream call goes, for its CLIENT span.
pub struct Downstream<'a> {
    pub server: &'a str,
    /// The tool's name at its server.
    pub tool: &'a str,
    /// `grpc`, or `mcp` (stdio or HTTP).
    pub grpc: bool,
    /// The server's URL (none for a child process).
    pub url: Option<&'a str>,
    /// The MCP method (`tools/call`, `resources/read`, `prompts/get`).
    pub method: &'static str,
}

/// The CLIENT span of a call to a tool's server: MCP's `{method} {tool}` with `server.address`, or
/// the gRPC client conventions' `conductor.v1.ToolService/CallTool`.
pub fn client(downstream: &Downstream<'_>) -> CallSpan {
    if !enabled() {
        return CallSpan::none();
    }
    let mut attributes = Vec::with_capacity(8);
    let name = if downstream.grpc {
        attributes.extend([
            text("rpc.system", "grpc"),
            text("rpc.service", "conductor.v1.ToolService"),
            text("rpc.method", "CallTool"),
            text("gen_ai.tool.name", downstream.tool.to_owned()),
        ]);
        Cow::Borrowed("conductor.v1.ToolService/CallTool")
    } else {
        attributes.extend([
            text("mcp.method.name", downstream.method),
            text("gen_ai.tool.name", downstream.tool.to_owned()),
        ]);
        if downstream.method == "tools/call" {
            attributes.push(text("gen_ai.operation.name", "execute_tool"));
        }
        attributes.push(text(
            "network.transport",
            if downstream.url.is_some() {
                "tcp"
            } else {
                "pipe"
            },
        ));
        span_name(downstream.method, Some(downstream.tool))
    };
    attributes.push(text("conductor.server", downstream.server.to_owned()));
    if let Some((host, port)) = downstream.url.and_then(host_and_port) {
        attributes.push(text("server.address", host));
        if let Some(port) = port {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    CallSpan::child(
        SpanBuilder::from_name(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes),
    )
}

/// The host and port of a URL such as `http://127.0.0.1:50061/mcp`.
fn host_and_port(url: &str) -> Option<(String, Option<u16>)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return None;
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = rest.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((host.to_owned(), port));
    }
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host.to_owned(), port.parse().ok()),
        None => (authority.to_owned(), None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_read_from_urls() {
        assert_eq!(
            host_and_port("http://127.0.0.1:50061/mcp"),
            Some(("127.0.0.1".into(), Some(50061)))
        );
        assert_eq!(
            host_and_port("https://tools.example/mcp?x=1"),
            Some(("tools.example".into(), None))
        );
        assert_eq!(
            host_and_port("http://[::1]:8080"),
            Some(("::1".into(), Some(8080)))
        );
        assert_eq!(host_and_port("http://"), None);
    }

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        for ip in [
            "127.0.0.1",
            "0.0.0.0",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "fe80::1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn spans_are_named_by_method_and_target() {
        assert_eq!(
            span_name("tools/call", Some("validate")),
            "tools/call validate"
        );
        assert_eq!(span_name("tools/list", None), "tools/list");
    }

    #[test]
    fn without_an_exporter_no_span_is_made() {
        assert!(!enabled());
        let inbound = Inbound::of(Some("1".into()), None, None, false);
        let span = mcp_server(&McpRequest {
            method: "tools/call",
            target: Some("t"),
            resource: None,
            inbound: &inbound,
            session: None,
            protocol: None,
        });
        assert!(!span.is_exported());
        assert!(!decision("t").is_exported());
        assert!(span.enter().is_none());
        assert!(matches!(span.wrap(async {}), Either::Right(_)));
    }
}
