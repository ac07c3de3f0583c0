//! The PostgreSQL store: the log's records as rows, one writer at a time by a fenced lease.
//!
//! Each record keeps its exact line text (so the chain verifies from what the database holds),
//! beside a `jsonb` copy and indexed columns for queries. Every batch is one statement, and so one
//! transaction, that moves the chain head only if this node's epoch still holds it and the head is
//! the record the batch extends (the fence, SPEC §9.8); rows go in only if it did.
//!
//! Modules: `schema` (tables and migrations), `lease` (acquiring and renewing the lease),
//! `append` (the [`Store`](crate::store::Store) implementation), `read` (reading the rows back,
//! verifying the chain as it goes, for start-up and `audit verify`), `tail` (following the log as
//! another node writes it: a standby's feed), `standby` (the rest of a standby's view: the lease
//! and the head, a store that never writes), `nodes` (each node's report of itself, and the
//! cluster's status read back).
//!
//! The database work runs on a small runtime of the store's own, so that a batch's leader can
//! block its thread on a commit whatever runtime (if any) it belongs to.

mod append;
mod lease;
mod link;
mod nodes;
mod read;
mod schema;
mod secrets;
mod standby;
mod tail;

pub(crate) use append::PgStore;
pub(crate) use lease::LeaseState;
pub use nodes::{
    ClusterNodes, ClusterStatus, FORGET_AFTER, GONE_AFTER_LEASES, MIN_GONE_AFTER, NodeRole,
    NodeState, NodeStatus, Report, gone_after,
};
pub use read::verify_postgres;
pub(crate) use read::{PgReader, read_records};
pub use schema::SCHEMA_VERSION;
pub use secrets::shared_secret;
pub use standby::{LeaseView, TakenLease};
pub(crate) use standby::{NoWrites, StandbyStore};
pub use tail::{CHANNEL, POLL_FLOOR, Position, follow};

use crate::AuditError;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to reach the PostgreSQL store and hold its lease.
#[derive(Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// The connection string: a URL (`postgresql://user@host/db`) or `key=value` pairs. It may
    /// carry a password: it is never logged or shown (see the `Debug` implementation).
    pub url: String,
    /// PEM file of the certificate authorities trusted for TLS to the server; TLS is used as the
    /// connection string's `sslmode` says. Without it, connections are plain.
    pub ca_file: Option<PathBuf>,
    /// How long a lease lasts without renewal: a node that stops renewing stops admitting calls
    /// by then, and another may take over after it.
    pub lease_ttl: Duration,
    /// This node's name in the lease row (unique per running process).
    pub holder: String,
    /// Where this node can be reached (e.g. `{"grpc": "10.0.0.5:50051"}`), kept in the lease row
    /// for nodes that forward to the active one. JSON object text.
    pub advertise: String,
    /// How long opening waits for a lease another node holds.
    pub acquire_wait: Duration,
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("lease_ttl", &self.lease_ttl)
            .field("holder", &self.holder)
            .field("advertise", &self.advertise)
            .field("acquire_wait", &self.acquire_wait)
            .finish()
    }
}

/// How long connecting to the server may take, unless the connection string says.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The default lease length.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

impl PgOptions {
    /// Options for `url` with a 5 s lease, a holder name made of this host and process, and no
    /// advertised address.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            ca_file: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            holder: default_holder(),
            advertise: "{}".into(),
            acquire_wait: DEFAULT_LEASE_TTL * 3,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(AuditError::InvalidOptions(
                "the PostgreSQL store's lease_ttl must be at least 300ms".into(),
            ));
        }
        if self.holder.is_empty() {
            return Err(AuditError::InvalidOptions(
                "the PostgreSQL store's holder name must not be empty".into(),
            ));
        }
        match serde_json::from_str::<serde_json::Value>(&self.advertise) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => {
                return Err(AuditError::InvalidOptions(
                    "the PostgreSQL store's advertised addresses must be a JSON object".into(),
                ));
            }
        }
        self.pg_config().map(|_| ())
    }

    /// The parsed connection string; the error names what is wrong, never the string itself.
    /// Unless it says otherwise, connecting gives up after [`CONNECT_TIMEOUT`]: an unreachable
    /// server must fail closed with a reason, not hang a start or a batch.
    pub(crate) fn pg_config(&self) -> Result<tokio_postgres::Config, AuditError> {
        let mut config = self.url.parse::<tokio_postgres::Config>().map_err(|e| {
            AuditError::InvalidOptions(format!(
                "the PostgreSQL store's connection string does not parse: {e}"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(config)
    }
}

/// `host:pid:start-ms`: unique per process on a host, and readable in `cluster status`.
fn default_holder() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}:{}", std::process::id(), crate::writer::unix_ms())
}

/// The store's own runtime: drives connections, the lease's renewal and every statement.
/// Dropping it stops them without waiting (it may be dropped on another runtime).
pub(crate) struct PgRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl PgRuntime {
    pub fn start() -> Result<Arc<Self>, AuditError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("audit-postgres")
            .enable_all()
            .build()
            .map_err(|e| {
                AuditError::Internal(format!("cannot start the PostgreSQL runtime: {e}"))
            })?;
        Ok(Arc::new(PgRuntime {
            runtime: Some(runtime),
        }))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.runtime {
            Some(runtime) => runtime.handle(),
            None => unreachable!("taken only on drop"),
        }
    }

    /// Runs `work` on the store's runtime and blocks this thread until it is done: for the
    /// batch's leader, which never awaits.
    pub fn block_on<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, AuditError>> + Send + 'static,
    ) -> Result<T, AuditError> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.handle().spawn(async move {
            let _ = done.send(work.await);
        });
        result.recv().map_err(|_| {
            AuditError::Internal("a PostgreSQL task stopped without an answer".into())
        })?
    }

    /// Starts `work` in the background.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.handle().spawn(work);
    }
}

impl Drop for PgRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A pool of connections to the store, plain or over TLS as configured.
pub(crate) fn pool(options: &PgOptions) -> Result<deadpool_postgres::Pool, AuditError> {
    let config = options.pg_config()?;
    let manager = match &options.ca_file {
        None => deadpool_postgres::Manager::new(config, tokio_postgres::NoTls),
        Some(ca_file) => deadpool_postgres::Manager::new(config, tls(ca_file)?),
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .map_err(|e| AuditError::Internal(format!("cannot build the PostgreSQL pool: {e}")))
}

/// TLS trusting the certificate authorities in `ca_file`, on the ring provider.
pub(crate) fn tls(
    ca_file: &std::path::Path,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, AuditError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let bad = |message: String| {
        AuditError::InvalidOptions(format!(
            "the PostgreSQL store's ca_file {}: {message}",
            ca_file.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A connection from the pool; the error says the store cannot be reached.
pub(crate) async fn connect(
    pool: &deadpool_postgres::Pool,
) -> Result<deadpool_postgres::Object, AuditError> {
    pool.get().await.map_err(|e| AuditError::Store {
        what: "connecting".into(),
        message: match &e {
            deadpool_postgres::PoolError::Backend(pg) => match pg.as_db_error() {
                Some(db) => db.message().to_owned(),
                None => pg.to_string(),
            },
            other => other.to_string(),
        },
    })
}

/// What opening the store leaves: the store to write with, and the walk that read (and verified)
/// every record up to the chain head.
pub(crate) struct Opened {
    pub store: PgStore,
    pub walk: read::RowReader,
}

/// Opens the store on `runtime`: migrates the schema, takes the lease (waiting for it up to
/// `acquire_wait`), starts renewing it, then reads every record as `R` into `pages`, verifying
/// the chain up to the head. The task starts at once; await it after draining `pages`.
pub(crate) fn open<R: serde::de::DeserializeOwned + Send + 'static>(
    runtime: &Arc<PgRuntime>,
    options: PgOptions,
    write_timeout: Duration,
    shared: Arc<crate::writer::Shared>,
    pages: tokio::sync::mpsc::Sender<Vec<crate::Record<R>>>,
) -> tokio::task::JoinHandle<Result<Opened, AuditError>> {
    let own = Arc::clone(runtime);
    runtime.handle().spawn(async move {
        let pool = pool(&options)?;
        let mut client = connect(&pool).await?;
        schema::migrate(&mut client).await?;
        let (lease, head) = lease::acquire(
            &pool,
            &options.holder,
            &options.advertise,
            options.lease_ttl,
            options.acquire_wait,
        )
        .await?;
        let state = Arc::new(LeaseState::new(lease, options.lease_ttl));
        lease::Renewal {
            pool: pool.clone(),
            holder: options.holder.clone(),
            advertise: options.advertise.clone(),
            lease,
            ttl: options.lease_ttl,
            shared,
            state: Arc::clone(&state),
        }
        .spawn(&own);
        let link = link::Link::new(&options);
        let store = PgStore {
            runtime: Arc::clone(&own),
            pool,
            holder: options.holder,
            lease,
            state,
            write_timeout,
            link,
        };
        let read = read_records::<R>(&client, &head, &pages).await;
        drop(pages);
        let failed = match read {
            Ok(walk) => match walk.failure.clone() {
                None => return Ok(Opened { store, walk }),
                Some(failure) => AuditError::Broken(failure),
            },
            Err(error) => error,
        };
        // Nothing was written: let another node (or a retry of this one) have the lease at once.
        store.state.stop();
        let _ = lease::release(&store.pool, &store.holder, store.lease).await;
        store
            .state
            .lost
            .store(true, std::sync::atomic::Ordering::Release);
        Err(failed)
    })
}
