//! Database chaos under steady load, each for 20 s on a private PostgreSQL: the services'
//! connections terminated several times a second, then every free connection slot of the
//! server held by idle sessions. While it lasts, errors are fast and clear (UNAVAILABLE,
//! never INTERNAL); no acknowledged request is lost; throughput is back within seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use appstack_tests::stack_server::StackServer;
use appstack_tests::steady_load::{SubmitLoad, all_succeed, private_database};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

const CHAOS: Duration = Duration::from_secs(20);

/// Runs `chaos` for [`CHAOS`] under steady load, then checks the rules of the module docs.
async fn under_load<F, Fut>(name: &str, chaos: F)
where
    F: FnOnce(String, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let (postgres, url) = private_database(&dir.path().join("pg"), "chaos")
        .await
        .unwrap();
    let stack = StackServer::start_with(|c| {
        c.database.url = url.clone();
        c.database.max_connections = 10;
        c.database.acquire_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let client = stack
        .requests(&stack.user_token("chaos@example.com").await.unwrap())
        .await
        .unwrap();
    let load = SubmitLoad::start(&client, 4, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let chaos_stop = CancellationToken::new();
    let timer = {
        let chaos_stop = chaos_stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CHAOS).await;
            chaos_stop.cancel();
        })
    };
    chaos(postgres.url("postgres"), chaos_stop).await;
    timer.await.unwrap();
    let calm_at = Instant::now();
    let back_in = load
        .back_since(calm_at, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{name}: after the chaos: {e}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.finish().await.unwrap();
    eprintln!(
        "{name}: {} acknowledged, {} failed, back {back_in:?} after it ended",
        seen.acknowledged.len(),
        seen.failures.len()
    );
    seen.failures_were_fast_and_unavailable(Duration::from_millis(2500))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut client = client;
    all_succeed(&mut client, &seen.acknowledged, Duration::from_secs(60))
        .await
        .unwrap();
    stack.stop().await.unwrap();
    postgres.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_several_times_a_second_lose_nothing() {
    under_load("terminate", |admin_url, stop| async move {
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let mut terminated = 0i64;
        while !stop.is_cancelled() {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = 'chaos' AND pid <> pg_backend_pid()) t",
            )
            .fetch_one(&mut admin)
            .await
            .unwrap();
            terminated += n;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("terminate: {terminated} backends terminated");
        assert!(terminated > 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_free_connection_slot_held_loses_nothing() {
    under_load("slots", |admin_url, stop| async move {
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let (max, reserved, used): (i64, i64, i64) = sqlx::query_as(
            "SELECT current_setting('max_connections')::bigint,
                    current_setting('superuser_reserved_connections')::bigint,
                    (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        // The slots left for ordinary sessions, held by idle ones (as a superuser: the
        // reserved ones too, so nothing at all can connect).
        let mut held = Vec::new();
        for _ in 0..(max - used).max(0) {
            match sqlx::PgConnection::connect(&admin_url).await {
                Ok(conn) => held.push(conn),
                Err(_) => break,
            }
        }
        eprintln!(
            "slots: {} idle sessions hold every free slot (max {max}, reserved {reserved})",
            held.len()
        );
        stop.cancelled().await;
        for conn in held {
            let _ = conn.close().await;
        }
        let _ = admin.close().await;
    })
    .await;
}
