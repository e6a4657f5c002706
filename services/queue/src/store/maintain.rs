//! The queue's housekeeping, safe to run from every worker at once (each step locks what it
//! changes and skips what another holds): rescuing expired leases, giving up requests whose
//! deadline passed before they started, requeueing dead letters, purging old history.

use std::collections::HashSet;

use appstack_trace::TraceCarrier;
use uuid::Uuid;

use super::complete::apply;
use super::ordering::{lock_keys, promote_next};
use super::{Completion, CompletionAction, Failure, Finish, Mode, Queue, Reschedule, StoreError};
use crate::decide::RetryPolicy;
use crate::decide::rescue;
use crate::state::Event;

/// What one rescue pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rescued {
    /// Jobs queued again (attempt kept spent).
    pub requeued: u64,
    /// Jobs given up: their last attempt's lease expired.
    pub dead: u64,
    /// SYNC requests whose process died mid-call: failed.
    pub abandoned: u64,
}

#[derive(sqlx::FromRow)]
struct Expired {
    request_id: Uuid,
    kind: String,
    mode: String,
    attempts: i32,
    claims: i32,
    ordering_key: Option<String>,
}

impl Queue {
    /// Returns up to `limit` jobs whose lease expired: queued again, or dead when that was
    /// their last attempt (`policy_of` gives each kind's redelivery rules), or — for a SYNC
    /// request, whose caller is gone — failed as abandoned.
    pub async fn rescue_expired(
        &self,
        limit: u32,
        policy_of: &(dyn Fn(&str) -> RetryPolicy + Sync),
    ) -> Result<Rescued, StoreError> {
        // Candidates first, unlocked: the ordering keys must be locked before the job rows.
        let candidates: Vec<Expired> = sqlx::query_as(
            "SELECT request_id, kind, mode, attempts, claims, ordering_key FROM requests.jobs
             WHERE state = 'running' AND lease_until < now()
             ORDER BY lease_until LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        if candidates.is_empty() {
            return Ok(Rescued::default());
        }
        let mut tx = appstack_db::begin(&self.pool).await?;
        let keys: Vec<&str> = candidates
            .iter()
            .filter_map(|c| c.ordering_key.as_deref())
            .collect();
        lock_keys(&mut tx, &keys).await?;
        // Still expired, under the same claim, and not locked by a worker completing it now.
        let ids: Vec<Uuid> = candidates.iter().map(|c| c.request_id).collect();
        let claims: Vec<i32> = candidates.iter().map(|c| c.claims).collect();
        let still: HashSet<Uuid> = sqlx::query_scalar(
            "SELECT j.request_id FROM requests.jobs j
             JOIN unnest($1::uuid[], $2::int[]) AS c(id, claim)
               ON j.request_id = c.id AND j.claims = c.claim
             WHERE j.state = 'running' AND j.lease_until < now()
             FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(&ids)
        .bind(&claims)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut rescued = Rescued::default();
        let mut batch = Vec::with_capacity(still.len());
        for job in candidates.iter().filter(|c| still.contains(&c.request_id)) {
            let attempts = u32::try_from(job.attempts).unwrap_or(0);
            let action = if Mode::parse(&job.mode)? == Mode::Sync {
                rescued.abandoned += 1;
                CompletionAction::Finish(Finish::Failed(Failure {
                    reason: "abandoned".into(),
                    message: "the process executing this request stopped before it finished".into(),
                    retryable: true,
                }))
            } else if rescue(attempts, &policy_of(&job.kind)) == Event::GiveUp {
                rescued.dead += 1;
                CompletionAction::Finish(Finish::Dead(Failure {
                    reason: "lease_expired".into(),
                    message: format!(
                        "attempt {attempts}, the last one, stopped before it finished (its worker died or stalled)"
                    ),
                    retryable: true,
                }))
            } else {
                rescued.requeued += 1;
                CompletionAction::Reschedule(Reschedule::LeaseExpired)
            };
            batch.push(Completion {
                request_id: job.request_id,
                claim: job.claims,
                ordering_key: job.ordering_key.clone(),
                action,
            });
        }
        apply(&mut tx, &batch).await?;
        tx.commit().await?;
        Ok(rescued)
    }

    /// Gives up (dead, `deadline_exceeded`) up to `limit` waiting requests whose deadline
    /// passed before they started.
    pub async fn expire_deadlines(&self, limit: u32) -> Result<u64, StoreError> {
        let candidates: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT request_id, ordering_key FROM requests.jobs
             WHERE state <> 'running' AND deadline < now() LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = candidates.iter().map(|(id, _)| *id).collect();
        let keys: Vec<&str> = candidates
            .iter()
            .filter_map(|(_, k)| k.as_deref())
            .collect();
        let mut tx = appstack_db::begin(&self.pool).await?;
        lock_keys(&mut tx, &keys).await?;
        let freed: Vec<Option<String>> = sqlx::query_scalar(
            "WITH gone AS (
                DELETE FROM requests.jobs j
                WHERE j.request_id IN (SELECT request_id FROM requests.jobs
                                       WHERE request_id = ANY($1) AND state <> 'running'
                                         AND deadline < now()
                                       FOR UPDATE SKIP LOCKED)
                RETURNING j.request_id, j.ordering_key, j.state, j.attempts
            ), req AS (
                UPDATE requests.requests r
                SET status = 'dead', failure_reason = 'deadline_exceeded',
                    failure_message = 'the deadline passed before the request could run',
                    failure_retryable = false, finished_at = now(), updated_at = now(),
                    last_sequence = r.last_sequence + 1
                FROM gone g WHERE r.id = g.request_id
                RETURNING r.id, r.last_sequence, g.state, g.attempts
            ), event AS (
                INSERT INTO requests.events (request_id, sequence, from_status, to_status, attempt, detail, at)
                SELECT id, last_sequence, state, 'dead', attempts, 'deadline_exceeded', now() FROM req
            )
            SELECT ordering_key FROM gone",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let freed_keys: Vec<&str> = freed.iter().filter_map(|k| k.as_deref()).collect();
        promote_next(&mut tx, &freed_keys).await?;
        tx.commit().await?;
        Ok(freed.len() as u64)
    }

    /// Puts dead requests back in the queue with fresh attempts and no deadline; returns the
    /// ids requeued (the others were not dead, or do not exist). A requeued request of an
    /// ordering key waits behind the key's live requests. Its execution continues `trace`
    /// (the admin call's), not the original submit's: that trace ended when it went dead.
    pub async fn requeue(
        &self,
        ids: &[Uuid],
        trace: Option<&TraceCarrier>,
    ) -> Result<Vec<Uuid>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT DISTINCT ordering_key FROM requests.requests
             WHERE id = ANY($1) AND status = 'dead'",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let keys: Vec<&str> = keys.iter().filter_map(|k| k.as_deref()).collect();
        let mut tx = appstack_db::begin(&self.pool).await?;
        lock_keys(&mut tx, &keys).await?;
        let requeued: Vec<Uuid> = sqlx::query_scalar(
            "WITH req AS (
                UPDATE requests.requests
                SET status = 'queued', attempts = 0, deadline = NULL, finished_at = NULL,
                    updated_at = now(), last_sequence = last_sequence + 1
                WHERE id = ANY($1) AND status = 'dead'
                RETURNING id, kind, ordering_key, last_sequence
            ), job AS (
                INSERT INTO requests.jobs
                    (request_id, kind, mode, state, run_at, ordering_key, blocked, traceparent, tracestate)
                SELECT id, kind, 'async', 'queued', now(), ordering_key,
                       ordering_key IS NOT NULL
                       AND (EXISTS (SELECT 1 FROM requests.jobs j WHERE j.ordering_key = req.ordering_key)
                            OR row_number() OVER (PARTITION BY ordering_key ORDER BY id) > 1),
                       $2, NULLIF($3, '')
                FROM req
            ), event AS (
                INSERT INTO requests.events (request_id, sequence, from_status, to_status, attempt, detail, at)
                SELECT id, last_sequence, 'dead', 'queued', 0, 'requeued by an admin', now() FROM req
            )
            SELECT id FROM req",
        )
        .bind(ids)
        .bind(trace.map(|t| t.traceparent.as_str()))
        .bind(trace.map(|t| t.tracestate.as_str()))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(requeued)
    }

    /// Deletes up to `limit` requests (with their events) that finished more than
    /// `retention` ago. Returns how many.
    pub async fn purge_finished(
        &self,
        retention: std::time::Duration,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM requests.requests WHERE id IN (
                SELECT id FROM requests.requests r
                WHERE finished_at < now() - $1::bigint * interval '1 microsecond'
                  AND NOT EXISTS (SELECT 1 FROM requests.jobs j WHERE j.request_id = r.id)
                ORDER BY finished_at LIMIT $2
                FOR UPDATE SKIP LOCKED)",
        )
        .bind(super::micros(retention))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
