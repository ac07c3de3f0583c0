//! What the five server binaries share as processes: logging to stderr, binding the address from the
//! flags, stopping on SIGINT or SIGTERM, and the exit code.
//!
//! Keeps every `main.rs` down to its flags. It must never write to stdout: logs go to stderr, and the
//! one line scripts and tests read is `listening on <addr>` (logged by `serve` once it is ready),
//! with the address actually bound.

use std::io::IsTerminal;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::{ServerKind, ServerOptions, serve};

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
                    _ = terminate.recv() => tracing::info!("received SIGTERM"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch for SIGTERM; only Ctrl-C will stop the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds `listen`, serves `kind` until a shutdown signal, and returns the process's exit code:
/// success after a clean shutdown, failure (with the reason on stderr) if it could not start.
pub async fn run(kind: ServerKind, listen: &str, options: ServerOptions) -> ExitCode {
    init_tracing();
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "error: {} cannot listen on {listen}: {error}",
                kind.binary_name()
            );
            return ExitCode::FAILURE;
        }
    };
    match serve(kind, listener, options, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}: {error}", kind.binary_name());
            ExitCode::FAILURE
        }
    }
}
