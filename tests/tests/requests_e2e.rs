//! Requests end to end through gRPC: auth, main and worker in one process, the external
//! services played by the simulator over real HTTP and gRPC on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_proto::main::v1::{
    CancelRequest, GetRequest, ListRequest, Mode, Request, Status, SubmitRequest, WatchRequest,
};
use appstack_proto::worker::v1::{ListDeadLettersRequest, QueueStatsRequest, RequeueRequest};
use appstack_simulator::FaultPlan;
use appstack_tests::stack_server::{Requests, StackServer};
use futures_util::StreamExt as _;
use tonic::Code;

fn submit(kind: &str, payload: &str, mode: Mode) -> SubmitRequest {
    SubmitRequest {
        kind: kind.into(),
        payload: payload.into(),
        idempotency_key: String::new(),
        mode: mode as i32,
        deadline: None,
    }
}

/// Polls Get until the request is in a terminal status (bounded).
async fn finished(client: &mut Requests, id: &str) -> Request {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let request = client
            .get(GetRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        let status = Status::try_from(request.status).unwrap();
        if matches!(
            status,
            Status::Succeeded | Status::Failed | Status::Dead | Status::Cancelled
        ) {
            return request;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "request {id} still {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits and returns the new request's id.
async fn submitted_id(client: &mut Requests, request: SubmitRequest) -> String {
    client
        .submit(request)
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id
}

/// Every HTTP call answered with `status`.
fn failing_with(status: u16) -> FaultPlan {
    let mut plan = FaultPlan {
        error_rate: 1.0,
        ..FaultPlan::default()
    };
    plan.error.http_status = status;
    plan
}

fn status_of(request: &Request) -> Status {
    Status::try_from(request.status).unwrap()
}

#[tokio::test]
async fn sync_and_async_requests_succeed_over_http_and_grpc_and_watch_sees_every_step() {
    let stack = StackServer::start().await.unwrap();
    let token = stack.user_token("alice@example.com").await.unwrap();
    let mut client = stack.requests(&token).await.unwrap();

    for kind in ["echo", "echo-grpc"] {
        let answer = client
            .submit(submit(kind, r#"{"hello":"sync"}"#, Mode::Sync))
            .await
            .unwrap()
            .into_inner();
        let request = answer.request.unwrap();
        assert_eq!(
            status_of(&request),
            Status::Succeeded,
            "{kind}: {request:?}"
        );
        let result: serde_json::Value = serde_json::from_str(&request.result).unwrap();
        assert_eq!(result["echo"]["hello"], "sync", "{kind}: {result}");
        assert_eq!(
            result["idempotencyKey"],
            request.id.as_str(),
            "the request id is the key"
        );
        assert_eq!(request.attempts, 1);
    }

    let answer = client
        .submit(submit("echo", r#"{"hello":"async"}"#, Mode::Async))
        .await
        .unwrap()
        .into_inner();
    let queued = answer.request.unwrap();
    assert!(!answer.replayed);
    assert_eq!(status_of(&queued), Status::Queued);
    let mut events = client
        .watch(WatchRequest {
            id: queued.id.clone(),
            after_sequence: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        seen.push((event.sequence, Status::try_from(event.to_status).unwrap()));
    }
    assert_eq!(
        seen,
        vec![
            (1, Status::Queued),
            (2, Status::Running),
            (3, Status::Succeeded)
        ],
        "the stream ends after the terminal event"
    );
    // Resuming after the last event seen returns what followed, and ends.
    let rest: Vec<_> = client
        .watch(WatchRequest {
            id: queued.id.clone(),
            after_sequence: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(rest.len(), 1);
    let done = finished(&mut client, &queued.id).await;
    assert!(done.result.contains("async"));
    let listed = client
        .list(ListRequest {
            page_size: 10,
            ..ListRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.requests.len(), 3);
    assert_eq!(listed.requests[0].id, queued.id, "newest first");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn permanent_failures_go_dead_retried_ones_succeed_and_a_dead_letter_can_be_requeued() {
    let stack = StackServer::start().await.unwrap();
    let token = stack.user_token("bob@example.com").await.unwrap();
    let mut client = stack.requests(&token).await.unwrap();

    // A 400 is permanent: dead after one attempt, with the reason.
    stack.simulator.set_faults(failing_with(400)).unwrap();
    let id = submitted_id(&mut client, submit("echo", r#"{"n":1}"#, Mode::Async)).await;
    let dead = finished(&mut client, &id).await;
    assert_eq!(status_of(&dead), Status::Dead);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_failure.as_ref().unwrap().reason, "http_400");
    assert!(!dead.last_failure.unwrap().retryable);

    // A 503 is retried (another job attempt after the backoff) until the service is back.
    stack.simulator.set_faults(failing_with(503)).unwrap();
    let retried = submitted_id(&mut client, submit("echo", r#"{"n":2}"#, Mode::Async)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stack.simulator.calls().calls_for(&retried) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no second attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.simulator.set_faults(FaultPlan::default()).unwrap();
    let succeeded = finished(&mut client, &retried).await;
    assert_eq!(status_of(&succeeded), Status::Succeeded, "{succeeded:?}");
    assert!(succeeded.attempts > 1);
    assert_eq!(succeeded.last_failure.unwrap().reason, "http_503");

    // An admin sees the dead letter and requeues it; it then succeeds.
    let admin_token = stack.admin_token("root@example.com").await.unwrap();
    let mut admin = stack.worker_admin(&admin_token).await.unwrap();
    let letters = admin
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(letters.dead_letters.len(), 1);
    assert_eq!(letters.dead_letters[0].request_id, id);
    assert_eq!(letters.dead_letters[0].reason, "http_400");
    let requeued = admin
        .requeue(RequeueRequest {
            request_ids: vec![id.clone(), retried.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(requeued.requeued, vec![id.clone()]);
    assert_eq!(requeued.skipped, vec![retried]);
    assert_eq!(
        status_of(&finished(&mut client, &id).await),
        Status::Succeeded
    );
    let stats = admin
        .queue_stats(QueueStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let succeeded = stats
        .states
        .iter()
        .find(|s| s.state == "succeeded")
        .unwrap();
    assert_eq!(succeeded.count, 2);
    // WorkerAdmin is for admins only.
    let mut user_admin = stack.worker_admin(&token).await.unwrap();
    let denied = user_admin
        .queue_stats(QueueStatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn cancel_before_and_during_execution() {
    let stack = StackServer::start().await.unwrap();
    let token = stack.user_token("carol@example.com").await.unwrap();
    let mut client = stack.requests(&token).await.unwrap();
    stack
        .simulator
        .set_faults(FaultPlan {
            latency: appstack_simulator::faults::Latency {
                base: Duration::from_millis(1500),
                jitter: Duration::ZERO,
            },
            ..FaultPlan::default()
        })
        .unwrap();
    // The first of an ordering key runs (slowly); the second waits behind it.
    let first = submitted_id(
        &mut client,
        submit("ordered", r#"{"account":"a1","n":1}"#, Mode::Async),
    )
    .await;
    let second = submitted_id(
        &mut client,
        submit("ordered", r#"{"account":"a1","n":2}"#, Mode::Async),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status_of(
        &client
            .get(GetRequest { id: first.clone() })
            .await
            .unwrap()
            .into_inner(),
    ) != Status::Running
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Waiting: cancelled at once, never executed.
    let cancelled = client
        .cancel(CancelRequest { id: second.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&cancelled), Status::Cancelled);
    // Running: cancelled at once; its late result is discarded.
    let cancelled = client
        .cancel(CancelRequest { id: first.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&cancelled), Status::Cancelled);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let after = client
        .get(GetRequest { id: first.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&after), Status::Cancelled);
    assert!(after.result.is_empty());
    assert_eq!(stack.simulator.calls().calls_for(&second), 0);
    let again = client
        .cancel(CancelRequest { id: first })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn callers_see_only_their_own_requests_and_duplicates_make_one_request() {
    let stack = StackServer::start().await.unwrap();
    let alice = stack
        .requests(&stack.user_token("a@example.com").await.unwrap())
        .await
        .unwrap();
    let mut bob = stack
        .requests(&stack.user_token("b@example.com").await.unwrap())
        .await
        .unwrap();

    let mut keyed = submit("echo", r#"{"n":1}"#, Mode::Async);
    keyed.idempotency_key = "order-17".into();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (mut client, request) = (alice.clone(), keyed.clone());
        tasks.push(tokio::spawn(async move {
            client.submit(request).await.unwrap().into_inner()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        if !answer.replayed {
            fresh += 1;
        }
        ids.insert(answer.request.unwrap().id);
    }
    assert_eq!(
        (fresh, ids.len()),
        (1, 1),
        "one request, every other answer a replay"
    );
    let id = ids.into_iter().next().unwrap();

    let mut other_payload = keyed.clone();
    other_payload.payload = r#"{"n":2}"#.into();
    let reused = alice.clone().submit(other_payload).await.unwrap_err();
    assert_eq!(reused.code(), Code::FailedPrecondition);

    // Bob cannot see, cancel or watch Alice's request: NOT_FOUND, not PERMISSION_DENIED.
    assert_eq!(
        bob.get(GetRequest { id: id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        bob.cancel(CancelRequest { id: id.clone() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_eq!(
        bob.watch(WatchRequest {
            id: id.clone(),
            after_sequence: 0
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
    assert!(
        bob.list(ListRequest::default())
            .await
            .unwrap()
            .into_inner()
            .requests
            .is_empty()
    );
    // The same key is Bob's own.
    assert!(!bob.submit(keyed).await.unwrap().into_inner().replayed);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_its_exact_code() {
    let stack = StackServer::start_with(|c| {
        c.requests.max_payload_bytes = 1024;
    })
    .await
    .unwrap();
    let mut client = stack
        .requests(&stack.user_token("d@example.com").await.unwrap())
        .await
        .unwrap();
    let field_of = |status: &tonic::Status| {
        let details = tonic_types::StatusExt::get_error_details(status);
        details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| v.field.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let cases: Vec<(SubmitRequest, &str)> = vec![
        (submit("nope", "{}", Mode::Async), "kind"),
        (submit("echo", "[1,2]", Mode::Async), "payload"),
        (submit("echo", "{", Mode::Async), "payload"),
        (
            submit(
                "echo",
                &format!(r#"{{"x":"{}"}}"#, "a".repeat(2000)),
                Mode::Async,
            ),
            "payload",
        ),
        (submit("echo", "{}", Mode::Unspecified), "mode"),
        (
            submit("ordered", r#"{"no_account":1}"#, Mode::Async),
            "payload",
        ),
        (submit("ordered", r#"{"account":"a"}"#, Mode::Sync), "mode"),
        (
            SubmitRequest {
                idempotency_key: "k".repeat(201),
                ..submit("echo", "{}", Mode::Async)
            },
            "idempotency_key",
        ),
        (
            SubmitRequest {
                deadline: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..submit("echo", "{}", Mode::Async)
            },
            "deadline",
        ),
    ];
    for (request, field) in cases {
        let status = client.submit(request.clone()).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert_eq!(
            field_of(&status),
            vec![field.to_owned()],
            "{request:?}: {status:?}"
        );
    }
    let bad_token = client
        .list(ListRequest {
            page_token: "garbage".into(),
            ..ListRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad_token.code(), field_of(&bad_token)),
        (Code::InvalidArgument, vec!["page_token".to_owned()])
    );
    let bad_id = client
        .get(GetRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(bad_id.code(), Code::InvalidArgument);
    let unknown = client
        .get(GetRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn submits_beyond_the_callers_rate_are_refused_with_retry_info() {
    let stack = StackServer::start_with(|c| {
        c.requests.submit_rate.insert(
            "default".into(),
            appstack_config::RateLimitConfig {
                per_second: 1,
                burst: 2,
            },
        );
    })
    .await
    .unwrap();
    let mut client = stack
        .requests(&stack.user_token("e@example.com").await.unwrap())
        .await
        .unwrap();
    for _ in 0..2 {
        client
            .submit(submit("echo", "{}", Mode::Async))
            .await
            .unwrap();
    }
    let refused = client
        .submit(submit("echo", "{}", Mode::Async))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let details = tonic_types::StatusExt::get_error_details(&refused);
    let delay = details.retry_info().and_then(|r| r.retry_delay).unwrap();
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(1),
        "{delay:?}"
    );
    // Another caller has a bucket of its own.
    let mut other = stack
        .requests(&stack.user_token("f@example.com").await.unwrap())
        .await
        .unwrap();
    other
        .submit(submit("echo", "{}", Mode::Async))
        .await
        .unwrap();
    stack.stop().await.unwrap();
}
