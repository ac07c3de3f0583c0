//! Configuration checks: each problem is reported with its JSON path, and all of them at once.

use super::*;
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "servers": {
            "a": { "grpc": "http://127.0.0.1:1", "tools": ["validate", "process"] },
            "b": { "grpc": "http://127.0.0.1:2", "tools": ["backup", "notify"] }
        },
        "rules": [
            { "id": "seq", "kind": "sequence", "tool": "process", "after": ["validate"] },
            { "id": "cond", "kind": "conditional", "tool": "backup", "requires_success": ["validate"] },
            { "id": "ex", "kind": "exclusive", "tools": ["backup", "notify"], "scope": "global" },
            { "id": "gate", "kind": "approval", "tool": "notify", "timeout": "2m" }
        ],
        "templates": {
            "flow": { "steps": [
                { "name": "v", "tool": "validate", "arguments": { "r": "${input.records}" } },
                { "name": "p", "tool": "process", "arguments": { "r": "${steps.v.output.records}" } },
                { "name": "b", "tool": "backup", "approval": true }
            ] }
        }
    })
}

fn load(value: &Value) -> Result<Config, ConfigError> {
    Config::from_slice(value.to_string().as_bytes())
}

/// The problems as "path: message" lines.
fn problems(value: &Value) -> Vec<String> {
    match load(value) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().iter().map(ToString::to_string).collect(),
    }
}

fn assert_problem(value: &Value, path: &str, needle: &str) {
    let found = problems(value);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{path}: ")) && p.contains(needle)),
        "expected a problem at {path} containing {needle:?}, got {found:#?}"
    );
}

#[test]
fn a_good_configuration_loads() {
    let config = load(&base()).expect("valid");
    assert_eq!(config.tools.len(), 4);
    assert_eq!(config.rules.len(), 4);
    let flow = config.template("flow").expect("template");
    assert_eq!(flow.steps.len(), 3);
    assert!(flow.steps[2].gate.is_some());
    assert_eq!(config.version.len(), 16);
    assert!(
        config
            .policies
            .tool("notify")
            .and_then(|p| p.gate.as_ref())
            .is_some_and(|g| g.timeout == Duration::from_secs(120))
    );
}

#[test]
fn the_shipped_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/config.json");
    let config = Config::load(&path).expect("config/config.json is valid");
    assert!(config.template("customer_onboarding").is_some());
}

#[test]
fn unknown_fields_and_malformed_entries_name_their_path() {
    let mut v = base();
    v["rules"][1]["colour"] = json!("red");
    assert_problem(&v, "rules[1]", "unknown field `colour`");

    let mut v = base();
    v["rules"][0]["kind"] = json!("sometimes");
    assert_problem(&v, "rules[0].kind", "unknown variant `sometimes`");

    let mut v = base();
    v["servers"]["a"]["tools"] = json!("validate");
    assert_problem(&v, "servers.a.tools", "expected a sequence");

    assert!(
        problems(&json!("text"))[0].starts_with("$: "),
        "{:?}",
        problems(&json!("text"))
    );
    let err = Config::from_slice(b"{ not json").unwrap_err();
    assert!(!err.problems().is_empty());
}

#[test]
fn unknown_tools_servers_and_templates() {
    let mut v = base();
    v["rules"][0]["after"] = json!(["validat"]);
    assert_problem(&v, "rules[0].after[0]", "unknown tool \"validat\"");

    let mut v = base();
    v["templates"]["flow"]["steps"][1]["tool"] = json!("nope");
    assert_problem(&v, "templates.flow.steps[1].tool", "unknown tool");

    let mut v = base();
    v["approval_ledger"] = json!("ledger");
    assert_problem(&v, "approval_ledger", "unknown server");
}

#[test]
fn duplicates_are_reported() {
    let mut v = base();
    v["rules"][1]["id"] = json!("seq");
    assert_problem(&v, "rules[1].id", "duplicate rule id");

    let mut v = base();
    v["servers"]["b"]["tools"] = json!(["validate"]);
    assert_problem(&v, "servers.b.tools[0]", "also offered by server \"a\"");

    let mut v = base();
    v["servers"]["b"]["prefix"] = json!("b_");
    v["servers"]["b"]["tools"] = json!(["validate"]);
    v["rules"] = json!([]);
    v["templates"] = json!({});
    let config = load(&v).expect("a prefix resolves the collision");
    assert_eq!(config.tools["b_validate"].remote_name, "validate");

    let mut v = base();
    v["templates"]["flow"]["steps"][1]["name"] = json!("v");
    assert_problem(&v, "templates.flow.steps[1].name", "duplicate step name");
}

#[test]
fn dependency_cycles_are_rejected() {
    let mut v = base();
    v["rules"].as_array_mut().unwrap().push(json!({ "id": "back", "kind": "conditional", "tool": "validate", "requires_success": ["process"] }));
    assert_problem(&v, "rules", "dependency cycle");
    let text = problems(&v).join("\n");
    assert!(
        text.contains("rule back") && text.contains("rule seq"),
        "{text}"
    );

    let mut v = base();
    v["rules"][0]["after"] = json!(["process"]);
    assert_problem(&v, "rules[0].after[0]", "cannot depend on itself");
}

#[test]
fn templates_that_break_a_policy_are_rejected() {
    let mut v = base();
    v["templates"]["flow"]["steps"] = json!([
        { "name": "p", "tool": "process" },
        { "name": "v", "tool": "validate" }
    ]);
    assert_problem(&v, "templates.flow.steps[0]", "breaks rule \"seq\"");
}

/// A condition that does not parse is reported once, with its path: the templates whose steps the
/// rule would apply to get no follow-on "breaks rule" problems (issue 25 item 7).
#[test]
fn a_broken_condition_is_reported_once_without_follow_on_template_problems() {
    let mut v = base();
    v["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({ "id": "d", "kind": "deny", "tool": "process", "when": "args.records >" }));
    let found = problems(&v);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("rules[4].when: does not parse"),
        "{found:#?}"
    );
}

#[test]
fn bad_references_durations_and_addresses() {
    let mut v = base();
    v["templates"]["flow"]["steps"][0]["arguments"] = json!({ "x": "${steps.p.output}" });
    assert_problem(
        &v,
        "templates.flow.steps[0].arguments",
        "not an earlier step",
    );

    let mut v = base();
    v["rules"][3]["timeout"] = json!("soon");
    assert_problem(&v, "rules[3].timeout", "is not a duration");

    let mut v = base();
    v["listen"] = json!({ "grpc": "localhost" });
    assert_problem(&v, "listen.grpc", "is not an address");

    let mut v = base();
    v["servers"]["a"]["grpc"] = json!("127.0.0.1:1");
    assert_problem(&v, "servers.a.url", "must start with http://");
}

#[test]
fn every_problem_is_reported_at_once() {
    let mut v = base();
    v["rules"][0]["after"] = json!(["x"]);
    v["rules"][2]["tools"] = json!(["y"]);
    v["templates"]["flow"]["steps"][0]["tool"] = json!("z");
    assert!(problems(&v).len() >= 3, "{:#?}", problems(&v));
}

#[test]
fn limits_clients_and_exposure_filters() {
    let mut v = base();
    v["rules"].as_array_mut().unwrap().push(json!({
        "id": "lim", "kind": "limit", "tool": "backup", "timeout": "5s", "max_concurrent": 2,
        "rate": { "calls": 10, "per": "1s" }, "rate_per_workflow": { "calls": 1, "per": "1m" }
    }));
    v["clients"] =
        json!({ "bot": { "tools": ["validate"], "token": "t1" }, "ops": { "tools": ["*"] } });
    let config = load(&v).expect("valid");
    let limits = &config.policies.tool("backup").unwrap().limits;
    assert_eq!(
        (limits.max_concurrent, limits.timeout),
        (Some(2), Some(Duration::from_secs(5)))
    );
    assert_eq!(
        limits.rate_per_workflow.map(|r| r.per),
        Some(Duration::from_secs(60))
    );
    assert!(
        config.clients["bot"]
            .token
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t) == "t1")
    );
    assert!(config.allowed_for("ops", None).is_none());
    assert!(
        config
            .allowed_for("mcp:bot (http session 1)", None)
            .is_some_and(|a| a.tools.len() == 1)
    );
    let both = config
        .allowed_for("bot", config.template("flow").map(|t| &**t))
        .unwrap();
    assert_eq!(
        both.tools.iter().map(|t| t.as_ref()).collect::<Vec<_>>(),
        ["validate"],
        "template ∩ client"
    );

    let mut v = base();
    v["rules"].as_array_mut().unwrap().push(json!({ "id": "lim", "kind": "limit", "tool": "backup", "rate": { "calls": 0, "per": "soon" } }));
    assert_problem(&v, "rules[4].rate.calls", "at least 1");
    let mut v = base();
    v["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "id": "lim", "kind": "limit", "tool": "backup" }));
    assert_problem(&v, "rules[4]", "at least one of");
    let mut v = base();
    v["clients"] = json!({ "bot": { "tools": ["nope"] } });
    assert_problem(&v, "clients.bot.tools[0]", "unknown tool");

    let mut v = base();
    v["servers"]["b"]["exclude"] = json!(["not*"]);
    v["servers"]["b"]["rename"] = json!({ "backup": "safe_backup" });
    v["rules"] = json!([]);
    v["templates"] = json!({});
    let config = load(&v).expect("valid");
    assert!(config.tools.contains_key("safe_backup") && !config.tools.contains_key("notify"));
    assert_eq!(config.tools["safe_backup"].remote_name, "backup");
    v["servers"]["b"]["exclude"] = json!(["zzz*"]);
    assert_problem(&v, "servers.b.exclude[0]", "matches none");
}

#[test]
fn caller_names_ignore_transport_and_session() {
    assert_eq!(caller_name("mcp:claude (http session 12)"), "claude");
    assert_eq!(caller_name("alice/laptop"), "alice");
    assert_eq!(caller_name("grpc:127.0.0.1:5000"), "127.0.0.1:5000");
    assert_eq!(caller_name("bob"), "bob");
}

#[test]
fn glob_patterns() {
    use super::check::glob_match;
    for (pattern, text, expected) in [
        ("admin_*", "admin_drop", true),
        ("admin_*", "user_drop", false),
        ("*_file", "read_file", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false),
        ("*", "", true),
        ("exact", "exact", true),
        ("exact", "exactly", false),
        ("*a*a*a*a*a*a*a*a*a*a*a*a*b", &"a".repeat(40), false),
    ] {
        assert_eq!(glob_match(pattern, text), expected, "{pattern} ~ {text}");
    }
}

#[test]
fn template_inputs_are_checked_and_references_must_name_one() {
    let mut config = base();
    config["templates"]["flow"]["inputs"] = json!({
        "records": { "type": "array", "description": "what to validate" },
        "mode": { "type": "strng" },
        "limit": { "type": "integer", "default": "ten" }
    });
    assert_problem(
        &config,
        "templates.flow.inputs.mode.type",
        "unknown type \"strng\"",
    );
    assert_problem(
        &config,
        "templates.flow.inputs.limit.default",
        "is not of the input's type, integer",
    );
    config["templates"]["flow"]["inputs"] = json!({ "rows": { "type": "array" } });
    assert_problem(
        &config,
        "templates.flow.steps[0].arguments",
        "refers to \"records\", which is not a declared input (inputs: rows)",
    );
    config["templates"]["flow"]["inputs"] = json!({ "records": { "type": "array" } });
    let loaded = load(&config).expect("valid");
    let flow = loaded.template("flow").expect("flow");
    assert_eq!(flow.inputs.len(), 1);
    assert!(flow.inputs[0].required);
}

#[test]
fn calls_in_memory_defaults_and_must_keep_at_least_one() {
    let config = load(&base()).expect("valid");
    assert_eq!(
        config.calls_in_memory,
        crate::workflow::DEFAULT_CALLS_IN_MEMORY
    );
    let mut v = base();
    v["workflows"] = json!({ "calls_in_memory": 64 });
    assert_eq!(load(&v).expect("valid").calls_in_memory, 64);
    v["workflows"] = json!({ "calls_in_memory": 0 });
    assert_problem(&v, "workflows.calls_in_memory", "at least 1");
    v["workflows"] = json!({ "calls_in_memory": -5 });
    assert!(load(&v).is_err(), "a negative count is refused");
}
