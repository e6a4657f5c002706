//! Reads: one request, a page of requests, a request's events, queue statistics, dead letters.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    EventRecord, Queue, RequestRecord, RequestRow, StoreError, Viewer, parse_state, request_columns,
};
use crate::state::JobState;

/// Which requests a List returns.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only these statuses; empty for all.
    pub statuses: Vec<JobState>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only requests older than this one (the previous page's last): the cursor.
    pub before: Option<Uuid>,
}

/// A page of requests, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The last item's id when more follow: the next page's cursor.
    pub next: Option<Uuid>,
}

/// Jobs in one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateCount {
    /// The request kind.
    pub kind: String,
    /// The state.
    pub state: JobState,
    /// How many.
    pub count: i64,
}

/// The queue's depth.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Counts per kind and state: the live states always, the finished ones when asked.
    pub counts: Vec<StateCount>,
    /// Age of the oldest job ready to run now; zero when none waits.
    pub oldest_ready_age: std::time::Duration,
    /// Jobs running now.
    pub in_flight: i64,
}

/// One dead request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The request.
    pub request_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Attempts spent.
    pub attempts: u32,
    /// The last failure's reason.
    pub reason: String,
    /// The last failure's detail.
    pub message: String,
    /// When it went dead.
    pub died_at: DateTime<Utc>,
}

// Owner and admin reads are separate statements: a prepared statement with an
// `owner IS NULL OR` branch gets a generic plan that cannot use the owner index.
const GET_OWNED: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM requests.requests WHERE id = $1 AND owner = $2"
);
const GET_ANY: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM requests.requests WHERE id = $1 AND $2::text IS NULL"
);
const LIST_OWNED: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM requests.requests
      WHERE owner = $1 AND ($2::uuid IS NULL OR id < $2)
        AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
        AND ($4::text IS NULL OR kind = $4)
      ORDER BY id DESC LIMIT $5"
);
const LIST_ANY: &str = concat!(
    "SELECT ",
    request_columns!(),
    " FROM requests.requests
      WHERE $1::text IS NULL AND ($2::uuid IS NULL OR id < $2)
        AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
        AND ($4::text IS NULL OR kind = $4)
      ORDER BY id DESC LIMIT $5"
);

#[derive(sqlx::FromRow)]
struct DeadRow {
    id: Uuid,
    kind: String,
    attempts: i32,
    failure_reason: Option<String>,
    failure_message: Option<String>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    request_id: Uuid,
    sequence: i32,
    from_status: Option<String>,
    to_status: String,
    attempt: i32,
    detail: String,
    at: DateTime<Utc>,
}

impl Queue {
    /// Request `id`, if `viewer` may see it.
    pub async fn get(
        &self,
        id: Uuid,
        viewer: Viewer<'_>,
    ) -> Result<Option<RequestRecord>, StoreError> {
        let sql = match viewer {
            Viewer::Owner(_) => GET_OWNED,
            Viewer::Admin => GET_ANY,
        };
        let row: Option<RequestRow> = sqlx::query_as(sql)
            .bind(id)
            .bind(viewer.owner())
            .fetch_optional(&self.pool)
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    /// Up to `limit` requests `viewer` may see, newest first.
    pub async fn list(
        &self,
        viewer: Viewer<'_>,
        filter: &ListFilter,
        limit: u32,
    ) -> Result<Page<RequestRecord>, StoreError> {
        let sql = match viewer {
            Viewer::Owner(_) => LIST_OWNED,
            Viewer::Admin => LIST_ANY,
        };
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let rows: Vec<RequestRow> = sqlx::query_as(sql)
            .bind(viewer.owner())
            .bind(filter.before)
            .bind(&statuses)
            .bind(filter.kind.as_deref())
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<Vec<RequestRecord>, _>>()?;
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|r| r.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Up to `limit` events of request `id` after sequence `after`, in order. The caller has
    /// checked that the viewer may see the request.
    pub async fn events_after(
        &self,
        id: Uuid,
        after: i32,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT request_id, sequence, from_status, to_status, attempt, detail, at
             FROM requests.events WHERE request_id = $1 AND sequence > $2
             ORDER BY sequence LIMIT $3",
        )
        .bind(id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(EventRecord {
                    request_id: row.request_id,
                    sequence: row.sequence,
                    from: row.from_status.as_deref().map(parse_state).transpose()?,
                    to: parse_state(&row.to_status)?,
                    attempt: u32::try_from(row.attempt).unwrap_or(0),
                    detail: row.detail,
                    at: row.at,
                })
            })
            .collect()
    }

    /// The queue's depth, for `kind` or every kind. The live states come from the small jobs
    /// table; `with_finished` adds the finished ones, which counts the whole history (for the
    /// admin rpc, not for a metrics scrape).
    pub async fn stats(
        &self,
        kind: Option<&str>,
        with_finished: bool,
    ) -> Result<Stats, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let live: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, state, count(*) FROM requests.jobs
             WHERE $1::text IS NULL OR kind = $1 GROUP BY kind, state",
        )
        .bind(kind)
        .fetch_all(&mut *conn)
        .await?;
        let oldest: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - min(run_at))::float8 FROM requests.jobs
             WHERE state <> 'running' AND NOT blocked AND run_at <= now()
               AND ($1::text IS NULL OR kind = $1)",
        )
        .bind(kind)
        .fetch_one(&mut *conn)
        .await?;
        let mut counts = Vec::new();
        let mut in_flight = 0;
        for (kind, state, count) in live {
            let state = parse_state(&state)?;
            if state == JobState::Running {
                in_flight += count;
            }
            counts.push(StateCount { kind, state, count });
        }
        if with_finished {
            let finished: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT kind, status, count(*) FROM requests.requests
                 WHERE finished_at IS NOT NULL AND status <> 'running'
                   AND ($1::text IS NULL OR kind = $1)
                 GROUP BY kind, status",
            )
            .bind(kind)
            .fetch_all(&mut *conn)
            .await?;
            for (kind, state, count) in finished {
                counts.push(StateCount {
                    kind,
                    state: parse_state(&state)?,
                    count,
                });
            }
        }
        let oldest_ready_age =
            std::time::Duration::try_from_secs_f64(oldest.unwrap_or(0.0).max(0.0))
                .unwrap_or_default();
        Ok(Stats {
            counts,
            oldest_ready_age,
            in_flight,
        })
    }

    /// Up to `limit` dead requests, newest first, older than `before`.
    pub async fn dead_letters(
        &self,
        kind: Option<&str>,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<DeadLetter>, StoreError> {
        let rows: Vec<DeadRow> = sqlx::query_as(
            "SELECT id, kind, attempts, failure_reason, failure_message, finished_at
                 FROM requests.requests
                 WHERE status = 'dead' AND ($1::uuid IS NULL OR id < $1)
                   AND ($2::text IS NULL OR kind = $2)
                 ORDER BY id DESC LIMIT $3",
        )
        .bind(before)
        .bind(kind)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut items: Vec<DeadLetter> = rows
            .into_iter()
            .map(|row| DeadLetter {
                request_id: row.id,
                kind: row.kind,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
                reason: row.failure_reason.unwrap_or_default(),
                message: row.failure_message.unwrap_or_default(),
                died_at: row.finished_at.unwrap_or_default(),
            })
            .collect();
        let next = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|d| d.request_id)
        } else {
            None
        };
        Ok(Page { items, next })
    }
}
