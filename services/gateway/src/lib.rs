//! The front door: HTTP/JSON, Server-Sent Events and gRPC-Web in front of the gRPC services.
//!
//! Routes come from the contract's `google.api.http` rules ([`routes`]); a JSON request is
//! transcoded to protobuf with the proto3 JSON mapping ([`transcode`]) and sent as a real gRPC
//! call through the same server stack a gRPC client meets (authentication, rate limits,
//! metrics, spans), or to the peer that serves it. So the handlers, codes and limits are the
//! same by construction, not by a second implementation.

pub mod client_address;
pub mod door;
pub mod frame;
pub mod http_error;
pub mod openapi;
pub mod routes;
pub mod sse;
pub mod template;
pub mod transcode;

pub use door::{FrontDoor, FrontDoorParts, Pages, Peer};
