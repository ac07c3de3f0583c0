//! Figure 4: the same MCP load, to the same downstream MCP server (the bench's `echo`, its own
//! process), through Conductorio (an `mcp_url` downstream, with policies and a durable audit record
//! per call), FastMCP's proxy (`create_proxy`, Python) and the Rust gateway `mcp-proxy`. The peers
//! are optional: a missing one is reported as skipped, with how to get it (see the README).

use crate::daemons::Daemon;
use crate::echo_server::{ECHO_ARGS, ECHO_TOOL};
use crate::mcp_load::{self, McpCall};
use crate::report::Report;
use crate::stack::Stack;
use crate::stats::{Summary, median, median_of};
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

/// One path's figures: c=1 latency, c=8 and the bench's MCP concurrency in calls/s, and the CPU per
/// call (at the bench's concurrency) of the proxy in front, of the echo server, and of the generator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathFigures {
    pub c1: Summary,
    pub c8: Summary,
    pub many: Summary,
    pub proxy_cpu_us: Option<f64>,
    pub echo_cpu_us: f64,
    pub generator_cpu_us: f64,
}

/// Runs the MCP load against `url` (a proxy `proxy`, or the echo server itself when `None`):
/// warm-up, then rounds at c=1, c=8 and the bench's MCP concurrency; medians over rounds.
async fn measure_path(
    url: &str,
    tool: &str,
    scale: &Scale,
    calls: u64,
    proxy: Option<&Daemon>,
    echo: &Daemon,
) -> Result<PathFigures> {
    let call = McpCall::new(tool, ECHO_ARGS)?;
    let c = scale.mcp_concurrency;
    mcp_load::round(url, &call, c, (calls / 4).max(c as u64)).await?;
    let (mut c1, mut c8, mut many) = (Vec::new(), Vec::new(), Vec::new());
    let (mut proxy_cpu, mut echo_cpu, mut generator_cpu) = (Vec::new(), Vec::new(), Vec::new());
    let per_call = |before: Duration, after: Duration, n: u64| {
        after.saturating_sub(before).as_secs_f64() * 1e6 / n.max(1) as f64
    };
    for _ in 0..scale.rounds {
        c1.push(
            mcp_load::round(url, &call, 1, (calls / 8).max(50))
                .await?
                .summary,
        );
        c8.push(mcp_load::round(url, &call, 8, calls / 2).await?.summary);
        let proxy_before = proxy.map(Daemon::cpu_time).transpose()?;
        let echo_before = echo.cpu_time()?;
        let generator_before = own_cpu_time()?;
        let round = mcp_load::round(url, &call, c, calls).await?;
        let n = round.summary.calls;
        if let (Some(daemon), Some(before)) = (proxy, proxy_before) {
            proxy_cpu.push(per_call(before, daemon.cpu_time()?, n));
        }
        echo_cpu.push(per_call(echo_before, echo.cpu_time()?, n));
        generator_cpu.push(per_call(generator_before, own_cpu_time()?, n));
        many.push(round.summary);
    }
    Ok(PathFigures {
        c1: median_of(&c1),
        c8: median_of(&c8),
        many: median_of(&many),
        proxy_cpu_us: proxy.map(|_| median(proxy_cpu)),
        echo_cpu_us: median(echo_cpu),
        generator_cpu_us: median(generator_cpu),
    })
}

/// The bench process's own CPU time (the load generator's).
fn own_cpu_time() -> Result<Duration> {
    crate::daemons::cpu_time_of("self")
}

/// The c=32 calls/s of a path, for the peers that only need that.
async fn measure(url: &str, scale: &Scale, calls: u64) -> Result<Summary> {
    let call = McpCall::new(ECHO_TOOL, ECHO_ARGS)?;
    let c = scale.mcp_concurrency;
    mcp_load::round(url, &call, c, (calls / 4).max(c as u64)).await?;
    let mut rounds = Vec::new();
    for _ in 0..scale.rounds {
        rounds.push(mcp_load::round(url, &call, c, calls).await?.summary);
    }
    Ok(median_of(&rounds))
}

/// Reports one path's figures under `name`.
fn report_path(report: &mut Report, name: &str, c: usize, figures: &PathFigures) {
    report.info(4, &format!("{name}, c=1 p50"), figures.c1.p50_us, "µs");
    report.info(
        4,
        &format!("{name}, c=8"),
        figures.c8.calls_per_s,
        "calls/s",
    );
    report.info(
        4,
        &format!("{name}, c={c}"),
        figures.many.calls_per_s,
        "calls/s",
    );
    if let Some(cpu) = figures.proxy_cpu_us {
        report.info(4, &format!("{name}: proxy CPU per call, c={c}"), cpu, "µs");
    }
    report.info(
        4,
        &format!("{name}: echo server CPU per call, c={c}"),
        figures.echo_cpu_us,
        "µs",
    );
    report.info(
        4,
        &format!("{name}: load generator CPU per call, c={c}"),
        figures.generator_cpu_us,
        "µs",
    );
}

pub async fn compare(report: &mut Report, scale: &Scale, stack: &Stack) -> Result<()> {
    let exe = std::env::current_exe()?;
    let echo = Daemon::spawn("echo", &exe, &["serve-echo".into()])?;
    let echo_url = format!("{}/mcp", echo.url(0));
    let c = scale.mcp_concurrency;

    let direct = measure_path(&echo_url, ECHO_TOOL, scale, scale.mcp_calls, None, &echo)
        .await
        .context("the echo server itself")?;
    report_path(report, "echo MCP server directly (floor)", c, &direct);

    let downstream = json!({ "mcp_url": echo_url, "tools": [ECHO_TOOL], "timeout": "10s" });
    let orchestrator = stack.orchestrator("peers", Some(("echo", downstream)))?;
    let ours = measure_path(
        &format!("{}/mcp", orchestrator.url(1)),
        ECHO_TOOL,
        scale,
        scale.mcp_calls,
        Some(&orchestrator),
        &echo,
    )
    .await
    .context("Conductorio")?;
    report_path(report, "Conductorio (policies + durable audit)", c, &ours);
    report.detail("4_echo_direct", &direct);
    report.detail("4_conductorio", &ours);

    match fastmcp(&echo_url, scale).await {
        Ok(Some(peer)) => {
            report.info(
                4,
                &format!("FastMCP create_proxy, c={c}"),
                peer.calls_per_s,
                "calls/s",
            );
            let ratio = ours.many.calls_per_s / peer.calls_per_s;
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
    match rust_proxy(&echo_url, scale, &stack.work_dir, &echo).await {
        Ok(Some(peer)) => {
            report_path(report, "mcp-proxy 0.6.0 (no policy, no audit)", c, &peer);
            for (label, ours_cps, peer_cps) in [
                ("c=8", ours.c8.calls_per_s, peer.c8.calls_per_s),
                (
                    &*format!("c={c}"),
                    ours.many.calls_per_s,
                    peer.many.calls_per_s,
                ),
            ] {
                let ratio = ours_cps / peer_cps;
                report.goal(
                    4,
                    &format!("Conductorio / mcp-proxy, calls/s, {label}"),
                    ratio,
                    "×",
                    "≥ 1.0×".into(),
                    ratio >= 1.0,
                    false,
                );
            }
            if let (Some(ours_cpu), Some(peer_cpu)) = (ours.proxy_cpu_us, peer.proxy_cpu_us) {
                report.goal(
                    4,
                    &format!("orchestrator CPU per MCP→MCP call, c={c}"),
                    ours_cpu,
                    "µs",
                    format!("≤ mcp-proxy's + 40 µs = {:.0} µs", peer_cpu + 40.0),
                    ours_cpu <= peer_cpu + 40.0,
                    false,
                );
            }
            let sync = crate::fsync::floor(&stack.audit_dir("peers"), 200)?;
            let limit = peer.c1.p50_us + 2.0 * sync.p50_us;
            report.goal(
                4,
                "MCP→MCP c=1 p50",
                ours.c1.p50_us,
                "µs",
                format!(
                    "≤ mcp-proxy's p50 + 2 × device floor p50 = {:.0} + 2 × {:.0} = {limit:.0} µs",
                    peer.c1.p50_us, sync.p50_us
                ),
                ours.c1.p50_us <= limit,
                false,
            );
            report.detail("4_mcp_proxy", &peer);
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
async fn rust_proxy(
    echo_url: &str,
    scale: &Scale,
    work_dir: &Path,
    echo: &Daemon,
) -> Result<Option<PathFigures>> {
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
        measure_path(
            &format!("http://{addr}/"),
            &tool,
            scale,
            scale.mcp_calls,
            Some(&proxy),
            echo,
        )
        .await?,
    ))
}
