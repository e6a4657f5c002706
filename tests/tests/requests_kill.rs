//! Workers killed mid-flight lose nothing: two `appstack worker` processes burn down 5,000
//! queued requests while one of them is SIGKILLed three times and restarted. Every request
//! ends succeeded; the external service sees no more repeats than there were jobs in flight
//! at the kills (executing, or executed and awaiting their record), always with the same
//! idempotency key.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use appstack_queue::store::{NewRequest, SubmitOutcome};
use appstack_tests::processes::{QueueFixture, spawn_worker, worker_config};

const REQUESTS: usize = 5_000;
const CONCURRENCY: u32 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_repeat_only_what_was_in_flight() {
    let fixture = QueueFixture::start(Duration::from_millis(5), Duration::from_millis(10))
        .await
        .unwrap();
    let (queue, simulator) = (&fixture.queue, &fixture.simulator);
    let pool = queue.pool().clone();
    let mut ids = Vec::with_capacity(REQUESTS);
    for n in 0..REQUESTS {
        let payload = format!(r#"{{"n":{n}}}"#);
        let outcome = queue
            .submit_async(&NewRequest {
                owner: "killer",
                kind: "echo",
                payload: &payload,
                idempotency_key: None,
                ordering_key: None,
                deadline: None,
                trace: None,
            })
            .await
            .unwrap();
        let SubmitOutcome::Created(record) = outcome else {
            panic!()
        };
        ids.push(record.id);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = worker_config(dir.path(), &fixture.database_url, simulator, CONCURRENCY).unwrap();
    let mut steady = spawn_worker(&config).unwrap();
    let mut victim = spawn_worker(&config).unwrap();

    let finished = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM requests.requests WHERE finished_at IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let mut kills = 0;
    let mut in_flight_at_kills = 0i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let done = finished().await;
        if done as usize == REQUESTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {REQUESTS} finished"
        );
        // Kill at roughly a quarter, a half and three quarters of the way.
        if kills < 3 && done as usize > (kills + 1) * REQUESTS / 4 {
            victim.start_kill().unwrap(); // SIGKILL
            victim.wait().await.unwrap();
            // What can run twice is what was in flight at the kill: every job still
            // running right after it (the victim's, whose leases have not expired yet,
            // executing or awaiting their record, and the other worker's).
            in_flight_at_kills += sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM requests.jobs WHERE state = 'running'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            kills += 1;
            victim = spawn_worker(&config).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(kills, 3, "the burn-down ended before three kills");
    let _ = steady.start_kill();
    let _ = victim.start_kill();

    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM requests.requests GROUP BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, vec![("succeeded".to_owned(), REQUESTS as i64)]);
    let stats = simulator.calls().stats();
    assert_eq!(stats.without_key, 0);
    assert_eq!(
        stats.distinct_keys as usize, REQUESTS,
        "every request reached the service"
    );
    // A repeat only for what was in flight at the kills.
    let bound = u64::try_from(in_flight_at_kills).unwrap();
    assert!(
        stats.duplicate_calls <= bound,
        "{} duplicate calls, more than the {bound} jobs in flight at the kills",
        stats.duplicate_calls
    );
    for id in &ids {
        assert!(simulator.calls().calls_for(&id.to_string()) >= 1);
    }
    eprintln!(
        "kill test: {} calls, {} duplicates, {bound} jobs in flight at the kills",
        stats.calls, stats.duplicate_calls
    );
}
