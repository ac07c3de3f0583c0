//! What the five server binaries share as processes: logging to stderr, binding the address from the
//! flags, stopping on SIGINT or SIGTERM, and the exit code.
//!
//! Keeps every `main.rs` down to its flags. It must never write to stdout: logs go to stderr, and the
//! one line scripts and tests read is `listening on <addr>` (logged by `serve` once it is ready),
//! with the address actually bound.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::{ServerKind, ServerOptions, serve};

/// The flags every tool server takes; defaults depend on the server, so they are set at run time.
#[derive(Debug, Parser)]
#[command(version)]
pub struct DaemonArgs {
    /// The address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The server's data directory, created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// A JSON file of named record schemas (`{"name": <JSON Schema>, ...}`) added to the built-in ones
    /// (validation server only).
    #[arg(long, value_name = "FILE")]
    pub schemas: Option<PathBuf>,
    /// Serve TLS with this PEM certificate (chain), with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA of this PEM bundle (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Append one JSON line per call to this file as the call ends: tool, ids, start and end (µs
    /// since the Unix epoch) and outcome; created if missing.
    #[arg(long, value_name = "FILE")]
    pub call_log: Option<PathBuf>,
    /// How log lines are written on stderr: text for people, or one JSON object a line for log
    /// shippers. Colour only when stderr is a terminal and NO_COLOR is unset; RUST_LOG filters.
    #[arg(
        long,
        value_enum,
        env = "CONDUCTOR_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
}

/// How a daemon writes its log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl DaemonArgs {
    /// The command line of `kind`'s binary: its name, description and defaults.
    pub fn command(kind: ServerKind) -> clap::Command {
        let command = <Self as CommandFactory>::command()
            .name(kind.binary_name())
            .about(format!(
                "Conductorio's {} tool server (gRPC ToolService with health and reflection).",
                kind.name()
            ))
            .mut_arg("listen", |a| {
                a.default_value(kind.default_listen()).required(false)
            })
            .mut_arg("data_dir", |a| {
                a.default_value(kind.default_data_dir()).required(false)
            });
        if kind == ServerKind::Validation {
            command
        } else {
            command.mut_arg("schemas", |a| a.hide(true))
        }
    }
}

/// The whole `main` of a tool server binary: parse the flags, serve until SIGINT or SIGTERM.
pub async fn main(kind: ServerKind) -> ExitCode {
    let matches = DaemonArgs::command(kind).get_matches();
    let args = match DaemonArgs::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(error) => error.exit(),
    };
    if args.schemas.is_some() && kind != ServerKind::Validation {
        eprintln!("error: --schemas is for the validation server only");
        return ExitCode::from(2);
    }
    let tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert_file, key_file)| conductor_proto::tls::ServerTls {
            cert_file,
            key_file,
            client_certs: match args.tls_client_ca {
                Some(_) => conductor_proto::tls::ClientCerts::Required,
                None => conductor_proto::tls::ClientCerts::None,
            },
            client_ca_file: args.tls_client_ca,
        });
    let options = ServerOptions {
        data_dir: args.data_dir,
        schemas: args.schemas,
        tls,
        call_log: args.call_log,
    };
    let telemetry = match crate::telemetry::from_env(&format!("{}-server", kind.name())) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: cannot export traces: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing_with(args.log_format, telemetry.as_ref());
    let code = run(kind, &args.listen, options).await;
    if let Some(provider) = telemetry {
        // Sends what is still queued (bounded: the exporter's own time-out).
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    code
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`), as text (coloured only
/// on a terminal without `NO_COLOR`) or as JSON lines.
pub fn init_tracing(format: LogFormat) {
    init_tracing_with(format, None);
}

/// [`init_tracing`], and the call spans to `telemetry`'s exporter when there is one.
pub fn init_tracing_with(
    format: LogFormat,
    telemetry: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(
            format!("{}=off", crate::telemetry::TARGET)
                .parse()
                .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into()),
        );
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => log
            .with_ansi(colour_on_stderr())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => log.json().with_ansi(false).with_filter(filter).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(telemetry.map(crate::telemetry::layer))
        .try_init();
}

/// Colour in logs only for a person at a terminal (no-color.org: a non-empty `NO_COLOR` turns it off).
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_has_consistent_flags_and_its_own_defaults() {
        for kind in ServerKind::ALL {
            let command = DaemonArgs::command(kind);
            command.clone().debug_assert();
            let matches = command
                .try_get_matches_from([kind.binary_name()])
                .expect("defaults parse");
            let args = DaemonArgs::from_arg_matches(&matches).expect("args");
            assert_eq!(args.listen, kind.default_listen());
            assert_eq!(args.data_dir, PathBuf::from(kind.default_data_dir()));
        }
    }

    #[test]
    fn tls_flags_come_as_a_certificate_with_its_key() {
        let command = DaemonArgs::command(ServerKind::Backup);
        let alone = command
            .clone()
            .try_get_matches_from(["backup-server", "--tls-cert", "s.pem"])
            .expect_err("a certificate without its key");
        assert!(alone.to_string().contains("--tls-key"), "{alone}");
        let ca_only = command
            .clone()
            .try_get_matches_from(["backup-server", "--tls-client-ca", "ca.pem"])
            .expect_err("a client CA without a certificate");
        assert!(ca_only.to_string().contains("--tls-cert"), "{ca_only}");
        let matches = command
            .try_get_matches_from([
                "backup-server",
                "--tls-cert",
                "s.pem",
                "--tls-key",
                "s.key",
                "--tls-client-ca",
                "ca.pem",
            ])
            .expect("the three together");
        let args = DaemonArgs::from_arg_matches(&matches).expect("args");
        assert_eq!(args.tls_client_ca, Some(PathBuf::from("ca.pem")));
    }
}
