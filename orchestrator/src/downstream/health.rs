//! Whether each downstream server can be reached, checked in the background so that `status`, `/metrics`
//! and the dashboard say a server is down before a call fails on it (issue 25 item 5).
//!
//! A gRPC tool server is asked the standard gRPC health check; an MCP server gets an MCP `ping` on the
//! session calls use. An MCP server run as a child process is started on first use
//! and never by this check: until a call starts it, it is "not started". This module only observes: it
//! never decides a call, never changes the catalog, and a check is bounded by [`CHECK_TIMEOUT`].

use super::{Client, Downstream};
use crate::config::{Config, ServerConfig, Transport};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often every server is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// How long one check may take before the server counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the last check of a server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    Up,
    Down,
    /// An MCP child process no call has started yet (the check does not start it).
    NotStarted,
}

/// One server's reachability as last checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHealth {
    pub server: String,
    /// `grpc`, `mcp-stdio` or `mcp-http`.
    pub transport: &'static str,
    pub state: Reachability,
    /// Why it is down (empty otherwise).
    pub error: String,
    pub checked_at_ms: i64,
    /// Since when it has been in this state.
    pub since_ms: i64,
}

fn transport_name(transport: &Transport) -> &'static str {
    match transport {
        Transport::Grpc { .. } => "grpc",
        Transport::McpStdio { .. } => "mcp-stdio",
        Transport::McpHttp { .. } => "mcp-http",
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Downstream {
    /// The last check of every configured server, by name (empty before the first check).
    pub fn health(&self) -> Vec<ServerHealth> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Checks every server of `config` once, concurrently, and keeps the results (servers no longer
    /// configured are forgotten).
    pub async fn check_health(&self, config: &Config) {
        let checks = config.servers.values().map(|server| async move {
            let found = tokio::time::timeout(CHECK_TIMEOUT, self.reach(server))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within {}",
                        humantime::format_duration(CHECK_TIMEOUT)
                    ))
                });
            (server, found)
        });
        let results = futures::future::join_all(checks).await;
        let now = now_ms();
        let mut board = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for (server, found) in results {
            let (state, error) = match found {
                Ok(state) => (state, String::new()),
                Err(error) => (Reachability::Down, error),
            };
            let since_ms = match board.get(&server.name) {
                Some(before) if before.state == state => before.since_ms,
                before => {
                    match state {
                        Reachability::Down => {
                            tracing::warn!(server = %server.name, %error, "downstream server unreachable")
                        }
                        Reachability::Up if before.is_some() => {
                            tracing::info!(server = %server.name, "downstream server reachable again")
                        }
                        _ => {}
                    }
                    now
                }
            };
            next.insert(
                server.name.clone(),
                ServerHealth {
                    server: server.name.clone(),
                    transport: transport_name(&server.transport),
                    state,
                    error,
                    checked_at_ms: now,
                    since_ms,
                },
            );
        }
        *board = next;
    }

    /// One check of one server.
    async fn reach(&self, server: &ServerConfig) -> Result<Reachability, String> {
        if matches!(server.transport, Transport::McpStdio { .. }) {
            let started = self
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&server.name);
            if !started {
                return Ok(Reachability::NotStarted);
            }
        }
        // A server sent each caller's own token has nobody to be checked as until a caller uses it.
        if super::credentials::awaits_caller(server, &self.presented) {
            return Ok(Reachability::NotStarted);
        }
        match self.client(server).map_err(|e| e.to_string())? {
            Client::Grpc(client) => client.health().await.map(|()| Reachability::Up),
            Client::Mcp(client) => client
                .ping(server)
                .await
                .map(|()| Reachability::Up)
                .map_err(|e| e.to_string()),
            Client::McpHttp(client) => client
                .ping(server)
                .await
                .map(|()| Reachability::Up)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Checks every configured server now and then every [`CHECK_EVERY`] until `stop`; `config` gives the
/// configuration in force (a reload changes the servers checked).
pub async fn keep_checking(
    downstream: &Downstream,
    config: impl Fn() -> Arc<Config>,
    stop: CancellationToken,
) {
    loop {
        let config = config();
        tokio::select! {
            () = downstream.check_health(&config) => {}
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}
