//! Figure 6: start-up with a long audit log. The bench writes the log through the real writer
//! (`AuditLog<AuditEvent>`, realistic call records over a few thousand workflows, `fsync` off to
//! generate quickly: durability of the *generation* is not what is measured), then times, in a child
//! process pinned to one core, (a) the audit crate's open alone (scan, parse, chain check) and (b) the
//! orchestrator's start-up replay (the same plus `State::apply` of every record, as `Gateway::start`
//! does before it serves). The difference tells where start-up time goes.

use anyhow::{Context, Result, bail};
use conductor_audit::{Admit, AuditOptions};
use conductor_core::State;
use conductor_core::config::Config;
use conductor_core::events::{AuditEvent, DecisionKind, Outcome, ReplayEvent};
use std::sync::Arc;

/// The orchestrator's audit log: the generic log carrying the domain's events.
type AuditLog = conductor_audit::AuditLog<AuditEvent>;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// What was generated.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Generated {
    pub records: u64,
    pub workflows: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Writes `records` records: `workflows` ad-hoc workflow starts, then calls round robin over them,
/// each as the live path writes it (decided, started, finished).
pub async fn generate(dir: &Path, records: u64, workflows: usize) -> Result<Generated> {
    let started = Instant::now();
    let options = AuditOptions {
        dir: dir.to_path_buf(),
        fsync: false,
        ..AuditOptions::default()
    };
    let (log, _) = AuditLog::open(options, |_| {}).await?;
    let mut queue = Queue::new(&log);
    let mut written = 0u64;
    for w in 0..workflows {
        let event = AuditEvent::WorkflowStarted {
            workflow_id: workflow_id(w),
            template: None,
            input: json!({}),
            caller: "grpc:bench".into(),
            config_version: "bench-1".into(),
            labels: Default::default(),
        };
        queue.push(event).await?;
        written += 1;
    }
    let mut call = 0usize;
    while written + 3 <= records {
        let workflow_id = workflow_id(call % workflows);
        let call_id = format!("c-{call:012x}");
        let (tool, arguments, result) = if (call / workflows).is_multiple_of(2) {
            (
                "validate_data",
                json!({ "records": [{ "id": call.to_string(), "name": "Ada Lovelace", "email": "ada@example.com" }], "schema": "customer" }),
                json!({ "valid": true, "count": 1 }),
            )
        } else {
            (
                "process_data",
                json!({ "records": [{ "id": call.to_string(), "amount": 42 }] }),
                json!({ "count": 1, "records": [{ "id": call.to_string(), "amount": 42 }] }),
            )
        };
        queue
            .push(AuditEvent::CallDecided {
                workflow_id: workflow_id.clone(),
                call_id: call_id.clone(),
                tool: tool.into(),
                step: None,
                arguments,
                caller: "grpc:bench".into(),
                decision: DecisionKind::Allow,
                violations: Vec::new(),
                gate: None,
                config_version: "bench-1".into(),
                labels: Vec::new(),
                workflow_labels: Vec::new(),
                conditions: Vec::new(),
                gate_reason: None,
                trace: None,
            })
            .await?;
        queue
            .push(AuditEvent::CallStarted {
                workflow_id: workflow_id.clone(),
                call_id: call_id.clone(),
                tool: tool.into(),
                server: "validation".into(),
                trace: None,
            })
            .await?;
        queue
            .push(AuditEvent::CallFinished {
                workflow_id,
                call_id,
                tool: tool.into(),
                outcome: Outcome::Succeeded,
                duration_us: 180,
                error: None,
                result: Some(result),
                details: None,
                trace: None,
            })
            .await?;
        written += 3;
        call += 1;
    }
    log.append(AuditEvent::ConfigLoaded {
        config_version: "bench-1".into(),
        path: None,
    })
    .await?;
    log.close().await;
    let bytes = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(Generated {
        records: written + 1,
        workflows,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Queues records without waiting for each, but waits for one in every [`Queue::EVERY`], so that
/// generation never runs far ahead of the writer.
struct Queue<'a> {
    log: &'a AuditLog,
    queued: usize,
}

impl<'a> Queue<'a> {
    const EVERY: usize = 512;

    fn new(log: &'a AuditLog) -> Self {
        Queue { log, queued: 0 }
    }

    async fn push(&mut self, event: AuditEvent) -> Result<()> {
        let queued = self.log.enqueue(unix_ms(), event, Admit::Outcome)?;
        self.queued += 1;
        if self.queued.is_multiple_of(Self::EVERY) {
            queued.durable().await?;
        }
        Ok(())
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn workflow_id(w: usize) -> String {
    format!("wf-{w:08x}-bench")
}

/// What a timed start-up child reports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StartTime {
    pub ms: f64,
    pub records: u64,
    pub cpu_ms: f64,
}

/// Which start-up to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartKind {
    /// `AuditLog::open` with an empty replay: scan, parse, verify the chain.
    Audit,
    /// The orchestrator's start-up replay: the same plus `State::apply` of every record (what
    /// `Gateway::start` does before it serves), into workflows, histories and approvals.
    State,
}

/// In the child: times one start-up and prints a [`StartTime`] as JSON on stdout.
pub async fn child(dir: &Path, config_json: &str, kind: StartKind) -> Result<()> {
    let cpu = crate::daemons::cpu_time_of("self")?;
    let started = Instant::now();
    let audit = AuditOptions {
        dir: dir.to_path_buf(),
        ..AuditOptions::default()
    };
    match kind {
        StartKind::Audit => {
            let (log, report) = AuditLog::open(audit, |_| {}).await?;
            print_time(
                started.elapsed().as_secs_f64() * 1000.0,
                report.records,
                cpu,
            )?;
            log.close().await;
        }
        StartKind::State => {
            let config = Arc::new(Config::from_slice(config_json.as_bytes())?);
            let mut state = State::new(config);
            let (log, report) =
                AuditLog::open_replaying(audit, |r: conductor_audit::Replayed<ReplayEvent>| {
                    state.apply(r.ts_ms, &r.event)
                })
                .await?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            print_time(elapsed, report.records, cpu)?;
            // The state is built; dropping it is not part of the start-up.
            std::hint::black_box(state.workflows.len());
            log.close().await;
        }
    }
    Ok(())
}

fn print_time(ms: f64, records: u64, cpu_before: std::time::Duration) -> Result<()> {
    let cpu_ms = crate::daemons::cpu_time_of("self")?
        .saturating_sub(cpu_before)
        .as_secs_f64()
        * 1000.0;
    println!(
        "{}",
        serde_json::to_string(&StartTime {
            ms,
            records,
            cpu_ms
        })?
    );
    Ok(())
}

/// Whether start-ups can be pinned to one core here.
pub fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the child (`conductor-bench recover-child`) once, pinned to core 0 when `pin`.
pub fn time_start(dir: &Path, config_file: &Path, kind: StartKind, pin: bool) -> Result<StartTime> {
    let exe = std::env::current_exe()?;
    let kind_arg = match kind {
        StartKind::Audit => "audit",
        StartKind::State => "state",
    };
    let mut command = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("0").arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let output = command
        .arg("recover-child")
        .arg("--dir")
        .arg(dir)
        .arg("--config")
        .arg(config_file)
        .arg("--kind")
        .arg(kind_arg)
        .env("RUST_LOG", "warn")
        .output()
        .context("cannot run the start-up child")?;
    if !output.status.success() {
        bail!(
            "the start-up child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("the start-up child printed {stdout:?}"))
}
