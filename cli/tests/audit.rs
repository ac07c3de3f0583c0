//! End-to-end tests of `conductorctl audit ...` against a real orchestrator's log.

mod common;

use common::{Stack, repo_file};
use serde_json::Value;

fn example(name: &str) -> String {
    repo_file(&format!("config/examples/{name}"))
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_the_log_and_names_the_first_tampered_seq() {
    let stack = Stack::start().await;
    let done = stack
        .ctl(&["run", "order_summary", "--input", &example("orders.json")])
        .await;
    assert_eq!(done.code, 0, "{}", done.text());
    let audit_dir = stack.audit_dir.display().to_string();
    let offline = stack.ctl(&["audit", "verify", &audit_dir]).await;
    assert_eq!(offline.code, 0, "{}", offline.text());
    assert!(offline.stdout.contains("intact"), "{}", offline.text());
    let online = stack.ctl(&["audit", "verify"]).await;
    assert_eq!(online.code, 0, "{}", online.text());
    // The last record's seq and hash, to keep elsewhere: the chain cannot show records cut off
    // its end, a copy of this line can.
    let anchor = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("last record: "))
            .map(str::to_owned)
    };
    let newest = std::fs::read_dir(&stack.audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .max()
        .expect("a log file");
    let text = std::fs::read_to_string(&newest).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().expect("a line")).unwrap();
    // Printed as --anchor takes it (issue 25 item 7: "seq 84, hash c7bf…" had to be retyped).
    let expected = format!("{}:{}", last["seq"], last["hash"].as_str().unwrap());
    assert_eq!(
        anchor(&offline.stdout),
        Some(expected.clone()),
        "{}",
        offline.text()
    );
    assert_eq!(anchor(&online.stdout), Some(expected), "{}", online.text());
    let kept = format!("{}:{}", last["seq"], last["hash"].as_str().unwrap());
    let held = stack
        .ctl(&["audit", "verify", &audit_dir, "--anchor", &kept])
        .await;
    assert_eq!(
        held.code,
        0,
        "the log still holds its anchor: {}",
        held.text()
    );
    let held = stack.ctl(&["audit", "verify", "--anchor", &kept]).await;
    assert_eq!(held.code, 0, "{}", held.text());

    // The log cut short by its last record still chains, but no longer holds the anchor.
    let cut = stack.dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    for entry in std::fs::read_dir(&stack.audit_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let mut text = std::fs::read_to_string(&path).unwrap();
            if path == newest {
                let keep = text.trim_end().rfind('\n').map_or(0, |i| i + 1);
                text.truncate(keep);
            }
            std::fs::write(cut.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let cut = cut.display().to_string();
    let chained = stack.ctl(&["audit", "verify", &cut]).await;
    assert_eq!(
        chained.code,
        0,
        "the chain alone cannot tell: {}",
        chained.text()
    );
    let short = stack
        .ctl(&["audit", "verify", &cut, "--anchor", &kept])
        .await;
    assert_eq!(short.code, 1, "{}", short.text());
    assert!(
        short.stdout.contains("records were cut off its end"),
        "{}",
        short.text()
    );
    let wrong = stack
        .ctl(&["audit", "verify", &audit_dir, "--anchor", "1:abc"])
        .await;
    assert_eq!(
        wrong.code,
        2,
        "a malformed anchor is a usage error: {}",
        wrong.text()
    );

    let copy = stack.dir.path().join("tampered");
    std::fs::create_dir(&copy).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&stack.audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        // The log's own files: not the spare the writer prepares ahead of need (zeros, hidden).
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut tampered_seq = None;
    for file in &files {
        let mut text = std::fs::read_to_string(file).unwrap();
        if tampered_seq.is_none()
            && let Some((changed, seq)) = tamper(&text)
        {
            text = changed;
            tampered_seq = Some(seq);
        }
        std::fs::write(copy.join(file.file_name().unwrap()), text).unwrap();
    }
    let seq = tampered_seq.expect("a workflow_started line to change");
    let broken = stack
        .ctl(&["audit", "verify", &copy.display().to_string()])
        .await;
    assert_eq!(broken.code, 1, "{}", broken.text());
    assert!(
        broken.stdout.contains(&format!("first bad seq: {seq}")),
        "{}",
        broken.text()
    );
    let json = stack
        .ctl(&["audit", "verify", &copy.display().to_string(), "--json"])
        .await;
    let report: Value = serde_json::from_str(&json.stdout).expect("JSON report");
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], seq);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_queries_and_report_read_the_log() {
    let stack = Stack::start().await;
    let done = stack
        .ctl(&[
            "run",
            "customer_onboarding",
            "--input",
            &example("onboarding-invalid.json"),
        ])
        .await;
    assert_eq!(done.code, 1, "{}", done.text());
    let tail = stack.ctl(&["audit", "tail", "-n", "3", "--json"]).await;
    assert_eq!(tail.code, 0, "{}", tail.text());
    assert_eq!(tail.stdout.lines().count(), 3, "{}", tail.text());
    let query = stack
        .ctl(&["audit", "query", "--kind", "call_finished", "--json"])
        .await;
    let events: Value = serde_json::from_str(&query.stdout).expect("JSON");
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "call_finished"),
        "{}",
        query.text()
    );
    let report = stack.ctl(&["audit", "report", "--since", "1h"]).await;
    assert_eq!(report.code, 0, "{}", report.text());
    assert!(
        report.stdout.contains("compliance report") && report.stdout.contains("calls that ran"),
        "{}",
        report.text()
    );
    let report = stack
        .ctl(&["audit", "report", "--since", "1h", "--json"])
        .await;
    serde_json::from_str::<Value>(&report.stdout).expect("the report as JSON");
    stack.stop().await;
}

/// Changes the caller of the first `workflow_started` line (keeping it valid JSON); returns the new text
/// and the changed line's seq.
fn tamper(text: &str) -> Option<(String, u64)> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let index = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"workflow_started\""))?;
    let seq = serde_json::from_str::<Value>(&lines[index]).ok()?["seq"].as_u64()?;
    // The caller is the identity (anonymous here), with the claimed name as a label.
    let changed = lines[index].replace("\"caller\":\"anonymous ", "\"caller\":\"mallory ");
    assert_ne!(changed, lines[index], "the line names the caller");
    lines[index] = changed;
    Some((lines.join("\n") + "\n", seq))
}
