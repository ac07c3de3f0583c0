//! The orchestrator's side of a cluster (issue 23), its foundation: a configured `store.postgres`
//! becomes the audit log's PostgreSQL store, whose lease makes this node the one writer (see
//! `conductor_audit::pg`). The call path does not change: the gateway appends through the same
//! audit log whatever the store, and a lease that is lost or cannot be renewed fails closed through
//! the log's own health, as a full disk does. Standbys, forwarding and failover come next; until
//! then a second node waits for the lease and, if it stays held, refuses to start, naming the
//! holder.
//!
//! Never a second path for a call: nothing here is consulted per call.

use conductor_audit::pg::PgOptions;
use conductor_audit::{AuditOptions, StoreOptions};
use conductor_core::config::{Config, PostgresStore, StoreSettings};
use secrecy::ExposeSecret as _;
use std::net::SocketAddr;

/// This node's addresses, as it listens: advertised unless the configuration says otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Listening {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
}

/// Where the audit log is kept, by the configuration's `store`: files (unchanged) or PostgreSQL.
pub fn audit_store(settings: &StoreSettings, listening: Listening) -> StoreOptions {
    match settings {
        StoreSettings::Files => StoreOptions::Files,
        StoreSettings::Postgres(pg) => StoreOptions::Postgres(pg_options(pg, listening)),
    }
}

/// Sets `audit`'s store from `config`, unless the caller already chose one (tests may).
pub fn apply_store(audit: &mut AuditOptions, config: &Config, listening: Listening) {
    if audit.store == StoreOptions::Files {
        audit.store = audit_store(&config.store, listening);
    }
}

fn pg_options(pg: &PostgresStore, listening: Listening) -> PgOptions {
    let address = |configured: &Option<String>, bound: Option<SocketAddr>| {
        configured.clone().or_else(|| bound.map(|a| a.to_string()))
    };
    let mut advertise = serde_json::Map::new();
    for (key, value) in [
        ("grpc", address(&pg.advertise_grpc, listening.grpc)),
        ("http", address(&pg.advertise_http, listening.http)),
    ] {
        if let Some(value) = value {
            advertise.insert(key.into(), value.into());
        }
    }
    PgOptions {
        ca_file: pg.ca_file.clone(),
        lease_ttl: pg.lease_ttl,
        advertise: serde_json::Value::Object(advertise).to_string(),
        acquire_wait: pg.lease_ttl * 3,
        ..PgOptions::new(pg.url.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_store_stays_files_and_postgres_advertises_what_it_listens_on() {
        let files = Config::from_slice(
            br#"{"servers": {"a": {"grpc": "http://127.0.0.1:1", "tools": ["t"]}}}"#,
        )
        .unwrap();
        let mut audit = AuditOptions::new("audit_logs");
        apply_store(&mut audit, &files, Listening::default());
        assert_eq!(audit.store, StoreOptions::Files);

        let pg = Config::from_slice(
            br#"{"servers": {"a": {"grpc": "http://127.0.0.1:1", "tools": ["t"]}},
                 "store": {"postgres": {"url": "host=/tmp dbname=audit", "lease_ttl": "2s",
                                        "advertise": {"http": "10.0.0.5:8080"}}}}"#,
        )
        .unwrap();
        apply_store(
            &mut audit,
            &pg,
            Listening {
                grpc: Some(SocketAddr::from(([10, 0, 0, 5], 50051))),
                http: None,
            },
        );
        let StoreOptions::Postgres(options) = &audit.store else {
            panic!("postgres expected");
        };
        assert_eq!(options.url, "host=/tmp dbname=audit");
        assert_eq!(options.lease_ttl, std::time::Duration::from_secs(2));
        let advertise: serde_json::Value = serde_json::from_str(&options.advertise).unwrap();
        assert_eq!(
            advertise,
            serde_json::json!({"grpc": "10.0.0.5:50051", "http": "10.0.0.5:8080"})
        );
        assert!(
            !format!("{audit:?}").contains("dbname=audit"),
            "the url is never shown"
        );
    }
}
