//! Who a caller is, from the credential it presents, and what that identity may do beyond calling tools.
//!
//! Every front (MCP over Streamable HTTP and stdio, gRPC) turns the `Authorization: Bearer` header into an
//! [`Identity`] here: a client's static token, the shared control token (identity `operator`), or a JWT
//! validated against a JWKS (issuer, audience, expiry, not-before; see [`jwt`]). No credential gives the
//! `anonymous` identity (or 401 when authentication is required); a wrong one is always refused. A
//! valid JWT whose subject no client lists is its own identity `jwt:SUB`, never `anonymous` (or 401
//! when authentication is required and no `auth.jwt.default_client` admits such subjects).
//!
//! The identity goes into the gateway as the first word of the `caller` string
//! ([`Identity::caller`]); what the caller says about itself (MCP `clientInfo.name`, gRPC
//! `x-conductor-caller`, `--as`) follows in parentheses as a label that nothing looks up.
//!
//! This module never logs or formats a secret, never compares one with `==` (only [`secret_eq`]), and
//! never trusts a name a caller chose.

pub mod grpc;
pub mod http;
mod jwt;
mod permit;

pub use jwt::JwtError;
pub use permit::{permit_approval_reads, permit_approve, permit_owner, permit_read, permit_reload};

use crate::config::{ANONYMOUS, Config, OPERATOR, jwt_identity};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Makes rustls's ring provider the process's TLS provider (https key sets, https MCP servers).
/// Idempotent: a provider already installed stays.
pub fn install_tls_provider() {
    conductor_proto::tls::install_provider();
}

/// A log directive added to every filter: the MCP SDK's session layer logs session ids (at `info`
/// when a session is created), and a session id is a secret.
pub const QUIET_SESSION_LOGS: &str = "rmcp::transport::streamable_http_server=warn";

/// Who a caller is, as its credential proves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// A configured client's name, [`OPERATOR`], [`ANONYMOUS`], or `jwt:SUB` for a JWT subject no
    /// client lists ([`jwt_identity`]).
    pub name: String,
    pub proof: Proof,
}

/// How the identity was established.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Proof {
    /// No credential.
    None,
    /// A client's static bearer token.
    Token,
    /// The shared control token.
    ControlToken,
    /// A valid JWT; `subject` is the value of the configured client claim.
    Jwt { subject: String },
    /// The process that started an MCP session over stdio (configured as `auth.stdio_client`).
    Stdio,
    /// A client certificate the listener verified; `subject` is its common name, which a client
    /// lists as `tls_subject`.
    Certificate { subject: String },
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            name: ANONYMOUS.to_owned(),
            proof: Proof::None,
        }
    }

    /// The identity of an MCP session over stdio: the configured `auth.stdio_client`, else anonymous.
    pub fn stdio(config: &Config) -> Self {
        match &config.auth.stdio_client {
            Some(name) => Identity {
                name: name.clone(),
                proof: Proof::Stdio,
            },
            None => Identity::anonymous(),
        }
    }

    /// The caller string the gateway records: the identity first, then in parentheses how it was
    /// proven and the caller's self-description (`label`), which grants nothing.
    pub fn caller(&self, label: &str) -> String {
        let proof = match &self.proof {
            Proof::None => "no credential".to_owned(),
            Proof::Token => "token".to_owned(),
            Proof::ControlToken => "control token".to_owned(),
            Proof::Jwt { subject } => format!("jwt {}", sanitize(subject)),
            Proof::Stdio => "stdio".to_owned(),
            Proof::Certificate { subject } => format!("certificate {}", sanitize(subject)),
        };
        let label = sanitize(label);
        if label.is_empty() {
            format!("{} ({proof})", self.name)
        } else {
            format!("{} ({proof}; {label})", self.name)
        }
    }
}

/// A self-description fit for a record: printable characters only, at most 80 of them.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "authentication is required: send `Authorization: Bearer <token>` (a client token or a JWT)"
    )]
    Missing,
    #[error("the bearer token is not valid here")]
    UnknownToken,
    #[error("the JWT was refused: {0}")]
    Jwt(#[from] JwtError),
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error(
        "the JWT is valid, but its subject ({0}) is listed by no client (clients.*.jwt_subjects), and with auth.required such subjects are refused unless auth.jwt.default_client names a client for them"
    )]
    UnlistedSubject(String),
    /// Two credentials: whichever one a proxy in front reads, it could differ from ours.
    #[error("more than one Authorization header: send exactly one")]
    Ambiguous,
    #[error(
        "the client certificate is valid, but its subject ({0}) is listed by no client (clients.*.tls_subject)"
    )]
    UnlistedCertificate(String),
    #[error(
        "the client certificate is valid, but its subject has no common name (CN) to match clients.*.tls_subject"
    )]
    CertificateWithoutSubject,
}

impl From<AuthError> for crate::Error {
    fn from(error: AuthError) -> Self {
        crate::Error::Unauthenticated(error.to_string())
    }
}

/// Compares two secrets in constant time (for equal lengths).
pub fn secret_eq(given: &str, expected: &SecretString) -> bool {
    bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes()))
}

/// The bearer token of an `Authorization` header value; `Err` when the header is not a bearer one.
pub fn bearer_token(value: &str) -> Result<&str, AuthError> {
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Turns credentials into identities; holds the JWKS cache. Cheap to clone.
#[derive(Clone, Default)]
pub struct Authenticator {
    keys: Arc<jwt::KeyCache>,
    /// Where a caller's JWT is kept for servers that exchange it (`token_exchange`), if anywhere.
    presented: Option<Arc<crate::downstream::credentials::PresentedTokens>>,
}

impl Authenticator {
    pub fn new() -> Self {
        Self::default()
    }

    /// An authenticator that keeps each caller's JWT in `presented`, from which a server with
    /// `token_exchange` is sent a token for that caller.
    pub fn keeping_tokens(presented: Arc<crate::downstream::credentials::PresentedTokens>) -> Self {
        Authenticator {
            presented: Some(presented),
            ..Self::default()
        }
    }

    /// The identity behind a request's bearer token or, without one, behind the client certificate
    /// its connection presented and the listener verified: the client whose `tls_subject` is the
    /// certificate's common name. A certificate no client lists is refused, never `anonymous`. A
    /// bearer token, when sent, decides alone.
    pub async fn identify_with_certificate(
        &self,
        config: &Config,
        token: Option<&str>,
        certificate: Option<&crate::tls::PeerCertificate>,
    ) -> Result<Identity, AuthError> {
        let (None, Some(certificate)) = (token, certificate) else {
            return self.identify(config, token).await;
        };
        let subject = certificate
            .subject
            .as_deref()
            .ok_or(AuthError::CertificateWithoutSubject)?;
        let client = config
            .clients
            .values()
            .find(|c| c.tls_subject.as_deref() == Some(subject))
            .ok_or_else(|| AuthError::UnlistedCertificate(sanitize(subject)))?;
        Ok(Identity {
            name: client.name.clone(),
            proof: Proof::Certificate {
                subject: subject.to_owned(),
            },
        })
    }

    /// The identity behind `token` (the bearer token, if any) under `config`.
    pub async fn identify(
        &self,
        config: &Config,
        token: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            if config.auth.required {
                return Err(AuthError::Missing);
            }
            return Ok(Identity::anonymous());
        };
        if let Some(identity) = static_identity(config, token) {
            return Ok(identity);
        }
        if let Some(settings) = &config.auth.jwt
            && token.bytes().filter(|b| *b == b'.').count() == 2
        {
            let subject = self.keys.validate(settings, token).await?;
            let listed = config
                .clients
                .values()
                .find(|c| c.jwt_subjects.iter().any(|s| s == &subject));
            let name = match listed {
                Some(client) => client.name.clone(),
                // An authenticated subject is its own identity, never `anonymous`: it holds its
                // own sessions and workflows. Where authentication is required, only the
                // configured default client admits a subject no client lists.
                None if config.auth.required && settings.default_client.is_none() => {
                    return Err(AuthError::UnlistedSubject(jwt_identity(&subject)));
                }
                None => jwt_identity(&subject),
            };
            if let Some(presented) = &self.presented {
                presented.remember(config, &name, &subject, token);
            }
            return Ok(Identity {
                name,
                proof: Proof::Jwt { subject },
            });
        }
        Err(AuthError::UnknownToken)
    }
}

/// The control token or a client's static token; every configured token is compared, so the time taken
/// does not say which one matched.
fn static_identity(config: &Config, token: &str) -> Option<Identity> {
    let mut found = None;
    if config
        .control_token
        .as_ref()
        .is_some_and(|expected| secret_eq(token, expected))
    {
        found = Some(Identity {
            name: OPERATOR.to_owned(),
            proof: Proof::ControlToken,
        });
    }
    for client in config.clients.values() {
        if client
            .token
            .as_ref()
            .is_some_and(|expected| secret_eq(token, expected))
        {
            found = Some(Identity {
                name: client.name.clone(),
                proof: Proof::Token,
            });
        }
    }
    found
}

/// Checks before listening: refuses an address beyond loopback without TLS (`listen.tls`, or
/// `listen.tls_terminated_in_front` when a proxy in front ends it) or unless authentication is
/// required (`auth.required`), and returns the warnings to log (no control token: anyone who
/// reaches the gRPC port may approve, cancel and reload).
pub fn startup_check(
    config: &Config,
    addresses: &[std::net::SocketAddr],
) -> Result<Vec<String>, String> {
    if let Some(open) = addresses.iter().find(|a| !a.ip().is_loopback())
        && config.listen.tls.is_none()
        && !config.listen.tls_terminated_in_front
    {
        return Err(format!(
            "refusing to listen on {open}, beyond loopback, without TLS: set \"listen\": {{\"tls\": {{\"cert_file\": ..., \"key_file\": ...}}}}, or \"listen\": {{\"tls_terminated_in_front\": true}} if a proxy in front of the orchestrator ends TLS, or listen on 127.0.0.1"
        ));
    }
    if let Some(open) = addresses.iter().find(|a| !a.ip().is_loopback())
        && !config.auth.required
    {
        return Err(format!(
            "refusing to listen on {open}, beyond loopback, without authentication: set \"auth\": {{\"required\": true}} with client tokens or a JWT issuer, or listen on 127.0.0.1"
        ));
    }
    let mut warnings = Vec::new();
    if config.control_token.is_none() {
        warnings.push("no control token is configured (control.token_env): approvals, cancel and reload are open to anyone who reaches the gRPC port unless clients with \"approve\" are configured".to_owned());
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests;
