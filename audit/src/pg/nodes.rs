//! Who is in the cluster (schema version 2): each node's own report of itself in `cluster_nodes`,
//! read back beside the lease and the chain head for `conductorctl cluster status`.
//!
//! The active node reports in the same statement that renews its lease (and in the transaction
//! that takes it), a standby with each look at the lease (every 500 ms), and a node whose lease
//! another node took says so once (`fenced`). Every time is the database's `NOW()`, never a node's
//! clock. Reports never decide anything: who writes is the lease's and the fence's alone.
//!
//! A node silent for [`GONE_AFTER_LEASES`] of its own lease lengths (and at least
//! [`MIN_GONE_AFTER`]) is shown as gone: stopped, killed, paused or cut off, nobody can tell which
//! from here. Its row stays, so an operator sees what went away, until it has been silent for
//! [`FORGET_AFTER`]: the active node then deletes it with a renewal (a node restarted under a new
//! name would otherwise leave rows for ever).

use super::standby::read_lease;
use super::{PgOptions, connect, pool};
use crate::AuditError;
use std::time::Duration;

/// A node silent for this many of its lease lengths is shown as gone.
pub const GONE_AFTER_LEASES: i64 = 3;
/// ... and never sooner than this (a standby reports every 500 ms whatever its lease).
pub const MIN_GONE_AFTER: Duration = Duration::from_secs(2);
/// The row of a node silent this long is deleted by the active node.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The columns of a report, and what a report changes in a row that exists (its first report
/// stays).
macro_rules! insert_report {
    () => {
        "INSERT INTO cluster_nodes
            (name, role, advertise, applied_seq, head_seq, epoch_seen, lease_ttl_ms, reported_at) "
    };
}
macro_rules! on_conflict_update {
    () => {
        " ON CONFLICT (name) DO UPDATE SET
            role = EXCLUDED.role, advertise = EXCLUDED.advertise,
            applied_seq = EXCLUDED.applied_seq, head_seq = EXCLUDED.head_seq,
            epoch_seen = EXCLUDED.epoch_seen, lease_ttl_ms = EXCLUDED.lease_ttl_ms,
            reported_at = EXCLUDED.reported_at"
    };
}

/// One report: $1 name, $2 role, $3 advertised addresses (JSON text), $4 applied seq, $5 head
/// seq, $6 lease length in ms, $7 the epoch seen.
pub(crate) const REPORT: &str = concat!(
    insert_report!(),
    "VALUES ($1, $2, $3::text::jsonb, $4, $5, $7, $6, NOW())",
    on_conflict_update!()
);

/// The active node's renewal and report in one statement (one round trip): the parameters of
/// [`REPORT`], with $7 its epoch, $8 the lease length in seconds and $9 [`FORGET_AFTER`] in
/// seconds. It reports, and forgets long-silent nodes, only if the lease row is still this
/// node's, so one row affected means renewed.
pub(crate) const RENEW_AND_REPORT: &str = concat!(
    "WITH renewed AS (
        UPDATE cluster_lease SET valid_until = NOW() + make_interval(secs => $8::float8)
        WHERE id = 1 AND holder = $1 AND epoch = $7
        RETURNING epoch
    ), forgotten AS (
        DELETE FROM cluster_nodes
        WHERE name <> $1 AND reported_at < NOW() - make_interval(secs => $9::float8)
          AND EXISTS (SELECT 1 FROM renewed)
    ) ",
    insert_report!(),
    "SELECT $1, $2, $3::text::jsonb, $4, $5, epoch, $6, NOW() FROM renewed",
    on_conflict_update!()
);

/// What a node says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// It holds the lease and writes.
    Active,
    /// It follows the active node.
    Standby,
    /// Another node took its lease: it writes nothing more.
    Fenced,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Active => "active",
            NodeRole::Standby => "standby",
            NodeRole::Fenced => "fenced",
        }
    }

    fn parse(text: &str) -> Option<NodeRole> {
        [NodeRole::Active, NodeRole::Standby, NodeRole::Fenced]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

/// A node's report of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub role: NodeRole,
    /// The seq of the last record it applied (written, on the active node).
    pub applied_seq: u64,
    /// The chain head's seq as it last saw it.
    pub head_seq: u64,
    /// The lease's epoch as it last saw it.
    pub epoch: i64,
}

/// Who reports: a node's name, addresses and lease length, from its options.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    pub name: String,
    pub advertise: String,
    pub lease_ttl: Duration,
}

impl Reporter {
    pub fn of(options: &PgOptions) -> Self {
        Reporter {
            name: options.holder.clone(),
            advertise: options.advertise.clone(),
            lease_ttl: options.lease_ttl,
        }
    }

    pub fn lease_ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Upserts this node's row.
    pub async fn report(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        report: Report,
    ) -> Result<(), AuditError> {
        client
            .execute(
                REPORT,
                &[
                    &self.name,
                    &report.role.as_str(),
                    &self.advertise,
                    &seq_column(report.applied_seq),
                    &seq_column(report.head_seq),
                    &self.lease_ttl_ms(),
                    &report.epoch,
                ],
            )
            .await
            .map_err(|e| AuditError::store("reporting this node in cluster_nodes", &e))?;
        Ok(())
    }
}

/// Seqs fit a `bigint` for the next few billion years of records; saturates beyond.
pub(crate) fn seq_column(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// What a node is, as `cluster status` shows it: from the lease row first (who holds it is
/// active whatever it last said), then from its own report and how long ago that was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    /// Holds the lease, valid now: the one node that writes.
    Active,
    /// Holds the lease row, but the lease expired and no standby has taken it yet.
    LeaseExpired,
    /// Follows the active node, and reported in time.
    Standby,
    /// Held the lease at an epoch another node has since taken: it writes nothing more.
    Fenced,
    /// Silent for longer than [`gone_after`] its lease length.
    Gone,
}

/// How long a node with lease `lease_ttl_ms` may be silent before it is shown as gone.
pub fn gone_after(lease_ttl_ms: i64) -> Duration {
    let leases = Duration::from_millis(
        u64::try_from(lease_ttl_ms.saturating_mul(GONE_AFTER_LEASES)).unwrap_or(0),
    );
    leases.max(MIN_GONE_AFTER)
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub name: String,
    pub state: NodeState,
    /// Its advertised addresses, as it reported them.
    pub grpc: Option<String>,
    pub http: Option<String>,
    /// As of its last report: the last record applied, and the head it saw.
    pub applied_seq: u64,
    pub head_seq: u64,
    /// `head_seq - applied_seq`.
    pub lag_records: u64,
    /// How much older the last record it applied is than the head it saw (by the records'
    /// timestamps; 0 when it is not behind or the records are not there).
    pub lag_ms: u64,
    pub epoch_seen: i64,
    /// How long ago it last reported, by the database's clock; `None` for a lease holder that
    /// never reported (a node of an older version).
    pub last_report_ms_ago: Option<i64>,
    pub lease_ttl_ms: i64,
}

/// The cluster as the store sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The lease row: who holds it (empty when no node ever took it), its addresses, the epoch,
    /// and how long it is still valid by the database's clock (negative once expired).
    pub holder: String,
    pub holder_grpc: Option<String>,
    pub holder_http: Option<String>,
    pub epoch: i64,
    pub lease_valid_for_ms: i64,
    /// The seq of the last committed record.
    pub head_seq: u64,
    /// The active node first, then standbys, fenced and gone nodes, by name within each.
    pub nodes: Vec<NodeStatus>,
}

/// A handle on the store for reporting this node and reading every node's report: for a standby
/// (the active node reports through its lease) and for `ClusterStatus`, which any node answers.
/// Its connections run on the runtime of whoever uses it.
#[derive(Clone)]
pub struct ClusterNodes {
    pool: deadpool_postgres::Pool,
    reporter: Reporter,
}

impl std::fmt::Debug for ClusterNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNodes")
            .field("name", &self.reporter.name)
            .finish_non_exhaustive()
    }
}

impl ClusterNodes {
    /// A handle on the store of `options`, reporting as its `holder`. Connects only when used.
    pub fn open(options: &PgOptions) -> Result<Self, AuditError> {
        options.validate()?;
        Ok(ClusterNodes {
            pool: pool(options)?,
            reporter: Reporter::of(options),
        })
    }

    /// This node's name in the lease row and in `cluster_nodes`.
    pub fn name(&self) -> &str {
        &self.reporter.name
    }

    /// Upserts this node's row with `report`.
    pub async fn report(&self, report: Report) -> Result<(), AuditError> {
        let client = connect(&self.pool).await?;
        self.reporter.report(&client, report).await
    }

    /// The lease, the chain head and every node's last report, as the store has them now.
    pub async fn status(&self) -> Result<ClusterStatus, AuditError> {
        let lease = read_lease(&self.pool).await?;
        let client = connect(&self.pool).await?;
        let rows = client
            .query(
                "SELECT n.name, n.role, n.advertise::text, n.applied_seq, n.head_seq,
                        n.epoch_seen, n.lease_ttl_ms,
                        GREATEST((EXTRACT(EPOCH FROM (NOW() - n.reported_at)) * 1000)::bigint, 0),
                        COALESCE(h.ts_ms - a.ts_ms, 0)
                 FROM cluster_nodes n
                 LEFT JOIN audit_records h ON h.seq = n.head_seq
                 LEFT JOIN audit_records a ON a.seq = n.applied_seq",
                &[],
            )
            .await
            .map_err(|e| AuditError::store("reading cluster_nodes", &e))?;
        let (holder_grpc, holder_http) = addresses(&lease.advertise);
        let mut nodes: Vec<NodeStatus> = rows
            .iter()
            .map(|row| {
                let name: String = row.get(0);
                let role: String = row.get(1);
                let (grpc, http) = addresses(&row.get::<_, String>(2));
                let applied_seq = u64::try_from(row.get::<_, i64>(3)).unwrap_or(0);
                let head_seq = u64::try_from(row.get::<_, i64>(4)).unwrap_or(0);
                let lease_ttl_ms: i64 = row.get(6);
                let ago: i64 = row.get(7);
                let silent = Duration::from_millis(u64::try_from(ago).unwrap_or(0));
                let state = state_of(
                    &name,
                    NodeRole::parse(&role),
                    silent > gone_after(lease_ttl_ms),
                    &lease.holder,
                    lease.valid_for_ms,
                );
                let lag_records = head_seq.saturating_sub(applied_seq);
                NodeStatus {
                    name,
                    state,
                    grpc,
                    http,
                    applied_seq,
                    head_seq,
                    lag_records,
                    lag_ms: match lag_records {
                        0 => 0,
                        _ => u64::try_from(row.get::<_, i64>(8)).unwrap_or(0),
                    },
                    epoch_seen: row.get(5),
                    last_report_ms_ago: Some(ago),
                    lease_ttl_ms,
                }
            })
            .collect();
        if !lease.holder.is_empty() && !nodes.iter().any(|n| n.name == lease.holder) {
            nodes.push(NodeStatus {
                name: lease.holder.clone(),
                state: state_of(
                    &lease.holder,
                    None,
                    false,
                    &lease.holder,
                    lease.valid_for_ms,
                ),
                grpc: holder_grpc.clone(),
                http: holder_http.clone(),
                applied_seq: lease.head_seq,
                head_seq: lease.head_seq,
                lag_records: 0,
                lag_ms: 0,
                epoch_seen: lease.epoch,
                last_report_ms_ago: None,
                lease_ttl_ms: 0,
            });
        }
        nodes.sort_by(|a, b| (a.state, &a.name).cmp(&(b.state, &b.name)));
        Ok(ClusterStatus {
            holder: lease.holder,
            holder_grpc,
            holder_http,
            epoch: lease.epoch,
            lease_valid_for_ms: lease.valid_for_ms,
            head_seq: lease.head_seq,
            nodes,
        })
    }
}

/// What `name` is: the lease holder is active (or holds an expired lease) whatever it said last;
/// any other node is gone once silent too long, else what it said, except that a node still
/// saying it is active while another holds the lease was fenced out by the epoch.
fn state_of(
    name: &str,
    role: Option<NodeRole>,
    silent: bool,
    holder: &str,
    valid_for_ms: i64,
) -> NodeState {
    if name == holder {
        return match (valid_for_ms >= 0, silent) {
            (true, _) => NodeState::Active,
            (false, true) => NodeState::Gone,
            (false, false) => NodeState::LeaseExpired,
        };
    }
    if silent {
        return NodeState::Gone;
    }
    match role {
        Some(NodeRole::Standby) => NodeState::Standby,
        Some(NodeRole::Active | NodeRole::Fenced) | None => NodeState::Fenced,
    }
}

/// The `grpc` and `http` addresses of advertised-addresses JSON text (none where it does not
/// parse or has no such key).
fn addresses(advertise: &str) -> (Option<String>, Option<String>) {
    let value: serde_json::Value = serde_json::from_str(advertise).unwrap_or_default();
    let address = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    (address("grpc"), address("http"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_row_decides_who_is_active_and_silence_decides_who_is_gone() {
        use NodeRole::*;
        use NodeState as S;
        let cases = [
            // (name, role, silent, valid_for_ms) with "a" holding the lease row
            ("a", Some(Standby), false, 100, S::Active),
            ("a", Some(Active), false, -5, S::LeaseExpired),
            ("a", Some(Active), true, -5, S::Gone),
            ("b", Some(Standby), false, 100, S::Standby),
            ("b", Some(Standby), true, 100, S::Gone),
            ("b", Some(Active), false, 100, S::Fenced),
            ("b", Some(Fenced), false, 100, S::Fenced),
            ("b", Some(Fenced), true, 100, S::Gone),
        ];
        for (name, role, silent, valid, expected) in cases {
            assert_eq!(
                state_of(name, role, silent, "a", valid),
                expected,
                "{name} {role:?} silent={silent} valid_for={valid}"
            );
        }
    }

    #[test]
    fn a_node_is_gone_after_three_leases_and_never_sooner_than_two_seconds() {
        assert_eq!(gone_after(5_000), Duration::from_secs(15));
        assert_eq!(gone_after(300), MIN_GONE_AFTER);
        assert_eq!(gone_after(-1), MIN_GONE_AFTER);
    }

    #[test]
    fn advertised_addresses_are_read_where_they_parse() {
        assert_eq!(
            addresses(r#"{"grpc": "10.0.0.5:50051"}"#),
            (Some("10.0.0.5:50051".into()), None)
        );
        assert_eq!(addresses("not json"), (None, None));
    }
}

#[cfg(all(test, feature = "fault-injection"))]
mod store_tests {
    use super::*;
    use crate::pg::{lease, schema};
    use crate::testing::TempPostgres;

    /// A renewal reports the active node and deletes the rows of nodes silent for longer than
    /// [`FORGET_AFTER`], and only theirs; a standby's report shows it with its lag.
    #[tokio::test]
    async fn renewals_report_the_active_node_and_forget_long_silent_ones() {
        let server = TempPostgres::shared().unwrap_or_else(|e| panic!("PostgreSQL: {e}"));
        let url = server.create_database("cluster_nodes").await.unwrap();
        let options = PgOptions {
            holder: "node-a".into(),
            advertise: r#"{"grpc": "10.0.0.5:50051"}"#.into(),
            ..PgOptions::new(&url)
        };
        let pool = pool(&options).unwrap();
        schema::migrate(&mut connect(&pool).await.unwrap())
            .await
            .unwrap();
        let (held, _) = lease::acquire(
            &pool,
            &options.holder,
            &options.advertise,
            options.lease_ttl,
            options.acquire_wait,
        )
        .await
        .unwrap();

        let b = ClusterNodes::open(&PgOptions {
            holder: "node-b".into(),
            ..options.clone()
        })
        .unwrap();
        b.report(Report {
            role: NodeRole::Standby,
            applied_seq: 0,
            head_seq: 0,
            epoch: held.epoch,
        })
        .await
        .unwrap();
        let db = TempPostgres::client(&url).await.unwrap();
        db.batch_execute(
            "INSERT INTO cluster_nodes
                (name, role, advertise, applied_seq, head_seq, epoch_seen, lease_ttl_ms, reported_at)
             VALUES ('long-gone', 'standby', '{}', 0, 0, 0, 5000, NOW() - interval '2 hours'),
                    ('recently-gone', 'standby', '{}', 0, 0, 0, 5000, NOW() - interval '1 minute')",
        )
        .await
        .unwrap();

        let client = connect(&pool).await.unwrap();
        let renewed = client
            .execute(
                RENEW_AND_REPORT,
                &[
                    &options.holder,
                    &NodeRole::Active.as_str(),
                    &options.advertise,
                    &0_i64,
                    &0_i64,
                    &5_000_i64,
                    &held.epoch,
                    &5.0_f64,
                    &FORGET_AFTER.as_secs_f64(),
                ],
            )
            .await
            .unwrap();
        assert_eq!(renewed, 1);

        let status = b.status().await.unwrap();
        let seen: Vec<(&str, NodeState)> = status
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.state))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("node-a", NodeState::Active),
                ("node-b", NodeState::Standby),
                ("recently-gone", NodeState::Gone),
            ]
        );
        assert_eq!(status.holder, "node-a");
        assert_eq!(status.epoch, held.epoch);
        assert_eq!(status.holder_grpc.as_deref(), Some("10.0.0.5:50051"));
        assert!(status.lease_valid_for_ms > 0, "{status:?}");

        // Another epoch's renewal neither renews nor reports.
        let stale = client
            .execute(
                RENEW_AND_REPORT,
                &[
                    &"node-c",
                    &NodeRole::Active.as_str(),
                    &"{}",
                    &0_i64,
                    &0_i64,
                    &5_000_i64,
                    &held.epoch,
                    &5.0_f64,
                    &FORGET_AFTER.as_secs_f64(),
                ],
            )
            .await
            .unwrap();
        assert_eq!(stale, 0);
        assert!(
            !b.status()
                .await
                .unwrap()
                .nodes
                .iter()
                .any(|n| n.name == "node-c")
        );
    }
}
