//! The hotpush wire protocol (`proto/hotpush.proto`), generated at build time.
//! Convert to domain types at the service edge; nothing else should use these.
#![allow(clippy::all, missing_docs)]

/// Version 1 of the protocol.
pub mod v1 {
    tonic::include_proto!("hotpush.v1");
}
pub use v1::*;
