//! Failover: the active node killed with SIGKILL while a client calls, to the first call answered
//! through the other node. The client knows both nodes' addresses and moves to the other one when a
//! call fails, as a client behind no load balancer would; the killed node is started again at
//! once, on its old addresses, and comes up as the new active node's standby, so every kill finds
//! a cluster of two. What a kill costs is the lease running out (the standby may only take it
//! then), the standby's next look at the lease row, its catching up and resuming, and the client's
//! next try.

use super::{Cluster, LEASE, SECTION, STANDBY};
use crate::report::Report;
use crate::scenario::{PREREQUISITE, PREREQUISITE_ARGS, TOOL, TOOL_ARGS};
use crate::stats::median;
use anyhow::{Result, anyhow, bail};
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_proto::v1::{StartWorkflowRequest, WorkflowCallRequest, workflow_call_response};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Kills in a full run (issue 23's table); a quick run makes two and does not judge them.
const KILLS: usize = 5;
const QUICK_KILLS: usize = 2;
/// Calls answered before the first kill and after each restart, so every kill hits a cluster
/// that serves.
const CALLS_BETWEEN: usize = 20;
/// Longer than this without an answer after a kill and the figure fails.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
/// How long the client waits before trying the other node after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// A call answered with success: when the client heard it, and through which node (an index
/// into the client's addresses).
#[derive(Debug, Clone, Copy)]
struct Answered {
    at: Instant,
    node: usize,
}

/// What the calling client has seen, shared with the figure.
#[derive(Default)]
struct Seen {
    answered: Mutex<Vec<Answered>>,
    /// Calls the cluster refused (the client then starts a new workflow).
    refused: AtomicU64,
    /// Calls that failed on their way (the client then tries the other node).
    failed: AtomicU64,
    stop: AtomicBool,
}

impl Seen {
    fn answered(&self) -> std::sync::MutexGuard<'_, Vec<Answered>> {
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self) -> usize {
        self.answered().len()
    }

    /// The first call answered through a node other than `killed` after `at`.
    fn first_after(&self, at: Instant, killed: usize) -> Option<Answered> {
        self.answered()
            .iter()
            .rev()
            .take_while(|a| a.at > at)
            .filter(|a| a.node != killed)
            .last()
            .copied()
    }
}

/// Five kills of the active node (two in a quick run): from each kill to the first call answered
/// through the other node, p50 and max.
pub(super) async fn failover(report: &mut Report, cluster: &mut Cluster<'_>) -> Result<()> {
    let kills = if report.quick { QUICK_KILLS } else { KILLS };
    eprintln!("bench: 9. failover: {kills} kills of the active node");
    let addresses: Vec<(SocketAddr, SocketAddr)> = cluster
        .nodes
        .iter()
        .map(|node| match node.addrs.as_slice() {
            [grpc, http, ..] => Ok((*grpc, *http)),
            _ => Err(anyhow!("{} logged no gRPC and HTTP address", node.name)),
        })
        .collect::<Result<_>>()?;
    let urls: Vec<String> = addresses
        .iter()
        .map(|(grpc, _)| format!("http://{grpc}"))
        .collect();
    let seen = Arc::new(Seen::default());
    let first = cluster.active().await?;
    let client = tokio::spawn(call_until_stopped(urls.clone(), first, Arc::clone(&seen)));
    let outcome = kill_rounds(cluster, &addresses, &urls, &seen, kills).await;
    seen.stop.store(true, Ordering::Release);
    let _ = client.await;
    let times = outcome?;
    let ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
    let (p50, max) = (
        median(ms.iter().copied()),
        ms.iter().copied().fold(0.0, f64::max),
    );
    let goal = (LEASE + Duration::from_secs(1)).as_secs_f64() * 1000.0;
    report.goal(
        SECTION,
        &format!(
            "failover: SIGKILL of the active node → first call answered through the other node, p50 of {kills}"
        ),
        p50,
        "ms",
        format!("≤ lease + 1 s = {goal:.0} ms"),
        p50 <= goal,
        true,
    );
    report.info(SECTION, "failover, max", max, "ms");
    report.detail(
        "9_failover",
        json!({
            "lease_ms": LEASE.as_millis() as u64,
            "kill_to_first_answer_ms": ms,
            "calls_answered": seen.count(),
            "calls_refused": seen.refused.load(Ordering::Relaxed),
            "calls_failed_on_the_way": seen.failed.load(Ordering::Relaxed),
        }),
    );
    Ok(())
}

/// The kills themselves; returns the time from each kill to the first answer through the other
/// node.
async fn kill_rounds(
    cluster: &mut Cluster<'_>,
    addresses: &[(SocketAddr, SocketAddr)],
    urls: &[String],
    seen: &Seen,
    kills: usize,
) -> Result<Vec<Duration>> {
    wait_for_answers(seen, CALLS_BETWEEN).await?;
    let mut times = Vec::with_capacity(kills);
    for kill in 1..=kills {
        let active = cluster.active().await?;
        let victim = &cluster.nodes[active];
        let node = victim
            .addrs
            .first()
            .and_then(|grpc| urls.iter().position(|u| *u == format!("http://{grpc}")))
            .ok_or_else(|| anyhow!("{} is not at an address the client knows", victim.name))?;
        let killed_at = Instant::now();
        // Dropping a daemon kills it with SIGKILL and reaps it.
        drop(cluster.nodes.remove(active));
        let answer = loop {
            if let Some(answer) = seen.first_after(killed_at, node) {
                break answer;
            }
            if killed_at.elapsed() > FAILOVER_DEADLINE {
                bail!(
                    "kill {kill}: no call was answered through the other node within {FAILOVER_DEADLINE:?}; its log:\n{}",
                    cluster
                        .nodes
                        .first()
                        .map(|n| n.log_tail())
                        .unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let took = answer.at.duration_since(killed_at);
        eprintln!("bench: 9. kill {kill}: first answer after {took:?}");
        times.push(took);
        cluster
            .start_node(STANDBY, Some(addresses[node]))
            .await
            .map_err(|e| anyhow!("kill {kill}: starting the killed node again: {e:#}"))?;
        let count = seen.count();
        wait_for_answers(seen, count + CALLS_BETWEEN).await?;
    }
    Ok(times)
}

async fn wait_for_answers(seen: &Seen, count: usize) -> Result<()> {
    let started = Instant::now();
    while seen.count() < count {
        if started.elapsed() > FAILOVER_DEADLINE {
            bail!(
                "the failover client got {} answers of {count} within {FAILOVER_DEADLINE:?} ({} refused, {} failed on the way)",
                seen.count(),
                seen.refused.load(Ordering::Relaxed),
                seen.failed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Why a call did not succeed.
enum Failure {
    /// The cluster answered and said no (the workflow is not usable): start a new workflow.
    Refused,
    /// The node did not answer, or could not serve: try the other node.
    Unreachable,
}

/// One client, one call at a time, through whichever node last answered, until stopped.
async fn call_until_stopped(urls: Vec<String>, first: usize, seen: Arc<Seen>) {
    let mut node = first;
    let mut client = None;
    let mut workflow = None;
    while !seen.stop.load(Ordering::Acquire) {
        match attempt(&urls[node], &mut client, &mut workflow).await {
            Ok(()) => seen.answered().push(Answered {
                at: Instant::now(),
                node,
            }),
            Err(Failure::Refused) => {
                seen.refused.fetch_add(1, Ordering::Relaxed);
                workflow = None;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(Failure::Unreachable) => {
                seen.failed.fetch_add(1, Ordering::Relaxed);
                client = None;
                node = (node + 1) % urls.len();
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// The measured call in the client's workflow (a new one, with its prerequisite, when it has
/// none), over a connection to `url` (made when it has none).
async fn attempt(
    url: &str,
    client: &mut Option<OrchestratorClient<Channel>>,
    workflow: &mut Option<String>,
) -> Result<(), Failure> {
    if client.is_none() {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|_| Failure::Unreachable)?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|_| Failure::Unreachable)?;
        *client = Some(OrchestratorClient::new(channel));
    }
    let Some(api) = client.as_mut() else {
        return Err(Failure::Unreachable);
    };
    let workflow_id = match workflow.clone() {
        Some(id) => id,
        None => {
            let id = api
                .start_workflow(StartWorkflowRequest {
                    template: String::new(),
                    input_json: "{}".into(),
                    caller: "bench".into(),
                })
                .await
                .map_err(failure)?
                .into_inner()
                .id;
            call(api, &id, PREREQUISITE, PREREQUISITE_ARGS).await?;
            *workflow = Some(id.clone());
            id
        }
    };
    call(api, &workflow_id, TOOL, TOOL_ARGS).await
}

async fn call(
    api: &mut OrchestratorClient<Channel>,
    workflow_id: &str,
    tool: &str,
    args: &str,
) -> Result<(), Failure> {
    let answer = api
        .call_tool(WorkflowCallRequest {
            workflow_id: workflow_id.into(),
            tool: tool.into(),
            arguments_json: args.into(),
        })
        .await
        .map_err(failure)?
        .into_inner();
    match answer.outcome {
        Some(workflow_call_response::Outcome::ResultJson(_)) => Ok(()),
        _ => Err(Failure::Refused),
    }
}

/// A refusal of the call itself (a rule, an unknown or ended workflow) against a node that could
/// not serve it.
fn failure(status: tonic::Status) -> Failure {
    use tonic::Code;
    match status.code() {
        Code::FailedPrecondition
        | Code::NotFound
        | Code::InvalidArgument
        | Code::PermissionDenied
        | Code::AlreadyExists => Failure::Refused,
        _ => Failure::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_answer_counts_only_the_other_node_after_the_kill() {
        let seen = Seen::default();
        let kill = Instant::now();
        let at = |ms: u64| kill + Duration::from_millis(ms);
        seen.answered().extend([
            Answered {
                at: kill - Duration::from_millis(5),
                node: 1,
            },
            Answered { at: at(1), node: 0 },
            Answered {
                at: at(900),
                node: 1,
            },
            Answered {
                at: at(950),
                node: 1,
            },
        ]);
        let first = seen.first_after(kill, 0).expect("an answer through node 1");
        assert_eq!(first.at, at(900));
        assert!(seen.first_after(kill, 1).is_some_and(|a| a.at == at(1)));
        assert!(seen.first_after(at(1000), 0).is_none());
    }
}
