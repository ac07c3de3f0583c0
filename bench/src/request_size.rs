//! Figure 8: the orchestrator's memory per request size (issue 29, item 9: one 1.6 MB `process_data`
//! call had taken RSS from 96 to 406 MB).
//!
//! For each size a fresh orchestrator (so that its peak, `VmHWM`, is this request's own) with
//! `arguments.max_bytes` raised above the largest size: a workflow, the prerequisite call, one small
//! measured call (pools and caches warm), then one `process_data` call over gRPC whose arguments
//! take the size in JSON. Reported: the peak's growth during that call, as MiB and as a multiple of
//! the request's size, and `VmRSS` after it. Last, the largest size against an orchestrator with the
//! default limits (1 MiB): refused, and what its refusal costs.

use crate::daemons::Daemon;
use crate::report::Report;
use crate::scenario::{PREREQUISITE, PREREQUISITE_ARGS, TOOL, TOOL_ARGS, orchestrator_config};
use crate::stack::Stack;
use anyhow::{Context, Result, bail};
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_proto::v1::{StartWorkflowRequest, WorkflowCallRequest};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};

/// The request sizes measured, in bytes of JSON (the last is the issue's).
pub const SIZES: [usize; 4] = [64 * 1024, 256 * 1024, 1000 * 1024, 1_600_000];
/// The smaller set of `--quick`.
pub const QUICK_SIZES: [usize; 2] = [64 * 1024, 1_600_000];

/// `process_data` arguments of about `bytes` bytes of JSON: orders of ~90 bytes each.
pub fn records_of(bytes: usize) -> String {
    let one = |i: usize| json!({ "id": format!("o-{i:07}"), "customer_id": format!("c-{:05}", i % 5000), "amount": 120.5, "currency": "EUR" });
    let per = one(0).to_string().len() + 1;
    let records: Vec<Value> = (0..(bytes.saturating_sub(20) / per).max(1))
        .map(one)
        .collect();
    json!({ "records": records }).to_string()
}

struct Measured {
    peak_growth: u64,
    rss_after: u64,
    refused: Option<String>,
}

/// The shipped configuration's rule with a `when` condition on `process_data` (it reads
/// `args.records`; the bench's records never meet it, so the call is not gated).
fn shipped_condition() -> Value {
    json!({ "id": "large-order-needs-approval", "kind": "approval", "tool": "process_data", "timeout": "10m",
            "when": "has(args.aggregate) && args.records.exists(r, has(r.amount) && r.amount > 10000)" })
}

/// Starts an orchestrator named `name` whose `arguments` limits are `limits` (`None`: the defaults),
/// with the shipped condition rule when `condition`.
fn orchestrator(
    stack: &Stack,
    name: &str,
    limits: Option<Value>,
    condition: bool,
) -> Result<Daemon> {
    let mut config: Value = serde_json::from_str(&orchestrator_config(&stack.urls, None))?;
    if let Some(limits) = limits {
        config["arguments"] = limits;
    }
    if let (true, Some(rules)) = (condition, config["rules"].as_array_mut()) {
        rules.push(shipped_condition());
    }
    let config_file = stack.work_dir.join(format!("{name}.json"));
    std::fs::write(&config_file, config.to_string())?;
    let args = vec![
        "--config".into(),
        config_file.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--audit-dir".into(),
        stack.audit_dir(name).display().to_string(),
    ];
    Daemon::spawn(name, &stack.bin_dir.join("orchestrator"), &args)
}

async fn call(
    client: &mut OrchestratorClient<Channel>,
    workflow_id: &str,
    tool: &str,
    arguments: &str,
) -> Result<(), tonic::Status> {
    let request = WorkflowCallRequest {
        workflow_id: workflow_id.into(),
        tool: tool.into(),
        arguments_json: arguments.into(),
    };
    client.call_tool(request).await.map(drop)
}

/// One measured request of `arguments` against `orchestrator`.
async fn measure(orchestrator: &Daemon, arguments: &str) -> Result<Measured> {
    let channel = Endpoint::from_shared(orchestrator.url(0))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = OrchestratorClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let workflow_id = client
        .start_workflow(StartWorkflowRequest {
            template: String::new(),
            input_json: "{}".into(),
            caller: "bench".into(),
        })
        .await
        .context("StartWorkflow")?
        .into_inner()
        .id;
    call(&mut client, &workflow_id, PREREQUISITE, PREREQUISITE_ARGS)
        .await
        .context("the prerequisite call")?;
    call(&mut client, &workflow_id, TOOL, TOOL_ARGS)
        .await
        .context("the small warm-up call")?;
    let (_, peak_before) = orchestrator.memory()?;
    let refused = match call(&mut client, &workflow_id, TOOL, arguments).await {
        Ok(()) => None,
        Err(status) if status.code() == tonic::Code::InvalidArgument => {
            Some(status.message().to_owned())
        }
        Err(status) => bail!("the measured call failed: {status}"),
    };
    let (rss_after, peak_after) = orchestrator.memory()?;
    Ok(Measured {
        peak_growth: peak_after.saturating_sub(peak_before),
        rss_after,
        refused,
    })
}

/// Figure 8.
pub async fn memory_per_request_size(
    report: &mut Report,
    quick: bool,
    stack: &Stack,
) -> Result<()> {
    let sizes: &[usize] = if quick { &QUICK_SIZES } else { &SIZES };
    let largest = sizes.iter().copied().max().unwrap_or(0);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut details = Vec::new();
    for &size in sizes {
        let arguments = records_of(size);
        let name = format!("request-size-{size}");
        let daemon = orchestrator(stack, &name, Some(json!({ "max_bytes": 8 << 20 })), false)?;
        let measured = measure(&daemon, &arguments).await?;
        drop(daemon);
        if let Some(message) = &measured.refused {
            bail!("a {size}-byte request was refused under an 8 MiB limit: {message}");
        }
        let kib = arguments.len() / 1024;
        report.info(
            8,
            &format!("peak RSS growth, one {kib} KiB process_data call (gRPC)"),
            mib(measured.peak_growth),
            "MiB",
        );
        report.info(
            8,
            &format!("peak RSS growth / request size, {kib} KiB"),
            measured.peak_growth as f64 / arguments.len() as f64,
            "×",
        );
        report.info(
            8,
            &format!("RSS after the {kib} KiB call"),
            mib(measured.rss_after),
            "MiB",
        );
        details.push(json!({ "bytes": arguments.len(), "peak_growth_bytes": measured.peak_growth, "rss_after_bytes": measured.rss_after }));
    }
    // The largest request under the shipped configuration's condition on process_data, which
    // converts the records it reads into CEL values.
    let arguments = records_of(largest);
    let daemon = orchestrator(
        stack,
        "request-size-condition",
        Some(json!({ "max_bytes": 8 << 20 })),
        true,
    )?;
    let measured = measure(&daemon, &arguments).await?;
    drop(daemon);
    let kib = arguments.len() / 1024;
    report.info(
        8,
        &format!(
            "peak RSS growth, one {kib} KiB call, with the shipped `when` condition on process_data"
        ),
        mib(measured.peak_growth),
        "MiB",
    );
    report.info(
        8,
        &format!("peak RSS growth / request size, {kib} KiB, with the condition"),
        measured.peak_growth as f64 / arguments.len() as f64,
        "×",
    );
    details.push(json!({ "bytes": arguments.len(), "condition": true, "peak_growth_bytes": measured.peak_growth, "rss_after_bytes": measured.rss_after }));
    // The largest request against the default limits: refused before it is parsed.
    let daemon = orchestrator(stack, "request-size-default", None, false)?;
    let measured = measure(&daemon, &arguments).await?;
    let refused = measured.refused.is_some();
    report.goal(
        8,
        &format!(
            "peak RSS growth, one {} KiB call at the default limits (refused)",
            arguments.len() / 1024
        ),
        mib(measured.peak_growth),
        "MiB",
        "refused (arguments.max_bytes = 1 MiB), < 16 MiB".into(),
        refused && mib(measured.peak_growth) < 16.0,
        false,
    );
    details.push(json!({ "bytes": arguments.len(), "default_limits": true, "refused": measured.refused, "peak_growth_bytes": measured.peak_growth }));
    report.detail("8_request_size", Value::Array(details));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_take_about_the_asked_size() {
        for size in SIZES {
            let text = records_of(size);
            let ratio = text.len() as f64 / size as f64;
            assert!((0.95..=1.0).contains(&ratio), "{size}: {}", text.len());
        }
    }
}
