//! One run of the whole bench: start the daemons, measure every selected figure (a failure becomes a
//! FAILED row rather than ending the run), and build the [`Report`].

use crate::daemons::bin_dir;
use crate::live::{self, Live};
use crate::report::{Report, machine};
use crate::stack::Stack;
use crate::{cluster, durable, offline, peers, request_size};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// How much to measure: the full run, or `--quick` (a smoke test: same code, small counts).
#[derive(Debug, Clone)]
pub struct Scale {
    pub rounds: usize,
    pub latency_calls: u64,
    pub fsync_samples: usize,
    pub concurrency: usize,
    pub throughput_calls: u64,
    pub mcp_concurrency: usize,
    pub mcp_calls: u64,
    pub decisions: usize,
    pub recovery_records: u64,
    pub recovery_workflows: usize,
    pub recovery_rounds: usize,
    pub memory_workflows: usize,
    /// MCP sessions opened and left idle (figure 7).
    pub idle_sessions: usize,
}

impl Scale {
    pub fn full() -> Scale {
        Scale {
            rounds: 5,
            latency_calls: 2_000,
            fsync_samples: 400,
            concurrency: 64,
            throughput_calls: 40_000,
            mcp_concurrency: 32,
            mcp_calls: 20_000,
            decisions: 200_000,
            recovery_records: 1_000_000,
            recovery_workflows: 5_000,
            recovery_rounds: 3,
            memory_workflows: 10_000,
            idle_sessions: 2_000,
        }
    }

    pub fn quick() -> Scale {
        Scale {
            rounds: 2,
            latency_calls: 200,
            fsync_samples: 50,
            concurrency: 64,
            throughput_calls: 2_000,
            mcp_concurrency: 32,
            mcp_calls: 1_000,
            decisions: 20_000,
            recovery_records: 30_000,
            recovery_workflows: 300,
            recovery_rounds: 1,
            memory_workflows: 300,
            idle_sessions: 500,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub peers: bool,
    /// Figures to run (0–9); empty for all.
    pub only: Vec<u8>,
    pub bin_dir: Option<PathBuf>,
    /// Where audit logs and server data go (a temporary directory inside it); default: the system's.
    pub work_dir: Option<PathBuf>,
}

impl Options {
    fn wants(&self, section: u8) -> bool {
        (self.only.is_empty() || self.only.contains(&section))
            && (section != 4 || self.peers || self.only.contains(&4))
    }
}

/// Runs the selected figures and returns their report.
pub async fn run(options: &Options) -> Result<Report> {
    let scale = if options.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let mut report = Report {
        machine: machine(),
        quick: options.quick,
        ..Report::default()
    };
    let work = match &options.work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("conductor-bench-")
            .tempdir_in(dir)?,
        None => tempfile::Builder::new()
            .prefix("conductor-bench-")
            .tempdir()?,
    };
    let bins = bin_dir(options.bin_dir.as_deref())?;
    eprintln!(
        "bench: binaries from {}, work directory {}",
        bins.display(),
        work.path().display()
    );
    if options.wants(0) {
        eprintln!("bench: 0. one durable record against the device floor");
        let dir = work.path().join("audit-figure-0");
        if let Err(e) = durable::one_durable_record(&mut report, &scale, &dir).await {
            report.failed(0, "one durable record", &e);
        }
    }
    if !(1..=10).any(|section| options.wants(section)) {
        // Figure 0 alone needs no tool server.
        return Ok(report);
    }
    let stack = Stack::start(&bins, work.path()).context("starting the tool servers")?;
    let tool_server = stack.server("processing").context("no processing server")?;

    if [1, 2, 3].iter().any(|&s| options.wants(s)) {
        let orchestrator = stack
            .orchestrator("main", None)
            .context("starting the orchestrator")?;
        let audit_dir = stack.audit_dir("main");
        let live = Live {
            orchestrator: &orchestrator,
            tool_server,
            audit_dir: &audit_dir,
        };
        let mut grpc_c1_p50 = None;
        if options.wants(1) {
            eprintln!("bench: 1. overhead against the floor");
            match live::overhead(&mut report, &scale, &live).await {
                Ok(p50) => grpc_c1_p50 = Some(p50),
                Err(e) => report.failed(1, "overhead against the floor", &e),
            }
        }
        if options.wants(2) {
            eprintln!("bench: 2. throughput");
            if let Err(e) = live::throughput(&mut report, &scale, &live).await {
                report.failed(2, "throughput", &e);
            }
        }
        if options.wants(3) {
            eprintln!("bench: 3. MCP front");
            if let Err(e) = live::mcp(&mut report, &scale, &live, grpc_c1_p50).await {
                report.failed(3, "MCP front", &e);
            }
        }
    }
    if options.wants(4) {
        eprintln!("bench: 4. real peers");
        if let Err(e) = peers::compare(&mut report, &scale, &stack).await {
            report.failed(4, "real peers", &e);
        }
    } else {
        report.skipped(
            4,
            "real peers (FastMCP proxy, mcp-proxy)",
            "≥ 100× FastMCP, ≥ 1.0× mcp-proxy",
            "run with --peers",
        );
    }
    if options.wants(5) {
        eprintln!("bench: 5. policy engine");
        offline::policy(&mut report, &scale);
    }
    if options.wants(6) {
        eprintln!("bench: 6. recovery");
        if let Err(e) = offline::recovery(&mut report, &scale, &stack).await {
            report.failed(6, "recovery", &e);
        }
    }
    if options.wants(7) {
        eprintln!("bench: 7. memory");
        if let Err(e) = offline::memory(&mut report, &scale, &stack).await {
            report.failed(7, "memory", &e);
        }
        if let Err(e) = offline::idle_sessions(&mut report, &scale, &stack).await {
            report.failed(7, "idle MCP sessions", &e);
        }
    }
    if options.wants(8) {
        eprintln!("bench: 8. memory per request size");
        if let Err(e) =
            request_size::memory_per_request_size(&mut report, options.quick, &stack).await
        {
            report.failed(8, "memory per request size", &e);
        }
    }
    if options.wants(cluster::SECTION) {
        eprintln!("bench: 9. the cluster on PostgreSQL");
        if let Err(e) = cluster::figures(&mut report, &scale, &stack).await {
            report.failed(cluster::SECTION, "the cluster on PostgreSQL", &e);
        }
    }
    if options.wants(crate::traces::SECTION) {
        eprintln!("bench: 10. traces exported or not");
        if let Err(e) = crate::traces::figure(&mut report, &scale, &stack).await {
            report.failed(crate::traces::SECTION, "traces", &e);
        }
    }
    drop(stack);
    Ok(report)
}
