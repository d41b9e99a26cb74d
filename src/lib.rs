//! permitd library.

/// Generated protobuf and gRPC code.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("permitd.v1");
    /// Descriptor set served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("permitd_descriptor");
}

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod permits;
pub mod server;
pub mod store;
