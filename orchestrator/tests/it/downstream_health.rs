//! The background check of each downstream server's reachability (issue 25 item 5), here for an MCP
//! server run as a child process (the official Python SDK's): "not started" until something starts it
//! (the check never does), then "up" by an MCP ping.
//! The gRPC servers' side (the standard health check) is tested end to end in the CLI's tests.

use crate::mcp_support::{python, script};
use conductor_orchestrator::downstream::health::{Reachability, ServerHealth};
use conductor_orchestrator::testing;
use serde_json::json;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(90);

fn echo_config() -> String {
    json!({
        "servers": {
            "echo": {
                "mcp_stdio": { "command": python(), "args": [script("echo_server.py")] },
                "tools": ["echo", "pid", "misbehave", "snapshot", "forecast", "count"],
                "timeout": "2s"
            }
        }
    })
    .to_string()
}

/// Waits until the orchestrator's status shows the echo server as `holds` says, within the deadline.
async fn echo_until(
    orchestrator: &testing::RunningOrchestrator,
    what: &str,
    holds: impl Fn(&ServerHealth) -> bool,
) -> ServerHealth {
    let wait = async {
        loop {
            let status = orchestrator.gateway.status(0);
            if let Some(echo) = status.downstream.iter().find(|h| h.server == "echo")
                && holds(echo)
            {
                return echo.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, wait)
        .await
        .unwrap_or_else(|_| panic!("the echo server was never {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_child_is_not_started_by_the_check_and_is_up_by_ping_once_started() {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&echo_config(), None, audit.path())
        .await
        .expect("orchestrator starts");
    let idle = echo_until(&orchestrator, "checked", |_| true).await;
    assert_eq!(idle.state, Reachability::NotStarted, "{idle:?}");
    assert_eq!(idle.transport, "mcp-stdio");
    // Listing the tools starts the child; the next checks ping it.
    let tools = orchestrator.gateway.tools().await;
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    let up = echo_until(&orchestrator, "up", |h| h.state == Reachability::Up).await;
    assert!(up.error.is_empty(), "{up:?}");
    orchestrator.stop().await;
}
