//! Table tests of conditions (`when`), `deny` rules, labels and flow rules, on configurations
//! checked the way the orchestrator loads them.

use super::*;
use crate::config::{Config, ToolHints};
use serde_json::{Value, json};

static EMPTY: std::sync::LazyLock<Buckets> = std::sync::LazyLock::new(Buckets::default);

fn config(rules: Value) -> Config {
    let text = json!({
        "servers": {
            "mail": { "grpc": "http://127.0.0.1:1", "tools": ["read_inbox", "send_mail"] },
            "web": { "grpc": "http://127.0.0.1:2", "tools": ["fetch_page"], "labels": ["untrusted"] },
            "bank": { "grpc": "http://127.0.0.1:3", "tools": ["pay", "read_ledger"] }
        },
        "labels": {
            "read_inbox": ["private", "untrusted"],
            "read_ledger": ["private"],
            "send_mail": ["egress"],
            "pay": ["egress"]
        },
        "rules": rules
    });
    Config::from_slice(text.to_string().as_bytes()).expect("the test configuration is valid")
}

fn problems(rules: Value) -> Vec<String> {
    let text = json!({
        "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["pay", "send_mail"] } },
        "labels": { "send_mail": ["egress"], "pay": ["private"] },
        "rules": rules
    });
    match Config::from_slice(text.to_string().as_bytes()) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

/// Decides `tool` with `args` after the calls of `earlier` (each allowed and run), returning the
/// verdict as "allow", "approval:<gate>" or the denying rule ids, and the decision itself.
fn run(config: &Config, earlier: &[&str], tool: &str, args: Value) -> (String, Decision, Trace) {
    let mut history = WorkflowHistory::default();
    for (i, name) in earlier.iter().enumerate() {
        let origin = LabelOrigin {
            call_id: format!("c-{i}"),
            tool: (*name).to_owned(),
            at_ms: 1_000 * i as i64,
            workflow_id: None,
        };
        history
            .labels
            .bring(config.policies.labels_of(name), &origin);
        history.record(&Name::from(*name), true);
    }
    let call = CallRequest {
        workflow_id: "wf",
        tool,
        caller: "ada",
        arguments: Some(&args),
        now_ms: 10_000,
        ..CallRequest::default()
    };
    let rates = RateState {
        global: &EMPTY,
        workflow: &EMPTY,
    };
    let running = RunningCalls::default();
    let (decision, trace) = decide_traced(&config.policies, &history, &running, rates, &call);
    let verdict = match &decision {
        Decision::Allow => "allow".to_owned(),
        Decision::NeedsApproval { gate, .. } => format!("approval:{}", gate.id),
        Decision::Deny { violations } => violations
            .iter()
            .map(|v| v.rule_id.as_str())
            .collect::<Vec<_>>()
            .join("+"),
    };
    (verdict, decision, trace)
}

#[test]
fn conditions_gate_deny_and_fail_closed() {
    let config = config(json!([
        { "id": "big-payment", "kind": "approval", "tool": "pay", "when": "args.amount > 1000" },
        { "id": "own-domain", "kind": "deny", "tool": "send_mail",
          "when": "!args.to.endsWith('@example.com')", "message": "mail goes to example.com only" },
        { "id": "ledger-first", "kind": "sequence", "tool": "pay", "after": ["read_ledger"],
          "when": "args.amount > 5000" }
    ]));
    let table: &[(&str, &[&str], Value, &str)] = &[
        ("pay", &[], json!({"amount": 20}), "allow"),
        ("pay", &[], json!({"amount": 20.5}), "allow"),
        ("pay", &[], json!({"amount": 1500}), "approval:big-payment"),
        ("pay", &[], json!({"amount": 6000}), "ledger-first"),
        (
            "pay",
            &["read_ledger"],
            json!({"amount": 6000}),
            "approval:big-payment",
        ),
        // A missing argument: both conditions fail, and the call is refused, never allowed.
        ("pay", &[], json!({"to": "x"}), "ledger-first+big-payment"),
        (
            "pay",
            &[],
            json!({"amount": "lots"}),
            "ledger-first+big-payment",
        ),
        ("send_mail", &[], json!({"to": "bob@example.com"}), "allow"),
        (
            "send_mail",
            &[],
            json!({"to": "eve@evil.test"}),
            "own-domain",
        ),
        ("send_mail", &[], json!({}), "own-domain"),
    ];
    for (tool, earlier, args, want) in table {
        let (verdict, _, _) = run(&config, earlier, tool, args.clone());
        assert_eq!(verdict, *want, "{tool} {args} after {earlier:?}");
    }
}

#[test]
fn a_failed_condition_says_which_rule_and_why_and_is_recorded() {
    let config = config(json!([
        { "id": "big-payment", "kind": "approval", "tool": "pay", "when": "args.amount > 1000" }
    ]));
    let (_, decision, trace) = run(&config, &[], "pay", json!({"to": "x"}));
    let Decision::Deny { violations } = decision else {
        panic!("a condition that cannot be evaluated must deny, got {decision:?}");
    };
    assert_eq!(violations[0].rule_id, "big-payment");
    assert!(
        violations[0].message.contains("args.amount > 1000"),
        "{}",
        violations[0].message
    );
    assert!(
        violations[0].message.contains("amount"),
        "{}",
        violations[0].message
    );
    assert_eq!(trace.conditions.len(), 1);
    assert_eq!(trace.conditions[0].value, None);
    assert!(trace.conditions[0].error.is_some());

    let (_, _, trace) = run(&config, &[], "pay", json!({"amount": 5}));
    assert_eq!(
        trace.conditions,
        vec![ConditionResult {
            rule_id: "big-payment".into(),
            value: Some(false),
            error: None
        }]
    );
}

#[test]
fn conditions_see_caller_tool_and_workflow() {
    let config = config(json!([
        { "id": "not-eve", "kind": "deny", "tool": "pay", "when": "caller == 'ada' && tool == 'pay'" },
        { "id": "no-mail-after-private", "kind": "deny", "tool": "send_mail",
          "when": "'private' in workflow.labels && workflow.id == 'wf'" }
    ]));
    assert_eq!(run(&config, &[], "pay", json!({})).0, "not-eve");
    assert_eq!(run(&config, &[], "send_mail", json!({})).0, "allow");
    assert_eq!(
        run(&config, &["read_ledger"], "send_mail", json!({})).0,
        "no-mail-after-private"
    );
}

#[test]
fn flows_catch_in_either_order_and_only_when_every_label_was_seen() {
    let config = config(json!([
        { "id": "no-exfiltration", "kind": "flow", "from": ["private", "untrusted"], "to": "egress",
          "action": "approval", "timeout": "10m" },
        { "id": "no-web-to-bank", "kind": "flow", "from": ["untrusted"], "to": "egress",
          "action": "deny", "when": "tool == 'pay'" }
    ]));
    let table: &[(&[&str], &str, &str)] = &[
        (&[], "send_mail", "allow"),
        (&["read_ledger"], "send_mail", "allow"),
        (&["fetch_page"], "send_mail", "allow"),
        (
            &["read_ledger", "fetch_page"],
            "send_mail",
            "approval:no-exfiltration",
        ),
        (
            &["fetch_page", "read_ledger"],
            "send_mail",
            "approval:no-exfiltration",
        ),
        (&["read_inbox"], "send_mail", "approval:no-exfiltration"),
        (&["read_ledger"], "pay", "allow"),
        (&["fetch_page"], "pay", "no-web-to-bank"),
        (&["read_ledger", "fetch_page"], "pay", "no-web-to-bank"),
        (&["read_ledger", "fetch_page"], "read_ledger", "allow"),
    ];
    for (earlier, tool, want) in table {
        let (verdict, _, _) = run(&config, earlier, tool, json!({"amount": 1}));
        assert_eq!(verdict, *want, "{tool} after {earlier:?}");
    }
}

#[test]
fn a_refused_flow_gate_counts_as_the_flow_rule_it_is() {
    let config = config(json!([
        { "id": "no-exfiltration", "kind": "flow", "from": ["private", "untrusted"], "to": "egress",
          "action": "approval", "timeout": "10m" },
        { "id": "big-payment", "kind": "approval", "tool": "pay", "when": "args.amount > 1000" }
    ]));
    let refused = |rule_id: &str, rule_kind| Violation {
        rule_id: rule_id.to_owned(),
        rule_kind,
        tool: "send_mail".to_owned(),
        message: String::new(),
        unblock_hint: String::new(),
        required_tools: Vec::new(),
        retry_after_ms: None,
    };
    let table = [
        ("no-exfiltration", RuleKind::Approval, RuleKind::Flow),
        ("big-payment", RuleKind::Approval, RuleKind::Approval),
        ("no-exfiltration", RuleKind::Flow, RuleKind::Flow),
        ("seq", RuleKind::Sequence, RuleKind::Sequence),
    ];
    for (rule_id, kind, counted) in table {
        assert_eq!(
            config.policies.counted_kind(&refused(rule_id, kind)),
            counted,
            "{rule_id} ({kind:?})"
        );
    }
}

#[test]
fn a_flow_refusal_names_the_calls_that_brought_each_label_in() {
    let config = config(json!([
        { "id": "no-exfiltration", "kind": "flow", "from": ["private", "untrusted"], "to": "egress",
          "action": "approval" },
        { "id": "never-pay-after-web", "kind": "flow", "from": ["untrusted"], "to": "egress",
          "action": "deny" }
    ]));
    let (_, decision, trace) = run(
        &config,
        &["read_ledger", "fetch_page"],
        "send_mail",
        json!({}),
    );
    let Decision::Deny { violations } = decision else {
        panic!("expected a denial, got {decision:?}");
    };
    assert_eq!(violations.len(), 1);
    let message = &violations[0].message;
    assert_eq!(violations[0].rule_kind, RuleKind::Flow);
    assert!(
        message.contains("untrusted from call c-1 (fetch_page at 1970-01-01T00:00:01.000Z)"),
        "{message}"
    );
    assert_eq!(trace.labels, vec![Name::from("egress")]);

    let config = self::config(json!([
        { "id": "no-exfiltration", "kind": "flow", "from": ["private", "untrusted"], "to": "egress",
          "action": "approval" }
    ]));
    let (_, decision, _) = run(
        &config,
        &["read_ledger", "fetch_page"],
        "send_mail",
        json!({}),
    );
    let Decision::NeedsApproval { reason, .. } = decision else {
        panic!("expected approval, got {decision:?}");
    };
    assert!(
        reason.contains("private from call c-0 (read_ledger"),
        "{reason}"
    );
    assert!(
        reason.contains("untrusted from call c-1 (fetch_page"),
        "{reason}"
    );
}

#[test]
fn labels_come_from_tools_servers_and_annotations() {
    let config = config(json!([
        { "id": "no-exfiltration", "kind": "flow", "from": ["untrusted"], "to": "destructive",
          "action": "deny" }
    ]));
    assert_eq!(
        config.policies.labels_of("fetch_page"),
        &[Name::from("untrusted")]
    );
    assert_eq!(
        config.policies.labels_of("read_inbox"),
        &[Name::from("private"), Name::from("untrusted")]
    );
    let hints = |open_world, destructive| ToolHints {
        open_world,
        destructive,
    };
    let labels = &config.annotation_labels;
    assert_eq!(
        labels.labels_for(hints(Some(true), None)),
        vec![Name::from("untrusted")]
    );
    assert_eq!(
        labels.labels_for(hints(None, Some(true))),
        vec![Name::from("destructive")]
    );
    assert!(
        labels
            .labels_for(hints(Some(false), Some(false)))
            .is_empty()
    );
    assert!(labels.labels_for(hints(None, None)).is_empty());

    // A tool learned as destructive from its annotations is caught by a flow on that label.
    let learned = labels.labels_for(hints(None, Some(true)));
    let mut history = WorkflowHistory::default();
    let origin = LabelOrigin {
        call_id: "c-0".into(),
        tool: "fetch_page".into(),
        at_ms: 0,
        workflow_id: None,
    };
    history
        .labels
        .bring(config.policies.labels_of("fetch_page"), &origin);
    let args = json!({});
    let call = CallRequest {
        workflow_id: "wf",
        tool: "read_ledger",
        arguments: Some(&args),
        learned_labels: &learned,
        ..CallRequest::default()
    };
    let rates = RateState {
        global: &EMPTY,
        workflow: &EMPTY,
    };
    let (decision, trace) = decide_traced(
        &config.policies,
        &history,
        &RunningCalls::default(),
        rates,
        &call,
    );
    assert!(matches!(decision, Decision::Deny { .. }), "{decision:?}");
    assert_eq!(
        trace.labels,
        vec![Name::from("private"), Name::from("destructive")]
    );
}

#[test]
fn annotation_defaults_are_configurable() {
    let text = json!({
        "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["a"] } },
        "annotation_labels": { "open_world": ["web"], "destructive": [] }
    });
    let config = Config::from_slice(text.to_string().as_bytes()).expect("valid");
    let hints = ToolHints {
        open_world: Some(true),
        destructive: Some(true),
    };
    assert_eq!(
        config.annotation_labels.labels_for(hints),
        vec![Name::from("web")]
    );
}

#[test]
fn outlook_without_arguments_neither_blocks_nor_gates_on_conditions() {
    let config = config(json!([
        { "id": "big-payment", "kind": "approval", "tool": "pay", "when": "args.amount > 1000" }
    ]));
    let call = CallRequest {
        workflow_id: "wf",
        tool: "pay",
        ..CallRequest::default()
    };
    let rates = RateState {
        global: &EMPTY,
        workflow: &EMPTY,
    };
    let decision = decide(
        &config.policies,
        &WorkflowHistory::default(),
        &RunningCalls::default(),
        rates,
        &call,
    );
    assert_eq!(decision, Decision::Allow);
}

#[test]
fn bad_conditions_and_flows_are_configuration_problems_with_their_path() {
    let table: &[(Value, &str)] = &[
        (
            json!([{ "id": "r", "kind": "deny", "tool": "pay", "when": "args.amount >" }]),
            "rules[0].when: does not parse as CEL",
        ),
        (
            json!([{ "id": "r", "kind": "deny", "tool": "pay", "when": "amount > 3" }]),
            "rules[0].when: unknown name `amount`; a condition can use args, caller, tool, workflow",
        ),
        (
            json!([{ "id": "r", "kind": "deny", "tool": "pay", "when": "workflow.owner == 'x'" }]),
            "rules[0].when: workflow has no field `owner`",
        ),
        (
            json!([{ "id": "r", "kind": "approval", "tool": "pay", "when": "args.amount + 1" }]),
            "rules[0].when: returns a number, not a boolean",
        ),
        (
            json!([{ "id": "r", "kind": "approval", "tool": "pay", "when": "'yes'" }]),
            "rules[0].when: returns a string, not a boolean",
        ),
        (
            json!([{ "id": "r", "kind": "approval", "tool": "pay", "when": " " }]),
            "rules[0].when: the condition is empty",
        ),
        (
            json!([{ "id": "ok", "kind": "deny", "tool": "send_mail", "when": "args.amount > 1" },
                   { "id": "r", "kind": "approval", "tool": "pay", "when": "args.amount > '1000'" }]),
            "rules[1].when: compares args.amount with the string \"1000\"",
        ),
        (
            json!([{ "id": "r", "kind": "deny", "tool": "pay",
                     "when": "args.amount > 1000 && args.amount < 'x'" }]),
            "rules[0].when: uses args.amount as a number",
        ),
        (
            json!([{ "id": "f", "kind": "flow", "from": ["secret"], "to": "egress", "action": "deny" }]),
            "rules[0].from[0]: no tool carries label \"secret\"",
        ),
        (
            json!([{ "id": "f", "kind": "flow", "from": [], "to": "egress", "action": "deny" }]),
            "rules[0].from: name at least one label",
        ),
        (
            json!([{ "id": "f", "kind": "flow", "from": ["private"], "to": "egress", "action": "deny",
                     "four_eyes": true }]),
            "rules[0]: timeout and four_eyes belong to",
        ),
    ];
    for (rules, want) in table {
        let found = problems(rules.clone());
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{rules}: wanted a problem starting {want:?}, got {found:?}"
        );
    }
    let comprehension = json!([{ "id": "r", "kind": "deny", "tool": "pay",
        "when": "args.items.exists(i, i.price > 10) && args.tags.all(t, t != 'x')" }]);
    assert_eq!(problems(comprehension), Vec::<String>::new());
}

#[test]
fn a_template_broken_by_a_deny_flow_is_a_configuration_problem() {
    let text = json!({
        "servers": { "s": { "grpc": "http://127.0.0.1:1", "tools": ["read", "send"] } },
        "labels": { "read": ["private"], "send": ["egress"] },
        "rules": [{ "id": "f", "kind": "flow", "from": ["private"], "to": "egress", "action": "deny" }],
        "templates": { "leak": { "steps": [
            { "name": "r", "tool": "read" }, { "name": "s", "tool": "send" }
        ] } }
    });
    let error = Config::from_slice(text.to_string().as_bytes()).expect_err("a broken template");
    let found: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("templates.leak.steps[1]") && p.contains("rule \"f\"")),
        "{found:?}"
    );
}

/// Any JSON at all as a call's arguments: a condition never panics, and a call whose condition
/// could not be evaluated is never allowed.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z@.+0-9]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("amount|to|items|price|[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn conditions_on_any_arguments_fail_closed(args in json_value()) {
            let config = config(json!([
                { "id": "big", "kind": "approval", "tool": "pay", "when": "args.amount > 1000" },
                { "id": "domain", "kind": "deny", "tool": "send_mail",
                  "when": "!args.to.endsWith('@example.com')" },
                { "id": "items", "kind": "deny", "tool": "pay",
                  "when": "has(args.items) && args.items.exists(i, i.price * 2 > 10)" }
            ]));
            for tool in ["pay", "send_mail"] {
                let (_, decision, trace) = run(&config, &[], tool, args.clone());
                let failed = trace.conditions.iter().any(|c| c.value.is_none());
                if failed {
                    prop_assert!(matches!(decision, Decision::Deny { .. }), "{tool} {args}: {decision:?}");
                }
                for c in &trace.conditions {
                    prop_assert!(c.value.is_some() != c.error.is_some());
                }
            }
        }
    }
}
