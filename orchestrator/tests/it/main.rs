//! The orchestrator's integration tests, one binary for all (each links the whole workspace, so one
//! binary instead of one per file saves gigabytes of disk and minutes of linking): real daemons on
//! loopback port 0, over real gRPC and HTTP.

mod common;
mod mcp_support;

mod approvals;
mod audit_commit;
mod audit_outage;
mod audit_rpc;
mod auth;
mod cluster_binaries;
mod cluster_failover;
mod cluster_forward;
mod cluster_standby;
mod cluster_status;
mod cluster_store;
mod conformance;
mod daemon_logs;
mod downstream_credentials;
mod downstream_health;
mod durable_views;
mod flows;
mod mcp_downstream;
mod mcp_eras;
mod mcp_http;
mod mcp_input_required;
mod mcp_offered;
mod mcp_python;
mod mcp_request_forms;
mod mcp_sessions;
mod operator_controls;
mod policies;
mod reliability_crash;
mod reliability_downstream;
mod reliability_fuzz_config;
mod reliability_fuzz_mcp;
mod reliability_fuzz_policy;
mod reliability_hostile;
mod reliability_write_ahead;
mod replay_differential;
mod restart;
mod service;
mod templates;
mod test_ca;
mod tls;
mod tls_downstream;
mod tls_identity;
mod traces;
mod trust_bounds;
mod trust_order;
mod workflow_lifecycle;
