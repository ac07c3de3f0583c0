//! Conductorio's tool servers: the processes that do the real work an orchestrated workflow asks for.
//!
//! Five servers share one small library: [`serve()`] puts a [`tool::ToolSet`] behind gRPC with health and
//! reflection and stops it cleanly on a shutdown signal; each server is one module that owns its tools
//! and its files (`validation`, `processing`, `backup`, `notification`, `approval`). The binaries in
//! `src/bin/` only parse flags and call [`daemon::run`]; [`testing`] starts the same servers on port 0
//! for integration tests, here and in other crates.

pub mod approval;
pub mod backup;
pub mod call_log;
mod canonical;
pub mod daemon;
pub mod error;
mod journal;
pub mod notification;
#[cfg(feature = "testing")]
pub mod otlp_receiver;
pub mod processing;
pub mod serve;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tool;
pub mod validation;

use std::fmt;
use std::path::PathBuf;

pub use error::{ServeError, ToolFailure};
pub use serve::serve;

/// Which of the five tool servers a process (or a test) runs: the single switch that picks the tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerKind {
    Validation,
    Processing,
    Backup,
    Notification,
    Approval,
}

impl ServerKind {
    /// Every server, in port order: lets callers start or check them all without listing them again.
    pub const ALL: [ServerKind; 5] = [
        ServerKind::Validation,
        ServerKind::Processing,
        ServerKind::Backup,
        ServerKind::Notification,
        ServerKind::Approval,
    ];

    /// The short name used in logs, data directories and configuration (`"validation"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ServerKind::Validation => "validation",
            ServerKind::Processing => "processing",
            ServerKind::Backup => "backup",
            ServerKind::Notification => "notification",
            ServerKind::Approval => "approval",
        }
    }

    /// The loopback address the binary listens on when no `--listen` is given: fixed ports, so a
    /// default orchestrator configuration finds every server without extra flags.
    pub const fn default_listen(self) -> &'static str {
        match self {
            ServerKind::Validation => "127.0.0.1:50061",
            ServerKind::Processing => "127.0.0.1:50062",
            ServerKind::Backup => "127.0.0.1:50063",
            ServerKind::Notification => "127.0.0.1:50064",
            ServerKind::Approval => "127.0.0.1:50065",
        }
    }

    /// The executable that runs this server, for scripts and process supervisors.
    pub const fn binary_name(self) -> &'static str {
        match self {
            ServerKind::Validation => "validation-server",
            ServerKind::Processing => "processing-server",
            ServerKind::Backup => "backup-server",
            ServerKind::Notification => "notification-server",
            ServerKind::Approval => "approval-server",
        }
    }

    /// The data directory used when no `--data-dir` is given, relative to the working directory.
    pub const fn default_data_dir(self) -> &'static str {
        match self {
            ServerKind::Validation => "./data/validation",
            ServerKind::Processing => "./data/processing",
            ServerKind::Backup => "./data/backup",
            ServerKind::Notification => "./data/notification",
            ServerKind::Approval => "./data/approval",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a server needs besides its listener: where its files live and, for validation, extra schemas.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The server's own directory (backups, outbox, approval ledger); created if missing.
    pub data_dir: PathBuf,
    /// A JSON file of named record schemas (`{"name": <JSON Schema>, ...}`) added to the validation
    /// server's built-in ones; ignored by the other servers.
    pub schemas: Option<PathBuf>,
    /// Serve TLS with this certificate and key (read at start), optionally requiring client
    /// certificates signed by a CA; `None`: plaintext.
    pub tls: Option<conductor_proto::tls::ServerTls>,
    /// Append a line per call to this file as it ends (see [`call_log`]); `None`: no call log.
    pub call_log: Option<PathBuf>,
}

impl ServerOptions {
    /// Options with only a data directory, which is all four of the five servers need.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerOptions {
            data_dir: data_dir.into(),
            schemas: None,
            tls: None,
            call_log: None,
        }
    }
}
