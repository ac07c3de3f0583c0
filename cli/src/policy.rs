//! `policy check FILE`: the orchestrator's own configuration checks, run offline (no daemon needed).
//!
//! It calls the same `Config::load` the orchestrator starts with, so a file that passes here is a file
//! the orchestrator accepts; each problem is printed with its JSON path.

use crate::cli::{CheckArgs, Global, PolicyCommand};
use crate::client::CliError;
use crate::output::{Out, print_json};
use conductor_core::config::{Config, ConfigError, Credential, CredentialSummary, Transport};
use serde_json::json;

/// The credential of each server reached over HTTP (`servers.NAME.auth`): its mode and whether each
/// secret is present where it is configured to come from, never its value.
fn credentials(config: &Config) -> Vec<(&str, CredentialSummary)> {
    config
        .servers
        .values()
        .filter(|s| matches!(s.transport, Transport::McpHttp { .. }))
        .map(|s| (s.name.as_str(), Credential::summary(s.auth.as_ref())))
        .collect()
}

pub fn policy(global: &Global, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check(args) => check(global, &args),
    }
}

fn check(global: &Global, args: &CheckArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let file = args.file.display().to_string();
    match Config::load(&args.file) {
        Ok(config) => {
            if out.json {
                print_json(&json!({
                    "file": file, "ok": true, "config_version": config.version,
                    "servers": config.servers.len(), "tools": config.tools.len(), "rules": config.rules.len(),
                    "templates": config.templates.keys().collect::<Vec<_>>(), "problems": [],
                    "credentials": credentials(&config).into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                }));
            } else {
                outln!("{} {file} (version {})", out.ok("ok:"), config.version);
                outln!(
                    "  {} server(s), {} tool(s), {} rule(s), {} template(s)",
                    config.servers.len(),
                    config.tools.len(),
                    config.rules.len(),
                    config.templates.len()
                );
                for rule in &config.rules {
                    outln!("  rule {} ({}): {}", rule.id, rule.kind, rule.description);
                }
                for (server, summary) in credentials(&config) {
                    let missing = summary.secrets.iter().any(|s| !s.present);
                    let mark = if missing {
                        out.bad("credential")
                    } else {
                        "credential".into()
                    };
                    outln!("  {mark} {server}: {summary}");
                }
                for tool in config.tools.keys() {
                    let labels = config.policies.labels_of(tool);
                    if !labels.is_empty() {
                        outln!("  label {tool}: {}", labels.join(", "));
                    }
                }
            }
            Ok(())
        }
        Err(ConfigError::Read { source, .. }) => {
            Err(CliError::Failed(format!("cannot read {file}: {source}")).into())
        }
        Err(ConfigError::Invalid { problems }) => {
            if out.json {
                let list: Vec<_> = problems
                    .iter()
                    .map(|p| json!({"path": p.path, "message": p.message}))
                    .collect();
                print_json(&json!({"file": file, "ok": false, "problems": list}));
            } else {
                outln!(
                    "{} {file}: {} problem(s)",
                    out.bad("invalid:"),
                    problems.len()
                );
                for problem in &problems {
                    outln!("  {}: {}", out.bold(&problem.path), problem.message);
                }
            }
            Err(CliError::Reported.into())
        }
    }
}
