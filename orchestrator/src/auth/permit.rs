//! What an identity may do beyond calling the tools of its allow-list: act in a workflow (ownership),
//! read, approve, reload. Small pure functions over the configuration; each refusal names its rule.

use super::Identity;
use crate::config::{ANONYMOUS, Config, OPERATOR, caller_name};
use crate::error::Error;

/// The ownership rule: a workflow belongs to the identity that started it (the first word of its caller).
/// Another identity may act in it only when its client is granted `act_for` the owner; the control
/// token's identity may act anywhere.
pub fn permit_owner(
    config: &Config,
    identity: &Identity,
    workflow_id: &str,
    owner_caller: &str,
) -> Result<(), Error> {
    let owner = caller_name(owner_caller);
    if owner == identity.name || identity.name == OPERATOR {
        return Ok(());
    }
    let granted = config
        .clients
        .get(&identity.name)
        .is_some_and(|c| c.act_for.iter().any(|o| o == owner));
    if granted {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "refused by the owner rule: workflow {workflow_id} belongs to {owner}, and {} is not granted act_for {owner}; start a workflow of your own, or configure clients.{}.act_for",
        identity.name, identity.name
    )))
}

/// Reading workflows, pending approvals, the audit log and `Watch`: open unless authentication is
/// required; then the control token or a client with `read`.
pub fn permit_read(config: &Config, identity: &Identity, what: &str) -> Result<(), Error> {
    if !config.auth.required || identity.name == OPERATOR {
        return Ok(());
    }
    if config.clients.get(&identity.name).is_some_and(|c| c.read) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "reading {what} needs the control token or a client with \"read\": true; {} has neither",
        identity.name
    )))
}

/// Calling a tool that reads approval requests (the approval ledger's, see
/// [`Config::reads_approvals`]): a pending request shows another caller's arguments and name, so it
/// needs what reading approvals needs on every route, the control token or a client with `read` or
/// `approve` (open only in a single-user setup: no clients, authentication not required). Other
/// tools pass; their allow-lists are the engine's.
pub fn permit_approval_reads(config: &Config, caller: &str, tool: &str) -> Result<(), Error> {
    if !config.reads_approvals(tool) || config.may_read_approvals(caller) {
        return Ok(());
    }
    Err(Error::PermissionDenied(format!(
        "{tool} reads approval requests (others' arguments and names), which needs the control \
         token or a client with \"read\" or \"approve\": true; {} has neither",
        caller_name(caller)
    )))
}

/// Approving and denying: the control token's identity, or a client with `approve`. With neither a
/// control token nor an approver configured (and authentication not required) anyone may decide, as a
/// single-user setup expects; the decision still records who.
pub fn permit_approve(config: &Config, identity: &Identity, action: &str) -> Result<(), Error> {
    if identity.name == OPERATOR
        || config
            .clients
            .get(&identity.name)
            .is_some_and(|c| c.approve)
    {
        return Ok(());
    }
    let open = config.control_token.is_none()
        && !config.auth.required
        && !config.clients.values().any(|c| c.approve);
    if open {
        return Ok(());
    }
    Err(refusal(identity, action, "a client with \"approve\": true"))
}

/// Reload and other operator actions: the control token only (open when none is configured and
/// authentication is not required).
pub fn permit_reload(config: &Config, identity: &Identity, action: &str) -> Result<(), Error> {
    if identity.name == OPERATOR || (config.control_token.is_none() && !config.auth.required) {
        return Ok(());
    }
    Err(refusal(identity, action, "nothing else"))
}

fn refusal(identity: &Identity, action: &str, or: &str) -> Error {
    if identity.name == ANONYMOUS {
        Error::Unauthenticated(format!(
            "{action} needs the control token or {or}: send `authorization: Bearer <token>` (conductorctl reads CONDUCTOR_TOKEN or --token-file)"
        ))
    } else {
        Error::PermissionDenied(format!(
            "{action} refused: {} may not; it needs the control token or {or}",
            identity.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two servers, one of them the approval ledger; `clients` as given.
    fn config(clients: serde_json::Value) -> Config {
        let text = json!({
            "servers": {
                "s": { "grpc": "http://127.0.0.1:1", "tools": ["a", "b"] },
                "ledger": { "grpc": "http://127.0.0.1:2", "tools": ["get_approval", "list_approvals"] }
            },
            "approval_ledger": "ledger",
            "control": { "token": "op-secret" },
            "clients": clients
        });
        Config::from_slice(text.to_string().as_bytes()).expect("valid configuration")
    }

    #[test]
    fn the_ledgers_tools_need_read_or_approve_and_are_not_in_other_allow_lists() {
        let config = config(json!({
            "agent": { "tools": ["*"], "token": "agent-secret" },
            "narrow": { "tools": ["a", "list_approvals"], "token": "narrow-secret" },
            "reader": { "tools": ["*"], "token": "reader-secret", "read": true },
            "approver": { "token": "approver-secret", "approve": true }
        }));
        let tools = |caller: &str| {
            config
                .allowed_for(caller, None)
                .map(|a| a.tools.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        };
        // (caller, may call list_approvals, its allow-list: None for every tool)
        let table: [(&str, bool, Option<&[&str]>); 6] = [
            ("agent (token)", false, Some(&["a", "b"])),
            ("mcp:narrow (http session 1)", false, Some(&["a"])),
            ("reader", true, None),
            ("approver", true, Some(&[])),
            (OPERATOR, true, None),
            (ANONYMOUS, false, Some(&[])),
        ];
        for (caller, may, allowed) in table {
            let permit = permit_approval_reads(&config, caller, "list_approvals");
            assert_eq!(permit.is_ok(), may, "{caller}: {permit:?}");
            if let Err(refusal) = permit {
                assert!(
                    matches!(&refusal, Error::PermissionDenied(m) if m.contains("needs the control token or a client with \"read\" or \"approve\"")),
                    "{refusal:?}"
                );
            }
            assert!(
                permit_approval_reads(&config, caller, "a").is_ok(),
                "{caller}"
            );
            assert_eq!(
                tools(caller),
                allowed.map(|t| t.iter().map(|s| s.to_string()).collect()),
                "{caller}"
            );
        }
    }

    #[test]
    fn a_single_user_setup_reads_approvals_as_it_reads_everything() {
        let open = config(json!({}));
        assert!(permit_approval_reads(&open, ANONYMOUS, "get_approval").is_ok());
        assert!(open.allowed_for(ANONYMOUS, None).is_none());
        let text = json!({
            "servers": { "ledger": { "grpc": "http://127.0.0.1:2", "tools": ["list_approvals"] } },
            "approval_ledger": "ledger",
            "auth": { "required": true, "resource": "https://gw.example/mcp" },
            "control": { "token": "op-secret" }
        });
        let required = Config::from_slice(text.to_string().as_bytes()).expect("valid");
        assert!(permit_approval_reads(&required, "jwt:someone", "list_approvals").is_err());
        assert!(permit_approval_reads(&required, OPERATOR, "list_approvals").is_ok());
    }
}
