//! `appstack migrate`: applies the schema once per version (the operator runs it as a Job
//! before rolling out a new version).

use std::time::Duration;

use anyhow::Context as _;
use appstack_common::db;
use appstack_common::db_failure::DbFailure;
use appstack_config::DatabaseConfig;
use sqlx::PgPool;
use tokio::time::Instant;

/// How long to wait for the database to accept connections. A stack applied together
/// with its database (one `kubectl apply`, a GitOps sync) starts its migration Job while
/// the database is still starting; failing at once would spend the Job's few retries on
/// nothing. Well inside the Job's deadline (ten minutes).
const WAIT_FOR_DATABASE: Duration = Duration::from_secs(120);
/// The longest pause between two connection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Applies every pending migration and reports the schema version.
pub async fn run(database: &DatabaseConfig) -> anyhow::Result<i64> {
    let pool = db::connect_lazy(database, "appstack-migrate")?;
    wait_for_database(&pool, WAIT_FOR_DATABASE).await?;
    db::migrate(&pool).await.context("applying migrations")?;
    let version = db::latest_version();
    tracing::info!(version, "schema is current");
    pool.close().await;
    Ok(version)
}

/// Retries a connection, pausing longer each time, until one works, an error that waiting
/// cannot change comes back, or `limit` has passed.
async fn wait_for_database(pool: &PgPool, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match pool.acquire().await {
            Ok(_) => return Ok(()),
            Err(error) => DbFailure::classify(error),
        };
        if !worth_waiting_for(&error) || started.elapsed() + pause >= limit {
            return Err(error).with_context(|| {
                format!(
                    "connecting to the database (gave up after {:.0?})",
                    started.elapsed()
                )
            });
        }
        tracing::warn!(%error, retry_in = ?pause, "the database does not accept connections yet");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// A database that is unreachable (refused, unresolvable, starting up, full) or that no
/// connection could be had from in time may be up soon; anything else — refused
/// credentials, a missing database, a bad setting — stays so.
fn worth_waiting_for(failure: &DbFailure) -> bool {
    matches!(failure, DbFailure::Unreachable(_) | DbFailure::Saturated)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_waited_for_and_a_bad_setting_is_not() {
        let waits = |error| worth_waiting_for(&DbFailure::classify(error));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(waits(sqlx::Error::Io(refused)));
        assert!(waits(sqlx::Error::PoolTimedOut));
        assert!(!waits(sqlx::Error::Configuration(
            "sslmode=verify-full without a root certificate".into()
        )));
        assert!(!waits(sqlx::Error::Protocol("garbage".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_its_limit() {
        // Nothing listens on port 1 of loopback: every attempt is refused at once.
        let config = DatabaseConfig {
            url: "postgres://app@127.0.0.1:1/app".into(),
            ..DatabaseConfig::default()
        };
        let pool = db::connect_lazy(&config, "test").unwrap();
        let error = wait_for_database(&pool, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("gave up after"), "{error:#}");
    }
}
