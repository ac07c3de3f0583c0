//! TLS end to end (issue 27): the orchestrator's gRPC and HTTP listeners over TLS with tonic, raw
//! HTTP/1.1 and the official Python MCP SDK; a certificate rotated on disk served without a restart;
//! client certificates mapped to configured identities, an unknown CA refused at the handshake; gRPC
//! tool servers over TLS and mutual TLS, a wrong CA named; no plaintext listener beyond loopback.
//! Every certificate comes from CAs the tests make (`test_ca`), as files in a temporary directory.

use crate::common::{self, wait_until};
use crate::mcp_support::{self, DEADLINE};
use crate::test_ca::{CertFiles, TestCa};
use conductor_orchestrator::testing::{self, RunningOrchestrator};
use conductor_proto::tls::ClientTls;
use conductor_proto::v1 as pb;
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_servers::testing::{ToolServers, spawn_all, spawn_tls};
use conductor_servers::{ServerKind, ServerOptions};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

/// `listen.tls` with `cert`, and client certificates of `client_ca` when given.
fn listen_tls(cert: &CertFiles, client_ca: Option<(&Path, &str)>) -> Value {
    let mut tls = json!({ "cert_file": cert.cert_file, "key_file": cert.key_file });
    if let Some((ca, mode)) = client_ca {
        tls["client_ca_file"] = json!(ca);
        tls["client_certs"] = json!(mode);
    }
    json!({ "tls": tls })
}

async fn start(config: &Value, dir: &TempDir) -> RunningOrchestrator {
    testing::spawn(&config.to_string(), None, &dir.path().join("audit"))
        .await
        .expect("the orchestrator starts")
}

/// A gRPC client of the orchestrator over TLS as `tls` says.
async fn grpc_client(
    orchestrator: &RunningOrchestrator,
    tls: &ClientTls,
) -> Result<OrchestratorClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(orchestrator.grpc_url())?
        .tls_config(tls.tonic_config().expect("client TLS settings"))?
        .connect()
        .await?;
    Ok(OrchestratorClient::new(channel))
}

async fn tool_names(
    client: &mut OrchestratorClient<Channel>,
) -> Result<Vec<String>, tonic::Status> {
    let tools = client
        .list_tools(pb::ListToolsRequest {})
        .await?
        .into_inner();
    let mut names: Vec<String> = tools.tools.into_iter().map(|t| t.name).collect();
    names.sort();
    Ok(names)
}

/// A TLS handshake with `addr` as `tls` says: the common name of the certificate the server
/// presented, or the handshake's error.
async fn presented_name(addr: std::net::SocketAddr, tls: &ClientTls) -> Result<String, String> {
    let config = Arc::new(tls.rustls_config().expect("client TLS settings"));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let chain = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    Ok(conductor_proto::tls::common_name(&chain[0]).expect("a common name"))
}

/// `GET path` over TLS with HTTP/1.1; the whole answer, or how the connection was refused.
async fn https_get(addr: std::net::SocketAddr, tls: &ClientTls, path: &str) -> String {
    let config = Arc::new(tls.rustls_config().expect("client TLS settings"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut stream = match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(stream) => stream,
        Err(e) => return format!("handshake refused: {e}"),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return format!("send refused: {e}");
    }
    let mut answer = String::new();
    if let Err(e) = stream.read_to_string(&mut answer).await {
        answer.push_str(&format!("read refused: {e}"));
    }
    answer
}

/// The official Python MCP SDK over https against `url`, trusting `ca`, with a client certificate.
async fn python_probe(
    url: &str,
    ca: &Path,
    client: Option<&CertFiles>,
    call: Option<&str>,
) -> Value {
    let mut args = vec![
        mcp_support::script("mcp_tls_probe.py")
            .display()
            .to_string(),
        "--url".into(),
        format!("{url}/mcp"),
        "--ca".into(),
        ca.display().to_string(),
    ];
    if let Some(client) = client {
        args.extend([
            "--cert".into(),
            client.cert_file.display().to_string(),
            "--key".into(),
            client.key_file.display().to_string(),
        ]);
    }
    if let Some(tool) = call {
        args.extend(["--call".into(), tool.into()]);
    }
    mcp_support::run_python(&args).await
}

fn trusting(ca: &TestCa) -> ClientTls {
    ClientTls {
        ca_file: Some(ca.ca_file.clone()),
        ..ClientTls::default()
    }
}

#[tokio::test]
async fn both_listeners_serve_tls_to_tonic_raw_http_and_the_python_sdk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "gateway");
    let cert = ca.server("gateway");
    let servers = spawn_all().await;
    let mut config = common::shipped_config(&servers);
    config["listen"] = listen_tls(&cert, None);
    let orchestrator = start(&config, &dir).await;
    assert!(
        orchestrator.grpc_url().starts_with("https://"),
        "{}",
        orchestrator.grpc_url()
    );

    let mut client = grpc_client(&orchestrator, &trusting(&ca))
        .await
        .expect("gRPC over TLS");
    let names = tool_names(&mut client).await.expect("ListTools over TLS");
    assert!(names.contains(&"validate_data".to_owned()), "{names:?}");

    // Plaintext gets no answer from a TLS listener.
    let plain = format!("http://{}", orchestrator.grpc_addr);
    let plain = async {
        let channel = Endpoint::from_shared(plain)?.connect().await?;
        Ok::<_, Box<dyn std::error::Error>>(
            OrchestratorClient::new(channel)
                .list_tools(pb::ListToolsRequest {})
                .await?,
        )
    };
    assert!(
        plain.await.is_err(),
        "a plaintext gRPC client is not served"
    );
    // A client that trusts another CA refuses the orchestrator's certificate.
    let other = TestCa::new(dir.path(), "other");
    let refused = grpc_client(&orchestrator, &trusting(&other)).await;
    let refused = match refused {
        Err(e) => format!("{e:?}"),
        Ok(mut c) => format!("{:?}", tool_names(&mut c).await.expect_err("untrusted")),
    };
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    let health = https_get(orchestrator.http_addr, &trusting(&ca), "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = https_get(orchestrator.http_addr, &trusting(&ca), "/metrics").await;
    assert!(metrics.contains("conductor_audit_writable 1"), "{metrics}");

    let summary = python_probe(
        &orchestrator.http_url(),
        &ca.ca_file,
        None,
        Some("list_schemas"),
    )
    .await;
    let tools: Vec<&str> = summary["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"validate_data"), "{summary}");
    assert_eq!(summary["call"]["is_error"], json!(false), "{summary}");
    assert!(
        summary["call"]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("customer"),
        "{summary}"
    );
    orchestrator.stop().await;
    servers.stop().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "rotating");
    let first = ca.server_named("gateway", "gateway-first");
    let servers = spawn_all().await;
    let mut config = common::shipped_config(&servers);
    config["listen"] = listen_tls(&first, None);
    let orchestrator = start(&config, &dir).await;
    let tls = trusting(&ca);
    for addr in [orchestrator.grpc_addr, orchestrator.http_addr] {
        assert_eq!(
            presented_name(addr, &tls).await.as_deref(),
            Ok("gateway-first")
        );
    }

    let second = ca.server_named("gateway", "gateway-second");
    assert_eq!(
        second.cert_file, first.cert_file,
        "the same files, rewritten"
    );
    for addr in [orchestrator.grpc_addr, orchestrator.http_addr] {
        wait_until("new handshakes to present the new certificate", || {
            let tls = tls.clone();
            async move {
                (presented_name(addr, &tls).await.as_deref() == Ok("gateway-second")).then_some(())
            }
        })
        .await;
    }
    // Broken files (a key that is not one) leave the current certificate in use.
    std::fs::write(&first.key_file, "not a key").expect("write");
    std::fs::write(&first.cert_file, "not a certificate either").expect("write");
    let mut client = grpc_client(&orchestrator, &tls)
        .await
        .expect("gRPC over TLS");
    tool_names(&mut client).await.expect("still served");
    assert_eq!(
        presented_name(orchestrator.http_addr, &tls)
            .await
            .as_deref(),
        Ok("gateway-second")
    );
    orchestrator.stop().await;
    servers.stop().await;
}

#[tokio::test]
async fn a_client_certificate_proves_its_clients_identity_and_an_unknown_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "gateway");
    let clients_ca = TestCa::new(dir.path(), "clients");
    let stranger_ca = TestCa::new(dir.path(), "stranger");
    let cert = ca.server("gateway");
    let robot = clients_ca.client("robot-1");
    let unlisted = clients_ca.client("nobody-lists-me");
    let forged = stranger_ca.client("robot-1");
    let servers = spawn_all().await;
    let mut config = common::shipped_config(&servers);
    config["listen"] = listen_tls(&cert, Some((&clients_ca.ca_file, "optional")));
    config["auth"] = json!({ "required": true });
    config["clients"] = json!({
        "robot": { "tools": ["validate_data", "list_schemas"], "tls_subject": "robot-1" },
        "writer": { "tools": ["*"], "token": "writer-secret" }
    });
    let orchestrator = start(&config, &dir).await;

    // gRPC: the certificate is the credential; the robot sees its own allow-list.
    let as_robot = ClientTls {
        ca_file: Some(ca.ca_file.clone()),
        cert_file: Some(robot.cert_file.clone()),
        key_file: Some(robot.key_file.clone()),
    };
    let mut client = grpc_client(&orchestrator, &as_robot).await.expect("mTLS");
    let workflow = client
        .start_workflow(pb::StartWorkflowRequest::default())
        .await
        .expect("the robot starts a workflow")
        .into_inner()
        .id;
    let call = |tool: &str| pb::WorkflowCallRequest {
        workflow_id: workflow.clone(),
        tool: tool.into(),
        arguments_json: "{}".into(),
    };
    client
        .call_tool(call("list_schemas"))
        .await
        .expect("a tool of the robot's allow-list");
    let denied = client
        .call_tool(call("list_backups"))
        .await
        .expect_err("a tool beyond it");
    let decision = common::denial(&denied);
    assert!(
        format!("{decision:?}").contains("allow-list of client robot"),
        "{decision:?}"
    );
    // Without a certificate (optional) nor a token: no identity where authentication is required.
    let mut nobody = grpc_client(&orchestrator, &trusting(&ca))
        .await
        .expect("TLS");
    let status = tool_names(&mut nobody).await.expect_err("no credential");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    // A certificate of the right CA that names no client is refused, saying so.
    let as_unlisted = ClientTls {
        cert_file: Some(unlisted.cert_file.clone()),
        key_file: Some(unlisted.key_file.clone()),
        ..trusting(&ca)
    };
    let mut client = grpc_client(&orchestrator, &as_unlisted)
        .await
        .expect("mTLS");
    let status = tool_names(&mut client).await.expect_err("unlisted");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("nobody-lists-me") && status.message().contains("tls_subject"),
        "{status:?}"
    );
    // The same name from a CA the orchestrator does not trust never gets past the handshake.
    let as_forged = ClientTls {
        cert_file: Some(forged.cert_file.clone()),
        key_file: Some(forged.key_file.clone()),
        ..trusting(&ca)
    };
    let refused = match grpc_client(&orchestrator, &as_forged).await {
        Err(e) => format!("{e:?}"),
        Ok(mut c) => format!("{:?}", tool_names(&mut c).await.expect_err("forged")),
    };
    assert!(!refused.contains("validate_data"), "{refused}");

    // MCP over https with the Python SDK: the same identities.
    let url = orchestrator.http_url();
    let summary = python_probe(&url, &ca.ca_file, Some(&robot), Some("list_schemas")).await;
    let tools: Vec<&str> = summary["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"validate_data") && !tools.contains(&"create_backup"),
        "{summary}"
    );
    assert_eq!(summary["call"]["is_error"], json!(false), "{summary}");
    // The same name from a CA the orchestrator does not trust: the TLS connection is refused
    // (the SDK sees a transport error), where no credential at all gets an HTTP refusal.
    let refusal = python_probe(&url, &ca.ca_file, Some(&forged), None).await;
    let refusal = refusal["refused"]
        .as_str()
        .unwrap_or_else(|| panic!("{refusal}"));
    assert!(
        !refusal.starts_with("MCPError"),
        "a transport error: {refusal}"
    );
    let without = python_probe(&url, &ca.ca_file, None, None).await;
    let without = without["refused"]
        .as_str()
        .unwrap_or_else(|| panic!("{without}"));
    assert!(
        without.starts_with("MCPError"),
        "an HTTP refusal: {without}"
    );
    // /healthz is open to anyone who completes the handshake, so no answer means the handshake.
    let health = https_get(orchestrator.http_addr, &as_forged, "/healthz").await;
    assert!(!health.contains("200"), "{health}");
    let health = https_get(orchestrator.http_addr, &trusting(&ca), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // What the server says about itself over TLS names https (the MCP authorization discovery).
    let metadata = https_get(
        orchestrator.http_addr,
        &trusting(&ca),
        "/.well-known/oauth-protected-resource",
    )
    .await;
    assert!(
        metadata.contains("\"resource\":\"https://127.0.0.1/mcp\""),
        "{metadata}"
    );
    orchestrator.stop().await;
    servers.stop().await;
}

/// A tool server of `kind` serving TLS with a certificate of `ca`, requiring client certificates
/// of `client_ca` when given; the test reaches it as `client`.
async fn tls_server(
    kind: ServerKind,
    dir: &Path,
    ca: &TestCa,
    client_ca: Option<&TestCa>,
    client: ClientTls,
) -> conductor_servers::testing::RunningServer {
    let cert = ca.server(&format!("{}-server", kind.name()));
    let mut options = ServerOptions::new(dir.join(kind.name()));
    options.tls = Some(conductor_proto::tls::ServerTls {
        cert_file: cert.cert_file,
        key_file: cert.key_file,
        client_ca_file: client_ca.map(|ca| ca.ca_file.clone()),
        client_certs: match client_ca {
            Some(_) => conductor_proto::tls::ClientCerts::Required,
            None => conductor_proto::tls::ClientCerts::None,
        },
    });
    spawn_tls(kind, options, client).await
}

/// The shipped configuration with the validation server at `validation` and the backup server at
/// `backup`, each with its `tls` settings.
fn with_tls_servers(
    servers: &ToolServers,
    validation: (&str, Value),
    backup: (&str, Value),
) -> Value {
    let mut config = common::shipped_config(servers);
    config["servers"]["validation"]["grpc"] = json!(validation.0);
    config["servers"]["validation"]["tls"] = validation.1;
    config["servers"]["backup"]["grpc"] = json!(backup.0);
    config["servers"]["backup"]["tls"] = backup.1;
    config
}

#[tokio::test]
async fn tool_servers_over_tls_and_mutual_tls_and_a_wrong_ca_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "tools");
    let clients_ca = TestCa::new(dir.path(), "orchestrators");
    let wrong_ca = TestCa::new(dir.path(), "wrong");
    let orchestrator_cert = clients_ca.client("orchestrator");
    let as_orchestrator = ClientTls {
        ca_file: Some(ca.ca_file.clone()),
        cert_file: Some(orchestrator_cert.cert_file.clone()),
        key_file: Some(orchestrator_cert.key_file.clone()),
    };
    let validation = tls_server(ServerKind::Validation, dir.path(), &ca, None, trusting(&ca)).await;
    let backup = tls_server(
        ServerKind::Backup,
        dir.path(),
        &ca,
        Some(&clients_ca),
        as_orchestrator,
    )
    .await;
    let servers = spawn_all().await;
    let trust = json!({ "ca_file": ca.ca_file });
    let mtls = json!({
        "ca_file": ca.ca_file,
        "cert_file": orchestrator_cert.cert_file,
        "key_file": orchestrator_cert.key_file
    });

    // TLS, and mutual TLS with the orchestrator's client certificate: both serve.
    let config = with_tls_servers(
        &servers,
        (&validation.url(), trust.clone()),
        (&backup.url(), mtls.clone()),
    );
    let h = common::Harness::with_servers(servers, config).await;
    let workflow = h.start_workflow("", json!({})).await;
    let schemas = h
        .call(&workflow, "list_schemas", json!({}))
        .await
        .expect("a call over TLS");
    assert!(
        common::result_of(&schemas)["schemas"].is_array(),
        "{schemas:?}"
    );
    let listed = h
        .call(&workflow, "list_backups", json!({}))
        .await
        .expect("list over mTLS");
    assert!(common::result_of(&listed).is_object(), "{listed:?}");
    h.orchestrator.stop().await;
    h.servers.stop().await;

    // Without its client certificate the mTLS server refuses the orchestrator; a wrong CA is named.
    let servers = spawn_all().await;
    let wrong = json!({ "ca_file": wrong_ca.ca_file });
    let config = with_tls_servers(&servers, (&validation.url(), wrong), (&backup.url(), trust));
    let h = common::Harness::with_servers(servers, config).await;
    let workflow = h.start_workflow("", json!({})).await;
    let status = h
        .call(&workflow, "list_schemas", json!({}))
        .await
        .expect_err("wrong CA");
    let message = status.message();
    assert!(
        message.contains("validation")
            && message.contains(&wrong_ca.ca_file.display().to_string())
            && message.contains("servers.validation.tls.ca_file"),
        "{status:?}"
    );
    let status = h
        .call(&workflow, "list_backups", json!({}))
        .await
        .expect_err("no client certificate");
    let message = status.message();
    assert!(
        message.contains("backup") && message.contains("client certificate"),
        "{status:?}"
    );

    // Settings put right take effect with a reload: the servers' clients are built anew.
    let fixed = with_tls_servers(
        &h.servers,
        (&validation.url(), json!({ "ca_file": ca.ca_file })),
        (&backup.url(), mtls),
    );
    std::fs::write(h.config_path(), fixed.to_string()).expect("write the configuration");
    h.orchestrator
        .gateway
        .reload_config()
        .await
        .expect("the configuration reloads");
    let workflow = h.start_workflow("", json!({})).await;
    h.call(&workflow, "list_schemas", json!({}))
        .await
        .expect("the right CA after the reload");
    h.call(&workflow, "list_backups", json!({}))
        .await
        .expect("the client certificate after the reload");
    h.orchestrator.stop().await;
    h.servers.stop().await;
    validation.stop().await;
    backup.stop().await;
}

#[tokio::test]
async fn no_plaintext_listener_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = spawn_all().await;
    let mut config = common::shipped_config(&servers);
    config["auth"] = json!({ "required": true });
    config["clients"] = json!({ "writer": { "tools": ["*"], "token": "writer-secret" } });
    let refused = testing::spawn_on(
        &config.to_string(),
        None,
        conductor_audit::AuditOptions {
            dir: dir.path().join("audit"),
            ..Default::default()
        },
        "0.0.0.0:0".parse().expect("address"),
    )
    .await
    .err()
    .expect("refused")
    .to_string();
    for needed in [
        "0.0.0.0:0",
        "without TLS",
        "\"tls\"",
        "tls_terminated_in_front",
    ] {
        assert!(refused.contains(needed), "{needed}: {refused}");
    }

    // The binary refuses as well, before it binds anything.
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--config")
        .arg(&path)
        .args([
            "--listen",
            "0.0.0.0:0",
            "--http",
            "127.0.0.1:0",
            "--audit-dir",
        ])
        .arg(dir.path().join("audit-binary"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    let status = wait_until("the binary to exit", || {
        let exited = child.try_wait().expect("wait");
        async move { exited }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut stderr)
        .expect("read");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("0.0.0.0:0") && stderr.contains("without TLS"),
        "{stderr}"
    );

    // The explicit opt-out: TLS ends in front.
    config["listen"] = json!({ "tls_terminated_in_front": true });
    let accepted = testing::spawn_on(
        &config.to_string(),
        None,
        conductor_audit::AuditOptions {
            dir: dir.path().join("audit-front"),
            ..Default::default()
        },
        "0.0.0.0:0".parse().expect("address"),
    )
    .await
    .expect("TLS terminated in front");
    accepted.stop().await;
    servers.stop().await;
    let _ = DEADLINE;
}

#[tokio::test]
async fn unusable_certificate_files_are_named_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "files");
    let good = ca.server("gateway");
    let other = ca.server("other");
    let servers = spawn_all().await;
    let start = |listen: Value| {
        let mut config = common::shipped_config(&servers);
        config["listen"] = listen;
        let audit = dir.path().join("audit");
        async move {
            testing::spawn(&config.to_string(), None, &audit)
                .await
                .err()
                .expect("refused")
                .to_string()
        }
    };
    let missing = dir.path().join("missing.pem");
    let refused =
        start(json!({ "tls": { "cert_file": missing, "key_file": good.key_file } })).await;
    assert!(
        refused.contains(&missing.display().to_string()) && refused.contains("cannot be read"),
        "{refused}"
    );
    let refused =
        start(json!({ "tls": { "cert_file": good.key_file, "key_file": good.key_file } })).await;
    assert!(
        refused.contains(&good.key_file.display().to_string())
            && refused.contains("no PEM certificate"),
        "{refused}"
    );
    // A key that belongs to another certificate.
    let refused =
        start(json!({ "tls": { "cert_file": good.cert_file, "key_file": other.key_file } })).await;
    assert!(
        refused.contains(&other.key_file.display().to_string())
            && refused.contains(&good.cert_file.display().to_string()),
        "{refused}"
    );
    let refused = start(listen_tls(&good, Some((&missing, "required")))).await;
    assert!(
        refused.contains(&missing.display().to_string()),
        "{refused}"
    );
    servers.stop().await;
}

#[tokio::test]
async fn an_approval_ledger_over_mutual_tls_holds_the_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(dir.path(), "ledger");
    let clients_ca = TestCa::new(dir.path(), "ledger-clients");
    let client = clients_ca.client("orchestrator");
    let as_orchestrator = ClientTls {
        ca_file: Some(ca.ca_file.clone()),
        cert_file: Some(client.cert_file.clone()),
        key_file: Some(client.key_file.clone()),
    };
    let approval = tls_server(
        ServerKind::Approval,
        dir.path(),
        &ca,
        Some(&clients_ca),
        as_orchestrator,
    )
    .await;
    let servers = spawn_all().await;
    let rules =
        json!([{ "id": "listing-needs-approval", "kind": "approval", "tool": "list_backups" }]);
    let mut config = common::config_with(&servers, rules, json!({}));
    config["servers"]["approval"]["grpc"] = json!(approval.url());
    config["servers"]["approval"]["tls"] = json!({
        "ca_file": ca.ca_file, "cert_file": client.cert_file, "key_file": client.key_file
    });
    let h = common::Harness::with_servers(servers, config).await;
    let workflow = h.start_workflow("", json!({})).await;
    let call = h.spawn_call(&workflow, "list_backups", json!({}));
    let pending = h.wait_pending(&workflow).await;
    h.client
        .clone()
        .approve(pb::ApprovalDecisionRequest {
            approval_id: pending.id.clone(),
            reason: "over mTLS".into(),
            ..Default::default()
        })
        .await
        .expect("approve");
    call.await.expect("task").expect("the approved call ran");
    let ledger = conductor_proto::v1::approval_ledger_client::ApprovalLedgerClient::new(
        approval.channel().await,
    );
    let record = wait_until("the ledger to hold the decision", || {
        let mut ledger = ledger.clone();
        let id = pending.id.clone();
        async move {
            let record = ledger
                .get_approval(pb::GetApprovalRequest { id })
                .await
                .ok()?
                .into_inner();
            (record.state == pb::ApprovalState::Approved as i32).then_some(record)
        }
    })
    .await;
    assert_eq!(record.reason, "over mTLS");
    h.orchestrator.stop().await;
    h.servers.stop().await;
    approval.stop().await;
}
