//! PostgreSQL restarted under load: while it is down, calls fail fast with UNAVAILABLE (no
//! hang to the deadline); once it is back, service resumes within seconds and every
//! acknowledged request is there and ends succeeded.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use appstack_localpg::{LocalPostgres, Options};
use appstack_tests::stack_server::StackServer;
use appstack_tests::steady_load::{SubmitLoad, all_succeed, private_database};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_calls_fast_and_loses_no_acknowledged_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let (postgres, url) = private_database(&data, "restart").await.unwrap();
    let stack = StackServer::start_with(|c| {
        c.database.url = url.clone();
        c.database.acquire_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let client = stack
        .requests(&stack.user_token("pg@example.com").await.unwrap())
        .await
        .unwrap();

    let load = SubmitLoad::start(&client, 4, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        load.acknowledged() > 0,
        "no submit succeeded before the restart"
    );

    // Down for three seconds.
    postgres.stop().await.unwrap();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let postgres = LocalPostgres::start(Options::new(&data)).await.unwrap();
    let up_at = Instant::now();
    // Service back within seconds.
    let recovered_in = load
        .back_since(up_at, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("after the restart: {e}"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = load.finish().await.unwrap();
    assert!(
        !seen.failures.is_empty(),
        "no call failed while the database was down"
    );
    // Fast: well inside each call's 3 s deadline.
    seen.failures_were_fast_and_unavailable(Duration::from_millis(2500))
        .unwrap_or_else(|e| panic!("while down: {e}"));
    eprintln!(
        "restart: {} acknowledged, {} failed fast, down {:?}, back {recovered_in:?} after the start",
        seen.acknowledged.len(),
        seen.failures.len(),
        up_at - down_at
    );
    let mut client = client;
    all_succeed(&mut client, &seen.acknowledged, Duration::from_secs(60))
        .await
        .unwrap();
    stack.stop().await.unwrap();
    postgres.stop().await.unwrap();
}
