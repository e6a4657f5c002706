//! The PostgreSQL queue against a real server: every transition the store performs, the
//! idempotency, fencing, cancel, ordering-key, deadline, rescue, requeue and purge rules.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_queue::JobState;
use appstack_queue::decide::{Backoff, RetryPolicy};
use appstack_queue::store::{
    CancelOutcome, ClaimFilter, ClaimedJob, Completion, CompletionAction, Failure, Finish,
    GetBatcher, ListFilter, NewRequest, Queue, Reschedule, SubmitBatcher, SubmitOutcome, Viewer,
};
use appstack_tests::pg;
use appstack_trace::TraceCarrier;
use chrono::Utc;
use sqlx::postgres::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

async fn queue() -> Queue {
    let database = pg::test_database().await.unwrap();
    let pool = PgPool::connect(&database.url).await.unwrap();
    appstack_common::db::migrate(&pool).await.unwrap();
    Queue::new(pool)
}

fn new<'a>(owner: &'a str, payload: &'a str) -> NewRequest<'a> {
    NewRequest {
        owner,
        kind: "echo",
        payload,
        idempotency_key: None,
        ordering_key: None,
        deadline: None,
        trace: None,
    }
}

fn created<T>(outcome: SubmitOutcome<T>) -> T {
    match outcome {
        SubmitOutcome::Created(record) => record,
        other => panic!("expected a new request, got {}", kind_of(&other)),
    }
}

fn kind_of<T>(outcome: &SubmitOutcome<T>) -> &'static str {
    match outcome {
        SubmitOutcome::Created(_) => "created",
        SubmitOutcome::Replayed(_) => "replayed",
        SubmitOutcome::KeyReused(_) => "key reused",
    }
}

/// Of duplicate submits: how many created a request, and how many distinct requests they
/// name (replays included); a "key reused" answer fails the test.
async fn created_and_distinct(
    tasks: Vec<tokio::task::JoinHandle<SubmitOutcome<appstack_queue::store::RequestRecord>>>,
) -> (usize, usize) {
    let (mut created_count, mut ids) = (0, std::collections::HashSet::new());
    for task in tasks {
        match task.await.unwrap() {
            SubmitOutcome::Created(r) => {
                created_count += 1;
                ids.insert(r.id);
            }
            SubmitOutcome::Replayed(r) => {
                ids.insert(r.id);
            }
            SubmitOutcome::KeyReused(_) => panic!("same payload reported as different"),
        }
    }
    (created_count, ids.len())
}

async fn claim(queue: &Queue, limit: u32) -> Vec<ClaimedJob> {
    queue
        .claim("w1", &ClaimFilter::default(), limit, LEASE)
        .await
        .unwrap()
}

fn done(job: &ClaimedJob, action: CompletionAction) -> Completion {
    Completion {
        request_id: job.request_id,
        claim: job.claim,
        ordering_key: job.ordering_key.clone(),
        action,
    }
}

fn failure(reason: &str) -> Failure {
    Failure {
        reason: reason.into(),
        message: format!("{reason} happened"),
        retryable: true,
    }
}

fn policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            multiplier: 1.0,
        },
        bulkhead_wait: Duration::from_millis(10),
    }
}

async fn status(queue: &Queue, id: Uuid) -> JobState {
    queue.get(id, Viewer::Admin).await.unwrap().unwrap().status
}

async fn job_rows(queue: &Queue) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM requests.jobs")
        .fetch_one(queue.pool())
        .await
        .unwrap()
}

/// Expires every running lease now, as if the workers had died.
async fn expire_leases(queue: &Queue) {
    sqlx::query("UPDATE requests.jobs SET lease_until = now() - interval '1 second' WHERE state = 'running'")
        .execute(queue.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_goes_queued_running_succeeded_with_its_events_and_leaves_the_jobs_table() {
    let queue = queue().await;
    let record = created(
        queue
            .submit_async(&new("alice", r#"{"b": 1, "a": [true]}"#))
            .await
            .unwrap(),
    );
    assert_eq!(record.status, JobState::Queued);
    assert_eq!(
        record.payload, r#"{"a": [true], "b": 1}"#,
        "stored as JSONB"
    );
    let jobs = claim(&queue, 10).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].attempt, jobs[0].claim), (1, 1));
    assert_eq!(status(&queue, record.id).await, JobState::Running);
    assert!(
        claim(&queue, 10).await.is_empty(),
        "a running job is not claimed twice"
    );

    let report = queue
        .complete(&[done(
            &jobs[0],
            CompletionAction::Finish(Finish::Succeeded(r#"{"ok":true}"#.into())),
        )])
        .await
        .unwrap();
    assert_eq!(report.applied, vec![record.id]);
    let finished = queue
        .get(record.id, Viewer::Owner("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.status, JobState::Succeeded);
    assert_eq!(finished.result.as_deref(), Some(r#"{"ok": true}"#));
    assert_eq!(finished.attempts, 1);
    assert_eq!(
        job_rows(&queue).await,
        0,
        "finished work leaves the hot table"
    );

    let events = queue.events_after(record.id, 0, 100).await.unwrap();
    let path: Vec<_> = events.iter().map(|e| (e.sequence, e.from, e.to)).collect();
    assert_eq!(
        path,
        vec![
            (1, None, JobState::Queued),
            (2, Some(JobState::Queued), JobState::Running),
            (3, Some(JobState::Running), JobState::Succeeded),
        ]
    );
    assert_eq!(finished.last_sequence, 3);
    assert_eq!(
        queue.events_after(record.id, 2, 100).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn concurrent_duplicates_with_one_key_make_one_request() {
    let queue = queue().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            // The same document spelt differently is the same payload.
            let payload = if i % 2 == 0 {
                r#"{"n":1,"m":2}"#
            } else {
                r#"{ "m": 2, "n": 1 }"#
            };
            let request = NewRequest {
                idempotency_key: Some("key-1"),
                ..new("bob", payload)
            };
            queue.submit_async(&request).await.unwrap()
        }));
    }
    assert_eq!(created_and_distinct(tasks).await, (1, 1));
    assert_eq!(job_rows(&queue).await, 1);

    let other_payload = NewRequest {
        idempotency_key: Some("key-1"),
        ..new("bob", r#"{"n":2}"#)
    };
    assert!(matches!(
        queue.submit_async(&other_payload).await.unwrap(),
        SubmitOutcome::KeyReused(_)
    ));
    let other_kind = NewRequest {
        kind: "other",
        idempotency_key: Some("key-1"),
        ..new("bob", r#"{"n":1,"m":2}"#)
    };
    assert!(matches!(
        queue.submit_async(&other_kind).await.unwrap(),
        SubmitOutcome::KeyReused(_)
    ));
    // Keys belong to their owner.
    let carol = NewRequest {
        idempotency_key: Some("key-1"),
        ..new("carol", r#"{"n":2}"#)
    };
    assert!(matches!(
        queue.submit_async(&carol).await.unwrap(),
        SubmitOutcome::Created(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_submits_each_get_their_own_request_job_and_event() {
    let queue = queue().await;
    let batcher = SubmitBatcher::spawn(queue.clone());
    let mut tasks = Vec::new();
    for i in 0..300 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            // Spelt as JSONB prints it back.
            let payload = format!(r#"{{"n": {i}}}"#);
            let record = created(batcher.submit_async(&new("bob", &payload)).await.unwrap());
            assert_eq!(record.payload, payload);
            assert_eq!(record.status, JobState::Queued);
            record.id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 300);
    assert_eq!(job_rows(&queue).await, 300);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM requests.events WHERE sequence = 1 AND to_status = 'queued'",
    )
    .fetch_one(queue.pool())
    .await
    .unwrap();
    assert_eq!(events, 300);
    // Grouped: fewer statements than submits (PostgreSQL counts the commits).
    let batches: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text::bigint) FROM requests.requests")
            .fetch_one(queue.pool())
            .await
            .unwrap();
    assert!(batches < 300, "{batches} transactions for 300 submits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_duplicates_with_one_key_make_one_request() {
    let queue = queue().await;
    let batcher = SubmitBatcher::spawn(queue.clone());
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            let request = NewRequest {
                idempotency_key: Some("key-1"),
                ..new("bob", r#"{"n":1}"#)
            };
            batcher.submit_async(&request).await.unwrap()
        }));
    }
    assert_eq!(created_and_distinct(tasks).await, (1, 1));
    assert_eq!(job_rows(&queue).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_fails_alone_in_its_group() {
    let queue = queue().await;
    let batcher = SubmitBatcher::spawn(queue.clone());
    let mut tasks = Vec::new();
    for i in 0..60 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            // PostgreSQL's text cannot hold NUL: the whole statement fails on this row.
            let owner = if i % 20 == 7 {
                "bad\0owner".to_owned()
            } else {
                "bob".to_owned()
            };
            let outcome = batcher.submit_async(&new(&owner, r#"{"n":1}"#)).await;
            (owner.contains('\0'), outcome.is_ok())
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    for (bad, ok) in &answers {
        assert_eq!(*ok, !*bad, "a bad row must fail and only it");
    }
    assert_eq!(job_rows(&queue).await, 57);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_gets_show_each_caller_only_their_own_requests() {
    let queue = queue().await;
    let bob = created(queue.submit_async(&new("bob", r#"{"n":1}"#)).await.unwrap());
    let ann = created(queue.submit_async(&new("ann", r#"{"n":2}"#)).await.unwrap());
    let gets = GetBatcher::spawn(queue.clone());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let gets = gets.clone();
        let (bob, ann) = (bob.id, ann.id);
        tasks.push(tokio::spawn(async move {
            let id = if i % 2 == 0 { bob } else { ann };
            let missing = Uuid::now_v7();
            let as_bob = gets.get(id, Viewer::Owner("bob")).await.unwrap();
            let as_admin = gets.get(id, Viewer::Admin).await.unwrap();
            let unknown = gets.get(missing, Viewer::Admin).await.unwrap();
            (
                id == bob,
                as_bob.map(|r| r.id),
                as_admin.map(|r| r.id),
                unknown,
            )
        }));
    }
    for task in tasks {
        let (is_bobs, as_bob, as_admin, unknown) = task.await.unwrap();
        let id = if is_bobs { bob.id } else { ann.id };
        assert_eq!(
            as_bob,
            is_bobs.then_some(id),
            "bob sees his own and only his"
        );
        assert_eq!(as_admin, Some(id), "an admin sees every request");
        assert!(unknown.is_none());
    }
    let record = gets
        .get(bob.id, Viewer::Owner("bob"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record,
        queue
            .get(bob.id, Viewer::Owner("bob"))
            .await
            .unwrap()
            .unwrap()
    );
}

#[tokio::test]
async fn a_claim_from_a_watermark_skips_older_jobs_which_a_full_read_takes() {
    let queue = queue().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let payload = format!(r#"{{"n":{n}}}"#);
        ids.push(created(queue.submit_async(&new("bob", &payload)).await.unwrap()).id);
        // Distinct `run_at`s: each submit's transaction starts later.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let run_at: chrono::DateTime<Utc> =
        sqlx::query_scalar("SELECT run_at FROM requests.jobs WHERE request_id = $1")
            .bind(ids[1])
            .fetch_one(queue.pool())
            .await
            .unwrap();
    let from = ClaimFilter {
        ready_from: Some(run_at),
        ..ClaimFilter::default()
    };
    let bounded = queue.claim("w1", &from, 10, LEASE).await.unwrap();
    let mut got: Vec<Uuid> = bounded.iter().map(|j| j.request_id).collect();
    got.sort();
    assert_eq!(got, vec![ids[1], ids[2]]);
    assert!(bounded.iter().all(|j| j.run_at >= run_at));
    let full = claim(&queue, 10).await;
    assert_eq!(
        full.iter().map(|j| j.request_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
}

#[tokio::test]
async fn retries_keep_the_attempt_postpones_and_releases_give_it_back() {
    let queue = queue().await;
    let record = created(queue.submit_async(&new("alice", "{}")).await.unwrap());
    let past = Utc::now() - chrono::Duration::seconds(1);

    let job = claim(&queue, 1).await.remove(0);
    queue
        .complete(&[done(
            &job,
            CompletionAction::Reschedule(Reschedule::RetryAt {
                at: past,
                failure: failure("http_503"),
            }),
        )])
        .await
        .unwrap();
    let after_retry = queue.get(record.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(
        (after_retry.status, after_retry.attempts),
        (JobState::Scheduled, 1)
    );
    assert_eq!(after_retry.last_failure.unwrap().reason, "http_503");

    let job = claim(&queue, 1).await.remove(0);
    assert_eq!(job.attempt, 2);
    queue
        .complete(&[done(
            &job,
            CompletionAction::Reschedule(Reschedule::PostponeUntil {
                at: past,
                reason: "circuit_open".into(),
            }),
        )])
        .await
        .unwrap();
    let after_postpone = queue.get(record.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(
        (after_postpone.status, after_postpone.attempts),
        (JobState::Scheduled, 1)
    );

    let job = claim(&queue, 1).await.remove(0);
    assert_eq!(job.attempt, 2, "the postponed attempt was given back");
    queue
        .complete(&[done(
            &job,
            CompletionAction::Reschedule(Reschedule::Release),
        )])
        .await
        .unwrap();
    assert_eq!(status(&queue, record.id).await, JobState::Queued);
    let job = claim(&queue, 1).await.remove(0);
    assert_eq!(job.attempt, 2, "the released attempt was given back");
    assert_eq!(job.claim, 4, "every claim counts for fencing");

    // A job scheduled in the future is not claimed before its time.
    let future = Utc::now() + chrono::Duration::seconds(60);
    queue
        .complete(&[done(
            &job,
            CompletionAction::Reschedule(Reschedule::RetryAt {
                at: future,
                failure: failure("timeout"),
            }),
        )])
        .await
        .unwrap();
    assert!(claim(&queue, 1).await.is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_rescued_and_the_old_claim_cannot_complete() {
    let queue = queue().await;
    let record = created(queue.submit_async(&new("alice", "{}")).await.unwrap());
    let first = claim(&queue, 1).await.remove(0);
    expire_leases(&queue).await;
    let rescued = queue.rescue_expired(100, &|_| policy(3)).await.unwrap();
    assert_eq!(rescued.requeued, 1);
    assert_eq!(status(&queue, record.id).await, JobState::Queued);

    let second = claim(&queue, 1).await.remove(0);
    assert_eq!(second.attempt, 2, "the expired attempt stays spent");
    // The first worker comes back to life and reports: fenced off.
    let stale = queue
        .complete(&[done(
            &first,
            CompletionAction::Finish(Finish::Succeeded("{}".into())),
        )])
        .await
        .unwrap();
    assert_eq!(stale.stale, vec![record.id]);
    assert_eq!(status(&queue, record.id).await, JobState::Running);
    let beat = queue
        .heartbeat(
            &[
                (first.request_id, first.claim),
                (second.request_id, second.claim),
            ],
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(beat.extended, vec![record.id]);
    assert_eq!(
        beat.lost.len(),
        0,
        "the same request id is held under the new claim"
    );
    let beat = queue
        .heartbeat(&[(first.request_id, first.claim)], LEASE)
        .await
        .unwrap();
    assert_eq!(beat.lost, vec![record.id]);

    // The last attempt's lease expiring gives the job up.
    expire_leases(&queue).await;
    let rescued = queue.rescue_expired(100, &|_| policy(2)).await.unwrap();
    assert_eq!(rescued.dead, 1);
    let dead = queue.get(record.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(dead.status, JobState::Dead);
    assert_eq!(dead.last_failure.unwrap().reason, "lease_expired");
    assert_eq!(job_rows(&queue).await, 0);
}

#[tokio::test]
async fn a_sync_request_whose_process_died_fails_as_abandoned() {
    let queue = queue().await;
    let (record, job) = created(
        queue
            .submit_sync(&new("alice", "{}"), "main-1", LEASE)
            .await
            .unwrap(),
    );
    assert_eq!(
        (record.status, record.attempts, job.attempt),
        (JobState::Running, 1, 1)
    );
    assert!(
        claim(&queue, 10).await.is_empty(),
        "workers never take a SYNC request"
    );
    expire_leases(&queue).await;
    let rescued = queue.rescue_expired(100, &|_| policy(3)).await.unwrap();
    assert_eq!(rescued.abandoned, 1);
    let failed = queue.get(record.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(failed.status, JobState::Failed);
    assert_eq!(failed.last_failure.unwrap().reason, "abandoned");

    // A live SYNC request records its own outcome.
    let (record, job) = created(
        queue
            .submit_sync(&new("alice", r#"{"x":1}"#), "main-1", LEASE)
            .await
            .unwrap(),
    );
    queue
        .complete(&[done(
            &job,
            CompletionAction::Finish(Finish::Failed(failure("http_500"))),
        )])
        .await
        .unwrap();
    assert_eq!(status(&queue, record.id).await, JobState::Failed);
}

#[tokio::test]
async fn cancel_is_immediate_and_a_running_outcome_is_discarded() {
    let queue = queue().await;
    let waiting = created(
        queue
            .submit_async(&new("alice", r#"{"n":1}"#))
            .await
            .unwrap(),
    );
    assert!(matches!(
        queue
            .cancel(waiting.id, Viewer::Owner("mallory"))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    ));
    let CancelOutcome::Cancelled(cancelled) = queue
        .cancel(waiting.id, Viewer::Owner("alice"))
        .await
        .unwrap()
    else {
        panic!("not cancelled")
    };
    assert_eq!(cancelled.status, JobState::Cancelled);
    assert_eq!(job_rows(&queue).await, 0);
    assert!(matches!(
        queue
            .cancel(waiting.id, Viewer::Owner("alice"))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinished(_)
    ));

    let running = created(
        queue
            .submit_async(&new("alice", r#"{"n":2}"#))
            .await
            .unwrap(),
    );
    let job = claim(&queue, 1).await.remove(0);
    let CancelOutcome::Cancelled(cancelled) =
        queue.cancel(running.id, Viewer::Admin).await.unwrap()
    else {
        panic!("not cancelled")
    };
    assert_eq!(cancelled.status, JobState::Cancelled);
    let beat = queue
        .heartbeat(&[(job.request_id, job.claim)], LEASE)
        .await
        .unwrap();
    assert_eq!(beat.cancelled, vec![running.id], "the worker learns of it");
    queue
        .complete(&[done(
            &job,
            CompletionAction::Finish(Finish::Succeeded(r#"{"late":true}"#.into())),
        )])
        .await
        .unwrap();
    let after = queue.get(running.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(after.status, JobState::Cancelled);
    assert_eq!(after.result, None, "the late result is discarded");
    assert_eq!(job_rows(&queue).await, 0);
    let last = queue
        .events_after(running.id, 0, 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        (last.from, last.to),
        (Some(JobState::Running), JobState::Cancelled)
    );
}

#[tokio::test]
async fn requests_of_one_ordering_key_run_one_at_a_time_in_submit_order() {
    let queue = queue().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let payload = format!(r#"{{"i":{i}}}"#);
        let request = NewRequest {
            ordering_key: Some("acct-1"),
            ..new("alice", &payload)
        };
        ids.push(created(queue.submit_async(&request).await.unwrap()).id);
    }
    let other = NewRequest {
        ordering_key: Some("acct-2"),
        ..new("alice", r#"{"other":true}"#)
    };
    let other = created(queue.submit_async(&other).await.unwrap()).id;

    let jobs = claim(&queue, 10).await;
    let mut claimed: Vec<Uuid> = jobs.iter().map(|j| j.request_id).collect();
    claimed.sort();
    let mut expected = vec![ids[0], other];
    expected.sort();
    assert_eq!(claimed, expected, "one head per key, keys in parallel");
    let head = jobs.iter().find(|j| j.request_id == ids[0]).unwrap();
    assert_eq!(head.ordering_key.as_deref(), Some("acct-1"));

    // A retried head keeps its place: the next one still waits.
    let past = Utc::now() - chrono::Duration::seconds(1);
    queue
        .complete(&[done(
            head,
            CompletionAction::Reschedule(Reschedule::RetryAt {
                at: past,
                failure: failure("http_503"),
            }),
        )])
        .await
        .unwrap();
    let again = claim(&queue, 10).await;
    assert_eq!(
        again.iter().map(|j| j.request_id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    queue
        .complete(&[done(
            &again[0],
            CompletionAction::Finish(Finish::Succeeded("{}".into())),
        )])
        .await
        .unwrap();

    // A dead head passes the turn on too.
    let next = claim(&queue, 10).await;
    assert_eq!(
        next.iter().map(|j| j.request_id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    queue
        .complete(&[done(
            &next[0],
            CompletionAction::Finish(Finish::Dead(failure("http_400"))),
        )])
        .await
        .unwrap();
    let last = claim(&queue, 10).await;
    assert_eq!(
        last.iter().map(|j| j.request_id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
}

#[tokio::test]
async fn a_request_not_started_by_its_deadline_goes_dead_and_requeue_brings_it_back() {
    let queue = queue().await;
    let request = NewRequest {
        deadline: Some(Utc::now() - chrono::Duration::milliseconds(1)),
        ..new("alice", "{}")
    };
    let record = created(queue.submit_async(&request).await.unwrap());
    assert!(
        claim(&queue, 1).await.is_empty(),
        "past its deadline: not claimed"
    );
    assert_eq!(queue.expire_deadlines(100).await.unwrap(), 1);
    let dead = queue.get(record.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(dead.status, JobState::Dead);
    assert_eq!(dead.last_failure.unwrap().reason, "deadline_exceeded");

    let letters = queue.dead_letters(None, None, 10).await.unwrap();
    assert_eq!(letters.items.len(), 1);
    let stranger = Uuid::now_v7();
    let requeued = queue.requeue(&[record.id, stranger], None).await.unwrap();
    assert_eq!(requeued, vec![record.id]);
    let back = queue.get(record.id, Viewer::Admin).await.unwrap().unwrap();
    assert_eq!(
        (back.status, back.attempts, back.deadline),
        (JobState::Queued, 0, None)
    );
    assert_eq!(claim(&queue, 1).await.len(), 1);
}

#[tokio::test]
async fn list_pages_newest_first_per_owner_with_filters_and_purge_removes_old_history() {
    let queue = queue().await;
    let mut mine = Vec::new();
    for i in 0..7 {
        let payload = format!(r#"{{"i":{i}}}"#);
        mine.push(created(queue.submit_async(&new("alice", &payload)).await.unwrap()).id);
    }
    created(queue.submit_async(&new("bob", "{}")).await.unwrap());
    let mut seen = Vec::new();
    let mut filter = ListFilter::default();
    loop {
        let page = queue
            .list(Viewer::Owner("alice"), &filter, 3)
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next {
            Some(next) => filter.before = Some(next),
            None => break,
        }
    }
    mine.reverse();
    assert_eq!(seen, mine, "newest first, every one once, none of bob's");
    let all = queue
        .list(Viewer::Admin, &ListFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all.items.len(), 8);

    let job = claim(&queue, 1).await.remove(0);
    queue
        .complete(&[done(
            &job,
            CompletionAction::Finish(Finish::Succeeded("{}".into())),
        )])
        .await
        .unwrap();
    let succeeded = ListFilter {
        statuses: vec![JobState::Succeeded],
        ..ListFilter::default()
    };
    assert_eq!(
        queue
            .list(Viewer::Admin, &succeeded, 100)
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let stats = queue.stats(None, true).await.unwrap();
    let count = |state| {
        stats
            .counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum::<i64>()
    };
    assert_eq!(
        (count(JobState::Queued), count(JobState::Succeeded)),
        (7, 1)
    );
    assert!(stats.oldest_ready_age > Duration::ZERO);

    assert_eq!(
        queue
            .purge_finished(Duration::from_secs(3600), 100)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        queue
            .purge_finished(Duration::from_millis(10), 100)
            .await
            .unwrap(),
        1
    );
    assert!(
        queue
            .get(job.request_id, Viewer::Admin)
            .await
            .unwrap()
            .is_none()
    );
}

/// Scans of `jobs_leases` (the rescuer's index of running jobs) so far, as the statistics
/// collector has them: `queue`'s one connection flushes its counters first.
async fn lease_index_scans(queue: &Queue) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(queue.pool())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'jobs_leases'",
    )
    .fetch_one(queue.pool())
    .await
    .unwrap()
}

/// The planner trap of a queue table: statistics taken while nothing ran say the index of
/// running jobs is nearly empty, and a lookup of a batch's jobs "by id, still running" then
/// scans that index whole instead of the primary key — under an old snapshot, past every
/// finished job's entry. Heartbeats and completions must look jobs up by key whatever the
/// statistics say; the rescuer, which does want that index, shows the counter counts.
#[tokio::test]
async fn heartbeats_and_completions_find_their_jobs_by_key_whatever_the_statistics_say() {
    let database = pg::test_database().await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await
        .unwrap();
    appstack_common::db::migrate(&pool).await.unwrap();
    let queue = Queue::new(pool);
    // A backlog big enough that the planner reads indexes, not the whole table.
    for statement in [
        "INSERT INTO requests.requests (id, owner, kind, mode, status, payload, last_sequence,
                                        created_at, updated_at)
         SELECT gen_random_uuid(), 'alice', 'echo', 'async', 'queued', '{}', 1, now(), now()
         FROM generate_series(1, 20000)",
        "INSERT INTO requests.jobs (request_id, kind, mode, state, run_at)
         SELECT id, kind, 'async', 'queued', created_at FROM requests.requests",
        "ANALYZE requests.jobs",
    ] {
        sqlx::query(statement).execute(queue.pool()).await.unwrap();
    }
    let before = lease_index_scans(&queue).await;
    // Past the five executions after which PostgreSQL may switch to a generic plan.
    for _ in 0..8 {
        let jobs = claim(&queue, 16).await;
        assert_eq!(jobs.len(), 16);
        let held: Vec<(Uuid, i32)> = jobs.iter().map(|job| (job.request_id, job.claim)).collect();
        let report = queue.heartbeat(&held, LEASE).await.unwrap();
        assert_eq!(report.extended.len(), 16);
        let batch: Vec<Completion> = jobs
            .iter()
            .map(|job| {
                done(
                    job,
                    CompletionAction::Finish(Finish::Succeeded("{}".into())),
                )
            })
            .collect();
        assert_eq!(queue.complete(&batch).await.unwrap().applied.len(), 16);
    }
    assert_eq!(
        lease_index_scans(&queue).await,
        before,
        "a heartbeat or completion scanned the index of running jobs"
    );

    claim(&queue, 8).await;
    expire_leases(&queue).await;
    queue.rescue_expired(100, &|_| policy(3)).await.unwrap();
    assert!(
        lease_index_scans(&queue).await > before,
        "the rescuer's scan was not counted: the check above proves nothing"
    );
}

fn carrier(span: &str, state: &str) -> TraceCarrier {
    TraceCarrier {
        traceparent: format!("00-0af7651916cd43dd8448eb211c80319c-{span}-01"),
        tracestate: state.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_carries_the_trace_context_of_what_queued_it_by_every_path() {
    let queue = queue().await;
    let batcher = SubmitBatcher::spawn(queue.clone());
    let (single, grouped, ordered) = (
        carrier("00000000000000a1", "vendor=1"),
        carrier("00000000000000a2", ""),
        carrier("00000000000000a3", "a=1,b=2"),
    );
    let one = created(
        queue
            .submit_async(&NewRequest {
                trace: Some(&single),
                ..new("alice", r#"{"n":1}"#)
            })
            .await
            .unwrap(),
    );
    let two = created(
        batcher
            .submit_async(&NewRequest {
                trace: Some(&grouped),
                ..new("alice", r#"{"n":2}"#)
            })
            .await
            .unwrap(),
    );
    let three = created(
        queue
            .submit_async(&NewRequest {
                trace: Some(&ordered),
                ordering_key: Some("acct-1"),
                ..new("alice", r#"{"n":3}"#)
            })
            .await
            .unwrap(),
    );
    let untraced = created(
        queue
            .submit_async(&new("alice", r#"{"n":4}"#))
            .await
            .unwrap(),
    );
    let jobs = claim(&queue, 10).await;
    let trace_of = |id: Uuid| {
        jobs.iter()
            .find(|j| j.request_id == id)
            .unwrap()
            .trace
            .clone()
    };
    assert_eq!(trace_of(one.id), Some(single));
    assert_eq!(trace_of(two.id), Some(grouped));
    assert_eq!(trace_of(three.id), Some(ordered));
    assert_eq!(trace_of(untraced.id), None);

    // A requeued job continues the requeue's trace, not the dead submit's.
    let dead = jobs.iter().find(|j| j.request_id == one.id).unwrap();
    queue
        .complete(&[Completion {
            request_id: dead.request_id,
            claim: dead.claim,
            ordering_key: None,
            action: CompletionAction::Finish(Finish::Dead(Failure {
                reason: "test".into(),
                message: "made dead".into(),
                retryable: false,
            })),
        }])
        .await
        .unwrap();
    let requeue = carrier("00000000000000b1", "");
    assert_eq!(
        queue.requeue(&[one.id], Some(&requeue)).await.unwrap(),
        [one.id]
    );
    let again = claim(&queue, 10).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].trace, Some(requeue));

    // The column refuses what no propagator writes: the store's guard, not the only one.
    let refused = sqlx::query("UPDATE requests.jobs SET traceparent = repeat('0', 65)")
        .execute(queue.pool())
        .await;
    assert!(refused.is_err());
}
