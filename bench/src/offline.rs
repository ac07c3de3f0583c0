//! Figures 5–7: the policy engine alone (5), start-up over a long audit log (6), and the
//! orchestrator's memory with many live workflows (7).

use crate::daemons::Daemon;
use crate::decisions::{self, DecisionFigures};
use crate::load::{Route, Worker};
use crate::mcp_lean::LeanWorker;
use crate::mcp_load::McpCall;
use crate::recovery::{self, StartKind};
use crate::report::Report;
use crate::scenario::{PREREQUISITE, PREREQUISITE_ARGS, orchestrator_config};
use crate::stack::Stack;
use crate::stats::median;
use crate::suite::Scale;
use anyhow::{Result, anyhow};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

/// Figure 5: p99 per decision with 100 rules, and how flat it stays as history and live workflows grow.
pub fn policy(report: &mut Report, scale: &Scale) {
    let run = |h, l| decisions::measure(h, l, scale.decisions, scale.rounds);
    let by_history: Vec<DecisionFigures> = [10, 1_000, 100_000]
        .into_iter()
        .map(|h| run(h, 10))
        .collect();
    let by_live: Vec<DecisionFigures> = [10, 1_000, 10_000]
        .into_iter()
        .map(|l| run(10, l))
        .collect();
    let worst = run(100_000, 10_000);
    for f in by_history.iter().chain(&by_live).chain([&worst]) {
        let name = format!(
            "decision, history {} / live {}: p50 {:.0} ns, mean {:.0} ns; p99",
            f.history_events, f.live_workflows, f.p50_ns, f.mean_ns
        );
        report.info(5, &name, f.p99_ns, "ns");
    }
    let p99 = by_history
        .iter()
        .chain(&by_live)
        .chain([&worst])
        .map(|f| f.p99_ns)
        .fold(0.0, f64::max);
    report.goal(
        5,
        "decision p99, 100 rules, worst configuration",
        p99,
        "ns",
        "< 2,000 ns".into(),
        p99 < 2_000.0,
        false,
    );
    // The same 100 rules with 10 flow rules and 10 CEL conditions: spread over 10 tools (a call
    // evaluates its own tool's), and all on the decided call (the worst case).
    for (rules, what, judged) in [
        (
            decisions::Rules::FlowsAndSpreadConditions,
            "10 flow rules + 10 CEL conditions on 10 tools",
            true,
        ),
        (
            decisions::Rules::FlowsAndConditions,
            "10 flow rules + 10 CEL conditions all on the decided tool",
            false,
        ),
    ] {
        let figures: Vec<DecisionFigures> =
            [(10, 10), (100_000, 10), (10, 10_000), (100_000, 10_000)]
                .into_iter()
                .map(|(h, l)| decisions::measure_rules(rules, h, l, scale.decisions, scale.rounds))
                .collect();
        for f in &figures {
            let name = format!(
                "decision with {what}, history {} / live {}: p50 {:.0} ns, mean {:.0} ns; p99",
                f.history_events, f.live_workflows, f.p50_ns, f.mean_ns
            );
            report.info(5, &name, f.p99_ns, "ns");
        }
        let p99 = figures.iter().map(|f| f.p99_ns).fold(0.0, f64::max);
        let name = format!("decision p99, 100 rules incl. {what}, worst configuration");
        if judged {
            report.goal(
                5,
                &name,
                p99,
                "ns",
                "< 5,000 ns".into(),
                p99 < 5_000.0,
                false,
            );
        } else {
            report.info(5, &name, p99, "ns");
        }
    }
    let spread = |fs: &[DecisionFigures], key: fn(&DecisionFigures) -> f64| {
        let max = fs.iter().map(key).fold(0.0, f64::max);
        let min = fs.iter().map(key).fold(f64::INFINITY, f64::min);
        max / min
    };
    for (name, fs) in [
        ("history 10 → 100,000", &by_history),
        ("live workflows 10 → 10,000", &by_live),
    ] {
        let mean = spread(fs, |f| f.mean_ns);
        report.goal(
            5,
            &format!("flatness over {name}: max/min mean"),
            mean,
            "×",
            "≤ 1.2".into(),
            mean <= 1.2,
            false,
        );
        let p99 = spread(fs, |f| f.p99_ns);
        report.goal(
            5,
            &format!("flatness over {name}: max/min p99"),
            p99,
            "×",
            "≤ 1.2".into(),
            p99 <= 1.2,
            false,
        );
    }
    report.detail("5_by_history", &by_history);
    report.detail("5_by_live", &by_live);
    report.detail("5_worst", worst);
}

/// Figure 6: generate the log, then time start-ups in a child pinned to one core.
pub async fn recovery(report: &mut Report, scale: &Scale, stack: &Stack) -> Result<()> {
    let dir = stack.work_dir.join("recovery-log");
    let generated =
        recovery::generate(&dir, scale.recovery_records, scale.recovery_workflows).await?;
    report.info(
        6,
        &format!(
            "generated records (fsync off; {} workflows, {:.0} MB, {:.1} s)",
            generated.workflows,
            generated.bytes as f64 / 1e6,
            generated.seconds
        ),
        generated.records as f64,
        "records",
    );
    let config_file = stack.work_dir.join("recovery-config.json");
    std::fs::write(&config_file, orchestrator_config(&stack.urls, None))?;
    let pin = recovery::taskset_available();
    let times = |kind| -> Result<(f64, f64)> {
        recovery::time_start(&dir, &config_file, kind, pin)?; // warm-up: the file in the page cache
        let runs: Vec<_> = (0..scale.recovery_rounds)
            .map(|_| recovery::time_start(&dir, &config_file, kind, pin))
            .collect::<Result<_>>()?;
        Ok((
            median(runs.iter().map(|r| r.ms)),
            median(runs.iter().map(|r| r.cpu_ms)),
        ))
    };
    let (audit_ms, audit_cpu) = times(StartKind::Audit)?;
    let (gateway_ms, gateway_cpu) = times(StartKind::State)?;
    let cores = if pin {
        "1 core (taskset -c 0)"
    } else {
        "NOT pinned: taskset unavailable"
    };
    report.info(
        6,
        &format!("audit open alone (scan, chain, every event decoded whole), {cores}"),
        audit_ms,
        "ms",
    );
    // Start-up decodes only what its replay needs (`ReplayEvent`), so it can take less time than
    // the open alone, which decodes every event whole.
    report.info(
        6,
        "start-up replay (State::apply included) − audit open alone",
        gateway_ms - audit_ms,
        "ms",
    );
    report.goal(
        6,
        &format!("start-up, {} records, {cores}", generated.records),
        gateway_ms / 1000.0,
        "s",
        "< 1.5 s (1,000,000 records)".into(),
        gateway_ms < 1_500.0,
        true,
    );
    report.detail("6_recovery", serde_json::json!({ "generated": generated, "pinned": pin, "audit_open_ms": audit_ms, "audit_open_cpu_ms": audit_cpu, "gateway_start_ms": gateway_ms, "gateway_start_cpu_ms": gateway_cpu }));
    Ok(())
}

/// Figure 7: a fresh orchestrator process, `memory_workflows` ad-hoc workflows of 3 calls each.
pub async fn memory(report: &mut Report, scale: &Scale, stack: &Stack) -> Result<()> {
    let orchestrator = stack.orchestrator("memory", None)?;
    let (idle, _) = orchestrator.memory()?;
    let channel = Endpoint::from_shared(orchestrator.url(0))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let remaining = Arc::new(AtomicUsize::new(scale.memory_workflows));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (channel, remaining) = (channel.clone(), Arc::clone(&remaining));
        tasks.push(tokio::spawn(async move {
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                // Starts the workflow and calls the prerequisite: then two more calls.
                let mut worker = Worker::prepare(Route::Orchestrated, channel.clone()).await?;
                worker.call().await?;
                worker.call().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| anyhow!("a worker panicked: {e}"))??;
    }
    let (rss, peak) = orchestrator.memory()?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let n = scale.memory_workflows;
    report.info(7, "orchestrator RSS idle", mib(idle), "MiB");
    report.goal(
        7,
        &format!("orchestrator RSS with {n} live workflows × 3 calls"),
        mib(rss),
        "MiB",
        "< 64 MiB (10,000 workflows)".into(),
        mib(rss) < 64.0,
        true,
    );
    report.info(7, "orchestrator RSS peak (VmHWM)", mib(peak), "MiB");
    report.info(
        7,
        "RSS growth per workflow",
        (rss.saturating_sub(idle)) as f64 / n as f64 / 1024.0,
        "KiB",
    );
    report.detail("7_memory", serde_json::json!({ "workflows": n, "idle_bytes": idle, "rss_bytes": rss, "peak_bytes": peak }));
    Ok(())
}

/// How long an idle MCP session lives in the idle-sessions measurement: long enough to open them all
/// before the first expires, short enough to wait for.
const SESSION_IDLE: Duration = Duration::from_secs(20);

/// Figure 7, idle MCP sessions: a fresh orchestrator with `mcp.session_idle_timeout` 20 s;
/// `idle_sessions` sessions each open (`initialize`, `notifications/initialized`, no call: a call's
/// workflow is the other measurement's) and are then left alone; `VmRSS` before, with all of them idle,
/// and after they expired.
pub async fn idle_sessions(report: &mut Report, scale: &Scale, stack: &Stack) -> Result<()> {
    let mut config: serde_json::Value =
        serde_json::from_str(&orchestrator_config(&stack.urls, None))?;
    config["mcp"] =
        serde_json::json!({ "session_idle_timeout": format!("{}s", SESSION_IDLE.as_secs()) });
    let config_file = stack.work_dir.join("idle-sessions.json");
    std::fs::write(&config_file, config.to_string())?;
    let args = vec![
        "--config".into(),
        config_file.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--audit-dir".into(),
        stack.audit_dir("idle-sessions").display().to_string(),
    ];
    let orchestrator = Daemon::spawn("idle-sessions", &stack.bin_dir.join("orchestrator"), &args)?;
    let url = format!("{}/mcp", orchestrator.url(1));
    // Opening a session makes no call: `connect` calls only a prerequisite, and this has none.
    let call = McpCall::new(PREREQUISITE, PREREQUISITE_ARGS)?;
    // A warm-up session, so that pools and caches are in the baseline, not in the growth.
    drop(LeanWorker::connect(&url, &call).await?);
    let (before, _) = orchestrator.memory()?;
    let n = scale.idle_sessions;
    let opened = Instant::now();
    let remaining = Arc::new(AtomicUsize::new(n));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (url, call, remaining) = (url.clone(), call.clone(), Arc::clone(&remaining));
        tasks.push(tokio::spawn(async move {
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                drop(LeanWorker::connect(&url, &call).await?);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .map_err(|e| anyhow!("a worker panicked: {e}"))??;
    }
    let took = opened.elapsed();
    if took >= SESSION_IDLE {
        return Err(anyhow!(
            "opening {n} sessions took {took:?}, longer than their idle time-out"
        ));
    }
    let (idle, _) = orchestrator.memory()?;
    // Every session expires within the time-out plus the reaper's tick (a quarter of it).
    tokio::time::sleep(SESSION_IDLE + SESSION_IDLE / 2).await;
    let (expired, _) = orchestrator.memory()?;
    let open_after = open_sessions(&orchestrator.url(1)).await?;
    let kib = |b: u64| b as f64 / 1024.0;
    let per_session = kib(idle.saturating_sub(before)) / n as f64;
    report.info(
        7,
        &format!("orchestrator RSS before {n} idle MCP sessions"),
        kib(before) / 1024.0,
        "MiB",
    );
    report.goal(
        7,
        &format!("RSS growth per idle MCP session ({n} sessions, no call)"),
        per_session,
        "KiB",
        "≤ 16 KiB".into(),
        per_session <= 16.0,
        true,
    );
    report.info(
        7,
        "RSS after the sessions expired − before",
        kib(expired) / 1024.0 - kib(before) / 1024.0,
        "MiB",
    );
    report.goal(
        7,
        "MCP sessions still open after their idle time-out (/metrics conductor_mcp_sessions)",
        open_after,
        "",
        "0".into(),
        open_after == 0.0,
        false,
    );
    report.detail("7_idle_sessions", serde_json::json!({ "sessions": n, "open_after_expiry": open_after, "open_ms": took.as_millis() as u64, "rss_before": before, "rss_idle": idle, "rss_expired": expired }));
    Ok(())
}

/// `conductor_mcp_sessions` from the orchestrator's `/metrics` (`base` is its `http://host:port`).
async fn open_sessions(base: &str) -> Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    text.lines()
        .find_map(|line| line.strip_prefix("conductor_mcp_sessions "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| anyhow!("/metrics has no conductor_mcp_sessions"))
}
