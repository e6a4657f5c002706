//! Cancel: at once for a waiting request; for a running one, the request is cancelled now and
//! its execution's outcome discarded when it ends.

use uuid::Uuid;

use super::ordering::{lock_keys, promote_next};
use super::{Queue, RequestRecord, RequestRow, StoreError, Viewer, parse_state, request_columns};

/// What a cancel did.
#[derive(Clone, Debug, PartialEq)]
pub enum CancelOutcome {
    /// The request is cancelled (now in status `cancelled`).
    Cancelled(RequestRecord),
    /// It had already finished; unchanged.
    AlreadyFinished(RequestRecord),
    /// No such request for this viewer.
    NotFound,
}

const MARK_CANCELLED: &str = concat!(
    "WITH req AS (
        UPDATE requests.requests
        SET status = 'cancelled', cancel_requested = $2, finished_at = now(), updated_at = now(),
            last_sequence = last_sequence + 1
        WHERE id = $1
        RETURNING *, $3::text AS from_status
    ), event AS (
        INSERT INTO requests.events (request_id, sequence, from_status, to_status, attempt, detail, at)
        SELECT id, last_sequence, from_status, 'cancelled', attempts, 'cancelled by its owner', now()
        FROM req
    )
    SELECT ",
    request_columns!(),
    " FROM req"
);

impl Queue {
    /// Cancels request `id` as `viewer`.
    ///
    /// A queued or scheduled request is cancelled at once and its job removed. A running one
    /// is marked cancelled at once too; its job row stays until the execution ends (or its
    /// lease expires), so the next request of its ordering key still waits for it, and the
    /// execution's outcome is discarded. Workers learn of it at their next heartbeat.
    pub async fn cancel(&self, id: Uuid, viewer: Viewer<'_>) -> Result<CancelOutcome, StoreError> {
        let found: Option<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT owner, status, ordering_key FROM requests.requests WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((owner, _, ordering_key)) = found else {
            return Ok(CancelOutcome::NotFound);
        };
        if viewer.owner().is_some_and(|viewer| viewer != owner) {
            return Ok(CancelOutcome::NotFound);
        }
        let mut tx = appstack_db::begin(&self.pool).await?;
        // Locks in the one order: the key, the job row, the request row.
        if let Some(key) = ordering_key.as_deref() {
            lock_keys(&mut tx, &[key]).await?;
        }
        let job: Option<(String,)> =
            sqlx::query_as("SELECT state FROM requests.jobs WHERE request_id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let status: String =
            sqlx::query_scalar("SELECT status FROM requests.requests WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        let current = parse_state(&status)?;
        let outcome = match job {
            Some(_) if current.is_terminal() => {
                // Running and already cancelled: nothing more to do.
                None
            }
            Some((state,)) => {
                let running = state == "running";
                if !running {
                    sqlx::query("DELETE FROM requests.jobs WHERE request_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                let row: RequestRow = sqlx::query_as(MARK_CANCELLED)
                    .bind(id)
                    .bind(running)
                    .bind(&status)
                    .fetch_one(&mut *tx)
                    .await?;
                if !running && let Some(key) = ordering_key.as_deref() {
                    promote_next(&mut tx, &[key]).await?;
                }
                Some(row)
            }
            None => None,
        };
        tx.commit().await?;
        match outcome {
            Some(row) => Ok(CancelOutcome::Cancelled(row.try_into()?)),
            None => match self.get(id, viewer).await? {
                Some(record) => Ok(CancelOutcome::AlreadyFinished(record)),
                None => Ok(CancelOutcome::NotFound),
            },
        }
    }
}
