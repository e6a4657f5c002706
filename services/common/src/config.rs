//! Configuration: typed sections loaded from a TOML file, then `APPSTACK_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! Durations are strings such as `250ms`, `30s` or `15m`. Unknown keys are errors, so a typo
//! in a config file is reported, not ignored.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The environment prefix of every setting: `APPSTACK_DATABASE__URL` sets `database.url`.
pub const ENV_PREFIX: &str = "APPSTACK_";

/// `APPSTACK_*` variables that are not settings (read by the binary itself), named without
/// the prefix; every `APPSTACK_TEST_*` belongs to the test support. Without this rule,
/// setting the documented `APPSTACK_CONFIG` would fail every load as an unknown key `config`.
pub const NON_SETTING_ENV: &[&str] = &["CONFIG", "ADMIN_PASSWORD"];

/// True for an `APPSTACK_*` variable (prefix stripped) that is not a setting.
fn is_not_a_setting(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    key.starts_with("TEST_") || NON_SETTING_ENV.contains(&key.as_str())
}

/// A configuration that could not be loaded or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an environment variable or a flag holds a value of the wrong shape.
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    /// Every value parsed but some break a rule; one message per broken rule.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(error: Box<figment::Error>) -> Self {
        Self::Load(error)
    }
}

/// Layers configuration sources, last one wins.
#[derive(Debug)]
pub struct ConfigLoader {
    figment: Figment,
}

impl ConfigLoader {
    /// Starts from the defaults of `T`.
    pub fn new<T: Serialize + Default>() -> Self {
        Self {
            figment: Figment::from(Serialized::defaults(T::default())),
        }
    }

    /// Starts from `defaults` instead of `T::default()`: a role with defaults of its own
    /// (`dev`) puts them below every other source.
    pub fn with_defaults<T: Serialize>(defaults: &T) -> Self {
        Self {
            figment: Figment::from(Serialized::defaults(defaults)),
        }
    }

    /// Adds a TOML file; a file that does not exist is an error.
    pub fn file(mut self, path: &Path) -> Self {
        self.figment = self.figment.merge(Toml::file_exact(path));
        self
    }

    /// Adds the `APPSTACK_*` environment (`__` separates sections) and the conventional
    /// `DATABASE_URL`, which `APPSTACK_DATABASE__URL` overrides.
    pub fn env(mut self) -> Self {
        self.figment = self.figment.merge(
            Env::raw()
                .only(&["DATABASE_URL"])
                .map(|_| "database.url".into()),
        );
        self.prefixed_env()
    }

    /// Adds only the `APPSTACK_*` environment, not `DATABASE_URL`: for `dev`, whose database
    /// is its own, and which must not trip over a `DATABASE_URL` a shell keeps for other tools.
    pub fn prefixed_env(mut self) -> Self {
        self.figment = self.figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| !is_not_a_setting(key.as_str()))
                .split("__"),
        );
        self
    }

    /// Sets one value by its dotted path (`server.grpc_addr`), e.g. from a flag.
    pub fn set<V: Serialize>(mut self, key: &str, value: V) -> Self {
        self.figment = self.figment.merge(Serialized::default(key, value));
        self
    }

    /// Builds the typed configuration and checks its rules.
    pub fn load<T: DeserializeOwned + Validate>(self) -> Result<T, ConfigError> {
        let config: T = self.figment.extract().map_err(Box::new)?;
        let mut problems = Vec::new();
        config.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Rules a configuration must satisfy beyond its types.
pub trait Validate {
    /// Pushes one message per broken rule, naming the setting by its dotted path.
    fn validate(&self, problems: &mut Vec<String>);
}

/// Where the gRPC and admin servers listen, and their limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP listen address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Largest request metadata (all headers, counted as HTTP/2 does: name + value + 32 per
    /// entry) a call may carry; a larger one is refused with RESOURCE_EXHAUSTED, that call
    /// only. Metadata up to 1 MiB + 64 KiB reaches this check; only beyond that does HTTP/2
    /// itself refuse the stream.
    pub max_metadata_bytes: usize,
    /// HTTP/2 keepalive ping interval.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// How long to wait for a keepalive ack before closing the connection.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// On shutdown, how long the process keeps accepting calls while reporting not ready, so
    /// load balancers and Kubernetes endpoints stop routing to it first.
    #[serde(with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// On shutdown, how long in-flight calls may run before connections are dropped.
    #[serde(with = "humantime_serde")]
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
    fn validate(&self, problems: &mut Vec<String>) {
        if !(1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            problems.push("server.max_message_bytes must be between 1024 and 67108864".into());
        }
        if !(1024..=crate::metadata_limit::MAX_METADATA_LIMIT).contains(&self.max_metadata_bytes) {
            problems.push(format!(
                "server.max_metadata_bytes must be between 1024 and {}",
                crate::metadata_limit::MAX_METADATA_LIMIT
            ));
        }
        if self.keepalive_interval < Duration::from_secs(1) {
            problems.push("server.keepalive_interval must be at least 1s".into());
        }
        if self.keepalive_timeout.is_zero() {
            problems.push("server.keepalive_timeout must be positive".into());
        }
        if self.shutdown_delay > Duration::from_secs(60) {
            problems.push("server.shutdown_delay must be at most 60s".into());
        }
        if self.shutdown_grace > Duration::from_secs(600) {
            problems.push("server.shutdown_grace must be at most 600s".into());
        }
        if self.max_concurrent_streams == 0 {
            problems.push("server.max_concurrent_streams must be positive".into());
        }
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            problems.push("server.grpc_addr and server.admin_addr must differ".into());
        }
    }
}

/// The PostgreSQL connection pool.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database?sslmode=…`; also read from `DATABASE_URL`.
    pub url: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long a query waits for a free connection before failing.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Server-side `statement_timeout` for every connection.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// Apply migrations at start (for `dev` and `all`; clusters run `appstack migrate` as a Job).
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
    fn validate(&self, problems: &mut Vec<String>) {
        if self.url.is_empty() {
            problems.push("database.url is required (or set DATABASE_URL)".into());
        } else if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            problems.push("database.url must start with postgres:// or postgresql://".into());
        }
        if self.max_connections == 0 {
            problems.push("database.max_connections must be positive".into());
        }
        if self.min_connections > self.max_connections {
            problems
                .push("database.min_connections must not exceed database.max_connections".into());
        }
        if self.acquire_timeout.is_zero() {
            problems.push("database.acquire_timeout must be positive".into());
        }
    }
}

/// Replaces the password of a connection URL with `***`, for logs.
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

/// Log output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line, for collectors) or `pretty` (for people).
    pub format: LogFormat,
    /// A tracing filter such as `info` or `info,appstack_auth=debug`; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

impl Validate for LogConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            problems.push(format!("log.filter is not a valid filter: {e}"));
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable, coloured when the output is a terminal.
    Pretty,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        server: ServerConfig,
        database: DatabaseConfig,
        log: LogConfig,
    }

    impl Validate for Sample {
        fn validate(&self, problems: &mut Vec<String>) {
            self.server.validate(problems);
            self.database.validate(problems);
            self.log.validate(problems);
        }
    }

    #[test]
    fn layers_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"postgres://a:secret@h/db\"\nacquire_timeout = \"250ms\"\n[server]\nshutdown_grace = \"3s\"\n",
        )
        .unwrap();
        let cfg: Sample = ConfigLoader::new::<Sample>()
            .file(&path)
            .set("server.grpc_addr", "127.0.0.1:7000")
            .load()
            .unwrap();
        assert_eq!(cfg.database.acquire_timeout, Duration::from_millis(250));
        assert_eq!(cfg.server.shutdown_grace, Duration::from_secs(3));
        assert_eq!(cfg.server.grpc_addr, "127.0.0.1:7000".parse().unwrap());
        assert!(!format!("{:?}", cfg.database).contains("secret"));
    }

    #[test]
    fn unknown_key_and_bad_duration_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[server]\ngrpc_adr = \"127.0.0.1:1\"\n").unwrap();
        let err = ConfigLoader::new::<Sample>()
            .file(&path)
            .load::<Sample>()
            .unwrap_err();
        assert!(err.to_string().contains("grpc_adr"), "{err}");
        std::fs::write(&path, "[server]\nshutdown_grace = \"soon\"\n").unwrap();
        let err = ConfigLoader::new::<Sample>()
            .file(&path)
            .load::<Sample>()
            .unwrap_err();
        assert!(err.to_string().contains("shutdown_grace"), "{err}");
    }

    #[test]
    fn rules_are_reported_together() {
        let err = ConfigLoader::new::<Sample>()
            .set("database.url", "mysql://x")
            .set("database.max_connections", 0)
            .load::<Sample>()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("postgres://"), "{text}");
        assert!(text.contains("max_connections"), "{text}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:p@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
    }
}
