//! The rules follow the agent, in both MCP protocol eras (issue 30, SPEC §6 and §9.7): real clients
//! (the official Python SDK's high-level `Client` at its defaults, which speaks the session-free
//! 2026-07-28 era, and in legacy mode; the official TypeScript SDK v2 client in both eras) run one
//! scenario through `/mcp` against the real tool servers: a sequence rule satisfied by an earlier
//! call, a conditional rule, a template bound and driven step by step, an approval gate with progress
//! (approved here through gRPC, as `conductorctl approve` does), a flow rule gating egress, a new
//! workflow that does not shed a label, and nothing left running at the end.
//!
//! Then the laundering attempts, over raw HTTP: a second session of the same identity with
//! `flow_scope` set to the caller, a handle replayed by another identity, a forged or altered handle.

use crate::mcp_support;

use conductor_orchestrator::testing::RunningOrchestrator;
use mcp_support::{
    DEADLINE, approve_first_request, call_in_session, call_outcome, node_script, open_session_as,
    run_node, run_python, script, session_free_call, with_config,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

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

/// One call of the summary: what the client was told.
fn describe(call: &Value) -> String {
    format!(
        "is_error {}, workflow {}, text {:?}",
        call["is_error"], call["workflow_id"], call["text"]
    )
}

fn assert_ran(call: &Value, what: &str) {
    assert_eq!(call["is_error"], false, "{what}: {}", describe(call));
    assert!(
        call["protocol_error"].is_null(),
        "{what}: {}",
        describe(call)
    );
}

/// A refusal by the rule `rule`, a tool result (not a protocol error) whose text names it.
fn assert_refused_by(call: &Value, rule: &str, what: &str) {
    assert_eq!(call["is_error"], true, "{what}: {}", describe(call));
    assert!(
        call["protocol_error"].is_null(),
        "{what}: a refusal is a tool result: {}",
        describe(call)
    );
    let text = call["text"].as_str().unwrap_or_default();
    assert!(text.contains(rule), "{what} names {rule}: {text}");
}

/// The workflow a call ran in (from its result's `_meta`).
fn workflow_of(call: &Value) -> &str {
    call["workflow_id"]
        .as_str()
        .filter(|w| w.starts_with("wf-"))
        .unwrap_or_else(|| panic!("the result names its workflow: {}", describe(call)))
}

fn assert_same_workflow(calls: &[&Value], what: &str) {
    let first = workflow_of(calls[0]);
    for call in calls {
        assert_eq!(workflow_of(call), first, "{what}: {}", describe(call));
    }
}

/// `conductor_start_workflow` ran and says which workflow it started (and, session-free, its
/// handle, which the client then passed back); returns the workflow id.
fn started<'a>(call: &'a Value, modern: bool, what: &str) -> &'a str {
    assert_ran(call, what);
    let id = call["structured"]["workflow_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: structuredContent.workflow_id: {}", call));
    assert_eq!(workflow_of(call), id, "{what}");
    let handle = &call["structured"]["workflow_handle"];
    if modern {
        let handle = handle
            .as_str()
            .unwrap_or_else(|| panic!("{what}: a handle for a session-free client: {call}"));
        assert_ne!(
            handle, id,
            "{what}: the handle is sealed, not the workflow id"
        );
        assert!(
            call["text"].as_str().unwrap_or_default().contains(handle),
            "{what}: the text gives the handle: {}",
            describe(call)
        );
    } else {
        assert!(handle.is_null(), "{what}: no handle in a session: {call}");
    }
    id
}

/// For a session-free client, a refusal that another call in the same workflow would satisfy says
/// how to keep the workflow: the argument, and the handle's value.
fn says_how_to_keep_the_workflow(call: &Value, modern: bool, what: &str) {
    if !modern {
        return;
    }
    let handle = call["meta"][HANDLE_META_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: the result carries the handle: {call}"));
    let text = call["text"].as_str().unwrap_or_default();
    assert!(
        text.contains(HANDLE_ARGUMENT) && text.contains(handle),
        "{what}: the refusal says to pass {HANDLE_ARGUMENT} = the handle: {text}"
    );
}

/// Checks a summary of `tests/python/mcp_rules_follow.py` or `tests/node/rules_follow.mjs`.
fn check_scenario(summary: &Value, approval_id: &str) {
    let modern = summary["mode"] == "modern";
    assert_eq!(
        summary["protocol_version"],
        if modern { "2026-07-28" } else { "2025-11-25" }
    );

    // Listing: the workflow tools, and the handle argument for session-free clients only.
    let tools = summary["tools"].as_object().expect("tools listed");
    for tool in ["conductor_start_workflow", "conductor_end_workflow"] {
        assert!(
            tools.contains_key(tool),
            "{tool} listed: {:?}",
            tools.keys()
        );
    }
    for tool in DOWNSTREAM_TOOLS {
        let schema = &tools[tool];
        let argument = &schema["properties"][HANDLE_ARGUMENT];
        if modern {
            assert_eq!(argument["type"], "string", "{tool}: {schema}");
            assert!(
                argument["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{tool}: the handle argument tells a model what to do: {schema}"
            );
            assert!(
                !schema["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|r| r == HANDLE_ARGUMENT),
                "{tool}: the handle is optional: {schema}"
            );
        } else {
            assert!(argument.is_null(), "{tool} in a session: {schema}");
        }
    }

    // 1. A sequence rule satisfied by an earlier call.
    let sequence = &summary["sequence"];
    assert_refused_by(
        &sequence["refused"],
        "process-after-validate",
        "process_data first",
    );
    says_how_to_keep_the_workflow(&sequence["refused"], modern, "process_data first");
    assert_ran(&sequence["validated"], "validate_data");
    assert_ran(&sequence["processed"], "process_data after validate_data");
    assert_same_workflow(
        &[
            &sequence["refused"],
            &sequence["validated"],
            &sequence["processed"],
        ],
        "the sequence's calls (validate_data passed no handle)",
    );
    let first = workflow_of(&sequence["refused"]);
    if modern {
        let handle = sequence["refused"]["handle"]
            .as_str()
            .expect("the first call's result carries a handle");
        assert_ne!(handle, first, "the handle is sealed, not the workflow id");
        assert!(
            sequence["refused"]["texts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|t| t.contains(handle) && !t.contains("process-after-validate")),
            "the call that opened a workflow says so in its own text block, with the handle: {}",
            sequence["refused"]
        );
        assert!(sequence["validated"]["sent_handle"].is_null());
        assert_eq!(sequence["processed"]["sent_handle"], handle);
    }

    // 2. A conditional rule, in a new ad-hoc workflow.
    let conditional = &summary["conditional"];
    let second = started(&conditional["started"], modern, "a new ad-hoc workflow");
    assert_ne!(
        second, first,
        "conductor_start_workflow starts a new workflow"
    );
    assert_eq!(conditional["invalid"]["is_error"], true, "invalid records");
    assert!(
        conditional["invalid"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("validation_failed")),
        "{}",
        describe(&conditional["invalid"])
    );
    assert_ran(
        &conditional["processed"],
        "process_data after a failed validation (a sequence needs a call, any outcome)",
    );
    assert_refused_by(
        &conditional["refused"],
        "backup-needs-valid-data",
        "create_backup after a failed validation",
    );
    says_how_to_keep_the_workflow(&conditional["refused"], modern, "create_backup");
    assert_ran(&conditional["validated"], "validate_data");
    assert_ran(&conditional["backed_up"], "create_backup after a valid one");
    assert_same_workflow(
        &[
            &conditional["started"],
            &conditional["invalid"],
            &conditional["processed"],
            &conditional["refused"],
            &conditional["validated"],
            &conditional["backed_up"],
        ],
        "the conditional part's calls",
    );

    // 3. A template bound by conductor_start_workflow and driven step by step.
    let template = &summary["template"];
    let run = started(&template["started"], modern, "a template run");
    let structured = &template["started"]["structured"];
    assert_eq!(structured["template"], "order_summary", "{structured}");
    assert_eq!(structured["steps_total"], 3, "{structured}");
    assert_eq!(structured["next_step"], "validate", "{structured}");
    let out_of_order = &template["out_of_order"];
    assert_eq!(out_of_order["is_error"], true, "{}", describe(out_of_order));
    assert!(
        out_of_order["text"]
            .as_str()
            .is_some_and(|t| t.contains("validate")),
        "the refusal names the next step: {}",
        describe(out_of_order)
    );
    says_how_to_keep_the_workflow(out_of_order, modern, "a step out of order");
    let steps = template["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 3);
    for step in steps {
        assert_ran(step, "a template step in order");
        assert_eq!(workflow_of(step), run, "{}", describe(step));
    }
    assert_eq!(workflow_of(out_of_order), run);

    // 4. An approval gate with progress.
    let approval = &summary["approval"];
    let gated = started(&approval["started"], modern, "the approval's workflow");
    let restored = &approval["restored"];
    assert_ran(restored, "restore_backup after approval");
    assert_eq!(workflow_of(restored), gated);
    assert_eq!(
        restored["meta"]["io.conductorio/approval"]["id"], approval_id,
        "{restored}"
    );
    assert_eq!(
        restored["meta"]["io.conductorio/approval"]["verdict"],
        "approved"
    );
    let command = format!("conductorctl approve {approval_id}");
    assert!(
        approval["progress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|m| m.contains(&command)),
        "a progress notification names `{command}`: {}",
        approval["progress"]
    );

    // 5. A flow rule: egress after private and untrusted reads.
    let flow = &summary["flow"];
    assert_ran(&flow["untrusted"], "list_notifications");
    assert_refused_by(
        &flow["egress"],
        "no-unchecked-egress",
        "egress after private and untrusted reads",
    );
    let text = flow["egress"]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("restore_backup") && text.contains("list_notifications"),
        "the refusal names the calls that brought each label in: {text}"
    );
    assert_same_workflow(
        &[restored, &flow["untrusted"], &flow["egress"]],
        "the flow part's calls",
    );

    // 6. Laundering by the model: a new workflow keeps the labels.
    let laundering = &summary["laundering"];
    let fresh = started(&laundering["started"], modern, "the model's new workflow");
    assert_ne!(fresh, gated);
    assert_refused_by(
        &laundering["egress"],
        "no-unchecked-egress",
        "egress from a new workflow started after the reads",
    );
    assert_eq!(workflow_of(&laundering["egress"]), fresh);

    // 7. The end.
    let ended = summary["ended"].as_array().expect("ended");
    assert_ran(&ended[0], "conductor_end_workflow");
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

/// What a session-free call's result says: its workflow and handle.
fn workflow_and_handle(result: &Value) -> (String, String) {
    let meta = &result["_meta"];
    let id = meta[WORKFLOW_META_KEY].as_str().expect("a workflow id");
    let handle = meta[HANDLE_META_KEY].as_str().expect("a workflow handle");
    (id.to_owned(), handle.to_owned())
}

fn with_handle(mut arguments: Value, handle: &str) -> Value {
    arguments[HANDLE_ARGUMENT] = json!(handle);
    arguments
}

fn refused_as_invalid_handle(outcome: Result<Value, String>, what: &str) {
    match outcome {
        Ok(result) => panic!("{what} was not refused: {result}"),
        Err(message) => assert!(
            message.contains("not valid for this caller"),
            "{what}: the refusal says the handle is not valid for this caller: {message}"
        ),
    }
}

fn note() -> Value {
    json!({"channel": "log", "recipient": "ops", "subject": "s", "body": "b"})
}

/// With `flow_scope` following the caller, labels an identity brought in follow it into its other
/// sessions and its session-free calls; another identity is not touched. With the default scope
/// (the context), a second session starts clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_follow_the_caller_into_a_second_session() {
    let (servers, orchestrator, _audit) = with_config(|config| {
        rules_follow(config);
        config["flow_scope"] = json!({ "follow": "caller", "window": "8h" });
    })
    .await;
    let addr = orchestrator.http_addr;
    let first = open_session_as(addr, Some(ALICE)).await;
    for tool in ["list_backups", "list_notifications"] {
        call_outcome(&call_in_session(addr, Some(ALICE), &first, tool, json!({})).await)
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
    }

    let second = open_session_as(addr, Some(ALICE)).await;
    let egress = call_outcome(
        &call_in_session(addr, Some(ALICE), &second, "send_notification", note()).await,
    );
    let text = egress.expect_err("egress from alice's second session is refused");
    assert!(
        text.contains("no-unchecked-egress")
            && text.contains("list_backups")
            && text.contains("list_notifications"),
        "the refusal names the rule and the calls of the first session: {text}"
    );
    let session_free = call_outcome(
        &session_free_call(addr, Some(ALICE), "raw-eras", "send_notification", note()).await,
    );
    let text = session_free.expect_err("alice's session-free egress is refused");
    assert!(text.contains("no-unchecked-egress"), "{text}");

    let bob = open_session_as(addr, Some(BOB)).await;
    call_outcome(&call_in_session(addr, Some(BOB), &bob, "send_notification", note()).await)
        .expect("bob brought nothing in: his egress runs");
    orchestrator.stop().await;
    servers.stop().await;

    // The default scope follows the context: a second session is a new one.
    let (servers, orchestrator, _audit) = with_config(rules_follow).await;
    let addr = orchestrator.http_addr;
    let first = open_session_as(addr, Some(ALICE)).await;
    for tool in ["list_backups", "list_notifications"] {
        call_outcome(&call_in_session(addr, Some(ALICE), &first, tool, json!({})).await)
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
    }
    let refused = call_outcome(
        &call_in_session(addr, Some(ALICE), &first, "send_notification", note()).await,
    );
    assert!(
        refused.is_err_and(|t| t.contains("no-unchecked-egress")),
        "the first session's own egress is refused"
    );
    let second = open_session_as(addr, Some(ALICE)).await;
    call_outcome(&call_in_session(addr, Some(ALICE), &second, "send_notification", note()).await)
        .expect("with the context scope, a second session starts clean");
    orchestrator.stop().await;
    servers.stop().await;
}

/// A workflow handle belongs to the identity whose workflow it names: another identity's call, start
/// or end with it is refused and changes nothing; the owner's still works; the handle appears in
/// no audit record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_replayed_by_another_identity_is_refused() {
    let (servers, orchestrator, audit) = with_config(rules_follow).await;
    let addr = orchestrator.http_addr;
    let validate = json!({"records": [{"id": "1", "name": "Ada", "email": "ada@example.com"}], "schema": "customer"});
    let first = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "validate_data",
            validate.clone(),
        )
        .await,
    )
    .expect("alice's validate_data runs");
    let (workflow, handle) = workflow_and_handle(&first);
    let calls = |orchestrator: &RunningOrchestrator| {
        orchestrator
            .gateway
            .workflow(&workflow, true)
            .expect("alice's workflow")
            .calls
            .map_or(0, |c| c.len())
    };
    let before = calls(&orchestrator);

    for (tool, arguments) in [
        ("process_data", json!({"records": [], "dedupe_by": "email"})),
        ("validate_data", validate.clone()),
        ("conductor_start_workflow", json!({})),
        ("conductor_end_workflow", json!({})),
    ] {
        let outcome = call_outcome(
            &session_free_call(
                addr,
                Some(BOB),
                "raw-eras",
                tool,
                with_handle(arguments, &handle),
            )
            .await,
        );
        refused_as_invalid_handle(outcome, &format!("bob's {tool} with alice's handle"));
    }
    let view = orchestrator
        .gateway
        .workflow(&workflow, false)
        .expect("alice's workflow");
    assert!(
        !view.state.is_finished(),
        "bob could not end alice's workflow"
    );
    assert_eq!(
        calls(&orchestrator),
        before,
        "bob's calls did not land in it"
    );

    // The owner's handle still works, and lands in the same workflow.
    let again = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "process_data",
            with_handle(json!({"records": [], "dedupe_by": "email"}), &handle),
        )
        .await,
    )
    .expect("alice's own handle works");
    assert_eq!(workflow_and_handle(&again).0, workflow);

    orchestrator.stop().await;
    let mut records = String::new();
    for entry in std::fs::read_dir(audit.path()).expect("audit dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            records.push_str(&String::from_utf8_lossy(
                &std::fs::read(&path).expect("audit file"),
            ));
        }
    }
    assert!(!records.is_empty(), "the audit log was read");
    assert!(
        !records.contains(&handle),
        "the handle appears in no audit record"
    );
    servers.stop().await;
}

/// A handle the orchestrator did not mint is refused, even to the identity whose workflows it
/// names: one character changed, cut short, a bare workflow id, or (when the handle shows its
/// workflow's id) the seal of one workflow over the id of another of hers. Her real handles work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_altered_handle_is_refused() {
    let (servers, orchestrator, _audit) = with_config(rules_follow).await;
    let addr = orchestrator.http_addr;
    let first = call_outcome(
        &session_free_call(addr, Some(ALICE), "raw-eras", "list_backups", json!({})).await,
    )
    .expect("alice's list_backups runs");
    let (workflow, handle) = workflow_and_handle(&first);
    let second = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "conductor_start_workflow",
            with_handle(json!({}), &handle),
        )
        .await,
    )
    .expect("alice starts a second workflow");
    let (other, other_handle) = workflow_and_handle(&second);
    assert_ne!(other, workflow);
    assert!(handle.is_ascii(), "a handle is plain text: {handle:?}");

    // Another character of the same kind in the middle, so the altered handle still looks like one.
    let middle = handle.len() / 2;
    let changed = match handle.as_bytes()[middle] {
        b'0' => '1',
        c if c.is_ascii_digit() => '0',
        b'a' => 'b',
        c if c.is_ascii_lowercase() => 'a',
        b'A' => 'B',
        _ => 'A',
    };
    let mut forgeries = vec![
        (
            "altered",
            format!("{}{changed}{}", &handle[..middle], &handle[middle + 1..]),
        ),
        ("cut short", handle[..handle.len() - 1].to_owned()),
        ("a bare workflow id", workflow.clone()),
    ];
    if handle.contains(&workflow) {
        forgeries.push((
            "moved to another workflow",
            handle.replace(&workflow, &other),
        ));
    }
    for (what, forged) in forgeries {
        assert_ne!(forged, handle);
        let outcome = call_outcome(
            &session_free_call(
                addr,
                Some(ALICE),
                "raw-eras",
                "send_notification",
                with_handle(note(), &forged),
            )
            .await,
        );
        refused_as_invalid_handle(outcome, &format!("a handle {what}"));
    }

    let own = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "list_notifications",
            with_handle(json!({}), &other_handle),
        )
        .await,
    )
    .expect("alice's real handle works");
    assert_eq!(workflow_and_handle(&own).0, other);
    orchestrator.stop().await;
    servers.stop().await;
}

/// With `mcp.session_free_workflow` set to `per_call`, a session-free call without a handle opens a
/// workflow of its own (the old behaviour), and the handle still keeps one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_call_opens_a_workflow_per_call_and_the_handle_still_keeps_one() {
    let (servers, orchestrator, _audit) = with_config(|config| {
        rules_follow(config);
        config["mcp"]["session_free_workflow"] = json!("per_call");
    })
    .await;
    let addr = orchestrator.http_addr;
    let validate = json!({"records": [{"id": "1", "name": "Ada", "email": "ada@example.com"}], "schema": "customer"});
    let process = json!({"records": [], "dedupe_by": "email"});
    let validated = call_outcome(
        &session_free_call(addr, Some(ALICE), "raw-eras", "validate_data", validate).await,
    )
    .expect("validate_data runs");
    let (workflow, handle) = workflow_and_handle(&validated);
    let alone = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "process_data",
            process.clone(),
        )
        .await,
    );
    assert!(
        alone.is_err_and(|t| t.contains("process-after-validate")),
        "without a handle, process_data runs in a workflow of its own"
    );
    let kept = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "process_data",
            with_handle(process, &handle),
        )
        .await,
    )
    .expect("with the handle, process_data follows validate_data");
    assert_eq!(workflow_and_handle(&kept).0, workflow);
    orchestrator.stop().await;
    servers.stop().await;
}
