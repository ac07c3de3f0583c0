//! `conductor-bench`: measures Conductorio against the physical floor and real peers (issue 9).
//!
//! It starts the real daemons as processes on loopback ports and, in one run with warm-up and several
//! rounds, measures every figure side by side with what it is compared to, then prints a table of
//! medians with each goal and whether it was met. Modules, one concept each:
//! - [`suite`]: what one run does, and at which [`suite::Scale`].
//! - [`stack`], [`daemons`]: the daemons as child processes; CPU time and memory from `/proc`.
//! - [`scenario`]: the measured call, its prerequisite, and the orchestrator configuration.
//! - [`load`], [`mcp_load`]: closed-loop clients over gRPC and over MCP (rmcp).
//! - [`durable`]: figure 0, one durable record through the audit log against the device floor;
//!   [`live`]: figures 1–3; [`peers`] and [`echo_server`]: figure 4; [`offline`]: figures 5–7, with
//!   [`decisions`] (policy engine) and [`recovery`] (start-up over a long log); [`request_size`]:
//!   figure 8, the orchestrator's memory per request size; [`cluster`]: figure 9, the cluster on
//!   PostgreSQL against a single node on files (issue 23).
//! - [`fsync`], [`stats`], [`report`]: the disk's floor, latency summaries, and the output.

pub mod cluster;
pub mod daemons;
pub mod decisions;
pub mod durable;
pub mod echo_server;
pub mod fsync;
pub mod live;
pub mod load;
pub mod mcp_lean;
pub mod mcp_load;
pub mod offline;
pub mod peers;
pub mod recovery;
pub mod report;
pub mod request_size;
pub mod scenario;
pub mod stack;
pub mod stats;
pub mod suite;
pub mod traces;
