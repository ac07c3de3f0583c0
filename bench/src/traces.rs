//! Figure 10 (issue 24): what exporting traces costs a call. Two orchestrators on the same tool
//! servers and the same configuration, one without an exporter and one exporting every trace
//! (`sampling_ratio` 1.0) over OTLP/gRPC to a receiver in this process; the same gRPC and MCP load
//! at c=32 to each in every round (which one goes first alternates), and each one's CPU time per
//! call from `/proc`. The goal is read on the median of the rounds' own ratios.
//!
//! The receiver only counts what it is sent (decoding happens in this process, not in the
//! orchestrator measured). Without an exporter the orchestrator creates no span at all; what that
//! costs against a build without tracing cannot be measured in one run of one build.

use crate::daemons::Daemon;
use crate::load::{Connections, Route, round};
use crate::mcp_load::{self, McpCall};
use crate::report::Report;
use crate::scenario::{PREREQUISITE, PREREQUISITE_ARGS, TOOL, TOOL_ARGS, orchestrator_config};
use crate::stack::Stack;
use crate::stats::median;
use crate::suite::Scale;
use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub const SECTION: u8 = 10;
const CONCURRENCY: usize = 32;

/// Counts the spans it is sent.
struct Receiver(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP receiver on loopback port 0: its URL and its span count.
async fn receiver() -> Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let count = Arc::new(AtomicU64::new(0));
    let service = TraceServiceServer::new(Receiver(count.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_listener(listener)),
    );
    Ok((url, count))
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// An orchestrator named `name` on the stack's servers, with `telemetry` in its configuration.
fn orchestrator(stack: &Stack, name: &str, telemetry: Option<serde_json::Value>) -> Result<Daemon> {
    let mut config: serde_json::Value =
        serde_json::from_str(&orchestrator_config(&stack.urls, None))?;
    if let Some(telemetry) = telemetry {
        config["telemetry"] = telemetry;
    }
    stack
        .orchestrator_with(name, &config.to_string())
        .with_context(|| format!("starting {name}"))
}

/// CPU µs per call of `daemon` over one round of `run` (`calls` measured, `setup` more untimed).
async fn cpu_per_call<F: std::future::Future<Output = Result<u64>>>(
    daemon: &Daemon,
    setup: u64,
    run: F,
) -> Result<(f64, u64)> {
    let before = daemon.cpu_time()?;
    let calls = run.await?;
    let cpu = daemon.cpu_time()?.saturating_sub(before);
    // No CPU time over a whole round is no measurement (the process measured is not the one
    // serving, e.g. a wrapper around it): a ratio against it would read as a goal met.
    anyhow::ensure!(
        !cpu.is_zero(),
        "no CPU time was measured for {} over {calls} calls: is the process measured the one serving them?",
        daemon.name
    );
    Ok((
        cpu.as_secs_f64() * 1e6 / (calls + setup).max(1) as f64,
        calls,
    ))
}

pub async fn figure(report: &mut Report, scale: &Scale, stack: &Stack) -> Result<()> {
    let (otlp, received) = receiver().await?;
    let off = orchestrator(stack, "traces-off", None)?;
    let on = orchestrator(
        stack,
        "traces-on",
        Some(serde_json::json!({ "otlp_endpoint": otlp, "sampling_ratio": 1.0 })),
    )?;
    let c = CONCURRENCY;
    // Twice the suite's rounds and one more, each half as long: more ratios for the median, an
    // odd number of them, in the same time.
    let rounds = 2 * scale.rounds + 1;
    let grpc_calls = scale.throughput_calls / 8;
    let mcp_calls = scale.mcp_calls / 4;
    let call = McpCall::new(TOOL, TOOL_ARGS)?.after(PREREQUISITE, PREREQUISITE_ARGS)?;
    let targets = [&off, &on];
    let mut grpc_connections = Vec::new();
    for daemon in targets {
        grpc_connections.push(Connections::open(Route::Orchestrated, &daemon.url(0), c).await?);
    }
    eprintln!(
        "bench: 10. CPU per call, traces off and on (sampling 1.0 to a local receiver), c={c}"
    );
    // Warm-up.
    for (daemon, connections) in targets.iter().zip(&grpc_connections) {
        round(connections, c, grpc_calls / 2).await?;
        mcp_load::round(&format!("{}/mcp", daemon.url(1)), &call, c, mcp_calls / 2).await?;
    }
    let mut cpu = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut rate = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for r in 0..rounds {
        // Each round measures both, in turn; which goes first alternates, so that neither is
        // always the one measured just after the other's load.
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (daemon, connections) = (targets[i], &grpc_connections[i]);
            let started = std::time::Instant::now();
            // The round's set-up (a workflow and a prerequisite per worker) is in the CPU time.
            let (per_call, calls) = cpu_per_call(daemon, 2 * c as u64, async {
                Ok(round(connections, c, grpc_calls).await?.summary.calls)
            })
            .await?;
            cpu[0][i].push(per_call);
            rate[0][i].push(calls as f64 / started.elapsed().as_secs_f64());
            let url = format!("{}/mcp", daemon.url(1));
            let started = std::time::Instant::now();
            let (per_call, calls) = cpu_per_call(daemon, 2 * c as u64 + 1, async {
                Ok(mcp_load::round(&url, &call, c, mcp_calls)
                    .await?
                    .summary
                    .calls)
            })
            .await?;
            cpu[1][i].push(per_call);
            rate[1][i].push(calls as f64 / started.elapsed().as_secs_f64());
        }
    }
    for (f, front) in ["gRPC", "MCP"].into_iter().enumerate() {
        // The figure is the median of the rounds' own ratios: a round that was slow for both (the
        // machine busy elsewhere) moves neither side of its ratio.
        let ratios: Vec<f64> = cpu[f][0]
            .iter()
            .zip(&cpu[f][1])
            .map(|(off, on)| on / off.max(f64::MIN_POSITIVE))
            .collect();
        let extra = (median(ratios) - 1.0) * 100.0;
        let off_cpu = median(std::mem::take(&mut cpu[f][0]));
        let on_cpu = median(std::mem::take(&mut cpu[f][1]));
        report.info(
            SECTION,
            &format!("{front} CPU per call, c={c}, no exporter"),
            off_cpu,
            "µs",
        );
        report.info(
            SECTION,
            &format!("{front} CPU per call, c={c}, traces exported (sampling 1.0)"),
            on_cpu,
            "µs",
        );
        report.goal(
            SECTION,
            &format!("{front} CPU per call with traces exported, over none (median of rounds)"),
            extra,
            "%",
            "≤ +10%".into(),
            extra <= 10.0,
            false,
        );
        report.info(
            SECTION,
            &format!("{front} calls/s, c={c}, no exporter (context)"),
            median(std::mem::take(&mut rate[f][0])),
            "calls/s",
        );
        report.info(
            SECTION,
            &format!("{front} calls/s, c={c}, traces exported (context)"),
            median(std::mem::take(&mut rate[f][1])),
            "calls/s",
        );
    }
    // The spans reach the receiver in batches (every 500 ms).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    report.info(
        SECTION,
        "spans received by the local collector (context)",
        received.load(Ordering::Relaxed) as f64,
        "spans",
    );
    Ok(())
}
