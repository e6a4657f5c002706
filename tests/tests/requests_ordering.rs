//! Ordering keys across processes: 20 keys × 100 requests over two `appstack worker`
//! processes, with random latency and one worker SIGKILLed midway. Per key, the executions
//! start in submit order and never overlap; different keys run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use appstack_queue::store::{NewRequest, SubmitOutcome};
use appstack_tests::processes::{QueueFixture, spawn_worker, worker_config};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// One execution: the request's place in its key's submit order, its start and its end.
type Execution = (usize, DateTime<Utc>, DateTime<Utc>);

const KEYS: usize = 20;
const PER_KEY: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_executions_run_in_submit_order_never_two_at_once_across_a_kill() {
    let fixture = QueueFixture::start(Duration::from_millis(1), Duration::from_millis(9))
        .await
        .unwrap();
    let (queue, simulator) = (&fixture.queue, &fixture.simulator);
    let pool = queue.pool().clone();
    // Submitted interleaved across keys, so submit order within a key is not id order by
    // accident of batching.
    let mut order: BTreeMap<Uuid, (usize, usize)> = BTreeMap::new();
    for n in 0..PER_KEY {
        for key in 0..KEYS {
            let payload = format!(r#"{{"account":"acct-{key}","n":{n}}}"#);
            let account = format!("acct-{key}");
            let outcome = queue
                .submit_async(&NewRequest {
                    owner: "orderly",
                    kind: "ordered",
                    payload: &payload,
                    idempotency_key: None,
                    ordering_key: Some(&account),
                    deadline: None,
                    trace: None,
                })
                .await
                .unwrap();
            let SubmitOutcome::Created(record) = outcome else {
                panic!()
            };
            order.insert(record.id, (key, n));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(dir.path(), &fixture.database_url, simulator, 16).unwrap();
    let _steady = spawn_worker(&config).unwrap();
    let mut victim = spawn_worker(&config).unwrap();
    let total = KEYS * PER_KEY;
    let mut killed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM requests.requests WHERE finished_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if done as usize == total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {total} finished"
        );
        if !killed && done as usize > total / 3 {
            victim.start_kill().unwrap();
            victim.wait().await.unwrap();
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(killed, "finished before the kill");

    // Every execution of every request: from its `running` event to the next event.
    let events: Vec<(Uuid, i32, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT request_id, sequence, to_status, at FROM requests.events ORDER BY request_id, sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut runs: BTreeMap<usize, Vec<Execution>> = BTreeMap::new();
    for pair in events.windows(2) {
        let (id, _, status, start) = &pair[0];
        let (next_id, _, _, end) = &pair[1];
        if status == "running" && id == next_id {
            let (key, n) = order[id];
            runs.entry(key).or_default().push((n, *start, *end));
        }
    }
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM requests.requests GROUP BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("succeeded".to_owned(), total as i64)]);
    assert_eq!(runs.len(), KEYS);
    for (key, mut executions) in runs {
        executions.sort_by_key(|(_, start, _)| *start);
        // Submit order: the first execution of request n starts after request n-1's last
        // one ended (a request repeated after the kill runs again before the next one).
        let mut last_n = 0;
        for (i, (n, _, _)) in executions.iter().enumerate() {
            assert!(
                *n >= last_n,
                "key {key}: request {n} ran after request {last_n}"
            );
            last_n = *n;
            if i > 0 {
                let (_, _, previous_end) = executions[i - 1];
                let (_, start, _) = executions[i];
                assert!(
                    start >= previous_end,
                    "key {key}: two executions at once at request {n}"
                );
            }
        }
        assert_eq!(last_n, PER_KEY - 1);
    }
}
