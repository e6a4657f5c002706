//! Group submit: ASYNC submits that arrive together are stored by one statement.
//!
//! Alone, every submit costs PostgreSQL a statement, a commit and a WAL write. Submits that
//! arrive while earlier ones are being stored wait for the next statement instead, which
//! stores all of them (up to [`MAX_SUBMIT_BATCH`]) with the same three inserts over arrays
//! (the grouping is `groups`: no timer, a lone submit goes at once). Up to
//! [`SUBMIT_BATCHES_IN_FLIGHT`] statements run at a time, one per core of a small server.
//!
//! Each caller still gets its own answer. A batch that fails before reaching the database
//! (no connection in time, pool closed) fails each of its submits the same way. After any
//! other failure — one row's data, a connection lost mid-statement — the rows it may have
//! committed are looked up by id and answered as created (whatever their idempotency key
//! says), and the others go through the single-row path with the same id, a few at a
//! time, so one bad row fails alone. Within a batch, rows are in `(owner, key)` order, so
//! two batches holding the same keys cannot deadlock.
//! Submits with an ordering key never batch: they take the key's lock (see
//! [`Queue::submit_async`]).

use std::collections::HashMap;

use appstack_trace::TraceCarrier;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use uuid::Uuid;

use super::groups::{Answer, Groups, before_the_database};
use super::submit::{NewRequest, SubmitOutcome, first_event_and_record};
use super::{Queue, RequestRecord, RequestRow, StoreError, request_columns};

/// The most submits one statement stores.
pub const MAX_SUBMIT_BATCH: usize = 64;
/// Batches stored at the same time.
pub const SUBMIT_BATCHES_IN_FLIGHT: usize = 2;
/// Single-row statements of one batch run at once (after a failure, or for taken keys).
const RETRIES_AT_ONCE: usize = 8;

const INSERT_MANY: &str = concat!(
    "WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::timestamptz[], $7::text[], $8::text[])
            AS t(id, owner, kind, payload, idempotency_key, deadline, traceparent, tracestate)
    ), ins AS (
        INSERT INTO requests.requests
            (id, owner, kind, mode, status, payload, idempotency_key, deadline,
             last_sequence, created_at, updated_at)
        SELECT id, owner, kind, 'async', 'queued', payload::jsonb, idempotency_key, deadline,
               1, now(), now()
        FROM input
        ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *
    ), job AS (
        INSERT INTO requests.jobs
            (request_id, kind, mode, state, run_at, deadline, traceparent, tracestate)
        SELECT ins.id, ins.kind, 'async', 'queued', ins.created_at, ins.deadline,
               input.traceparent, NULLIF(input.tracestate, '')
        FROM ins JOIN input ON input.id = ins.id",
    first_event_and_record!()
);

/// Stores ASYNC submits in groups; cheap to clone. Its task ends when the last clone is
/// dropped, after storing what was handed to it.
#[derive(Clone, Debug)]
pub struct SubmitBatcher {
    queue: Queue,
    groups: Groups<Waiting>,
}

/// A submit handed to the batcher, with where its answer goes.
#[derive(Debug)]
struct Waiting {
    id: Uuid,
    request: OwnedRequest,
    answer: Answer<SubmitOutcome<RequestRecord>>,
}

/// [`NewRequest`] with owned fields, to cross into the batcher's task.
#[derive(Clone, Debug)]
struct OwnedRequest {
    owner: String,
    kind: String,
    payload: String,
    idempotency_key: Option<String>,
    deadline: Option<DateTime<Utc>>,
    trace: Option<TraceCarrier>,
}

impl OwnedRequest {
    fn borrowed(&self) -> NewRequest<'_> {
        NewRequest {
            owner: &self.owner,
            kind: &self.kind,
            payload: &self.payload,
            idempotency_key: self.idempotency_key.as_deref(),
            ordering_key: None,
            deadline: self.deadline,
            trace: self.trace.as_ref(),
        }
    }
}

impl SubmitBatcher {
    /// Starts the batching task over `queue`.
    pub fn spawn(queue: Queue) -> Self {
        let storing = queue.clone();
        let groups = Groups::spawn(MAX_SUBMIT_BATCH, SUBMIT_BATCHES_IN_FLIGHT, move |batch| {
            let queue = storing.clone();
            async move { queue.store_batch(batch).await }
        });
        Self { queue, groups }
    }

    /// Stores an ASYNC request and queues it, or finds the request its idempotency key
    /// already names: [`Queue::submit_async`], grouped with concurrent submits.
    pub async fn submit_async(
        &self,
        new: &NewRequest<'_>,
    ) -> Result<SubmitOutcome<RequestRecord>, StoreError> {
        if new.ordering_key.is_some() {
            return self.queue.submit_async(new).await;
        }
        let request = OwnedRequest {
            owner: new.owner.to_owned(),
            kind: new.kind.to_owned(),
            payload: new.payload.to_owned(),
            idempotency_key: new.idempotency_key.map(str::to_owned),
            deadline: new.deadline,
            trace: new.trace.cloned(),
        };
        self.groups
            .ask(|answer| Waiting {
                id: Uuid::now_v7(),
                request,
                answer,
            })
            .await
    }
}

impl Queue {
    /// Stores `batch` and answers each of its submits.
    async fn store_batch(&self, mut batch: Vec<Waiting>) {
        // Keys in one order in every batch, so two batches holding the same two keys (a
        // client's retries) cannot wait on each other until the deadlock detector fires.
        batch.sort_by(|a, b| {
            (&a.request.owner, &a.request.idempotency_key)
                .cmp(&(&b.request.owner, &b.request.idempotency_key))
        });
        match self.insert_many(&batch).await {
            Ok(inserted) => self.answer_stored(batch, inserted).await,
            Err(error) if before_the_database(&error).is_some() => {
                for waiting in batch {
                    let same = before_the_database(&error).unwrap_or(sqlx::Error::PoolClosed);
                    let _ = waiting.answer.send(Err(StoreError::Db(same)));
                }
            }
            Err(error) => {
                // It may have committed before it failed (the answer was lost): what it
                // stored is found by id and answered as created, whatever its key says.
                tracing::debug!(%error, submits = batch.len(), "a submit batch failed; finding what it stored");
                let ids: Vec<Uuid> = batch.iter().map(|waiting| waiting.id).collect();
                match self.stored_among(&ids).await {
                    Ok(stored) => self.answer_stored(batch, stored).await,
                    Err(lookup) => {
                        let why = format!("{error}; then finding what it stored: {lookup}");
                        for waiting in batch {
                            let lost = sqlx::Error::Io(std::io::Error::other(why.clone()));
                            let _ = waiting.answer.send(Err(StoreError::Db(lost)));
                        }
                    }
                }
            }
        }
    }

    /// Answers each submit of `batch`: created when its row is in `stored`, otherwise through
    /// the one-row path.
    async fn answer_stored(&self, batch: Vec<Waiting>, mut stored: HashMap<Uuid, RequestRow>) {
        let unanswered: Vec<Waiting> = batch
            .into_iter()
            .filter_map(|waiting| match stored.remove(&waiting.id) {
                Some(row) => {
                    let _ = waiting
                        .answer
                        .send(row.try_into().map(SubmitOutcome::Created));
                    None
                }
                None => Some(waiting),
            })
            .collect();
        // Bounded: after a failure these are single statements, and a database in trouble
        // should not get a batch's worth at once.
        futures_util::stream::iter(unanswered)
            .for_each_concurrent(RETRIES_AT_ONCE, |waiting| async move {
                // The one-row path: a key taken by another request is answered from it
                // (replayed or reused); a row a failed batch did not store is stored now.
                let outcome = self
                    .insert_async(waiting.id, &waiting.request.borrowed())
                    .await;
                let _ = waiting.answer.send(outcome);
            })
            .await;
    }

    /// The rows among `ids` that are stored.
    async fn stored_among(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, RequestRow>, sqlx::Error> {
        const SQL: &str = concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests.requests WHERE id = ANY($1)"
        );
        let rows: Vec<RequestRow> = sqlx::query_as(SQL).bind(ids).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    /// One statement for the whole batch; the stored rows by id (a row whose idempotency key
    /// was taken is missing).
    async fn insert_many(
        &self,
        batch: &[Waiting],
    ) -> Result<HashMap<Uuid, RequestRow>, sqlx::Error> {
        let ids: Vec<Uuid> = batch.iter().map(|w| w.id).collect();
        let owners: Vec<&str> = batch.iter().map(|w| w.request.owner.as_str()).collect();
        let kinds: Vec<&str> = batch.iter().map(|w| w.request.kind.as_str()).collect();
        let payloads: Vec<&str> = batch.iter().map(|w| w.request.payload.as_str()).collect();
        let keys: Vec<Option<&str>> = batch
            .iter()
            .map(|w| w.request.idempotency_key.as_deref())
            .collect();
        let deadlines: Vec<Option<DateTime<Utc>>> =
            batch.iter().map(|w| w.request.deadline).collect();
        let traceparents: Vec<Option<&str>> = batch
            .iter()
            .map(|w| w.request.trace.as_ref().map(|t| t.traceparent.as_str()))
            .collect();
        let tracestates: Vec<Option<&str>> = batch
            .iter()
            .map(|w| w.request.trace.as_ref().map(|t| t.tracestate.as_str()))
            .collect();
        let rows: Vec<RequestRow> = sqlx::query_as(INSERT_MANY)
            .bind(ids)
            .bind(owners)
            .bind(kinds)
            .bind(payloads)
            .bind(keys)
            .bind(deadlines)
            .bind(traceparents)
            .bind(tracestates)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }
}
