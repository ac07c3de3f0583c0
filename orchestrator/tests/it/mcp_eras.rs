//! The rules follow the agent, in both MCP protocol eras (issue 30, SPEC §6 and §9.7): real clients
//! (the official Python SDK's high-level `Client` at its defaults, which speaks the session-free
//! 2026-07-28 era, and in legacy mode; the official TypeScript SDK v2 client in both eras) run one
//! scenario through `/mcp` against the real tool servers: a sequence rule satisfied by an earlier
//! call, a conditional rule, a template bound and driven step by step, an approval gate with progress
//! (approved here through gRPC, as `conductorctl approve` does), a flow rule gating egress, a new
//! workflow that does not shed a label, and nothing left running at the end.
//!
//! The laundering attempts, over raw HTTP, are in `laundering`; what a scenario's summary must show,
//! in `summary`.

mod laundering;
mod summary;

use crate::mcp_support;

use conductor_orchestrator::testing::RunningOrchestrator;
use mcp_support::{
    DEADLINE, approve_first_request, node_script, run_node, run_python, script, with_config,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use summary::check_scenario;

const ALICE: &str = "alice-eras-secret";
const BOB: &str = "bob-eras-secret";
/// The tool argument that carries the workflow handle for session-free clients.
const HANDLE_ARGUMENT: &str = "conductorio_workflow";
const HANDLE_META_KEY: &str = "io.conductorio/workflowHandle";
const WORKFLOW_META_KEY: &str = "io.conductorio/workflowId";
/// The tools the scenario calls, each listed with the handle argument to session-free clients.
const DOWNSTREAM_TOOLS: [&str; 6] = [
    "validate_data",
    "process_data",
    "create_backup",
    "restore_backup",
    "list_notifications",
    "send_notification",
];

/// The shipped configuration with two clients by token, and the flow rule made a refusal, over
/// labels set here: restoring or listing backups brings `private` in, listing notifications
/// `untrusted`, and sending one is `egress`.
fn rules_follow(config: &mut Value) {
    config["clients"] = json!({
        "alice": { "tools": ["*"], "token": ALICE },
        "bob": { "tools": ["*"], "token": BOB }
    });
    config["labels"] = json!({
        "restore_backup": ["private"],
        "list_backups": ["private"],
        "list_notifications": ["untrusted"],
        "send_notification": ["egress"]
    });
    let rules = config["rules"].as_array_mut().expect("rules");
    rules.retain(|rule| rule["kind"] != "flow");
    rules.push(json!({
        "id": "no-unchecked-egress", "kind": "flow", "from": ["private", "untrusted"],
        "to": "egress", "action": "deny"
    }));
}

/// The workflows still running that the MCP client named `client` started.
fn active_from(orchestrator: &RunningOrchestrator, client: &str) -> Vec<String> {
    let named = format!("mcp client {client:?}");
    orchestrator
        .gateway
        .workflows(true, usize::MAX)
        .into_iter()
        .filter(|w| w.caller.contains(&named))
        .map(|w| {
            format!(
                "{} (template {:?}, {}/{} steps, {:?}, {})",
                w.id, w.template, w.steps_done, w.steps_total, w.state, w.caller
            )
        })
        .collect()
}

/// Waits until nothing the client started is running: a session's close ends its workflows as the
/// request completes, so this normally holds at the first look.
async fn nothing_left_running(orchestrator: &RunningOrchestrator, client: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let active = active_from(orchestrator, client);
        if active.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{client} left workflows running: {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        orchestrator.gateway.status(0).active_workflows,
        0,
        "no workflow is active after the only client ended"
    );
}

/// Which real client runs the scenario.
#[derive(Clone, Copy)]
enum Sdk {
    Python,
    TypeScript,
}

/// Runs the scenario with `sdk` in `mode` (`modern` or `legacy`) against a fresh orchestrator,
/// approving its one approval request through gRPC, and checks the summary and that nothing is left
/// running.
async fn scenario(sdk: Sdk, mode: &str) {
    let (servers, orchestrator, _audit) = with_config(rules_follow).await;
    let client = match sdk {
        Sdk::Python => format!("python-rules-follow-{mode}"),
        Sdk::TypeScript => format!("ts-rules-follow-{mode}"),
    };
    let mut args = vec![
        "--url".to_owned(),
        format!("{}/mcp", orchestrator.http_url()),
        "--mode".into(),
        mode.into(),
        "--token".into(),
        ALICE.into(),
        "--client-name".into(),
        client.clone(),
    ];
    let approval = approve_first_request(orchestrator.grpc_url());
    let (summary, approval_id) = match sdk {
        Sdk::Python => {
            args.insert(0, script("mcp_rules_follow.py").display().to_string());
            tokio::join!(run_python(&args), approval)
        }
        Sdk::TypeScript => {
            args.insert(0, node_script("rules_follow.mjs").display().to_string());
            tokio::join!(run_node(&args), approval)
        }
    };
    assert_eq!(summary["mode"], mode, "{summary}");
    check_scenario(&summary, &approval_id);
    let template = summary["template"]["started"]["structured"]["workflow_id"]
        .as_str()
        .unwrap_or_default();
    let run = orchestrator
        .gateway
        .workflow(template, false)
        .expect("the template's workflow");
    assert_eq!(
        (run.steps_done, run.steps_total, run.state.as_str()),
        (3, 3, "completed"),
        "the template run followed its steps and completed with the last"
    );
    nothing_left_running(&orchestrator, &client).await;
    orchestrator.stop().await;
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_default_client_keeps_its_workflow_without_sessions() {
    scenario(Sdk::Python, "modern").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_legacy_client_keeps_its_workflow_in_its_session() {
    scenario(Sdk::Python, "legacy").await;
}

/// The TypeScript SDK v2 at its defaults speaks the session era.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_default_client_keeps_its_workflow_in_its_session() {
    scenario(Sdk::TypeScript, "legacy").await;
}

/// The TypeScript SDK v2 with version negotiation on (`mode: 'auto'`) speaks 2026-07-28.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_negotiating_client_keeps_its_workflow_without_sessions() {
    scenario(Sdk::TypeScript, "modern").await;
}
