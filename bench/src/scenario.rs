//! What the bench calls and under which rules: one cheap, real tool call (`process_data` on one
//! record), its prerequisite (`validate_data`, called once per workflow so the sequence and
//! conditional rules really run and pass), and the orchestrator configuration that states them.

use serde_json::{Value, json};

/// The measured tool: real work (normalise one record), small request and reply.
pub const TOOL: &str = "process_data";
/// Its arguments.
pub const TOOL_ARGS: &str = r#"{"records":[{"a":1}]}"#;
/// Called once at the start of each workflow, so the measured tool's rules pass.
pub const PREREQUISITE: &str = "validate_data";
/// Its arguments: one valid customer.
pub const PREREQUISITE_ARGS: &str =
    r#"{"records":[{"id":"1","name":"Ada","email":"ada@example.com"}],"schema":"customer"}"#;

/// The gRPC URLs of the five tool servers.
#[derive(Debug, Clone)]
pub struct ServerUrls {
    pub validation: String,
    pub processing: String,
    pub backup: String,
    pub notification: String,
    pub approval: String,
}

/// The orchestrator configuration of the bench: the five servers and rules the measured call must
/// pass (a sequence, a conditional, a workflow-scoped exclusive group that includes it), plus the
/// shipped configuration's other kinds (a global exclusive group, an approval gate) so the policy set
/// is a realistic one. `extra_servers` adds e.g. an MCP downstream for the peers comparison.
pub fn orchestrator_config(urls: &ServerUrls, extra_servers: Option<(&str, Value)>) -> String {
    let mut servers = json!({
        "validation": { "grpc": urls.validation, "tools": ["validate_data", "list_schemas"], "timeout": "10s" },
        "processing": { "grpc": urls.processing, "tools": ["process_data"], "timeout": "30s" },
        "backup": { "grpc": urls.backup, "tools": ["create_backup", "list_backups", "restore_backup"], "timeout": "30s" },
        "notification": { "grpc": urls.notification, "tools": ["send_notification", "list_notifications"], "timeout": "10s" },
        "approval": { "grpc": urls.approval, "tools": ["get_approval", "list_approvals"], "timeout": "5s" }
    });
    if let (Some((name, server)), Some(map)) = (extra_servers, servers.as_object_mut()) {
        map.insert(name.to_owned(), server);
    }
    json!({
        "servers": servers,
        "approval_ledger": "approval",
        "rules": [
            { "id": "process-after-validate", "kind": "sequence", "tool": "process_data", "after": ["validate_data"] },
            { "id": "process-needs-valid-data", "kind": "conditional", "tool": "process_data", "requires_success": ["validate_data"] },
            { "id": "no-backup-while-processing", "kind": "exclusive", "tools": ["process_data", "create_backup"], "scope": "workflow" },
            { "id": "backup-after-process", "kind": "sequence", "tool": "create_backup", "after": ["process_data"] },
            { "id": "one-backup-writer", "kind": "exclusive", "tools": ["create_backup", "restore_backup"], "scope": "global" },
            { "id": "restore-needs-approval", "kind": "approval", "tool": "restore_backup", "timeout": "10m" }
        ]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_accepted_by_the_orchestrator() {
        let url = "http://127.0.0.1:1".to_owned();
        let urls = ServerUrls {
            validation: url.clone(),
            processing: url.clone(),
            backup: url.clone(),
            notification: url.clone(),
            approval: url,
        };
        let text = orchestrator_config(&urls, None);
        conductor_core::config::Config::from_slice(text.as_bytes()).expect("a valid configuration");
        serde_json::from_str::<Value>(TOOL_ARGS).expect("JSON");
        serde_json::from_str::<Value>(PREREQUISITE_ARGS).expect("JSON");
    }
}
