//! Malformed JSON-RPC frames on the HTTP front get a JSON-RPC error, as JSON-RPC 2.0 says: `-32700`
//! for a body that is not JSON, `-32600` for JSON that is not a valid request. The SDK and the
//! session layer (`super::streamable`) refuse both with a bare `415`; this layer keeps the body at
//! hand and rewrites only that refusal, so valid frames pay one copy of their body and nothing else.
//!
//! It also refuses, before anything parses it, a body larger than a call's arguments may be
//! (`arguments.max_bytes`) plus room for the frame around them: parsed JSON costs tens of times its
//! text in memory, so the limit is kept where it is cheapest.

use super::MAX_BODY_BYTES;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Room for the JSON-RPC frame around a call's arguments (method, name, `_meta`).
pub const FRAME_ROOM: usize = 64 * 1024;

/// The largest body `/mcp` parses, given the largest arguments a call may have.
pub fn body_limit(max_argument_bytes: usize) -> usize {
    max_argument_bytes
        .saturating_add(FRAME_ROOM)
        .min(MAX_BODY_BYTES)
}

pub async fn json_rpc_errors(State(limit): State<usize>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || !super::fast::is_json(request.headers()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Payload Too Large: the body exceeds {limit} bytes (the configuration's arguments.max_bytes plus {FRAME_ROOM} for the frame) or could not be read: {e}\n"
                ),
            )
                .into_response();
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return response;
    }
    let (code, message) = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(e) => (-32700, format!("Parse error: the body is not JSON ({e})")),
        Ok(_) => (-32600, "Invalid Request: the body is JSON but not a JSON-RPC 2.0 message MCP knows (check \"jsonrpc\": \"2.0\", \"method\", \"id\" and \"params\")".to_owned()),
    };
    let id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    let body = json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
