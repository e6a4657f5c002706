//! The PostgreSQL pool and the stack's schema migrations.
//!
//! One migration sequence covers the whole stack (one database, one version). `migrate`
//! applies it under a PostgreSQL advisory lock, so replicas or Jobs that start together apply
//! each version exactly once.

use std::str::FromStr;

use futures_util::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::admin::ReadinessCheck;
use appstack_config::DatabaseConfig;

/// The stack's migrations, embedded at build time from `services/common/migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A database operation of the plumbing failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL does not parse.
    #[error("invalid database.url: {0}")]
    Url(#[source] sqlx::Error),
    /// A query or connection failed.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    /// A migration failed or the database holds a migration this binary does not know.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Creates the pool without connecting: the process starts even while the database is
/// down, and `/readyz` reports it until it is back.
///
/// No check when a connection is lent (sqlx's default is a ping, one more round trip per
/// query): sqlx already pings every connection when it comes back, which finds broken
/// ones, and a connection can only come back inside a transaction through a cancelled
/// `BEGIN`, which `appstack_db::begin` rules out.
pub fn connect_lazy(config: &DatabaseConfig, application: &str) -> Result<PgPool, DbError> {
    let statement_timeout = config.statement_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(&config.url)
        .map_err(DbError::Url)?
        .application_name(application)
        // Notices (e.g. `relation "_sqlx_migrations" already exists, skipping` on every
        // start) are not problems; sqlx would log each one at INFO.
        .options([
            ("statement_timeout", statement_timeout.as_str()),
            ("client_min_messages", "warning"),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Applies every pending migration; a no-op when the schema is current.
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The newest migration version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// True when the newest migration this binary knows has been applied successfully.
pub async fn schema_is_current(pool: &PgPool) -> Result<bool, DbError> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|e| match &e {
                // No migrations table yet: nothing applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
    Ok(applied.unwrap_or(0) >= latest_version())
}

/// Ready when the database answers and the schema is current.
#[derive(Clone, Debug)]
pub struct DatabaseReady {
    pool: PgPool,
}

impl DatabaseReady {
    /// A check on `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl ReadinessCheck for DatabaseReady {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match schema_is_current(&self.pool).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!(
                    "schema is behind: migration {} is not applied (run `appstack migrate`)",
                    latest_version()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
