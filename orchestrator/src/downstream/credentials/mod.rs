//! The credential a downstream MCP server over HTTP is sent (`servers.NAME.auth`): static headers, an
//! OAuth 2.1 client-credentials token, or the caller's own token exchanged at a token endpoint (RFC
//! 8693), on every request the MCP client makes ([`Credentials::send`]).
//!
//! Tokens are cached and fetched again at 80% of their lifetime, and once when the server answers
//! `401` (the request is then sent once more); concurrent requests share one fetch. An exchanged
//! token is cached per caller (its identity and JWT subject), and exchanged again when the caller
//! presents a new token. Which caller a request is for travels with the forwarded call as a task-local
//! ([`as_caller`]); the token it exchanges is the JWT that caller last proved itself with
//! ([`PresentedTokens`]), so a template's later steps and a resumed approval act for the person who
//! started them. Each caller of such a server has a client and a session of its own ([`client_key`]),
//! since a server may bind a session to the person it was opened for. A request no caller makes (the
//! health check's `ping`, the tool listing) goes in the session of the caller who last used the
//! server, with that caller's token; before any caller has, it is refused.
//!
//! Nothing here logs, formats or records a secret: header values are marked sensitive, errors name the
//! server, the field or the endpoint and its status, and any text a token endpoint answers with is
//! scrubbed of the secrets sent to it.

mod token;

use crate::config::{
    ClientCredentials, ClientTlsFiles, Config, Credential, ServerConfig, TokenExchange, Transport,
    caller_name,
};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use token::{Token, TokenCache};

/// Callers whose presented JWTs (and, per server, exchanged tokens) are kept; past it the oldest goes.
const MAX_CALLERS: usize = 4096;

tokio::task_local! {
    /// The caller string of the call being forwarded (see [`as_caller`]).
    static CALLER: String;
}

/// Runs `work` (the forwarding of one call) as `caller`: a token-exchange server is sent a token
/// for that caller.
pub async fn as_caller<F: Future>(caller: &str, work: F) -> F::Output {
    CALLER.scope(caller.to_owned(), work).await
}

/// The JWTs callers proved themselves with, by identity and subject: what a token-exchange server's
/// token is exchanged from. Kept only while some server exchanges tokens; bounded.
#[derive(Default)]
pub struct PresentedTokens {
    tokens: Mutex<HashMap<String, (u64, Arc<SecretString>)>>,
    seq: AtomicU64,
    /// By server: the key of the caller it was last sent a token for.
    last: Mutex<HashMap<String, String>>,
}

impl PresentedTokens {
    /// Keeps `token` as the JWT the identity `name` with `subject` last proved itself with, when
    /// some server of `config` exchanges callers' tokens.
    pub fn remember(&self, config: &Config, name: &str, subject: &str, token: &str) {
        let exchanging = config
            .servers
            .values()
            .any(|s| matches!(s.auth, Some(Credential::TokenExchange(_))));
        if !exchanging || !plain_subject(subject) {
            return;
        }
        let key = caller_key(name, subject);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, kept)) = tokens.get_mut(&key) {
            if kept.expose_secret() != token {
                *kept = Arc::new(SecretString::from(token.to_owned()));
            }
            *at = seq;
            return;
        }
        if tokens.len() >= MAX_CALLERS
            && let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(key, (seq, Arc::new(SecretString::from(token.to_owned()))));
    }

    /// The JWT the caller of `caller` (a caller string) last presented, with the key it is kept by.
    fn of(&self, caller: &str) -> Option<(String, Arc<SecretString>)> {
        self.by_key(&key_of_caller(caller)?)
    }

    fn by_key(&self, key: &str) -> Option<(String, Arc<SecretString>)> {
        let tokens = lock(&self.tokens);
        tokens
            .get(key)
            .map(|(_, token)| (key.to_owned(), token.clone()))
    }
}

/// The most clients (each with its own session) one token-exchange server has at once, one per caller;
/// past it one goes (a call holding it finishes on it).
const MAX_CALLER_CLIENTS: usize = 256;

/// Where `Downstream` keeps the client of `server` for the call being forwarded: under the server's
/// name, and for a server that exchanges callers' tokens, under the caller's key too, so that each
/// person has a session of their own (a server may bind a session to whom it was opened for). A
/// request no caller makes goes to the client of the caller who last used the server.
pub(super) fn client_key(server: &ServerConfig, presented: &PresentedTokens) -> String {
    if !matches!(server.auth, Some(Credential::TokenExchange(_))) {
        return server.name.clone();
    }
    let caller = match CALLER.try_with(|caller| key_of_caller(caller)) {
        Ok(caller) => caller,
        Err(_) => lock(&presented.last).get(&server.name).cloned(),
    };
    match caller {
        Some(key) => format!("{}{CALLER_SEPARATOR}{key}", server.name),
        None => server.name.clone(),
    }
}

/// Whether `server` is sent each caller's own token and no caller has used it yet: the health
/// check has nobody to check it as, so it is "not started" (as an MCP child process no call started).
pub(super) fn awaits_caller(server: &ServerConfig, presented: &PresentedTokens) -> bool {
    matches!(server.auth, Some(Credential::TokenExchange(_)))
        && !lock(&presented.last).contains_key(&server.name)
}

/// Makes room in `clients` (keyed by [`client_key`]) for one more caller's client of `server`.
pub(super) fn make_room<V>(clients: &mut HashMap<String, V>, server: &str) {
    let prefix = format!("{server}{CALLER_SEPARATOR}");
    let mut callers = clients.keys().filter(|k| k.starts_with(&prefix));
    if callers.clone().count() >= MAX_CALLER_CLIENTS
        && let Some(key) = callers.next().cloned()
    {
        clients.remove(&key);
    }
}

const CALLER_SEPARATOR: char = '\u{1f}';

/// Says at start-up, per server reached over HTTP, which credential it is sent and whether each
/// secret is there (never a value); a missing one is a warning, since that server's calls fail.
pub fn log_credentials(config: &Config) {
    for server in config.servers.values() {
        if !matches!(server.transport, Transport::McpHttp { .. }) {
            continue;
        }
        let summary = Credential::summary(server.auth.as_ref());
        if summary.secrets.iter().all(|s| s.present) {
            tracing::info!(server = %server.name, credential = %summary, "downstream credential");
        } else {
            tracing::warn!(server = %server.name, credential = %summary, "downstream credential incomplete: calls to this server fail until its secret is there");
        }
    }
}

/// Why a caller cannot call a token-exchange server.
fn no_jwt(server: &str, caller: &str) -> String {
    format!(
        "server {server:?} is sent each caller's own token (auth type token_exchange), and the caller {:?} has presented no JWT to exchange: call with a JWT from the configured issuer",
        caller_name(caller)
    )
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A subject that a caller string spells out exactly and unambiguously (see [`key_of_caller`]).
fn plain_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.chars().count() <= 80
        && subject.trim() == subject
        && !subject
            .chars()
            .any(|c| c.is_control() || c == ';' || c == ')')
}

fn caller_key(name: &str, subject: &str) -> String {
    format!("{name} (jwt {subject})")
}

/// The key of a caller string written by `Identity::caller` for a JWT: `NAME (jwt SUBJECT; label)`.
fn key_of_caller(caller: &str) -> Option<String> {
    let name = caller_name(caller);
    let rest = caller.strip_prefix(name)?.strip_prefix(" (jwt ")?;
    let end = rest.find([';', ')'])?;
    Some(caller_key(name, &rest[..end]))
}

/// One server's credential, ready to put on requests.
pub(super) struct Credentials {
    server: String,
    /// The credential and TLS files as configured (a reload that changes them gets a new client).
    configured: (Option<Credential>, Option<ClientTlsFiles>),
    /// What the server's certificate is checked against, for errors.
    trust: String,
    mode: Mode,
    presented: Arc<PresentedTokens>,
}

enum Mode {
    None,
    /// Static headers, or why they cannot be sent (a secret is absent or not a header value).
    Headers(Result<HeaderMap, String>),
    Client {
        settings: ClientCredentials,
        endpoint: token::Endpoint,
        cache: Arc<TokenCache>,
    },
    Exchange {
        settings: TokenExchange,
        endpoint: token::Endpoint,
        caches: Mutex<HashMap<String, (u64, Arc<TokenCache>)>>,
        seq: AtomicU64,
        /// The key of the caller whose token the server was last sent.
        last: Mutex<Option<String>>,
    },
}

impl Credentials {
    pub(super) fn new(server: &ServerConfig, presented: Arc<PresentedTokens>) -> Self {
        let mode = match &server.auth {
            None => Mode::None,
            Some(Credential::Headers(headers)) => Mode::Headers(static_headers(headers)),
            Some(Credential::ClientCredentials(settings)) => Mode::Client {
                settings: settings.clone(),
                endpoint: token::Endpoint::new(&server.name),
                cache: Arc::default(),
            },
            Some(Credential::TokenExchange(settings)) => Mode::Exchange {
                settings: settings.clone(),
                endpoint: token::Endpoint::new(&server.name),
                caches: Mutex::default(),
                seq: AtomicU64::new(0),
                last: Mutex::default(),
            },
        };
        Credentials {
            server: server.name.clone(),
            configured: (server.auth.clone(), server.tls.clone()),
            trust: trust(server),
            mode,
            presented,
        }
    }

    /// Refuses a request the server could not be sent a credential for because of who calls (a
    /// caller with no JWT to exchange), before the session shared with other callers is touched.
    pub(super) fn ready(&self) -> Result<(), crate::Error> {
        let Mode::Exchange { .. } = &self.mode else {
            return Ok(());
        };
        match CALLER.try_with(Clone::clone) {
            Ok(caller) if self.presented.of(&caller).is_none() => Err(
                crate::Error::PermissionDenied(no_jwt(&self.server, &caller)),
            ),
            _ => Ok(()),
        }
    }

    /// Whether these are the credentials and TLS files `server` is configured with.
    pub(super) fn serve(&self, server: &ServerConfig) -> bool {
        self.configured.0 == server.auth && self.configured.1 == server.tls
    }

    /// Sends the request `build` makes with the credential's headers; when the server answers `401`
    /// to a token, fetches a new one and sends the request once more.
    pub(super) async fn send(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, String> {
        let (headers, used) = self.headers().await?;
        let response = build()
            .headers(headers)
            .send()
            .await
            .map_err(|e| self.unsent(&e))?;
        let Some((cache, generation)) = used else {
            return Ok(response);
        };
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        tracing::info!(server = %self.server, "the MCP server refused its access token (401): fetching a new one and sending the request again");
        cache.invalidate(generation);
        let (headers, _) = self.headers().await?;
        build()
            .headers(headers)
            .send()
            .await
            .map_err(|e| self.unsent(&e))
    }

    /// Why a request was not answered: the error and its causes (a TLS failure says why, and
    /// what the certificate was checked against).
    fn unsent(&self, error: &reqwest::Error) -> String {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        let client_cert = self
            .configured
            .1
            .as_ref()
            .and_then(|t| t.cert_file.as_ref());
        if text.contains("invalid peer certificate") {
            text.push_str(&format!(
                " (the server's certificate was checked against {})",
                self.trust
            ));
        } else if text.contains("alert: CertificateRequired") {
            text.push_str(&format!(
                " (the server wants a client certificate: set servers.{}.tls.cert_file and key_file)",
                self.server
            ));
        } else if let Some(file) = client_cert
            && [
                "alert: BadCertificate",
                "alert: UnknownCA",
                "alert: CertificateUnknown",
            ]
            .iter()
            .any(|alert| text.contains(alert))
        {
            text.push_str(&format!(
                " (the server refused the client certificate {} of servers.{}.tls.cert_file)",
                file.display(),
                self.server
            ));
        }
        text
    }

    /// The headers for one request, and the token cache and generation they came from.
    async fn headers(&self) -> Result<(HeaderMap, Option<(Arc<TokenCache>, u64)>), String> {
        match &self.mode {
            Mode::None => Ok((HeaderMap::new(), None)),
            Mode::Headers(headers) => headers
                .clone()
                .map(|h| (h, None))
                .map_err(|e| format!("server {:?}: {e}", self.server)),
            Mode::Client {
                settings,
                endpoint,
                cache,
            } => {
                let token = cache
                    .get(None, || endpoint.client_credentials(settings))
                    .await?;
                Ok((
                    authorization(&token),
                    Some((cache.clone(), token.generation)),
                ))
            }
            Mode::Exchange {
                settings,
                endpoint,
                caches,
                seq,
                last,
            } => {
                // A request no caller made (the health check's ping, the tool listing) goes in
                // the session with the token of the caller who last used the server, as the
                // session itself does; a caller's own request only ever with its own.
                let found = match CALLER.try_with(Clone::clone) {
                    Ok(caller) => self
                        .presented
                        .of(&caller)
                        .ok_or_else(|| no_jwt(&self.server, &caller)),
                    Err(_) => lock(last)
                        .clone()
                        .and_then(|key| self.presented.by_key(&key))
                        .ok_or_else(|| {
                            format!(
                                "server {:?} is sent each caller's own token (auth type token_exchange), and no caller has called it yet",
                                self.server
                            )
                        }),
                };
                let (key, subject) = found?;
                let digest: [u8; 32] = Sha256::digest(subject.expose_secret().as_bytes()).into();
                let cache = per_caller(caches, seq, &key);
                let token = cache
                    .get(Some(digest), || endpoint.exchange(settings, &subject))
                    .await?;
                lock(&self.presented.last).insert(self.server.clone(), key.clone());
                *lock(last) = Some(key);
                Ok((authorization(&token), Some((cache, token.generation))))
            }
        }
    }
}

/// The HTTP client of an MCP server: keep-alive connections, and for `https` the TLS of
/// `servers.NAME.tls` (its CA bundle instead of the system roots, its client certificate for mutual
/// TLS), else the system's roots.
pub(super) fn http_client(server: &ServerConfig, url: &str) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true);
    if let Some(files) = &server.tls {
        let tls = conductor_proto::tls::ClientTls {
            ca_file: files.ca_file.clone(),
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
        };
        let mut config = tls
            .rustls_config()
            .map_err(|e| format!("servers.{}.tls: {e}", server.name))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        builder = builder.tls_backend_preconfigured(config);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build an HTTP client for {url}: {e}"))
}

/// What a server's certificate is checked against, in words.
fn trust(server: &ServerConfig) -> String {
    match server.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(file) => format!(
            "the CA file {} (servers.{}.tls.ca_file)",
            file.display(),
            server.name
        ),
        None => "the system's root certificates".to_owned(),
    }
}

/// The token cache of one caller of a token-exchange server.
fn per_caller(
    caches: &Mutex<HashMap<String, (u64, Arc<TokenCache>)>>,
    seq: &AtomicU64,
    key: &str,
) -> Arc<TokenCache> {
    let at = seq.fetch_add(1, Ordering::Relaxed);
    let mut caches = caches.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((used, cache)) = caches.get_mut(key) {
        *used = at;
        return cache.clone();
    }
    if caches.len() >= MAX_CALLERS
        && let Some(oldest) = caches
            .iter()
            .min_by_key(|(_, (u, _))| *u)
            .map(|(k, _)| k.clone())
    {
        caches.remove(&oldest);
    }
    let cache = Arc::<TokenCache>::default();
    caches.insert(key.to_owned(), (at, cache.clone()));
    cache
}

fn authorization(token: &Token) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, token.header.clone());
    headers
}

/// The static headers of a `bearer` or `headers` credential, marked sensitive.
fn static_headers(headers: &[crate::config::SecretHeader]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for header in headers {
        let secret = header.secret.get()?;
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("{} is not a header name", header.secret.field))?;
        let mut value =
            HeaderValue::from_str(&format!("{}{secret}", header.prefix)).map_err(|_| {
                format!(
                    "{} (from {}) is not a valid header value",
                    header.secret.field, header.secret.source
                )
            })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Identity, Proof};

    #[test]
    fn a_caller_string_finds_the_key_of_its_identity_and_subject() {
        let identity = Identity {
            name: "agents".into(),
            proof: Proof::Jwt {
                subject: "alice@example.com".into(),
            },
        };
        let key = caller_key("agents", "alice@example.com");
        assert_eq!(key_of_caller(&identity.caller("claude")), Some(key.clone()));
        assert_eq!(key_of_caller(&identity.caller("")), Some(key));
        let bob = Identity {
            name: "agents".into(),
            proof: Proof::Jwt {
                subject: "bob".into(),
            },
        };
        assert_ne!(
            key_of_caller(&bob.caller("alice@example.com")),
            key_of_caller(&identity.caller(""))
        );
        assert_eq!(key_of_caller("agents (token; x)"), None);
        assert!(!plain_subject("a; b") && !plain_subject("a)") && plain_subject("a.b@c"));
    }
}
