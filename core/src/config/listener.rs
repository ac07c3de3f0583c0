//! The HTTP listener's limits against slow and abusive clients, checked.

use super::check::Checker;
use super::raw::RawHttpLimits;
use std::time::Duration;

/// Time-outs and the connection limit of the HTTP listener (see `crate::http`).
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
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_connections: 1024,
        }
    }
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
    let limits = HttpLimits {
        header_timeout: duration(
            "header_timeout",
            &raw.header_timeout,
            default.header_timeout,
        ),
        body_timeout: duration("body_timeout", &raw.body_timeout, default.body_timeout),
        idle_timeout: duration("idle_timeout", &raw.idle_timeout, default.idle_timeout),
        max_connections: raw
            .max_connections
            .map_or(default.max_connections, |n| n as usize),
    };
    if limits.max_connections == 0 {
        c.problem("listen.http_limits.max_connections", "must be at least 1");
    }
    limits
}
