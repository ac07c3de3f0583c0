//! TLS towards gRPC tool servers (issue 27): TLS and mutual TLS with `servers.NAME.tls`, a wrong
//! CA and a missing client certificate named with the server and the setting, settings put right
//! taking effect on a reload, and the approval ledger over mutual TLS.

use crate::common::{self, wait_until};
use crate::test_ca::TestCa;
use conductor_proto::tls::ClientTls;
use conductor_proto::v1 as pb;
use conductor_servers::testing::{ToolServers, spawn_all, spawn_tls};
use conductor_servers::{ServerKind, ServerOptions};
use serde_json::{Value, json};
use std::path::Path;

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
    let validation = tls_server(ServerKind::Validation, dir.path(), &ca, None, ca.trusted()).await;
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
