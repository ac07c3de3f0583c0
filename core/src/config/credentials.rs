//! The credential the orchestrator presents to a downstream MCP server over HTTP (`servers.NAME.auth`),
//! checked: static headers (a bearer token, an API key), OAuth 2.1 client credentials, or an RFC 8693
//! token exchange of the caller's own token.
//!
//! Secrets come from the environment or a file (or, where unavoidable, the file's own text) and are read
//! into [`SecretString`]s here. A secret that is configured but absent (its variable unset, its file
//! unreadable) is not a configuration problem: it costs only that server's calls, which then fail
//! naming the server and the field, and `policy check` and start-up say so. Nothing here formats a
//! secret: [`CredentialSummary`] names where each one comes from and whether it is present, never its
//! value.

use super::check::Checker;
use super::raw::{RawSecret, RawServerAuth};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// How a downstream MCP server is authenticated to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Headers sent with every request: `Authorization: Bearer …` (`bearer`) or named ones (`headers`).
    Headers(Vec<SecretHeader>),
    /// An access token from a token endpoint for the orchestrator itself (OAuth 2.1 client
    /// credentials), cached and fetched again before it expires.
    ClientCredentials(ClientCredentials),
    /// The caller's own token exchanged at a token endpoint (RFC 8693) for one to present downstream,
    /// so the server applies its own permissions per person.
    TokenExchange(TokenExchange),
}

/// One header whose value is (or ends in) a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHeader {
    pub name: String,
    /// Written before the secret: `"Bearer "` for a bearer token, else nothing.
    pub prefix: &'static str,
    pub secret: SecretSlot,
}

/// OAuth 2.1 client credentials (`type: oauth_client_credentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: SecretSlot,
    pub scope: Option<String>,
    pub audience: Option<String>,
}

/// RFC 8693 token exchange (`type: token_exchange`); the client authenticates to the token endpoint
/// when a client id is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchange {
    pub token_url: String,
    pub client_id: Option<String>,
    pub client_secret: Option<SecretSlot>,
    pub audience: Option<String>,
    pub scope: Option<String>,
}

/// A configured secret: where it comes from, and its value when it could be read.
#[derive(Clone)]
pub struct SecretSlot {
    /// The field's JSON path, e.g. `servers.tickets.auth.token`.
    pub field: String,
    /// Where the value comes from, e.g. `environment variable GH_TOKEN` (never the value).
    pub source: String,
    /// Why it is absent, when it is.
    pub absent: Option<String>,
    pub value: Option<SecretString>,
}

impl SecretSlot {
    /// The value, or an error naming the field and where it should have come from.
    pub fn get(&self) -> Result<&str, String> {
        match &self.value {
            Some(value) => Ok(value.expose_secret()),
            None => Err(format!(
                "{} is not available ({})",
                self.field,
                self.absent.as_deref().unwrap_or("not set")
            )),
        }
    }
}

/// Names the field and the source only.
impl fmt::Debug for SecretSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSlot")
            .field("field", &self.field)
            .field("source", &self.source)
            .field("present", &self.value.is_some())
            .finish()
    }
}

/// Equal when the same secret comes from the same place (a reload keeps a server's client then).
impl PartialEq for SecretSlot {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field
            && self.source == other.source
            && self.value.as_ref().map(|v| v.expose_secret())
                == other.value.as_ref().map(|v| v.expose_secret())
    }
}

impl Eq for SecretSlot {}

/// What `policy check` and start-up say about a server's credential: its mode and, per secret, where
/// it comes from and whether it is there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CredentialSummary {
    /// `none`, `bearer`, `headers`, `oauth_client_credentials` or `token_exchange`.
    pub mode: &'static str,
    pub secrets: Vec<SecretPresence>,
}

/// One secret's presence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretPresence {
    pub field: String,
    pub source: String,
    pub present: bool,
    /// Why it is absent (e.g. `environment variable GH_TOKEN is not set`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absent: Option<String>,
}

impl fmt::Display for CredentialSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode)?;
        for (i, secret) in self.secrets.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            let state = match (&secret.absent, secret.present) {
                (_, true) => "present".to_owned(),
                (Some(why), false) => format!("MISSING, {why}"),
                (None, false) => "MISSING".to_owned(),
            };
            write!(f, "{sep}{} from {} ({state})", secret.field, secret.source)?;
        }
        Ok(())
    }
}

impl Credential {
    /// The mode and the presence of each secret, never a value.
    pub fn summary(credential: Option<&Credential>) -> CredentialSummary {
        let (mode, slots): (&'static str, Vec<&SecretSlot>) = match credential {
            None => ("none", Vec::new()),
            Some(Credential::Headers(headers)) => (
                if headers.len() == 1 && headers[0].prefix == BEARER {
                    "bearer"
                } else {
                    "headers"
                },
                headers.iter().map(|h| &h.secret).collect(),
            ),
            Some(Credential::ClientCredentials(c)) => {
                ("oauth_client_credentials", vec![&c.client_secret])
            }
            Some(Credential::TokenExchange(t)) => {
                ("token_exchange", t.client_secret.iter().collect())
            }
        };
        CredentialSummary {
            mode,
            secrets: slots
                .into_iter()
                .map(|slot| SecretPresence {
                    field: slot.field.clone(),
                    source: slot.source.clone(),
                    present: slot.value.is_some(),
                    absent: slot.absent.clone(),
                })
                .collect(),
        }
    }
}

const BEARER: &str = "Bearer ";

/// Headers the MCP client sets itself; a credential may not replace them.
const RESERVED_HEADERS: [&str; 7] = [
    "host",
    "content-type",
    "content-length",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "transfer-encoding",
];

/// `servers.NAME.auth`, checked; `url` is the server's address, `mcp_url` says whether it is one.
pub(super) fn check_credential(
    c: &mut Checker,
    path: &str,
    raw: &RawServerAuth,
    url: Option<&str>,
) -> Option<Credential> {
    let path = format!("{path}.auth");
    let Some(url) = url else {
        c.problem(
            &path,
            "a credential applies to servers reached over HTTP (mcp_url) only",
        );
        return None;
    };
    if !private_transport(url) {
        c.problem(
            &path,
            format!("{url:?} is plain http beyond loopback: the credential would travel in the clear; use https"),
        );
    }
    let credential = match raw {
        RawServerAuth::Bearer { token } => Credential::Headers(vec![SecretHeader {
            name: "Authorization".to_owned(),
            prefix: BEARER,
            secret: slot(c, &format!("{path}.token"), token),
        }]),
        RawServerAuth::Headers { headers } => {
            if headers.is_empty() {
                c.problem(format!("{path}.headers"), "name at least one header");
            }
            let mut seen = std::collections::HashSet::new();
            let mut out = Vec::new();
            for (name, secret) in headers {
                let field = format!("{path}.headers.{name}");
                let lower = name.to_ascii_lowercase();
                if !valid_header_name(name) {
                    c.problem(&field, format!("{name:?} is not an HTTP header name"));
                } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                    c.problem(
                        &field,
                        format!("{name:?} is set by the MCP client itself; a credential cannot replace it"),
                    );
                } else if !seen.insert(lower) {
                    c.problem(
                        &field,
                        format!("{name:?} is given twice (header names ignore case)"),
                    );
                }
                out.push(SecretHeader {
                    name: name.clone(),
                    prefix: "",
                    secret: slot(c, &field, secret),
                });
            }
            Credential::Headers(out)
        }
        RawServerAuth::OauthClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
            audience,
        } => {
            check_token_url(c, &path, token_url);
            if client_id.trim().is_empty() {
                c.problem(format!("{path}.client_id"), "must not be empty");
            }
            Credential::ClientCredentials(ClientCredentials {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: slot(c, &format!("{path}.client_secret"), client_secret),
                scope: scope.clone(),
                audience: audience.clone(),
            })
        }
        RawServerAuth::TokenExchange {
            token_url,
            client_id,
            client_secret,
            audience,
            scope,
        } => {
            check_token_url(c, &path, token_url);
            if client_secret.is_some() && client_id.is_none() {
                c.problem(
                    format!("{path}.client_secret"),
                    "a client secret needs the client_id it belongs to",
                );
            }
            Credential::TokenExchange(TokenExchange {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret
                    .as_ref()
                    .map(|s| slot(c, &format!("{path}.client_secret"), s)),
                audience: audience.clone(),
                scope: scope.clone(),
            })
        }
    };
    Some(credential)
}

/// A server that exchanges callers' tokens needs callers that prove themselves with JWTs
/// (`auth.jwt`): only a JWT is exchanged, never a static client token.
pub(super) fn check_exchange_has_jwts(
    c: &mut Checker,
    servers: &std::collections::BTreeMap<String, super::ServerConfig>,
    jwt: bool,
) {
    for server in servers.values() {
        if matches!(server.auth, Some(Credential::TokenExchange(_))) && !jwt {
            c.problem(
                format!("servers.{}.auth", server.name),
                "token_exchange sends each caller's own JWT on, and no caller can have one: configure auth.jwt (the issuer whose tokens are exchanged)",
            );
        }
    }
}

fn check_token_url(c: &mut Checker, path: &str, url: &str) {
    let field = format!("{path}.token_url");
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        c.problem(
            field,
            format!("{url:?} must start with http:// or https://"),
        );
    } else if !private_transport(url) {
        c.problem(
            field,
            format!("{url:?} is plain http beyond loopback: secrets would travel in the clear; use https"),
        );
    }
}

/// Whether `url` keeps what it carries private: https, or http to a loopback host.
fn private_transport(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return true;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An RFC 9110 field name: one or more token characters.
fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Reads one secret reference: exactly one of `token` (the file's own text), `token_env`, `token_file`.
/// An unset variable or an unreadable file leaves the slot empty, with the reason.
fn slot(c: &mut Checker, field: &str, raw: &RawSecret) -> SecretSlot {
    let mut slot = SecretSlot {
        field: field.to_owned(),
        source: String::new(),
        absent: None,
        value: None,
    };
    match (&raw.token, &raw.token_env, &raw.token_file) {
        (Some(value), None, None) => {
            slot.source = "the configuration file".to_owned();
            if value.trim().is_empty() {
                c.problem(format!("{field}.token"), "must not be empty");
            } else {
                slot.value = Some(SecretString::from(value.clone()));
            }
        }
        (None, Some(var), None) => {
            slot.source = format!("environment variable {var}");
            match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => {
                    slot.value = Some(SecretString::from(value.trim().to_owned()));
                }
                Ok(_) => slot.absent = Some(format!("environment variable {var} is empty")),
                Err(_) => slot.absent = Some(format!("environment variable {var} is not set")),
            }
        }
        (None, None, Some(file)) => {
            slot.source = format!("file {file}");
            match std::fs::read_to_string(file) {
                Ok(text) if !text.trim().is_empty() => {
                    slot.value = Some(SecretString::from(text.trim().to_owned()));
                }
                Ok(_) => slot.absent = Some(format!("file {file} is empty")),
                Err(e) => slot.absent = Some(format!("cannot read file {file}: {e}")),
            }
        }
        (None, None, None) => {
            c.problem(field, "set one of token_env, token_file and token");
            slot.source = "nowhere".to_owned();
        }
        _ => {
            c.problem(
                field,
                "set one of token_env, token_file and token, not several",
            );
            slot.source = "several places".to_owned();
        }
    }
    slot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::{Value, json};

    fn with_auth(url: &str, auth: Value) -> Result<Config, crate::config::ConfigError> {
        let config = json!({
            "servers": { "tickets": { "mcp_url": url, "tools": ["open"], "auth": auth } }
        });
        Config::from_slice(config.to_string().as_bytes())
    }

    fn problems(url: &str, auth: Value) -> Vec<String> {
        match with_auth(url, auth) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn each_mode_is_read_with_where_its_secrets_come_from() {
        let dir = std::env::temp_dir().join(format!("cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret-from-file\n").expect("write");
        let config = with_auth(
            "https://tickets.example/mcp",
            json!({"type": "oauth_client_credentials", "token_url": "https://idp.example/token",
                   "client_id": "gw", "client_secret": {"token_file": file}, "scope": "tickets"}),
        )
        .expect("valid");
        let credential = config.servers["tickets"].auth.as_ref().expect("auth");
        let summary = Credential::summary(Some(credential));
        assert_eq!(summary.mode, "oauth_client_credentials");
        assert!(summary.secrets[0].present, "{summary}");
        let debug = format!("{credential:?} {summary}");
        assert!(!debug.contains("s3cret"), "a secret shows: {debug}");
        assert!(
            debug.contains("servers.tickets.auth.client_secret"),
            "{debug}"
        );

        let config = with_auth(
            "http://127.0.0.1:9/mcp",
            json!({"type": "bearer", "token": {"token_env": "CONDUCTOR_TEST_UNSET_TOKEN_27"}}),
        )
        .expect("an absent secret is not a configuration problem");
        let summary = Credential::summary(config.servers["tickets"].auth.as_ref());
        assert_eq!(summary.mode, "bearer");
        assert!(!summary.secrets[0].present);
        assert!(
            summary
                .to_string()
                .contains("environment variable CONDUCTOR_TEST_UNSET_TOKEN_27 is not set"),
            "{summary}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mistakes_are_named_with_their_path() {
        let p = problems(
            "http://tickets.example/mcp",
            json!({"type": "bearer", "token": {"token": "abc"}}),
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("servers.tickets.auth: ") && p.contains("in the clear")),
            "{p:?}"
        );
        let p = problems(
            "https://t.example/mcp",
            json!({"type": "headers", "headers": {"Content-Type": {"token": "x"}, "bad name": {"token": "y"}}}),
        );
        assert!(
            p.iter()
                .any(|p| p.contains("servers.tickets.auth.headers.Content-Type")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("servers.tickets.auth.headers.bad name")),
            "{p:?}"
        );
        let p = problems(
            "https://t.example/mcp",
            json!({"type": "token_exchange", "token_url": "ftp://idp", "client_secret": {"token": "x"}}),
        );
        assert!(p.iter().any(|p| p.contains("auth.token_url")), "{p:?}");
        assert!(
            p.iter()
                .any(|p| p.contains("auth.client_secret: a client secret needs")),
            "{p:?}"
        );
        let p = problems(
            "https://t.example/mcp",
            json!({"type": "bearer", "token": {"token_env": "A", "token_file": "/b"}}),
        );
        assert!(
            p.iter().any(|p| p.contains("auth.token: set one of")),
            "{p:?}"
        );
        let p = problems("https://t.example/mcp", json!({"type": "kerberos"}));
        assert!(
            p.iter().any(|p| p.contains("servers.tickets.auth")),
            "{p:?}"
        );
        let grpc = json!({"servers": {"v": {"grpc": "http://127.0.0.1:1", "tools": ["a"],
            "auth": {"type": "bearer", "token": {"token": "x"}}}}});
        let e = Config::from_slice(grpc.to_string().as_bytes()).expect_err("refused");
        assert!(
            e.to_string()
                .contains("servers.v.auth: a credential applies"),
            "{e}"
        );
    }

    #[test]
    fn token_exchange_needs_callers_with_jwts() {
        let p = problems(
            "https://t.example/mcp",
            json!({"type": "token_exchange", "token_url": "https://idp.example/token"}),
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("servers.tickets.auth: token_exchange")
                    && p.contains("auth.jwt")),
            "{p:?}"
        );
        let config = json!({
            "servers": { "tickets": { "mcp_url": "https://t.example/mcp", "tools": ["open"],
                "auth": {"type": "token_exchange", "token_url": "https://idp.example/token"} } },
            "auth": { "jwt": { "issuer": "https://idp.example", "audience": "gw", "jwks_file": "/dev/null" } }
        });
        assert!(Config::from_slice(config.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn loopback_and_https_keep_a_secret_private() {
        for url in [
            "https://x.example/mcp",
            "http://127.0.0.1:8/mcp",
            "http://localhost/mcp",
            "http://[::1]:9/",
        ] {
            assert!(private_transport(url), "{url}");
        }
        for url in [
            "http://x.example/mcp",
            "http://127.0.0.1.example/",
            "http://10.0.0.1:80/",
        ] {
            assert!(!private_transport(url), "{url}");
        }
    }
}
