//! The real `orchestrator` binary's log on a redirected stderr: plain text without colour codes (what a
//! log file should hold), or one JSON object a line with `--log-format json` for log shippers.

use crate::common;

use common::*;

/// Everything the binary logged from its start to its `listening on` line (and a little after).
async fn started_with(extra: &[&str]) -> Vec<String> {
    let servers = conductor_servers::testing::spawn_all().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, shipped_config(&servers).to_string()).expect("config");
    let daemon = spawn_orchestrator_binary(&config_path, &dir.path().join("audit"), extra);
    let log = daemon.kill();
    servers.stop().await;
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_log_has_no_colour_codes() {
    let log = started_with(&[]).await;
    assert!(log.iter().any(|l| l.contains("listening on")), "{log:#?}");
    assert!(
        log.iter().all(|l| !l.contains('\u{1b}')),
        "escape codes in a log that is not a terminal: {log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_one_object_a_line() {
    let log = started_with(&["--log-format", "json"]).await;
    let lines: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"].as_str().is_some()),
        "{log:#?}"
    );
}
