//! Fuzzing the tool servers' argument handling: random, schema-shaped and plain wrong arguments for every
//! tool (and inline JSON Schemas for `validate_data`). Every answer is a result, the tool's own error, or
//! `InvalidArgument` (`NotFound` for an unknown tool): never a panic, a hang, `Internal`, or a dropped
//! connection. Most cases call the servers' `ToolSet` directly; a smaller share goes over real gRPC.

use conductor_proto::v1::CallToolRequest;
use conductor_proto::v1::call_tool_response::Outcome;
use conductor_servers::backup::BackupStore;
use conductor_servers::notification::Outbox;
use conductor_servers::tool::{CallContext, ToolSet};
use conductor_servers::validation::SchemaRegistry;
use conductor_servers::{ServerKind, approval, backup, notification, processing, validation};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const DIRECT_CASES: u32 = 10_000;
const GRPC_CASES: u32 = 1_500;
/// One call that takes longer than this is a hang.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Every tool, by server, plus a name no server has.
const TOOLS: &[(ServerKind, &str)] = &[
    (ServerKind::Validation, "validate_data"),
    (ServerKind::Validation, "list_schemas"),
    (ServerKind::Processing, "process_data"),
    (ServerKind::Backup, "create_backup"),
    (ServerKind::Backup, "list_backups"),
    (ServerKind::Backup, "restore_backup"),
    (ServerKind::Notification, "send_notification"),
    (ServerKind::Notification, "list_notifications"),
    (ServerKind::Approval, "get_approval"),
    (ServerKind::Approval, "list_approvals"),
    (ServerKind::Processing, "no_such_tool"),
];

/// Temporary files on tmpfs when there is one: the tools sync what they write.
fn data_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn tool_sets(dir: &Path) -> Vec<(ServerKind, ToolSet)> {
    // `serve` creates each server's directory before opening its files; so do we.
    for server in ["backup", "notification", "approval"] {
        std::fs::create_dir_all(dir.join(server)).expect("data dir");
    }
    let registry = Arc::new(SchemaRegistry::load(None).expect("schemas"));
    let store = Arc::new(BackupStore::open(&dir.join("backup")).expect("backup store"));
    let outbox = Arc::new(Outbox::open(&dir.join("notification")).expect("outbox"));
    let ledger = Arc::new(approval::Ledger::open(&dir.join("approval")).expect("ledger"));
    [
        (ServerKind::Validation, validation::tools(registry)),
        (ServerKind::Processing, processing::tools()),
        (ServerKind::Backup, backup::tools(store)),
        (ServerKind::Notification, notification::tools(outbox)),
        (ServerKind::Approval, approval::tools(ledger)),
    ]
    .into_iter()
    .map(|(kind, tools)| (kind, ToolSet::new(kind, tools).expect("tool set")))
    .collect()
}

fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(-1e-300)),
        ".{0,10}".prop_map(Value::String),
        select(vec![
            "",
            "customer",
            "order",
            "email",
            "a@b.co",
            "snap-1",
            "x",
            "..",
            "/etc/passwd",
            "a\0b",
            "slack"
        ])
        .prop_map(|s| json!(s)),
    ]
    .boxed()
}

fn any_json() -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    select(vec![
                        "id",
                        "name",
                        "email",
                        "amount",
                        "customer_id",
                        "g",
                        "n",
                        "x"
                    ]),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
        .boxed()
}

/// A random JSON Schema for `validate_data`'s inline schemas, from the keywords that do the most work.
fn schema() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        select(vec![
            "object", "array", "string", "integer", "number", "boolean", "null", "nope"
        ])
        .prop_map(|t| json!({"type": t})),
        select(vec!["^a+$", "(a+)+$", "[", "\\p{L}+", "(?=x)", ".*", "\\"])
            .prop_map(|p| json!({"pattern": p})),
        select(vec![
            "email",
            "date-time",
            "regex",
            "uri",
            "ipv4",
            "uuid",
            "nope"
        ])
        .prop_map(|f| json!({"format": f})),
        select(vec![
            "#/$defs/missing",
            "http://127.0.0.1:1/s.json",
            "file:///etc/passwd",
            "urn:x",
            "#/properties"
        ])
        .prop_map(|r| json!({"$ref": r})),
        select(vec![json!(0), json!(1e-300), json!(0.1), json!(-1)])
            .prop_map(|m| json!({"multipleOf": m})),
        (0..3u64).prop_map(|n| json!({"minLength": n, "maxItems": n})),
        select(vec![
            "https://json-schema.org/draft/2020-12/schema",
            "http://json-schema.org/draft-04/schema#",
            "nope"
        ])
        .prop_map(|s| json!({"$schema": s})),
        Just(json!({"required": ["id", "email"]})),
        Just(json!({"unevaluatedProperties": false})),
        Just(json!({"$ref": "#"})),
        Just(json!({"contentEncoding": "base64", "contentMediaType": "application/json"})),
        Just(json!(true)),
        Just(json!(false)),
        any_json(),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| json!({"items": s})),
            (inner.clone(), inner.clone())
                .prop_map(|(a, b)| json!({"properties": {"id": a, "email": b}})),
            proptest::collection::vec(inner.clone(), 0..3).prop_map(|v| json!({"allOf": v})),
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| json!({"anyOf": v, "oneOf": v})),
            (inner.clone(), inner.clone())
                .prop_map(|(i, t)| json!({"if": i, "then": t, "else": {"not": i}})),
            inner
                .clone()
                .prop_map(|s| json!({"$defs": {"x": s}, "$ref": "#/$defs/x"})),
            (inner.clone(), inner).prop_map(
                |(a, b)| json!({"dependentSchemas": {"id": a}, "additionalProperties": b})
            ),
        ]
    })
    .prop_filter("an object schema", |s| s.is_object())
    .boxed()
}

/// The arguments of one call: shaped like the tool's schema (with random values), or anything at all.
fn arguments(tool: &'static str) -> BoxedStrategy<String> {
    let records = proptest::collection::vec(any_json(), 0..4)
        .prop_map(Value::Array)
        .boxed();
    let name = prop_oneof![
        select(vec![
            "snap-1",
            "snap-2",
            "a.b_c",
            "..",
            "../x",
            "/etc/passwd",
            "a\0b",
            "",
            "-x",
            "é"
        ])
        .prop_map(|s| json!(s)),
        "[A-Za-z0-9][A-Za-z0-9._-]{0,20}".prop_map(Value::String),
        scalar(),
    ]
    .boxed();
    let fields: Vec<(&'static str, BoxedStrategy<Value>)> = match tool {
        "validate_data" => vec![
            ("records", records),
            (
                "schema",
                prop_oneof![
                    select(vec!["customer", "order", "nope", ""]).prop_map(|s| json!(s)),
                    schema()
                ]
                .boxed(),
            ),
        ],
        "process_data" => vec![
            ("records", records),
            ("normalize", scalar()),
            (
                "dedupe_by",
                select(vec!["email", "id", "", "n"])
                    .prop_map(|s| json!(s))
                    .boxed(),
            ),
            (
                "aggregate",
                prop_oneof![
                    (
                        select(vec!["g", "customer_id", ""]),
                        proptest::collection::vec(select(vec!["n", "amount", "x"]), 0..3)
                    )
                        .prop_map(|(g, sum)| json!({"group_by": g, "sum": sum})),
                    any_json(),
                ]
                .boxed(),
            ),
        ],
        "create_backup" => vec![
            ("name", name),
            ("data", any_json()),
            ("overwrite", scalar()),
        ],
        "restore_backup" => vec![("name", name)],
        "send_notification" => vec![
            (
                "channel",
                select(vec!["email", "slack", "sms", "webhook", "log", "fax"])
                    .prop_map(|s| json!(s))
                    .boxed(),
            ),
            ("recipient", scalar()),
            ("subject", scalar()),
            ("body", ".{0,40}".prop_map(Value::String).boxed()),
        ],
        "list_notifications" => vec![(
            "limit",
            prop_oneof![(-2..300i64).prop_map(|n| json!(n)), scalar()].boxed(),
        )],
        "get_approval" => vec![("id", scalar())],
        "list_approvals" => vec![("pending_only", scalar())],
        _ => vec![("x", scalar())],
    };
    let shaped = fields
        .into_iter()
        .map(|(key, value)| {
            proptest::option::weighted(0.8, value).prop_map(move |v| v.map(|v| (key, v)))
        })
        .collect::<Vec<_>>()
        .prop_map(|pairs| {
            let map: serde_json::Map<String, Value> = pairs
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            Value::Object(map).to_string()
        });
    prop_oneof![
        8 => shaped,
        1 => any_json().prop_map(|v| v.to_string()),
        1 => prop_oneof![Just(String::new()), Just("{".to_owned()), ".{0,20}"],
    ]
    .boxed()
}

fn call_case() -> impl Strategy<Value = (usize, String)> {
    (0..TOOLS.len()).prop_flat_map(|i| (Just(i), arguments(TOOLS[i].1)))
}

/// What one call came back as, in gRPC terms.
fn acceptable(code: tonic::Code, tool: &str) -> bool {
    code == tonic::Code::InvalidArgument
        || (code == tonic::Code::NotFound && tool == "no_such_tool")
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

#[test]
fn every_tool_answers_random_arguments_with_a_result_a_tool_error_or_invalid_argument() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = data_dir();
    let sets = tool_sets(dir.path());
    // (results, tool errors, refusals) per tool: the cases must reach the tools themselves.
    let tally = std::sync::Mutex::new(std::collections::BTreeMap::<&str, [usize; 3]>::new());
    let result = runner(DIRECT_CASES).run(&call_case(), |(i, args)| {
        let (kind, tool) = TOOLS[i];
        let set = &sets.iter().find(|(k, _)| *k == kind).expect("set").1;
        let answer = runtime
            .block_on(async {
                tokio::time::timeout(
                    CALL_DEADLINE,
                    set.call(tool, &args, &CallContext::default()),
                )
                .await
            })
            .map_err(|_| TestCaseError::fail(format!("{tool} hung on {args}")))?;
        let outcome = match &answer {
            Ok(Ok(_)) => 0,
            Ok(Err(_)) => 1,
            Err(_) => 2,
        };
        tally.lock().expect("tally").entry(tool).or_default()[outcome] += 1;
        match answer {
            Ok(Ok(_)) => {}
            Ok(Err(failure)) => {
                prop_assert!(failure.code != "internal", "{tool} {args}: {failure:?}")
            }
            Err(error) => {
                let status = tonic::Status::from(error);
                prop_assert!(acceptable(status.code(), tool), "{tool} {args}: {status:?}");
                prop_assert!(!status.message().is_empty());
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tally = tally.into_inner().expect("tally");
    eprintln!("(results, tool errors, refusals) by tool: {tally:?}");
    for tool in [
        "validate_data",
        "process_data",
        "create_backup",
        "send_notification",
    ] {
        let [ok, _, _] = tally.get(tool).copied().unwrap_or_default();
        assert!(ok > 0, "{tool} ran to a result: {tally:?}");
    }
    for tool in [
        "validate_data",
        "process_data",
        "create_backup",
        "restore_backup",
    ] {
        let [_, failed, _] = tally.get(tool).copied().unwrap_or_default();
        assert!(failed > 0, "{tool} ran to a tool error: {tally:?}");
    }
    // Nothing was written outside the servers' own directories.
    let mut top: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["approval", "backup", "notification"]);
}

#[test]
fn over_grpc_random_arguments_never_drop_the_connection_or_fail_internally() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (servers, clients) = runtime.block_on(async {
        let servers = conductor_servers::testing::spawn_all().await;
        let mut clients = Vec::new();
        for kind in ServerKind::ALL {
            clients.push((kind, servers.get(kind).tool_client().await));
        }
        (servers, clients)
    });
    let result = runner(GRPC_CASES).run(&call_case(), |(i, args)| {
        let (kind, tool) = TOOLS[i];
        let mut client = clients
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("client")
            .1
            .clone();
        let request = CallToolRequest {
            tool: tool.into(),
            arguments_json: args.clone(),
            workflow_id: "wf-fuzz".into(),
            call_id: "c-fuzz".into(),
        };
        let answer = runtime
            .block_on(async {
                tokio::time::timeout(CALL_DEADLINE, client.call_tool(request)).await
            })
            .map_err(|_| TestCaseError::fail(format!("{tool} hung on {args}")))?;
        match answer {
            Ok(response) => match response.into_inner().outcome {
                Some(Outcome::ResultJson(text)) => {
                    prop_assert!(serde_json::from_str::<Value>(&text).is_ok())
                }
                Some(Outcome::Error(error)) => {
                    prop_assert!(error.code != "internal", "{tool} {args}: {error:?}")
                }
                None => prop_assert!(false, "{tool} {args}: no outcome"),
            },
            Err(status) => {
                prop_assert!(acceptable(status.code(), tool), "{tool} {args}: {status:?}")
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    runtime.block_on(async move {
        drop(clients);
        servers.stop().await;
    });
}

/// Starts the real `validation-server` binary on port 0 and returns it with its address.
async fn validation_binary(data_dir: &Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_validation-server"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start validation-server");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((_, rest)) = line.split_once("listening on ") {
                return rest.split_whitespace().next().expect("address").to_owned();
            }
        }
        panic!("validation-server exited before listening");
    })
    .await
    .expect("listening in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// Inline schemas that refer to themselves (directly, through `$defs`, or mutually): each is an answer
/// (a result or a tool error), and the server process is still alive and serving afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_referencing_inline_schemas_do_not_crash_the_validation_server() {
    let dir = data_dir();
    let (mut child, addr) = validation_binary(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut client = conductor_proto::v1::tool_service_client::ToolServiceClient::new(channel);
    let schemas = [
        json!({"$ref": "#"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"allOf": [{"$ref": "#"}]}),
        json!({"properties": {"x": {"$ref": "#"}}}),
        json!({"$dynamicAnchor": "a", "$dynamicRef": "#a"}),
    ];
    let mut crashed = Vec::new();
    for schema in schemas {
        let request = CallToolRequest {
            tool: "validate_data".into(),
            arguments_json: json!({"records": [{"x": {"x": {"x": 1}}}], "schema": schema})
                .to_string(),
            ..Default::default()
        };
        let answer = tokio::time::timeout(CALL_DEADLINE, client.call_tool(request))
            .await
            .unwrap_or_else(|_| panic!("validate_data hung on {schema}"));
        match answer {
            Ok(response) => assert!(response.into_inner().outcome.is_some(), "{schema}"),
            Err(status) => crashed.push(format!("{schema}: {status:?}")),
        }
        if let Some(exit) = child.try_wait().expect("try_wait") {
            panic!("validation-server died ({exit}) on the inline schema {schema}");
        }
    }
    assert!(crashed.is_empty(), "{crashed:#?}");
    child.kill().await.expect("kill");
}
