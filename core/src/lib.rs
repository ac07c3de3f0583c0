//! `conductor-core`: Conductorio's domain, with no I/O runtime (no tokio, tonic, axum or rmcp).
//!
//! - [`config`]: the configuration, checked once at load into typed structures with JSON paths on
//!   every problem.
//! - [`policy`]: the pure policy engine, `decide(policies, history, running, rates, call)`.
//! - [`template`]: `${input.x}` and `${steps.NAME.output.y}` references of template steps.
//! - [`workflow`]: one run with its history and progress.
//! - [`domain`]: the small enums (outcome, decision, verdict, workflow end).
//! - [`approval`]: approval requests as data; [`digest`]: what an approval covers (RFC 8785).
//! - [`events`]: what the audit log records, one event per line.
//! - [`state`]: the one transition, [`State::apply`], that turns those events into the state — on
//!   the live path and on replay alike, so a restart changes nothing anyone can observe.
//! - [`report`]: the compliance report, a fold over the same events with the same transition.
//! - [`tagged`]: events as `kind`-tagged objects, written and read in one pass.

pub mod approval;
pub mod config;
pub mod digest;
pub mod domain;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod policy;
pub mod report;
pub mod state;
pub mod tagged;
pub mod template;
pub mod workflow;

pub use state::State;
