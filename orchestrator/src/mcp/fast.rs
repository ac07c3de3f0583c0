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

/// Serves a plain tool call (see [`plain_call`]) of `session` and answers it as one JSON body.
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

/// Whether the request's `Host` is one the front serves, as the SDK checks it: the host, and the
/// port when the allowed entry names one.
pub(super) fn host_allowed(headers: &HeaderMap, hosts: &[String]) -> bool {
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
pub(super) fn plain_call(body: &[u8]) -> Option<(RequestId, CallToolRequestParams)> {
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
