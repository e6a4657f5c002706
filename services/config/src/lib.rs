//! The whole AppStack configuration as plain serde + schemars types: every section, its
//! defaults and its rules, and nothing else — no I/O, no loader, no service code. The
//! services load it (`appstack_common::config::ConfigLoader`: file, environment, flags);
//! the operator will render it from the `AppStack` resource, whose schema is
//! `schemars::schema_for!(StackConfig)`.
//!
//! - One casing: every key is camelCase, enums are camelCase strings.
//! - Unknown keys are errors (`deny_unknown_fields`), so a typo names the key; a missing
//!   key is its default, so `{}` is a whole configuration.
//! - Durations are strings of one small grammar ([`duration`]: `250ms`, `30s`, `1m30s`,
//!   `7d`) whose schema pattern is exactly what the parser accepts.
//! - [`Validate`] checks the rules beyond the types; every broken rule is reported at once,
//!   under the full camelCase path of the setting from the root ([`Problems`]).
//!
//! | section | type |
//! |---|---|
//! | `server` | [`ServerConfig`] |
//! | `database` | [`DatabaseConfig`] |
//! | `log` | [`LogConfig`] |
//! | `auth` | [`AuthConfig`] ([`PasswordConfig`], [`LockoutConfig`]) |
//! | `externalServices.<name>` | [`ExternalServiceConfig`] ([`Protocol`], [`resilience::ResilienceConfig`]) |
//! | `routes.<kind>` | [`RouteConfig`] ([`JobBackoffConfig`]) |
//! | `queue` | [`QueueConfig`] |
//! | `worker` | [`WorkerConfig`] |
//! | `requests` | [`RequestsConfig`] ([`RateLimitConfig`]) |
//! | `frontDoor` | [`FrontDoorConfig`] ([`Cidr`]) |
//!
//! ```
//! use appstack_config::{StackConfig, Validate};
//!
//! let config: StackConfig = serde_json::from_str(r#"{
//!     "database": { "url": "postgres://app@db/app" },
//!     "externalServices": { "payments": { "endpoint": "http://payments:8080" } },
//!     "routes": { "charge": { "service": "payment", "timeout": "1s" } }
//! }"#)?;
//! let err = config.validate().unwrap_err();
//! assert!(err.problems[0].starts_with(
//!     r#"routes.charge.service: names no declared external service "payment""#
//! ));
//! # Ok::<(), serde_json::Error>(())
//! ```

pub mod duration;
pub mod resilience;

mod auth;
mod database;
mod front_door;
mod log;
mod queue;
mod requests;
mod rules;
mod server;
mod services;
mod stack;
mod validate;

pub use auth::{AuthConfig, LockoutConfig, PasswordConfig};
pub use database::{DatabaseConfig, redact_url};
pub use front_door::{Cidr, FrontDoorConfig};
pub use log::{LogConfig, LogFormat};
pub use queue::{QueueConfig, WorkerConfig};
pub use requests::{DEFAULT_RATE_KEY, RateLimitConfig, RequestsConfig};
pub use server::{MAX_METADATA_BYTES_LIMIT, ServerConfig};
pub use services::{ExternalServiceConfig, JobBackoffConfig, Protocol, RouteConfig};
pub use stack::{MAX_EXTERNAL_SERVICES, MAX_ROUTES, StackConfig};
pub use validate::{InvalidConfig, Problems, Validate};

#[cfg(test)]
mod tests;
