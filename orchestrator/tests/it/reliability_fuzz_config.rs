//! Fuzzing (proptest, a bounded number of cases) the configuration loader: arbitrary bytes, the shipped
//! file mutated, and structured-random files in the real file's shape. It may neither panic nor hang,
//! and a configuration it loads is internally consistent.

use conductor_orchestrator::config::Config;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::Duration;

const CASES: u32 = 10_000;

fn shipped_config() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/config.json"))
        .expect("config/config.json")
}

/// Loads `bytes`; a loaded configuration must hold together: every rule and template names known tools.
fn load_and_check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Config::from_slice(bytes) {
        Err(error) => prop_assert!(!error.to_string().is_empty(), "an error says something"),
        Ok(config) => {
            for tool in config.tools.keys() {
                for need in config.policies.prerequisites(tool) {
                    prop_assert!(
                        config.tools.contains_key(&need.tool),
                        "rule {} of {tool} needs unknown tool {}",
                        need.rule_id,
                        need.tool
                    );
                }
            }
            for template in config.templates.values() {
                for step in &template.steps {
                    prop_assert!(config.tools.contains_key(&step.tool), "step {}", step.name);
                }
            }
            for route in config.tools.values() {
                prop_assert!(
                    config.servers.contains_key(&route.server),
                    "{}",
                    route.server
                );
            }
        }
    }
    Ok(())
}

// ---- structured-random configurations, in the real file's shape ----

/// Any small JSON value, for fields given the wrong type.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!(-0.5)),
        select(vec!["", "x", "*", "10s", "${input.x}"]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map(select(vec!["a", "tools", "kind"]), inner, 0..3)
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
        ]
    })
    .boxed()
}

type Field = Option<(String, Value)>;

/// A field that is usually right, sometimes missing, rarely of the wrong type.
fn field(name: &'static str, good: BoxedStrategy<Value>) -> BoxedStrategy<Field> {
    prop_oneof![
        2 => Just(None),
        20 => good.prop_map(move |v| Some((name.to_owned(), v))),
        1 => any_json().prop_map(move |v| Some((name.to_owned(), v))),
    ]
    .boxed()
}

/// An object of `fields`, now and then with an unknown field (which must be refused, not ignored).
fn object(fields: Vec<BoxedStrategy<Field>>) -> BoxedStrategy<Value> {
    (fields, proptest::option::weighted(0.03, any_json()))
        .prop_map(|(fields, unknown)| {
            let mut map: Map<String, Value> = fields.into_iter().flatten().collect();
            if let Some(value) = unknown {
                map.insert("unknown_field".into(), value);
            }
            Value::Object(map)
        })
        .boxed()
}

fn text(pool: &[&'static str]) -> BoxedStrategy<Value> {
    select(pool.to_vec()).prop_map(|s| json!(s)).boxed()
}

fn texts(pool: &[&'static str], max: usize) -> BoxedStrategy<Value> {
    proptest::collection::vec(select(pool.to_vec()), 0..max)
        .prop_map(|v| json!(v))
        .boxed()
}

const TOOLS: &[&str] = &[
    "validate_data",
    "process_data",
    "create_backup",
    "list_backups",
    "send_notification",
    "x",
    "",
    "a*b",
    "é",
    "validation",
];
const SERVERS: &[&str] = &["validation", "processing", "backup", "s", "", "approval"];
const DURATIONS: &[&str] = &[
    "10s",
    "0s",
    "1h 30m",
    "-1s",
    "abc",
    "",
    "18446744073709551615s",
    "1ns",
    "99999999999999999999h",
];
const URLS: &[&str] = &[
    "http://127.0.0.1:50061",
    "https://[::1]:1",
    "not a url",
    "",
    "http://x:99999",
];
const ADDRS: &[&str] = &[
    "127.0.0.1:0",
    "0.0.0.0:80",
    "[::1]:1",
    "nope",
    "",
    "127.0.0.1:99999",
];
const RULE_IDS: &[&str] = &["r1", "r2", "r1", "", "process-after-validate"];
const PATTERNS: &[&str] = &["*", "validate_*", "*_data", "**", "a*b*c", "", "x"];
const ARGUMENTS: &[&str] = &[
    "${input.x}",
    "${steps.a.output.y}",
    "${steps.",
    "${",
    "$${input}",
    "${steps.validate.output.records}",
    "plain",
];

fn rate() -> BoxedStrategy<Value> {
    object(vec![
        field(
            "calls",
            prop_oneof![0..4u32, Just(u32::MAX)]
                .prop_map(|n| json!(n))
                .boxed(),
        ),
        field("per", text(DURATIONS)),
    ])
}

fn rule() -> BoxedStrategy<Value> {
    let kind = |k: &'static str| field("kind", Just(json!(k)).boxed());
    let id = || field("id", text(RULE_IDS));
    let tool = || field("tool", text(TOOLS));
    prop_oneof![
        object(vec![
            kind("sequence"),
            id(),
            tool(),
            field("after", texts(TOOLS, 3))
        ]),
        object(vec![
            kind("conditional"),
            id(),
            tool(),
            field("requires_success", texts(TOOLS, 3))
        ]),
        object(vec![
            kind("exclusive"),
            id(),
            field("tools", texts(TOOLS, 4)),
            field("scope", text(&["workflow", "global", "galaxy"])),
        ]),
        object(vec![
            kind("approval"),
            id(),
            tool(),
            field("timeout", text(DURATIONS)),
            field("four_eyes", any::<bool>().prop_map(Value::Bool).boxed()),
        ]),
        object(vec![
            kind("limit"),
            id(),
            tool(),
            field("timeout", text(DURATIONS)),
            field("max_concurrent", (0..4u32).prop_map(|n| json!(n)).boxed()),
            field("rate", rate()),
            field("rate_per_workflow", rate()),
        ]),
        object(vec![field("kind", text(&["unknown", ""])), id(), tool()]),
    ]
    .boxed()
}

fn server() -> BoxedStrategy<Value> {
    let stdio = object(vec![
        field("command", text(&["python3", "", "/nonexistent"])),
        field("args", texts(&["-c", "x"], 2)),
    ]);
    object(vec![
        field("grpc", text(URLS)),
        prop_oneof![8 => Just(None), 1 => stdio.prop_map(|v| Some(("mcp_stdio".to_owned(), v)))].boxed(),
        prop_oneof![8 => Just(None), 1 => text(URLS).prop_map(|v| Some(("mcp_url".to_owned(), v)))].boxed(),
        field("tools", texts(TOOLS, 4)),
        prop_oneof![4 => Just(None), 1 => text(&["v_", "", "x"]).prop_map(|v| Some(("prefix".to_owned(), v)))].boxed(),
        field("timeout", text(DURATIONS)),
        prop_oneof![4 => Just(None), 1 => texts(PATTERNS, 3).prop_map(|v| Some(("exclude".to_owned(), v)))].boxed(),
        prop_oneof![
            4 => Just(None),
            1 => proptest::collection::btree_map(select(TOOLS.to_vec()), select(TOOLS.to_vec()), 0..3)
                .prop_map(|m| Some(("rename".to_owned(), json!(m)))),
        ]
        .boxed(),
    ])
}

fn template() -> BoxedStrategy<Value> {
    let step = object(vec![
        field("name", text(&["validate", "process", "a", "a", ""])),
        field("tool", text(TOOLS)),
        field(
            "arguments",
            proptest::collection::btree_map(
                select(vec!["records", "name", "x"]),
                select(ARGUMENTS.to_vec()),
                0..3,
            )
            .prop_map(|m| json!(m))
            .boxed(),
        ),
        field("approval", any::<bool>().prop_map(Value::Bool).boxed()),
        field("approval_timeout", text(DURATIONS)),
        field("four_eyes", any::<bool>().prop_map(Value::Bool).boxed()),
    ]);
    object(vec![
        field("description", text(&["", "d"])),
        field(
            "steps",
            proptest::collection::vec(step, 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
    ])
}

fn config() -> BoxedStrategy<Value> {
    let servers = proptest::collection::btree_map(select(SERVERS.to_vec()), server(), 0..4)
        .prop_map(|m| json!(m))
        .boxed();
    let templates = proptest::collection::btree_map(select(vec!["t", "u", ""]), template(), 0..3)
        .prop_map(|m| json!(m))
        .boxed();
    let client = object(vec![
        field("tools", texts(&["*", "validate_data", "nope"], 3)),
        field("token", text(&["t1", "t1", ""])),
        prop_oneof![6 => Just(None), 1 => text(&["PATH", "CONDUCTOR_NO_SUCH_VAR"]).prop_map(|v| Some(("token_env".to_owned(), v)))].boxed(),
    ]);
    object(vec![
        field("servers", servers),
        field("approval_ledger", text(SERVERS)),
        field("rules", proptest::collection::vec(rule(), 0..6).prop_map(Value::Array).boxed()),
        field("templates", templates),
        field(
            "control",
            object(vec![
                field("token", text(&["s3cret", ""])),
                prop_oneof![6 => Just(None), 1 => text(&["PATH", "CONDUCTOR_NO_SUCH_VAR"]).prop_map(|v| Some(("token_env".to_owned(), v)))].boxed(),
                field("approval_timeout", text(DURATIONS)),
            ]),
        ),
        field(
            "audit",
            object(vec![
                field("dir", text(&["audit_logs", "", "/"])),
                field("max_file_bytes", select(vec![0u64, 1, 1 << 20, u64::MAX]).prop_map(|n| json!(n)).boxed()),
            ]),
        ),
        field("listen", object(vec![field("grpc", text(ADDRS)), field("http", text(ADDRS))])),
        field(
            "mcp",
            object(vec![
                field("allowed_origins", texts(&["https://a.example", "", "*"], 2)),
                field("allowed_hosts", texts(&["a.example", ""], 2)),
            ]),
        ),
        field(
            "clients",
            proptest::collection::btree_map(select(vec!["c", "d", ""]), client, 0..3)
                .prop_map(|m| json!(m))
                .boxed(),
        ),
    ])
}

/// The shipped file with a few bytes changed, inserted, removed, or the tail cut off.
fn mutated_shipped() -> impl Strategy<Value = Vec<u8>> {
    let edit = (any::<proptest::sample::Index>(), any::<u8>(), 0..4u8);
    proptest::collection::vec(edit, 1..5).prop_map(|edits| {
        let mut bytes = shipped_config();
        for (at, byte, how) in edits {
            let i = at.index(bytes.len().max(1));
            match how {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                2 if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => bytes.truncate(i),
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_config_loader_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        load_and_check(&bytes)?;
    }

    #[test]
    fn the_config_loader_survives_a_mutated_shipped_file(bytes in mutated_shipped()) {
        load_and_check(&bytes)?;
    }

    #[test]
    fn the_config_loader_survives_structured_random_configurations(config in config()) {
        load_and_check(config.to_string().as_bytes())?;
    }
}

#[test]
fn the_structured_generator_reaches_the_checks() {
    // Guard against a generator that only ever produces parse errors: the checks must see real input.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut loaded = 0;
    let mut checked = 0;
    for _ in 0..500 {
        let config = config().new_tree(&mut runner).expect("tree").current();
        match Config::from_slice(config.to_string().as_bytes()) {
            Ok(_) => loaded += 1,
            // A problem with a JSON path is a semantic check, not a serde parse error.
            Err(e) if e.to_string().contains('.') || e.to_string().contains('[') => checked += 1,
            Err(_) => {}
        }
    }
    assert!(
        loaded + checked > 50,
        "loaded {loaded}, checked {checked} of 500"
    );
}

#[test]
fn an_exponential_exclude_pattern_does_not_hang_the_loader() {
    let tool = "a".repeat(40);
    let config = json!({
        "servers": { "s": {
            "grpc": "http://127.0.0.1:1",
            "tools": [tool],
            "exclude": ["*a*a*a*a*a*a*a*a*a*a*a*a*b"],
        }},
    });
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = Config::from_slice(config.to_string().as_bytes());
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(5))
        .expect("the loader finished within 5 s");
}
