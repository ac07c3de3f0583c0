//! What the summary of one run of the scenario must show (`tests/python/mcp_rules_follow.py` and
//! `tests/node/rules_follow.mjs` print the same shape): each step's outcome, the workflow it ran in,
//! and, for session-free clients, the handle that keeps it.

use super::{DOWNSTREAM_TOOLS, HANDLE_ARGUMENT, HANDLE_META_KEY};
use serde_json::Value;

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
pub(super) fn check_scenario(summary: &Value, approval_id: &str) {
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
