//! `conductorctl` without daemons: offline checks, exit codes and colour rules.

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_conductorctl"))
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CONDUCTOR_ORCHESTRATOR")
        .env_remove("CONDUCTOR_CONTEXT")
        .env(
            "CONDUCTORCTL_CONFIG",
            format!("{}/no-contexts-file.json", env!("CARGO_TARGET_TMPDIR")),
        )
        .output()
        .expect("conductorctl runs")
}

fn repo_file(relative: &str) -> String {
    format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"))
}

fn bad_config() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(repo_file("config/config.json"))
        .unwrap()
        .replace(
            r#""after": ["validate_data"]"#,
            r#""after": ["validate_dat"]"#,
        );
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn policy_check_accepts_the_shipped_configuration() {
    let out = ctl(&["policy", "check", &repo_file("config/config.json")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok:"));
}

#[test]
fn policy_check_reports_problems_with_their_json_path() {
    let file = bad_config();
    let out = ctl(&["policy", "check", &file.path().display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("rules[0].after[0]") && stdout.contains("validate_dat"),
        "{stdout}"
    );
    let json = ctl(&[
        "policy",
        "check",
        &file.path().display().to_string(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["problems"][0]["path"], "rules[0].after[0]");
}

#[test]
fn nothing_listening_exits_3_and_says_how_to_start_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = ctl(&[
        "--orchestrator",
        &format!("http://127.0.0.1:{port}"),
        "status",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("./run.sh --keep") && stderr.contains("orchestrator --config"),
        "{stderr}"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ctl(&["run"]).status.code(), Some(2));
    assert_eq!(ctl(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn colour_only_when_asked_and_never_with_no_color() {
    let file = bad_config();
    let path = file.path().display().to_string();
    let plain = ctl(&["policy", "check", &path]);
    assert!(
        !plain.stdout.contains(&0x1b),
        "no colour when stdout is not a terminal"
    );
    let forced = ctl(&["--color", "always", "policy", "check", &path]);
    assert!(forced.stdout.contains(&0x1b), "colour when forced");
    let no_color = Command::new(env!("CARGO_BIN_EXE_conductorctl"))
        .args(["--color", "always", "policy", "check", &path])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!no_color.stdout.contains(&0x1b), "NO_COLOR wins");
}

#[test]
fn every_command_has_help_with_an_example() {
    for command in [
        &["run"][..],
        &["watch"],
        &["approve"],
        &["audit", "verify"],
        &["policy", "check"],
        &["demo"],
        &["interactive"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let out = ctl(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout.contains("Example"), "{command:?}: {stdout}");
    }
}

/// Every command path of the grammar (`[]`, `["audit"]`, `["audit", "tail"]`, ...).
fn command_paths(command: &clap::Command, path: Vec<String>, paths: &mut Vec<Vec<String>>) {
    paths.push(path.clone());
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let mut deeper = path.clone();
        deeper.push(sub.get_name().to_owned());
        command_paths(sub, deeper, paths);
    }
}

/// The whole `--help` of every command, as users see it: a changed flag or text is a reviewed diff.
/// After an intended change: `SNAPSHOTS=overwrite cargo test -p conductorctl --test offline`.
#[test]
fn help_of_every_command_matches_the_snapshot() {
    let mut paths = Vec::new();
    command_paths(&conductorctl::cli::command(), Vec::new(), &mut paths);
    let mut text = String::new();
    for path in paths {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = ctl(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        text.push_str(&format!(
            "$ conductorctl {}\n{}\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim_end()
        ));
    }
    snapbox::assert_data_eq!(text, snapbox::file!["snapshots/help.txt"].raw());
}

#[test]
fn every_subcommand_has_a_description_and_every_argument_too() {
    fn check(command: &clap::Command, path: &str) {
        for arg in command.get_arguments().filter(|a| !a.is_hide_set()) {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) {
                continue;
            }
            assert!(arg.get_help().is_some(), "{path} {id} has no description");
        }
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{path} {}", sub.get_name());
            assert!(sub.get_about().is_some(), "{name} has no description");
            check(sub, &name);
        }
    }
    check(&conductorctl::cli::command(), "conductorctl");
}

#[test]
fn usage_lines_do_not_make_global_flags_look_required() {
    let out = ctl(&["approve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Usage: conductorctl approve [OPTIONS] <ID>"),
        "{help}"
    );
    assert!(help.contains("Global options:"), "{help}");
}

#[test]
fn policy_check_refuses_connection_flags_it_would_ignore() {
    let out = ctl(&[
        "policy",
        "check",
        &repo_file("config/config.json"),
        "--orchestrator",
        "127.0.0.1:1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("works offline"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_grammar() {
    for shell in ["bash", "zsh", "fish"] {
        let out = ctl(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("conductorctl")
                && script.contains("approve")
                && script.contains("orchestrator"),
            "{shell}: {script}"
        );
    }
    let out = ctl(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH conductorctl"),
        "{page}"
    );
    assert!(page.contains("approve"), "{page}");
    // Issue 25 item 7: NAME said the name twice, pages that do not exist were listed, and the
    // environment was not described.
    let name = page
        .split(".SH NAME")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .unwrap_or_default();
    assert!(
        name.starts_with("conductorctl \\- run, watch"),
        "NAME: {name:?}"
    );
    assert!(
        !page.contains("conductorctl\\-run(1)") && !page.contains("(1)\n"),
        "{page}"
    );
    assert!(
        page.contains(".SH ENVIRONMENT") && page.contains("CONDUCTOR_TOKEN_FILE"),
        "{page}"
    );
    assert!(page.contains("conductorctl wait"), "{page}");
}

/// What `policy check` says of the shipped configuration (the path and version vary).
#[test]
fn policy_check_output_matches_the_snapshot() {
    let out = ctl(&["policy", "check", &repo_file("config/config.json")]);
    assert_eq!(out.status.code(), Some(0));
    snapbox::assert_data_eq!(
        String::from_utf8_lossy(&out.stdout).into_owned(),
        snapbox::file!["snapshots/policy-check.txt"]
    );
}

/// Issue 25 item 6: usage errors exit 2 as documented, not 1, and before any connection is tried
/// (nothing listens at the address given).
#[test]
fn usage_errors_exit_2_before_connecting() {
    let unused = "127.0.0.1:9";
    for args in [
        vec!["call", "validate_data", "--args", "{bad"],
        vec!["call", "validate_data", "--args", "[1]"],
        vec!["run", "order_summary", "--input", "/nonexistent/input.json"],
        vec!["audit", "query", "--since", "yesterday"],
        vec!["audit", "query", "--trace", "not-a-trace-id"],
        vec!["audit", "report", "--until", "tomorrow"],
        vec!["--context", "nope", "status"],
    ] {
        let mut all = vec!["--orchestrator", unused];
        all.extend(&args);
        let out = ctl(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && !stderr.contains("cannot reach"),
            "{args:?}: {stderr}"
        );
    }
}

fn ctl_with_contexts(file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_conductorctl"))
        .args(args)
        .env_remove("CONDUCTOR_ORCHESTRATOR")
        .env_remove("CONDUCTOR_CONTEXT")
        .env("CONDUCTORCTL_CONFIG", file)
        .env("NO_COLOR", "1")
        .output()
        .expect("conductorctl runs")
}

/// Issue 25 items 3 and 6: a current_context that names no context was silently replaced by the
/// default address; `config get-contexts` and `use-context` list and choose contexts, as kubectl's do.
#[test]
fn contexts_are_listed_and_chosen_and_a_stale_current_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        r#"{"current_context": "gone", "contexts": {"local": {"orchestrator": "127.0.0.1:9"}, "prod": {"orchestrator": "127.0.0.1:8"}}}"#,
    )
    .unwrap();
    let stale = ctl_with_contexts(&file, &["status"]);
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert_eq!(stale.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("current_context \"gone\"") && stderr.contains("use-context"),
        "{stderr}"
    );
    let listed = ctl_with_contexts(&file, &["config", "get-contexts"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("local") && stdout.contains("127.0.0.1:8") && !stdout.contains('*'),
        "{stdout}"
    );
    let unknown = ctl_with_contexts(&file, &["config", "use-context", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    let chosen = ctl_with_contexts(&file, &["config", "use-context", "prod"]);
    assert_eq!(
        chosen.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&chosen.stderr)
    );
    let listed = ctl_with_contexts(&file, &["config", "get-contexts"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with('*') && l.contains("prod")),
        "{stdout}"
    );
    // The chosen context's address is used: nothing listens there, so the error names it.
    let status = ctl_with_contexts(&file, &["status"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&status.stderr).contains("127.0.0.1:8"));
}

/// `policy check` says which credential each HTTP MCP server is sent and whether each secret is
/// there, never the secret itself (issue 27).
#[test]
fn policy_check_names_each_servers_credential_and_whether_its_secret_is_present() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "oauth-client-secret-91ab\n").unwrap();
    let config = serde_json::json!({
        "servers": {
            "tickets": {
                "mcp_url": "https://tickets.example/mcp", "tools": ["open"],
                "auth": { "type": "oauth_client_credentials", "token_url": "https://idp.example/token",
                          "client_id": "gw", "client_secret": { "token_file": secret_file } }
            },
            "wiki": {
                "mcp_url": "https://wiki.example/mcp", "tools": ["read"],
                "auth": { "type": "bearer", "token": { "token_env": "CONDUCTORCTL_TEST_UNSET_27" } }
            },
            "open": { "mcp_url": "http://127.0.0.1:9/mcp", "tools": ["look"] }
        }
    });
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let path = path.display().to_string();
    let out = ctl(&["policy", "check", &path]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("credential tickets: oauth_client_credentials: servers.tickets.auth.client_secret from file")
            && stdout.contains("(present)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("credential wiki: bearer: servers.wiki.auth.token from environment variable CONDUCTORCTL_TEST_UNSET_27 (MISSING"),
        "{stdout}"
    );
    assert!(stdout.contains("credential open: none"), "{stdout}");
    assert!(!stdout.contains("oauth-client-secret-91ab"), "{stdout}");
    let json = ctl(&["policy", "check", &path, "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        report["credentials"]["tickets"]["mode"],
        "oauth_client_credentials"
    );
    assert_eq!(
        report["credentials"]["tickets"]["secrets"][0]["present"],
        true
    );
    assert_eq!(
        report["credentials"]["wiki"]["secrets"][0]["present"],
        false
    );
    assert!(!String::from_utf8_lossy(&json.stdout).contains("oauth-client-secret-91ab"));
}
