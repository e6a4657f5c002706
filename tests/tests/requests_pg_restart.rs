//! PostgreSQL restarted under load: while it is down, calls fail fast with UNAVAILABLE (no
//! hang to the deadline); once it is back, service resumes within seconds and every
//! acknowledged request is there and ends succeeded.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appstack_localpg::{LocalPostgres, Options};
use appstack_proto::main::v1::{GetRequest, Mode, Status, SubmitRequest};
use appstack_tests::stack_server::StackServer;
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;
use tonic::Code;

/// What the load saw: acknowledged ids, and each failure's code and duration.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<String>,
    failures: Vec<(Code, Duration)>,
    last_success: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fails_calls_fast_and_loses_no_acknowledged_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pg");
    let postgres = LocalPostgres::start(Options::new(&data)).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&postgres.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE restart")
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let url = postgres.url("restart");
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

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = CancellationToken::new();
    let mut load = Vec::new();
    for lane in 0..4 {
        let (mut client, seen, stop) = (client.clone(), Arc::clone(&seen), stop.clone());
        load.push(tokio::spawn(async move {
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
                    Err(status) => seen.failures.push((status.code(), started.elapsed())),
                };
                record(&mut seen.lock().unwrap());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = seen.lock().unwrap().acknowledged.len();
    assert!(before > 0, "no submit succeeded before the restart");

    // Down for three seconds.
    postgres.stop().await.unwrap();
    let down_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let postgres = LocalPostgres::start(Options::new(&data)).await.unwrap();
    let up_at = Instant::now();
    // Service back within seconds.
    let deadline = up_at + Duration::from_secs(15);
    loop {
        if seen
            .lock()
            .unwrap()
            .last_success
            .is_some_and(|at| at > up_at)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no submit succeeded within 15 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_in = up_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    for lane in load {
        lane.await.unwrap();
    }
    let seen = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    assert!(
        !seen.failures.is_empty(),
        "no call failed while the database was down"
    );
    for (code, took) in &seen.failures {
        assert_eq!(
            *code,
            Code::Unavailable,
            "while down: {code:?} after {took:?}"
        );
        assert!(
            *took < Duration::from_millis(2500),
            "a call hung for {took:?} (deadline 3 s)"
        );
    }
    eprintln!(
        "restart: {} acknowledged, {} failed fast, down {:?}, back {recovered_in:?} after the start",
        seen.acknowledged.len(),
        seen.failures.len(),
        up_at - down_at
    );
    // Every acknowledged request is there and ends succeeded.
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
            assert!(Instant::now() < deadline, "{id} is {:?}", request.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stack.stop().await.unwrap();
    postgres.stop().await.unwrap();
}
