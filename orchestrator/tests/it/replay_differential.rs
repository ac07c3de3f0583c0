//! One state machine: random sequences of calls (allowed, denied, failing), approvals, denials,
//! time-outs, cancels and template runs against a live gateway in front of the real tool servers;
//! then the gateway stops and a new one starts from its log. Whatever happened, the rebuilt state is
//! the live state: histories, violations with their reasons, pending approvals, template progress,
//! counters. With two calls in memory per workflow (`workflows.calls_in_memory`), the same holds,
//! everything but which calls are in memory is what a gateway keeping every call rebuilds, and the
//! history a view folds back from the log is the whole history.

use crate::common;

use common::config_with;
use conductor_audit::AuditOptions;
use conductor_core::state::{Observed, Unfinished};
use conductor_orchestrator::config::Config;
use conductor_orchestrator::gateway::CallSpec;
use conductor_orchestrator::{Gateway, GatewayOptions};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Op {
    StartAdHoc,
    RunTemplate,
    /// A call of `tool` in the `workflow`-th workflow started so far (modulo their count).
    Call {
        workflow: usize,
        tool: Tool,
    },
    /// Decides the `which`-th pending approval (modulo their count), if there is one.
    Decide {
        which: usize,
        approve: bool,
    },
    Cancel {
        workflow: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Tool {
    ValidateGood,
    ValidateBad,
    Process,
    Backup,
    /// Gated, decided by a later `Decide` (or left pending).
    Notify,
    /// Gated with a time-out shorter than any decision: it expires.
    ListBackups,
}

fn tool() -> impl Strategy<Value = Tool> {
    prop_oneof![
        Just(Tool::ValidateGood),
        Just(Tool::ValidateBad),
        Just(Tool::Process),
        Just(Tool::Backup),
        Just(Tool::Notify),
        Just(Tool::ListBackups),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::StartAdHoc),
        1 => Just(Op::RunTemplate),
        6 => (0..4usize, tool()).prop_map(|(workflow, tool)| Op::Call { workflow, tool }),
        2 => (0..3usize, any::<bool>()).prop_map(|(which, approve)| Op::Decide { which, approve }),
        1 => (0..4usize).prop_map(|workflow| Op::Cancel { workflow }),
    ]
}

fn customers() -> Value {
    json!([{ "id": "c-1", "name": "Ada", "email": "ada@example.com" }])
}

fn call_of(tool: Tool) -> (&'static str, Value) {
    match tool {
        Tool::ValidateGood => (
            "validate_data",
            json!({"records": customers(), "schema": "customer"}),
        ),
        Tool::ValidateBad => (
            "validate_data",
            json!({"records": [{"id": "c-9", "name": ""}], "schema": "customer"}),
        ),
        Tool::Process => ("process_data", json!({"records": customers()})),
        Tool::Backup => (
            "create_backup",
            json!({"name": "snap", "data": {"customers": customers()}}),
        ),
        Tool::Notify => (
            "send_notification",
            json!({"channel": "log", "recipient": "ops", "body": "hello"}),
        ),
        Tool::ListBackups => ("list_backups", json!({})),
    }
}

fn config_text(
    servers: &conductor_servers::testing::ToolServers,
    calls_in_memory: Option<u64>,
) -> String {
    let rules = json!([
        { "id": "process-after-validate", "kind": "sequence", "tool": "process_data", "after": ["validate_data"] },
        { "id": "backup-needs-valid-data", "kind": "conditional", "tool": "create_backup", "requires_success": ["validate_data"] },
        { "id": "notify-needs-approval", "kind": "approval", "tool": "send_notification", "timeout": "10m" },
        { "id": "listing-expires", "kind": "approval", "tool": "list_backups", "timeout": "30ms" }
    ]);
    let templates = json!({
        "onboard": { "steps": [
            { "name": "validate", "tool": "validate_data", "arguments": { "records": "${input.records}", "schema": "customer" } },
            { "name": "process", "tool": "process_data", "arguments": { "records": "${steps.validate.output.records}" } }
        ] }
    });
    let mut config = config_with(servers, rules, templates);
    if let Some(calls) = calls_in_memory {
        config["workflows"] = json!({ "calls_in_memory": calls });
    }
    config.to_string()
}

async fn start(config: &str, audit: &Path) -> Gateway {
    Gateway::start(GatewayOptions {
        config: Config::from_slice(config.as_bytes()).expect("config"),
        config_path: None,
        audit: AuditOptions {
            fsync: false,
            ..AuditOptions::new(audit)
        },
    })
    .await
    .expect("gateway starts")
}

/// Waits until the call in `task` either waits for a person (one more request is pending) or has
/// ended (refused at once, e.g. in a finished workflow).
async fn until_waiting_or_done<T>(
    gateway: &Gateway,
    before: usize,
    task: &tokio::task::JoinHandle<T>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.pending_approvals().len() <= before && !task.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gated call neither waits nor ends"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What the window of calls in memory may change: which calls are in memory, and the version of
/// the configuration (two configurations that differ in their window differ in it).
fn beyond_the_window(mut observed: Observed) -> Observed {
    for workflow in observed.workflows.values_mut() {
        workflow.calls.clear();
        workflow.config_version.clear();
    }
    let approvals = observed.pending.iter_mut().chain(&mut observed.decided);
    for approval in approvals {
        approval.config_version.clear();
    }
    for call in &mut observed.unfinished {
        if let Unfinished::Waiting(approval) = call {
            approval.config_version.clear();
        }
    }
    observed
}

/// Runs `ops`, restarts from the log and compares; with `calls_in_memory`, also against a gateway
/// keeping every call started from the same log.
async fn run(ops: Vec<Op>, calls_in_memory: Option<u64>) {
    let servers = conductor_servers::testing::spawn_all().await;
    let config = config_text(&servers, calls_in_memory);
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit");
    let gateway = start(&config, &audit).await;
    let mut workflows: Vec<String> = Vec::new();
    let mut waiting = Vec::new();
    for op in ops {
        match op {
            Op::StartAdHoc => {
                let view = gateway
                    .start_workflow(None, json!({}), "grpc:ada")
                    .await
                    .expect("start");
                workflows.push(view.id);
            }
            Op::RunTemplate => {
                let view = gateway
                    .run_template("onboard", json!({"records": customers()}), "grpc:ada", true)
                    .await
                    .expect("template runs");
                workflows.push(view.id);
            }
            Op::Call { workflow, tool } => {
                let Some(id) =
                    (!workflows.is_empty()).then(|| &workflows[workflow % workflows.len()])
                else {
                    continue;
                };
                let (name, arguments) = call_of(tool);
                let spec = CallSpec {
                    workflow_id: id.clone(),
                    tool: name.into(),
                    arguments,
                    caller: "grpc:ada".into(),
                    step: None,
                };
                if matches!(tool, Tool::Notify) {
                    let before = gateway.pending_approvals().len();
                    let caller = gateway.clone();
                    let task = tokio::spawn(async move { caller.call(spec).await });
                    until_waiting_or_done(&gateway, before, &task).await;
                    waiting.push(task);
                } else {
                    let _ = gateway.call(spec).await;
                }
            }
            Op::Decide { which, approve } => {
                let pending = gateway.pending_approvals();
                if pending.is_empty() {
                    continue;
                }
                let id = pending[which % pending.len()].id.clone();
                let _ = gateway
                    .decide_approval(&id, approve, "grpc:bob", "checked")
                    .await;
            }
            Op::Cancel { workflow } => {
                if workflows.is_empty() {
                    continue;
                }
                let id = workflows[workflow % workflows.len()].clone();
                let _ = gateway.cancel_workflow(&id, "test", "grpc:ada").await;
            }
        }
    }
    // Every call that is not waiting for a person ends (an approved one runs after its approver
    // has heard back).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let live = loop {
        let live = gateway.observe();
        let settled = live
            .unfinished
            .iter()
            .all(|u| matches!(u, Unfinished::Waiting(_)));
        if settled {
            break live;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls still in flight: {:?}",
            live.unfinished
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut histories = BTreeMap::new();
    for id in live.workflows.keys() {
        let view = gateway.workflow_history(id).await.expect("the workflow");
        histories.insert(id.clone(), view.calls.unwrap_or_default());
    }
    drop(waiting);
    gateway.begin_shutdown();
    gateway.shutdown().await;
    let rebuilt = start(&config, &audit).await;
    let after = rebuilt.observe();
    rebuilt.begin_shutdown();
    rebuilt.shutdown().await;
    assert_eq!(after, live);
    if calls_in_memory.is_none() {
        return;
    }
    let keeping_every_call = start(&config_text(&servers, None), &audit).await;
    let every = keeping_every_call.observe();
    for (id, history) in &histories {
        let whole = keeping_every_call
            .workflow(id, true)
            .expect("the workflow")
            .calls
            .unwrap_or_default();
        assert_eq!(history, &whole, "the history of {id} as a view reads it");
    }
    keeping_every_call.begin_shutdown();
    keeping_every_call.shutdown().await;
    assert_eq!(beyond_the_window(every), beyond_the_window(live));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_state_rebuilt_from_the_log_is_the_live_state(ops in prop::collection::vec(op(), 1..24)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(ops, None));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn with_two_calls_in_memory_nothing_else_changes_and_views_read_the_rest_from_the_log(
        ops in prop::collection::vec(op(), 1..24)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(run(ops, Some(2)));
    }
}
