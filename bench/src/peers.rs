//! Figure 4: the same MCP load, to the same downstream MCP server (the bench's `echo`, its own
//! process), through Conductorio (an `mcp_url` downstream, with policies and a durable audit record
//! per call), FastMCP's proxy (`create_proxy`, Python) and the Rust gateway `mcp-proxy`. The peers
//! are optional: a missing one is reported as skipped, with how to get it (see the README).

use crate::daemons::Daemon;
use crate::echo_server::{ECHO_ARGS, ECHO_TOOL};
use crate::mcp_load::{self, McpCall};
use crate::report::Report;
use crate::stack::Stack;
use crate::stats::{Summary, median_of};
use crate::suite::Scale;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The bench's own folder (its `.venv` and `peers/` scripts live there).
fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the bench's virtual environment (`BENCH_PYTHON` overrides).
fn python() -> PathBuf {
    std::env::var_os("BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench_dir().join(".venv/bin/python"))
}

/// The `mcp-proxy` binary, installed once into the cache folder (`BENCH_MCP_PROXY` overrides).
fn mcp_proxy() -> PathBuf {
    std::env::var_os("BENCH_MCP_PROXY")
        .map(PathBuf::from)
        .unwrap_or_else(|| bench_dir().join(".cache/mcp-proxy/bin/mcp-proxy"))
}

/// A free loopback port, for peers that cannot report the one they bound.
fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Waits until `addr` accepts connections.
fn wait_listening(addr: SocketAddr, daemon: &Daemon) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} did not listen on {addr}; its log:\n{}",
        daemon.name,
        daemon.log_tail()
    )
}

/// Runs the MCP load against `url`: warm-up, then rounds at the bench's MCP concurrency.
async fn measure(url: &str, scale: &Scale, calls: u64) -> Result<Summary> {
    measure_tool(url, ECHO_TOOL, scale, calls).await
}

/// [`measure`] for a proxy that publishes the echo tool under another name.
async fn measure_tool(url: &str, tool: &str, scale: &Scale, calls: u64) -> Result<Summary> {
    let call = McpCall::new(tool, ECHO_ARGS)?;
    let c = scale.mcp_concurrency;
    mcp_load::round(url, &call, c, (calls / 4).max(c as u64)).await?;
    let mut rounds = Vec::new();
    for _ in 0..scale.rounds {
        rounds.push(mcp_load::round(url, &call, c, calls).await?.summary);
    }
    Ok(median_of(&rounds))
}

pub async fn compare(report: &mut Report, scale: &Scale, stack: &Stack) -> Result<()> {
    let exe = std::env::current_exe()?;
    let echo = Daemon::spawn("echo", &exe, &["serve-echo".into()])?;
    let echo_url = format!("{}/mcp", echo.url(0));
    let c = scale.mcp_concurrency;

    let direct = measure(&echo_url, scale, scale.mcp_calls)
        .await
        .context("the echo server itself")?;
    report.info(
        4,
        &format!("echo MCP server directly (floor), c={c}"),
        direct.calls_per_s,
        "calls/s",
    );

    let downstream = json!({ "mcp_url": echo_url, "tools": [ECHO_TOOL], "timeout": "10s" });
    let orchestrator = stack.orchestrator("peers", Some(("echo", downstream)))?;
    let ours = measure(
        &format!("{}/mcp", orchestrator.url(1)),
        scale,
        scale.mcp_calls,
    )
    .await
    .context("Conductorio")?;
    report.info(
        4,
        &format!("Conductorio (policies + durable audit), c={c}"),
        ours.calls_per_s,
        "calls/s",
    );
    report.detail("4_echo_direct", direct);
    report.detail("4_conductorio", ours);

    match fastmcp(&echo_url, scale).await {
        Ok(Some(peer)) => {
            report.info(
                4,
                &format!("FastMCP create_proxy, c={c}"),
                peer.calls_per_s,
                "calls/s",
            );
            let ratio = ours.calls_per_s / peer.calls_per_s;
            report.goal(
                4,
                "Conductorio / FastMCP proxy, calls/s",
                ratio,
                "×",
                "≥ 100×".into(),
                ratio >= 100.0,
                false,
            );
            report.detail("4_fastmcp", peer);
        }
        Ok(None) => report.skipped(
            4,
            "Conductorio / FastMCP proxy",
            "≥ 100×",
            &format!("no fastmcp in {} (see README)", python().display()),
        ),
        Err(e) => report.failed(4, "FastMCP proxy", &e),
    }
    match rust_proxy(&echo_url, scale, &stack.work_dir).await {
        Ok(Some(peer)) => {
            report.info(4, &format!("mcp-proxy, c={c}"), peer.calls_per_s, "calls/s");
            let ratio = ours.calls_per_s / peer.calls_per_s;
            report.goal(
                4,
                "Conductorio / mcp-proxy, calls/s",
                ratio,
                "×",
                "≥ 1.0×".into(),
                ratio >= 1.0,
                false,
            );
            report.detail("4_mcp_proxy", peer);
        }
        Ok(None) => report.skipped(
            4,
            "Conductorio / mcp-proxy",
            "≥ 1.0×",
            &format!("no {} (see README)", mcp_proxy().display()),
        ),
        Err(e) => report.failed(4, "mcp-proxy", &e),
    }
    Ok(())
}

/// FastMCP's proxy in front of the echo server; `None` when FastMCP is not installed. It is slow by
/// design (a new backend session per request), so it gets far fewer calls per round.
async fn fastmcp(echo_url: &str, scale: &Scale) -> Result<Option<Summary>> {
    let python = python();
    if !has_fastmcp(&python) {
        return Ok(None);
    }
    let addr = free_addr()?;
    let script = bench_dir().join("peers/fastmcp_proxy.py");
    let args = vec![
        script.display().to_string(),
        echo_url.to_owned(),
        addr.port().to_string(),
    ];
    let proxy = Daemon::spawn_unannounced("fastmcp-proxy", &python, &args)?;
    wait_listening(addr, &proxy)?;
    let calls = (scale.mcp_calls / 100).max(2 * scale.mcp_concurrency as u64);
    Ok(Some(
        measure(&format!("http://{addr}/mcp"), scale, calls).await?,
    ))
}

fn has_fastmcp(python: &Path) -> bool {
    std::process::Command::new(python)
        .arg("-c")
        .arg("import fastmcp")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The backend name `mcp-proxy` gives the echo server; it publishes the tool as `echo_<tool>`.
const MCP_PROXY_BACKEND: &str = "echo";

/// `mcp-proxy` (0.6: configured by a TOML file, serving Streamable HTTP at `/`) in front of the
/// echo server, with its defaults (no cache, no retries); `None` when not installed.
async fn rust_proxy(echo_url: &str, scale: &Scale, work_dir: &Path) -> Result<Option<Summary>> {
    let binary = mcp_proxy();
    if !binary.exists() {
        return Ok(None);
    }
    let addr = free_addr()?;
    let config = work_dir.join("mcp-proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nname = \"bench\"\nseparator = \"_\"\n\n[proxy.listen]\nhost = \"127.0.0.1\"\nport = {port}\n\n\
             [[backends]]\nname = \"{MCP_PROXY_BACKEND}\"\ntransport = \"http\"\nurl = \"{echo_url}\"\n",
            port = addr.port()
        ),
    )?;
    let args = vec!["--config".to_owned(), config.display().to_string()];
    let proxy = Daemon::spawn_unannounced("mcp-proxy", &binary, &args)?;
    wait_listening(addr, &proxy)?;
    let tool = format!("{MCP_PROXY_BACKEND}_{ECHO_TOOL}");
    Ok(Some(
        measure_tool(&format!("http://{addr}/"), &tool, scale, scale.mcp_calls).await?,
    ))
}
