//! Conductorio's orchestrator: sits between AI applications and tool servers and makes every tool call
//! follow the rules of a workflow.
//!
//! A call goes one way only ([`gateway`]): decided by the pure [`policy`] engine, recorded in the
//! [`audit`] log, forwarded [`downstream`], recorded again, answered. The fronts ([`grpc`], [`http`]) are
//! thin; the configuration ([`config`]) is checked once at load and trusted afterwards.

pub mod approval;
pub mod audit;
pub mod auth;
pub mod config;
pub mod downstream;
pub mod error;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod runner;
pub mod template;
pub mod testing;
pub mod workflow;

mod server;

pub use error::Error;
pub use gateway::{Gateway, GatewayOptions};
pub use server::{Listeners, ServeError, serve};
