//! Submit: the request row, its first event and its job row, in one statement.

use appstack_trace::TraceCarrier;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::ordering::lock_keys;
use super::{ClaimedJob, Queue, RequestRecord, RequestRow, StoreError, micros, request_columns};

/// A request to store.
#[derive(Clone, Debug)]
pub struct NewRequest<'a> {
    /// The caller's token subject.
    pub owner: &'a str,
    /// A routed kind.
    pub kind: &'a str,
    /// A JSON object, already checked by the caller.
    pub payload: &'a str,
    /// The caller's idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// The route's ordering key value for this payload (ASYNC only).
    pub ordering_key: Option<&'a str>,
    /// The caller's deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// The submit's trace context, stored with the job so its execution continues the
    /// trace (ASYNC only; a SYNC request executes inside the submit's own span).
    pub trace: Option<&'a TraceCarrier>,
}

/// What a submit did.
#[derive(Clone, Debug, PartialEq)]
pub enum SubmitOutcome<T> {
    /// Stored as a new request.
    Created(T),
    /// The idempotency key matched an earlier request with the same kind and payload.
    Replayed(RequestRecord),
    /// The idempotency key matched an earlier request with another kind or payload.
    KeyReused(RequestRecord),
}

// The tail of every ASYNC insert: the request's first event, and the stored request back.
macro_rules! first_event_and_record {
    () => {
        concat!(
            "
    ), event AS (
        INSERT INTO requests.events (request_id, sequence, from_status, to_status, at)
        SELECT id, 1, NULL, 'queued', created_at FROM ins
    )
    SELECT ",
            $crate::store::request_columns!(),
            " FROM ins"
        )
    };
}
pub(super) use first_event_and_record;

// The insert and everything it implies, as data-modifying CTEs of one statement: one round
// trip, one implicit transaction. `ON CONFLICT DO NOTHING` waits for a concurrent insert of
// the same key to commit, so of two concurrent duplicates exactly one inserts and the other
// finds it.
const INSERT_ASYNC: &str = concat!(
    "WITH ins AS (
        INSERT INTO requests.requests
            (id, owner, kind, mode, status, payload, idempotency_key, ordering_key, deadline,
             last_sequence, created_at, updated_at)
        VALUES ($1, $2, $3, 'async', 'queued', $4::jsonb, $5, $6, $7, 1, now(), now())
        ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    ), job AS (
        INSERT INTO requests.jobs
            (request_id, kind, mode, state, run_at, deadline, ordering_key, blocked,
             traceparent, tracestate)
        SELECT id, kind, 'async', 'queued', created_at, deadline, ordering_key,
               ordering_key IS NOT NULL
               AND EXISTS (SELECT 1 FROM requests.jobs WHERE ordering_key = ins.ordering_key),
               $8, NULLIF($9, '')
        FROM ins",
    first_event_and_record!()
);

// A SYNC request starts running at once, under a lease held by the submitting process: if
// that process dies mid-call, the rescuer finds the expired lease and fails the request.
const INSERT_SYNC: &str = concat!(
    "WITH ins AS (
        INSERT INTO requests.requests
            (id, owner, kind, mode, status, payload, idempotency_key, deadline, attempts,
             last_sequence, created_at, updated_at)
        VALUES ($1, $2, $3, 'sync', 'running', $4::jsonb, $5, $6, 1, 2, now(), now())
        ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    ), job AS (
        INSERT INTO requests.jobs
            (request_id, kind, mode, state, run_at, attempts, claims, claimed_by, lease_until, deadline)
        SELECT id, kind, 'sync', 'running', created_at, 1, 1, $7,
               now() + $8::bigint * interval '1 microsecond', deadline
        FROM ins
    ), event AS (
        INSERT INTO requests.events (request_id, sequence, from_status, to_status, attempt, at)
        SELECT id, 1, NULL, 'queued', 0, created_at FROM ins
        UNION ALL
        SELECT id, 2, 'queued', 'running', 1, created_at FROM ins
    )
    SELECT ",
    request_columns!(),
    " FROM ins"
);

impl Queue {
    /// Stores an ASYNC request and queues it, or finds the request its idempotency key
    /// already names. One submit, one statement; see
    /// [`SubmitBatcher`](super::SubmitBatcher) for submits grouped under load.
    pub async fn submit_async(
        &self,
        new: &NewRequest<'_>,
    ) -> Result<SubmitOutcome<RequestRecord>, StoreError> {
        self.insert_async(Uuid::now_v7(), new).await
    }

    /// [`Queue::submit_async`] with the id chosen by the caller. Storing an id already
    /// stored answers that row as created: it is what a batch that failed after its commit
    /// left behind (see [`SubmitBatcher`](super::SubmitBatcher)).
    pub(super) async fn insert_async(
        &self,
        id: Uuid,
        new: &NewRequest<'_>,
    ) -> Result<SubmitOutcome<RequestRecord>, StoreError> {
        let query = sqlx::query_as::<_, RequestRow>(INSERT_ASYNC)
            .bind(id)
            .bind(new.owner)
            .bind(new.kind)
            .bind(new.payload)
            .bind(new.idempotency_key)
            .bind(new.ordering_key)
            .bind(new.deadline)
            .bind(new.trace.map(|t| t.traceparent.as_str()))
            .bind(new.trace.map(|t| t.tracestate.as_str()));
        let inserted = match new.ordering_key {
            // Under the key's lock, so the head of the key cannot finish between the check for
            // an earlier request and this insert (which would leave this one blocked forever).
            Some(key) => {
                let mut tx = appstack_db::begin(&self.pool).await?;
                lock_keys(&mut tx, &[key]).await?;
                let row = query.fetch_optional(&mut *tx).await;
                match row {
                    Ok(row) => tx.commit().await.map(|()| row),
                    Err(error) => Err(error),
                }
            }
            None => query.fetch_optional(&self.pool).await,
        };
        match inserted {
            Ok(Some(row)) => Ok(SubmitOutcome::Created(row.try_into()?)),
            Ok(None) => self.existing(new).await,
            Err(sqlx::Error::Database(db)) if db.constraint() == Some("requests_pkey") => {
                self.stored(id).await.map(SubmitOutcome::Created)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The request stored under `id`, whoever owns it.
    async fn stored(&self, id: Uuid) -> Result<RequestRecord, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests.requests WHERE id = $1"
        );
        let row: Option<RequestRow> = sqlx::query_as(SQL)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => row.try_into(),
            None => Err(StoreError::Corrupt(format!(
                "request {id} conflicted on its id but is not stored"
            ))),
        }
    }

    /// Stores a SYNC request as running under a lease held by `holder`, or finds the request
    /// its idempotency key already names. The caller executes it, extends the lease with
    /// [`Queue::heartbeat`] and records the outcome with [`Queue::complete`].
    pub async fn submit_sync(
        &self,
        new: &NewRequest<'_>,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<SubmitOutcome<(RequestRecord, ClaimedJob)>, StoreError> {
        let id = Uuid::now_v7();
        let inserted = sqlx::query_as::<_, RequestRow>(INSERT_SYNC)
            .bind(id)
            .bind(new.owner)
            .bind(new.kind)
            .bind(new.payload)
            .bind(new.idempotency_key)
            .bind(new.deadline)
            .bind(holder)
            .bind(micros(lease))
            .fetch_optional(&self.pool)
            .await?;
        match inserted {
            Some(row) => {
                let record: RequestRecord = row.try_into()?;
                let job = ClaimedJob {
                    request_id: record.id,
                    kind: record.kind.clone(),
                    payload: record.payload.clone(),
                    attempt: 1,
                    claim: 1,
                    deadline: record.deadline,
                    created_at: record.created_at,
                    run_at: record.created_at,
                    ordering_key: None,
                    trace: None,
                };
                Ok(SubmitOutcome::Created((record, job)))
            }
            None => match self.existing(new).await? {
                SubmitOutcome::Created(record) => Ok(SubmitOutcome::Replayed(record)),
                SubmitOutcome::Replayed(record) => Ok(SubmitOutcome::Replayed(record)),
                SubmitOutcome::KeyReused(record) => Ok(SubmitOutcome::KeyReused(record)),
            },
        }
    }

    /// The request an idempotency key already names, compared with the new submit.
    pub(super) async fn existing<T>(
        &self,
        new: &NewRequest<'_>,
    ) -> Result<SubmitOutcome<T>, StoreError> {
        let Some(key) = new.idempotency_key else {
            // Only the idempotency index can make the insert a no-op.
            return Err(StoreError::Corrupt(
                "a submit without an idempotency key inserted nothing".into(),
            ));
        };
        // JSONB equality: the same document however it was spelt (key order, spacing).
        const SQL: &str = concat!(
            "SELECT ",
            request_columns!(),
            ", (kind = $3 AND payload = $4::jsonb) AS same
             FROM requests.requests WHERE owner = $1 AND idempotency_key = $2"
        );
        let row: Option<ExistingRow> = sqlx::query_as(SQL)
            .bind(new.owner)
            .bind(key)
            .bind(new.kind)
            .bind(new.payload)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            // Purged by retention between the conflict and this read: extremely rare; the
            // caller may submit again.
            return Err(StoreError::Corrupt(
                "the request of this idempotency key was purged meanwhile; submit again".into(),
            ));
        };
        let same = row.same;
        let record: RequestRecord = row.request.try_into()?;
        Ok(if same {
            SubmitOutcome::Replayed(record)
        } else {
            SubmitOutcome::KeyReused(record)
        })
    }
}

#[derive(sqlx::FromRow)]
struct ExistingRow {
    #[sqlx(flatten)]
    request: RequestRow,
    same: bool,
}
