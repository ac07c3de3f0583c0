//! `approve`, `deny` and `pending`: the person's side of an approval gate.
//!
//! `pending` shows the exact arguments a request would release and their sha256 digest, so a person sees
//! what they approve; the approver's name defaults to the login name and is recorded with the decision.

use crate::cli::{DecideArgs, Global};
use crate::client::{Answer, Client, login_name};
use crate::output::{Out, print_json, time_ms};
use crate::present::{approval_json, approval_state};
use conductor_proto::v1 as pb;

pub async fn decide(global: &Global, args: DecideArgs, approve: bool) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let request = pb::ApprovalDecisionRequest {
        approval_id: args.id.trim().to_owned(),
        approver: args.approver.unwrap_or_else(login_name),
        reason: args.reason.unwrap_or_default(),
        arguments_digest: args.digest.unwrap_or_default(),
    };
    let answer = if approve {
        client.rpc().approve(request).await
    } else {
        client.rpc().deny(request).await
    };
    let approval = answer.answer(&client)?;
    if out.json {
        print_json(&approval_json(&approval));
        return Ok(());
    }
    let state = approval_state(approval.state);
    let reason = if approval.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", approval.reason)
    };
    outln!(
        "approval {} {} by {}{reason}: {} of workflow {} {}",
        approval.id,
        out.state(state),
        approval.decided_by,
        approval.tool,
        approval.workflow_id,
        if approval.state == pb::ApprovalState::Approved as i32 {
            "will run"
        } else {
            "will not run"
        }
    );
    Ok(())
}

pub async fn pending(global: &Global) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let approvals = client
        .rpc()
        .list_pending_approvals(pb::ListPendingApprovalsRequest {})
        .await
        .answer(&client)?
        .approvals;
    if out.json {
        print_json(&serde_json::Value::Array(
            approvals.iter().map(approval_json).collect(),
        ));
        return Ok(());
    }
    if approvals.is_empty() {
        outln!("no approval requests are waiting");
        return Ok(());
    }
    for a in &approvals {
        let step = if a.step.is_empty() {
            String::new()
        } else {
            format!(" step {}", a.step)
        };
        outln!("{} {}", out.bold("approval"), out.bold(&a.id));
        outln!(
            "  call:       {}{step} in workflow {} (gate {})",
            a.tool,
            a.workflow_id,
            a.gate
        );
        outln!(
            "  requested:  {} by {}; expires {}",
            time_ms(a.requested_at_ms),
            a.requested_by,
            time_ms(a.expires_at_ms)
        );
        if !a.why.is_empty() {
            outln!("  why:        {}", a.why);
        }
        outln!("  sha256:     {}", a.arguments_digest);
        // The same function the orchestrator and the ledger use: a digest that does not cover the
        // arguments shown here is a request nobody should approve.
        if conductor_core::digest::approval_digest_of_text(&a.arguments_json).as_deref()
            != Some(a.arguments_digest.as_str())
        {
            outln!(
                "  {}",
                out.bold(
                    "WARNING: this digest is not the digest of the arguments below; do not approve"
                )
            );
        }
        if a.four_eyes {
            let requester = conductor_core::config::caller_name(&a.requested_by);
            let owner = conductor_core::config::caller_name(&a.workflow_caller);
            if requester.is_empty() || requester.eq_ignore_ascii_case(owner) {
                outln!("  four eyes:  a person other than {owner} must decide");
            } else {
                outln!("  four eyes:  a person other than {requester} and {owner} must decide");
            }
        }
        outln!("  arguments:");
        let pretty = serde_json::from_str::<serde_json::Value>(&a.arguments_json)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| a.arguments_json.clone());
        for line in pretty.lines() {
            outln!("    {line}");
        }
        outln!(
            "  decide:     conductorctl approve {} --digest {} --reason \"...\"   |   conductorctl deny {} --reason \"...\"",
            a.id,
            a.arguments_digest,
            a.id
        );
        outln!();
    }
    Ok(())
}
