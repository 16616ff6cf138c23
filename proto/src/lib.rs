#![forbid(unsafe_code)]
//! Haven's v1 wire contract, generated from `proto/haven/v1/*.proto`.
//!
//! The proto files are the contract; this crate compiles them, and [`convert`] holds the one copy of
//! each conversion between a wire message and the type the rest of Haven works with. `docs/wire-protocol.md` describes
//! the protocol for people.

/// The `haven.v1` package: messages, the `Gateway`, `Audit` and `Node` services.
pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
    tonic::include_proto!("haven.v1");
}

pub mod convert;

/// The encoded `FileDescriptorSet` of the contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("haven_descriptor");
