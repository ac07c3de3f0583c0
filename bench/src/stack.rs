//! The system under test as real processes: the five tool server binaries, and orchestrators started
//! on demand against them (each with its own configuration file and audit directory).

use crate::daemons::Daemon;
use crate::scenario::{ServerUrls, orchestrator_config};
use anyhow::Result;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const SERVER_BINARIES: [(&str, &str); 5] = [
    ("validation", "validation-server"),
    ("processing", "processing-server"),
    ("backup", "backup-server"),
    ("notification", "notification-server"),
    ("approval", "approval-server"),
];

/// The five tool servers, running.
pub struct Stack {
    pub bin_dir: PathBuf,
    pub work_dir: PathBuf,
    pub urls: ServerUrls,
    pub servers: Vec<Daemon>,
}

impl Stack {
    /// Starts every tool server on `127.0.0.1:0` with its data under `work_dir/<name>`.
    pub fn start(bin_dir: &Path, work_dir: &Path) -> Result<Stack> {
        let mut servers = Vec::new();
        for (name, binary) in SERVER_BINARIES {
            let data = work_dir.join(name);
            let args = vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                data.display().to_string(),
            ];
            servers.push(Daemon::spawn(name, &bin_dir.join(binary), &args)?);
        }
        let url = |i: usize| servers[i].url(0);
        let urls = ServerUrls {
            validation: url(0),
            processing: url(1),
            backup: url(2),
            notification: url(3),
            approval: url(4),
        };
        Ok(Stack {
            bin_dir: bin_dir.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
            urls,
            servers,
        })
    }

    pub fn server(&self, name: &str) -> Option<&Daemon> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Starts an orchestrator binary named `name` (its config file and `audit-<name>` directory go to
    /// the work directory). Its `addrs` are gRPC then HTTP.
    pub fn orchestrator(&self, name: &str, extra_server: Option<(&str, Value)>) -> Result<Daemon> {
        self.orchestrator_with(name, &orchestrator_config(&self.urls, extra_server))
    }

    /// [`Stack::orchestrator`] with the configuration `config` (JSON text).
    pub fn orchestrator_with(&self, name: &str, config: &str) -> Result<Daemon> {
        let config_file = self.work_dir.join(format!("{name}.json"));
        std::fs::write(&config_file, config)?;
        let audit_dir = self.audit_dir(name);
        let args = vec![
            "--config".into(),
            config_file.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--audit-dir".into(),
            audit_dir.display().to_string(),
        ];
        Daemon::spawn(name, &self.bin_dir.join("orchestrator"), &args)
    }

    pub fn audit_dir(&self, name: &str) -> PathBuf {
        self.work_dir.join(format!("audit-{name}"))
    }
}
