//! Shared plumbing for AppStack's services.
//!
//! Every service process is built from the same parts, so operations look the same
//! everywhere:
//! - [`config`]: one configuration loaded from file, then environment, then flags;
//! - [`telemetry`]: structured logs (JSON or pretty) and OpenTelemetry traces over OTLP;
//! - [`server_span`]: one span per gRPC call, continuing the caller's trace;
//! - [`metrics`]: a Prometheus registry and RED metrics per gRPC method;
//! - [`admin`]: the admin HTTP port with `/healthz`, `/readyz` and `/metrics`;
//! - [`grpc`]: the gRPC server with health, reflection, keepalive and a graceful shutdown
//!   bounded by a deadline;
//! - [`db`]: the PostgreSQL pool and the stack's migrations, applied once under a lock;
//! - [`db_failure`]: what a failed database operation means to the caller;
//! - [`status`]: gRPC errors with `google.rpc` details;
//! - [`shutdown`]: one cancellation token fired by SIGTERM or Ctrl-C;
//! - [`run_to_completion`]: every handler finishes even when its caller goes away;
//! - [`request_check`], [`wire_text`], [`metadata_limit`]: bad calls refused per call with
//!   the right code, before a handler runs.

pub mod admin;
pub mod config;
pub mod db;
pub mod db_failure;
pub mod grpc;
pub mod metadata_limit;
pub mod methods;
pub mod metrics;
pub mod oversize;
pub mod request_check;
pub mod run_to_completion;
pub mod server_span;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod wire_text;
