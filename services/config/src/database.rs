//! `database`: the PostgreSQL connection pool.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Problems, Validate};

/// The PostgreSQL connection pool. Its `Debug` hides the URL's password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database?sslmode=…`; also read from the
    /// `DATABASE_URL` environment variable. Required.
    // Unset is left out when written (an operator-rendered file, an AppStack): the URL
    // comes from the environment there.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Most connections the pool opens. Count, at least `1`; default `20`.
    pub max_connections: u32,
    /// Connections kept open when idle. Count, at most `maxConnections`; default `1`.
    pub min_connections: u32,
    /// How long a query waits for a free connection before failing. Duration, above `0s`;
    /// default `5s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub acquire_timeout: Duration,
    /// Server-side `statement_timeout` of every connection (`0s`: none). Duration; default
    /// `30s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub statement_timeout: Duration,
    /// Apply migrations at start (`appstack dev`; clusters run `appstack migrate` as a Job
    /// before each rollout). Default `false`.
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            max_connections: 20,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            migrate_on_start: false,
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl Validate for DatabaseConfig {
    fn check(&self, p: &mut Problems) {
        if self.url.is_empty() {
            p.push(
                "url",
                "is required (or set DATABASE_URL or DATABASE_URL_FILE)",
            );
        } else if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            p.push("url", "must start with postgres:// or postgresql://");
        }
        if self.max_connections == 0 {
            p.push("maxConnections", "must be at least 1");
        }
        if self.min_connections > self.max_connections {
            p.push("minConnections", "must not exceed maxConnections");
        }
        if self.acquire_timeout.is_zero() {
            p.push("acquireTimeout", "must be greater than 0s");
        }
    }
}

/// Replaces the password of a connection URL with `***`, for logs; a text that is not a
/// URL becomes `***` altogether.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:p@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact_url("u:p@h"), "***");
        let config = DatabaseConfig {
            url: "postgres://a:secret@h/db".into(),
            ..DatabaseConfig::default()
        };
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn rules() {
        let config = DatabaseConfig {
            url: "mysql://x".into(),
            max_connections: 0,
            acquire_timeout: Duration::ZERO,
            ..DatabaseConfig::default()
        };
        let problems = config
            .validate()
            .err()
            .map(|e| e.problems)
            .unwrap_or_default();
        assert_eq!(
            problems,
            [
                "url: must start with postgres:// or postgresql://",
                "maxConnections: must be at least 1",
                "minConnections: must not exceed maxConnections",
                "acquireTimeout: must be greater than 0s",
            ]
        );
    }
}
