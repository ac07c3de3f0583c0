//! Secrets every node of a cluster must share, kept in the store (`cluster_secrets`), so that
//! what one node seals another can open: the first node to ask for a name stores the value it
//! offers, and every node (that one included) uses the value stored. Readable by whoever may read
//! the audit records, which is who may see what the secrets protect.

use super::{PgOptions, connect, pool};
use crate::AuditError;

/// The cluster's secret `name`: the value already stored, or `fresh`, stored now if none was.
pub async fn shared_secret(
    options: &PgOptions,
    name: &str,
    fresh: &[u8],
) -> Result<Vec<u8>, AuditError> {
    let pool = pool(options)?;
    let client = connect(&pool).await?;
    let failed =
        |e: tokio_postgres::Error| AuditError::store("reading the cluster's shared secrets", &e);
    client
        .execute(
            "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &fresh],
        )
        .await
        .map_err(failed)?;
    let row = client
        .query_one(
            "SELECT value FROM cluster_secrets WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(failed)?;
    Ok(row.get(0))
}
