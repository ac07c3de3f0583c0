//! The one set-up of the CLI's end-to-end tests: the five real tool servers and a real orchestrator
//! in-process on port 0, configured from the shipped `config/config.json` (with the servers' addresses),
//! and helpers that run the real `conductorctl` binary against them. No sleeps: waits poll a condition
//! with a deadline.

#![allow(dead_code)]

use conductor_orchestrator::testing::RunningOrchestrator;
use conductor_servers::ServerKind;
use conductor_servers::testing::ToolServers;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// Lines a background process printed so far, shared with the task that reads them.
type Lines = Arc<Mutex<Vec<String>>>;

/// Generous: debug builds on a small, shared machine.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The shipped configuration's address of each server, in `ServerKind::ALL` order.
const SHIPPED_URLS: [&str; 5] = [
    "http://127.0.0.1:50061",
    "http://127.0.0.1:50062",
    "http://127.0.0.1:50063",
    "http://127.0.0.1:50064",
    "http://127.0.0.1:50065",
];

/// A file of the repository, e.g. `config/examples/orders.json`.
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// The real binary, with no settings inherited from the developer's environment (nor their contexts
/// file), and no orchestrator address.
pub fn ctl_bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_conductorctl"));
    command
        .env_remove("CONDUCTOR_TOKEN")
        .env_remove("CONDUCTOR_TOKEN_FILE")
        .env_remove("CONDUCTOR_ORCHESTRATOR")
        .env_remove("CONDUCTOR_CONTEXT")
        .env_remove("CONDUCTOR_CA_FILE")
        .env_remove("CONDUCTOR_CERT")
        .env_remove("CONDUCTOR_KEY")
        .env(
            "CONDUCTORCTL_CONFIG",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-contexts-file.json"),
        )
        .env_remove("NO_COLOR")
        .env("USER", "tester")
        .kill_on_drop(true);
    command
}

/// The real binary pointed at `url`, with no settings inherited from the developer's environment.
pub fn ctl_command(url: &str) -> Command {
    let mut command = ctl_bare();
    command.arg("--orchestrator").arg(url);
    command
}

/// What a finished `conductorctl` printed and returned.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn text(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub async fn output(mut command: Command, stdin: Option<&str>) -> Outcome {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("conductorctl starts");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .expect("stdin written");
        drop(pipe);
    }
    let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("conductorctl finished before the deadline")
        .expect("conductorctl ran");
    Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Servers, orchestrator, and the files of one test.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub audit_dir: PathBuf,
    pub url: String,
    orchestrator: Option<RunningOrchestrator>,
    servers: ToolServers,
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(serde_json::json!({})).await
    }

    /// Like [`Stack::start`], with the top-level entries of `extra` (e.g. `listen`, `clients`)
    /// set in the configuration.
    pub async fn start_with(extra: serde_json::Value) -> Stack {
        let servers = conductor_servers::testing::spawn_all().await;
        let mut config = std::fs::read_to_string(repo_file("config/config.json"))
            .expect("config/config.json is readable");
        for (kind, shipped) in ServerKind::ALL.into_iter().zip(SHIPPED_URLS) {
            assert!(
                config.contains(shipped),
                "config/config.json names {shipped}"
            );
            config = config.replace(shipped, &servers.get(kind).url());
        }
        if let Some(extra) = extra.as_object().filter(|e| !e.is_empty()) {
            let mut value: serde_json::Value =
                serde_json::from_str(&config).expect("config/config.json is JSON");
            for (key, entry) in extra {
                value[key] = entry.clone();
            }
            config = value.to_string();
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, &config).expect("config written");
        let audit_dir = dir.path().join("audit_logs");
        let orchestrator =
            conductor_orchestrator::testing::spawn(&config, Some(&config_path), &audit_dir)
                .await
                .expect("orchestrator starts");
        Stack {
            url: orchestrator.grpc_url(),
            dir,
            config_path,
            audit_dir,
            orchestrator: Some(orchestrator),
            servers,
        }
    }

    /// Stops the orchestrator (as SIGTERM would) and starts a new one on the same address, with the same
    /// configuration and audit log: what a client sees across an orchestrator restart.
    pub async fn restart_orchestrator(&mut self) {
        let old = self.orchestrator.take().expect("an orchestrator runs");
        let addr = old.grpc_addr;
        old.stop().await;
        let config = std::fs::read_to_string(&self.config_path).expect("config");
        let audit = conductor_audit::AuditOptions {
            dir: self.audit_dir.clone(),
            ..Default::default()
        };
        let new = conductor_orchestrator::testing::spawn_on(
            &config,
            Some(&self.config_path),
            audit,
            addr,
        )
        .await
        .expect("the orchestrator starts again on the same address");
        self.orchestrator = Some(new);
    }

    /// The running orchestrator's gateway, for what only an in-process test can do (a full disk).
    pub fn gateway(&self) -> &conductor_orchestrator::Gateway {
        &self
            .orchestrator
            .as_ref()
            .expect("an orchestrator runs")
            .gateway
    }

    /// The orchestrator's HTTP address (/mcp, /metrics).
    pub fn http_url(&self) -> String {
        self.orchestrator
            .as_ref()
            .expect("an orchestrator runs")
            .http_url()
    }

    /// Stops one tool server (as a crash would leave it: nothing listens at its address any more).
    pub async fn stop_tool_server(&mut self, kind: ServerKind) {
        let at = self
            .servers
            .servers
            .iter()
            .position(|s| s.kind == kind)
            .expect("the server runs");
        self.servers.servers.remove(at).stop().await;
    }

    /// A tool server's gRPC address.
    pub fn tool_server_url(&self, kind: ServerKind) -> String {
        self.servers.get(kind).url()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = ctl_command(&self.url);
        command.args(args);
        command
    }

    /// Runs `conductorctl ARGS` to its end.
    pub async fn ctl(&self, args: &[&str]) -> Outcome {
        output(self.command(args), None).await
    }

    /// Runs `conductorctl ARGS` with `stdin` as its input.
    pub async fn ctl_with_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        output(self.command(args), Some(stdin)).await
    }

    /// Runs `conductorctl ARGS` with stdout a pipe whose reader has already gone, as after `| head -1`
    /// once it has its line: whatever the command writes meets a closed pipe.
    pub async fn ctl_with_stdout_closed(&self, args: &[&str]) -> Outcome {
        let mut command = self.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("conductorctl starts");
        drop(child.stdout.take());
        let output = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .expect("conductorctl finished before the deadline")
            .expect("conductorctl ran");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `conductorctl ARGS` in the background, collecting its output line by line.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }

    pub async fn stop(self) {
        if let Some(orchestrator) = self.orchestrator {
            orchestrator.stop().await;
        }
        self.servers.stop().await;
    }
}

/// A `conductorctl` running in the background.
pub struct Running {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    changed: Arc<Notify>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    fn start(mut command: Command) -> Running {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("conductorctl starts");
        let changed = Arc::new(Notify::new());
        let stdout: Lines = Arc::new(Mutex::new(Vec::new()));
        let stderr: Lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let stdout_pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
            Box::new(child.stdout.take().expect("stdout piped"));
        let stderr_pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
            Box::new(child.stderr.take().expect("stderr piped"));
        let pipes = [(stdout_pipe, &stdout), (stderr_pipe, &stderr)];
        for (pipe, sink) in pipes {
            let sink = sink.clone();
            let changed = changed.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().unwrap().push(line);
                    changed.notify_waiters();
                }
                changed.notify_waiters();
            }));
        }
        Running {
            child,
            stdout,
            stderr,
            changed,
            readers,
        }
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until a stdout line satisfies `matches`, and returns it.
    pub async fn wait_for_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if let Some(line) = self.stdout.lock().unwrap().iter().find(|l| matches(l)) {
                    return line.clone();
                }
                notified.await;
            }
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(line) => line,
            Err(_) => panic!(
                "no line with {what} before the deadline\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout.lock().unwrap().join("\n"),
                self.stderr.lock().unwrap().join("\n")
            ),
        }
    }

    /// Waits until a line of stdout or stderr satisfies `matches`, and returns it.
    pub async fn wait_for_output_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                for lines in [&self.stdout, &self.stderr] {
                    if let Some(line) = lines.lock().unwrap().iter().find(|l| matches(l)) {
                        return line.clone();
                    }
                }
                notified.await;
            }
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(line) => line,
            Err(_) => panic!(
                "no line with {what} before the deadline\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout.lock().unwrap().join("\n"),
                self.stderr.lock().unwrap().join("\n")
            ),
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub async fn interrupt(&self) {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIGINT sent to {pid}");
    }

    /// Ends the process (for commands that run until stopped, like `watch`) and returns its output.
    pub async fn kill(mut self) -> Outcome {
        let _ = self.child.start_kill();
        self.finish().await
    }

    /// Waits for the process to end.
    pub async fn finish(mut self) -> Outcome {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("conductorctl ended before the deadline")
            .expect("conductorctl ran");
        for reader in self.readers.drain(..) {
            let _ = reader.await;
        }
        Outcome {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout.lock().unwrap().join("\n"),
            stderr: self.stderr.lock().unwrap().join("\n"),
        }
    }
}

/// The approval id in a line like `approve: conductorctl approve ap-123`.
pub fn approval_id_in(line: &str) -> String {
    line.split("conductorctl approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|id| id.trim_matches('`').to_owned())
        .expect("an approval id")
}
