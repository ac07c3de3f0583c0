//! The client of an OAuth token endpoint and the cache of the token it gives: client credentials
//! (RFC 6749 section 4.4) and token exchange (RFC 8693), the client authenticated with HTTP Basic.
//!
//! A token is fetched again at 80% of its lifetime, or when the server refuses it; concurrent requests
//! wait for one fetch. Errors name the server, the endpoint and its status; whatever the endpoint says
//! is scrubbed of the secrets sent to it. Nothing here logs a token or a secret.

use crate::config::{ClientCredentials, TokenExchange};
use reqwest::RequestBuilder;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token is fetched again once this share of its lifetime has passed.
const REFRESH_AT_PERCENT: u32 = 80;
/// How long a token endpoint has to answer.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a token endpoint's answer read.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The token endpoint of one server's credential.
pub(super) struct Endpoint {
    /// Its HTTP client (the system's roots).
    http: reqwest::Client,
    server: String,
}

impl Endpoint {
    pub(super) fn new(server: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Endpoint {
            http,
            server: server.to_owned(),
        }
    }

    pub(super) async fn client_credentials(
        &self,
        settings: &ClientCredentials,
    ) -> Result<Fetched, String> {
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
        self.request(&settings.token_url, request, &form, &[secret])
            .await
    }

    pub(super) async fn exchange(
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
        self.request(&settings.token_url, request, &form, &secrets)
            .await
    }

    /// Posts `form` to a token endpoint and reads the token; errors name the server, the endpoint and
    /// its status, with the endpoint's own words scrubbed of `secrets`.
    async fn request(
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
pub(super) struct Fetched {
    header: HeaderValue,
    lifetime: Option<Duration>,
}

/// A token in use.
pub(super) struct Token {
    pub(super) header: HeaderValue,
    /// When it is fetched again (at 80% of its lifetime); `None`: when the server refuses it.
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
    /// Which fetch it came from: a `401` invalidates only the token it was sent.
    pub(super) generation: u64,
    /// The digest of the caller's token it was exchanged from.
    subject: Option<[u8; 32]>,
}

/// One token, shared by concurrent requests; fetched by one of them at a time.
#[derive(Default)]
pub(super) struct TokenCache {
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
    pub(super) async fn get<F, Fut>(
        &self,
        subject: Option<[u8; 32]>,
        fetch: F,
    ) -> Result<Arc<Token>, String>
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
    pub(super) fn invalidate(&self, generation: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|t| t.generation == generation) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            encode_form(&[("grant_type", "client_credentials"), ("scope", "a b&c=")]),
            "grant_type=client_credentials&scope=a+b%26c%3D"
        );
        assert_eq!(encode("id:with/odd chars"), "id%3Awith%2Fodd+chars");
    }
}
