//! Authentication on the MCP Streamable HTTP front, as an OAuth 2.1 resource server (the MCP
//! authorization specification): every request to `/mcp` is authenticated from its `Authorization:
//! Bearer` header; a missing (when required) or invalid credential gets `401` with `WWW-Authenticate:
//! Bearer resource_metadata="…"`, and `/.well-known/oauth-protected-resource` serves the RFC 9728
//! document.
//!
//! Each MCP session is bound to the identity that opened it: the session id the server hands out is
//! recorded (as a keyed hash, never in clear) with its identity, and a request naming that session with
//! another identity is refused. The handler sees the identity and a [`SessionTag`] (the keyed hash's
//! first digits) in the request's extensions; the session id itself is never recorded or logged.

use super::{Authenticator, Identity, bearer_token};
use crate::gateway::Gateway;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The RFC 9728 metadata path.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
const SESSION_HEADER: &str = "mcp-session-id";
/// Sessions remembered at most; past it the oldest binding is dropped (its session then ends).
const MAX_SESSIONS: usize = 65_536;

/// A short keyed hash of an MCP session id: tells sessions apart in records without revealing the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTag(pub String);

/// The state of the `/mcp` authentication layer. Cheap to clone.
#[derive(Clone)]
pub struct HttpAuth {
    gateway: Gateway,
    authenticator: Authenticator,
    sessions: Arc<Sessions>,
}

struct Sessions {
    /// A per-process random key, so the hashes cannot be reversed by guessing ids offline.
    key: [u8; 16],
    bound: Mutex<SessionMap>,
}

#[derive(Default)]
struct SessionMap {
    owners: HashMap<[u8; 32], Identity>,
    order: std::collections::VecDeque<[u8; 32]>,
}

impl HttpAuth {
    pub fn new(gateway: Gateway) -> Self {
        HttpAuth {
            gateway,
            authenticator: Authenticator::new(),
            sessions: Arc::new(Sessions {
                key: *uuid::Uuid::new_v4().as_bytes(),
                bound: Mutex::default(),
            }),
        }
    }
}

impl HttpAuth {
    /// Releases the binding of MCP session `id` (the session has ended without a `DELETE`).
    pub fn forget_session(&self, id: &str) {
        self.sessions.unbind(&self.sessions.hash(id));
    }
}

impl Sessions {
    fn hash(&self, id: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(id.as_bytes());
        hasher.finalize().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionMap> {
        self.bound.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn owner(&self, hash: &[u8; 32]) -> Option<Identity> {
        self.lock().owners.get(hash).cloned()
    }

    fn bind(&self, hash: [u8; 32], identity: Identity) {
        let mut map = self.lock();
        let SessionMap { owners, order } = &mut *map;
        if owners.insert(hash, identity).is_none() {
            order.push_back(hash);
        }
        while owners.len() > MAX_SESSIONS {
            match order.pop_front() {
                Some(oldest) => owners.remove(&oldest),
                None => break,
            };
        }
        // Released bindings leave their hash in `order` (releasing stays O(1)); drop those hashes
        // once they outnumber the live ones.
        if order.len() > 2 * owners.len() + 64 {
            order.retain(|h| owners.contains_key(h));
        }
    }

    fn unbind(&self, hash: &[u8; 32]) {
        self.lock().owners.remove(hash);
    }
}

/// The `/mcp` middleware: authenticate, check the session's owner, pass the identity on, and bind a
/// session the response opens.
pub async fn authenticate(
    State(auth): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    let config = auth.gateway.config();
    let token = match request.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map_err(|_| super::AuthError::Malformed)
            .and_then(bearer_token)
            .map(Some),
    };
    let identity = match token {
        Ok(token) => auth.authenticator.identify(&config, token).await,
        Err(e) => Err(e),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(error) => {
            tracing::info!(%error, "MCP request refused: no valid credential");
            let missing = matches!(error, super::AuthError::Missing);
            return unauthorized(&config, request.headers(), &error.to_string(), missing);
        }
    };
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|id| auth.sessions.hash(id));
    if let Some(hash) = &session {
        match auth.sessions.owner(hash) {
            Some(owner) if owner == identity => {}
            Some(_) => {
                tracing::warn!(identity = %identity.name, "MCP session used with another identity's credential: refused");
                return refusal(
                    StatusCode::FORBIDDEN,
                    "this MCP session belongs to another identity; open a session of your own",
                );
            }
            None => {
                return refusal(
                    StatusCode::NOT_FOUND,
                    "session not found: it has ended or never existed; initialize a new session",
                );
            }
        }
        request
            .extensions_mut()
            .insert(SessionTag(hex::encode(&hash[..4])));
    }
    let deleting = request.method() == Method::DELETE;
    request.extensions_mut().insert(identity.clone());
    let response = next.run(request).await;
    match session {
        None => {
            if let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                auth.sessions.bind(auth.sessions.hash(id), identity);
            }
        }
        Some(hash) if deleting && response.status().is_success() => auth.sessions.unbind(&hash),
        Some(_) => {}
    }
    response
}

/// `401` with the challenge that points a client at the protected-resource metadata.
/// Without a credential the challenge carries no error code (RFC 6750 section 3.1); with a bad one,
/// `invalid_token`.
fn unauthorized(
    config: &crate::config::Config,
    headers: &HeaderMap,
    reason: &str,
    missing: bool,
) -> Response {
    let metadata = format!("{}{METADATA_PATH}", base_url(config, headers));
    let challenge = if missing {
        format!("Bearer resource_metadata=\"{metadata}\"")
    } else {
        format!(
            "Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\", error_description=\"{}\"",
            reason.replace(['"', '\\'], "'")
        )
    };
    let mut response = refusal(StatusCode::UNAUTHORIZED, reason);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `scheme://host` of the configured resource URL, else of the request's `Host`.
fn base_url(config: &crate::config::Config, headers: &HeaderMap) -> String {
    if let Some(resource) = &config.auth.resource
        && let Some((scheme, rest)) = resource.split_once("://")
    {
        let host = rest.split('/').next().unwrap_or(rest);
        return format!("{scheme}://{host}");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// `/metrics` for a scraper: when `auth.metrics` names a token, the request must carry it.
pub async fn metrics_token(
    State(gateway): State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    let config = gateway.config();
    let Some(expected) = &config.auth.metrics_token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| bearer_token(v).ok());
    match given {
        Some(token) if super::secret_eq(token, expected) => next.run(request).await,
        _ => refusal(
            StatusCode::UNAUTHORIZED,
            "/metrics needs the scraper's bearer token (auth.metrics)",
        ),
    }
}

/// `/.well-known/oauth-protected-resource` (and the same under `/mcp`): the RFC 9728 document.
pub async fn metadata(State(auth): State<HttpAuth>, headers: HeaderMap) -> Response {
    let config = auth.gateway.config();
    let resource = config
        .auth
        .resource
        .clone()
        .unwrap_or_else(|| format!("{}/mcp", base_url(&config, &headers)));
    axum::Json(json!({
        "resource": resource,
        "authorization_servers": config.auth.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Conductorio",
    }))
    .into_response()
}
