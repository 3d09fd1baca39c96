//! Generated protobuf and gRPC code: nothing hand-written lives here.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("factcheck.v1");
include!(concat!(env!("OUT_DIR"), "/factcheck.v1.serde.rs"));

/// The encoded `FileDescriptorSet` of `proto/`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("factcheck_descriptor");
