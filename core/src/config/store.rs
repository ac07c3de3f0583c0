//! `store`: where the orchestrator keeps its audit log. Absent, it is local files (`audit.dir`),
//! exactly as always; `{"postgres": {...}}` puts the records in PostgreSQL, the foundation of a
//! cluster (one writer at a time by a fenced lease; standbys to follow).
//!
//! Checked here: the shape, the lease's length, where the connection string comes from (given,
//! or an environment variable that must be set). Whether the string parses and the server answers
//! is the orchestrator's to find out when it starts: nothing here opens a connection.

use super::check::Checker;
use super::raw::RawClientTls;
use super::tls::{ClientTlsFiles, check_client_files};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `store` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    #[serde(default)]
    pub postgres: Option<RawPostgresStore>,
}

/// `store.postgres` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgresStore {
    /// The connection string (a URL or `key=value` pairs).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the connection string (keeps a password out of the file).
    #[serde(default)]
    pub url_env: Option<String>,
    /// PEM file of the certificate authorities trusted for TLS to the server.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// How long the lease lasts without renewal, e.g. "5s".
    #[serde(default)]
    pub lease_ttl: Option<String>,
    /// Where other nodes reach this one (kept in the lease row).
    #[serde(default)]
    pub advertise: RawAdvertise,
    /// How a standby verifies the active node (and proves itself) when it forwards a request to
    /// it over TLS (the nodes' listeners have `listen.tls`).
    #[serde(default)]
    pub forward_tls: Option<RawClientTls>,
}

/// `store.postgres.advertise` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdvertise {
    #[serde(default)]
    pub grpc: Option<String>,
    #[serde(default)]
    pub http: Option<String>,
}

/// Where the audit log's records are kept.
#[derive(Debug, Clone, Default)]
pub enum StoreSettings {
    /// Local files in `audit.dir` (the default).
    #[default]
    Files,
    /// PostgreSQL.
    Postgres(PostgresStore),
}

/// The checked `store.postgres`.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// May carry a password: a secret, never logged.
    pub url: SecretString,
    pub ca_file: Option<PathBuf>,
    pub lease_ttl: Duration,
    /// This node's gRPC address for other nodes, if configured.
    pub advertise_grpc: Option<String>,
    /// This node's HTTP address for other nodes, if configured.
    pub advertise_http: Option<String>,
    /// TLS to the active node when forwarding (default: the system's roots, no client
    /// certificate); used only when the listeners speak TLS.
    pub forward_tls: ClientTlsFiles,
}

/// The lease's length unless configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// The shortest lease allowed: renewals every third of it must fit a database round trip.
const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

pub(super) fn check_store(c: &mut Checker, raw: &RawStore) -> StoreSettings {
    let Some(pg) = &raw.postgres else {
        return StoreSettings::Files;
    };
    let path = "store.postgres";
    let url = match (&pg.url, &pg.url_env) {
        (Some(_), Some(_)) => {
            c.problem(path, "set one of url and url_env, not both");
            None
        }
        (None, None) => {
            c.problem(
                path,
                "needs the database's connection string: url, or url_env naming an environment variable that holds it",
            );
            None
        }
        (Some(url), None) if url.trim().is_empty() => {
            c.problem(format!("{path}.url"), "must not be empty");
            None
        }
        (Some(url), None) => Some(url.clone()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => Some(url),
            _ => {
                c.problem(
                    format!("{path}.url_env"),
                    format!("the environment variable {var} is not set (or empty)"),
                );
                None
            }
        },
    };
    let lease_ttl = c.duration(
        format!("{path}.lease_ttl"),
        pg.lease_ttl.as_deref(),
        DEFAULT_LEASE_TTL,
    );
    if lease_ttl < MIN_LEASE_TTL {
        c.problem(
            format!("{path}.lease_ttl"),
            format!("must be at least {MIN_LEASE_TTL:?}"),
        );
    }
    for (field, value) in [("grpc", &pg.advertise.grpc), ("http", &pg.advertise.http)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            c.problem(format!("{path}.advertise.{field}"), "must not be empty");
        }
    }
    let forward_tls = pg
        .forward_tls
        .as_ref()
        .map(|raw| check_client_files(c, &format!("{path}.forward_tls"), raw))
        .unwrap_or_default();
    let Some(url) = url else {
        return StoreSettings::Files;
    };
    StoreSettings::Postgres(PostgresStore {
        url: SecretString::from(url),
        ca_file: pg.ca_file.as_ref().map(PathBuf::from),
        lease_ttl,
        advertise_grpc: pg.advertise.grpc.clone(),
        advertise_http: pg.advertise.http.clone(),
        forward_tls,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, StoreSettings};
    use secrecy::ExposeSecret as _;

    const SERVERS: &str = r#""servers": {"a": {"grpc": "http://127.0.0.1:1", "tools": ["t"]}}"#;

    fn with_store(store: &str) -> Result<Config, String> {
        let text = format!(r#"{{{SERVERS}, "store": {store}}}"#);
        Config::from_slice(text.as_bytes()).map_err(|e| {
            e.problems()
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    #[test]
    fn no_store_is_files() {
        let config = Config::from_slice(format!("{{{SERVERS}}}").as_bytes()).unwrap();
        assert!(matches!(config.store, StoreSettings::Files));
    }

    #[test]
    fn a_postgres_store_is_checked_into_its_settings() {
        let config = with_store(
            r#"{"postgres": {"url": "postgresql://conductor@db/audit", "lease_ttl": "2s",
                "advertise": {"grpc": "10.0.0.5:50051"}}}"#,
        )
        .unwrap();
        let StoreSettings::Postgres(pg) = config.store else {
            panic!("postgres expected");
        };
        assert_eq!(pg.url.expose_secret(), "postgresql://conductor@db/audit");
        assert_eq!(pg.lease_ttl, std::time::Duration::from_secs(2));
        assert_eq!(pg.advertise_grpc.as_deref(), Some("10.0.0.5:50051"));
        assert!(
            !format!("{pg:?}").contains("conductor@db"),
            "the url is a secret"
        );
    }

    #[test]
    fn bad_store_settings_are_named_by_path() {
        for (store, expected) in [
            (
                r#"{"postgres": {}}"#,
                "store.postgres: needs the database's connection string",
            ),
            (
                r#"{"postgres": {"url": "x", "url_env": "Y"}}"#,
                "store.postgres: set one of url and url_env",
            ),
            (
                r#"{"postgres": {"url_env": "CONDUCTOR_TEST_UNSET_STORE_URL"}}"#,
                "store.postgres.url_env: the environment variable CONDUCTOR_TEST_UNSET_STORE_URL is not set",
            ),
            (
                r#"{"postgres": {"url": "x", "lease_ttl": "100ms"}}"#,
                "store.postgres.lease_ttl: must be at least",
            ),
            (
                r#"{"postgres": {"url": "x", "lease_ttl": "soon"}}"#,
                "store.postgres.lease_ttl",
            ),
            (r#"{"postgres": {"url": "x", "ttl": "5s"}}"#, "ttl"),
            (r#"{"mysql": {}}"#, "mysql"),
        ] {
            let error = with_store(store).unwrap_err();
            assert!(error.contains(expected), "{store}: {error}");
        }
    }
}
