//! Which hosts the HTTP listener serves (DNS rebinding): one check for every route that needs it
//! (`/mcp`, `/metrics`), whatever the request's form. A request without `Host` is malformed in
//! HTTP/1.1 and gets 400; an absolute-form target (`POST http://host/mcp`) is checked by its own
//! authority too, which must agree with `Host`; any other host gets 403.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The hosts served: loopback always, then the configured `mcp.allowed_hosts` (an entry with a port
/// allows only that port).
pub fn served_hosts(allowed: &[String]) -> Vec<String> {
    ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(str::to_owned)
        .chain(allowed.iter().cloned())
        .collect()
}

/// The layer: refuses a request whose target host is not served (see [`host_allowed`]).
pub async fn check_host(
    State(hosts): State<Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    match host_allowed(request.uri(), request.headers(), &hosts) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::debug!(?refusal, uri = %request.uri(), "HTTP request refused for its host");
            refusal.response()
        }
    }
}

/// Why a request's target host is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// No `Host` header: HTTP/1.1 says such a request is malformed (RFC 9112 §3.2), and without it
    /// nothing can be checked against DNS rebinding.
    Missing,
    /// A `Host` (or an absolute-form target's authority) that is not one the front serves, or that
    /// the two disagree.
    NotServed,
}

impl HostRefusal {
    /// The answer: 400 for a malformed request, 403 for a host not served, each saying why.
    pub fn response(self) -> Response {
        match self {
            HostRefusal::Missing => plain(
                StatusCode::BAD_REQUEST,
                "Bad Request: missing Host header (HTTP/1.1 requires one on every request)",
            ),
            HostRefusal::NotServed => plain(
                StatusCode::FORBIDDEN,
                "Forbidden: Host header is not allowed (add the host to \"mcp\": {\"allowed_hosts\": [...]} in the orchestrator's configuration to serve it)",
            ),
        }
    }
}

/// Whether the request's target is a host the front serves: its `Host` header, and the authority of
/// an absolute-form target (`POST http://host/mcp`) when it has one, which HTTP/1.1 says a server
/// uses instead of the header, so both must be served and agree. An entry that names a port
/// allows only that port.
pub fn host_allowed(uri: &Uri, headers: &HeaderMap, hosts: &[String]) -> Result<(), HostRefusal> {
    let mut values = headers.get_all(header::HOST).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(if headers.contains_key(header::HOST) {
            HostRefusal::NotServed
        } else {
            HostRefusal::Missing
        });
    };
    let named = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<axum::http::uri::Authority>().ok())
        .and_then(|a| normalized(&a))
        .ok_or(HostRefusal::NotServed)?;
    if let Some(target) = uri.authority()
        && normalized(target).as_ref() != Some(&named)
    {
        return Err(HostRefusal::NotServed);
    }
    let served = hosts.iter().any(|entry| {
        let entry = entry.trim();
        let allowed = match entry.parse::<axum::http::uri::Authority>() {
            Ok(a) => normalized(&a),
            Err(_) if !entry.is_empty() => {
                Some((entry.trim_matches(['[', ']']).to_ascii_lowercase(), None))
            }
            Err(_) => None,
        };
        allowed
            .is_some_and(|(host, port)| host == named.0 && port.is_none_or(|p| named.1 == Some(p)))
    });
    if served {
        Ok(())
    } else {
        Err(HostRefusal::NotServed)
    }
}

/// An authority as host (lower case, without brackets) and port; `None` for one with user
/// information, which no `Host` may carry.
fn normalized(authority: &axum::http::uri::Authority) -> Option<(String, Option<u16>)> {
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    Some((
        authority
            .host()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase(),
        authority.port_u16(),
    ))
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_served_hosts_are_served_whatever_the_request_form() {
        let hosts = served_hosts(&["api.example.com:8443".to_owned()]);
        let origin_form: axum::http::Uri = "/mcp".parse().unwrap();
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
            assert_eq!(
                host_allowed(&origin_form, &with_host(served), &hosts),
                Ok(()),
                "{served}"
            );
        }
        for other in [
            "evil.example",
            "api.example.com",
            "api.example.com:443",
            "127.0.0.2:8080",
            "user@127.0.0.1:8080",
        ] {
            assert_eq!(
                host_allowed(&origin_form, &with_host(other), &hosts),
                Err(HostRefusal::NotServed),
                "{other}"
            );
        }
        assert_eq!(
            host_allowed(&origin_form, &HeaderMap::new(), &hosts),
            Err(HostRefusal::Missing),
            "no Host at all"
        );
        let mut two = with_host("127.0.0.1:1");
        two.append(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(
            host_allowed(&origin_form, &two, &hosts),
            Err(HostRefusal::NotServed)
        );

        // Absolute form: the target's authority counts, and must agree with the header.
        let absolute: axum::http::Uri = "http://127.0.0.1:8080/mcp".parse().unwrap();
        assert_eq!(
            host_allowed(&absolute, &with_host("127.0.0.1:8080"), &hosts),
            Ok(())
        );
        assert_eq!(
            host_allowed(&absolute, &HeaderMap::new(), &hosts),
            Err(HostRefusal::Missing)
        );
        assert_eq!(
            host_allowed(&absolute, &with_host("localhost:8080"), &hosts),
            Err(HostRefusal::NotServed)
        );
        let foreign: axum::http::Uri = "http://evil.example/mcp".parse().unwrap();
        assert_eq!(
            host_allowed(&foreign, &with_host("evil.example"), &hosts),
            Err(HostRefusal::NotServed)
        );
    }
}
