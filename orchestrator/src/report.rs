//! Reading the audit log back: filtered queries, chain verification and compliance reports.
//!
//! All of it reads the durable record (the files or the PostgreSQL rows, on a blocking thread), never the live state, so a report says exactly what
//! the durable record says; the compliance report folds them with the live state's own transition.

use crate::audit::{AuditEvent, AuditLog, AuditRecord, DecisionKind, ReplayEvent};
use crate::config::Config;
use crate::error::Error;
use conductor_audit::AuditError;
use conductor_core::report::{Compliance, ReportFold};
use serde_json::{Value, json};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub workflow_id: Option<String>,
    pub tool: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<DecisionKind>,
    /// Only the records of calls made in this trace.
    pub trace_id: Option<String>,
}

impl AuditFilter {
    pub fn matches(&self, record: &AuditRecord) -> bool {
        let event = &record.event;
        self.since_ms.is_none_or(|t| record.ts_ms >= t)
            && self.until_ms.is_none_or(|t| record.ts_ms < t)
            && self
                .workflow_id
                .as_deref()
                .is_none_or(|w| event.workflow_id() == Some(w))
            && self.tool.as_deref().is_none_or(|t| event.tool() == Some(t))
            && self.kind.as_deref().is_none_or(|k| event.kind() == k)
            && self.decision.is_none_or(
                |d| matches!(event, AuditEvent::CallDecided { decision, .. } if *decision == d),
            )
            && self
                .trace_id
                .as_deref()
                .is_none_or(|t| event.trace().is_some_and(|trace| trace.trace_id == t))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::ShuttingDown)?
        .map_err(Error::from)
}

/// Up to `limit` matching records with seq > `after_seq`, and the `after_seq` of the next page.
pub async fn query(
    audit: &AuditLog,
    filter: &AuditFilter,
    after_seq: u64,
    limit: usize,
) -> Result<(Vec<AuditRecord>, Option<u64>), Error> {
    let page = (Vec::new(), None);
    scan(
        audit,
        filter,
        after_seq,
        page,
        move |(out, next), record| {
            if out.len() == limit {
                *next = out.last().map(|r: &AuditRecord| r.seq);
                return ControlFlow::Break(());
            }
            out.push(record);
            ControlFlow::Continue(())
        },
    )
    .await
}

/// Hands each record matching `filter` with seq > `after_seq` to `visit`, in order, on a blocking
/// thread, until `visit` breaks or the log ends; returns what `visit` built up from `init`. The
/// one reader of the log behind `audit query` and the older calls of a workflow's history.
pub async fn scan<T: Send + 'static>(
    audit: &AuditLog,
    filter: &AuditFilter,
    after_seq: u64,
    init: T,
    mut visit: impl FnMut(&mut T, AuditRecord) -> ControlFlow<()> + Send + 'static,
) -> Result<T, Error> {
    let audit = audit.clone();
    let filter = filter.clone();
    blocking(move || {
        let mut acc = init;
        for record in audit.read_from::<AuditEvent>(after_seq + 1)? {
            let record = record?;
            if !filter.matches(&record) {
                continue;
            }
            if visit(&mut acc, record).is_break() {
                break;
            }
        }
        Ok(acc)
    })
    .await
}

/// The result of checking the whole chain.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub ok: bool,
    pub records: u64,
    pub first_bad_seq: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub message: String,
    /// The hash of record `records`; empty when none verified.
    pub last_hash: String,
}

/// Verifies the log in `dir`, and that it still holds `anchor` when one is given.
pub async fn verify(
    dir: &Path,
    anchor: Option<conductor_audit::Anchor>,
) -> Result<VerifyOutcome, Error> {
    let dir: PathBuf = dir.to_path_buf();
    let report =
        blocking(move || conductor_audit::verify_dir_against(&dir, anchor.as_ref())).await?;
    let place = format!("{} file(s)", report.files);
    Ok(outcome(report, &place))
}

/// Verifies the live log where it is kept (its files, or PostgreSQL), and that it still holds
/// `anchor` when one is given.
pub async fn verify_log(
    audit: &AuditLog,
    anchor: Option<conductor_audit::Anchor>,
) -> Result<VerifyOutcome, Error> {
    match audit.store() {
        conductor_audit::StoreOptions::Files => verify(audit.dir(), anchor).await,
        conductor_audit::StoreOptions::Postgres(_) => {
            let report = audit.verify(anchor.as_ref()).await?;
            Ok(outcome(report, "PostgreSQL"))
        }
    }
}

/// What a verification found, said of the records in `place`.
fn outcome(report: conductor_audit::VerifyReport, place: &str) -> VerifyOutcome {
    if let Some(problem) = report.anchor_problem {
        return VerifyOutcome {
            ok: false,
            records: report.records,
            first_bad_seq: report.first_bad_seq,
            file: None,
            line: None,
            message: problem,
            last_hash: report.last_hash,
        };
    }
    match report.failure {
        None => VerifyOutcome {
            ok: true,
            records: report.records,
            first_bad_seq: None,
            file: None,
            line: None,
            message: format!(
                "{} records in {place}; the hash chain is intact",
                report.records
            ),
            last_hash: report.last_hash,
        },
        Some(f) => VerifyOutcome {
            ok: false,
            records: report.records,
            first_bad_seq: Some(f.seq),
            file: Some(f.file.display().to_string()),
            line: Some(f.line),
            message: f.message,
            last_hash: report.last_hash,
        },
    }
}

pub use conductor_core::report::Scope as ReportScope;

/// The compliance report ([`Compliance`], built by the same transition as the live state) with
/// the chain's verdict.
#[derive(Debug, Clone)]
pub struct ComplianceReport {
    pub compliant: bool,
    /// The summary line (its counts are the tables' lengths), then the findings.
    pub findings: Vec<String>,
    pub report: Compliance,
    pub chain_intact: bool,
}

impl ComplianceReport {
    pub fn to_json(&self) -> Value {
        let r = &self.report;
        json!({
            "compliant": self.compliant,
            "findings": self.findings,
            "chain_intact": self.chain_intact,
            "counts": {"ran": r.ran.len(), "blocked": r.blocked.len(), "approvals": r.approvals.len(), "not_run": r.not_run.len()},
            "not_run": r.not_run.iter().map(|c| json!({
                "workflow_id": c.workflow_id, "call_id": c.call_id, "tool": c.tool,
                "decided_at_ms": c.decided_at_ms, "error": c.error,
            })).collect::<Vec<_>>(),
            "ran": r.ran.iter().map(|c| json!({
                "workflow_id": c.workflow_id, "call_id": c.call_id, "tool": c.tool, "step": c.step,
                "decided_at_ms": c.decided_at_ms, "finished_at_ms": c.finished_at_ms,
                "outcome": c.outcome, "duration_us": c.duration_us, "error": c.error,
                "approval_id": c.approval_id, "approved_by": c.approved_by,
            })).collect::<Vec<_>>(),
            "blocked": r.blocked.iter().map(|b| json!({
                "workflow_id": b.workflow_id, "call_id": b.call_id, "tool": b.tool, "at_ms": b.at_ms,
                "how": b.how.as_str(), "rules": b.rules, "reason": b.reason,
            })).collect::<Vec<_>>(),
            "approvals": r.approvals.iter().map(|a| json!({
                "id": a.id, "workflow_id": a.workflow_id, "call_id": a.call_id, "tool": a.tool,
                "gate": a.gate, "arguments_digest": a.arguments_digest,
                "requested_by": a.requested_by, "requested_at_ms": a.requested_at_ms,
                "verdict": a.verdict, "decided_by": a.decided_by, "reason": a.reason,
                "decided_at_ms": a.decided_at_ms,
                "wait_ms": a.decided_at_ms.saturating_sub(a.requested_at_ms).max(0),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Reads the whole log through [`ReportFold`] (the same transition as the live state) and checks
/// the chain.
pub async fn compliance(
    audit: &AuditLog,
    config: Arc<Config>,
    scope: &ReportScope,
) -> Result<ComplianceReport, Error> {
    let chain = verify_log(audit, None).await?;
    let audit = audit.clone();
    let scope = scope.clone();
    let report = blocking(move || {
        let mut fold = ReportFold::new(config, scope);
        for record in audit.read_from::<ReplayEvent>(1)? {
            let record = record?;
            fold.add(record.ts_ms, &record.event);
        }
        Ok(fold.finish())
    })
    .await?;
    let mut findings = vec![report.summary()];
    if !chain.ok {
        findings.push(format!(
            "the audit chain is broken at seq {}: {}",
            chain.first_bad_seq.unwrap_or(0),
            chain.message
        ));
    }
    findings.extend(report.findings.iter().cloned());
    Ok(ComplianceReport {
        compliant: chain.ok && report.compliant(),
        findings,
        report,
        chain_intact: chain.ok,
    })
}
