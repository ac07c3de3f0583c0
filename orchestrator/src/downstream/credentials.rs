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
//! started them. A request no caller makes (the health check's `ping`, the tool listing) goes with the
//! token of the caller who last used the server, as the session it shares does; before any caller has,
//! it is refused.
//!
//! Nothing here logs, formats or records a secret: header values are marked sensitive, errors name the
//! server, the field or the endpoint and its status, and any text a token endpoint answers with is
//! scrubbed of the secrets sent to it.

use crate::config::{
    ClientCredentials, Config, Credential, ServerConfig, TokenExchange, Transport, caller_name,
};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token is fetched again once this share of its lifetime has passed.
const REFRESH_AT_PERCENT: u32 = 80;
/// How long a token endpoint has to answer.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a token endpoint's answer read.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
/// Callers whose presented JWTs (and, per server, exchanged tokens) are kept; past it the oldest goes.
const MAX_CALLERS: usize = 4096;

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

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
    /// The credential as configured (a reload that changes it gets a new client).
    configured: Option<Credential>,
    mode: Mode,
    /// The client of the token endpoint (system roots).
    http: reqwest::Client,
    presented: Arc<PresentedTokens>,
}

enum Mode {
    None,
    /// Static headers, or why they cannot be sent (a secret is absent or not a header value).
    Headers(Result<HeaderMap, String>),
    Client {
        settings: ClientCredentials,
        cache: Arc<TokenCache>,
    },
    Exchange {
        settings: TokenExchange,
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
                cache: Arc::default(),
            },
            Some(Credential::TokenExchange(settings)) => Mode::Exchange {
                settings: settings.clone(),
                caches: Mutex::default(),
                seq: AtomicU64::new(0),
                last: Mutex::default(),
            },
        };
        let http = reqwest::Client::builder()
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Credentials {
            server: server.name.clone(),
            configured: server.auth.clone(),
            mode,
            http,
            presented,
        }
    }

    /// Whether these are the credentials `server` is configured with.
    pub(super) fn serve(&self, server: &ServerConfig) -> bool {
        self.configured == server.auth
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
            .map_err(|e| format!("{e}"))?;
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
            .map_err(|e| format!("{e}"))
    }

    /// The headers for one request, and the token cache and generation they came from.
    async fn headers(&self) -> Result<(HeaderMap, Option<(Arc<TokenCache>, u64)>), String> {
        match &self.mode {
            Mode::None => Ok((HeaderMap::new(), None)),
            Mode::Headers(headers) => headers
                .clone()
                .map(|h| (h, None))
                .map_err(|e| format!("server {:?}: {e}", self.server)),
            Mode::Client { settings, cache } => {
                let token = cache
                    .get(None, || self.fetch_client_token(settings))
                    .await?;
                Ok((
                    authorization(&token),
                    Some((cache.clone(), token.generation)),
                ))
            }
            Mode::Exchange {
                settings,
                caches,
                seq,
                last,
            } => {
                // A request no caller made (the health check's ping, the tool listing) goes in
                // the session with the token of the caller who last used the server, as the
                // session itself does; a caller's own request only ever with its own.
                let found = match CALLER.try_with(Clone::clone) {
                    Ok(caller) => self.presented.of(&caller).ok_or_else(|| {
                        format!(
                            "server {:?} is sent each caller's own token (auth type token_exchange), and the caller {:?} has presented no JWT to exchange: call with a JWT from the configured issuer",
                            self.server,
                            caller_name(&caller)
                        )
                    }),
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
                    .get(Some(digest), || self.exchange(settings, &subject))
                    .await?;
                *lock(last) = Some(key);
                Ok((authorization(&token), Some((cache, token.generation))))
            }
        }
    }

    async fn fetch_client_token(&self, settings: &ClientCredentials) -> Result<Fetched, String> {
        let secret = settings
            .client_secret
            .get()
            .map_err(|e| format!("server {:?}: {e}", self.server))?;
        let mut form = vec![("grant_type", "client_credentials")];
        optional(&mut form, "scope", settings.scope.as_deref());
        optional(&mut form, "audience", settings.audience.as_deref());
        let request = self
            .http
            .post(&settings.token_url)
            .basic_auth(encode(&settings.client_id), Some(encode(secret)));
        self.token_request(&settings.token_url, request, &form, &[secret])
            .await
    }

    async fn exchange(
        &self,
        settings: &TokenExchange,
        subject: &SecretString,
    ) -> Result<Fetched, String> {
        let subject = subject.expose_secret();
        let mut form = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", TOKEN_TYPE_ACCESS),
            ("requested_token_type", TOKEN_TYPE_ACCESS),
        ];
        optional(&mut form, "audience", settings.audience.as_deref());
        optional(&mut form, "scope", settings.scope.as_deref());
        let mut request = self.http.post(&settings.token_url);
        let mut secrets = vec![subject];
        match (&settings.client_id, &settings.client_secret) {
            (Some(id), Some(secret)) => {
                let secret = secret
                    .get()
                    .map_err(|e| format!("server {:?}: {e}", self.server))?;
                secrets.push(secret);
                request = request.basic_auth(encode(id), Some(encode(secret)));
            }
            (Some(id), None) => form.push(("client_id", id)),
            (None, _) => {}
        }
        self.token_request(&settings.token_url, request, &form, &secrets)
            .await
    }

    /// Posts `form` to a token endpoint and reads the token; errors name the server, the endpoint and
    /// its status, with the endpoint's own words scrubbed of `secrets`.
    async fn token_request(
        &self,
        url: &str,
        request: RequestBuilder,
        form: &[(&str, &str)],
        secrets: &[&str],
    ) -> Result<Fetched, String> {
        let failed = |what: String| {
            let mut what = what;
            for secret in secrets {
                if !secret.is_empty() {
                    what = what.replace(secret, "[redacted]");
                }
            }
            format!(
                "server {:?}: no access token from the token endpoint {url}: {what}",
                self.server
            )
        };
        let mut response = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(encode_form(form))
            .send()
            .await
            .map_err(|e| failed(format!("{e}")))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failed(format!("the answer could not be read: {e}")))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_ANSWER_BYTES {
                return Err(failed(format!(
                    "HTTP {status}, an answer larger than {MAX_TOKEN_ANSWER_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let said = serde_json::from_slice::<TokenError>(&body)
                .map(|e| match e.error_description {
                    Some(d) => {
                        format!(": {}: {}", e.error, d.chars().take(200).collect::<String>())
                    }
                    None => format!(": {}", e.error),
                })
                .unwrap_or_default();
            return Err(failed(format!("HTTP {status}{said}")));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            failed(format!(
                "HTTP {status}, but the answer is not a token response ({e})"
            ))
        })?;
        if let Some(kind) = &answer.token_type
            && !kind.eq_ignore_ascii_case("bearer")
            && !kind.eq_ignore_ascii_case("n_a")
        {
            return Err(failed(format!(
                "the token type {kind:?} is not supported (a bearer token is)"
            )));
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| failed("the access token is not a valid header value".to_owned()))?;
        header.set_sensitive(true);
        Ok(Fetched {
            header,
            lifetime: answer.expires_in.map(Duration::from_secs),
        })
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

fn optional<'a>(form: &mut Vec<(&'a str, &'a str)>, name: &'a str, value: Option<&'a str>) {
    if let Some(value) = value {
        form.push((name, value));
    }
}

/// `application/x-www-form-urlencoded`, by the `url` crate's serializer (reqwest's own `Url`).
fn encode_form(pairs: &[(&str, &str)]) -> String {
    let Ok(mut url) = reqwest::Url::parse("http://form.invalid/") else {
        return String::new();
    };
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

/// One value form-encoded, as RFC 6749 asks of the client id and secret in HTTP Basic.
fn encode(value: &str) -> String {
    encode_form(&[("v", value)])
        .strip_prefix("v=")
        .unwrap_or_default()
        .to_owned()
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// A token as fetched.
struct Fetched {
    header: HeaderValue,
    lifetime: Option<Duration>,
}

/// A token in use.
struct Token {
    header: HeaderValue,
    /// When it is fetched again (at 80% of its lifetime); `None`: when the server refuses it.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// Which fetch it came from: a `401` invalidates only the token it was sent.
    generation: u64,
    /// The digest of the caller's token it was exchanged from.
    subject: Option<[u8; 32]>,
}

/// One token, shared by concurrent requests; fetched by one of them at a time.
#[derive(Default)]
struct TokenCache {
    current: Mutex<Option<Arc<Token>>>,
    fetching: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

impl TokenCache {
    fn current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Token>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token while it need not be fetched again (for the caller's token `subject`).
    fn fresh(&self, subject: Option<[u8; 32]>) -> Option<Arc<Token>> {
        let now = Instant::now();
        self.current()
            .as_ref()
            .filter(|t| t.subject == subject && t.refresh_at.is_none_or(|at| now < at))
            .cloned()
    }

    /// The current token, fetching one (once, whoever else waits) when there is none or it is due.
    /// A fetch that fails while the current token has not expired keeps that one.
    async fn get<F, Fut>(&self, subject: Option<[u8; 32]>, fetch: F) -> Result<Arc<Token>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, String>>,
    {
        if let Some(token) = self.fresh(subject) {
            return Ok(token);
        }
        let _fetching = self.fetching.lock().await;
        if let Some(token) = self.fresh(subject) {
            return Ok(token);
        }
        let started = Instant::now();
        match fetch().await {
            Ok(fetched) => {
                let token = Arc::new(Token {
                    header: fetched.header,
                    refresh_at: fetched
                        .lifetime
                        .map(|l| started + l * REFRESH_AT_PERCENT / 100),
                    expires_at: fetched.lifetime.map(|l| started + l),
                    generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
                    subject,
                });
                *self.current() = Some(token.clone());
                Ok(token)
            }
            Err(error) => {
                let now = Instant::now();
                let usable = self
                    .current()
                    .clone()
                    .filter(|t| t.subject == subject && t.expires_at.is_some_and(|at| now < at));
                match usable {
                    Some(token) => {
                        tracing::warn!(%error, "a token could not be fetched again; the current one is used until it expires");
                        Ok(token)
                    }
                    None => Err(error),
                }
            }
        }
    }

    /// Forgets the token of fetch `generation` (the server refused it), unless a newer one replaced it.
    fn invalidate(&self, generation: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|t| t.generation == generation) {
            *current = None;
        }
    }
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

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            encode_form(&[("grant_type", "client_credentials"), ("scope", "a b&c=")]),
            "grant_type=client_credentials&scope=a+b%26c%3D"
        );
        assert_eq!(encode("id:with/odd chars"), "id%3Awith%2Fodd+chars");
    }
}
