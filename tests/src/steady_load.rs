//! Steady ASYNC submits for the fault suites (a database restart, chaos): lanes submitting
//! until stopped, recording what was acknowledged and how each failure looked; then the
//! check that every acknowledged request ends succeeded.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appstack_proto::main::v1::{GetRequest, Mode, Status, SubmitRequest};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::stack_server::Requests;

/// What the load saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Ids of the acknowledged requests.
    pub acknowledged: Vec<String>,
    /// Each failed call: its code, how long it took, its message.
    pub failures: Vec<(Code, Duration, String)>,
    /// When a submit last succeeded.
    pub last_success: Option<Instant>,
}

/// Lanes submitting ASYNC `echo` requests (a 3 s deadline each) until [`SubmitLoad::finish`].
pub struct SubmitLoad {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    lanes: Vec<JoinHandle<()>>,
}

impl SubmitLoad {
    /// Starts `lanes` lanes on `client`, each pausing `pause` between submits.
    pub fn start(client: &Requests, lanes: usize, pause: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let lanes = (0..lanes)
            .map(|lane| {
                let (mut client, seen, stop) = (client.clone(), Arc::clone(&seen), stop.clone());
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
                                if let Some(request) = answer.into_inner().request {
                                    seen.acknowledged.push(request.id);
                                }
                                seen.last_success = Some(Instant::now());
                            }
                            Err(status) => seen.failures.push((
                                status.code(),
                                started.elapsed(),
                                status.message().to_owned(),
                            )),
                        };
                        record(&mut seen.lock().unwrap_or_else(|p| p.into_inner()));
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self { seen, stop, lanes }
    }

    /// Requests acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.lock().acknowledged.len()
    }

    /// Whether a submit succeeded after `at`.
    pub fn succeeded_since(&self, at: Instant) -> bool {
        self.lock().last_success.is_some_and(|last| last > at)
    }

    /// Waits until a submit succeeds after `at`: how long after `at` that was.
    ///
    /// # Errors
    ///
    /// When none has succeeded `within` of `at`.
    pub async fn back_since(&self, at: Instant, within: Duration) -> anyhow::Result<Duration> {
        while !self.succeeded_since(at) {
            anyhow::ensure!(
                at.elapsed() < within,
                "no submit succeeded within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(at.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the lanes; what they saw.
    ///
    /// # Errors
    ///
    /// When a lane panicked.
    pub async fn finish(mut self) -> anyhow::Result<Seen> {
        self.stop.cancel();
        for lane in std::mem::take(&mut self.lanes) {
            lane.await?;
        }
        Ok(std::mem::take(&mut *self.lock()))
    }
}

impl Seen {
    /// Checks that every failed call was UNAVAILABLE and took less than `bound`.
    ///
    /// # Errors
    ///
    /// The first call that was not, with its code, time and message.
    pub fn failures_were_fast_and_unavailable(&self, bound: Duration) -> anyhow::Result<()> {
        for (code, took, message) in &self.failures {
            anyhow::ensure!(
                *code == Code::Unavailable,
                "{code:?} after {took:?}: {message}"
            );
            anyhow::ensure!(*took < bound, "a call took {took:?}: {message}");
        }
        Ok(())
    }
}

/// Waits (up to `within`) until every request of `ids` has succeeded.
///
/// # Errors
///
/// When a Get fails, or a request has not succeeded in time (naming it and its status).
pub async fn all_succeed(
    client: &mut Requests,
    ids: &[String],
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let request = client
                .get(GetRequest { id: id.clone() })
                .await?
                .into_inner();
            if Status::try_from(request.status) == Ok(Status::Succeeded) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{id} is still {:?}",
                request.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// A private PostgreSQL in `dir` (for suites that stop or abuse their server), with a
/// database `name`; the server and the database's URL.
///
/// # Errors
///
/// When the server cannot start or the database cannot be created.
pub async fn private_database(
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<(appstack_localpg::LocalPostgres, String)> {
    use sqlx::Connection as _;
    let postgres =
        appstack_localpg::LocalPostgres::start(appstack_localpg::Options::new(dir)).await?;
    let mut admin = sqlx::PgConnection::connect(&postgres.url("postgres")).await?;
    // `name` is the suite's constant, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let url = postgres.url(name);
    Ok((postgres, url))
}
