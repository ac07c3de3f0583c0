//! The orchestrator's side of a cluster (issue 23), its foundation: a configured `store.postgres`
//! becomes the audit log's PostgreSQL store, whose lease makes this node the one writer (see
//! `conductor_audit::pg`). The call path does not change: the gateway appends through the same
//! audit log whatever the store, and a lease that is lost or cannot be renewed fails closed through
//! the log's own health, as a full disk does. A second node waits for the lease and, if it stays
//! held, starts as a warm standby ([`standby`]) that follows the holder, serves reads, and takes
//! over once the holder's lease expires; the load balancers' health path says which node is
//! which ([`health`]); a standby forwards what would append to the active node ([`forward`]).
//!
//! Never a second path for a call: nothing here decides or records a call. A standby passes what
//! would append on, whole, to the active node, which decides and records it as if the caller had
//! come to it; what it cannot pass on, its audit log refuses, like a full disk.

pub mod forward;
pub mod health;
pub mod standby;

pub use standby::Standing;

use crate::mcp::HandleKey;
use conductor_audit::pg::PgOptions;
use conductor_audit::{AuditOptions, StoreOptions};
use conductor_core::config::{Config, PostgresStore, StoreSettings};
use secrecy::ExposeSecret as _;
use std::net::SocketAddr;

/// The lease another node holds, as opening the store found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub holder: String,
    /// Its advertised addresses, JSON object text.
    pub advertise: String,
}

/// This node's part in a cluster: `None` inside while active (or alone), the standby's view of
/// the active node otherwise.
#[derive(Debug, Default)]
pub struct Role {
    standby: std::sync::Mutex<Option<StandbyView>>,
}

impl Role {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StandbyView>> {
        self.standby.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, view: Option<StandbyView>) {
        *self.lock() = view;
    }

    /// The standby's view; `None` on the active node.
    pub fn get(&self) -> Option<StandbyView> {
        self.lock().clone()
    }
}

/// What a standby knows of the active node and the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandbyView {
    /// The active node's name in the lease row.
    pub active: String,
    /// Its advertised addresses, as the lease row has them (JSON object text).
    pub advertise: String,
    pub active_grpc: Option<String>,
    pub active_http: Option<String>,
    /// The chain head's seq at the last look.
    pub head_seq: u64,
    /// Why the last look at the store failed (`None` when it answered).
    pub reachable: Option<String>,
    /// Why following stopped (a broken chain), if it did.
    pub broken: Option<String>,
}

impl StandbyView {
    fn of(held: &Held) -> Self {
        let advertised: serde_json::Value =
            serde_json::from_str(&held.advertise).unwrap_or_default();
        let address = |key: &str| {
            advertised
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        StandbyView {
            active: held.holder.clone(),
            advertise: held.advertise.clone(),
            active_grpc: address("grpc"),
            active_http: address("http"),
            ..StandbyView::default()
        }
    }

    /// What a standby answers to anything that would append: where the active node is.
    pub fn refusal(&self) -> String {
        let mut at = Vec::new();
        if let Some(grpc) = &self.active_grpc {
            at.push(format!("gRPC {grpc}"));
        }
        if let Some(http) = &self.active_http {
            at.push(format!("HTTP {http}"));
        }
        let at = if at.is_empty() {
            "(it advertises no address)".to_owned()
        } else {
            format!("at {}", at.join(", "))
        };
        format!(
            "this orchestrator is a standby: the active node is {} {at}; send calls, starts and approvals there",
            self.active
        )
    }
}

/// The name of the cluster's shared secret that seals MCP workflow handles.
const HANDLE_KEY_SECRET: &str = "mcp-workflow-handle-key";

/// The key MCP workflow handles are sealed with: on files, the one beside the audit log; on
/// PostgreSQL, the cluster's own (in the store), so that a handle one node gave out opens on every
/// node, before and after a failover.
pub(crate) async fn handle_key(audit: &AuditOptions) -> Result<HandleKey, crate::Error> {
    match &audit.store {
        StoreOptions::Files => Ok(HandleKey::for_audit_dir(&audit.dir)),
        StoreOptions::Postgres(pg) => {
            let offered = HandleKey::random();
            let stored =
                conductor_audit::pg::shared_secret(pg, HANDLE_KEY_SECRET, offered.bytes()).await?;
            HandleKey::from_bytes(&stored).ok_or_else(|| {
                crate::Error::Internal(format!(
                    "the cluster's workflow-handle key in the store ({HANDLE_KEY_SECRET} in cluster_secrets) holds {} bytes, not a key's",
                    stored.len()
                ))
            })
        }
    }
}

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
        // A lease held by another node makes this one its standby at once: the standby takes
        // the lease over when it expires, so waiting for that here would only leave the node
        // unable to serve reads meanwhile (and a node restarted after a crash follows its former
        // self until its old lease lapses).
        acquire_wait: std::time::Duration::ZERO,
        ..PgOptions::new(pg.url.expose_secret())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_refuses_naming_the_active_nodes_advertised_addresses() {
        let both = StandbyView::of(&Held {
            holder: "node-a:12:34".into(),
            advertise: r#"{"grpc": "10.0.0.5:50051", "http": "10.0.0.5:8080"}"#.into(),
        });
        assert_eq!(both.active_grpc.as_deref(), Some("10.0.0.5:50051"));
        let refusal = both.refusal();
        assert!(
            refusal.contains("node-a:12:34")
                && refusal.contains("gRPC 10.0.0.5:50051")
                && refusal.contains("HTTP 10.0.0.5:8080"),
            "{refusal}"
        );
        for advertise in ["{}", "not json"] {
            let none = StandbyView::of(&Held {
                holder: "node-a".into(),
                advertise: advertise.into(),
            });
            assert_eq!(
                (none.active_grpc.clone(), none.active_http.clone()),
                (None, None)
            );
            assert!(
                none.refusal().contains("advertises no address"),
                "{}",
                none.refusal()
            );
        }
    }

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
