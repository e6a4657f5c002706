//! What a failed database operation means to the caller: the database is unreachable, it
//! is reachable but every pooled connection is busy, it did not answer in time, or the
//! operation itself failed.
//!
//! sqlx reports both "no connection could be opened" and "every connection is in use" as
//! `PoolTimedOut` (it retries refused connections until the acquire timeout), so the two
//! are told apart by opening one connection directly; the answer is cached briefly, so an
//! outage under load costs one probe per second, not one per call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions as _;
use sqlx::postgres::PgPool;
use tonic::Status;

/// How long one probe's answer is reused.
const PROBE_TTL: Duration = Duration::from_secs(1);
/// How long the probe waits for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A database failure as the caller should hear of it.
#[derive(Debug, thiserror::Error)]
pub enum DbFailure {
    /// No connection can be made (refused, unresolvable, shutting down, broken).
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// The database answers, but every pooled connection stayed busy for the acquire timeout.
    #[error("database connection pool saturated")]
    Saturated,
    /// A statement ran past `database.statement_timeout`.
    #[error("database statement timed out")]
    TimedOut,
    /// The operation failed for another reason: a bug or a schema problem.
    #[error("database: {0}")]
    Other(#[source] sqlx::Error),
}

impl DbFailure {
    /// Classifies `error` from its kind alone; `PoolTimedOut` is reported as saturation.
    /// [`DbHealth::explain`] tells saturation from an outage.
    pub fn classify(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut => Self::Saturated,
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
                Self::Unreachable(error.to_string())
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("57014") => Self::TimedOut,
                // connection_exception (08…), too_many_connections, admin_shutdown,
                // crash_shutdown, cannot_connect_now.
                Some(code)
                    if code.starts_with("08")
                        || matches!(code, "53300" | "57P01" | "57P02" | "57P03") =>
                {
                    Self::Unreachable(error.to_string())
                }
                _ => Self::Other(error),
            },
            _ => Self::Other(error),
        }
    }
}

impl From<DbFailure> for Status {
    fn from(failure: DbFailure) -> Self {
        match failure {
            DbFailure::Unreachable(reason) => {
                tracing::warn!(%reason, "database unreachable");
                Status::unavailable("the database is unreachable; retry shortly")
            }
            DbFailure::Saturated => {
                tracing::warn!("database connection pool saturated");
                Status::unavailable("the database is busy (every connection in use); retry shortly")
            }
            DbFailure::TimedOut => {
                tracing::warn!("database statement timed out");
                Status::unavailable("the database did not answer in time; retry shortly")
            }
            DbFailure::Other(error) => {
                tracing::error!(%error, "database operation failed");
                Status::internal("internal error")
            }
        }
    }
}

/// One probe: when it ran and, if the server was unreachable, why.
type Probe = (Instant, Option<String>);

/// Explains failures of one pool, probing the server when the pool cannot tell.
#[derive(Clone, Debug)]
pub struct DbHealth {
    pool: PgPool,
    last_probe: Arc<Mutex<Option<Probe>>>,
}

impl DbHealth {
    /// Explains failures of `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            last_probe: Arc::new(Mutex::new(None)),
        }
    }

    /// What `error` means; a `PoolTimedOut` is checked by connecting once (or by reusing a
    /// probe less than a second old).
    pub async fn explain(&self, error: sqlx::Error) -> DbFailure {
        if !matches!(error, sqlx::Error::PoolTimedOut) {
            return DbFailure::classify(error);
        }
        match self.unreachable_because().await {
            Some(reason) => DbFailure::Unreachable(reason),
            None => DbFailure::Saturated,
        }
    }

    async fn unreachable_because(&self) -> Option<String> {
        if let Some((at, verdict)) = self.cached()
            && at.elapsed() < PROBE_TTL
        {
            return verdict;
        }
        let options = self.pool.connect_options();
        let verdict = match tokio::time::timeout(PROBE_TIMEOUT, options.connect()).await {
            Ok(Ok(conn)) => {
                // Closing politely is best effort; the probe's answer is what matters.
                let _ = sqlx::Connection::close(conn).await;
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some(format!("no connection within {PROBE_TIMEOUT:?}")),
        };
        *self
            .last_probe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((Instant::now(), verdict.clone()));
        verdict
    }

    fn cached(&self) -> Option<Probe> {
        self.last_probe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        assert!(matches!(
            DbFailure::classify(sqlx::Error::PoolTimedOut),
            DbFailure::Saturated
        ));
        assert!(matches!(
            DbFailure::classify(sqlx::Error::PoolClosed),
            DbFailure::Unreachable(_)
        ));
        assert!(matches!(
            DbFailure::classify(sqlx::Error::RowNotFound),
            DbFailure::Other(_)
        ));
        assert_eq!(
            Status::from(DbFailure::Unreachable("refused".into())).code(),
            tonic::Code::Unavailable
        );
        assert!(
            Status::from(DbFailure::Saturated)
                .message()
                .contains("every connection in use")
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_as_such() {
        // Nothing listens on port 1 of loopback.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://u:p@127.0.0.1:1/db")
            .unwrap_or_else(|e| panic!("{e}"));
        let health = DbHealth::new(pool.clone());
        let error = sqlx::query("SELECT 1").execute(&pool).await.unwrap_err();
        assert!(matches!(error, sqlx::Error::PoolTimedOut), "{error}");
        let failure = health.explain(error).await;
        assert!(matches!(failure, DbFailure::Unreachable(_)), "{failure}");
    }
}
