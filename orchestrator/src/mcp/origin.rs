//! `Origin` validation for the MCP HTTP front, as the MCP specification requires of HTTP servers: a
//! browser page on another site must not drive a local MCP server (DNS rebinding, drive-by requests).
//!
//! Requests without `Origin` (every non-browser client) pass. Loopback origins always pass; others only
//! when listed in the configuration's `mcp.allowed_origins`, read per request so a reload applies.

use crate::gateway::Gateway;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Refuses a request whose `Origin` is neither loopback nor configured, with 403 and how to allow it.
pub async fn check_origin(
    State(gateway): State<Gateway>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        if !origin_allowed(&origin, &gateway.config().mcp.allowed_origins) {
            tracing::warn!(%origin, "refused an MCP request from a foreign Origin");
            let message = format!(
                "Forbidden: Origin {origin:?} may not use this MCP server. Loopback origins are always allowed; to allow this one, add it to \"mcp\": {{\"allowed_origins\": [...]}} in the orchestrator's configuration.\n"
            );
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Whether `origin` (the header's value) is loopback or one of `allowed` (compared without a trailing
/// slash, ignoring case).
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
        || is_loopback(origin)
}

fn is_loopback(origin: &str) -> bool {
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || authority.as_str().contains('@')
        || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
    {
        return false;
    }
    matches!(
        authority.host().to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "[::1]"
    )
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

    #[test]
    fn loopback_origins_pass_on_any_port() {
        for origin in [
            "http://localhost",
            "http://localhost:6274",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
            "https://localhost:443/",
        ] {
            assert!(origin_allowed(origin, &[]), "{origin}");
        }
    }

    #[test]
    fn foreign_and_malformed_origins_are_refused() {
        for origin in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "null",
            "file://",
            "",
            "http://evil@localhost",
            "localhost:80",
        ] {
            assert!(!origin_allowed(origin, &[]), "{origin}");
        }
    }

    #[test]
    fn configured_origins_pass() {
        let allowed = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed("https://APP.example.com/", &allowed));
        assert!(!origin_allowed("https://app.example.com:8443", &allowed));
    }
}
