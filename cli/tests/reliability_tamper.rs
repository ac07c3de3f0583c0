//! Tampering found by the real `conductorctl audit verify DIR`: a copy of a real orchestrator's log with
//! one line changed, removed, inserted, swapped with its neighbour, or the first line dropped. Each
//! exits 1 and names the first bad sequence number; the untouched copy verifies.

mod common;

use common::{Stack, repo_file};
use serde_json::Value;
use std::path::Path;

fn seq_of(line: &str) -> u64 {
    serde_json::from_str::<Value>(line).expect("a JSON line")["seq"]
        .as_u64()
        .expect("seq")
}

/// Writes `lines` as the only file of a fresh directory, named like `original`.
fn write_copy(root: &Path, what: &str, original: &Path, lines: &[String]) -> String {
    let dir = root.join(what);
    std::fs::create_dir(&dir).expect("copy dir");
    let text = lines.join("\n") + "\n";
    std::fs::write(dir.join(original.file_name().expect("name")), text).expect("write");
    dir.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_removed_inserted_and_reordered_lines_are_named_by_their_first_bad_seq() {
    let stack = Stack::start().await;
    let input = repo_file("config/examples/orders.json")
        .display()
        .to_string();
    let done = stack
        .ctl(&["run", "order_summary", "--input", &input])
        .await;
    assert_eq!(done.code, 0, "{}", done.text());
    let files: Vec<_> = std::fs::read_dir(&stack.audit_dir)
        .expect("audit dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "one log file: {files:?}");
    let original = &files[0];
    let lines: Vec<String> = std::fs::read_to_string(original)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(lines.len() >= 8, "enough history: {} lines", lines.len());
    let root = stack.dir.path();

    let intact = write_copy(root, "intact", original, &lines);
    let verified = stack.ctl(&["audit", "verify", &intact]).await;
    assert_eq!(verified.code, 0, "{}", verified.text());

    // (what, tampered lines, the seq expected where the chain breaks)
    let mut cases: Vec<(&str, Vec<String>, u64)> = Vec::new();
    let mut changed = lines.clone();
    let value: Value = serde_json::from_str(&changed[4]).expect("line");
    changed[4] = changed[4].replacen(
        &format!("\"ts_ms\":{}", value["ts_ms"]),
        &format!("\"ts_ms\":{}", value["ts_ms"].as_i64().unwrap_or(0) + 1),
        1,
    );
    assert_ne!(changed[4], lines[4]);
    cases.push(("changed", changed, seq_of(&lines[4])));
    let mut removed = lines.clone();
    removed.remove(3);
    cases.push(("removed", removed, seq_of(&lines[3])));
    let mut inserted = lines.clone();
    inserted.insert(5, lines[2].clone());
    cases.push(("inserted", inserted, seq_of(&lines[5])));
    let mut swapped = lines.clone();
    swapped.swap(5, 6);
    cases.push(("swapped", swapped, seq_of(&lines[5])));
    cases.push(("first removed", lines[1..].to_vec(), seq_of(&lines[0])));

    for (what, tampered, bad_seq) in cases {
        let dir = write_copy(root, &what.replace(' ', "-"), original, &tampered);
        let broken = stack.ctl(&["audit", "verify", &dir]).await;
        assert_eq!(broken.code, 1, "{what}: {}", broken.text());
        assert!(
            broken.stdout.contains(&format!("first bad seq: {bad_seq}")),
            "{what}: names seq {bad_seq}: {}",
            broken.text()
        );
        let json = stack.ctl(&["audit", "verify", &dir, "--json"]).await;
        let report: Value = serde_json::from_str(&json.stdout).expect("JSON report");
        assert_eq!(
            (report["ok"].clone(), report["first_bad_seq"].clone()),
            (Value::Bool(false), bad_seq.into()),
            "{what}"
        );
    }
    stack.stop().await;
}
