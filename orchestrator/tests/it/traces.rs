//! Traces (issue 24): one OpenTelemetry trace from the agent's call through the policy, the audit and
//! the tool. The official Python MCP SDK, with its OpenTelemetry support on, calls the real
//! orchestrator binary (its `telemetry` pointing at a real OTLP/gRPC receiver started here) inside a
//! span of its own; the calls go to the real gRPC tool servers and to a Python MCP server over stdio
//! that exports its own spans. Every span must land in the client's trace, chained parent to child.
//! And a collector that is down never fails a call: its spans are dropped and counted.

use crate::common::{shipped_config, spawn_orchestrator_binary, spawn_orchestrator_binary_under};
use crate::mcp_support::{approve_first_request, python, run_python, script};
use conductor_orchestrator::audit::AuditEvent;
use conductor_servers::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use serde_json::{Value, json};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

async fn get_metrics(http_url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = http_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut body = String::new();
    stream
        .read_to_string(&mut body)
        .await
        .expect("read /metrics");
    body
}

/// The value of the sample whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// The shipped configuration on the test's tool servers, the traced echo server beside them, and
/// traces sent to `otlp`.
fn traced_config(servers: &conductor_servers::testing::ToolServers, otlp: &str) -> Value {
    let mut config = shipped_config(servers);
    config["servers"]["echo"] = json!({
        "mcp_stdio": {
            "command": python(),
            "args": [script("traced_echo_server.py")],
            "env": { "OTEL_EXPORTER_OTLP_ENDPOINT": otlp }
        },
        "tools": ["echo"],
        "timeout": "20s"
    });
    config["telemetry"] = json!({ "otlp_endpoint": otlp, "service_name": "conductorio-test" });
    config
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pick: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {found:#?}");
    found[0]
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_python_client_through_the_policy_the_audit_and_both_tools() {
    let receiver = OtlpReceiver::start().await;
    let servers = conductor_servers::testing::spawn_all().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.json");
    std::fs::write(
        &config_path,
        traced_config(&servers, &receiver.url).to_string(),
    )
    .expect("write the configuration");
    // The duration histograms go to the receiver too, every 200 ms.
    let orchestrator = spawn_orchestrator_binary_under(
        &["env", "OTEL_METRIC_EXPORT_INTERVAL=200"],
        &config_path,
        &dir.path().join("audit"),
        &[],
    );
    let http = orchestrator.http_url();
    let args = vec![
        script("mcp_traced_client.py").display().to_string(),
        "--url".into(),
        format!("{http}/mcp"),
        "--otlp".into(),
        receiver.url.clone(),
    ];
    let (summary, approval_id) = tokio::join!(
        run_python(&args),
        approve_first_request(orchestrator.url.clone())
    );
    assert_eq!(
        (
            &summary["denied"],
            &summary["failed"],
            &summary["validated"],
            &summary["echoed"],
            &summary["restored"]
        ),
        (
            &json!(true),
            &json!(true),
            &json!(false),
            &json!(false),
            &json!(false)
        ),
        "{summary}"
    );
    let trace = summary["trace_id"]
        .as_str()
        .expect("the turn's trace id")
        .to_owned();
    let turn = summary["span_id"]
        .as_str()
        .expect("the turn's span id")
        .to_owned();

    // Seven calls, each a SERVER span of ours; the echo server's own span; the turn's last request
    // (a completion); and the test's own gRPC requests.
    let spans = receiver
        .wait_for("every span of the turn", |spans| {
            spans
                .iter()
                .filter(|s| {
                    s.service == "conductorio-test"
                        && s.kind == SERVER
                        && s.name.starts_with("tools/call")
                })
                .count()
                >= 7
                && spans.iter().any(|s| s.service == "echo-server")
                && spans.iter().any(|s| s.name == "completion/complete")
                && spans
                    .iter()
                    .any(|s| s.name.starts_with("conductor.v1.Orchestrator/"))
        })
        .await;
    // (The test's own gRPC requests, Watch and Approve, are traces of their own.)
    let ours: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| {
            s.service == "conductorio-test" && !s.name.starts_with("conductor.v1.Orchestrator/")
        })
        .collect();
    assert!(
        ours.iter().all(|s| s.trace_id == trace),
        "every span of ours is in the client's trace {trace}: {ours:#?}"
    );

    // The client's `MCP send tools/call validate_data` spans → our SERVER spans.
    let sends: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "python-agent" && s.parent_span_id == turn)
        .collect();
    let server_spans: Vec<&ReceivedSpan> = ours
        .iter()
        .copied()
        .filter(|s| s.kind == SERVER && s.name.starts_with("tools/call"))
        .collect();
    for span in &server_spans {
        assert!(
            sends.iter().any(|send| send.span_id == span.parent_span_id),
            "{} is the child of one of the client's spans: {sends:#?}",
            span.name
        );
        assert_eq!(span.attribute("mcp.method.name"), Some("tools/call"));
        assert_eq!(
            span.attribute("gen_ai.operation.name"),
            Some("execute_tool")
        );
        assert_eq!(span.attribute("mcp.protocol.version"), Some("2025-11-25"));
        assert_eq!(span.attribute("network.transport"), Some("tcp"));
        assert!(span.attribute("jsonrpc.request.id").is_some(), "{span:#?}");
        let session = span.attribute("mcp.session.id").expect("mcp.session.id");
        assert!(
            !session.is_empty() && session.len() < 32,
            "a short keyed hash, not the session id: {session}"
        );
        assert_eq!(
            span.attribute("client.address"),
            Some("127.0.0.1"),
            "{span:#?}"
        );
        assert!(span.attribute("client.port").is_some(), "{span:#?}");
    }
    // The gRPC front's SERVER spans name their client too.
    let grpc_server = spans
        .iter()
        .find(|s| s.kind == SERVER && s.name.starts_with("conductor.v1.Orchestrator/"))
        .expect("a SERVER span of the test's gRPC requests");
    assert_eq!(grpc_server.attribute("rpc.system"), Some("grpc"));
    assert_eq!(
        grpc_server.attribute("client.address"),
        Some("127.0.0.1"),
        "{grpc_server:#?}"
    );

    // Requests other than tools/call: a SERVER span each, named by the method (and the prompt),
    // under the client's send, with how it ended.
    for (method, name) in [
        ("resources/list", "resources/list"),
        ("prompts/list", "prompts/list"),
        ("resources/read", "resources/read"),
        ("prompts/get", "prompts/get no_such_prompt"),
        ("completion/complete", "completion/complete"),
    ] {
        let span = one(&spans, name, |s| {
            s.service == "conductorio-test" && s.kind == SERVER && s.name == name
        });
        assert_eq!(span.attribute("mcp.method.name"), Some(method), "{span:#?}");
        assert!(
            sends.iter().any(|send| send.span_id == span.parent_span_id),
            "{name} is the child of one of the client's spans: {span:#?}"
        );
        assert_eq!(span.attribute("client.address"), Some("127.0.0.1"));
        match &summary[method] {
            Value::String(ok) if ok == "ok" => {
                assert_eq!(span.attribute("error.type"), None, "{span:#?}");
            }
            Value::Number(code) => {
                assert_eq!(
                    span.attribute("error.type"),
                    Some(code.to_string().as_str()),
                    "{span:#?}"
                );
                assert_eq!(span.status_code, ERROR);
            }
            other => panic!("{method} ended as {other}: {summary}"),
        }
    }
    let ours_named = |name: &'static str| {
        move |s: &ReceivedSpan| {
            s.service == "conductorio-test" && s.kind == SERVER && s.name.starts_with(name)
        }
    };
    let read = one(&spans, "resources/read", ours_named("resources/read"));
    assert_eq!(
        read.attribute("mcp.resource.uri"),
        Some("conductorio-test://nothing")
    );
    assert_ne!(summary["resources/read"], json!("ok"), "nobody offers it");
    let prompt = one(&spans, "prompts/get", ours_named("prompts/get"));
    assert_eq!(
        prompt.attribute("gen_ai.prompt.name"),
        Some("no_such_prompt")
    );
    // `initialize` has its SERVER span too, under the client's `MCP send initialize`.
    let initialize = one(&spans, "our initialize span", |s| {
        s.service == "conductorio-test" && s.kind == SERVER && s.name == "initialize"
    });
    assert_eq!(initialize.attribute("mcp.method.name"), Some("initialize"));
    assert!(
        sends
            .iter()
            .any(|send| send.span_id == initialize.parent_span_id),
        "{initialize:#?}"
    );
    let validations: Vec<&&ReceivedSpan> = server_spans
        .iter()
        .filter(|s| s.name == "tools/call validate_data")
        .collect();
    assert_eq!(validations.len(), 2, "{server_spans:#?}");

    // The failed validation: error.type tool_error, on our span and on the CLIENT span under it.
    let failed = validations
        .iter()
        .find(|s| s.attribute("error.type").is_some())
        .expect("one validation failed");
    assert_eq!(failed.attribute("error.type"), Some("tool_error"));
    assert_eq!(failed.status_code, ERROR);
    let grpc_client = one(&spans, "the failed call's gRPC CLIENT span", |s| {
        s.parent_span_id == failed.span_id && s.kind == CLIENT
    });
    assert_eq!(grpc_client.name, "conductor.v1.ToolService/CallTool");
    assert_eq!(grpc_client.attribute("rpc.system"), Some("grpc"));
    assert_eq!(grpc_client.attribute("error.type"), Some("tool_error"));
    assert!(
        grpc_client.attribute("server.address").is_some(),
        "{grpc_client:#?}"
    );

    // The successful validation: decision and the CLIENT span in its tree, both audit commits as
    // its events (the record's seq, how long the call waited for it).
    let validated = validations
        .iter()
        .find(|s| s.attribute("error.type").is_none())
        .expect("one validation succeeded");
    let under = children(&spans, validated);
    let names: Vec<&str> = under.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "policy decide validate_data",
        "conductor.v1.ToolService/CallTool",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} under {}: {names:?}",
            validated.name
        );
    }
    let decided = under
        .iter()
        .find(|s| s.name == "policy decide validate_data")
        .expect("decision");
    assert_eq!(decided.attribute("conductor.decision"), Some("allow"));
    let commits: Vec<_> = validated
        .events
        .iter()
        .filter(|e| e.name.starts_with("audit commit"))
        .collect();
    let commit_names: Vec<&str> = commits.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        commit_names,
        ["audit commit decision", "audit commit outcome"],
        "{validated:#?}"
    );
    let mut seqs = Vec::new();
    for commit in &commits {
        let seq: u64 = commit
            .attribute("conductor.audit.seq")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("an audit commit names its record: {commit:#?}"));
        seqs.push(seq);
        assert!(
            commit
                .attribute("conductor.audit.wait_us")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some(),
            "an audit commit says how long the call waited for it: {commit:#?}"
        );
        let batch: u64 = commit
            .attribute("conductor.audit.batch_size")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("an audit commit says its batch's size: {commit:#?}"));
        assert!(batch >= 1, "{commit:#?}");
    }
    assert!(seqs[0] > 0 && seqs[0] < seqs[1], "{seqs:?}");

    // The refusal: visible as a denial with the rule that fired, and nothing sent downstream.
    let denied = server_spans
        .iter()
        .find(|s| s.name == "tools/call process_data" && s.attribute("error.type").is_some())
        .expect("the refused process_data");
    let under = children(&spans, denied);
    let decision = under
        .iter()
        .find(|s| s.name == "policy decide process_data")
        .expect("its decision");
    assert_eq!(decision.attribute("conductor.decision"), Some("deny"));
    assert_eq!(
        decision.attribute("conductor.rules"),
        Some("process-after-validate")
    );
    assert_eq!(decision.status_code, ERROR);
    assert!(
        under.iter().all(|s| s.kind != CLIENT),
        "a refused call is not sent: {under:#?}"
    );

    // The MCP server's tool: our CLIENT span `tools/call echo` → the echo server's SERVER span.
    let echo = one(&spans, "our echo SERVER span", |s| {
        s.service == "conductorio-test" && s.kind == SERVER && s.name == "tools/call echo"
    });
    let mcp_client = one(&spans, "the echo CLIENT span", |s| {
        s.parent_span_id == echo.span_id && s.kind == CLIENT
    });
    assert_eq!(mcp_client.name, "tools/call echo");
    assert_eq!(mcp_client.attribute("network.transport"), Some("pipe"));
    let downstream = one(&spans, "the echo server's span", |s| {
        s.service == "echo-server" && s.name == "tools/call echo"
    });
    assert_eq!(downstream.trace_id, trace);
    assert_eq!(downstream.parent_span_id, mcp_client.span_id);

    // The wait for a person: its approval, who decided and how long it took.
    let wait = one(&spans, "the approval wait", |s| {
        s.name.starts_with("approval wait")
    });
    assert_eq!(
        wait.attribute("conductor.approval.id"),
        Some(approval_id.as_str())
    );
    assert_eq!(
        wait.attribute("conductor.approval.verdict"),
        Some("approved")
    );
    assert!(
        wait.attribute("conductor.approval.decided_by")
            .is_some_and(|by| by.contains("\"test-approver\"")),
        "{wait:#?}"
    );
    assert!(
        wait.attribute("conductor.approval.wait_ms").is_some(),
        "{wait:#?}"
    );
    assert!(!wait.duration.is_zero());
    let restore = ours
        .iter()
        .find(|s| s.span_id == wait.parent_span_id)
        .expect("the wait is under the call's SERVER span");
    assert_eq!(restore.name, "tools/call restore_backup");

    // The audit knows the trace: every record of the turn's calls carries its trace id (and the
    // span it was made in, one of the trace's), and the query by trace finds exactly those.
    let records = crate::common::read_audit(&dir.path().join("audit"));
    let of_calls: Vec<_> = records
        .iter()
        .filter(|r| {
            matches!(
                r.event,
                AuditEvent::CallDecided { .. }
                    | AuditEvent::CallStarted { .. }
                    | AuditEvent::ApprovalRequested { .. }
                    | AuditEvent::CallFinished { .. }
            )
        })
        .collect();
    assert!(of_calls.len() >= 7 * 2, "{of_calls:#?}");
    let span_ids: std::collections::HashSet<&str> =
        ours.iter().map(|s| s.span_id.as_str()).collect();
    for record in &of_calls {
        let traced = record
            .event
            .trace()
            .unwrap_or_else(|| panic!("untraced: {record:?}"));
        assert_eq!(traced.trace_id, trace, "{record:?}");
        assert!(
            span_ids.contains(traced.span_id.as_str()),
            "its span is one of ours: {record:?}"
        );
    }
    let mut client = crate::common::connect(&orchestrator.url).await;
    let found = client
        .query_audit(conductor_proto::v1::AuditQueryRequest {
            trace_id: trace.to_uppercase(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("QueryAudit by trace")
        .into_inner()
        .events;
    assert_eq!(found.len(), of_calls.len(), "{found:#?}");
    assert!(
        found
            .iter()
            .all(|e| e.trace_id == trace && !e.span_id.is_empty())
    );
    let workflow_id = records
        .iter()
        .find_map(|r| match &r.event {
            AuditEvent::CallDecided { workflow_id, .. } => Some(workflow_id.clone()),
            _ => None,
        })
        .expect("a call was decided");
    let workflow = client
        .get_workflow(conductor_proto::v1::GetWorkflowRequest { workflow_id })
        .await
        .expect("GetWorkflow")
        .into_inner();
    assert!(!workflow.history.is_empty());
    assert!(
        workflow.history.iter().all(|c| c.trace_id == trace),
        "{workflow:#?}"
    );

    // The histograms of the conventions, and the exporter's counts.
    let metrics = get_metrics(&http).await;
    assert_eq!(
        sample(
            &metrics,
            "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"validate_data\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"validate_data\",error_type=\"tool_error\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "mcp_client_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"echo\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "mcp_server_operation_duration_seconds_count{mcp_method_name=\"initialize\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "conductor_trace_spans_exported_total").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );

    // And the same histograms over OTLP, in seconds with the conventions' buckets.
    let buckets = conductor_orchestrator::telemetry::durations::BUCKETS.to_vec();
    let point = |name: &'static str, method: &'static str, tool: Option<&'static str>| {
        let (receiver, buckets) = (&receiver, buckets.clone());
        move || {
            let found = receiver.histograms().into_iter().rev().find(|h| {
                h.name == name
                    && h.attribute("mcp.method.name") == Some(method)
                    && h.attribute("gen_ai.tool.name") == tool
                    && h.attribute("error.type").is_none()
            });
            let buckets = buckets.clone();
            async move {
                found.filter(|h| {
                    h.service == "conductorio-test" && h.unit == "s" && h.bounds == buckets
                })
            }
        }
    };
    let validated = crate::common::wait_until(
        "mcp.server.operation.duration of validate_data over OTLP",
        point(
            "mcp.server.operation.duration",
            "tools/call",
            Some("validate_data"),
        ),
    )
    .await;
    assert_eq!(validated.count, 1, "{validated:#?}");
    let echoed = crate::common::wait_until(
        "mcp.client.operation.duration of echo over OTLP",
        point("mcp.client.operation.duration", "tools/call", Some("echo")),
    )
    .await;
    assert_eq!(echoed.count, 1, "{echoed:#?}");
    let initialized = crate::common::wait_until(
        "mcp.server.operation.duration of initialize over OTLP",
        point("mcp.server.operation.duration", "initialize", None),
    )
    .await;
    assert_eq!(initialized.count, 1, "{initialized:#?}");
    drop(orchestrator);
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_no_call_and_its_spans_are_counted() {
    // An address nothing listens on.
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    };
    let servers = conductor_servers::testing::spawn_all().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.json");
    let mut config = shipped_config(&servers);
    config["telemetry"] = json!({ "otlp_endpoint": down });
    std::fs::write(&config_path, config.to_string()).expect("write the configuration");
    let orchestrator = spawn_orchestrator_binary(&config_path, &dir.path().join("audit"), &[]);
    let http = orchestrator.http_url();
    let mut client = crate::common::connect(&orchestrator.url).await;
    let started = client
        .start_workflow(conductor_proto::v1::StartWorkflowRequest::default())
        .await
        .expect("StartWorkflow")
        .into_inner();
    for n in 0..20 {
        let answer = client
            .call_tool(conductor_proto::v1::WorkflowCallRequest {
                workflow_id: started.id.clone(),
                tool: "send_notification".into(),
                arguments_json:
                    json!({"channel": "log", "recipient": "ops", "body": format!("note {n}")})
                        .to_string(),
            })
            .await
            .expect("a call succeeds whatever the collector");
        assert!(answer.into_inner().outcome.is_some());
    }
    let dropped = crate::common::wait_until("the spans of the calls counted as dropped", || {
        let http = http.clone();
        async move {
            let metrics = get_metrics(&http).await;
            let dropped = sample(
                &metrics,
                "conductor_trace_spans_dropped_total{reason=\"export_failed\"}",
            )
            .unwrap_or(0.0)
                + sample(
                    &metrics,
                    "conductor_trace_spans_dropped_total{reason=\"queue_full\"}",
                )
                .unwrap_or(0.0);
            (dropped >= 20.0).then_some(dropped)
        }
    })
    .await;
    assert!(dropped >= 20.0);
    drop(orchestrator);
    servers.stop().await;
}
