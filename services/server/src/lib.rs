//! The AppStack server: one binary, `appstack`, for every role, like Loki's `-target`.
//!
//! This library holds what the binary runs, so tests start the very same server in-process:
//! [`runner`] (listeners, pool, admin port, gRPC port and shutdown order, written once for
//! every role), the services' builders ([`auth_service`], [`request_services`]), [`migrate`], and [`dev`] (the
//! whole stack with a private PostgreSQL). The configuration is
//! [`appstack_config::StackConfig`].

pub mod auth_service;
pub mod dev;
pub mod front_door;
pub mod migrate;
pub mod request_services;
pub mod runner;
