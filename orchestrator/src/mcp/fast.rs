//! The JSON fast path for the `tools/call`s of a session, and the checks on a request's headers
//! that the Streamable HTTP front shares.
//!
//! The specification lets a server answer a POSTed request with a single `application/json` body
//! instead of an event stream, and a tool call that needs no stream (no `progressToken`: nothing is
//! sent before the result) has nothing else to say. Such a call is served here without the SDK: the
//! body is parsed once into only what the call needs, the call goes through the session's own
//! handler ([`Session::call_tool`], the same code every other path runs), and the answer is one JSON
//! body. Everything else a session sends is dispatched by `super::streamable`.

use super::handler::{CallContext, Session, WORKFLOW_HEADER, WORKFLOW_META_KEY};
use super::sessions::SessionTag;
use crate::auth::Identity;
use axum::body::Bytes;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rmcp::model::{CallToolRequestParams, RequestId, ServerResult};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Serves a plain tool call (see [`classify`]) of `session` and answers it as one JSON body.
pub(super) async fn call(
    session: &Session,
    id: RequestId,
    params: CallToolRequestParams,
    parts: &Parts,
) -> Response {
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
        handle: None,
        progress: None,
        peer: None,
        session_free: None,
        inbound: crate::telemetry::spans::Inbound::of(
            Some(id.to_string()),
            params.meta.as_ref().map(|meta| &meta.0.0),
            Some(parts),
            false,
        ),
    };
    let answer = match session.call_tool(params, context).await {
        Ok(result) => {
            // A session is of an era before 2026-07-28: its results have no `resultType`, as
            // the SDK answers such a peer.
            let mut result = ServerResult::from(result);
            result.strip_result_type_for_legacy_peer();
            serde_json::to_vec(&Answer {
                jsonrpc: "2.0",
                id: &id,
                result: Some(&result),
                error: None,
            })
        }
        Err(error) => serde_json::to_vec(&Answer::<()> {
            jsonrpc: "2.0",
            id: &id,
            result: None,
            error: Some(&error),
        }),
    };
    match answer {
        Ok(body) => json_body(body),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the answer could not be encoded: {e}\n"),
        )
            .into_response(),
    }
}

/// `200` with an `application/json` body.
pub(super) fn json_body(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::from(body),
    )
        .into_response()
}

/// A plain-text answer (the SDK's refusals are plain text too).
pub(super) fn text(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_owned(),
    )
        .into_response()
}

/// The protocol versions that have sessions (the handshake-free era has none).
pub(super) const SESSION_ERAS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// Whether the request names no protocol version (the specification then assumes 2025-03-26) or one
/// with sessions.
pub(super) fn session_era(headers: &HeaderMap) -> bool {
    headers
        .get(super::VERSION_HEADER)
        .is_none_or(|v| v.to_str().is_ok_and(|v| SESSION_ERAS.contains(&v)))
}

/// Whether the body is declared JSON, as the SDK checks it.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// Whether `Accept` lists `mime` (a range with `q=0` refuses it).
pub(super) fn accepts(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            parts
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(mime))
                && !parts.any(|p| {
                    p.split_once('=').is_some_and(|(name, value)| {
                        name.trim().eq_ignore_ascii_case("q")
                            && value.trim().parse::<f32>().is_ok_and(|q| q == 0.0)
                    })
                })
        })
}

/// A JSON-RPC request as read here: only what decides whether it is a plain tool call. `result`
/// and `error` are read only to refuse a frame that carries one beside `method`: such a frame is no
/// request, and the SDK refuses it too.
#[derive(Deserialize)]
struct Frame<'a> {
    jsonrpc: &'a str,
    id: RequestId,
    method: &'a str,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// What a POSTed body is, as far as the fast path cares.
#[derive(Debug)]
pub(super) enum Body {
    /// A `tools/call` that asks for nothing but its result (no progress, no per-request protocol
    /// metadata).
    Plain(RequestId, CallToolRequestParams),
    /// A `tools/call` request whose `params` are not a tool call's (a missing or duplicate `name`,
    /// `arguments` that are not an object, ...): answered `-32602` with what is wrong, never left
    /// to fall through to "method not found".
    InvalidParams(RequestId, String),
    /// Anything else: for the SDK's dispatch.
    Other,
}

/// Reads `body` as far as the fast path needs.
pub(super) fn classify(body: &[u8]) -> Body {
    let Ok(frame) = serde_json::from_slice::<Frame>(body) else {
        return Body::Other;
    };
    if frame.jsonrpc != "2.0"
        || frame.method != "tools/call"
        || frame.result.is_some()
        || frame.error.is_some()
    {
        return Body::Other;
    }
    let Some(raw) = frame.params else {
        return Body::InvalidParams(
            frame.id,
            "tools/call needs params with the tool's name".to_owned(),
        );
    };
    let params: CallToolRequestParams = match serde_json::from_str(raw.get()) {
        Ok(params) => params,
        Err(e) => {
            return Body::InvalidParams(frame.id, format!("invalid tools/call params: {e}"));
        }
    };
    let plain = params
        .meta
        .as_ref()
        .is_none_or(|meta| meta.0.keys().all(|key| key == WORKFLOW_META_KEY))
        && params.input_responses.is_none()
        && params.request_state.is_none();
    if plain {
        Body::Plain(frame.id, params)
    } else {
        Body::Other
    }
}

/// The `-32602` answer to a `tools/call` whose params are not a tool call's.
pub(super) fn invalid_params(id: &RequestId, message: String) -> Response {
    let error = rmcp::ErrorData::invalid_params(message, None);
    match serde_json::to_vec(&Answer::<()> {
        jsonrpc: "2.0",
        id,
        result: None,
        error: Some(&error),
    }) {
        Ok(body) => json_body(body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
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
        let Body::Plain(id, params) = classify(plain) else {
            panic!("a plain call");
        };
        assert_eq!(id, RequestId::Number(7));
        assert_eq!(params.name, "echo");
        let named = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","_meta":{"io.conductorio/workflowId":"wf-1"}}}"#;
        assert!(matches!(classify(named), Body::Plain(..)));
        for other in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":3}}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            br#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"result":{}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"error":{"code":1,"message":"x"}}"#,
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}]"#,
            br#"not json"#,
        ] {
            assert!(
                matches!(classify(other), Body::Other),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        for invalid in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{},"arguments":{}}}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":[1]}}"#,
        ] {
            assert!(
                matches!(classify(invalid), Body::InvalidParams(..)),
                "{}",
                String::from_utf8_lossy(invalid)
            );
        }
    }

    #[test]
    fn the_header_checks_read_accept_content_type_and_version_as_the_sdk_does() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_static(value));
            }
            map
        };
        let both = headers(&[("accept", "application/json, text/event-stream")]);
        assert!(accepts(&both, "application/json") && accepts(&both, "text/event-stream"));
        let split = headers(&[
            ("accept", "application/json"),
            ("accept", "text/event-stream;q=0.5"),
        ]);
        assert!(accepts(&split, "application/json") && accepts(&split, "text/event-stream"));
        let refused = headers(&[("accept", "application/json, text/event-stream;q=0")]);
        assert!(!accepts(&refused, "text/event-stream"));
        assert!(!accepts(
            &headers(&[("accept", "application/json")]),
            "text/event-stream"
        ));

        assert!(is_json(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&HeaderMap::new()));

        assert!(session_era(&HeaderMap::new()));
        assert!(session_era(&headers(&[(
            "mcp-protocol-version",
            "2025-06-18"
        )])));
        assert!(!session_era(&headers(&[(
            "mcp-protocol-version",
            "2026-07-28"
        )])));
        assert!(!session_era(&headers(&[(
            "mcp-protocol-version",
            "1999-01-01"
        )])));
    }
}
