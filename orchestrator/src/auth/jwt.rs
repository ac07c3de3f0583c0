//! JWT validation against a JWKS, with the `jsonwebtoken` crate (no hand-written crypto).
//!
//! The key set is read from a file or fetched from an `http` URL (this build has no TLS), cached, and read again when a token
//! names a `kid` the cache does not have (at most once per [`REFRESH_INTERVAL`], so unknown kids cannot
//! make us hammer the key server). Only asymmetric algorithms are accepted, and a key that states its
//! algorithm is used with that algorithm only. Issuer, audience, expiry and not-before are checked.

use crate::config::{JwksSource, JwtSettings};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// The least time between two reads of the key set.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// A key set bigger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long a JWKS URL may take to answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("{0}")]
    Invalid(String),
    #[error("it is signed by an unknown key (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("algorithm {0:?} is not accepted (asymmetric signatures only)")]
    Algorithm(Algorithm),
    #[error("the key set cannot be read: {0}")]
    Keys(String),
    #[error("it has no {0:?} claim naming the client")]
    NoClientClaim(String),
}

/// The cached key set of the configured source. The lock is an async one held across the read of the
/// key set, on purpose: concurrent tokens with an unknown kid cause one read, not one each.
pub(super) struct KeyCache {
    state: tokio::sync::Mutex<Option<Cached>>,
    refresh_interval: Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            state: tokio::sync::Mutex::default(),
            refresh_interval: REFRESH_INTERVAL,
        }
    }
}

struct Cached {
    source: JwksSource,
    keys: JwkSet,
    read_at: Instant,
}

impl KeyCache {
    /// Validates `token` and returns the value of the client claim.
    pub(super) async fn validate(
        &self,
        settings: &JwtSettings,
        token: &str,
    ) -> Result<String, JwtError> {
        let header = decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(JwtError::Algorithm(header.alg));
        }
        let jwk = self.key(&settings.jwks, header.kid.as_deref()).await?;
        if let Some(stated) = jwk.common.key_algorithm
            && stated.to_string() != format!("{:?}", header.alg)
        {
            return Err(JwtError::Invalid(format!(
                "the key is for {stated}, the token says {:?}",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| JwtError::Keys(e.to_string()))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 30;
        let claims = decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| JwtError::Invalid(e.to_string()))?
            .claims;
        claims
            .get(&settings.client_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| JwtError::NoClientClaim(settings.client_claim.clone()))
    }

    /// The key named `kid` (or the only key, when the token names none).
    async fn key(&self, source: &JwksSource, kid: Option<&str>) -> Result<Jwk, JwtError> {
        let mut state = self.state.lock().await;
        let fresh_enough = match state.as_ref() {
            Some(cached) if &cached.source == source => {
                if let Some(jwk) = find(&cached.keys, kid) {
                    return Ok(jwk);
                }
                cached.read_at.elapsed() < self.refresh_interval
            }
            _ => false,
        };
        if fresh_enough {
            return Err(JwtError::UnknownKey(kid.map(str::to_owned)));
        }
        let keys = read(source).await?;
        let found = find(&keys, kid);
        *state = Some(Cached {
            source: source.clone(),
            keys,
            read_at: Instant::now(),
        });
        found.ok_or_else(|| JwtError::UnknownKey(kid.map(str::to_owned)))
    }
}

fn find(keys: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => keys.find(kid).cloned(),
        None if keys.keys.len() == 1 => keys.keys.first().cloned(),
        None => None,
    }
}

async fn read(source: &JwksSource) -> Result<JwkSet, JwtError> {
    let bytes = match source {
        JwksSource::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| JwtError::Keys(format!("{}: {e}", path.display())))?,
        JwksSource::Url(url) => fetch(url).await?,
    };
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwtError::Keys("the key set is larger than 1 MiB".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| JwtError::Keys(format!("not a JWKS: {e}")))
}

async fn fetch(url: &str) -> Result<Vec<u8>, JwtError> {
    crate::auth::install_tls_provider();
    let fail = |e: reqwest::Error| JwtError::Keys(format!("{url}: {e}"));
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(fail)?;
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(fail)?;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(fail)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwtError::Keys(format!("{url}: larger than 1 MiB")));
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// Test-only Ed25519 keys.
    const K1: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIEaE7KH2R6HyQkkjAo8Pjp1xi27oAYcG/rzG0eOIX4Ru\n-----END PRIVATE KEY-----\n";
    const K2: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIH1G6Awdc/77H3M+TWeb8yKxroBuXkHg9rks2FOhyTsD\n-----END PRIVATE KEY-----\n";

    fn jwk(pem: &str, kid: &str) -> Jwk {
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("key");
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    fn token(pem: &str, kid: &str, sub: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.into());
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let claims = json!({ "iss": "i", "aud": "a", "sub": sub, "exp": exp });
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, &claims, &key).expect("signed")
    }

    /// An https key set is fetched over TLS: the server sees a TLS handshake, and a server that does
    /// not speak TLS is an error naming the URL, never a panic.
    #[tokio::test]
    async fn an_https_key_set_is_fetched_over_tls() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut first = [0u8; 1];
            socket.read_exact(&mut first).await.expect("read");
            first[0]
        });
        let url = format!("https://{addr}/jwks.json");
        let error = fetch(&url).await.expect_err("not a TLS server");
        assert!(error.to_string().contains(&url), "{error}");
        assert_eq!(
            server.await.expect("server"),
            0x16,
            "a TLS handshake record"
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_reads_the_key_set_again_but_not_too_often() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        let write = |keys: Vec<Jwk>| {
            std::fs::write(
                &path,
                serde_json::to_string(&JwkSet { keys }).expect("json"),
            )
            .expect("written")
        };
        write(vec![jwk(K1, "k1")]);
        let settings = JwtSettings {
            issuer: "i".into(),
            audience: "a".into(),
            jwks: JwksSource::File(path.clone()),
            client_claim: "sub".into(),
            default_client: None,
        };
        let rotating = KeyCache {
            refresh_interval: Duration::ZERO,
            ..KeyCache::default()
        };
        let steady = KeyCache::default();
        for cache in [&rotating, &steady] {
            let sub = cache.validate(&settings, &token(K1, "k1", "s1")).await;
            assert_eq!(sub.ok().as_deref(), Some("s1"));
        }
        write(vec![jwk(K1, "k1"), jwk(K2, "k2")]);
        let rotated = token(K2, "k2", "s2");
        assert_eq!(
            rotating.validate(&settings, &rotated).await.ok().as_deref(),
            Some("s2"),
            "the new key is fetched"
        );
        assert!(
            matches!(
                steady.validate(&settings, &rotated).await,
                Err(JwtError::UnknownKey(_))
            ),
            "within the refresh interval the key set is not read again"
        );
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({ "iss": "i", "aud": "a", "sub": "s", "exp": 4_000_000_000u64 }),
            &EncodingKey::from_secret(b"k1").expect("secret"),
        )
        .expect("signed");
        assert!(matches!(
            rotating.validate(&settings, &hmac).await,
            Err(JwtError::Algorithm(Algorithm::HS256))
        ));
    }
}
