//! The fedprofile wire protocol.
//!
//! - [`pb`]: code generated from `proto/fedprofile/v1/federation.proto` (the only
//!   generated code in the workspace);
//! - [`messages`]: the domain form of every message, free of transport types, which
//!   the coordinator's round engine and the client's task handlers work with;
//! - [`convert`]: the one place where protobuf and domain types meet;
//! - [`tls`]: mutual-TLS set-up with rustls and the peer identity taken from a
//!   certificate.

pub mod convert;
pub mod messages;
pub mod tls;

/// Generated protobuf and gRPC code for `fedprofile.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("fedprofile.v1");
}

pub use convert::ConvertError;
pub use messages::PROTOCOL_VERSION;

/// Largest gRPC message either side accepts by default (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
