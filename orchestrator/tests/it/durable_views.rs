//! What operators see of the audit log's durability: a reload answered as failed changes nothing,
//! views mark what a crash could still take back, and an orchestrator restarted on a log it cannot
//! write serves NOT_SERVING until it can, then resumes by itself.

use crate::common;

use common::*;
use conductor_orchestrator::audit::AuditEvent;
use conductor_proto::v1 as pb;
use serde_json::{Value, json};

async fn status(h: &Harness) -> pb::StatusResponse {
    h.client
        .clone()
        .status(pb::StatusRequest {})
        .await
        .expect("status answers during an outage")
        .into_inner()
}

/// Waits until the log takes records again (the writer retries by itself).
async fn writable_again(h: &Harness) {
    let gateway = &h.orchestrator.gateway;
    wait_until("the audit log to be writable again", || async {
        gateway.audit_state().unwritable.is_none().then_some(())
    })
    .await;
}

/// During an outage a reload is refused, and refused means refused: the running configuration
/// stays (in `status`, for new workflows and for their rules), also once the disk takes records
/// again; a `config_loaded` that was admitted before the disk failed is followed in the log by a
/// `config_refused` saying it never took effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_log_cannot_keep_is_refused_and_changes_nothing() {
    let h = Harness::shipped().await;
    let version = status(&h).await.config_version;
    let mut stricter: Value =
        serde_json::from_str(&std::fs::read_to_string(h.config_path()).expect("config"))
            .expect("json");
    stricter["rules"]
        .as_array_mut()
        .expect("rules")
        .push(json!({
            "id": "schemas-after-validate", "kind": "sequence",
            "tool": "list_schemas", "after": ["validate_data"]
        }));
    std::fs::write(h.config_path(), stricter.to_string()).expect("write");

    let audit = h.orchestrator.gateway.audit().clone();
    audit.inject_full_disk(true);
    // The first reload is admitted (nothing has failed yet) and its record fails on the disk; the
    // second is refused before anything is queued, since the log is known to be unwritable.
    for attempt in ["the record fails", "the log is unwritable"] {
        let refused = h
            .client
            .clone()
            .reload_config(pb::ReloadConfigRequest {})
            .await
            .expect_err(attempt);
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert_eq!(
            status(&h).await.config_version,
            version,
            "a refused reload changed the running configuration ({attempt})"
        );
    }
    audit.inject_full_disk(false);
    writable_again(&h).await;

    assert_eq!(status(&h).await.config_version, version);
    let workflow = h.start_workflow("", json!({})).await;
    assert_eq!(h.workflow(&workflow).await.config_version, version);
    h.call(&workflow, "list_schemas", json!({}))
        .await
        .expect("the refused configuration's rule is not enforced");

    let records = h.audit_records();
    let loaded = records.iter().position(|r| {
        matches!(&r.event, AuditEvent::ConfigLoaded { config_version, .. } if *config_version != version)
    });
    let loaded = loaded.expect("the admitted record was written once the disk returned");
    let undone = records[loaded..].iter().any(|r| {
        matches!(&r.event, AuditEvent::ConfigRefused { problems, .. }
            if problems.iter().any(|p| p.contains("was not put in force") && p.contains(&version)))
    });
    assert!(
        undone,
        "the log says the loaded configuration never took effect"
    );
    let versions: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            AuditEvent::ConfigLoaded { config_version, .. } => Some(config_version.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        versions.len(),
        2,
        "one start, one admitted reload: {versions:?}"
    );
}
