//! Shared plumbing for AppStack's services.
//!
//! Every service process is built from the same parts, so operations look the same
//! everywhere:
//! - [`config`]: one configuration loaded from file, then environment, then flags;
//! - [`telemetry`]: structured logs (JSON or pretty);
//! - [`metrics`]: a Prometheus registry and RED metrics per gRPC method;
//! - [`admin`]: the admin HTTP port with `/healthz`, `/readyz` and `/metrics`;
//! - [`grpc`]: the gRPC server with health, reflection, keepalive and a graceful shutdown
//!   bounded by a deadline;
//! - [`db`]: the PostgreSQL pool and the stack's migrations, applied once under a lock;
//! - [`status`]: gRPC errors with `google.rpc` details;
//! - [`shutdown`]: one cancellation token fired by SIGTERM or Ctrl-C.

pub mod admin;
pub mod config;
pub mod db;
pub mod grpc;
pub mod metrics;
pub mod oversize;
pub mod shutdown;
pub mod status;
pub mod telemetry;
