//! Database chaos under steady load, each for 20 s on a private PostgreSQL: the services'
//! connections terminated several times a second, then every free connection slot of the
//! server held by idle sessions. While it lasts, errors are fast and clear (UNAVAILABLE,
//! never INTERNAL); no acknowledged request is lost; throughput is back within seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appstack_localpg::{LocalPostgres, Options};
use appstack_proto::main::v1::{GetRequest, Mode, Status, SubmitRequest};
use appstack_tests::stack_server::{Requests, StackServer};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;
use tonic::Code;

const CHAOS: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Seen {
    acknowledged: Vec<String>,
    failures: Vec<(Code, Duration, String)>,
    last_success: Option<Instant>,
}

/// Submits from four lanes until `stop`.
fn steady_load(
    client: &Requests,
    seen: &Arc<Mutex<Seen>>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|lane| {
            let (mut client, seen, stop) = (client.clone(), Arc::clone(seen), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.is_cancelled() {
                    n += 1;
                    let mut request = tonic::Request::new(SubmitRequest {
                        kind: "echo".into(),
                        payload: format!(r#"{{"lane":{lane},"n":{n}}}"#),
                        idempotency_key: String::new(),
                        mode: Mode::Async as i32,
                        deadline: None,
                    });
                    request.set_timeout(Duration::from_secs(3));
                    let started = Instant::now();
                    let result = client.submit(request).await;
                    let record = |seen: &mut Seen| match result {
                        Ok(answer) => {
                            seen.acknowledged
                                .push(answer.into_inner().request.unwrap().id);
                            seen.last_success = Some(Instant::now());
                        }
                        Err(status) => seen.failures.push((
                            status.code(),
                            started.elapsed(),
                            status.message().to_owned(),
                        )),
                    };
                    record(&mut seen.lock().unwrap());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect()
}

/// Runs `chaos` for [`CHAOS`] under steady load, then checks the rules of the module docs.
async fn under_load<F, Fut>(name: &str, chaos: F)
where
    F: FnOnce(String, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let postgres = LocalPostgres::start(Options::new(dir.path().join("pg")))
        .await
        .unwrap();
    let mut admin = sqlx::PgConnection::connect(&postgres.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE chaos")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let url = postgres.url("chaos");
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
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let load = steady_load(&client, &seen, &stop);
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
    let deadline = calm_at + Duration::from_secs(10);
    loop {
        if seen
            .lock()
            .unwrap()
            .last_success
            .is_some_and(|at| at > calm_at)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no submit succeeded within 10 s after the chaos"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back_in = calm_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    for lane in load {
        lane.await.unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    eprintln!(
        "{name}: {} acknowledged, {} failed, back {back_in:?} after it ended",
        seen.acknowledged.len(),
        seen.failures.len()
    );
    for (code, took, message) in &seen.failures {
        assert_eq!(
            *code,
            Code::Unavailable,
            "{name}: {code:?} after {took:?}: {message}"
        );
        assert!(
            *took < Duration::from_millis(2500),
            "{name}: a call took {took:?}: {message}"
        );
    }
    let mut client = client;
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &seen.acknowledged {
        loop {
            let request = client
                .get(GetRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            if Status::try_from(request.status).unwrap() == Status::Succeeded {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {id} is {:?}",
                request.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
