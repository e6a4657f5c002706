//! The configuration of an `appstack` process: one file for every role.

use appstack_auth::AuthConfig;
use appstack_common::config::{DatabaseConfig, LogConfig, ServerConfig, Validate};
use serde::{Deserialize, Serialize};

/// Everything an `appstack` process reads: `[server]`, `[database]`, `[log]`, `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StackConfig {
    /// Listen addresses and gRPC limits.
    pub server: ServerConfig,
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// Logs.
    pub log: LogConfig,
    /// The auth service.
    pub auth: AuthConfig,
}

impl Validate for StackConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        self.server.validate(problems);
        self.database.validate(problems);
        self.log.validate(problems);
        self.auth.validate(problems);
    }
}
