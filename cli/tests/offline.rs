//! `conductorctl` without daemons: offline checks, exit codes and colour rules.

use std::process::Command;

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_conductorctl"))
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CONDUCTOR_ORCHESTRATOR")
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
