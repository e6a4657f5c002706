//! The AppStack server: one binary, `appstack`, for every role, like Loki's `-target`.
//!
//! This library holds what the binary runs, so tests start the very same server in-process:
//! [`StackConfig`] (the whole configuration), [`auth_role`] (the auth service),
//! [`migrate`], and [`dev`] (the whole stack with a private PostgreSQL).

pub mod auth_role;
pub mod dev;
pub mod migrate;
mod stack_config;

pub use stack_config::StackConfig;
