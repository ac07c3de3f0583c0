//! The store's tables, created and migrated by the orchestrator itself.
//!
//! `schema_version` holds one row per migration applied. Migrations run in one transaction under
//! an advisory lock, so two nodes starting at once neither race nor apply one twice; a database
//! whose schema is newer than this build knows is refused, never written.
//!
//! Versions: 1, the records, the chain head and the lease; 2, `cluster_nodes` (each node's last
//! report, for `conductorctl cluster status`) and `cluster_secrets` (what every node must share,
//! e.g. the key MCP workflow handles are sealed with). A migration only ever adds: a node of the previous
//! version keeps working on a database one version ahead until it restarts (then it refuses).

use crate::AuditError;
use crate::GENESIS_PREV;

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

/// Taken (for the transaction) while migrating: "cndctrio" in ASCII.
const MIGRATION_LOCK: i64 = 0x636e_6463_7472_696f;

/// Migration `n` (from 1) brings the schema from version `n - 1` to `n`.
fn migrations() -> [String; 2] {
    [
        format!(
            "
        -- One row per record. `line` is the record's exact text, what the hash chain covers.
        CREATE TABLE audit_records (
            seq      bigint PRIMARY KEY,
            ts_ms    bigint NOT NULL,
            ts       timestamptz NOT NULL,
            line     text NOT NULL,
            record   jsonb NOT NULL,
            kind     text,
            workflow text,
            caller   text,
            tool     text,
            epoch    bigint NOT NULL
        );
        CREATE INDEX audit_records_ts ON audit_records (ts);
        CREATE INDEX audit_records_kind ON audit_records (kind);
        CREATE INDEX audit_records_workflow ON audit_records (workflow);
        CREATE INDEX audit_records_caller ON audit_records (caller);
        CREATE INDEX audit_records_tool ON audit_records (tool);
        -- The last record written and the epoch allowed to write after it: every batch moves it,
        -- and only while its writer's epoch is the one here (the fence).
        CREATE TABLE audit_chain_head (
            id    integer PRIMARY KEY CHECK (id = 1),
            seq   bigint NOT NULL,
            hash  text NOT NULL,
            epoch bigint NOT NULL
        );
        INSERT INTO audit_chain_head VALUES (1, 0, '{GENESIS_PREV}', 0);
        -- A wake-up for followers on every batch (sent at its commit, to listeners connected then).
        CREATE FUNCTION audit_chain_head_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('audit_records', NEW.seq::text);
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER audit_chain_head_moved AFTER UPDATE OF seq ON audit_chain_head
            FOR EACH ROW EXECUTE FUNCTION audit_chain_head_notify();
        -- Who writes: valid until `valid_until` by the database's clock; `epoch` only grows.
        CREATE TABLE cluster_lease (
            id          integer PRIMARY KEY CHECK (id = 1),
            holder      text NOT NULL,
            advertise   jsonb NOT NULL,
            epoch       bigint NOT NULL,
            valid_until timestamptz NOT NULL,
            acquired_at timestamptz NOT NULL
        );
        INSERT INTO cluster_lease VALUES (1, '', '{{}}', 0, '-infinity', '-infinity');
        "
        ),
        format!("{NODES}{SECRETS}"),
    ]
}

/// Version 2: every node's last report of itself (see `nodes`), upserted by the active node with
/// each renewal of its lease and by a standby with each look at it; `reported_at` by the
/// database's clock. Rows of nodes silent for long are deleted by the active node.
const NODES: &str = "
    CREATE TABLE cluster_nodes (
        name         text PRIMARY KEY,
        role         text NOT NULL CHECK (role IN ('active', 'standby', 'fenced')),
        advertise    jsonb NOT NULL,
        applied_seq  bigint NOT NULL,
        head_seq     bigint NOT NULL,
        epoch_seen   bigint NOT NULL,
        lease_ttl_ms bigint NOT NULL,
        first_report timestamptz NOT NULL DEFAULT NOW(),
        reported_at  timestamptz NOT NULL
    );
";

/// Also version 2: secrets every node must share (see `secrets`), each stored once by the first
/// node that asks for it.
const SECRETS: &str = "
    CREATE TABLE cluster_secrets (
        name  text PRIMARY KEY,
        value bytea NOT NULL
    );
";

/// Creates the tables, or brings them up to [`SCHEMA_VERSION`]; refuses a newer schema.
pub(crate) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), AuditError> {
    let what = "creating or migrating the schema";
    let failed = |e: tokio_postgres::Error| AuditError::store(what, &e);
    let txn = client.transaction().await.map_err(failed)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT NOW()
        )",
    )
    .await
    .map_err(failed)?;
    let found: i32 = txn
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(failed)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(AuditError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (index, migration) in migrations()
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let version = index as i32 + 1;
        txn.batch_execute(migration).await.map_err(failed)?;
        txn.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(failed)?;
        tracing::info!(version, "PostgreSQL audit store schema migrated");
    }
    txn.commit().await.map_err(failed)
}

/// For readers that must not change the database (`audit verify`): the schema must be there, and
/// not newer than this build knows.
pub(crate) async fn check_version(client: &tokio_postgres::Client) -> Result<(), AuditError> {
    let failed = |e: tokio_postgres::Error| AuditError::store("reading the schema version", &e);
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(failed)?
        .get(0);
    if !exists {
        return Err(AuditError::Store {
            what: "reading the schema version".into(),
            message: "this database holds no Conductorio audit log (no schema_version table); is it the right database?".into(),
        });
    }
    let found: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(failed)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(AuditError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    Ok(())
}
