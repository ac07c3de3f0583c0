//! `cluster status`: the nodes of a cluster on one PostgreSQL store, which one is active, the
//! lease's epoch and expiry (by the database's clock), and each standby's lag and last report.
//! Any node answers, with the same view; a node alone on files says there is no cluster, which is
//! an answer (exit 0), not a failure.

use crate::cli::{ClusterCommand, Global};
use crate::client::{Answer, Client};
use crate::output::{Out, duration_ms, print_json, table};
use conductor_proto::v1 as pb;
use serde_json::json;

pub async fn cluster(global: &Global, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status => status(global).await,
    }
}

async fn status(global: &Global) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    let s = client
        .rpc()
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .answer(&client)?;
    if out.json {
        print_json(&json_of(&s));
        return Ok(());
    }
    if !s.clustered {
        outln!(
            "no cluster: the orchestrator at {} is a node alone, its audit log in local files\n  a cluster is two or more orchestrators on one PostgreSQL store (`store.postgres` in the configuration; see the README's Cluster section)",
            client.url
        );
        return Ok(());
    }
    for line in text_of(&out, &s) {
        outln!("{line}");
    }
    Ok(())
}

/// A node's state as `cluster status` says it.
pub fn node_state(state: i32) -> &'static str {
    match pb::NodeState::try_from(state).unwrap_or_default() {
        pb::NodeState::Active => "active",
        pb::NodeState::LeaseExpired => "lease expired",
        pb::NodeState::Standby => "standby",
        pb::NodeState::Fenced => "fenced",
        pb::NodeState::Gone => "gone",
        pb::NodeState::Unspecified => "unknown",
    }
}

fn json_of(s: &pb::ClusterStatusResponse) -> serde_json::Value {
    if !s.clustered {
        return json!({"clustered": false});
    }
    json!({
        "clustered": true,
        "answered_by": s.answered_by,
        "active": (!s.active.is_empty()).then_some(&s.active),
        "active_grpc": s.active_grpc,
        "active_http": s.active_http,
        "epoch": s.epoch,
        "lease_valid_for_ms": s.lease_valid_for_ms,
        "head_seq": s.head_seq,
        "nodes": s.nodes.iter().map(|n| json!({
            "name": n.name, "state": node_state(n.state), "grpc": n.grpc, "http": n.http,
            "applied_seq": n.applied_seq, "head_seq": n.head_seq, "lag_records": n.lag_records,
            "lag_ms": n.lag_ms, "epoch_seen": n.epoch_seen, "last_report_ms_ago": n.last_report_ms_ago,
            "lease_ttl_ms": n.lease_ttl_ms, "answering": n.answering,
        })).collect::<Vec<_>>(),
    })
}

fn text_of(out: &Out, s: &pb::ClusterStatusResponse) -> Vec<String> {
    let mut lines = Vec::new();
    let at = [&s.active_grpc, &s.active_http]
        .into_iter()
        .zip(["gRPC", "HTTP"])
        .filter(|(address, _)| !address.is_empty())
        .map(|(address, what)| format!("{what} {address}"))
        .collect::<Vec<_>>()
        .join(", ");
    let at = if at.is_empty() {
        "advertises no address".to_owned()
    } else {
        at
    };
    if s.active.is_empty() {
        lines.push(format!(
            "{} no node has taken the lease yet (epoch {})",
            out.bold("active:"),
            s.epoch
        ));
    } else if s.lease_valid_for_ms >= 0 {
        lines.push(format!(
            "{} {} ({at}), epoch {}, lease valid for {} ms (by the database's clock)",
            out.bold("active:"),
            s.active,
            s.epoch,
            s.lease_valid_for_ms
        ));
    } else {
        lines.push(format!(
            "{} {} ({at}), epoch {}",
            out.bold("last active:"),
            s.active,
            s.epoch
        ));
        lines.push(format!(
            "{} its lease expired {} ms ago (by the database's clock) and no standby has taken it yet: no node writes, calls are refused until one does",
            out.warn("WARNING:"),
            s.lease_valid_for_ms.unsigned_abs()
        ));
    }
    lines.push(format!(
        "audit head seq {}; answered by {}",
        s.head_seq, s.answered_by
    ));
    let rows: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            let state = node_state(n.state);
            let lag = match (n.state == pb::NodeState::Active as i32, n.lag_records) {
                (true, _) => "-".to_owned(),
                (false, 0) => "0".to_owned(),
                (false, records) => format!("{records} rec, {}", duration_ms(n.lag_ms)),
            };
            vec![
                if n.answering {
                    format!("{} *", n.name)
                } else {
                    n.name.clone()
                },
                match state {
                    "active" => out.ok(state),
                    "gone" | "fenced" | "lease expired" => out.bad(state),
                    _ => state.to_owned(),
                },
                or_dash(&n.grpc),
                or_dash(&n.http),
                n.epoch_seen.to_string(),
                n.applied_seq.to_string(),
                lag,
                n.last_report_ms_ago
                    .map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago")),
            ]
        })
        .collect();
    lines.push(String::new());
    lines.push(table(
        out,
        &[
            "NODE",
            "STATE",
            "GRPC",
            "HTTP",
            "EPOCH",
            "APPLIED",
            "LAG",
            "LAST REPORT",
        ],
        &rows,
    ));
    lines.push(
        out.dim(
            "  (* the node that answered; lag and applied seq as of each node's last report; a node silent for three of its lease lengths is gone, and forgotten after an hour)",
        ),
    );
    for n in &s.nodes {
        if n.state == pb::NodeState::Fenced as i32 {
            lines.push(format!(
                "{} {} lost its lease to epoch {}: it writes nothing more; restart it to make it a standby",
                out.warn("note:"),
                n.name,
                s.epoch
            ));
        }
    }
    lines
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Out {
        Out {
            color: false,
            json: false,
            width: Some(120),
        }
    }

    fn node(name: &str, state: pb::NodeState, lag_records: u64) -> pb::ClusterNode {
        pb::ClusterNode {
            name: name.into(),
            state: state as i32,
            grpc: "127.0.0.1:50051".into(),
            applied_seq: 40,
            head_seq: 40 + lag_records,
            lag_records,
            lag_ms: 35,
            epoch_seen: 2,
            last_report_ms_ago: Some(120),
            lease_ttl_ms: 5000,
            ..Default::default()
        }
    }

    #[test]
    fn the_text_names_the_active_node_its_lease_and_each_standbys_lag() {
        let s = pb::ClusterStatusResponse {
            clustered: true,
            answered_by: "b".into(),
            active: "a".into(),
            active_grpc: "127.0.0.1:50051".into(),
            epoch: 2,
            lease_valid_for_ms: 4100,
            head_seq: 42,
            nodes: vec![
                node("a", pb::NodeState::Active, 0),
                pb::ClusterNode {
                    answering: true,
                    ..node("b", pb::NodeState::Standby, 2)
                },
                node("c", pb::NodeState::Gone, 0),
            ],
            ..Default::default()
        };
        let text = text_of(&plain(), &s).join("\n");
        assert!(
            text.contains("active: a (gRPC 127.0.0.1:50051), epoch 2, lease valid for 4100 ms"),
            "{text}"
        );
        assert!(text.contains("2 rec, 35.0ms"), "{text}");
        assert!(text.contains("b *"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("c ") && l.contains("gone")),
            "{text}"
        );
    }

    #[test]
    fn an_expired_lease_is_a_warning_and_no_cluster_is_plain_json() {
        let s = pb::ClusterStatusResponse {
            clustered: true,
            active: "a".into(),
            epoch: 1,
            lease_valid_for_ms: -800,
            ..Default::default()
        };
        let text = text_of(&plain(), &s).join("\n");
        assert!(
            text.contains("WARNING: its lease expired 800 ms ago"),
            "{text}"
        );
        assert_eq!(
            json_of(&pb::ClusterStatusResponse::default()),
            json!({"clustered": false})
        );
    }
}
