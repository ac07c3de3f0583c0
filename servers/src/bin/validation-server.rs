//! `validation-server`: runs the validation tool server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use conductor_servers::{ServerKind, ServerOptions, daemon};

const KIND: ServerKind = ServerKind::Validation;

/// Conductorio's validation tool server (gRPC ToolService with health and reflection).
#[derive(Debug, Parser)]
#[command(name = "validation-server", version)]
struct Cli {
    /// The address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, value_name = "ADDR", default_value = KIND.default_listen())]
    listen: String,
    /// The server's data directory, created if missing.
    #[arg(long, value_name = "DIR", default_value = KIND.default_data_dir())]
    data_dir: PathBuf,
    /// A JSON file of named record schemas (`{"name": <JSON Schema>, ...}`) added to the built-in ones.
    #[arg(long, value_name = "FILE")]
    schemas: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = ServerOptions {
        data_dir: cli.data_dir,
        schemas: cli.schemas,
    };
    daemon::run(KIND, &cli.listen, options).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
