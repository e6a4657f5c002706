//! `appstack migrate`: applies the schema once per version (the operator runs it as a Job
//! before rolling out a new version).

use anyhow::Context as _;
use appstack_common::db;
use appstack_config::DatabaseConfig;

/// Applies every pending migration and reports the schema version.
pub async fn run(database: &DatabaseConfig) -> anyhow::Result<i64> {
    let pool = db::connect_lazy(database, "appstack-migrate")?;
    db::migrate(&pool).await.context("applying migrations")?;
    let version = db::latest_version();
    tracing::info!(version, "schema is current");
    pool.close().await;
    Ok(version)
}
