//! TLS in the configuration, checked: how the orchestrator reaches a tool or MCP server over TLS
//! (`servers.*.tls`), how its own listeners serve TLS (`listen.tls`), that a listener beyond loopback
//! has TLS or says that it ends in front (`listen.tls_terminated_in_front`), and which client a
//! verified client certificate names (`clients.*.tls_subject`).
//!
//! Only paths and choices are checked here; the files are read where they are used (`conductor_proto::tls`),
//! whose errors name the file. Nothing here opens a file or a connection.

use super::ClientConfig;
use super::check::Checker;
use super::raw::{RawClientTls, RawListenTls};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The TLS files of a client connection to one server: `ca_file` replaces the system roots; the
/// certificate and key (both or neither) are for a server that requires mutual TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Whether the listeners ask clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClientCertMode {
    #[default]
    None,
    /// Asked for; a client may come without one (and prove itself with a token), but not with one
    /// the CA did not sign.
    Optional,
    /// A client without a certificate the CA signed is refused at the handshake.
    Required,
}

/// The listeners' TLS (`listen.tls`): certificate and key files (read again when they change), and
/// client certificates verified against `client_ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_certs: ClientCertMode,
}

/// `servers.NAME.tls` for a server reached at `url` (`None` for a child process).
pub(super) fn check_server_tls(
    c: &mut Checker,
    path: &str,
    url: Option<&str>,
    raw: Option<&RawClientTls>,
) -> Option<ClientTlsFiles> {
    let raw = raw?;
    let path = format!("{path}.tls");
    match url {
        None => {
            c.problem(
                &path,
                "TLS settings apply to grpc and mcp_url servers, not to a child process",
            );
            return None;
        }
        Some(url) if !url.starts_with("https://") => c.problem(
            &path,
            format!("the server's address {url:?} is not https://: TLS settings need an https:// address"),
        ),
        Some(_) => {}
    }
    Some(check_client_files(c, &path, raw))
}

/// The files of a client's TLS settings at `path`: each a usable path, the certificate and key
/// both or neither.
pub(super) fn check_client_files(
    c: &mut Checker,
    path: &str,
    raw: &RawClientTls,
) -> ClientTlsFiles {
    let ca_file = file(c, path, "ca_file", raw.ca_file.as_deref());
    let cert_file = file(c, path, "cert_file", raw.cert_file.as_deref());
    let key_file = file(c, path, "key_file", raw.key_file.as_deref());
    pair(c, path, &raw.cert_file, &raw.key_file);
    ClientTlsFiles {
        ca_file,
        cert_file,
        key_file,
    }
}

/// `listen.tls`.
pub(super) fn check_listen_tls(
    c: &mut Checker,
    raw: Option<&RawListenTls>,
    terminated_in_front: bool,
) -> Option<ListenTls> {
    let raw = raw?;
    let path = "listen.tls";
    if terminated_in_front {
        c.problem(
            "listen.tls_terminated_in_front",
            "says TLS ends in front of the orchestrator, yet listen.tls is set: keep one of them",
        );
    }
    let cert_file = file(c, path, "cert_file", raw.cert_file.as_deref());
    let key_file = file(c, path, "key_file", raw.key_file.as_deref());
    for (field, given) in [("cert_file", &cert_file), ("key_file", &key_file)] {
        if given.is_none() && !c.has_problem_under(&format!("{path}.{field}")) {
            c.problem(
                format!("{path}.{field}"),
                "needed: the listeners' TLS certificate and its key",
            );
        }
    }
    let client_ca_file = file(c, path, "client_ca_file", raw.client_ca_file.as_deref());
    let client_certs = match (raw.client_certs.as_deref(), &client_ca_file) {
        (None, None) | (Some("none"), _) => ClientCertMode::None,
        (None, Some(_)) | (Some("optional"), _) => ClientCertMode::Optional,
        (Some("required"), _) => ClientCertMode::Required,
        (Some(other), _) => {
            c.problem(
                format!("{path}.client_certs"),
                format!("{other:?} is not a choice: use \"none\", \"optional\" or \"required\""),
            );
            ClientCertMode::None
        }
    };
    if client_certs != ClientCertMode::None && client_ca_file.is_none() {
        c.problem(
            format!("{path}.client_ca_file"),
            "needed when client certificates are asked for: the CA bundle they must chain to",
        );
    }
    if client_certs == ClientCertMode::None && client_ca_file.is_some() {
        c.problem(
            format!("{path}.client_ca_file"),
            "set, but client_certs is \"none\": ask for client certificates (\"optional\" or \"required\") or leave it out",
        );
    }
    Some(ListenTls {
        cert_file: cert_file?,
        key_file: key_file?,
        client_ca_file,
        client_certs,
    })
}

/// `clients.*.tls_subject`: not empty, no two clients alike, and only where the listeners verify
/// client certificates.
pub(super) fn check_tls_subjects(
    c: &mut Checker,
    clients: &BTreeMap<String, ClientConfig>,
    listen: Option<&ListenTls>,
) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let verifies = listen.is_some_and(|tls| tls.client_certs != ClientCertMode::None);
    for (name, client) in clients {
        let Some(subject) = client.tls_subject.as_deref() else {
            continue;
        };
        let path = format!("clients.{name}.tls_subject");
        if subject.trim().is_empty() {
            c.problem(
                &path,
                "must not be empty: the common name (CN) of the client's certificate",
            );
        } else if let Some(other) = seen.insert(subject, name) {
            c.problem(
                &path,
                format!("client {other} has the same certificate subject"),
            );
        }
        if !verifies {
            c.problem(
                &path,
                "needs listen.tls with client_certs \"optional\" or \"required\" (and client_ca_file): no certificate is verified otherwise",
            );
        }
    }
}

/// A file path field: not empty when given.
fn file(c: &mut Checker, path: &str, field: &str, given: Option<&str>) -> Option<PathBuf> {
    match given {
        None => None,
        Some(text) if text.trim().is_empty() => {
            c.problem(
                format!("{path}.{field}"),
                "must not be empty: name a PEM file",
            );
            None
        }
        Some(text) => Some(PathBuf::from(text)),
    }
}

/// A client certificate and its key come together.
fn pair(c: &mut Checker, path: &str, cert: &Option<String>, key: &Option<String>) {
    match (cert, key) {
        (Some(_), None) => c.problem(
            format!("{path}.key_file"),
            "needed with cert_file: the client certificate's private key",
        ),
        (None, Some(_)) => c.problem(
            format!("{path}.cert_file"),
            "needed with key_file: the client certificate the key belongs to",
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use serde_json::{Value, json};

    /// A configuration with one gRPC server at `url` (TLS settings `server_tls`), `listen`, and
    /// `clients`; the paths of its problems when it is refused.
    fn checked(
        url: &str,
        server_tls: Value,
        listen: Value,
        clients: Value,
    ) -> Result<Config, Vec<String>> {
        let mut server = json!({ "grpc": url, "tools": ["t"] });
        if !server_tls.is_null() {
            server["tls"] = server_tls;
        }
        let config = json!({ "servers": { "a": server }, "listen": listen, "clients": clients });
        Config::from_slice(config.to_string().as_bytes())
            .map_err(|e| e.problems().iter().map(|p| p.path.clone()).collect())
    }

    #[test]
    fn server_tls_needs_an_https_address_and_a_whole_client_certificate() {
        let config = checked(
            "https://tools.example:443",
            json!({ "ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem" }),
            json!({}),
            json!({}),
        )
        .expect("valid");
        let tls = config.servers["a"].tls.clone().expect("tls kept");
        assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("k.pem")));
        let problems = checked(
            "http://127.0.0.1:1",
            json!({ "cert_file": "c.pem" }),
            json!({}),
            json!({}),
        )
        .expect_err("refused");
        assert_eq!(problems, ["servers.a.tls", "servers.a.tls.key_file"]);
        let problems = checked(
            "https://x:1",
            json!({ "ca_file": " ", "bogus": 1 }),
            json!({}),
            json!({}),
        )
        .expect_err("refused");
        assert_eq!(
            problems,
            ["servers.a.tls.bogus"],
            "unknown fields are errors"
        );
        let problems = checked(
            "https://x:1",
            json!({ "ca_file": "" }),
            json!({}),
            json!({}),
        )
        .expect_err("refused");
        assert_eq!(problems, ["servers.a.tls.ca_file"]);
    }

    #[test]
    fn listen_tls_is_checked_field_by_field() {
        let config = checked(
            "http://127.0.0.1:1",
            Value::Null,
            json!({ "tls": { "cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem" } }),
            json!({ "agent": { "tools": ["t"], "tls_subject": "agent-1" } }),
        )
        .expect("valid");
        let tls = config.listen.tls.clone().expect("tls kept");
        assert_eq!(
            tls.client_certs,
            ClientCertMode::Optional,
            "a client CA asks for certificates"
        );
        assert_eq!(
            config.clients["agent"].tls_subject.as_deref(),
            Some("agent-1")
        );
        let problems = checked(
            "http://127.0.0.1:1",
            Value::Null,
            json!({ "tls": { "cert_file": "s.pem", "client_certs": "required" }, "tls_terminated_in_front": true }),
            json!({}),
        )
        .expect_err("refused");
        assert_eq!(
            problems,
            [
                "listen.tls_terminated_in_front",
                "listen.tls.key_file",
                "listen.tls.client_ca_file"
            ]
        );
        let problems = checked(
            "http://127.0.0.1:1",
            Value::Null,
            json!({ "tls": { "cert_file": "s.pem", "key_file": "k", "client_certs": "sometimes" } }),
            json!({}),
        )
        .expect_err("refused");
        assert_eq!(problems, ["listen.tls.client_certs"]);
    }

    #[test]
    fn a_tls_subject_needs_verified_client_certificates_and_is_one_clients() {
        let problems = checked(
            "http://127.0.0.1:1",
            Value::Null,
            json!({}),
            json!({ "agent": { "tools": ["t"], "tls_subject": "agent-1" } }),
        )
        .expect_err("refused");
        assert_eq!(problems, ["clients.agent.tls_subject"]);
        let problems = checked(
            "http://127.0.0.1:1",
            Value::Null,
            json!({ "tls": { "cert_file": "s", "key_file": "k", "client_ca_file": "ca", "client_certs": "required" } }),
            json!({
                "a1": { "tools": ["t"], "tls_subject": "same" },
                "a2": { "tools": ["t"], "tls_subject": "same" }
            }),
        )
        .expect_err("refused");
        assert_eq!(problems, ["clients.a2.tls_subject"]);
    }
}
