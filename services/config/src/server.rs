//! `server`: where the gRPC and admin servers listen, and their limits.

use std::net::SocketAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Problems, Validate};

/// The largest `maxMetadataBytes`: metadata up to this size reaches the per-call check
/// (HTTP/2 itself is set to refuse only beyond it).
pub const MAX_METADATA_BYTES_LIMIT: usize = 1024 * 1024 + 64 * 1024;

/// Where the gRPC and admin servers listen, and their limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    /// gRPC listen address, `host:port`. Default `0.0.0.0:8080`.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP listen address (`/healthz`, `/readyz`, `/metrics`), `host:port`; must
    /// differ from `grpcAddr`. Default `0.0.0.0:9090`.
    pub admin_addr: SocketAddr,
    /// Largest gRPC message accepted or sent; a larger one is refused with
    /// RESOURCE_EXHAUSTED. Bytes, `1024..=67108864`; default `4194304` (4 MiB).
    pub max_message_bytes: usize,
    /// Largest request metadata (all headers, counted as HTTP/2 does: name + value + 32 per
    /// entry) a call may carry; a larger one is refused with RESOURCE_EXHAUSTED, that call
    /// only, other calls on the connection untouched. Bytes, `1024..=1114112`; default
    /// `16384`.
    pub max_metadata_bytes: usize,
    /// HTTP/2 keepalive ping interval. Duration, at least `1s`; default `30s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub keepalive_interval: Duration,
    /// How long to wait for a keepalive ack before closing the connection. Duration,
    /// above `0s`; default `10s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection. Count, at least `1`; default `256`.
    pub max_concurrent_streams: u32,
    /// On shutdown, how long the process keeps accepting calls while reporting not ready,
    /// so load balancers and Kubernetes endpoints stop routing to it first. Duration, at
    /// most `1m`; default `5s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub shutdown_delay: Duration,
    /// On shutdown, how long in-flight calls may run before connections are dropped.
    /// Duration, at most `10m`; default `20s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            max_message_bytes: 4 * 1024 * 1024,
            max_metadata_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            shutdown_delay: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

impl Validate for ServerConfig {
    fn check(&self, p: &mut Problems) {
        if !(1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            p.push(
                "maxMessageBytes",
                format_args!(
                    "must be between 1024 and 67108864, got {}",
                    self.max_message_bytes
                ),
            );
        }
        if !(1024..=MAX_METADATA_BYTES_LIMIT).contains(&self.max_metadata_bytes) {
            p.push(
                "maxMetadataBytes",
                format_args!(
                    "must be between 1024 and {MAX_METADATA_BYTES_LIMIT}, got {}",
                    self.max_metadata_bytes
                ),
            );
        }
        if self.keepalive_interval < Duration::from_secs(1) {
            p.push("keepaliveInterval", "must be at least 1s");
        }
        if self.keepalive_timeout.is_zero() {
            p.push("keepaliveTimeout", "must be greater than 0s");
        }
        if self.shutdown_delay > Duration::from_secs(60) {
            p.push("shutdownDelay", "must be at most 1m");
        }
        if self.shutdown_grace > Duration::from_secs(600) {
            p.push("shutdownGrace", "must be at most 10m");
        }
        if self.max_concurrent_streams == 0 {
            p.push("maxConcurrentStreams", "must be at least 1");
        }
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            p.push("adminAddr", "must differ from grpcAddr");
        }
    }
}
