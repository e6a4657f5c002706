//! `end-to-end`: submit → succeeded through the whole stack (auth, main and worker in one
//! process, the simulator at zero latency behind the route), in two phases:
//!
//! 1. as fast as 16 callers submit ASYNC requests: `completed_per_sec` (requests that
//!    succeeded during the phase) beside `submits_per_sec`;
//! 2. at half that rate, paced: the enqueue-to-start latency of every request of the phase
//!    (its `running` event minus its submit, both PostgreSQL's clock):
//!    `enqueue_to_start_p50_ms` (goal ≤ 5) and `enqueue_to_start_p99_ms` (goal ≤ 25).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_proto::main::v1::{Mode, SubmitRequest};
use appstack_tests::stack_server::StackServer;
use chrono::{DateTime, Utc};

use crate::measure::{Latencies, Report};

const CLIENTS: usize = 16;

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure(seconds))
}

/// The ASYNC `echo` submit number `n` (its payload differs per request).
pub(crate) fn submit(n: u64) -> SubmitRequest {
    SubmitRequest {
        kind: "echo".into(),
        payload: format!(r#"{{"n":{n}}}"#),
        idempotency_key: String::new(),
        mode: Mode::Async as i32,
        deadline: None,
    }
}

/// The whole stack in this process, sized for 16 callers and a worker that keeps up.
pub(crate) async fn start_stack() -> anyhow::Result<StackServer> {
    StackServer::start_with(|config| {
        config.log.filter = "warn".into();
        config.database.max_connections = 32;
        config.worker.concurrency = 128;
        config.worker.claim_batch = 64;
    })
    .await
}

async fn measure(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("end-to-end");
    let stack = start_stack().await?;
    let pool = sqlx::PgPool::connect(&stack.config.database.url).await?;
    let token = stack.user_token("bench@example.com").await?;
    let client = stack.requests(&token).await?;

    // Phase 1: as fast as the callers go.
    let phase_start: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    let submitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut callers = Vec::new();
    for lane in 0..CLIENTS as u64 {
        let (mut client, submitted, stop) =
            (client.clone(), Arc::clone(&submitted), Arc::clone(&stop));
        callers.push(tokio::spawn(async move {
            let mut n = lane << 32;
            while !stop.load(Ordering::Relaxed) {
                client.submit(submit(n)).await?;
                n += 1;
                submitted.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let phase_end: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    for caller in callers {
        caller
            .await?
            .map_err(|s| anyhow::anyhow!("a submit failed: {s}"))?;
    }
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests.requests WHERE status = 'succeeded' AND finished_at BETWEEN $1 AND $2",
    )
    .bind(phase_start)
    .bind(phase_end)
    .fetch_one(&pool)
    .await?;
    let completed_per_sec = completed as f64 / elapsed.as_secs_f64();
    report.real(
        "submits_per_sec",
        submitted.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        0,
        "requests/s",
    )?;
    report.real("completed_per_sec", completed_per_sec, 0, "requests/s")?;

    // Let the backlog drain before the paced phase.
    crate::queue::until_drained(&pool, Duration::from_secs(120), Duration::from_millis(50))
        .await
        .context("the backlog before the paced phase")?;

    // Phase 2: paced at half the completed rate.
    let rate = (completed_per_sec / 2.0).max(1.0);
    let paced_start: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + seconds;
    let mut inflight = tokio::task::JoinSet::new();
    let mut n = 1u64 << 40;
    while Instant::now() < until {
        ticks.tick().await;
        let mut client = client.clone();
        n += 1;
        let request = submit(n);
        inflight.spawn(async move { client.submit(request).await.map(drop) });
    }
    while let Some(result) = inflight.join_next().await {
        result?.map_err(|s| anyhow::anyhow!("a paced submit failed: {s}"))?;
    }
    crate::queue::until_drained(&pool, Duration::from_secs(60), Duration::from_millis(50))
        .await
        .context("the paced requests")?;
    let waits: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM e.at - r.created_at)::float8
         FROM requests.requests r JOIN requests.events e ON e.request_id = r.id AND e.sequence = 2
         WHERE r.created_at >= $1",
    )
    .bind(paced_start)
    .fetch_all(&pool)
    .await?;
    let mut latencies = Latencies::new()?;
    for wait in &waits {
        latencies.record(Duration::from_secs_f64(wait.max(0.0)));
    }
    report.real("paced_rate", rate, 0, "requests/s")?;
    report.count("paced_requests", waits.len() as u64, "requests")?;
    report.real(
        "enqueue_to_start_p50_ms",
        latencies.quantile_ms(0.5),
        2,
        "ms",
    )?;
    report.real(
        "enqueue_to_start_p99_ms",
        latencies.quantile_ms(0.99),
        2,
        "ms",
    )?;
    pool.close().await;
    stack.stop().await?;
    Ok(())
}
