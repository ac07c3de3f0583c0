//! The identity part of the configuration: where each client's credential comes from (a static token
//! from the file, an environment variable or a token file; JWT subjects), what each client may do beyond
//! calling tools (`act_for`, `read`, `approve`), and how JWTs are validated.
//!
//! Secrets are read into [`SecretString`] here and never leave it as plain `String`s; nothing here
//! compares a secret (that is `crate::auth`'s job, in constant time).

use super::ClientConfig;
use super::check::Checker;
use super::raw::{RawAuth, RawClient};
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest;
use std::collections::{BTreeMap, HashSet};

/// The identity the shared control token proves. No client may take this name.
pub const OPERATOR: &str = "operator";
/// The client whose allow-list a caller without a credential gets (empty unless configured).
pub const ANONYMOUS: &str = "anonymous";
/// The prefix of the identity of a validly signed JWT whose subject no client lists (`jwt:SUB`).
/// No client can take such a name: client names have no `:` (`check::valid_name`).
pub const JWT_IDENTITY_PREFIX: &str = "jwt:";
/// The longest subject an identity spells out; a longer one (or one with other characters than
/// [`subject_char`]) is shortened and keeps a digest of the whole, so identities stay distinct.
const MAX_SUBJECT_CHARS: usize = 64;

/// How callers authenticate, checked.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// A request without a valid credential is refused (401) rather than served as `anonymous`.
    pub required: bool,
    /// The MCP resource URL: the JWT audience and the RFC 9728 `resource`.
    pub resource: Option<String>,
    pub authorization_servers: Vec<String>,
    pub jwt: Option<JwtSettings>,
    /// The client an MCP session over stdio speaks for.
    pub stdio_client: Option<String>,
    /// The token `/metrics` requires, when set.
    pub metrics_token: Option<SecretString>,
}

/// What a JWT must satisfy, and which claim names its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    pub client_claim: String,
    /// The configured client whose allow-list (its tools, nothing else) a subject no client lists gets,
    /// each such subject as its own identity ([`jwt_identity`]). `None`: an empty allow-list, or a
    /// refusal when authentication is required.
    pub default_client: Option<String>,
}

/// Where the signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    File(std::path::PathBuf),
    Url(String),
}

/// The identity of a validly signed JWT whose `subject` no client lists: `jwt:SUB`, its own identity
/// (never `anonymous`, never another subject's). A subject longer than 64 characters or with
/// characters beyond letters, digits and `._@+=-` keeps a printable prefix and gains `~` and 16 hex
/// digits of its SHA-256, so the identity is one word (the caller string's first), bounded, and two
/// subjects never share one.
pub fn jwt_identity(subject: &str) -> String {
    let plain = subject.chars().count() <= MAX_SUBJECT_CHARS && subject.chars().all(subject_char);
    if plain && !subject.is_empty() {
        return format!("{JWT_IDENTITY_PREFIX}{subject}");
    }
    let prefix: String = subject
        .chars()
        .filter(|c| subject_char(*c))
        .take(32)
        .collect();
    let digest = sha2::Sha256::digest(subject.as_bytes());
    format!(
        "{JWT_IDENTITY_PREFIX}{prefix}~{}",
        hex::encode(&digest[..8])
    )
}

/// A character an identity spells out as it is: none of them ends the identity's word in a caller
/// string (see [`super::caller_name`]) or needs escaping in a log line.
fn subject_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '=' | '-')
}

impl AuthSettings {
    /// Whether any credential at all is configured (then unknown callers are `anonymous`).
    pub fn any_credential(clients: &BTreeMap<String, ClientConfig>, jwt: bool) -> bool {
        jwt || clients.values().any(|c| c.token.is_some())
    }
}

/// One static secret, from exactly one of the file's value, an environment variable or a file.
pub(super) fn secret(
    c: &mut Checker,
    path: &str,
    value: Option<&String>,
    env: Option<&String>,
    file: Option<&String>,
) -> Option<SecretString> {
    let given = [value.is_some(), env.is_some(), file.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        c.problem(
            path,
            "set one of token, token_env and token_file, not several",
        );
        return None;
    }
    let text = if let Some(value) = value {
        if value.is_empty() {
            c.problem(format!("{path}.token"), "must not be empty");
            return None;
        }
        value.clone()
    } else if let Some(var) = env {
        std::env::var(var).ok().filter(|t| !t.trim().is_empty())?
    } else if let Some(file) = file {
        match std::fs::read_to_string(file) {
            Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
            Ok(_) => {
                c.problem(format!("{path}.token_file"), format!("{file} is empty"));
                return None;
            }
            Err(e) => {
                c.problem(
                    format!("{path}.token_file"),
                    format!("cannot read {file}: {e}"),
                );
                return None;
            }
        }
    } else {
        return None;
    };
    Some(SecretString::from(text))
}

/// The identity fields of one client (its token, JWT subjects and permissions), checked.
pub(super) fn client_identity(
    c: &mut Checker,
    path: &str,
    name: &str,
    raw: &RawClient,
    client: &mut ClientConfig,
) {
    if name == OPERATOR {
        c.problem(
            path,
            "\"operator\" is the identity of the control token; name the client otherwise",
        );
    }
    client.token = secret(
        c,
        path,
        raw.token.as_ref(),
        raw.token_env.as_ref(),
        raw.token_file.as_ref(),
    );
    if name == ANONYMOUS && (client.token.is_some() || !raw.jwt_subjects.is_empty()) {
        c.problem(
            path,
            "the anonymous client stands for callers without a credential: give it no token or subjects",
        );
    }
    client.jwt_subjects = raw.jwt_subjects.clone();
    client.act_for = raw.act_for.clone();
    client.read = raw.read;
    client.approve = raw.approve;
}

/// Cross-client checks: unique tokens (none equal to the control token) and subjects, `act_for` naming
/// known clients.
pub(super) fn check_clients(
    c: &mut Checker,
    clients: &BTreeMap<String, ClientConfig>,
    control_token: Option<&SecretString>,
) {
    let mut tokens = HashSet::new();
    if let Some(control) = control_token {
        tokens.insert(control.expose_secret().to_owned());
    }
    let mut subjects = HashSet::new();
    for (name, client) in clients {
        if let Some(token) = &client.token
            && !tokens.insert(token.expose_secret().to_owned())
        {
            c.problem(
                format!("clients.{name}.token"),
                "two clients share one token",
            );
        }
        for (i, subject) in client.jwt_subjects.iter().enumerate() {
            if !subjects.insert(subject.clone()) {
                c.problem(
                    format!("clients.{name}.jwt_subjects[{i}]"),
                    "two clients share one JWT subject",
                );
            }
        }
        for (i, other) in client.act_for.iter().enumerate() {
            if !clients.contains_key(other) {
                c.problem(
                    format!("clients.{name}.act_for[{i}]"),
                    format!("unknown client {other:?}"),
                );
            }
        }
    }
}

/// `auth`, checked against the clients.
pub(super) fn check_auth(
    c: &mut Checker,
    raw: &RawAuth,
    clients: &BTreeMap<String, ClientConfig>,
    control_token: bool,
) -> AuthSettings {
    let jwt = raw.jwt.as_ref().and_then(|jwt| {
        let audience = jwt.audience.clone().or_else(|| raw.resource.clone());
        let Some(audience) = audience else {
            c.problem(
                "auth.jwt.audience",
                "name the audience tokens must carry (or set auth.resource, the /mcp URL)",
            );
            return None;
        };
        if jwt.issuer.trim().is_empty() {
            c.problem("auth.jwt.issuer", "must not be empty");
        }
        let jwks = match (&jwt.jwks_file, &jwt.jwks_url) {
            (Some(file), None) => JwksSource::File(file.into()),
            (None, Some(url)) if url.starts_with("http://") => JwksSource::Url(url.clone()),
            (None, Some(url)) if url.starts_with("https://") => JwksSource::Url(url.clone()),
            (None, Some(url)) => {
                c.problem(
                    "auth.jwt.jwks_url",
                    format!("{url:?} is not an http(s) URL"),
                );
                return None;
            }
            _ => {
                c.problem("auth.jwt", "set exactly one of jwks_file and jwks_url");
                return None;
            }
        };
        if let Some(name) = &jwt.default_client
            && !clients.contains_key(name)
        {
            c.problem(
                "auth.jwt.default_client",
                format!("unknown client {name:?}: name a configured client whose allow-list JWT subjects no client lists get"),
            );
        }
        Some(JwtSettings {
            issuer: jwt.issuer.clone(),
            audience,
            jwks,
            client_claim: jwt.client_claim.clone().unwrap_or_else(|| "sub".to_owned()),
            default_client: jwt.default_client.clone(),
        })
    });
    if let Some(name) = &raw.stdio_client
        && !clients.contains_key(name)
    {
        c.problem("auth.stdio_client", format!("unknown client {name:?}"));
    }
    if raw.required && !control_token && !AuthSettings::any_credential(clients, jwt.is_some()) {
        c.problem(
            "auth.required",
            "authentication is required but no client has a token and no JWT issuer is configured",
        );
    }
    let metrics_token = raw.metrics.as_ref().and_then(|m| {
        secret(
            c,
            "auth.metrics",
            m.token.as_ref(),
            m.token_env.as_ref(),
            m.token_file.as_ref(),
        )
    });
    AuthSettings {
        metrics_token,
        required: raw.required,
        resource: raw.resource.clone(),
        authorization_servers: raw.authorization_servers.clone(),
        jwt,
        stdio_client: raw.stdio_client.clone(),
    }
}
