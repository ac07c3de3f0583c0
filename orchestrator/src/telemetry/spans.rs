//! The spans of a call, named and attributed per the OpenTelemetry MCP semantic conventions (the
//! GenAI conventions' `mcp.md`) and the gRPC ones: the SERVER span of each request, and under it
//! the policy decision, each audit commit, the wait for a person and the CLIENT span of the call
//! to the tool's server.
//!
//! Each constructor returns a disabled span, having done nothing else, when no exporter listens;
//! attributes are computed only for a span that is exported.

use opentelemetry::trace::Status;
use serde_json::{Map, Value};
use std::time::Duration;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether spans are exported at all (one check of a call site).
pub fn enabled() -> bool {
    tracing::enabled!(target: "conductor::trace", tracing::Level::INFO)
}

/// What the MCP front knows of a request besides its params, gathered where it arrived.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The JSON-RPC id.
    pub request_id: Option<String>,
    /// The caller's context in the request's `params._meta`, if any (read only when exported).
    pub meta_parent: Option<opentelemetry::Context>,
    /// The context of the HTTP request's `traceparent` header, if any (read only when exported).
    pub http_parent: Option<opentelemetry::Context>,
    /// Over stdio (`pipe`) rather than HTTP (`tcp`).
    pub stdio: bool,
    /// The peer's address, when known.
    pub client_address: Option<String>,
}

impl Inbound {
    /// A request with this id and `_meta` that came over HTTP with these headers (none: stdio).
    pub fn of(
        request_id: Option<String>,
        meta: Option<&Map<String, Value>>,
        headers: Option<&axum::http::HeaderMap>,
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
            http_parent: headers.and_then(super::propagation::from_headers),
            stdio,
            client_address: None,
        }
    }
}

/// One MCP request as its SERVER span needs it.
pub struct McpRequest<'a> {
    pub method: &'a str,
    /// The tool (or prompt) name: the span is named `{method} {target}`.
    pub target: Option<&'a str>,
    pub inbound: &'a Inbound,
    /// The session's keyed hash (never the session id).
    pub session: Option<&'a str>,
    pub protocol: Option<&'a str>,
}

/// The SERVER span of one MCP request: the caller's trace continued from `params._meta`, else from
/// the HTTP `traceparent` (linked when both are there).
pub fn mcp_server(request: &McpRequest<'_>) -> Span {
    let span = tracing::info_span!(target: "conductor::trace", "mcp.server", otel.name = tracing::field::Empty, otel.kind = "server");
    if span.is_disabled() {
        return span;
    }
    span.record(
        "otel.name",
        span_name(request.method, request.target).as_str(),
    );
    match (&request.inbound.meta_parent, &request.inbound.http_parent) {
        (Some(meta), Some(http)) => {
            use opentelemetry::trace::TraceContextExt;
            let _ = span.set_parent(meta.clone());
            span.add_link(http.span().span_context().clone());
        }
        (Some(parent), None) => {
            let _ = span.set_parent(parent.clone());
        }
        (None, Some(http)) => {
            let _ = span.set_parent(http.clone());
        }
        (None, None) => {}
    }
    span.set_attribute("mcp.method.name", request.method.to_owned());
    if let Some(target) = request.target {
        span.set_attribute("gen_ai.tool.name", target.to_owned());
        if request.method == "tools/call" {
            span.set_attribute("gen_ai.operation.name", "execute_tool");
        }
    }
    if let Some(id) = &request.inbound.request_id {
        span.set_attribute("jsonrpc.request.id", id.clone());
    }
    if let Some(session) = request.session {
        span.set_attribute("mcp.session.id", session.to_owned());
    }
    if let Some(protocol) = request.protocol {
        span.set_attribute("mcp.protocol.version", protocol.to_owned());
    }
    span.set_attribute(
        "network.transport",
        if request.inbound.stdio { "pipe" } else { "tcp" },
    );
    if let Some(address) = &request.inbound.client_address {
        span.set_attribute("client.address", address.clone());
    }
    span
}

/// `{method} {target}`, or the method alone.
pub fn span_name(method: &str, target: Option<&str>) -> String {
    match target {
        Some(target) => format!("{method} {target}"),
        None => method.to_owned(),
    }
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

/// Ends a span's story: `error.type` and an error status, or nothing for a success.
pub fn finish(span: &Span, error_type: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(error_type) = error_type {
        span.set_attribute("error.type", error_type.to_owned());
        span.set_status(Status::error(error_type.to_owned()));
    }
}

/// The SERVER span of a gRPC request (`package.Service/Method`), continuing the caller's trace from
/// its metadata.
pub fn grpc_server(path: &str, headers: &axum::http::HeaderMap) -> Span {
    let span = tracing::info_span!(target: "conductor::trace", "grpc.server", otel.name = tracing::field::Empty, otel.kind = "server");
    if span.is_disabled() {
        return span;
    }
    let method = path.trim_start_matches('/');
    span.record("otel.name", method);
    if let Some(parent) = super::propagation::from_headers(headers) {
        let _ = span.set_parent(parent);
    }
    let (service, name) = method.split_once('/').unwrap_or((method, ""));
    span.set_attribute("rpc.system", "grpc");
    span.set_attribute("rpc.service", service.to_owned());
    span.set_attribute("rpc.method", name.to_owned());
    span.set_attribute("network.transport", "tcp");
    span
}

/// Records a gRPC status code on a server or client span (an error status for any code but OK).
pub fn grpc_status(span: &Span, code: i32) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("rpc.grpc.status_code", i64::from(code));
    if code != 0 {
        span.set_attribute("error.type", code.to_string());
        span.set_status(Status::error(format!("gRPC status {code}")));
    }
}

/// The policy decision of a call (an INTERNAL span); its attributes come with [`decided`].
pub fn decision(tool: &str) -> Span {
    let span = tracing::info_span!(target: "conductor::trace", "policy.decide", otel.name = tracing::field::Empty);
    if !span.is_disabled() {
        span.record("otel.name", format!("policy decide {tool}").as_str());
    }
    span
}

/// What the engine decided, for the decision span.
pub struct Decided<'a> {
    pub call_id: &'a str,
    pub workflow_id: &'a str,
    pub outcome: &'a str,
    /// The rules that fired: those that refused the call, or the gate it waits at.
    pub rules: Vec<&'a str>,
    pub workflow_labels: &'a [String],
    pub tool_labels: &'a [String],
    /// Each condition evaluated, as `rule=true|false|error`.
    pub conditions: Vec<String>,
}

pub fn decided(span: &Span, decided: Decided<'_>) {
    if span.is_disabled() {
        return;
    }
    let strings = |v: &[String]| {
        opentelemetry::Value::Array(
            v.iter()
                .map(|s| s.clone().into())
                .collect::<Vec<opentelemetry::StringValue>>()
                .into(),
        )
    };
    span.set_attribute("conductor.call.id", decided.call_id.to_owned());
    span.set_attribute("conductor.workflow.id", decided.workflow_id.to_owned());
    span.set_attribute("conductor.decision", decided.outcome.to_owned());
    let rules: Vec<String> = decided.rules.iter().map(|r| (*r).to_owned()).collect();
    span.set_attribute("conductor.rules", strings(&rules));
    span.set_attribute(
        "conductor.workflow.labels",
        strings(decided.workflow_labels),
    );
    span.set_attribute("conductor.tool.labels", strings(decided.tool_labels));
    span.set_attribute("conductor.conditions", strings(&decided.conditions));
    if decided.outcome == "deny" {
        span.set_status(Status::error("denied by policy"));
    }
}

/// One audit commit a call waits for (`what`: the decision, or the outcome).
pub fn audit_commit(what: &'static str) -> Span {
    let span = tracing::info_span!(target: "conductor::trace", "audit.commit", otel.name = tracing::field::Empty);
    if !span.is_disabled() {
        span.record("otel.name", format!("audit commit {what}").as_str());
        span.set_attribute("conductor.audit.record", what);
    }
    span
}

/// The commit's outcome: the record's sequence number, or why it failed.
pub fn committed(span: &Span, seq: Result<u64, &dyn std::fmt::Display>) {
    if span.is_disabled() {
        return;
    }
    match seq {
        Ok(seq) => span.set_attribute(
            "conductor.audit.seq",
            i64::try_from(seq).unwrap_or(i64::MAX),
        ),
        Err(error) => {
            span.set_attribute("error.type", "audit_unavailable");
            span.set_status(Status::error(error.to_string()));
        }
    }
}

/// The wait for a person's decision on an approval request.
pub fn approval_wait(approval_id: &str, gate: &str) -> Span {
    let span = tracing::info_span!(target: "conductor::trace", "approval.wait", otel.name = tracing::field::Empty);
    if !span.is_disabled() {
        span.record("otel.name", format!("approval wait {gate}").as_str());
        span.set_attribute("conductor.approval.id", approval_id.to_owned());
        span.set_attribute("conductor.approval.gate", gate.to_owned());
    }
    span
}

/// How the wait ended: the verdict, who decided, and how long it took.
pub fn approval_decided(span: &Span, verdict: &str, decided_by: &str, waited: Duration) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("conductor.approval.verdict", verdict.to_owned());
    span.set_attribute("conductor.approval.decided_by", decided_by.to_owned());
    span.set_attribute(
        "conductor.approval.wait_ms",
        i64::try_from(waited.as_millis()).unwrap_or(i64::MAX),
    );
    if verdict != "approved" {
        span.set_status(Status::error(format!("approval {verdict}")));
    }
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
    pub method: &'a str,
}

/// The CLIENT span of a call to a tool's server: MCP's `{method} {tool}` with `server.address`, or
/// the gRPC client conventions' `conductor.v1.ToolService/CallTool`.
pub fn client(downstream: &Downstream<'_>) -> Span {
    let span = tracing::info_span!(target: "conductor::trace", "downstream", otel.name = tracing::field::Empty, otel.kind = "client");
    if span.is_disabled() {
        return span;
    }
    if downstream.grpc {
        span.record("otel.name", "conductor.v1.ToolService/CallTool");
        span.set_attribute("rpc.system", "grpc");
        span.set_attribute("rpc.service", "conductor.v1.ToolService");
        span.set_attribute("rpc.method", "CallTool");
        span.set_attribute("gen_ai.tool.name", downstream.tool.to_owned());
    } else {
        span.record(
            "otel.name",
            span_name(downstream.method, Some(downstream.tool)).as_str(),
        );
        span.set_attribute("mcp.method.name", downstream.method.to_owned());
        span.set_attribute("gen_ai.tool.name", downstream.tool.to_owned());
        if downstream.method == "tools/call" {
            span.set_attribute("gen_ai.operation.name", "execute_tool");
        }
        span.set_attribute(
            "network.transport",
            if downstream.url.is_some() {
                "tcp"
            } else {
                "pipe"
            },
        );
    }
    span.set_attribute("conductor.server", downstream.server.to_owned());
    if let Some((host, port)) = downstream.url.and_then(host_and_port) {
        span.set_attribute("server.address", host);
        if let Some(port) = port {
            span.set_attribute("server.port", i64::from(port));
        }
    }
    span
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
    fn spans_are_named_by_method_and_target() {
        assert_eq!(
            span_name("tools/call", Some("validate")),
            "tools/call validate"
        );
        assert_eq!(span_name("tools/list", None), "tools/list");
    }

    #[test]
    fn without_an_exporter_every_span_is_disabled() {
        assert!(!enabled());
        let inbound = Inbound::of(Some("1".into()), None, None, false);
        let span = mcp_server(&McpRequest {
            method: "tools/call",
            target: Some("t"),
            inbound: &inbound,
            session: None,
            protocol: None,
        });
        assert!(span.is_disabled());
        assert!(decision("t").is_disabled());
        assert!(audit_commit("decision").is_disabled());
    }
}
