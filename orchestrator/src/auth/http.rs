//! Authentication on the MCP Streamable HTTP front, as an OAuth 2.1 resource server (the MCP
//! authorization specification): every request to `/mcp` is authenticated from its `Authorization:
//! Bearer` header (or, without one, from the client certificate its TLS connection presented, which
//! the listener puts in the request's extensions); a missing (when required) or invalid credential gets `401` with `WWW-Authenticate:
//! Bearer resource_metadata="…"`, and `/.well-known/oauth-protected-resource` serves the RFC 9728
//! document. A request with more than one `Authorization` header gets `400` here and on `/metrics`:
//! which one counts would be a guess, and a proxy in front may guess otherwise.
//!
//! The handler sees the proven identity in the request's extensions. Which identity an MCP session
//! belongs to is kept with the session itself (`crate::mcp`'s session table), which refuses a
//! request naming a session with another identity; this layer never sees or records a session id.

use super::{Authenticator, Identity, bearer_token};
use crate::gateway::Gateway;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The RFC 9728 metadata path.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// What a request that carries more than one `Authorization` header is told.
const AMBIGUOUS: &str = "the request carries more than one Authorization header: send exactly one, `Authorization: Bearer <token>`";

/// The state of the `/mcp` authentication layer. Cheap to clone.
#[derive(Clone)]
pub struct HttpAuth {
    gateway: Gateway,
    authenticator: Authenticator,
}

impl HttpAuth {
    pub fn new(gateway: Gateway) -> Self {
        HttpAuth {
            authenticator: Authenticator::keeping_tokens(
                gateway.inner.downstream.presented.clone(),
            ),
            gateway,
        }
    }
}

/// A request with more than one `Authorization` header: which one counts would be a guess, and a
/// proxy in front may have checked another than this server would pick.
struct Ambiguous;

/// The request's `Authorization` header, `None` without one.
fn authorization(headers: &HeaderMap) -> Result<Option<&HeaderValue>, Ambiguous> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(Ambiguous),
        (first, _) => Ok(first),
    }
}

/// `400`, with the RFC 6750 `invalid_request` challenge.
impl IntoResponse for Ambiguous {
    fn into_response(self) -> Response {
        tracing::info!("HTTP request refused: more than one Authorization header");
        let mut response = refusal(StatusCode::BAD_REQUEST, AMBIGUOUS);
        let challenge = format!(
            "Bearer error=\"invalid_request\", error_description=\"{}\"",
            AMBIGUOUS.replace(['"', '\\'], "'")
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The `/mcp` middleware: authenticate and pass the identity on.
pub async fn authenticate(
    State(auth): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    let config = auth.gateway.config();
    let token = match authorization(request.headers()) {
        Err(ambiguous) => return ambiguous.into_response(),
        Ok(None) => Ok(None),
        Ok(Some(value)) => value
            .to_str()
            .map_err(|_| super::AuthError::Malformed)
            .and_then(bearer_token)
            .map(Some),
    };
    let identity = match token {
        Ok(token) => {
            let certificate = request.extensions().get::<crate::tls::PeerCertificate>();
            auth.authenticator
                .identify_with_certificate(&config, token, certificate)
                .await
        }
        Err(e) => Err(e),
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(error) => {
            tracing::info!(%error, "MCP request refused: no valid credential");
            let missing = matches!(error, super::AuthError::Missing);
            let secure = request.extensions().get::<crate::tls::Secure>().is_some();
            return unauthorized(
                &config,
                request.headers(),
                secure,
                &error.to_string(),
                missing,
            );
        }
    };
    request.extensions_mut().insert::<Identity>(identity);
    next.run(request).await
}

/// `401` with the challenge that points a client at the protected-resource metadata.
/// Without a credential the challenge carries no error code (RFC 6750 section 3.1); with a bad one,
/// `invalid_token`.
fn unauthorized(
    config: &crate::config::Config,
    headers: &HeaderMap,
    secure: bool,
    reason: &str,
    missing: bool,
) -> Response {
    let metadata = format!("{}{METADATA_PATH}", base_url(config, headers, secure));
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
fn base_url(config: &crate::config::Config, headers: &HeaderMap, secure: bool) -> String {
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
    let scheme = if secure { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// `/metrics` for a scraper: when `auth.metrics` names a token, the request must carry it (and
/// only it).
pub async fn metrics_token(
    State(gateway): State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    let given = match authorization(request.headers()) {
        Ok(given) => given,
        Err(ambiguous) => return ambiguous.into_response(),
    };
    let config = gateway.config();
    let Some(expected) = &config.auth.metrics_token else {
        return next.run(request).await;
    };
    let given = given
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
pub async fn metadata(
    State(auth): State<HttpAuth>,
    secure: Option<axum::Extension<crate::tls::Secure>>,
    headers: HeaderMap,
) -> Response {
    let config = auth.gateway.config();
    let resource = config
        .auth
        .resource
        .clone()
        .unwrap_or_else(|| format!("{}/mcp", base_url(&config, &headers, secure.is_some())));
    axum::Json(json!({
        "resource": resource,
        "authorization_servers": config.auth.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "Conductorio",
    }))
    .into_response()
}
