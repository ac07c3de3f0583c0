//! Laundering attempts against the rules that follow the agent (issue 30), over raw HTTP: a second
//! session of the same identity with `flow_scope` set to the caller, a handle replayed by another
//! identity, a forged or altered handle; a handle and its labels across a restart; and `per_call`,
//! the old behaviour, kept on request.

use super::{ALICE, BOB, HANDLE_ARGUMENT, HANDLE_META_KEY, WORKFLOW_META_KEY, rules_follow};
use crate::mcp_support::{
    call_in_session, call_outcome, open_session_as, session_free_call, shipped_config, with_config,
};
use conductor_orchestrator::testing::{self, RunningOrchestrator};
use serde_json::{Value, json};

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

/// A handle, and the labels its workflow carries, outlive a restart on the same audit directory: the
/// handle still opens the workflow (its key is kept beside the log), the flow rule still refuses
/// egress there, and a call without a handle still goes to the identity's current workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_and_its_labels_outlive_a_restart() {
    let servers = conductor_servers::testing::spawn_all().await;
    let mut config: Value =
        serde_json::from_str(&shipped_config(&servers, None)).expect("config JSON");
    rules_follow(&mut config);
    let config = config.to_string();
    let audit = tempfile::tempdir().expect("temp dir");
    let first = testing::spawn(&config, None, audit.path())
        .await
        .expect("orchestrator starts");
    let addr = first.http_addr;
    let listed = call_outcome(
        &session_free_call(addr, Some(ALICE), "raw-eras", "list_backups", json!({})).await,
    )
    .expect("list_backups runs");
    let (workflow, handle) = workflow_and_handle(&listed);
    call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "list_notifications",
            with_handle(json!({}), &handle),
        )
        .await,
    )
    .expect("list_notifications runs");
    first.stop().await;

    let again = testing::spawn(&config, None, audit.path())
        .await
        .expect("orchestrator starts again on the same log");
    let addr = again.http_addr;
    let refused = call_outcome(
        &session_free_call(
            addr,
            Some(ALICE),
            "raw-eras",
            "send_notification",
            with_handle(note(), &handle),
        )
        .await,
    )
    .expect_err("egress after a restart is still refused");
    assert!(
        refused.contains("no-unchecked-egress") && refused.contains(&workflow),
        "the handle still opens its workflow, whose labels still hold: {refused}"
    );
    let current = call_outcome(
        &session_free_call(addr, Some(ALICE), "raw-eras", "list_schemas", json!({})).await,
    )
    .expect("list_schemas runs");
    assert_eq!(
        workflow_and_handle(&current),
        (workflow, handle),
        "without a handle, the identity's current workflow, and the same handle for it"
    );
    again.stop().await;
    servers.stop().await;
}

/// Callers without a credential share the one `anonymous` identity, so where clients are
/// configured nothing passes between them through it: a session-free anonymous call without a
/// handle gets a workflow of its own (one agent's call cannot satisfy another's sequence rule), and
/// under `flow_scope` `caller` one anonymous agent's labels refuse no other's call. A handle still
/// keeps an anonymous agent's workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_share_nothing_where_clients_are_configured() {
    let (servers, orchestrator, _audit) = with_config(|config| {
        rules_follow(config);
        config["clients"]["anonymous"] = json!({ "tools": ["*"] });
        config["flow_scope"] = json!({ "follow": "caller", "window": "8h" });
    })
    .await;
    let addr = orchestrator.http_addr;
    let records = json!({ "records": [{"id": "1", "name": "Ada", "email": "ada@example.com"}], "schema": "customer" });
    let validated = call_outcome(
        &session_free_call(addr, None, "agent", "validate_data", records.clone()).await,
    )
    .expect("validate_data");
    let (first, handle) = workflow_and_handle(&validated);
    let processed = call_outcome(
        &session_free_call(
            addr,
            None,
            "agent",
            "process_data",
            json!({ "records": [] }),
        )
        .await,
    );
    let refused = processed.expect_err("another anonymous call does not share the workflow");
    assert!(refused.contains("validate_data"), "{refused}");
    let continued = call_outcome(
        &session_free_call(
            addr,
            None,
            "agent",
            "process_data",
            with_handle(json!({ "records": [] }), &handle),
        )
        .await,
    )
    .expect("with its handle, the agent keeps its workflow");
    assert_eq!(workflow_and_handle(&continued).0, first);

    let reader = open_session_as(addr, None).await;
    for tool in ["list_backups", "list_notifications"] {
        call_outcome(&call_in_session(addr, None, &reader, tool, json!({})).await)
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
    }
    let other = open_session_as(addr, None).await;
    call_outcome(&call_in_session(addr, None, &other, "send_notification", note()).await)
        .expect("another anonymous agent is not refused for the reader's labels");
    orchestrator.stop().await;
    servers.stop().await;
}
