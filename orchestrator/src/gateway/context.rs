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
