//! `conductor-bench`: parses flags, runs the bench (or one of its helper processes), prints the table.

use anyhow::Result;
use clap::{Parser, Subcommand};
use conductor_bench::recovery::{self, StartKind};
use conductor_bench::suite::{self, Options};
use std::net::SocketAddr;
use std::path::PathBuf;

/// The start-up child (figure 6) runs the orchestrator's own start-up in this process, so it uses
/// the orchestrator daemon's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Conductorio's benchmark: the real daemons on loopback, every figure of issue 9 with its goal.
#[derive(Debug, Parser)]
#[command(
    name = "conductor-bench",
    version,
    after_help = "Examples:\n  cargo build --release -p conductor-orchestrator -p conductor-servers -p conductor-bench\n  cargo run --release -p conductor-bench -- --json bench.json\n  cargo run --release -p conductor-bench -- --quick --only 1,5"
)]
struct Cli {
    /// Also write the report (every figure and the per-round details) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// A small run for a smoke test: same code, small counts; scale-dependent goals are not judged.
    #[arg(long)]
    quick: bool,
    /// Also compare with real peers (FastMCP's proxy, mcp-proxy); see the README for how to get them.
    #[arg(long)]
    peers: bool,
    /// Run only these figures (0–10), e.g. `--only 0,1,5`.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(0..=10))]
    only: Vec<u8>,
    /// Where the daemons' binaries are (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Where to put the run's temporary directory (audit logs, server data); it must be on the disk
    /// whose fdatasync you want to measure (default: the system temporary directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// Processes the bench starts itself.
#[derive(Debug, Subcommand)]
enum Helper {
    /// Times one start-up over an audit log and prints it as JSON (figure 6).
    #[command(hide = true)]
    RecoverChild {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
        #[arg(long, value_enum)]
        kind: StartKind,
    },
    /// Serves the downstream MCP `echo` server of the peers comparison (figure 4).
    #[command(hide = true)]
    ServeEcho {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

fn main() -> Result<()> {
    // rmcp's HTTP client (the MCP load generator) needs a TLS provider, even for http URLs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.helper {
        Some(Helper::RecoverChild { dir, config, kind }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let config = std::fs::read_to_string(config)?;
            runtime.block_on(recovery::child(&dir, &config, kind))
        }
        Some(Helper::ServeEcho { listen }) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(conductor_bench::echo_server::serve(listen))
        }
        None => {
            let options = Options {
                quick: cli.quick,
                peers: cli.peers,
                only: cli.only,
                bin_dir: cli.bin_dir,
                work_dir: cli.work_dir,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(suite::run(&options))?;
            println!("{}", report.table());
            if let Some(path) = cli.json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
                eprintln!("bench: JSON written to {}", path.display());
            }
            let missed = report.missed();
            if !missed.is_empty() {
                eprintln!(
                    "bench: {} figure(s) missed their goal or failed",
                    missed.len()
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
