//! Figures 1–3, against the running daemons: the overhead of one orchestrated call over the direct
//! call and the audit disk's sync (1), closed-loop throughput and the orchestrator's CPU per call (2),
//! and the MCP front (3). Each round runs the compared paths side by side; figures are medians.

use crate::daemons::{Daemon, cpu_time_of};
use crate::fsync;
use crate::load::{Connections, Route, round};
use crate::mcp_load::{self, McpCall};
use crate::report::Report;
use crate::scenario::{PREREQUISITE, PREREQUISITE_ARGS, TOOL, TOOL_ARGS};
use crate::stats::{Summary, median, median_of};
use crate::suite::Scale;
use anyhow::Result;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// The running system the live figures measure.
pub struct Live<'a> {
    pub orchestrator: &'a Daemon,
    pub tool_server: &'a Daemon,
    pub audit_dir: &'a Path,
}

/// Figure 1. Returns the orchestrated p50 at concurrency 1 (the MCP layer's cost is measured from it).
pub async fn overhead(report: &mut Report, scale: &Scale, live: &Live<'_>) -> Result<f64> {
    let direct = Connections::open(Route::Direct, &live.tool_server.url(0), 1).await?;
    let orchestrated = Connections::open(Route::Orchestrated, &live.orchestrator.url(0), 1).await?;
    round(&direct, 1, scale.latency_calls / 4).await?;
    round(&orchestrated, 1, scale.latency_calls / 4).await?;
    let (mut d, mut o, mut f, mut fl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.rounds {
        d.push(round(&direct, 1, scale.latency_calls).await?.summary);
        o.push(round(&orchestrated, 1, scale.latency_calls).await?.summary);
        let dir = live.audit_dir.to_path_buf();
        let samples = scale.fsync_samples;
        let (probe, floor) = tokio::task::spawn_blocking(move || {
            anyhow::Ok((fsync::probe(&dir, samples)?, fsync::floor(&dir, samples)?))
        })
        .await??;
        f.push(probe);
        fl.push(floor);
    }
    let p50_over = median(d.iter().zip(&o).map(|(d, o)| o.p50_us - d.p50_us));
    let p99_over = median(d.iter().zip(&o).map(|(d, o)| o.p99_us - d.p99_us));
    let (d, o, f, fl) = (median_of(&d), median_of(&o), median_of(&f), median_of(&fl));
    report.info(1, "direct ToolService call, c=1, p50", d.p50_us, "µs");
    report.info(1, "direct ToolService call, c=1, p99", d.p99_us, "µs");
    report.info(1, "orchestrated call, c=1, p50", o.p50_us, "µs");
    report.info(1, "orchestrated call, c=1, p99", o.p99_us, "µs");
    report.info(1, "audit dir fdatasync p50", f.p50_us, "µs");
    report.info(1, "audit dir fdatasync p99", f.p99_us, "µs");
    report.info(
        1,
        "audit dir device floor (pre-zeroed pwrite + O_DSYNC) p50",
        fl.p50_us,
        "µs",
    );
    // Write-ahead puts two durable records on a call's path at c=1: its intent (decision and
    // call_started) before it is forwarded, its outcome before the caller hears back. Each costs
    // the device floor at best (issue 26: written in place into a prepared file).
    let p50_goal = 100.0 + 2.0 * fl.p50_us;
    report.goal(
        1,
        "orchestrated − direct, p50",
        p50_over,
        "µs",
        format!("≤ 100 µs + 2 × device floor p50 = {p50_goal:.0} µs"),
        p50_over <= p50_goal,
        false,
    );
    let p99_goal = 4.0 * f.p99_us;
    report.goal(
        1,
        "orchestrated − direct, p99",
        p99_over,
        "µs",
        format!("≤ 2 × (2 syncs × fdatasync p99) = {p99_goal:.0} µs"),
        p99_over <= p99_goal,
        false,
    );
    report.detail("1_floor", fl);
    report.detail("1_direct_c1", d);
    report.detail("1_orchestrated_c1", o);
    report.detail("1_fdatasync", f);
    Ok(o.p50_us)
}

/// CPU time per call of a process over a round.
fn per_call(before: Duration, after: Duration, calls: u64) -> f64 {
    after.saturating_sub(before).as_secs_f64() * 1e6 / calls.max(1) as f64
}

/// Figure 2.
pub async fn throughput(report: &mut Report, scale: &Scale, live: &Live<'_>) -> Result<()> {
    let c = scale.concurrency;
    let direct = Connections::open(Route::Direct, &live.tool_server.url(0), c).await?;
    let orchestrated = Connections::open(Route::Orchestrated, &live.orchestrator.url(0), c).await?;
    round(&direct, c, scale.throughput_calls / 4).await?;
    round(&orchestrated, c, scale.throughput_calls / 4).await?;
    let (mut d, mut o, mut orch_cpu, mut tool_cpu, mut gen_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.rounds {
        d.push(round(&direct, c, scale.throughput_calls).await?.summary);
        let before = (
            live.orchestrator.cpu_time()?,
            live.tool_server.cpu_time()?,
            cpu_time_of("self")?,
        );
        let r = round(&orchestrated, c, scale.throughput_calls).await?;
        let after = (
            live.orchestrator.cpu_time()?,
            live.tool_server.cpu_time()?,
            cpu_time_of("self")?,
        );
        // The round's set-up (c workflows started, c prerequisite calls) is in the CPU time too: count it.
        let calls = r.summary.calls + 2 * c as u64;
        orch_cpu.push(per_call(before.0, after.0, calls));
        tool_cpu.push(per_call(before.1, after.1, calls));
        gen_cpu.push(per_call(before.2, after.2, calls));
        o.push(r.summary);
    }
    let (d, o) = (median_of(&d), median_of(&o));
    let cpu = median(orch_cpu);
    report.info(
        2,
        &format!("direct calls/s, c={c}"),
        d.calls_per_s,
        "calls/s",
    );
    report.goal(
        2,
        &format!("orchestrated calls/s, c={c}"),
        o.calls_per_s,
        "calls/s",
        "≥ 20,000".into(),
        o.calls_per_s >= 20_000.0,
        false,
    );
    report.info(2, &format!("orchestrated p50, c={c}"), o.p50_us, "µs");
    report.goal(
        2,
        &format!("orchestrated p99, c={c}"),
        o.p99_us / 1000.0,
        "ms",
        "≤ 10 ms".into(),
        o.p99_us <= 10_000.0,
        false,
    );
    report.goal(
        2,
        "orchestrator CPU per call",
        cpu,
        "µs",
        "≤ 60 µs".into(),
        cpu <= 60.0,
        false,
    );
    report.info(
        2,
        "tool server CPU per call (context)",
        median(tool_cpu),
        "µs",
    );
    report.info(
        2,
        "load generator CPU per call (context)",
        median(gen_cpu),
        "µs",
    );
    report.detail("2_direct", d);
    report.detail("2_orchestrated", o);
    Ok(())
}

/// Figure 3. `grpc_c1_p50` is figure 1's orchestrated p50, measured in the same run.
pub async fn mcp(
    report: &mut Report,
    scale: &Scale,
    live: &Live<'_>,
    grpc_c1_p50: Option<f64>,
) -> Result<()> {
    let url = format!("{}/mcp", live.orchestrator.url(1));
    if !mcp_load::available(&url).await {
        report.skipped(
            3,
            "MCP front",
            "≥ 8,000 calls/s at c=32",
            "/mcp not available",
        );
        return Ok(());
    }
    let call = McpCall::new(TOOL, TOOL_ARGS)?.after(PREREQUISITE, PREREQUISITE_ARGS)?;
    let c = scale.mcp_concurrency;
    mcp_load::round(&url, &call, 1, scale.latency_calls / 4).await?;
    mcp_load::round(&url, &call, c, scale.mcp_calls / 4).await?;
    let (mut one, mut many, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..scale.rounds {
        one.push(
            mcp_load::round(&url, &call, 1, scale.latency_calls)
                .await?
                .summary,
        );
        let before = live.orchestrator.cpu_time()?;
        let r = mcp_load::round(&url, &call, c, scale.mcp_calls).await?;
        cpu.push(per_call(
            before,
            live.orchestrator.cpu_time()?,
            r.summary.calls + c as u64,
        ));
        many.push(r.summary);
    }
    let (one, many): (Summary, Summary) = (median_of(&one), median_of(&many));
    report.goal(
        3,
        &format!("MCP tools/call calls/s, c={c}"),
        many.calls_per_s,
        "calls/s",
        "≥ 8,000".into(),
        many.calls_per_s >= 8_000.0,
        false,
    );
    report.info(3, &format!("MCP p99, c={c}"), many.p99_us / 1000.0, "ms");
    report.info(
        3,
        "orchestrator CPU per MCP call (context)",
        median(cpu),
        "µs",
    );
    report.goal(
        3,
        "MCP call, c=1, p50",
        one.p50_us,
        "µs",
        "well under 1 ms (< 1,000 µs)".into(),
        one.p50_us < 1000.0,
        false,
    );
    report.info(3, "MCP call, c=1, p99", one.p99_us, "µs");
    match grpc_c1_p50 {
        Some(grpc) => {
            let layer = one.p50_us - grpc;
            report.goal(
                3,
                "MCP layer over gRPC path, c=1, p50",
                layer,
                "µs",
                "≤ 150 µs".into(),
                layer <= 150.0,
                false,
            );
        }
        None => report.skipped(
            3,
            "MCP layer over gRPC path, c=1, p50",
            "≤ 150 µs",
            "figure 1 not run",
        ),
    }
    report.detail("3_mcp_c1", one);
    report.detail("3_mcp_many", json!({ "concurrency": c, "summary": many }));
    Ok(())
}
