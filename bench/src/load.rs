//! The gRPC load generator: closed loops (each worker sends its next call when the previous one is
//! answered) against a tool server directly or through the orchestrator, with a fixed number of calls
//! per round shared by the workers.
//!
//! Set-up (connecting, starting each worker's ad-hoc workflow, calling its prerequisite) is never
//! timed: only the measured calls are.

use crate::scenario::{PREREQUISITE, PREREQUISITE_ARGS, TOOL, TOOL_ARGS};
use crate::stats::{Latencies, Summary};
use anyhow::{Context, Result, anyhow, bail};
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_proto::v1::tool_service_client::ToolServiceClient;
use conductor_proto::v1::{
    CallToolRequest, StartWorkflowRequest, WorkflowCallRequest, call_tool_response,
    workflow_call_response,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Where a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `ToolService.CallTool` on the tool server itself: the floor.
    Direct,
    /// `Orchestrator.CallTool` in an ad-hoc workflow: policies, durable audit, one extra hop.
    Orchestrated,
}

/// Connections to one endpoint, shared round-robin by the workers (one HTTP/2 connection per 8
/// workers, as separate clients would have).
#[derive(Clone)]
pub struct Connections {
    pub route: Route,
    channels: Vec<Channel>,
}

impl Connections {
    pub async fn open(route: Route, url: &str, concurrency: usize) -> Result<Connections> {
        let count = concurrency.div_ceil(8).max(1);
        let mut channels = Vec::with_capacity(count);
        for _ in 0..count {
            let endpoint = Endpoint::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5));
            channels.push(
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?,
            );
        }
        Ok(Connections { route, channels })
    }

    fn channel(&self, worker: usize) -> Channel {
        self.channels[worker % self.channels.len()].clone()
    }
}

/// One closed-loop client.
pub enum Worker {
    Direct(ToolServiceClient<Channel>),
    Orchestrated {
        client: OrchestratorClient<Channel>,
        workflow_id: String,
    },
}

impl Worker {
    /// A worker on `channel`; an orchestrated one starts its own ad-hoc workflow and calls the
    /// prerequisite once, so its measured calls pass every rule.
    pub async fn prepare(route: Route, channel: Channel) -> Result<Worker> {
        match route {
            Route::Direct => Ok(Worker::Direct(ToolServiceClient::new(channel))),
            Route::Orchestrated => {
                let mut client = OrchestratorClient::new(channel);
                let workflow = client
                    .start_workflow(StartWorkflowRequest {
                        template: String::new(),
                        input_json: "{}".into(),
                        caller: "bench".into(),
                    })
                    .await
                    .context("StartWorkflow")?
                    .into_inner();
                let workflow_id = workflow.id;
                orchestrated_call(&mut client, &workflow_id, PREREQUISITE, PREREQUISITE_ARGS)
                    .await?;
                Ok(Worker::Orchestrated {
                    client,
                    workflow_id,
                })
            }
        }
    }

    /// The measured call; a tool error or a denial is an error (the bench measures successful calls).
    pub async fn call(&mut self) -> Result<()> {
        match self {
            Worker::Direct(client) => {
                let request = CallToolRequest {
                    tool: TOOL.into(),
                    arguments_json: TOOL_ARGS.into(),
                    workflow_id: String::new(),
                    call_id: String::new(),
                };
                let reply = client
                    .call_tool(request)
                    .await
                    .context("ToolService.CallTool")?
                    .into_inner();
                match reply.outcome {
                    Some(call_tool_response::Outcome::ResultJson(_)) => Ok(()),
                    other => bail!("the direct call failed: {other:?}"),
                }
            }
            Worker::Orchestrated {
                client,
                workflow_id,
            } => orchestrated_call(client, workflow_id, TOOL, TOOL_ARGS).await,
        }
    }
}

async fn orchestrated_call(
    client: &mut OrchestratorClient<Channel>,
    workflow_id: &str,
    tool: &str,
    args: &str,
) -> Result<()> {
    let request = WorkflowCallRequest {
        workflow_id: workflow_id.into(),
        tool: tool.into(),
        arguments_json: args.into(),
    };
    let reply = client
        .call_tool(request)
        .await
        .with_context(|| format!("Orchestrator.CallTool {tool}"))?
        .into_inner();
    match reply.outcome {
        Some(workflow_call_response::Outcome::ResultJson(_)) => Ok(()),
        other => bail!("the orchestrated call of {tool} failed: {other:?}"),
    }
}

/// A finished round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub summary: Summary,
    pub elapsed: Duration,
}

/// Runs `calls` measured calls over `concurrency` closed-loop workers (prepared first, untimed).
pub async fn round(connections: &Connections, concurrency: usize, calls: u64) -> Result<Round> {
    let mut workers = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        workers.push(Worker::prepare(connections.route, connections.channel(i)).await?);
    }
    run_workers(workers, calls).await
}

/// The closed loops of prepared workers; shared by every front (gRPC here, MCP in `mcp_load`).
pub async fn run_workers<W: CallOnce>(workers: Vec<W>, calls: u64) -> Result<Round> {
    let tickets = Arc::new(AtomicU64::new(calls));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let tickets = Arc::clone(&tickets);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            while take_ticket(&tickets) {
                let sent = Instant::now();
                worker.call_once().await?;
                latencies.record(sent.elapsed());
            }
            Ok::<_, anyhow::Error>((latencies, worker))
        }));
    }
    let mut all = Latencies::new();
    let mut finished = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (latencies, worker) = task
            .await
            .map_err(|e| anyhow!("a worker panicked: {e}"))??;
        all.merge(&latencies);
        finished.push(worker);
    }
    let elapsed = started.elapsed();
    for worker in finished {
        worker.finish().await;
    }
    Ok(Round {
        summary: all.summary(elapsed),
        elapsed,
    })
}

fn take_ticket(tickets: &AtomicU64) -> bool {
    tickets
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// A client that can make the measured call; [`run_workers`] drives any of them.
pub trait CallOnce: Send + 'static {
    fn call_once(&mut self) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Closes the client after the round (e.g. ends an MCP session); untimed.
    fn finish(self) -> impl std::future::Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

impl CallOnce for Worker {
    async fn call_once(&mut self) -> Result<()> {
        self.call().await
    }
}
