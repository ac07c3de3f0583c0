//! Conductorio's orchestrator: sits between AI applications and tool servers and makes every tool call
//! follow the rules of a workflow.
//!
//! A call goes one way only ([`gateway`]): decided by the pure [`policy`] engine, recorded in the
//! [`audit`] log, forwarded [`downstream`], recorded again, answered. The domain (configuration,
//! engine, workflows, events and the one transition over them) is `conductor-core`, re-exported
//! here; the fronts ([`grpc`], [`http`], [`mcp`]) are thin.

pub mod audit;
pub mod auth;
pub mod cluster;
pub mod downstream;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod host;
pub mod http;
pub mod ids;
pub mod ledger;
pub mod mcp;
pub mod metrics;
pub mod report;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;

mod server;

pub use conductor_core::{approval, config, policy, template, workflow};
pub use error::Error;
pub use gateway::{Gateway, GatewayOptions};
pub use server::{Listeners, ServeError, serve};
