//! TLS on the orchestrator's listeners (issue 27): gRPC and HTTP over TLS with tonic, raw HTTP/1.1
//! and the official Python MCP SDK; a certificate rotated on disk served without a restart; unusable
//! certificate files named at start; no plaintext listener beyond loopback. Client certificates as
//! identities are in `tls_identity`, TLS towards tool servers in `tls_downstream`; the helpers here
//! serve all three. Every certificate comes from CAs the tests make (`test_ca`), as files in a
//! temporary directory.

use crate::common::{self, wait_until};
use crate::mcp_support;
use crate::test_ca::{CertFiles, TestCa};
use conductor_orchestrator::testing::{self, RunningOrchestrator};
use conductor_proto::tls::ClientTls;
use conductor_proto::v1 as pb;
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_servers::testing::spawn_all;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

/// `listen.tls` with `cert`, and client certificates of `client_ca` when given.
pub fn listen_tls(cert: &CertFiles, client_ca: Option<(&Path, &str)>) -> Value {
    let mut tls = json!({ "cert_file": cert.cert_file, "key_file": cert.key_file });
    if let Some((ca, mode)) = client_ca {
        tls["client_ca_file"] = json!(ca);
        tls["client_certs"] = json!(mode);
    }
    json!({ "tls": tls })
}

pub async fn start(config: &Value, dir: &TempDir) -> RunningOrchestrator {
    testing::spawn(&config.to_string(), None, &dir.path().join("audit"))
        .await
        .expect("the orchestrator starts")
}

/// A gRPC client of the orchestrator over TLS as `tls` says.
pub async fn grpc_client(
    orchestrator: &RunningOrchestrator,
    tls: &ClientTls,
) -> Result<OrchestratorClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(orchestrator.grpc_url())?
        .tls_config(tls.tonic_config().expect("client TLS settings"))?
        .connect()
        .await?;
    Ok(OrchestratorClient::new(channel))
}

pub async fn tool_names(
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
pub async fn presented_name(addr: std::net::SocketAddr, tls: &ClientTls) -> Result<String, String> {
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
pub async fn https_get(addr: std::net::SocketAddr, tls: &ClientTls, path: &str) -> String {
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
pub async fn python_probe(
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

    let mut client = grpc_client(&orchestrator, &ca.trusted())
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
    let refused = grpc_client(&orchestrator, &other.trusted()).await;
    let refused = match refused {
        Err(e) => format!("{e:?}"),
        Ok(mut c) => format!("{:?}", tool_names(&mut c).await.expect_err("untrusted")),
    };
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    let health = https_get(orchestrator.http_addr, &ca.trusted(), "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = https_get(orchestrator.http_addr, &ca.trusted(), "/metrics").await;
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
    let tls = ca.trusted();
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
}
