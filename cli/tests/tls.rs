//! `conductorctl` over TLS (issue 27): an `https://` orchestrator trusted through `--ca-file` or a
//! context's `ca_file`, a client certificate (`--cert`, `--key`) that the orchestrator maps to a
//! configured client, and clear errors when the CA is missing or the address says http://. Real
//! binary, real orchestrator, certificates from a CA the test makes.

mod common;
#[path = "../../orchestrator/tests/it/test_ca.rs"]
mod test_ca;

use common::{Stack, ctl_bare, output};
use serde_json::json;
use test_ca::TestCa;

#[tokio::test]
async fn conductorctl_speaks_tls_with_a_ca_file_a_context_and_a_client_certificate() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new(certs.path(), "gateway");
    let clients_ca = TestCa::new(certs.path(), "people");
    let server = ca.server("gateway");
    let me = clients_ca.client("ops-1");
    let stack = Stack::start_with(json!({
        "listen": { "tls": {
            "cert_file": server.cert_file, "key_file": server.key_file,
            "client_ca_file": clients_ca.ca_file, "client_certs": "optional"
        } },
        "clients": { "ops": { "tools": ["list_schemas"], "tls_subject": "ops-1" } }
    }))
    .await;
    assert!(stack.url.starts_with("https://"), "{}", stack.url);
    let ca_file = ca.ca_file.display().to_string();

    let listed = stack.ctl(&["--ca-file", &ca_file, "tools"]).await;
    assert_eq!(listed.code, 0, "{}", listed.text());
    assert!(listed.stdout.contains("validate_data"), "{}", listed.text());

    // Without the CA the orchestrator's certificate is not trusted: exit 3, and what to pass.
    let untrusted = stack.ctl(&["tools"]).await;
    assert_eq!(untrusted.code, 3, "{}", untrusted.text());
    assert!(
        untrusted.stderr.contains("TLS") && untrusted.stderr.contains("--ca-file"),
        "{}",
        untrusted.text()
    );
    // TLS flags with an http:// address are a usage error, not a silent plaintext connection.
    let plain = stack.url.replacen("https://", "http://", 1);
    let mut command = common::ctl_command(&plain);
    command.args(["--ca-file", &ca_file, "tools"]);
    let mixed = output(command, None).await;
    assert_eq!(mixed.code, 2, "{}", mixed.text());
    assert!(mixed.stderr.contains("https://"), "{}", mixed.text());

    // The client certificate is the identity: ops may call list_schemas; without it, the caller is
    // anonymous, whose allow-list is empty where clients are configured.
    let cert = me.cert_file.display().to_string();
    let key = me.key_file.display().to_string();
    let as_ops = ["--ca-file", &ca_file, "--cert", &cert, "--key", &key];
    let called = stack
        .ctl(&[&as_ops[..], &["call", "list_schemas"]].concat())
        .await;
    assert_eq!(called.code, 0, "{}", called.text());
    assert!(called.stdout.contains("customer"), "{}", called.text());
    let anonymous = stack
        .ctl(&["--ca-file", &ca_file, "call", "list_schemas"])
        .await;
    assert_eq!(anonymous.code, 1, "{}", anonymous.text());
    assert!(anonymous.stdout.contains("DENIED"), "{}", anonymous.text());

    // A client certificate of a CA the orchestrator does not trust is refused: exit 3, and what to do.
    let stranger = TestCa::new(certs.path(), "stranger").client("ops-1");
    let (cert, key) = (
        stranger.cert_file.display().to_string(),
        stranger.key_file.display().to_string(),
    );
    let forged = stack
        .ctl(&[
            "--ca-file",
            &ca_file,
            "--cert",
            &cert,
            "--key",
            &key,
            "tools",
        ])
        .await;
    assert_eq!(forged.code, 3, "{}", forged.text());
    assert!(forged.stderr.contains("--cert"), "{}", forged.text());

    // The same, stored in a context: address, CA and client certificate.
    let contexts = certs.path().join("contexts.json");
    std::fs::write(
        &contexts,
        json!({
            "current_context": "secure",
            "contexts": { "secure": {
                "orchestrator": stack.url, "ca_file": ca.ca_file,
                "cert_file": me.cert_file, "key_file": me.key_file
            } }
        })
        .to_string(),
    )
    .expect("write the contexts file");
    let mut command = ctl_bare();
    command
        .env("CONDUCTORCTL_CONFIG", &contexts)
        .args(["call", "list_schemas"]);
    let from_context = output(command, None).await;
    assert_eq!(from_context.code, 0, "{}", from_context.text());
    assert!(
        from_context.stdout.contains("customer"),
        "{}",
        from_context.text()
    );
}
