//! Reading the audit back over real gRPC and HTTP: queries with paging, verification, compliance reports,
//! and the Prometheus `/metrics` endpoint.

use crate::common;

use common::*;
use conductor_proto::v1 as pb;
use pb::audit_event::Event;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One ad-hoc workflow with a denial, two successes and a tool failure.
async fn some_history(h: &Harness) -> String {
    let wf = h.start_workflow("", json!({})).await;
    let _ = h
        .call(&wf, "process_data", json!({"records": []}))
        .await
        .unwrap_err();
    h.call(
        &wf,
        "validate_data",
        json!({"records": customers(), "schema": "customer"}),
    )
    .await
    .expect("validate");
    h.call(&wf, "process_data", json!({"records": customers()}))
        .await
        .expect("process");
    h.call(
        &wf,
        "validate_data",
        json!({"records": [{"id": "x"}], "schema": "customer"}),
    )
    .await
    .expect("runs, fails");
    wf
}

#[tokio::test]
async fn audit_query_filters_and_pages() {
    let h = Harness::shipped().await;
    let wf = some_history(&h).await;
    let mut client = h.client.clone();
    let query = |after_seq, limit| pb::AuditQueryRequest {
        workflow_id: wf.clone(),
        kind: "call_decided".into(),
        after_seq,
        limit,
        ..Default::default()
    };
    let first = client
        .query_audit(query(0, 3))
        .await
        .expect("query")
        .into_inner();
    assert_eq!(first.events.len(), 3);
    assert!(
        first
            .events
            .iter()
            .all(|e| matches!(e.event, Some(Event::CallDecided(_))) && e.workflow_id == wf)
    );
    assert_ne!(first.next_after_seq, 0);
    let second = client
        .query_audit(query(first.next_after_seq, 3))
        .await
        .expect("query")
        .into_inner();
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.next_after_seq, 0);
    assert!(second.events[0].seq > first.events[2].seq);

    let denied = pb::AuditQueryRequest {
        decision: pb::DecisionKind::Deny as i32,
        ..Default::default()
    };
    let denied = client
        .query_audit(denied)
        .await
        .expect("query")
        .into_inner()
        .events;
    assert_eq!(denied.len(), 1);
    let Some(Event::CallDecided(decided)) = &denied[0].event else {
        panic!("a denial is a call_decided event: {:?}", denied[0]);
    };
    let decision = decided.decision.as_ref().expect("decision");
    assert_eq!(decision.violations[0].rule_id, "process-after-validate");
    let raw: serde_json::Value = serde_json::from_str(&denied[0].raw_json).expect("raw line");
    assert_eq!(raw["kind"], json!("call_decided"));
    assert_eq!(raw["prev"].as_str().map(str::len), Some(64));

    let by_tool = pb::AuditQueryRequest {
        tool: "process_data".into(),
        kind: "call_finished".into(),
        ..Default::default()
    };
    assert_eq!(
        client
            .query_audit(by_tool)
            .await
            .expect("query")
            .into_inner()
            .events
            .len(),
        1
    );
    let future = pb::AuditQueryRequest {
        since_ms: i64::MAX - 1,
        ..Default::default()
    };
    assert!(
        client
            .query_audit(future)
            .await
            .expect("query")
            .into_inner()
            .events
            .is_empty()
    );
}

#[tokio::test]
async fn verify_and_compliance_report() {
    let h = Harness::shipped().await;
    let wf = some_history(&h).await;
    let mut client = h.client.clone();
    let verify = client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(verify.ok, "{verify:?}");
    assert!(verify.records >= 9);

    // An approval denied by a person is a blocked call too, with its tool and its gate.
    let gated = h.spawn_call(&wf, "restore_backup", json!({"name": "snap"}));
    let pending = h.wait_pending(&wf).await;
    client
        .deny(pb::ApprovalDecisionRequest {
            approval_id: pending.id.clone(),
            approver: "bob".into(),
            reason: "not now".into(),
            ..Default::default()
        })
        .await
        .expect("deny");
    let _ = gated.await.expect("the gated call ends");

    let report = client
        .compliance_report(pb::ComplianceReportRequest {
            workflow_id: wf.clone(),
            ..Default::default()
        })
        .await
        .expect("report")
        .into_inner();
    assert!(report.compliant, "{:?}", report.findings);
    assert_eq!(
        report.findings[0],
        "3 call(s) ran; 2 attempt(s) were blocked by policy or by an approver and did not run; 1 approval request(s)"
    );
    let ran: Vec<&str> = report.ran.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(ran, ["validate_data", "process_data", "validate_data"]);
    assert_eq!(report.blocked.len(), 2, "{:?}", report.blocked);
    assert_eq!(report.blocked[0].tool, "process_data");
    assert_eq!(
        report.blocked[0].how,
        pb::report_blocked::How::Policy as i32
    );
    assert_eq!(report.blocked[0].rules, ["process-after-validate"]);
    assert_eq!(report.blocked[1].tool, "restore_backup");
    assert_eq!(
        report.blocked[1].how,
        pb::report_blocked::How::ApprovalDenied as i32
    );
    assert!(
        report.blocked[1].reason.contains("as \"bob\"): not now"),
        "{:?}",
        report.blocked[1]
    );
    assert_eq!(report.approvals.len(), 1);
    assert_eq!(
        report.approvals[0].decided_by, "anonymous (no credential; as \"bob\")",
        "the approver is the identity behind the credential; the claimed name is a label"
    );
    let json: serde_json::Value = serde_json::from_str(&report.report_json).expect("report JSON");
    assert_eq!(json["compliant"], json!(true));
    assert_eq!(
        json["counts"],
        json!({"ran": 3, "blocked": 2, "approvals": 1, "not_run": 0})
    );
    assert_eq!(json["ran"].as_array().map(Vec::len), Some(report.ran.len()));
    assert_eq!(json["blocked"][1]["tool"], json!("restore_backup"));

    // Tampering with a line makes the report non-compliant and verification name the line.
    let file = std::fs::read_dir(&h.orchestrator.audit_dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .max()
        .expect("file");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.replacen("\"valid\":true", "\"valid\":false", 1)).expect("tamper");
    let verify = client
        .verify_audit(pb::VerifyAuditRequest::default())
        .await
        .expect("verify")
        .into_inner();
    assert!(!verify.ok);
    assert!(
        verify.first_bad_seq > 0 && verify.message.contains("hash"),
        "{verify:?}"
    );
    let report = client
        .compliance_report(pb::ComplianceReportRequest {
            workflow_id: wf,
            ..Default::default()
        })
        .await
        .expect("report")
        .into_inner();
    assert!(!report.compliant);
    assert!(
        report.findings[1].contains("chain is broken"),
        "{:?}",
        report.findings
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let h = Harness::shipped().await;
    some_history(&h).await;
    let (head, body) = http_get(h.orchestrator.http_addr, "/metrics").await;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    strict_check(&body);
    let scrape =
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(
        value(
            "conductor_tool_calls_total",
            &[("tool", "validate_data"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "conductor_tool_calls_total",
            &[("tool", "validate_data"), ("outcome", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value("conductor_tool_denials_total", &[("tool", "process_data")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            "conductor_rule_violations_total",
            &[("rule", "process-after-validate")]
        ),
        Some(1.0)
    );
    assert_eq!(value("conductor_workflows_active", &[]), Some(1.0));
    assert!(
        body.contains("conductor_tool_latency_seconds{tool=\"validate_data\",quantile=\"0.99\"}")
    );
}

/// Every line is a comment (`# HELP`/`# TYPE` with a known type) or `name{labels} value` with a valid
/// metric name, well-quoted labels and a float value; each family is declared before its samples.
fn strict_check(text: &str) {
    let mut declared = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "{line}"
            );
            declared.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without value: {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap_or(series);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line}"
        );
        let family = name
            .trim_end_matches("_sum")
            .trim_end_matches("_count")
            .trim_end_matches("_bucket");
        assert!(
            declared.contains(name) || declared.contains(family),
            "sample before its TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (key, value) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(!value.trim_end_matches('"').contains('\n'), "{line}");
            }
        }
    }
}
