//! Dynamic shell completion with clap's engine: template names, workflow ids and approval ids are asked
//! of the orchestrator at the moment the shell completes. Installed with
//! `source <(COMPLETE=bash conductorctl)` (zsh, fish, elvish and PowerShell alike).
//!
//! The completers see no flags (the line is not parsed yet): they take the address and token from the
//! environment and the contexts file, as commands do without flags. A completer never fails loudly and
//! never waits long: no orchestrator within [`LIMIT`] means no candidates.

use crate::cli::{ColorChoice, Global};
use crate::client::Client;
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use conductor_proto::v1 as pb;
use std::time::Duration;

/// How long a completion may wait for the orchestrator.
const LIMIT: Duration = Duration::from_secs(2);

/// Template names, with their descriptions.
pub fn templates() -> ArgValueCandidates {
    ArgValueCandidates::new(|| ask(Asked::Templates))
}

/// Workflow ids (unfinished ones first), with their template and state.
pub fn workflows() -> ArgValueCandidates {
    ArgValueCandidates::new(|| ask(Asked::Workflows))
}

/// Pending approval ids, with the call each would release.
pub fn approvals() -> ArgValueCandidates {
    ArgValueCandidates::new(|| ask(Asked::Approvals))
}

#[derive(Clone, Copy)]
enum Asked {
    Templates,
    Workflows,
    Approvals,
}

fn ask(asked: Asked) -> Vec<CompletionCandidate> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        tokio::time::timeout(LIMIT, candidates(asked))
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    })
}

async fn candidates(asked: Asked) -> Option<Vec<CompletionCandidate>> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let global = crate::context::apply(Global {
        orchestrator: var("CONDUCTOR_ORCHESTRATOR"),
        context: var("CONDUCTOR_CONTEXT"),
        token: var("CONDUCTOR_TOKEN"),
        token_file: var("CONDUCTOR_TOKEN_FILE").map(Into::into),
        tls: crate::cli::TlsArgs {
            ca_file: var("CONDUCTOR_CA_FILE").map(Into::into),
            cert: var("CONDUCTOR_CERT").map(Into::into),
            key: var("CONDUCTOR_KEY").map(Into::into),
        },
        json: false,
        color: ColorChoice::Never,
    })
    .ok()?;
    let client = Client::connect(&global).await.ok()?;
    let candidate = |value: &str, help: String| {
        CompletionCandidate::new(value.to_owned()).help(Some(help.into()))
    };
    Some(match asked {
        Asked::Templates => client
            .rpc()
            .list_templates(pb::ListTemplatesRequest {})
            .await
            .ok()?
            .into_inner()
            .templates
            .iter()
            .map(|t| candidate(&t.name, t.description.clone()))
            .collect(),
        Asked::Workflows => client
            .rpc()
            .list_workflows(pb::ListWorkflowsRequest {
                active_only: false,
                limit: 100,
            })
            .await
            .ok()?
            .into_inner()
            .workflows
            .iter()
            .map(|w| {
                let what = if w.template.is_empty() {
                    "ad hoc"
                } else {
                    &w.template
                };
                candidate(
                    &w.id,
                    format!("{what}, {}", crate::present::workflow_state(w.state)),
                )
            })
            .collect(),
        Asked::Approvals => client
            .rpc()
            .list_pending_approvals(pb::ListPendingApprovalsRequest {})
            .await
            .ok()?
            .into_inner()
            .approvals
            .iter()
            .map(|a| candidate(&a.id, format!("{} in {}", a.tool, a.workflow_id)))
            .collect(),
    })
}
