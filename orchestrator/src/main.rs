//! The `orchestrator` daemon: parses flags, loads the configuration, binds the listeners, serves.

use anyhow::Context;
use clap::Parser;
use conductor_audit::AuditOptions;
use conductor_orchestrator::config::Config;
use conductor_orchestrator::telemetry::{self, Telemetry};
use conductor_orchestrator::{Gateway, GatewayOptions, Listeners, mcp, serve};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// Every call allocates and frees a few dozen small objects (ids, JSON values, audit records) across
/// threads; mimalloc's per-thread free lists cost a fraction of glibc malloc's there (see
/// `bench/RESULTS.md`, figures 2 and 6).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Conductorio's orchestrator: policy-checked, audited tool calls for AI agents.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Examples:\n  orchestrator --config config/config.json --listen 127.0.0.1:50051 --http 127.0.0.1:8080\n  orchestrator --stdio --config config/config.json   (MCP over stdin/stdout, for desktop AI applications)"
)]
struct Args {
    /// The configuration file (servers, rules, templates).
    #[arg(long, default_value = "config/config.json", env = "CONDUCTOR_CONFIG")]
    config: PathBuf,
    /// gRPC address of the Orchestrator service (default: the configuration's listen.grpc, else 127.0.0.1:50051).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP address for /metrics and /mcp (default: the configuration's listen.http, else 127.0.0.1:8080).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// The audit log directory (default: the configuration's audit.dir, else audit_logs).
    #[arg(long)]
    audit_dir: Option<PathBuf>,
    /// Start even if the audit chain is broken: the damaged part is moved aside and the valid prefix kept.
    #[arg(long)]
    audit_recover: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Serve MCP over stdin/stdout (what desktop AI applications launch), besides gRPC and HTTP; logs go
    /// to stderr. Stops when the client closes stdin.
    #[arg(long)]
    stdio: bool,
    /// How log lines are written on stderr: text for people, or one JSON object a line for log
    /// shippers. Colour only when stderr is a terminal and NO_COLOR is unset; RUST_LOG filters.
    #[arg(long, value_enum, env = "CONDUCTOR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `tracing` to stderr, filtered by `RUST_LOG` (default `info`): text, coloured only for a person at a
/// terminal (a redirected log file gets no escape codes), or JSON lines. (The spans of calls go to
/// the OTLP exporter, `telemetry`, and never into the log.)
fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = quiet_sessions(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
    );
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            log.with_ansi(colour).with_filter(filter).boxed()
        }
        LogFormat::Json => log.json().with_ansi(false).with_filter(filter).boxed(),
    };
    tracing_subscriber::registry().with(log).init();
}

/// The MCP SDK's session layer logs session ids, which are secrets: it never logs below warn.
fn quiet_sessions(filter: tracing_subscriber::EnvFilter) -> tracing_subscriber::EnvFilter {
    match conductor_orchestrator::auth::QUIET_SESSION_LOGS.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config::load(&args.config);
    // Traces go where the configuration and the OTEL_* variables say; an unusable setting stops
    // the start (it is named), a collector that is not up does not.
    let telemetry = match &config {
        Ok(config) if !args.check => {
            telemetry::resolve(&config.telemetry, |name| std::env::var(name).ok())
                .map_err(anyhow::Error::msg)
                .context("cannot export traces (telemetry)")?
                .map(Telemetry::start)
                .transpose()
                .map_err(anyhow::Error::msg)?
        }
        _ => None,
    };
    init_tracing(args.log_format);
    if let Some(telemetry) = &telemetry {
        let resolved = &telemetry.resolved;
        tracing::info!(
            "exporting traces over OTLP to {} as {:?}, sampling {} of new traces",
            resolved.endpoint,
            resolved.service_name,
            resolved.sampling_ratio
        );
    }
    let config = config.with_context(|| format!("configuration {}", args.config.display()))?;
    if args.check {
        println!(
            "{}: valid (version {})",
            args.config.display(),
            config.version
        );
        return Ok(());
    }
    let grpc_addr = args
        .listen
        .or(config.listen.grpc)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051)));
    let http_addr = args
        .http
        .or(config.listen.http)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let warnings = conductor_orchestrator::auth::startup_check(&config, &[grpc_addr, http_addr])
        .map_err(anyhow::Error::msg)?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let audit_dir = args
        .audit_dir
        .or_else(|| config.audit.dir.clone())
        .unwrap_or_else(|| PathBuf::from("audit_logs"));
    // Certificate files are read before anything is bound, so a bad one is named at once.
    let tls = conductor_orchestrator::tls::ListenerTls::from_config(&config)
        .context("cannot serve TLS (listen.tls)")?;
    let scheme = if tls.is_some() { "TLS" } else { "plaintext" };
    let grpc = TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("cannot listen for gRPC on {grpc_addr}"))?;
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {http_addr}"))?;
    // The addresses as bound (a port 0 is chosen now): advertised to other nodes of a cluster,
    // and bound again by a node that steps down and starts over.
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let audit = AuditOptions {
        dir: audit_dir.clone(),
        max_file_bytes: config.audit.max_file_bytes,
        recover: args.audit_recover,
        store: conductor_orchestrator::cluster::audit_store(
            &config.store,
            conductor_orchestrator::cluster::Listening {
                grpc: Some(grpc_addr),
                http: Some(http_addr),
            },
        ),
        ..AuditOptions::default()
    };
    let audit_options = audit.clone();
    let gateway = Gateway::start(GatewayOptions {
        config,
        config_path: Some(args.config.clone()),
        audit,
    })
    .await
    .map_err(|e| match e {
        // Said of a call, the audit error adds that it did not run; at start there is no call.
        conductor_orchestrator::Error::Audit(audit) => anyhow::Error::new(audit),
        other => anyhow::Error::new(other),
    })
    .with_context(|| format!("cannot start with the audit log in {}", audit_dir.display()))?;
    tracing::info!(
        "listening on {} (gRPC) and {} (HTTP: /metrics, /mcp), {scheme}",
        grpc.local_addr()?,
        http.local_addr()?
    );
    if args.stdio {
        tracing::info!("serving MCP on stdin/stdout");
        let (closed, stdio_closed) = tokio::sync::oneshot::channel::<()>();
        let (stopping, stop_stdio) = tokio::sync::oneshot::channel::<()>();
        let session = gateway.clone();
        tokio::spawn(async move {
            if let Err(e) = mcp::serve_stdio(session, async move {
                let _ = stop_stdio.await;
            })
            .await
            {
                tracing::error!(error = %e, "the MCP stdio session failed");
            }
            tracing::info!("the MCP client closed stdin: stopping");
            let _ = closed.send(());
        });
        let shutdown = async move {
            tokio::select! {
                () = shutdown_signal() => {}
                _ = stdio_closed => {}
            }
            let _ = stopping.send(());
        };
        serve(
            gateway,
            Listeners {
                grpc,
                http: Some(http),
                tls,
            },
            shutdown,
        )
        .await?;
    } else {
        // A node on the PostgreSQL store that lost its lease to another node (it was paused or cut
        // off past the lease) steps down: it stops serving, then starts again as a standby of the
        // node that took over, on the same addresses, from the configuration file as it is now.
        let stop = tokio_util::sync::CancellationToken::new();
        let signalled = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            signalled.cancel();
        });
        let (mut gateway, mut grpc, mut http, mut tls) = (gateway, grpc, http, tls);
        loop {
            let stepped_down = Arc::new(AtomicBool::new(false));
            let shutdown = {
                let (stop, stepped_down, gateway) =
                    (stop.clone(), stepped_down.clone(), gateway.clone());
                async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = lease_lost(&gateway) => stepped_down.store(true, Ordering::Release),
                    }
                }
            };
            serve(
                gateway,
                Listeners {
                    grpc,
                    http: Some(http),
                    tls,
                },
                shutdown,
            )
            .await?;
            if !stepped_down.load(Ordering::Acquire) || stop.is_cancelled() {
                break;
            }
            tracing::warn!(
                "stepped down: another node took the PostgreSQL store's lease (this node was paused or cut off past it); starting again as its standby"
            );
            let config = Config::load(&args.config)
                .with_context(|| format!("configuration {}", args.config.display()))?;
            tls = conductor_orchestrator::tls::ListenerTls::from_config(&config)
                .context("cannot serve TLS (listen.tls)")?;
            grpc = TcpListener::bind(grpc_addr)
                .await
                .with_context(|| format!("cannot listen for gRPC on {grpc_addr} again"))?;
            http = TcpListener::bind(http_addr)
                .await
                .with_context(|| format!("cannot listen for HTTP on {http_addr} again"))?;
            gateway = Gateway::start(GatewayOptions {
                config,
                config_path: Some(args.config.clone()),
                audit: audit_options.clone(),
            })
            .await
            .context("cannot start again as a standby")?;
        }
    }
    if let Some(telemetry) = &telemetry {
        telemetry.flush(std::time::Duration::from_secs(2)).await;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves once this node's lease on the PostgreSQL store was taken over by another node; never
/// for a node on files.
async fn lease_lost(gateway: &Gateway) {
    if gateway.audit().holds_lease().is_none() && gateway.standby().is_none() {
        return std::future::pending().await;
    }
    loop {
        if gateway.audit().holds_lease() == Some(false) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT: stopping"),
        () = term => tracing::info!("SIGTERM: stopping"),
    }
}
