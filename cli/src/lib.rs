//! conductorctl, the command line of Conductorio: run templates and follow them live, watch the
//! dashboard, decide approvals, read and verify the audit log, check configurations, and run the demos.
//!
//! One module per command group; [`client`] owns the connection and the meaning of failures (exit codes),
//! [`output`] and [`present`] own how things look. The binary (`main.rs`) only calls [`main`].

#[macro_use]
pub mod output;
pub mod approval;
pub mod audit;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod complete;
pub mod context;
pub mod control;
pub mod dashboard;
pub mod demo;
pub mod docs;
pub mod interactive;
pub mod policy;
pub mod present;
pub mod progress;
pub mod run;
pub mod status;
pub mod tls;
pub mod wait;
pub mod watch;

use clap::FromArgMatches;
use clap::parser::ValueSource;
use cli::{Cli, Command, ConfigCommand};
use std::process::ExitCode;

/// Parses the command line (usage errors exit 2, as clap does), runs the command, and maps its result
/// to an exit code: 0 ok, 1 failure or denied, 3 cannot reach the orchestrator, 124 timed out (`wait`),
/// 130 interrupted.
pub fn main() -> ExitCode {
    // `COMPLETE=bash conductorctl …`: the shell asks for completions (or their registration).
    clap_complete::CompleteEnv::with_factory(cli::command).complete();
    let cli = parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match execute(cli).await {
            Err(error) => Err(client::not_an_orchestrator(error).await),
            ok => ok,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => client::report_error(&error),
    }
}

/// The command line, or clap's usage error (exit 2). `policy check` works offline, so a connection
/// flag given to it is a mistake worth saying rather than ignoring.
fn parse() -> Cli {
    let mut command = cli::command();
    let matches = command.get_matches_mut();
    let offline = matches
        .subcommand_matches("policy")
        .and_then(|policy| policy.subcommand_matches("check"));
    if let Some(check) = offline {
        for flag in ["orchestrator", "context", "token"] {
            if check.value_source(flag) == Some(ValueSource::CommandLine) {
                command
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!("--{flag} does not apply to `policy check`, which works offline"),
                    )
                    .exit();
            }
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit())
}

/// Runs one parsed command.
pub async fn execute(cli: Cli) -> anyhow::Result<()> {
    // Offline commands do not read the contexts file: a broken one must not stop them.
    match cli.command {
        Command::Policy(command) => return policy::policy(&cli.global, command),
        Command::Completions(args) => return docs::completions(args.shell),
        Command::Man => return docs::man(),
        // The contexts commands mend a stale current_context, so they must not need a good one.
        Command::Config(ConfigCommand::GetContexts) => {
            return Ok(context::get_contexts(&cli.global)?);
        }
        Command::Config(ConfigCommand::UseContext(args)) => {
            return Ok(context::use_context(&args.name)?);
        }
        _ => {}
    }
    let global = &context::apply(cli.global)?;
    match cli.command {
        Command::Run(args) => run::run(global, args).await,
        Command::Watch(args) => watch::watch(global, args).await,
        Command::Approve(args) => approval::decide(global, args, true).await,
        Command::Deny(args) => approval::decide(global, args, false).await,
        Command::Pending => approval::pending(global).await,
        Command::Status => status::status(global).await,
        Command::Cluster(command) => cluster::cluster(global, command).await,
        Command::Templates(args) => status::templates(global, args).await,
        Command::Tools => status::tools(global).await,
        Command::Workflows(args) => status::workflows(global, args).await,
        Command::Workflow(args) => status::workflow(global, args).await,
        Command::Call(args) => control::call(global, args).await,
        Command::Wait(args) => wait::wait(global, args).await,
        Command::Cancel(args) => control::cancel(global, args).await,
        Command::Config(ConfigCommand::Reload) => control::reload(global).await,
        Command::Config(ConfigCommand::GetContexts | ConfigCommand::UseContext(_)) => Ok(()),
        Command::Audit(command) => audit::audit(global, command).await,
        Command::Demo(args) => demo::demo(global, args).await,
        Command::Interactive(args) => interactive::interactive(global, args).await,
        Command::Policy(_) | Command::Completions(_) | Command::Man => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::cli::Cli;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
        super::cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        fn check(command: &clap::Command, path: &str) {
            for sub in command.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(
                    help.contains("conductorctl") || help.contains("conductor>"),
                    "{name} has no example in --help"
                );
                check(sub, &name);
            }
        }
        check(&Cli::command(), "conductorctl");
    }
}
