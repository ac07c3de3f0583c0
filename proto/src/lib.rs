//! Generated gRPC code for Conductorio, included once and re-exported.
//!
//! This crate holds generated code, and [`tls`], the one loader of certificates and keys that every
//! process shares: every other crate converts the generated types to its own domain types at its edges.

/// The `conductor.v1` package: `ToolService`, `ApprovalLedger` and `Orchestrator`.
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v1 {
    tonic::include_proto!("conductor.v1");
}

pub use v1::*;

pub mod tls;

/// The encoded `FileDescriptorSet` of every Conductorio proto, for the gRPC reflection services.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/conductor_descriptor.bin"));
