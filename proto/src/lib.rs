//! AppStack's gRPC contracts, generated from the `.proto` files beside this crate.
//!
//! Every contract is a versioned package, and its Rust module is named after it:
//! [`auth::v1`] (`appstack.auth.v1`), [`main::v1`] (`appstack.main.v1`), [`worker::v1`] and
//! [`external::v1`]. [`FILE_DESCRIPTOR_SET`] is what servers publish
//! through gRPC reflection.

#![allow(missing_docs)] // generated code; the .proto files carry the documentation.
#![allow(
    clippy::doc_markdown,
    clippy::large_enum_variant,
    clippy::derive_partial_eq_without_eq
)]

/// `appstack.auth.v1`: users, tokens, JWKS.
pub mod auth {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("appstack.auth.v1");
    }
}

/// `appstack.main.v1`: the public request API.
pub mod main {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("appstack.main.v1");
    }
}

/// `appstack.worker.v1`: queue administration.
pub mod worker {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("appstack.worker.v1");
    }
}

/// `appstack.external.v1`: the gRPC form of an external microservice.
pub mod external {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("appstack.external.v1");
    }
}

/// The encoded `FileDescriptorSet` of every contract, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/appstack_descriptor.bin"));
