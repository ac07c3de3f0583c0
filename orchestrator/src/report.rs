//! Reading the audit log back: filtered queries, chain verification and compliance reports.
//!
//! All of it reads the files (on a blocking thread), never the live state, so a report says exactly what
//! the durable record says.

use crate::approval::Approval;
use crate::audit::{ApprovalVerdict, AuditEvent, AuditRecord, DecisionKind, Outcome};
use crate::error::Error;
use conductor_audit::AuditError;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub workflow_id: Option<String>,
    pub tool: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<DecisionKind>,
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
    dir: &Path,
    filter: &AuditFilter,
    after_seq: u64,
    limit: usize,
) -> Result<(Vec<AuditRecord>, Option<u64>), Error> {
    let dir = dir.to_path_buf();
    let filter = filter.clone();
    blocking(move || {
        let mut out = Vec::new();
        for record in conductor_audit::read_from::<AuditEvent>(&dir, after_seq + 1)? {
            let record = record?;
            if !filter.matches(&record) {
                continue;
            }
            if out.len() == limit {
                let next = out.last().map(|r: &AuditRecord| r.seq);
                return Ok((out, next));
            }
            out.push(record);
        }
        Ok((out, None))
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
}

pub async fn verify(dir: &Path) -> Result<VerifyOutcome, Error> {
    let dir: PathBuf = dir.to_path_buf();
    blocking(move || {
        let report = conductor_audit::verify_dir(&dir)?;
        Ok(match report.failure {
            None => VerifyOutcome {
                ok: true,
                records: report.records,
                first_bad_seq: None,
                file: None,
                line: None,
                message: format!(
                    "{} records in {} file(s); the hash chain is intact",
                    report.records, report.files
                ),
            },
            Some(f) => VerifyOutcome {
                ok: false,
                records: report.records,
                first_bad_seq: Some(f.seq),
                file: Some(f.file.display().to_string()),
                line: Some(f.line),
                message: f.message,
            },
        })
    })
    .await
}

#[derive(Debug, Clone, Default)]
pub struct ReportScope {
    pub workflow_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// Which calls ran, which were blocked and why, which approvals were given by whom, and a verdict.
#[derive(Debug, Clone)]
pub struct ComplianceReport {
    pub compliant: bool,
    pub findings: Vec<String>,
    /// `call_decided` and `call_finished` records, in order.
    pub calls: Vec<AuditRecord>,
    /// Denied decisions, and approvals refused or expired.
    pub violations: Vec<AuditRecord>,
    pub approvals: Vec<Approval>,
    pub chain_intact: bool,
}

impl ComplianceReport {
    pub fn to_json(&self) -> Value {
        json!({
            "compliant": self.compliant,
            "findings": self.findings,
            "chain_intact": self.chain_intact,
            "calls": self.calls,
            "violations": self.violations,
            "approvals": self.approvals.iter().map(|a| json!({
                "id": a.id, "workflow_id": a.workflow_id, "tool": a.tool, "gate": a.gate,
                "arguments_digest": a.arguments_digest, "requested_at_ms": a.requested_at_ms,
                "verdict": a.verdict, "decided_by": a.decided_by, "reason": a.reason,
                "wait_ms": a.decided_at_ms.saturating_sub(a.requested_at_ms).max(0),
            })).collect::<Vec<_>>(),
        })
    }
}

pub async fn compliance(dir: &Path, scope: &ReportScope) -> Result<ComplianceReport, Error> {
    let chain = verify(dir).await?;
    let filter = AuditFilter {
        since_ms: scope.since_ms,
        until_ms: scope.until_ms,
        workflow_id: scope.workflow_id.clone(),
        ..Default::default()
    };
    let dir = dir.to_path_buf();
    let mut report = blocking(move || {
        let mut builder = ReportBuilder::default();
        for record in conductor_audit::read_from::<AuditEvent>(&dir, 1)? {
            let record = record?;
            if filter.matches(&record) {
                builder.add(record);
            }
        }
        Ok(builder.finish())
    })
    .await?;
    if !chain.ok {
        report.compliant = false;
        report.chain_intact = false;
        report.findings.insert(
            0,
            format!(
                "the audit chain is broken at seq {}: {}",
                chain.first_bad_seq.unwrap_or(0),
                chain.message
            ),
        );
    }
    Ok(report)
}

#[derive(Default)]
struct ReportBuilder {
    calls: Vec<AuditRecord>,
    violations: Vec<AuditRecord>,
    approvals: Vec<Approval>,
    /// Per call: allowed by the engine; gated; approved.
    allowed: HashMap<String, (bool, bool, bool)>,
    findings: Vec<String>,
    compliant: bool,
}

impl ReportBuilder {
    fn add(&mut self, record: AuditRecord) {
        match &record.event {
            AuditEvent::CallDecided {
                call_id, decision, ..
            } => {
                let entry = self.allowed.entry(call_id.clone()).or_default();
                match decision {
                    DecisionKind::Allow => entry.0 = true,
                    DecisionKind::NeedsApproval => entry.1 = true,
                    DecisionKind::Deny => self.violations.push(record.clone()),
                }
                self.calls.push(record);
            }
            AuditEvent::ApprovalRequested {
                workflow_id,
                call_id,
                tool,
                approval_id,
                gate,
                arguments_digest,
                expires_at_ms,
                four_eyes,
            } => {
                self.approvals.push(Approval {
                    id: approval_id.clone(),
                    workflow_id: workflow_id.clone(),
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    step: None,
                    gate: gate.clone(),
                    arguments: Value::Null,
                    arguments_digest: arguments_digest.clone(),
                    config_version: String::new(),
                    requested_by: String::new(),
                    requested_at_ms: record.ts_ms,
                    expires_at_ms: *expires_at_ms,
                    verdict: None,
                    decided_by: String::new(),
                    reason: String::new(),
                    decided_at_ms: 0,
                    four_eyes: *four_eyes,
                    workflow_caller: String::new(),
                });
            }
            AuditEvent::ApprovalDecided {
                call_id,
                approval_id,
                verdict,
                approver,
                reason,
                ..
            } => {
                if let Some(a) = self
                    .approvals
                    .iter_mut()
                    .rev()
                    .find(|a| &a.id == approval_id)
                {
                    a.verdict = Some(*verdict);
                    a.decided_by = approver.clone();
                    a.reason = reason.clone();
                    a.decided_at_ms = record.ts_ms;
                }
                if *verdict == ApprovalVerdict::Approved {
                    self.allowed.entry(call_id.clone()).or_default().2 =
                        !approver.trim().is_empty();
                } else {
                    self.violations.push(record);
                }
            }
            AuditEvent::CallFinished {
                call_id,
                tool,
                outcome,
                ..
            } => {
                let (allowed, gated, approved) =
                    self.allowed.get(call_id).copied().unwrap_or_default();
                if !allowed {
                    self.findings.push(format!("call {call_id} of {tool} ran without an allow decision in this report's range"));
                } else if gated && !approved {
                    self.findings.push(format!("call {call_id} of {tool} ran through an approval gate without a named approver"));
                }
                if *outcome == Outcome::Interrupted {
                    self.findings.push(format!("call {call_id} of {tool} was interrupted by a restart; its effect is unknown"));
                }
                self.calls.push(record);
            }
            _ => {}
        }
    }

    fn finish(mut self) -> ComplianceReport {
        self.compliant = self.findings.is_empty();
        let ran = self
            .calls
            .iter()
            .filter(|r| matches!(r.event, AuditEvent::CallFinished { .. }))
            .count();
        let blocked = self.violations.len();
        let mut findings = vec![format!(
            "{ran} call(s) ran; {blocked} attempt(s) were blocked by policy or by an approver and did not run"
        )];
        findings.append(&mut self.findings);
        ComplianceReport {
            compliant: self.compliant,
            findings,
            calls: self.calls,
            violations: self.violations,
            approvals: self.approvals,
            chain_intact: true,
        }
    }
}
