//! What the fronts ask about an agent's context: the workflow a session-free client's identity is in
//! now, and the labels that context carries. Reads of the state only; every change goes through
//! the usual operations (`start_workflow_from`, `end_ad_hoc`).

use super::Gateway;

impl Gateway {
    /// The newest running ad-hoc workflow started by exactly `caller` (an identity with its client
    /// label, as recorded with the workflow), if any: where a session-free client's call without a
    /// handle goes. Rebuilt from the log like the rest of the state, so it outlives a restart.
    pub fn current_ad_hoc(&self, caller: &str) -> Option<String> {
        self.inner
            .state()
            .current_ad_hoc(caller)
            .map(|w| w.id.to_string())
    }

    /// Completes a template workflow whose every step has succeeded, when its caller drove the
    /// steps itself (an MCP session or handle bound to it): nothing else would end it. A run
    /// driven by the orchestrator ends the same way; ending twice changes nothing.
    pub(super) async fn complete_if_every_step_done(&self, id: &str) {
        let done = self.inner.state().workflows.get(id).is_some_and(|w| {
            !w.state.is_finished() && w.template.is_some() && w.steps_done >= w.steps_total()
        });
        if done
            && let Err(e) = self
                .finish_workflow(id, crate::workflow::WorkflowState::Completed, None)
                .await
        {
            tracing::warn!(workflow = %id, error = %e, "could not complete a template workflow whose steps are all done");
        }
    }

    /// The flow labels workflow `id` has seen, by label (empty for an unknown workflow).
    pub fn workflow_labels(&self, id: &str) -> Vec<String> {
        self.inner
            .state()
            .workflows
            .get(id)
            .map(|w| {
                w.history
                    .labels
                    .names()
                    .iter()
                    .map(|l| l.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether a caller (as recorded with its workflows) names one agent context, whose running
/// workflows share their flow labels: an MCP session's, or a session-free identity's and client's
/// where the identity is one agent's (not the `anonymous` that callers without a credential share,
/// but in a single-user setup). A gRPC caller's workflows (template runs, `conductorctl`) stay
/// apart.
pub(super) fn shares_context(config: &crate::config::Config, caller: &str) -> bool {
    caller.contains("; mcp client ")
        && (caller.contains(", http session ")
            || caller.ends_with(", stdio)")
            || config.tells_apart(crate::config::caller_name(caller)))
}
