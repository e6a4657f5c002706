//! Requests under faults: an external outage (the breaker opens, jobs wait without spending
//! attempts, all succeed after recovery) and a SIGTERM drain (finish what fits in the
//! grace period, release the rest without spending attempts).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_proto::main::v1::{GetRequest, Mode, Status, SubmitRequest};
use appstack_simulator::FaultPlan;
use appstack_tests::stack_server::StackServer;

/// Submits `numbers` one after another; the ids acknowledged.
async fn submit_many(
    client: &mut appstack_tests::stack_server::Requests,
    numbers: std::ops::Range<usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in numbers {
        ids.push(
            client
                .submit(submit(n))
                .await
                .unwrap()
                .into_inner()
                .request
                .unwrap()
                .id,
        );
    }
    ids
}

fn submit(n: usize) -> SubmitRequest {
    SubmitRequest {
        kind: "echo".into(),
        payload: format!(r#"{{"n":{n}}}"#),
        idempotency_key: String::new(),
        mode: Mode::Async as i32,
        deadline: None,
    }
}

#[tokio::test]
async fn an_outage_opens_the_breaker_and_jobs_wait_without_spending_attempts() {
    let stack = StackServer::start_with(|c| {
        let breaker = &mut c
            .external_services
            .get_mut("sim-http")
            .unwrap()
            .resilience
            .circuit_breaker;
        breaker.window.size = 10;
        breaker.minimum_calls = 4;
        breaker.wait_in_open = Duration::from_millis(700);
        breaker.half_open_probes = 1;
    })
    .await
    .unwrap();
    let mut client = stack
        .requests(&stack.user_token("o@example.com").await.unwrap())
        .await
        .unwrap();
    stack
        .simulator
        .set_faults(FaultPlan {
            error_rate: 1.0,
            ..FaultPlan::default()
        })
        .unwrap();
    let ids = submit_many(&mut client, 0..40).await;
    // Three seconds of outage: the breaker opens after the first few calls and lets one
    // probe through every 700 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = stack.simulator.calls().stats().calls;
    assert!(
        during <= 20,
        "{during} calls reached the failing service; the breaker should stop them"
    );
    let (_, metrics) = stack.admin_get("/metrics").await.unwrap();
    assert!(
        metrics.contains(
            r#"resilience_breaker_transitions_total{breaker="sim-http",from="closed",to="open"}"#
        ),
        "{metrics}"
    );
    stack.simulator.set_faults(FaultPlan::default()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let request = client
                .get(GetRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            match Status::try_from(request.status).unwrap() {
                Status::Succeeded => {
                    // Only calls that reached the service cost an attempt.
                    assert!(request.attempts <= 3, "{request:?}");
                    break;
                }
                Status::Dead | Status::Failed | Status::Cancelled => panic!("{request:?}"),
                _ => {}
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} not done");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_drain_finishes_what_fits_in_the_grace_and_releases_the_rest_unspent() {
    // Grace 5 s, of which the worker keeps 2 s for its drain; executions take 4 s.
    let stack = StackServer::start_with(|c| {
        c.server.shutdown_grace = Duration::from_secs(5);
        let timeout = &mut c
            .external_services
            .get_mut("sim-http")
            .unwrap()
            .resilience
            .timeout;
        timeout.per_attempt = Duration::from_secs(10);
        timeout.overall = Duration::from_secs(20);
        c.worker.concurrency = 4;
        c.worker.claim_batch = 4;
    })
    .await
    .unwrap();
    let mut client = stack
        .requests(&stack.user_token("t@example.com").await.unwrap())
        .await
        .unwrap();
    stack
        .simulator
        .set_faults(FaultPlan {
            latency: appstack_simulator::faults::Latency {
                base: Duration::from_secs(4),
                jitter: Duration::ZERO,
            },
            ..FaultPlan::default()
        })
        .unwrap();
    submit_many(&mut client, 0..8).await;
    // Four are running (the worker's concurrency), four wait.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let url = stack.config.database.url.clone();
    stack.stop().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM requests.requests ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 8);
    for (status, attempts) in &rows {
        assert_eq!((status.as_str(), *attempts), ("queued", 0), "{rows:?}");
    }
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM requests.jobs WHERE state = 'running'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(running, 0, "nothing is left holding a lease");
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests.events WHERE detail LIKE 'released at shutdown%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(released, 4);
}
