//! `worker`: the burn-down of 20,000 queued requests through the real worker (in-process,
//! the `all` role's builders), each one an HTTP call to the simulator at zero latency:
//! `burn_down_per_sec`, from the first claim to the last outcome as the database stamped
//! them (and, beside it, with the stack's start-up counted). The requests are inserted by
//! SQL before the stack starts, so only claiming, calling and recording are measured.

use std::time::{Duration, Instant};

use appstack_tests::stack_server::StackServer;

use crate::measure::Report;

/// Requests burned down.
const REQUESTS: i64 = 20_000;

pub(crate) fn run() -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure())
}

async fn measure() -> anyhow::Result<()> {
    let report = Report::new("worker");
    let (pool, url) = crate::queue::bench_database(4).await?;
    crate::queue::fill(&pool, REQUESTS).await?;
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    eprintln!("worker: {REQUESTS} requests queued; starting the stack");
    let started = Instant::now();
    let stack = StackServer::start_with(move |config| {
        config.database.url = url;
        config.database.max_connections = 16;
        config.log.filter = "warn".into();
        config.worker.concurrency = 128;
        config.worker.claim_batch = 64;
    })
    .await?;
    // Coarse: the figure comes from the database's stamps.
    crate::queue::until_drained(&pool, Duration::from_secs(600), Duration::from_millis(100))
        .await?;
    let elapsed = started.elapsed();
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM requests.requests WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await?;
    let calls = stack.simulator.calls().stats().calls;
    // The worker's own time: from the first claim to the last outcome recorded, as the
    // database stamped them (the stack's start-up is not burn-down).
    let working: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM (SELECT max(finished_at) FROM requests.requests)
                                 - (SELECT min(at) FROM requests.events WHERE to_status = 'running'))::float8",
    )
    .fetch_one(&pool)
    .await?;
    report.real(
        "burn_down_per_sec",
        REQUESTS as f64 / working,
        0,
        "requests/s",
    )?;
    report.real(
        "burn_down_with_start_up_per_sec",
        REQUESTS as f64 / elapsed.as_secs_f64(),
        0,
        "requests/s",
    )?;
    report.count(
        "succeeded",
        u64::try_from(succeeded).unwrap_or(0),
        "requests",
    )?;
    report.count("external_calls", calls, "calls")?;
    stack.stop().await?;
    pool.close().await;
    Ok(())
}
