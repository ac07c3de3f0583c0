//! `ClusterStatus`: the cluster as its PostgreSQL store sees it (issue 23, item 8), read by
//! whichever node is asked, active or standby, so an operator can ask any of them and get the
//! same answer. It only reads: the nodes' reports, the lease row and the chain head. A node alone
//! on files has no cluster to show, and says so as an answer rather than an error.

use crate::error::Error;
use crate::gateway::Gateway;
use conductor_audit::StoreOptions;
use conductor_audit::pg::{ClusterNodes, ClusterStatus, NodeState, NodeStatus};
use conductor_proto::v1 as pb;
use std::sync::OnceLock;

/// Reads the cluster's status for the gRPC service; its connections to the store are opened on
/// first use (a node on files never opens any).
#[derive(Debug, Default)]
pub(super) struct ClusterReader {
    nodes: OnceLock<ClusterNodes>,
}

impl ClusterReader {
    pub async fn status(&self, gateway: &Gateway) -> Result<pb::ClusterStatusResponse, Error> {
        let StoreOptions::Postgres(pg) = gateway.audit().store() else {
            return Ok(pb::ClusterStatusResponse::default());
        };
        let nodes = match self.nodes.get() {
            Some(nodes) => nodes,
            None => {
                let opened = ClusterNodes::open(pg)?;
                self.nodes.get_or_init(|| opened)
            }
        };
        let status = nodes.status().await?;
        Ok(response(&status, nodes.name()))
    }
}

/// The store's view as the wire has it, marking the node `answering`.
fn response(status: &ClusterStatus, answering: &str) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        clustered: true,
        answered_by: answering.to_owned(),
        active: status.holder.clone(),
        active_grpc: status.holder_grpc.clone().unwrap_or_default(),
        active_http: status.holder_http.clone().unwrap_or_default(),
        epoch: status.epoch,
        lease_valid_for_ms: status.lease_valid_for_ms,
        head_seq: status.head_seq,
        nodes: status
            .nodes
            .iter()
            .map(|node| self::node(node, answering))
            .collect(),
    }
}

fn node(node: &NodeStatus, answering: &str) -> pb::ClusterNode {
    pb::ClusterNode {
        name: node.name.clone(),
        state: state(node.state) as i32,
        grpc: node.grpc.clone().unwrap_or_default(),
        http: node.http.clone().unwrap_or_default(),
        applied_seq: node.applied_seq,
        head_seq: node.head_seq,
        lag_records: node.lag_records,
        lag_ms: node.lag_ms,
        epoch_seen: node.epoch_seen,
        last_report_ms_ago: node.last_report_ms_ago,
        lease_ttl_ms: node.lease_ttl_ms,
        answering: node.name == answering,
    }
}

fn state(state: NodeState) -> pb::NodeState {
    match state {
        NodeState::Active => pb::NodeState::Active,
        NodeState::LeaseExpired => pb::NodeState::LeaseExpired,
        NodeState::Standby => pb::NodeState::Standby,
        NodeState::Fenced => pb::NodeState::Fenced,
        NodeState::Gone => pb::NodeState::Gone,
    }
}
