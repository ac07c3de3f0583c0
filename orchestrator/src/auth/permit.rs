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
