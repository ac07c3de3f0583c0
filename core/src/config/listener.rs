//! The HTTP listener's limits against slow and abusive clients, checked: time-outs, connections, and
//! what one MCP session or one identity may hold (sessions, standalone event streams).

use super::check::Checker;
use super::raw::RawHttpLimits;
use std::time::Duration;

/// Time-outs and the connection, session and stream limits of the HTTP listener (see
/// `crate::http` and the MCP front's session table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// A connection without a byte either way for this long is closed. Longer than the 15 s keep-alive
    /// of MCP's event streams, so a stream waiting for an approval stays open.
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// MCP sessions open at once. Each costs memory until it ends (`DELETE` or the idle time-out),
    /// so the table is bounded; a further `initialize` is refused, never an open session evicted.
    pub max_sessions: usize,
    /// MCP sessions one identity may hold (anonymous callers are one identity), so that no single
    /// identity, least of all an anonymous flood, can take every session and lock the others out.
    pub max_sessions_per_identity: usize,
    /// Standalone `GET /mcp` event streams per MCP session. Each holds a connection for as long as
    /// the session lives (keep-alives defeat the idle time-out), and this server sends nothing on
    /// them, so a client needs one (two bridge a reconnect).
    pub max_streams_per_session: usize,
    /// Standalone `GET /mcp` event streams one identity may hold across its sessions; below
    /// `max_connections`, so one identity's streams cannot hold every connection of the listener.
    pub max_streams_per_identity: usize,
}

/// Sessions open at once, unless configured.
const DEFAULT_MAX_SESSIONS: usize = 16_384;
/// The share of `max_sessions` one identity may hold, unless configured: one in sixteen.
const DEFAULT_SESSION_SHARE: usize = 16;
/// Standalone event streams per session, unless configured.
const DEFAULT_STREAMS_PER_SESSION: usize = 2;
/// The share of `max_connections` one identity's event streams may hold, unless configured: a quarter.
const DEFAULT_STREAM_SHARE: usize = 4;

impl Default for HttpLimits {
    fn default() -> Self {
        let max_connections = 1024;
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_identity: share(DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_SHARE),
            max_streams_per_session: DEFAULT_STREAMS_PER_SESSION,
            max_streams_per_identity: share(max_connections, DEFAULT_STREAM_SHARE),
        }
    }
}

/// `total / parts`, at least 1.
fn share(total: usize, parts: usize) -> usize {
    (total / parts).max(1)
}

pub(super) fn check_http_limits(c: &mut Checker, raw: &RawHttpLimits) -> HttpLimits {
    let default = HttpLimits::default();
    let mut duration = |field: &str, text: &Option<String>, fallback: Duration| match text {
        None => fallback,
        Some(text) => match super::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                c.problem(
                    format!("listen.http_limits.{field}"),
                    "must be longer than zero",
                );
                fallback
            }
            Ok(d) => d,
            Err(message) => {
                c.problem(format!("listen.http_limits.{field}"), message);
                fallback
            }
        },
    };
    let header_timeout = duration(
        "header_timeout",
        &raw.header_timeout,
        default.header_timeout,
    );
    let body_timeout = duration("body_timeout", &raw.body_timeout, default.body_timeout);
    let idle_timeout = duration("idle_timeout", &raw.idle_timeout, default.idle_timeout);
    let count = |c: &mut Checker, field: &str, given: Option<u32>, fallback: usize| match given {
        None => fallback,
        Some(0) => {
            c.problem(format!("listen.http_limits.{field}"), "must be at least 1");
            fallback
        }
        Some(n) => n as usize,
    };
    let max_connections = count(
        c,
        "max_connections",
        raw.max_connections,
        default.max_connections,
    );
    let max_sessions = count(c, "max_sessions", raw.max_sessions, default.max_sessions);
    let max_sessions_per_identity = count(
        c,
        "max_sessions_per_identity",
        raw.max_sessions_per_identity,
        share(max_sessions, DEFAULT_SESSION_SHARE),
    );
    if max_sessions_per_identity > max_sessions {
        c.problem(
            "listen.http_limits.max_sessions_per_identity",
            format!("must not exceed max_sessions ({max_sessions})"),
        );
    }
    let max_streams_per_session = count(
        c,
        "max_streams_per_session",
        raw.max_streams_per_session,
        default.max_streams_per_session,
    );
    let max_streams_per_identity = count(
        c,
        "max_streams_per_identity",
        raw.max_streams_per_identity,
        share(max_connections, DEFAULT_STREAM_SHARE),
    );
    if raw.max_streams_per_identity.is_some() && max_streams_per_identity >= max_connections {
        c.problem(
            "listen.http_limits.max_streams_per_identity",
            format!(
                "must be below max_connections ({max_connections}), or one identity's event streams can hold every connection"
            ),
        );
    }
    HttpLimits {
        header_timeout,
        body_timeout,
        idle_timeout,
        max_connections,
        max_sessions,
        max_sessions_per_identity,
        max_streams_per_session,
        max_streams_per_identity,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use serde_json::{Value, json};

    /// The checked limits of a configuration with `limits` as `listen.http_limits`, or the paths
    /// of its problems.
    fn checked(limits: Value) -> Result<HttpLimits, Vec<String>> {
        let config = json!({
            "servers": { "a": { "grpc": "http://127.0.0.1:1", "tools": ["t"] } },
            "listen": { "http_limits": limits }
        });
        Config::from_slice(config.to_string().as_bytes())
            .map(|config| config.listen.http_limits)
            .map_err(|e| e.problems().iter().map(|p| p.path.clone()).collect())
    }

    #[test]
    fn defaults_bound_sessions_and_streams_per_identity() {
        let limits = checked(json!({})).expect("the defaults are valid");
        assert_eq!(limits, HttpLimits::default());
        assert_eq!(limits.max_sessions, 16_384);
        assert_eq!(limits.max_sessions_per_identity, 1_024);
        assert_eq!(limits.max_streams_per_session, 2);
        assert_eq!(limits.max_streams_per_identity, 256);
    }

    #[test]
    fn the_shares_follow_the_totals_unless_configured() {
        let limits = checked(json!({ "max_sessions": 100, "max_connections": 40 })).expect("valid");
        assert_eq!(
            (
                limits.max_sessions_per_identity,
                limits.max_streams_per_identity
            ),
            (6, 10)
        );
        let limits = checked(json!({
            "max_sessions": 4, "max_sessions_per_identity": 4, "max_connections": 1,
            "max_streams_per_session": 3
        }))
        .expect("valid");
        assert_eq!(
            (
                limits.max_sessions_per_identity,
                limits.max_streams_per_identity,
                limits.max_streams_per_session
            ),
            (4, 1, 3)
        );
    }

    #[test]
    fn zero_and_shares_larger_than_their_totals_are_refused() {
        let problems = checked(json!({
            "max_connections": 0, "max_sessions": 0, "max_sessions_per_identity": 0,
            "max_streams_per_session": 0, "max_streams_per_identity": 0
        }))
        .expect_err("zeros are refused");
        for field in [
            "max_connections",
            "max_sessions",
            "max_sessions_per_identity",
            "max_streams_per_session",
            "max_streams_per_identity",
        ] {
            assert!(
                problems.contains(&format!("listen.http_limits.{field}")),
                "{field}: {problems:?}"
            );
        }
        let problems = checked(json!({
            "max_sessions": 10, "max_sessions_per_identity": 11,
            "max_connections": 8, "max_streams_per_identity": 8
        }))
        .expect_err("shares above their totals are refused");
        assert_eq!(
            problems,
            [
                "listen.http_limits.max_sessions_per_identity",
                "listen.http_limits.max_streams_per_identity"
            ]
        );
    }
}
