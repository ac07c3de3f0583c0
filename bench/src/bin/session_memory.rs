//! Issue 26's memory figure: the orchestrator's state after one session of 1,000,000 calls holds
//! no more than after 1,000 (goal: RSS ≤ RSS after 1k calls + 16 MiB), and replaying the same
//! records gives the same state.
//!
//! It drives `State::apply` in-process with synthetic records, as the live path applies them (a
//! call's `call_decided`, `call_started` and `call_finished`; one in a hundred denied, one in fifty
//! failed), in one ad-hoc workflow: a million calls through the daemons would take longer than a
//! run on these 2-core machines allows, and what grows with a session is the state. The audit log
//! is not written (its memory does not grow with the log's length either). Then a fresh state
//! applies the same records as start-up reads them (each serialized to its JSON line and parsed
//! back as a `ReplayEvent`), and the two states' `observe()` must be equal.
//!
//! `--calls-in-memory N` sets `workflows.calls_in_memory` (default: the configuration's default);
//! a value above the call count shows what keeping every call costs.

use anyhow::{Context, Result, bail};
use clap::Parser;
use conductor_core::State;
use conductor_core::config::Config;
use conductor_core::events::{AuditEvent, DecisionKind, Outcome, ReplayEvent};
use conductor_core::policy::{RuleKind, Violation};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "RSS of the orchestrator's state over one long session, and its replay")]
struct Args {
    /// Calls in the session.
    #[arg(long, default_value_t = 1_000_000)]
    calls: u64,
    /// The first RSS reading is taken after this many calls.
    #[arg(long, default_value_t = 1_000)]
    early: u64,
    /// `workflows.calls_in_memory` (absent: the configuration's default).
    #[arg(long)]
    calls_in_memory: Option<u64>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

const WORKFLOW: &str = "wf-long-session";
const GOAL_BYTES: u64 = 16 * 1024 * 1024;

fn config(calls_in_memory: Option<u64>) -> Result<Arc<Config>> {
    let mut text = json!({
        "servers": {
            "validation": { "grpc": "http://127.0.0.1:1", "tools": ["validate_data"] },
            "processing": { "grpc": "http://127.0.0.1:2", "tools": ["process_data"] }
        },
        "rules": [
            { "id": "process-after-validate", "kind": "sequence", "tool": "process_data", "after": ["validate_data"] }
        ]
    });
    if let Some(calls) = calls_in_memory {
        text["workflows"] = json!({ "calls_in_memory": calls });
    }
    Ok(Arc::new(Config::from_slice(text.to_string().as_bytes())?))
}

/// The records of call `i`, as the live path records them.
fn call_records(i: u64) -> Vec<AuditEvent> {
    let call_id = format!("c-{i:012x}");
    let (tool, arguments, result) = if i.is_multiple_of(2) {
        (
            "validate_data",
            json!({ "records": [{ "id": i.to_string(), "name": "Ada Lovelace", "email": "ada@example.com" }], "schema": "customer" }),
            json!({ "valid": true, "count": 1 }),
        )
    } else {
        (
            "process_data",
            json!({ "records": [{ "id": i.to_string(), "amount": 42 }] }),
            json!({ "count": 1, "records": [{ "id": i.to_string(), "amount": 42 }] }),
        )
    };
    let denied = i % 100 == 99;
    let decided = AuditEvent::CallDecided {
        workflow_id: WORKFLOW.into(),
        call_id: call_id.clone(),
        tool: tool.into(),
        step: None,
        arguments,
        caller: "mcp:bench".into(),
        decision: if denied {
            DecisionKind::Deny
        } else {
            DecisionKind::Allow
        },
        violations: if denied {
            vec![Violation {
                rule_id: "process-after-validate".into(),
                rule_kind: RuleKind::Sequence,
                tool: tool.into(),
                message: "call validate_data first".into(),
                unblock_hint: "call validate_data".into(),
                required_tools: vec!["validate_data".into()],
                retry_after_ms: None,
            }]
        } else {
            Vec::new()
        },
        gate: None,
        config_version: "bench".into(),
        labels: Vec::new(),
        workflow_labels: Vec::new(),
        conditions: Vec::new(),
        gate_reason: None,
        trace: None,
    };
    if denied {
        return vec![decided];
    }
    let failed = i % 50 == 7;
    vec![
        decided,
        AuditEvent::CallStarted {
            workflow_id: WORKFLOW.into(),
            call_id: call_id.clone(),
            tool: tool.into(),
            server: "validation".into(),
            trace: None,
        },
        AuditEvent::CallFinished {
            workflow_id: WORKFLOW.into(),
            call_id,
            tool: tool.into(),
            outcome: if failed {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            },
            duration_us: 180,
            error: failed.then(|| "1 record(s) failed validation".into()),
            result: (!failed).then_some(result),
            details: failed.then(|| json!({"invalid": [{"index": 0, "field": "email"}]})),
            trace: None,
        },
    ]
}

fn started() -> AuditEvent {
    AuditEvent::WorkflowStarted {
        workflow_id: WORKFLOW.into(),
        template: None,
        input: Value::Null,
        caller: "mcp:bench".into(),
        config_version: "bench".into(),
        labels: Default::default(),
    }
}

/// This process's resident memory (`VmRSS`), in bytes.
fn rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?;
    Ok(kib * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.early == 0 || args.early > args.calls {
        bail!("--early must be between 1 and --calls ({})", args.calls);
    }
    let config = config(args.calls_in_memory)?;
    let window = config.calls_in_memory;
    let rss_start = rss()?;
    let mut live = State::new(config.clone());
    let mut at_ms = 1_700_000_000_000i64;
    live.apply(at_ms, &started());
    let mut rss_early = 0;
    let started_at = Instant::now();
    for i in 0..args.calls {
        for event in call_records(i) {
            at_ms += 1;
            live.apply(at_ms, &event);
        }
        if i + 1 == args.early {
            rss_early = rss()?;
        }
    }
    let live_seconds = started_at.elapsed().as_secs_f64();
    let rss_late = rss()?;

    // The replay: the same records as start-up reads them, through the same transition.
    let started_at = Instant::now();
    let mut replayed = State::new(config);
    let mut at_ms = 1_700_000_000_000i64;
    let apply_line = |state: &mut State, at_ms: i64, event: &AuditEvent| -> Result<()> {
        let line = serde_json::to_string(event)?;
        let back: ReplayEvent = serde_json::from_str(&line)?;
        state.apply(at_ms, &back);
        Ok(())
    };
    apply_line(&mut replayed, at_ms, &started())?;
    for i in 0..args.calls {
        for event in call_records(i) {
            at_ms += 1;
            apply_line(&mut replayed, at_ms, &event)?;
        }
    }
    let replay_seconds = started_at.elapsed().as_secs_f64();
    let same = live.observe() == replayed.observe();
    let workflow = live
        .workflows
        .get(WORKFLOW)
        .context("the session's workflow is in the state")?;
    let growth = rss_late.saturating_sub(rss_early);
    let met = growth <= GOAL_BYTES && same;
    let figures = json!({
        "calls": args.calls,
        "calls_in_memory": window,
        "calls_recorded": workflow.calls.recorded(),
        "calls_held": workflow.calls.in_memory(),
        "rss_start_mib": mib(rss_start),
        "rss_after_early_mib": mib(rss_early),
        "early_calls": args.early,
        "rss_after_all_mib": mib(rss_late),
        "growth_mib": mib(growth),
        "goal": "growth <= 16 MiB and the replay gives the same state",
        "replay_same_state": same,
        "met": met,
        "apply_seconds": live_seconds,
        "replay_seconds": replay_seconds,
    });
    if args.json {
        println!("{figures}");
    } else {
        println!(
            "calls_in_memory {window}: RSS {:.1} MiB after {} calls, {:.1} MiB after {} calls (+{:.1} MiB; goal <= 16 MiB); {} of {} calls held; replay gives the same state: {same}; {}",
            mib(rss_early),
            args.early,
            mib(rss_late),
            args.calls,
            mib(growth),
            workflow.calls.in_memory(),
            workflow.calls.recorded(),
            if met { "met" } else { "MISSED" },
        );
        println!(
            "({:.1} s to apply the session, {:.1} s to replay it as JSON lines)",
            live_seconds, replay_seconds
        );
    }
    Ok(())
}
