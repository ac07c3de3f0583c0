//! End-to-end tests of `conductorctl` against real tool servers and a real orchestrator (in-process, port 0).

mod common;

use common::{Stack, approval_id_in, ctl_bare, ctl_command, output, repo_file};
use serde_json::Value;

fn example(name: &str) -> String {
    repo_file(&format!("config/examples/{name}"))
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_of_a_template_succeeds_with_a_line_per_step() {
    let stack = Stack::start().await;
    let done = stack
        .ctl(&["run", "order_summary", "--input", &example("orders.json")])
        .await;
    assert_eq!(done.code, 0, "{}", done.text());
    for step in [
        "[1/3] validate (validate_data)",
        "[2/3] aggregate (process_data)",
        "[3/3] report (send_notification)",
    ] {
        assert!(
            done.stdout.contains(step),
            "missing {step}: {}",
            done.text()
        );
    }
    assert!(done.stdout.contains("completed in"), "{}", done.text());
    let listed = stack.ctl(&["workflows", "--all", "--json"]).await;
    let workflows: Value = serde_json::from_str(&listed.stdout).expect("JSON list");
    assert_eq!(workflows[0]["state"], "completed", "{}", listed.text());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_at_a_failed_step_with_the_reason() {
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
    let said: Vec<&str> = done
        .stdout
        .lines()
        .chain(done.stderr.lines())
        .filter(|l| l.contains("workflow wf-") && l.contains("failed"))
        .collect();
    assert_eq!(said.len(), 1, "the failure is said once: {}", done.text());
    assert!(said[0].contains("validate"), "{}", done.text());
    assert!(
        done.stdout.contains("validation_failed") || done.stderr.contains("validation_failed"),
        "{}",
        done.text()
    );
    assert!(
        !done.stdout.contains("[2/5] process (process_data) ✔"),
        "{}",
        done.text()
    );
    assert!(
        done.stdout
            .contains("[2/5] process (process_data) – not run")
            && done
                .stdout
                .contains("[5/5] notify_team (send_notification) – not run"),
        "the steps after the failure say they did not run: {}",
        done.text()
    );
    // Which record and which field: in `run` itself and in `workflow ID`.
    assert!(
        done.stdout.contains("details:") && done.stdout.contains("\"/name\""),
        "run shows the tool's details: {}",
        done.text()
    );
    // Issue 25 item 7: every line of the details is indented under the step, not only the first.
    let details: Vec<&str> = done
        .stdout
        .lines()
        .skip_while(|l| !l.contains("details:"))
        .take_while(|l| !l.contains("not run") && !l.contains("workflow wf-"))
        .collect();
    assert!(
        details.len() > 2 && details.iter().all(|l| l.starts_with("    ")),
        "{}",
        done.text()
    );
    let id = said[0]
        .split_whitespace()
        .find(|w| w.starts_with("wf-"))
        .expect("the workflow id")
        .trim_end_matches(|c: char| !c.is_alphanumeric())
        .to_owned();
    let shown = stack.ctl(&["workflow", &id]).await;
    assert!(
        shown.stdout.contains("details") && shown.stdout.contains("\"/name\""),
        "workflow ID shows which record failed: {}",
        shown.text()
    );
    let json = stack.ctl(&["workflow", &id, "--json"]).await;
    assert!(json.stdout.contains("\"error_details\""), "{}", json.text());
    // Issue 25 item 7: the failed step's output is its failure, not "none yet".
    let output = stack.ctl(&["workflow", &id, "--output", "validate"]).await;
    assert_eq!(output.code, 1, "{}", output.text());
    assert!(
        output.stderr.contains("validate_data call failed")
            && output.stderr.contains("\"/name\"")
            && !output.stderr.contains("none yet"),
        "{}",
        output.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_in_another_process_unblocks_a_waiting_run() {
    let stack = Stack::start().await;
    let run = stack.spawn(&[
        "run",
        "customer_onboarding",
        "--input",
        &example("onboarding.json"),
        "--set",
        "batch=approval-test",
    ]);
    let line = run
        .wait_for_line("the approve command", |l| {
            l.contains("conductorctl approve ")
        })
        .await;
    let id = approval_id_in(&line);

    let pending = stack.ctl(&["pending"]).await;
    assert_eq!(pending.code, 0, "{}", pending.text());
    assert!(
        pending.stdout.contains(&id) && pending.stdout.contains("sha256:"),
        "{}",
        pending.text()
    );
    assert!(
        pending.stdout.contains("new-customers@example.com"),
        "the arguments are shown: {}",
        pending.text()
    );

    let digest = pending
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256:"))
        .map(|d| d.trim().to_owned())
        .expect("the digest line");
    let wrong = "0".repeat(64);
    let refused = stack.ctl(&["approve", &id, "--digest", &wrong]).await;
    assert_eq!(
        refused.code,
        1,
        "a wrong digest is refused: {}",
        refused.text()
    );

    let approved = stack
        .ctl(&[
            "approve",
            &id,
            "--digest",
            &digest,
            "--reason",
            "checked the list",
            "--as",
            "alice",
        ])
        .await;
    assert_eq!(approved.code, 0, "{}", approved.text());
    assert!(
        // No credential here: the identity is anonymous and `--as` is a label beside it.
        approved
            .stdout
            .contains("approved by anonymous (no credential; as \"alice\")"),
        "{}",
        approved.text()
    );

    let done = run.finish().await;
    assert_eq!(done.code, 0, "{}", done.text());
    assert!(
        done.stdout
            .contains("[5/5] notify_team (send_notification) ✔"),
        "{}",
        done.text()
    );
    let again = stack.ctl(&["approve", &id]).await;
    assert_eq!(
        again.code,
        1,
        "a decided approval cannot be decided again: {}",
        again.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_in_another_process_fails_the_run() {
    let stack = Stack::start().await;
    let run = stack.spawn(&[
        "run",
        "customer_onboarding",
        "--input",
        &example("onboarding.json"),
    ]);
    let id = approval_id_in(
        &run.wait_for_line("the approve command", |l| {
            l.contains("conductorctl approve ")
        })
        .await,
    );
    let denied = stack.ctl(&["deny", &id, "--reason", "wrong list"]).await;
    assert_eq!(denied.code, 0, "{}", denied.text());
    let done = run.finish().await;
    assert_eq!(done.code, 1, "{}", done.text());
    assert!(
        done.stdout
            .contains("✘ denied by anonymous (no credential; as \"tester\"): wrong list"),
        "the denied step has its mark: {}",
        done.text()
    );
    assert!(
        done.stdout.contains("was denied") && !done.stderr.contains("was denied"),
        "the failure is said once: {}",
        done.text()
    );

    // The compliance report: the summary's counts are the tables' lengths, and the approver's
    // denial is a blocked call with its tool, its gate and the reason.
    let report = stack.ctl(&["audit", "report"]).await;
    assert_eq!(report.code, 0, "{}", report.text());
    let count = |prefix: &str| -> usize {
        let at = report
            .stdout
            .find(prefix)
            .unwrap_or_else(|| panic!("{prefix}: {}", report.text()));
        report.stdout[at + prefix.len()..]
            .split(')')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix}: {}", report.text()))
    };
    let ran = count("calls that ran (");
    let blocked = count("calls blocked (");
    assert!(
        report.stdout.contains(&format!(
            "{ran} call(s) ran; {blocked} attempt(s) were blocked"
        )),
        "{}",
        report.text()
    );
    assert_eq!(blocked, 1, "{}", report.text());
    let row = report
        .stdout
        .lines()
        .find(|l| l.contains("approval denied"))
        .unwrap_or_else(|| panic!("no denial row: {}", report.text()));
    assert!(row.contains("wrong list"), "{row}");
    let json = stack.ctl(&["audit", "report", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("report JSON");
    assert_eq!(json["counts"]["ran"], serde_json::json!(ran));
    assert_eq!(json["blocked"].as_array().map(Vec::len), Some(blocked));
    assert_eq!(
        json["blocked"][0]["how"],
        serde_json::json!("approval denied")
    );
    assert!(
        json["blocked"][0]["tool"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{json}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_json_receives_a_runs_events_in_order() {
    let stack = Stack::start().await;
    let started = stack
        .ctl(&[
            "run",
            "customer_onboarding",
            "--input",
            &example("onboarding.json"),
            "--detach",
        ])
        .await;
    assert_eq!(started.code, 0, "{}", started.text());
    let id = started.stdout.trim().to_owned();
    let watch = stack.spawn(&["watch", "--json", "--workflow", &id, "--from", "1"]);
    let waiting = watch
        .wait_for_line("approval_requested", |l| {
            l.contains("\"approval_requested\"")
        })
        .await;
    let waiting: Value = serde_json::from_str(&waiting).expect("a JSON line");
    let approval = waiting["approval_id"]
        .as_str()
        .expect("approval id")
        .to_owned();
    let approved = stack.ctl(&["approve", &approval]).await;
    assert_eq!(approved.code, 0, "{}", approved.text());
    let done = watch.finish().await;
    assert_eq!(done.code, 0, "{}", done.text());
    let events: Vec<Value> = done
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq increases: {seqs:?}"
    );
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds.first(), Some(&"workflow_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"workflow_finished"), "{kinds:?}");
    for kind in [
        "call_decided",
        "call_started",
        "call_finished",
        "approval_requested",
        "approval_decided",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    assert!(
        events.iter().all(|e| e["workflow_id"] == id.as_str()),
        "only the watched workflow"
    );
    assert_eq!(events.last().unwrap()["workflow"]["state"], "completed");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_every_scenario_against_the_daemons() {
    let stack = Stack::start().await;
    let demo = stack.ctl(&["demo"]).await;
    assert_eq!(demo.code, 0, "{}", demo.text());
    assert!(
        demo.stdout
            .contains("all 6 scenario(s) behaved as expected"),
        "{}",
        demo.text()
    );
    for expected in [
        "blocked by a sequence rule",
        "blocked by a conditional rule",
        "waits for approval",
        "restored",
        "expected: it waited at no-unchecked-egress and ran once approved",
        "why:     send_notification carries label egress and this workflow has already seen private + untrusted: private from call",
        "expected: it waited at large-order-needs-approval and ran once approved",
    ] {
        assert!(
            demo.stdout.contains(expected) || demo.stderr.contains(expected),
            "missing {expected:?}: {}",
            demo.text()
        );
    }
    // Issue 25 item 4: what the demo starts, it ends (ad-hoc workflows stayed open before).
    let active = stack.ctl(&["workflows", "--json"]).await;
    let active: Value = serde_json::from_str(&active.stdout).expect("JSON list");
    assert_eq!(active, Value::Array(vec![]), "no workflow left running");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_session_shows_a_denial_with_its_reason_and_the_next_steps() {
    let stack = Stack::start().await;
    let orders = r#"[{"id":"o-1","customer_id":"c-1","amount":3}]"#;
    let script = format!(
        "help\nstart\ncall process_data {{\"records\": {orders}}}\ncall validate_data {{\"records\": {orders}, \"schema\": \"order\"}}\ncall process_data {{\"records\": {orders}}}\nhistory\nquit\n"
    );
    let session = stack.ctl_with_stdin(&["interactive"], &script).await;
    assert_eq!(session.code, 0, "{}", session.text());
    let out = &session.stdout;
    assert!(
        out.contains("conductor> call process_data"),
        "the script is echoed: {}",
        session.text()
    );
    assert!(out.contains("process_data: DENIED"), "{}", session.text());
    assert!(
        out.contains("reason:") && out.contains("validate_data"),
        "{}",
        session.text()
    );
    assert!(out.contains("next allowed:"), "{}", session.text());
    assert!(
        out.contains("process_data: allowed → succeeded"),
        "{}",
        session.text()
    );
    assert!(
        out.contains("DECISION"),
        "history table: {}",
        session.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_hoc_call_prints_its_workflow_and_a_denial_exits_1() {
    let stack = Stack::start().await;
    let denied = stack
        .ctl(&[
            "call",
            "create_backup",
            "--args",
            r#"{"name":"x","data":[]}"#,
        ])
        .await;
    assert_eq!(denied.code, 1, "{}", denied.text());
    assert!(
        denied.stdout.contains("started ad-hoc workflow wf-") && denied.stdout.contains("DENIED"),
        "{}",
        denied.text()
    );
    let status = stack.ctl(&["status", "--json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).expect("JSON status");
    assert!(
        status["policy_violations"].as_u64().unwrap() >= 1,
        "{status}"
    );
    for command in [&["templates"][..], &["tools"], &["workflows", "--all"]] {
        let listed = stack.ctl(command).await;
        assert_eq!(listed.code, 0, "{command:?}: {}", listed.text());
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_after_an_orchestrator_restart_without_missing_events() {
    let mut stack = Stack::start().await;
    // From seq 1: the first call may be made before the watcher has subscribed, and a live-only
    // watcher would then never see it (CI caught exactly that race).
    let watch = stack.spawn(&["watch", "--json", "--from", "1"]);
    let before = stack.ctl(&["call", "list_schemas", "--args", "{}"]).await;
    assert_eq!(before.code, 0, "{}", before.text());
    watch
        .wait_for_line("the first call", |l| l.contains("\"call_finished\""))
        .await;

    stack.restart_orchestrator().await;
    // Events made while the watcher is still reconnecting must reach it too (it resumes from its last seq).
    let after = stack.ctl(&["call", "list_backups", "--args", "{}"]).await;
    assert_eq!(after.code, 0, "{}", after.text());
    watch
        .wait_for_line("the call after the restart", |l| {
            l.contains("\"call_finished\"") && l.contains("list_backups")
        })
        .await;
    let done = watch.kill().await;
    let seqs: Vec<u64> = done
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let first = *seqs.first().expect("events");
    let last = *seqs.last().expect("events");
    assert_eq!(
        seqs,
        (first..=last).collect::<Vec<_>>(),
        "every event exactly once across the restart\n{}",
        done.text()
    );
    assert!(
        done.stdout.matches("\"config_loaded\"").count() >= 2,
        "the start and the restart are both events: {}",
        done.text()
    );
    assert!(
        done.stderr
            .contains("lost the orchestrator (the orchestrator is shutting down)")
            && !done.stderr.contains("from_seq"),
        "a person reads what happened, not protocol advice: {}",
        done.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_commands_quietly_and_successfully() {
    let stack = Stack::start().await;
    let call = stack.ctl(&["call", "list_schemas", "--args", "{}"]).await;
    assert_eq!(call.code, 0, "{}", call.text());
    for args in [
        &["watch", "--json", "--from", "1"][..],
        &["audit", "tail", "-n", "1000"],
        &["audit", "query", "--limit", "1000"],
        &["audit", "query", "--limit", "1000", "--json"],
        &["workflows", "--all"],
    ] {
        let done = stack.ctl_with_stdout_closed(args).await;
        assert_eq!(done.code, 0, "{args:?}: {}", done.text());
        assert!(
            !done.stderr.contains("panicked"),
            "{args:?}: {}",
            done.text()
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orchestrator_address_takes_the_forms_people_type() {
    let stack = Stack::start().await;
    let listen_form = stack.url.trim_start_matches("http://").to_owned();
    let port = listen_form.rsplit(':').next().expect("a port").to_owned();
    for address in [
        listen_form.clone(),
        format!("localhost:{port}"),
        stack.url.clone(),
    ] {
        let mut command = ctl_command(&address);
        command.arg("status");
        let done = output(command, None).await;
        assert_eq!(done.code, 0, "--orchestrator {address}: {}", done.text());
    }

    // Nothing listens there: exit 3, and each cause is said once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nobody = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let mut command = ctl_command(&nobody);
    command.arg("status");
    let done = output(command, None).await;
    assert_eq!(done.code, 3, "{}", done.text());
    assert!(
        done.stderr.contains(&format!("http://{nobody}")),
        "{}",
        done.text()
    );
    assert!(
        done.stderr.matches("tcp connect error").count() <= 1,
        "a cause repeated: {}",
        done.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_shows_each_step_output_and_workflow_shows_one_whole() {
    let stack = Stack::start().await;
    let done = stack
        .ctl(&["run", "order_summary", "--input", &example("orders.json")])
        .await;
    assert_eq!(done.code, 0, "{}", done.text());
    let outputs_at = done
        .stdout
        .find("outputs")
        .unwrap_or_else(|| panic!("no outputs: {}", done.text()));
    let outputs = &done.stdout[outputs_at..];
    assert!(
        outputs.contains("aggregate") && outputs.contains("--output"),
        "{}",
        done.text()
    );
    let id = done
        .stdout
        .split("conductorctl workflow ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the workflow id in the hint")
        .to_owned();

    let shown = stack.ctl(&["workflow", &id]).await;
    assert_eq!(shown.code, 0, "{}", shown.text());
    assert!(
        shown.stdout.contains("outputs") && shown.stdout.contains("aggregate"),
        "{}",
        shown.text()
    );
    assert!(
        shown.stdout.contains("in all"),
        "a finished workflow is not \"so far\": {}",
        shown.text()
    );

    let whole = stack.ctl(&["workflow", &id, "--output", "aggregate"]).await;
    assert_eq!(whole.code, 0, "{}", whole.text());
    let value: Value = serde_json::from_str(&whole.stdout).expect("the whole output is JSON");
    assert!(!value.is_null(), "{}", whole.text());

    let query = stack
        .ctl(&["audit", "query", "-w", &id, "--kind", "call_finished"])
        .await;
    assert_eq!(query.code, 0, "{}", query.text());
    assert!(
        query.stdout.contains("process_data succeeded in") && query.stdout.contains("→ {"),
        "audit query shows each call's result, summarised: {}",
        query.text()
    );

    let missing = stack.ctl(&["workflow", &id, "--output", "nope"]).await;
    assert_eq!(missing.code, 1, "{}", missing.text());
    assert!(
        missing.stderr.contains("aggregate"),
        "names the steps that have outputs: {}",
        missing.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_run_says_the_workflow_keeps_running_and_how_to_follow_it() {
    let stack = Stack::start().await;
    let run = stack.spawn(&[
        "run",
        "customer_onboarding",
        "--input",
        &example("onboarding.json"),
        "--set",
        "batch=ctrl-c-test",
    ]);
    run.wait_for_line("the approval gate", |l| l.contains("conductorctl approve "))
        .await;
    run.interrupt().await;
    let done = run.finish().await;
    assert_eq!(done.code, 130, "{}", done.text());
    assert!(
        done.stderr.contains("keeps running")
            && done.stderr.contains("conductorctl watch --workflow wf-"),
        "{}",
        done.text()
    );
    assert!(!done.stderr.contains("panicked"), "{}", done.text());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_context_gives_the_orchestrator_address() {
    let stack = Stack::start().await;
    let contexts = stack.dir.path().join("contexts.json");
    let listen_form = stack.url.trim_start_matches("http://");
    std::fs::write(
        &contexts,
        serde_json::json!({
            "current_context": "nowhere",
            "contexts": {
                "test": {"orchestrator": listen_form},
                "nowhere": {"orchestrator": "127.0.0.1:1"},
            }
        })
        .to_string(),
    )
    .expect("contexts file");
    let with = |args: &[&str]| {
        let mut command = ctl_bare();
        command.env("CONDUCTORCTL_CONFIG", &contexts).args(args);
        command
    };
    let named = output(with(&["--context", "test", "status"]), None).await;
    assert_eq!(named.code, 0, "{}", named.text());
    let mut by_env = with(&["status"]);
    by_env.env("CONDUCTOR_CONTEXT", "test");
    let by_env = output(by_env, None).await;
    assert_eq!(by_env.code, 0, "{}", by_env.text());
    let current = output(with(&["status"]), None).await;
    assert_eq!(
        current.code,
        3,
        "the current context is used: {}",
        current.text()
    );
    let unknown = output(with(&["--context", "staging", "status"]), None).await;
    assert_eq!(unknown.code, 2, "a usage error: {}", unknown.text());
    assert!(
        unknown.stderr.contains("nowhere, test"),
        "{}",
        unknown.text()
    );
    stack.stop().await;
}

/// The main read-only outputs against the shipped configuration, reviewed as diffs when they change.
/// After an intended change: `SNAPSHOTS=overwrite cargo test -p conductorctl --test daemons`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_tools_outputs_match_their_snapshots() {
    let stack = Stack::start().await;
    let templates = stack.ctl(&["templates"]).await;
    assert_eq!(templates.code, 0, "{}", templates.text());
    snapbox::assert_data_eq!(templates.stdout, snapbox::file!["snapshots/templates.txt"]);
    let tools = stack.ctl(&["tools"]).await;
    assert_eq!(tools.code, 0, "{}", tools.text());
    snapbox::assert_data_eq!(tools.stdout, snapbox::file!["snapshots/tools.txt"]);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_a_file() {
    let stack = Stack::start().await;
    let file = stack.dir.path().join("token");
    // A token the orchestrator does not know is refused even where no credential is required: the
    // refusal proves the file's token was sent.
    std::fs::write(&file, "not-a-known-token\n").expect("token file");
    let file = file.display().to_string();
    let by_flag = stack.ctl(&["pending", "--token-file", &file]).await;
    assert_ne!(by_flag.code, 0, "{}", by_flag.text());
    assert!(
        by_flag.stderr.contains("bearer token is not valid"),
        "{}",
        by_flag.text()
    );
    let mut by_env = stack.command(&["pending"]);
    by_env.env("CONDUCTOR_TOKEN_FILE", &file);
    let by_env = common::output(by_env, None).await;
    assert!(
        by_env.stderr.contains("bearer token is not valid"),
        "{}",
        by_env.text()
    );
    let missing = stack
        .ctl(&["pending", "--token-file", "/nonexistent/token"])
        .await;
    assert!(
        missing.stderr.contains("cannot read the token file"),
        "{}",
        missing.text()
    );
    let without = stack.ctl(&["pending"]).await;
    assert_eq!(
        without.code,
        0,
        "no token: anonymous may read here: {}",
        without.text()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_hoc_workflows_end_with_their_one_call_and_with_the_interactive_session() {
    let stack = Stack::start().await;
    let called = stack.ctl(&["call", "list_schemas", "--json"]).await;
    assert_eq!(called.code, 0, "{}", called.text());
    let json: serde_json::Value = serde_json::from_str(&called.stdout).expect("call JSON");
    assert_eq!(json["workflow_ended"], serde_json::json!(true), "{json}");
    let id = json["workflow_id"]
        .as_str()
        .expect("workflow id")
        .to_owned();
    let shown = stack.ctl(&["workflow", &id, "--json"]).await;
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).expect("workflow JSON");
    assert_eq!(shown["state"], serde_json::json!("completed"), "{shown}");

    // Even a call refused for an unknown tool ends its workflow; the text says how to keep one.
    let refused = stack.ctl(&["call", "no_such_tool"]).await;
    assert_ne!(refused.code, 0, "{}", refused.text());
    let kept = stack.ctl(&["call", "list_schemas", "--keep"]).await;
    assert!(
        kept.stdout
            .contains("continue with `conductorctl call TOOL --workflow"),
        "{}",
        kept.text()
    );
    let plain = stack.ctl(&["call", "list_schemas"]).await;
    assert!(
        plain.stdout.contains("ended its one-call workflow") && plain.stdout.contains("--keep"),
        "{}",
        plain.text()
    );

    let session = stack
        .ctl_with_stdin(&["interactive"], "call list_schemas\nquit\n")
        .await;
    assert_eq!(session.code, 0, "{}", session.text());
    assert!(
        session.stdout.contains("ended ad-hoc workflow"),
        "{}",
        session.text()
    );
    let active = stack.ctl(&["workflows", "--json"]).await;
    let active: serde_json::Value = serde_json::from_str(&active.stdout).expect("workflows JSON");
    assert_eq!(
        active.as_array().map(|a| a.len()),
        Some(1),
        "only the --keep workflow is still active: {active}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_inputs_are_checked_before_anything_runs_and_shown_in_templates() {
    let stack = Stack::start().await;
    let run = stack.ctl(&["run", "customer_onboarding"]).await;
    assert_eq!(run.code, 2, "{}", run.text());
    assert!(
        run.stderr
            .contains("input \"customers\" (array) is missing")
            && run.stderr.contains("input \"batch\" (string) is missing")
            && run.stderr.contains("an input that passes"),
        "{}",
        run.text()
    );
    let shown = stack.ctl(&["templates", "restore_snapshot"]).await;
    assert_eq!(shown.code, 0, "{}", shown.text());
    assert!(
        shown.stdout.contains("snapshot (string, required)")
            && shown.stdout.contains(
                "restore → restore_backup  (needs approval: gate restore-needs-approval)"
            ),
        "{}",
        shown.text()
    );
    let missing = stack.ctl(&["templates", "nope"]).await;
    assert_ne!(missing.code, 0, "{}", missing.text());
    stack.stop().await;
}

/// While the audit disk is full, `workflow`, `workflows` and `status` show what the orchestrator has
/// applied but marked 'not yet durable' (a crash would take it back), and say so; once the disk
/// takes the records again, the marks are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_mark_what_the_audit_log_has_not_made_durable() {
    let stack = Stack::start().await;
    let gateway = stack.gateway().clone();
    let workflow = gateway
        .start_workflow(None, serde_json::json!({}), "tester")
        .await
        .expect("workflow")
        .id;
    gateway.audit().inject_full_disk(true);
    let refused = gateway
        .call(conductor_orchestrator::gateway::CallSpec {
            workflow_id: workflow.clone(),
            tool: "list_schemas".into(),
            arguments: serde_json::json!({}),
            caller: "tester".into(),
            step: None,
        })
        .await;
    assert!(refused.is_err(), "its record cannot be kept: {refused:?}");

    let shown = stack.ctl(&["workflow", &workflow]).await;
    assert_eq!(shown.code, 0, "{}", shown.text());
    assert!(
        shown.stdout.contains("(not yet durable)")
            && shown.stdout.contains("a crash would take it back"),
        "{}",
        shown.text()
    );
    let json = stack.ctl(&["workflow", &workflow, "--json"]).await;
    let value: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(value["not_yet_durable"], true, "{}", json.text());
    assert_eq!(
        value["history"][0]["not_yet_durable"],
        true,
        "{}",
        json.text()
    );
    let listed = stack.ctl(&["workflows"]).await;
    assert!(
        listed.stdout.contains("(not yet durable)"),
        "{}",
        listed.text()
    );
    let status = stack.ctl(&["status"]).await;
    assert!(
        status.stdout.contains("NOT SERVING") && status.stdout.contains("not durable yet"),
        "{}",
        status.text()
    );

    gateway.audit().inject_full_disk(false);
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    while gateway.audit_state().unwritable.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit log never took records again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let settled = stack.ctl(&["workflow", &workflow]).await;
    assert!(
        !settled.stdout.contains("not yet durable"),
        "{}",
        settled.text()
    );
    stack.stop().await;
}

/// The id a `run --detach` printed.
fn detached_id(outcome: &common::Outcome) -> String {
    assert_eq!(outcome.code, 0, "{}", outcome.text());
    let id = outcome.stdout.trim().to_owned();
    assert!(id.starts_with("wf-"), "{}", outcome.text());
    id
}

/// Issue 25 item 2: scripts could not wait for a workflow. `watch --workflow` on a finished workflow
/// (stdout not a terminal) printed "watching … from seq N" and never exited, and a failed workflow's end
/// exited 0. `wait ID` exits 0 completed, 1 failed, 124 on --timeout; `watch --workflow` the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_and_watch_workflow_exit_with_how_the_workflow_ended() {
    let stack = Stack::start().await;
    // Completed: wait and watch say so and exit 0, at once.
    let completed = detached_id(
        &stack
            .ctl(&[
                "run",
                "order_summary",
                "--input",
                &example("orders.json"),
                "--detach",
            ])
            .await,
    );
    let waited = stack.ctl(&["wait", &completed]).await;
    assert_eq!(waited.code, 0, "{}", waited.text());
    assert!(
        waited
            .stdout
            .contains(&format!("workflow {completed} completed")),
        "{}",
        waited.text()
    );
    let watched = stack.ctl(&["watch", "--workflow", &completed]).await;
    assert_eq!(watched.code, 0, "{}", watched.text());
    assert!(watched.stdout.contains("completed"), "{}", watched.text());
    assert!(!watched.stderr.contains("watching"), "{}", watched.text());

    // Failed: exit 1, with how it failed.
    let failed = detached_id(
        &stack
            .ctl(&[
                "run",
                "customer_onboarding",
                "--input",
                &example("onboarding-invalid.json"),
                "--detach",
            ])
            .await,
    );
    let waited = stack.ctl(&["wait", &failed, "--json"]).await;
    assert_eq!(waited.code, 1, "{}", waited.text());
    let json: Value = serde_json::from_str(&waited.stdout).expect("the workflow as JSON");
    assert_eq!(json["state"], "failed", "{}", waited.text());
    let watched = stack.ctl(&["watch", "--workflow", &failed]).await;
    assert_eq!(watched.code, 1, "{}", watched.text());
    assert!(
        watched
            .stdout
            .contains(&format!("workflow {failed} failed")),
        "{}",
        watched.text()
    );
    // Replayed from its start, the stream ends at its end, with the same exit.
    let replayed = stack
        .ctl(&["watch", "--workflow", &failed, "--from", "1"])
        .await;
    assert_eq!(replayed.code, 1, "{}", replayed.text());

    // Still waiting at its approval gate: --timeout gives up with 124 and says it keeps running.
    let gated = detached_id(
        &stack
            .ctl(&[
                "run",
                "customer_onboarding",
                "--input",
                &example("onboarding.json"),
                "--set",
                "batch=wait-test",
                "--detach",
            ])
            .await,
    );
    let timed_out = stack.ctl(&["wait", &gated, "--timeout", "1s"]).await;
    assert_eq!(timed_out.code, 124, "{}", timed_out.text());
    assert!(
        timed_out.stderr.contains("keeps running"),
        "{}",
        timed_out.text()
    );
    // Waiting without a limit, in the background: the approval lets it finish, and wait sees it.
    let waiting = stack.spawn(&["wait", &gated]);
    let watching = stack.spawn(&["watch", "--workflow", &gated]);
    let approved_all = async {
        let deadline = tokio::time::Instant::now() + common::DEADLINE;
        loop {
            let pending = stack.ctl(&["pending", "--json"]).await;
            let list: Value = serde_json::from_str(&pending.stdout).expect("JSON list");
            let ids: Vec<String> = list
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["workflow_id"] == gated.as_str())
                .filter_map(|a| a["id"].as_str().map(str::to_owned))
                .collect();
            for id in &ids {
                let approved = stack.ctl(&["approve", id, "--reason", "wait test"]).await;
                assert_eq!(approved.code, 0, "{}", approved.text());
            }
            let shown = stack.ctl(&["workflow", &gated, "--json"]).await;
            let state: Value = serde_json::from_str(&shown.stdout).expect("JSON");
            if state["state"] == "completed" || state["state"] == "failed" {
                return state["state"].as_str().unwrap_or_default().to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the workflow did not finish: {}",
                shown.text()
            );
            tokio::task::yield_now().await;
        }
    };
    assert_eq!(approved_all.await, "completed");
    let waited = waiting.finish().await;
    assert_eq!(waited.code, 0, "{}", waited.text());
    assert!(waited.stdout.contains("completed"), "{}", waited.text());
    let watched = watching.finish().await;
    assert_eq!(watched.code, 0, "{}", watched.text());
    stack.stop().await;
}

/// Issue 25 item 3: answers that misled. `audit query` showed the oldest matches and said nothing of
/// the rest; `audit report --workflow` of no such workflow said "compliant"; `--orchestrator` at a tool
/// server printed `error: ` and at the HTTP port `error: operation was canceled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_say_what_is_so_newest_matches_unknown_workflows_and_wrong_ports() {
    let stack = Stack::start().await;
    for _ in 0..2 {
        let done = stack
            .ctl(&["run", "order_summary", "--input", &example("orders.json")])
            .await;
        assert_eq!(done.code, 0, "{}", done.text());
    }
    let all = stack
        .ctl(&["audit", "query", "--kind", "call_finished", "--json"])
        .await;
    let all: Value = serde_json::from_str(&all.stdout).expect("JSON list");
    let all = all.as_array().expect("a list").clone();
    assert_eq!(all.len(), 6, "three calls per run");
    let two = stack
        .ctl(&[
            "audit",
            "query",
            "--kind",
            "call_finished",
            "--limit",
            "2",
            "--json",
        ])
        .await;
    assert_eq!(two.code, 0, "{}", two.text());
    let shown: Value = serde_json::from_str(&two.stdout).expect("JSON list");
    assert_eq!(
        shown.as_array().expect("a list")[..],
        all[4..],
        "the newest two: {}",
        two.text()
    );
    assert!(
        two.stderr.contains("showing the newest 2 of 6") && two.stderr.contains("--limit 6"),
        "{}",
        two.text()
    );
    let every = stack
        .ctl(&["audit", "query", "--kind", "call_finished"])
        .await;
    assert!(!every.stderr.contains("showing"), "{}", every.text());

    let report = stack
        .ctl(&["audit", "report", "--workflow", "wf-000000000000"])
        .await;
    assert_eq!(report.code, 1, "{}", report.text());
    assert!(
        report.stderr.contains("not found") && !report.stdout.contains("compliant"),
        "{}",
        report.text()
    );

    let tool_server = stack.tool_server_url(conductor_servers::ServerKind::ALL[0]);
    for url in [tool_server, stack.http_url()] {
        let wrong = output(
            {
                let mut command = ctl_command(&url);
                command.arg("status");
                command
            },
            None,
        )
        .await;
        assert_eq!(wrong.code, 3, "{url}: {}", wrong.text());
        assert!(
            wrong
                .stderr
                .contains(&format!("{url} is not a Conductorio orchestrator"))
                && wrong.stderr.contains("--orchestrator"),
            "{url}: {}",
            wrong.text()
        );
    }
    stack.stop().await;
}

/// `status --json`, parsed.
async fn status_json(stack: &Stack) -> Value {
    let status = stack.ctl(&["status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.text());
    serde_json::from_str(&status.stdout).expect("status as JSON")
}

/// Polls `status --json` until `holds` is true of its downstream list, within the deadline.
async fn wait_for_downstream(stack: &Stack, what: &str, holds: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        let status = status_json(stack).await;
        let downstream = status["downstream"].as_array().cloned().unwrap_or_default();
        if holds(&downstream) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {status:#}"
        );
        tokio::task::yield_now().await;
    }
}

/// The orchestrator's `/metrics` text, by a plain HTTP/1.1 GET.
async fn metrics_text(stack: &Stack) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = stack.http_url().trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("the HTTP port answers");
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("written");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    text
}

/// Issue 25 item 5: with a tool server down, `status` said nothing (only a call failed). The
/// orchestrator checks each downstream server in the background; `status` (text and JSON) and
/// `/metrics` say which one is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_say_which_downstream_server_is_down() {
    let mut stack = Stack::start().await;
    let state_of = |list: &[Value], server: &str| {
        list.iter()
            .find(|d| d["server"] == server)
            .map(|d| d["state"].as_str().unwrap_or_default().to_owned())
    };
    wait_for_downstream(&stack, "all five up", |list| {
        list.len() == 5 && list.iter().all(|d| d["state"] == "up")
    })
    .await;
    let shown = stack.ctl(&["status"]).await;
    assert!(
        shown.stdout.contains("SERVER") && !shown.stdout.contains("WARNING"),
        "{}",
        shown.text()
    );
    stack
        .stop_tool_server(conductor_servers::ServerKind::Notification)
        .await;
    let status = wait_for_downstream(&stack, "notification down", |list| {
        state_of(list, "notification").as_deref() == Some("down")
    })
    .await;
    let down = status["downstream"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["server"] == "notification"))
        .cloned()
        .expect("notification listed");
    assert_eq!(down["transport"], "grpc");
    assert!(
        !down["error"].as_str().unwrap_or_default().is_empty(),
        "{down}"
    );
    assert_eq!(
        state_of(status["downstream"].as_array().unwrap(), "validation").as_deref(),
        Some("up")
    );
    let shown = stack.ctl(&["status"]).await;
    assert!(
        shown
            .stdout
            .contains("WARNING: downstream server(s) unreachable: notification"),
        "{}",
        shown.text()
    );
    let metrics = metrics_text(&stack).await;
    assert!(
        metrics.contains("conductor_downstream_up{server=\"notification\",transport=\"grpc\"} 0")
            && metrics
                .contains("conductor_downstream_up{server=\"validation\",transport=\"grpc\"} 1"),
        "{metrics}"
    );
    stack.stop().await;
}

/// Issue 25 item 7: `demo approval --manual`, then deny, said "expected Succeed" (an internal name)
/// and failed the scenario; a denial is a valid outcome of a gate, narrated as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_demo_approval_denied_is_narrated_as_a_valid_outcome() {
    let stack = Stack::start().await;
    let demo = stack.spawn(&["demo", "approval", "--manual"]);
    let line = demo
        .wait_for_output_line("the approve command", |l| {
            l.contains("conductorctl approve ap-")
        })
        .await;
    let id = approval_id_in(&line);
    let denied = stack
        .ctl(&["deny", &id, "--reason", "not this snapshot"])
        .await;
    assert_eq!(denied.code, 0, "{}", denied.text());
    let done = demo.finish().await;
    assert_eq!(done.code, 0, "{}", done.text());
    assert!(
        done.stdout.contains("a person denied it") && done.stdout.contains("nothing was restored"),
        "{}",
        done.text()
    );
    assert!(!done.text().contains("Succeed"), "{}", done.text());
    stack.stop().await;
}

/// Issue 25 item 7: `config reload` of a broken file doubled its prefix and put every problem on one
/// line; it says each problem on its own line, as `policy check` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_of_a_broken_file_lists_each_problem_on_its_own_line() {
    let stack = Stack::start().await;
    let text = std::fs::read_to_string(&stack.config_path).expect("config");
    let broken = text
        .replacen(
            r#""after": ["validate_data"]"#,
            r#""after": ["validate_dat"]"#,
            1,
        )
        .replacen(
            r#""tools": ["process_data"]"#,
            r#""tools": ["process_dat"]"#,
            1,
        );
    assert_ne!(broken, text, "the test breaks the configuration");
    std::fs::write(&stack.config_path, broken).expect("written");
    let refused = stack.ctl(&["config", "reload"]).await;
    assert_eq!(refused.code, 1, "{}", refused.text());
    let problems: Vec<&str> = refused
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("- "))
        .collect();
    assert!(
        problems.len() >= 2,
        "one problem a line: {}",
        refused.text()
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("rules[0].after[0]: unknown tool \"validate_dat\"")),
        "{}",
        refused.text()
    );
    let first = refused.stderr.lines().next().unwrap_or_default();
    for word in ["invalid", "refused", "configuration"] {
        assert!(
            first.matches(word).count() <= 1,
            "{word:?} said once: {}",
            refused.text()
        );
    }
    stack.stop().await;
}

/// Asks the real binary for completions as fish does (`COMPLETE=fish conductorctl -- WORDS`): one
/// `value<TAB>help` line each.
async fn completions_of(stack: &Stack, words: &[&str]) -> Vec<String> {
    let mut command = ctl_bare();
    command
        .env("COMPLETE", "fish")
        .env("CONDUCTOR_ORCHESTRATOR", &stack.url)
        .arg("--")
        .args(words);
    let done = output(command, None).await;
    assert_eq!(done.code, 0, "{}", done.text());
    done.stdout.lines().map(str::to_owned).collect()
}

/// Issue 25 item 6: shells complete template names, workflow ids and approval ids (clap's dynamic
/// completion engine asks the orchestrator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_complete_template_names_workflow_ids_and_approval_ids() {
    let stack = Stack::start().await;
    let templates = completions_of(&stack, &["conductorctl", "run", ""]).await;
    assert!(
        templates.iter().any(|l| l.starts_with("order_summary\t"))
            && templates
                .iter()
                .any(|l| l.starts_with("customer_onboarding\t")),
        "{templates:?}"
    );
    let gated = detached_id(
        &stack
            .ctl(&[
                "run",
                "customer_onboarding",
                "--input",
                &example("onboarding.json"),
                "--set",
                "batch=completion-test",
                "--detach",
            ])
            .await,
    );
    let workflows = completions_of(&stack, &["conductorctl", "wait", ""]).await;
    assert!(
        workflows
            .iter()
            .any(|l| l.starts_with(&format!("{gated}\t"))),
        "{workflows:?}"
    );
    let watch = completions_of(&stack, &["conductorctl", "watch", "--workflow", ""]).await;
    assert!(watch.iter().any(|l| l.starts_with(&gated)), "{watch:?}");
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let approvals = loop {
        let approvals = completions_of(&stack, &["conductorctl", "approve", ""]).await;
        if approvals.iter().any(|l| l.starts_with("ap-")) {
            break approvals;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no approval id: {approvals:?}"
        );
        tokio::task::yield_now().await;
    };
    assert!(
        approvals.iter().any(|l| l.contains(&gated)),
        "the help names the workflow: {approvals:?}"
    );
    stack.stop().await;
}

/// Issue 25 item 4: in `interactive`, `call` of a template run's next step ignored the step's own
/// arguments, and any explicit ones were taken as the step. The step now runs with its arguments
/// (from the template, the run's input and earlier outputs), and other arguments are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_calls_a_template_step_with_its_own_arguments() {
    let stack = Stack::start().await;
    let orders = r#"[{"id":"o-1","customer_id":"c-1","amount":3},{"id":"o-2","customer_id":"c-1","amount":4}]"#;
    let script = format!(
        "start order_summary {{\"orders\": {orders}}}\ncall validate_data {{\"records\": [], \"schema\": \"order\"}}\ncall validate_data\ncall process_data\nhistory\nquit\n"
    );
    let session = stack.ctl_with_stdin(&["interactive"], &script).await;
    assert_eq!(session.code, 0, "{}", session.text());
    let text = session.text();
    assert!(
        text.contains("validate_data is this template run's next step"),
        "explicit other arguments are refused: {text}"
    );
    assert!(
        text.contains(r#"the step's arguments: {"records":[{"#)
            && text.contains("\"schema\":\"order\""),
        "{text}"
    );
    // The aggregate step got the validated records: its output totals them.
    assert!(text.matches("succeeded").count() >= 2, "{text}");
    let listed = stack.ctl(&["workflows", "--all", "--json"]).await;
    let workflows: Value = serde_json::from_str(&listed.stdout).expect("JSON list");
    let run = workflows
        .as_array()
        .and_then(|l| l.iter().find(|w| w["template"] == "order_summary"))
        .cloned()
        .expect("the template run");
    assert_eq!(run["steps_done"], 2, "{run:#}");
    stack.stop().await;
}
