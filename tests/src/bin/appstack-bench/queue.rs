//! `queue`: the PostgreSQL queue alone — claim a batch, do nothing, record the batch as
//! succeeded — through the real `appstack_queue::store::Queue`, in three phases of one run:
//!
//! 1. an empty history (`claims_per_sec`);
//! 2. with a million finished requests (and their three events each) in the tables
//!    (`history_ratio` = phase 2 / phase 1; goal ≥ 0.9);
//! 3. the same while another session holds a REPEATABLE READ snapshot open for the whole
//!    phase, so no dead row can be vacuumed (`xmin_held_ratio` = phase 3 / phase 2; goal
//!    ≥ 0.8).
//!
//! Jobs are inserted in bulk by SQL before each phase (enough that the queue never runs
//! dry), so only claims and completions are measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use appstack_queue::ClaimWatermark;
use appstack_queue::store::{ClaimFilter, Completion, CompletionAction, Finish, Queue};
use appstack_tests::pg;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::measure::Report;

/// Jobs each claim asks for.
const BATCH: u32 = 32;
/// Concurrent claim loops (each one connection).
const LOOPS: usize = 4;
/// Finished requests put in the tables for phase 2.
const HISTORY: i64 = 1_000_000;
/// Lease of a claim.
const LEASE: Duration = Duration::from_secs(60);

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure(seconds))
}

async fn measure(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("queue");
    let (pool, _) = bench_database(LOOPS as u32 + 4).await?;
    let queue = Queue::new(pool.clone());

    // Enough jobs for a generous rate over the phase.
    let per_phase = (seconds.as_secs_f64() * 40_000.0) as i64 + 10_000;
    eprintln!("queue: phase 1, empty history");
    fill(&pool, per_phase).await?;
    let empty = phase(&queue, seconds).await?;
    report.real("claims_per_sec", empty, 0, "jobs/s")?;

    eprintln!("queue: adding {HISTORY} finished requests with their events");
    drain(&pool).await?;
    add_history(&pool, HISTORY).await?;
    fill(&pool, per_phase).await?;
    let with_history = phase(&queue, seconds).await?;
    report.real("claims_per_sec_with_history", with_history, 0, "jobs/s")?;
    report.real("history_ratio", with_history / empty, 3, "ratio")?;

    eprintln!("queue: phase 3, a snapshot held open for the whole phase");
    drain(&pool).await?;
    fill(&pool, per_phase).await?;
    let mut holder = pool.acquire().await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *holder)
        .await?;
    // The snapshot is taken by the first statement, not by BEGIN.
    sqlx::query("SELECT count(*) FROM requests.jobs")
        .execute(&mut *holder)
        .await?;
    let held = phase(&queue, seconds).await?;
    sqlx::query("ROLLBACK").execute(&mut *holder).await?;
    drop(holder);
    report.real("claims_per_sec_xmin_held", held, 0, "jobs/s")?;
    report.real("xmin_held_ratio", held / with_history, 3, "ratio")?;
    pool.close().await;
    Ok(())
}

/// A fresh migrated database with `uuidv7_bench()` for bulk inserts: a pool of
/// `connections` on it, and its URL.
pub(crate) async fn bench_database(connections: u32) -> anyhow::Result<(PgPool, String)> {
    let database = pg::test_database().await?;
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect(&database.url)
        .await?;
    appstack_common::db::migrate(&pool).await?;
    // Time-ordered ids for bulk inserts (PostgreSQL 15 has no uuidv7()): the millisecond
    // timestamp over a random UUID, version bits set to 7.
    sqlx::query(
        "CREATE FUNCTION uuidv7_bench() RETURNS uuid LANGUAGE sql VOLATILE AS $$
           SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                  PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                  FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
         $$",
    )
    .execute(&pool)
    .await?;
    Ok((pool, database.url))
}

/// Claims, "executes" (nothing) and completes for `seconds` on [`LOOPS`] loops; jobs/s.
async fn phase(queue: &Queue, seconds: Duration) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    let started = Instant::now();
    for n in 0..LOOPS {
        let (queue, done, stop) = (queue.clone(), Arc::clone(&done), Arc::clone(&stop));
        loops.push(tokio::spawn(async move {
            let worker = format!("bench-{n}");
            // As the worker claims: from its watermark.
            let mut watermark = ClaimWatermark::default();
            while !stop.load(Ordering::Relaxed) {
                let ready_from = watermark.start(tokio::time::Instant::now());
                let filter = ClaimFilter {
                    ready_from,
                    ..ClaimFilter::default()
                };
                let jobs = queue.claim(&worker, &filter, BATCH, LEASE).await?;
                watermark.claimed(
                    ready_from,
                    BATCH as usize,
                    jobs.iter().map(|job| job.run_at),
                    tokio::time::Instant::now(),
                );
                if jobs.is_empty() {
                    if ready_from.is_some() {
                        // Nothing from the watermark on: the next claim reads from the oldest.
                        continue;
                    }
                    anyhow::bail!("the queue ran dry: raise the fill");
                }
                let batch: Vec<Completion> = jobs
                    .iter()
                    .map(|job| Completion {
                        request_id: job.request_id,
                        claim: job.claim,
                        ordering_key: None,
                        action: CompletionAction::Finish(Finish::Succeeded("{}".into())),
                    })
                    .collect();
                queue.complete(&batch).await?;
                done.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for task in loops {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// Inserts `count` queued requests of kind `echo` with their jobs and first events, as if
/// submitted 100 µs apart (10,000 a second) until now (the database must have
/// `uuidv7_bench()`, see [`bench_database`]).
pub(crate) async fn fill(pool: &PgPool, count: i64) -> anyhow::Result<()> {
    sqlx::query(
        "WITH r AS (
            INSERT INTO requests.requests (id, owner, kind, mode, status, payload, last_sequence,
                                           created_at, updated_at)
            SELECT uuidv7_bench(), 'bench', 'echo', 'async', 'queued', '{\"n\":1}', 1,
                   now() - ($1 - g) * interval '100 microseconds', now()
            FROM generate_series(1, $1) AS g
            RETURNING id, created_at
        ), j AS (
            INSERT INTO requests.jobs (request_id, kind, mode, state, run_at)
            SELECT id, 'echo', 'async', 'queued', created_at FROM r
        )
        INSERT INTO requests.events (request_id, sequence, to_status, at)
        SELECT id, 1, 'queued', created_at FROM r",
    )
    .bind(count)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE requests.jobs").execute(pool).await?;
    Ok(())
}

/// Waits until the jobs table is empty (every request finished), counting it every
/// `every` (a count of a table being emptied is not free: keep it coarse where it competes).
///
/// # Errors
///
/// When jobs are still live after `within`.
pub(crate) async fn until_drained(
    pool: &PgPool,
    within: Duration,
    every: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM requests.jobs")
            .fetch_one(pool)
            .await?;
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{left} requests still live after {within:?}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Finishes whatever is left in the jobs table (so phases start alike).
async fn drain(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM requests.jobs")
        .execute(pool)
        .await?;
    sqlx::query("UPDATE requests.requests SET status = 'cancelled', finished_at = now() WHERE finished_at IS NULL")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE requests.jobs")
        .execute(pool)
        .await?;
    Ok(())
}

/// Adds `count` succeeded requests with three events each, then vacuums and analyzes.
async fn add_history(pool: &PgPool, count: i64) -> anyhow::Result<()> {
    let chunk = 100_000;
    let mut added = 0;
    while added < count {
        let n = chunk.min(count - added);
        sqlx::query(
            "WITH r AS (
                INSERT INTO requests.requests (id, owner, kind, mode, status, payload, result,
                                               attempts, last_sequence, created_at, updated_at,
                                               finished_at)
                SELECT uuidv7_bench(), 'history-' || (g % 1000), 'echo', 'async', 'succeeded',
                       '{\"n\":1}', '{\"ok\":true}', 1, 3, now(), now(), now()
                FROM generate_series(1, $1) g
                RETURNING id, created_at
            )
            INSERT INTO requests.events (request_id, sequence, from_status, to_status, attempt, at)
            SELECT id, s, (ARRAY[NULL, 'queued', 'running'])[s], (ARRAY['queued', 'running', 'succeeded'])[s], s - 1, created_at
            FROM r, generate_series(1, 3) s",
        )
        .bind(n)
        .execute(pool)
        .await?;
        added += n;
    }
    sqlx::query("VACUUM ANALYZE").execute(pool).await?;
    Ok(())
}
