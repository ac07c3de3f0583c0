//! `audit tail|query|verify|report`: reading the tamper-evident audit log.
//!
//! `verify DIR` works offline with the same chain walk the orchestrator uses on start; without DIR the
//! orchestrator verifies its own log. A broken chain names the first bad seq, file and line, and exits 1.

use crate::cli::{
    AuditCommand, DecisionFilter, EventKind, Global, QueryArgs, ReportArgs, TailArgs, VerifyArgs,
};
use crate::client::{Answer, CliError, Client};
use crate::output::{
    Out, clip, duration_us, parse_time, print_json, print_json_line, table, time_ms,
};
use crate::present::{approval_state, describe, event_json, event_line, kind_name, outcome};
use crate::watch::{Followed, Follower, lost_note, print_event, resumed_note};
use conductor_proto::v1 as pb;
use serde_json::{Value, json};

pub async fn audit(global: &Global, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail(args) => tail(global, args).await,
        AuditCommand::Query(args) => query(global, args).await,
        AuditCommand::Verify(args) => verify(global, args).await,
        AuditCommand::Report(args) => report(global, args).await,
    }
}

/// A `--since`/`--until` value in ms (0 when absent); a value that is no time is a usage error.
fn time_flag(flag: &str, value: Option<&str>) -> Result<i64, CliError> {
    value.map_or(Ok(0), |text| {
        parse_time(text).map_err(|e| CliError::Usage(format!("{flag}: {e:#}")))
    })
}

fn print_events(out: &Out, events: &[pb::AuditEvent]) {
    for e in events {
        if out.json {
            print_json_line(&event_json(e));
        } else {
            outln!("{}", event_line(out, e));
        }
    }
}

async fn tail(global: &Global, args: TailArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let last = client
        .rpc()
        .status(pb::StatusRequest {})
        .await
        .answer(&client)?
        .last_seq;
    let mut after = last.saturating_sub(args.count);
    while after < last {
        let request = pb::AuditQueryRequest {
            after_seq: after,
            limit: u32::try_from(last - after).unwrap_or(1000).min(1000),
            ..Default::default()
        };
        let page = client.rpc().query_audit(request).await.answer(&client)?;
        let events: Vec<pb::AuditEvent> =
            page.events.into_iter().filter(|e| e.seq <= last).collect();
        print_events(&out, &events);
        match events.last() {
            Some(e) if page.next_after_seq != 0 => after = e.seq,
            _ => break,
        }
    }
    if !args.follow {
        return Ok(());
    }
    let mut follower = Follower::start(&client, global, None, Some(last + 1)).await?;
    loop {
        match follower.next().await {
            Followed::Event(event) => print_event(&out, &event),
            Followed::Lost(reason) => eprintln!("{}", lost_note(&reason)),
            Followed::Resumed(seq) => eprintln!("{}", resumed_note(seq)),
        }
    }
}

async fn query(global: &Global, args: QueryArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let since_ms = time_flag("--since", args.since.as_deref())?;
    let until_ms = time_flag("--until", args.until.as_deref())?;
    let decision = match args.decision {
        None => pb::DecisionKind::Unspecified,
        Some(DecisionFilter::Allow) => pb::DecisionKind::Allow,
        Some(DecisionFilter::Deny) => pb::DecisionKind::Deny,
        Some(DecisionFilter::NeedsApproval) => pb::DecisionKind::NeedsApproval,
    };
    let trace_id = match args.trace.as_deref().map(str::trim) {
        None => String::new(),
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            id.to_ascii_lowercase()
        }
        Some(id) => {
            return Err(CliError::Usage(format!(
                "--trace: {id:?} is not a trace id (32 hex digits, e.g. 4bf92f3577b34da6a3ce929d0e0e4736)"
            ))
            .into());
        }
    };
    let client = Client::connect(global).await?;
    // Every match is read and the newest `limit` kept: the oldest 100 of 291 answered "what happened
    // in the last hour" wrongly, and said nothing of the rest.
    let limit = args.limit.max(1) as usize;
    let mut events = std::collections::VecDeque::with_capacity(limit.min(1000));
    let mut matched: u64 = 0;
    let mut after_seq = 0;
    loop {
        let request = pb::AuditQueryRequest {
            since_ms,
            until_ms,
            workflow_id: args.workflow.clone().unwrap_or_default(),
            tool: args.tool.clone().unwrap_or_default(),
            kind: args.kind.map(EventKind::log_name).unwrap_or_default(),
            decision: decision as i32,
            after_seq,
            limit: 1000,
            trace_id: trace_id.clone(),
        };
        let page = client.rpc().query_audit(request).await.answer(&client)?;
        for event in page.events {
            matched += 1;
            if events.len() == limit {
                events.pop_front();
            }
            events.push_back(event);
        }
        if page.next_after_seq == 0 {
            break;
        }
        after_seq = page.next_after_seq;
    }
    let events: Vec<pb::AuditEvent> = events.into();
    if matched > events.len() as u64 {
        eprintln!(
            "showing the newest {} of {matched} matching events; see more with --limit {matched}, or narrow the query (--since, --workflow, --kind)",
            events.len()
        );
    }
    if out.json {
        print_json(&Value::Array(events.iter().map(event_json).collect()));
    } else if events.is_empty() {
        outln!("no events match");
    } else {
        // The trace of each call's records, when any was traced: a reader can open it.
        let traced = events.iter().any(|e| !e.trace_id.is_empty());
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let mut row = vec![
                    e.seq.to_string(),
                    time_ms(e.timestamp_ms),
                    e.workflow_id.clone(),
                    kind_name(e).to_owned(),
                    describe(
                        &Out {
                            color: false,
                            ..out
                        },
                        e,
                    ),
                ];
                if traced {
                    row.push(e.trace_id.clone());
                }
                row
            })
            .collect();
        let mut headers = vec!["SEQ", "TIME", "WORKFLOW", "KIND", "WHAT"];
        if traced {
            headers.push("TRACE");
        }
        outln!("{}", table(&out, &headers, &rows));
    }
    Ok(())
}

async fn verify(global: &Global, args: VerifyArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let (ok, records, where_, first_bad, message, last_hash, extra) = match &args.dir {
        None if args.store.is_some() => {
            let url = args.store.clone().unwrap_or_default();
            let report = conductor_audit::pg::verify_postgres(
                &conductor_audit::pg::PgOptions::new(url),
                args.anchor.as_ref(),
            )
            .await
            .map_err(|e| CliError::Failed(format!("cannot verify the PostgreSQL store: {e}")))?;
            let failure = report.failure.as_ref();
            (
                report.ok,
                report.records,
                failure.map(|f| (f.file.display().to_string(), f.line)),
                report.first_bad_seq,
                failure
                    .map(|f| f.message.clone())
                    .or(report.anchor_problem.clone())
                    .unwrap_or_default(),
                report.last_hash.clone(),
                json!({"store": "postgres"}),
            )
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(CliError::Failed(format!(
                    "{} is not a directory of audit log files",
                    dir.display()
                ))
                .into());
            }
            let report = conductor_audit::verify_dir_against(dir, args.anchor.as_ref())
                .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", dir.display())))?;
            let failure = report.failure.as_ref();
            let anchor_problem = report.anchor_problem.clone();
            (
                report.ok,
                report.records,
                failure.map(|f| (f.file.display().to_string(), f.line)),
                report.first_bad_seq,
                failure
                    .map(|f| f.message.clone())
                    .or(anchor_problem)
                    .unwrap_or_default(),
                report.last_hash.clone(),
                json!({"files": report.files, "torn_last_line": report.torn_last_line, "dir": dir.display().to_string()}),
            )
        }
        None => {
            let client = Client::connect(global).await?;
            let r = client
                .rpc()
                .verify_audit(pb::VerifyAuditRequest {
                    anchor: args
                        .anchor
                        .as_ref()
                        .map(|a| format!("{}:{}", a.seq, a.hash))
                        .unwrap_or_default(),
                })
                .await
                .answer(&client)?;
            let where_ = (!r.ok).then(|| (r.file.clone(), r.line));
            (
                r.ok,
                r.records,
                where_,
                (!r.ok).then_some(r.first_bad_seq),
                r.message,
                r.last_hash,
                json!({"orchestrator": client.url}),
            )
        }
    };
    if out.json {
        let mut value = json!({"ok": ok, "records": records, "first_bad_seq": first_bad, "file": where_.as_ref().map(|w| &w.0),
            "line": where_.as_ref().map(|w| w.1), "message": message, "last_hash": last_hash});
        if let (Some(map), Value::Object(more)) = (value.as_object_mut(), extra) {
            map.extend(more);
        }
        print_json(&value);
    } else if ok {
        outln!(
            "{} the hash chain of {records} record(s) is intact",
            out.ok("ok:")
        );
        if !last_hash.is_empty() {
            // The chain cannot show records cut off its end; this line, kept elsewhere, can.
            outln!(
                "last record: {records}:{last_hash}\n  keep it elsewhere; later, `conductorctl audit verify --anchor {records}:{last_hash}` shows that nothing was cut off the end"
            );
        }
        if let Some(torn) = extra.get("torn_last_line").and_then(Value::as_str) {
            outln!("note: the last line is torn (a crash mid-write, never acknowledged): {torn}");
        }
    } else {
        outln!("{} the audit log has been altered", out.bad("BROKEN:"));
        outln!("  first bad seq: {}", first_bad.unwrap_or(0));
        if let Some((file, line)) = where_.filter(|(file, _)| !file.is_empty()) {
            outln!("  at:            {file}:{line}");
        }
        outln!("  problem:       {message}");
        outln!("  {records} record(s) before it verified");
    }
    if ok {
        Ok(())
    } else {
        Err(CliError::Reported.into())
    }
}

async fn report(global: &Global, args: ReportArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let since_ms = time_flag("--since", args.since.as_deref())?;
    let until_ms = time_flag("--until", args.until.as_deref())?;
    let client = Client::connect(global).await?;
    if let Some(id) = &args.workflow {
        // A report on a workflow that does not exist is "not found", not an empty, compliant one.
        client
            .rpc()
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: id.clone(),
            })
            .await
            .answer(&client)?;
    }
    let request = pb::ComplianceReportRequest {
        workflow_id: args.workflow.clone().unwrap_or_default(),
        since_ms,
        until_ms,
    };
    let r = client
        .rpc()
        .compliance_report(request)
        .await
        .answer(&client)?;
    if out.json {
        print_json(
            &serde_json::from_str::<Value>(&r.report_json)
                .unwrap_or_else(|_| json!({"compliant": r.compliant, "findings": r.findings})),
        );
        return Ok(());
    }
    let scope = match (&args.workflow, &args.since) {
        (Some(w), _) => format!("workflow {w}"),
        (None, Some(since)) => format!("the log since {}", time_ms(since_ms).if_empty(since)),
        (None, None) => "the whole log".to_owned(),
    };
    let verdict = if r.compliant {
        out.ok("compliant")
    } else {
        out.bad("NOT compliant")
    };
    outln!("{} for {scope}: {verdict}", out.bold("compliance report"));
    for finding in &r.findings {
        outln!("  - {finding}");
    }
    let calls: Vec<Vec<String>> = r
        .ran
        .iter()
        .map(|c| {
            vec![
                time_ms(c.finished_at_ms),
                c.workflow_id.clone(),
                c.tool.clone(),
                outcome(c.outcome).to_owned(),
                duration_us(c.duration_us),
                c.approved_by.clone().unwrap_or_default(),
                clip(c.error.as_deref().unwrap_or_default(), 50),
            ]
        })
        .collect();
    outln!("\n{} ({})", out.bold("calls that ran"), calls.len());
    if !calls.is_empty() {
        outln!(
            "{}",
            table(
                &out,
                &[
                    "FINISHED",
                    "WORKFLOW",
                    "TOOL",
                    "OUTCOME",
                    "DURATION",
                    "APPROVED BY",
                    "ERROR"
                ],
                &calls
            )
        );
    }
    let blocked: Vec<Vec<String>> = r
        .blocked
        .iter()
        .map(|b| {
            let how = match pb::report_blocked::How::try_from(b.how) {
                Ok(pb::report_blocked::How::Policy) => "policy",
                Ok(pb::report_blocked::How::ApprovalDenied) => "approval denied",
                Ok(pb::report_blocked::How::ApprovalExpired) => "approval expired",
                _ => "blocked",
            };
            vec![
                time_ms(b.at_ms),
                b.workflow_id.clone(),
                b.tool.clone(),
                how.to_owned(),
                b.rules.join(", "),
                b.reason.clone(),
            ]
        })
        .collect();
    outln!("\n{} ({})", out.bold("calls blocked"), blocked.len());
    if !blocked.is_empty() {
        outln!(
            "{}",
            table(
                &out,
                &["WHEN", "WORKFLOW", "TOOL", "BLOCKED BY", "RULE", "WHY"],
                &blocked
            )
        );
    }
    if !r.not_run.is_empty() {
        let rows: Vec<Vec<String>> = r
            .not_run
            .iter()
            .map(|c| {
                vec![
                    time_ms(c.decided_at_ms),
                    c.workflow_id.clone(),
                    c.tool.clone(),
                    clip(c.error.as_deref().unwrap_or_default(), 70),
                ]
            })
            .collect();
        outln!(
            "\n{} ({})",
            out.bold("allowed but never reached their tool"),
            rows.len()
        );
        outln!(
            "{}",
            table(&out, &["DECIDED", "WORKFLOW", "TOOL", "WHY"], &rows)
        );
    }
    let approvals: Vec<Vec<String>> = r
        .approvals
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.workflow_id.clone(),
                a.tool.clone(),
                approval_state(a.state).to_owned(),
                a.decided_by.clone(),
                time_ms(a.decided_at_ms),
                a.reason.clone(),
            ]
        })
        .collect();
    outln!("\n{} ({})", out.bold("approvals"), approvals.len());
    if !approvals.is_empty() {
        outln!(
            "{}",
            table(
                &out,
                &[
                    "APPROVAL", "WORKFLOW", "TOOL", "STATE", "BY", "WHEN", "REASON"
                ],
                &approvals
            )
        );
    }
    Ok(())
}

trait IfEmpty {
    fn if_empty(self, other: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, other: &str) -> String {
        if self.is_empty() {
            other.to_owned()
        } else {
            self
        }
    }
}
