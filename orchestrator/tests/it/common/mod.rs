//! Shared set-up of the orchestrator's integration tests: the five real tool servers and a real
//! orchestrator, in-process on loopback port 0, talked to over real gRPC.
#![allow(dead_code)]

use conductor_orchestrator::audit::{AuditEvent, AuditRecord};
use conductor_orchestrator::testing::{self, RunningOrchestrator};
use conductor_proto::v1 as pb;
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_servers::ServerKind;
use conductor_servers::testing::{ToolServers, spawn_all};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tonic::transport::Channel;

pub type Client = OrchestratorClient<Channel>;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// config/config.json pointed at the given servers, without fixed listen addresses or audit dir.
pub fn shipped_config(servers: &ToolServers) -> Value {
    let text = std::fs::read_to_string(repo_root().join("config/config.json"))
        .expect("config/config.json");
    let mut config: Value = serde_json::from_str(&text).expect("config/config.json is JSON");
    point_at(&mut config, servers);
    config
}

/// Rewrites every configured gRPC server address to the running test servers (by server name).
pub fn point_at(config: &mut Value, servers: &ToolServers) {
    let obj = config.as_object_mut().expect("config object");
    obj.remove("listen");
    obj.remove("audit");
    for kind in ServerKind::ALL {
        if let Some(server) = obj.get_mut("servers").and_then(|s| s.get_mut(kind.name())) {
            server["grpc"] = json!(servers.get(kind).url());
        }
    }
}

/// A configuration with the shipped servers and tools, but only the given rules and templates.
pub fn config_with(servers: &ToolServers, rules: Value, templates: Value) -> Value {
    let mut config = shipped_config(servers);
    config["rules"] = rules;
    config["templates"] = templates;
    config
}

pub struct Harness {
    pub servers: ToolServers,
    pub orchestrator: RunningOrchestrator,
    pub dir: TempDir,
    pub client: Client,
}

impl Harness {
    /// Starts the tool servers and an orchestrator with the shipped configuration.
    pub async fn shipped() -> Harness {
        let servers = spawn_all().await;
        let config = shipped_config(&servers);
        Harness::with_servers(servers, config).await
    }

    /// Starts an orchestrator with `config` in front of already running servers.
    pub async fn with_servers(servers: ToolServers, config: Value) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.json");
        let text = serde_json::to_string_pretty(&config).expect("config");
        std::fs::write(&config_path, &text).expect("write config");
        let orchestrator = testing::spawn(&text, Some(&config_path), &dir.path().join("audit"))
            .await
            .expect("orchestrator starts");
        let client = connect(&orchestrator.grpc_url()).await;
        Harness {
            servers,
            orchestrator,
            dir,
            client,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub async fn start_workflow(&self, template: &str, input: Value) -> String {
        let request = pb::StartWorkflowRequest {
            template: template.into(),
            input_json: input.to_string(),
            caller: "test".into(),
        };
        self.client
            .clone()
            .start_workflow(request)
            .await
            .expect("start workflow")
            .into_inner()
            .id
    }

    pub async fn call(
        &self,
        workflow: &str,
        tool: &str,
        args: Value,
    ) -> Result<pb::WorkflowCallResponse, tonic::Status> {
        let request = pb::WorkflowCallRequest {
            workflow_id: workflow.into(),
            tool: tool.into(),
            arguments_json: args.to_string(),
        };
        self.client
            .clone()
            .call_tool(request)
            .await
            .map(|r| r.into_inner())
    }

    /// Starts a call in a task of its own (for calls that wait, e.g. at an approval gate).
    pub fn spawn_call(
        &self,
        workflow: &str,
        tool: &str,
        args: Value,
    ) -> tokio::task::JoinHandle<Result<pb::WorkflowCallResponse, tonic::Status>> {
        let mut client = self.client.clone();
        let request = pb::WorkflowCallRequest {
            workflow_id: workflow.into(),
            tool: tool.into(),
            arguments_json: args.to_string(),
        };
        tokio::spawn(async move { client.call_tool(request).await.map(|r| r.into_inner()) })
    }

    /// Every record of the audit log, read from the files.
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        read_audit(&self.orchestrator.audit_dir)
    }

    pub async fn pending(&self) -> Vec<pb::ApprovalInfo> {
        self.client
            .clone()
            .list_pending_approvals(pb::ListPendingApprovalsRequest {})
            .await
            .expect("pending")
            .into_inner()
            .approvals
    }

    /// Waits until an approval is pending for `workflow` and returns it.
    pub async fn wait_pending(&self, workflow: &str) -> pb::ApprovalInfo {
        let workflow = workflow.to_owned();
        wait_until("an approval to be pending", || async {
            self.pending()
                .await
                .into_iter()
                .find(|a| a.workflow_id == workflow)
        })
        .await
    }

    pub async fn workflow(&self, id: &str) -> pb::WorkflowInfo {
        self.client
            .clone()
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: id.into(),
            })
            .await
            .expect("workflow")
            .into_inner()
    }
}

pub async fn connect(url: &str) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    OrchestratorClient::new(channel)
}

pub fn read_audit(dir: &Path) -> Vec<AuditRecord> {
    conductor_audit::read_from::<AuditEvent>(dir, 1)
        .expect("audit dir")
        .collect::<Result<Vec<_>, _>>()
        .expect("audit records")
}

/// Polls `probe` until it yields a value, failing the test after 20 s (a condition, not a sleep).
pub async fn wait_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The decision a denial carries in its status details.
pub fn denial(status: &tonic::Status) -> pb::Decision {
    assert_eq!(
        status.code(),
        tonic::Code::FailedPrecondition,
        "expected a policy denial, got {status:?}"
    );
    conductor_orchestrator::grpc::decision_of(status).expect("the denial carries its decision")
}

pub fn customers() -> Value {
    json!([
        { "id": "c-1", "name": "Ada", "email": "ada@example.com" },
        { "id": "c-2", "name": "Grace", "email": "grace@example.com" }
    ])
}

pub fn result_of(response: &pb::WorkflowCallResponse) -> Value {
    match &response.outcome {
        Some(pb::workflow_call_response::Outcome::ResultJson(text)) => {
            serde_json::from_str(text).expect("result JSON")
        }
        other => panic!("expected a result, got {other:?}"),
    }
}

/// The real `orchestrator` binary, started on loopback port 0 (for crash tests: it can be SIGKILLed).
pub struct OrchestratorProcess {
    pub child: std::process::Child,
    pub url: String,
    lines: std::sync::mpsc::Receiver<String>,
    /// What it logged up to and including its `listening on` line.
    pub early: Vec<String>,
}

/// Starts the real binary with `--listen 127.0.0.1:0 --http 127.0.0.1:0 --audit-dir AUDIT` and `extra`,
/// and reads the bound gRPC address from its `listening on` log line (30 s deadline).
pub fn spawn_orchestrator_binary(
    config: &Path,
    audit: &Path,
    extra: &[&str],
) -> OrchestratorProcess {
    spawn_orchestrator_binary_under(&[], config, audit, extra)
}

/// [`spawn_orchestrator_binary`], run by `wrapper` (a command and its arguments, the binary and
/// its flags appended), e.g. to start it under resource limits.
pub fn spawn_orchestrator_binary_under(
    wrapper: &[&str],
    config: &Path,
    audit: &Path,
    extra: &[&str],
) -> OrchestratorProcess {
    use std::io::BufRead;
    let binary = env!("CARGO_BIN_EXE_orchestrator");
    let mut command = match wrapper {
        [] => std::process::Command::new(binary),
        [program, args @ ..] => {
            let mut command = std::process::Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    let mut child = command
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--audit-dir")
        .arg(audit)
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("CONDUCTOR_LOG_FORMAT")
        .env_remove("CONDUCTOR_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the orchestrator binary");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut early = Vec::new();
    loop {
        let Ok(line) =
            lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the orchestrator did not log `listening on`; its log: {early:#?}");
        };
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned);
        early.push(line);
        if let Some(addr) = addr {
            return OrchestratorProcess {
                child,
                url: format!("http://{addr}"),
                lines,
                early,
            };
        }
    }
}

impl OrchestratorProcess {
    /// Its HTTP listener's URL, read off its `listening on` line.
    pub fn http_url(&self) -> String {
        let line = self.early.last().expect("the listening line");
        let addr = line
            .split(" and ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no HTTP address in {line:?}"));
        format!("http://{addr}")
    }

    /// Sends it `signal` (e.g. "STOP", "CONT") with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to 20 s for a log line containing `needle`; returns it, or every line read
    /// meanwhile as the error.
    pub fn wait_for_log(&mut self, needle: &str) -> Result<String, Vec<String>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            if line.contains(needle) {
                return Ok(line);
            }
            seen.push(line);
        }
        Err(seen)
    }

    /// SIGKILL (no chance to flush anything), then reaps it; returns everything it logged.
    pub fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        let mut log = std::mem::take(&mut self.early);
        // The reader thread ends once the pipe closes: drain what it still has, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            log.push(line);
        }
        log
    }
}

/// A test that fails before it kills its daemon leaves no process behind.
impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every record of the audit log up to the first line that does not read (a torn last line after a
/// crash), without failing on it.
pub fn read_audit_prefix(dir: &Path) -> Vec<AuditRecord> {
    conductor_audit::read_from::<AuditEvent>(dir, 1)
        .expect("audit dir")
        .map_while(Result::ok)
        .collect()
}
