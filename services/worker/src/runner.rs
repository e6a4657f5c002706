//! The worker's loops: claim and execute, record outcomes in batches, keep leases alive,
//! wake on notifications, and drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use appstack_executor::{Call, Executor};
use appstack_queue::ClaimWatermark;
use appstack_queue::decide::decide;
use appstack_queue::store::Failure;
use appstack_queue::store::{
    ClaimFilter, ClaimedJob, Completion, CompletionAction, Finish, JOBS_CHANNEL, Notifier, Queue,
    Reschedule,
};
use chrono::Utc;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::in_flight::{InFlight, StopReason};
use crate::metrics::WorkerMetrics;
use crate::outcome::{completion_action, deadline_instant};
use crate::settings::Settings;

/// Most outcomes recorded in one statement.
const MAX_COMPLETION_BATCH: usize = 512;

pub(crate) struct Runner {
    pub(crate) id: String,
    pub(crate) queue: Queue,
    pub(crate) executor: Executor,
    pub(crate) notifier: Notifier,
    pub(crate) settings: Settings,
    pub(crate) metrics: Arc<WorkerMetrics>,
    pub(crate) in_flight: InFlight,
}

impl Runner {
    /// Claims and executes until `shutdown`; then stops claiming, lets executions finish
    /// for `grace`, releases the rest (their attempts given back) and records every outcome.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let (completions, completed) = mpsc::channel(self.settings.concurrency * 2);
        // Outcomes still unrecorded this long after the end of the grace period (the
        // database is down) are dropped: their leases expire and the jobs run again.
        let abandon = CancellationToken::new();
        let completer =
            tokio::spawn(Arc::clone(&self).complete_batches(completed, abandon.clone()));
        let background = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        tokio::spawn(Arc::clone(&self).listen(Arc::clone(&wake), background.clone()));
        tokio::spawn(Arc::clone(&self).heartbeat(background.clone()));

        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let mut failures = 0u32;
        let kinds = self.executor.kinds();
        let mut watermark = ClaimWatermark::default();
        let mut last_excluded: Vec<String> = Vec::new();
        while !shutdown.is_cancelled() {
            // Finished tasks' results are not needed; reap them so the set stays small.
            while tasks.try_join_next().is_some() {}
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    permit = slots.acquire() => drop(permit),
                }
                continue;
            }
            let want = free.min(self.settings.claim_batch);
            let excluded_kinds = self.executor.unavailable_kinds();
            if excluded_kinds != last_excluded {
                // Jobs of a kind excluded until now may be waiting far below the mark.
                watermark.read_from_oldest_next();
                last_excluded.clone_from(&excluded_kinds);
            }
            let ready_from = watermark.start(Instant::now());
            let filter = ClaimFilter {
                kinds: kinds.clone(),
                excluded_kinds,
                ready_from,
            };
            let claimed = self
                .queue
                .claim(
                    &self.id,
                    &filter,
                    u32::try_from(want).unwrap_or(u32::MAX),
                    self.settings.lease,
                )
                .await;
            let jobs = match claimed {
                Ok(jobs) => {
                    failures = 0;
                    watermark.claimed(
                        ready_from,
                        want,
                        jobs.iter().map(|j| j.run_at),
                        Instant::now(),
                    );
                    jobs
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let pause = backoff(failures);
                    tracing::warn!(%error, retry_in = ?pause, "claiming jobs failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            };
            let got = jobs.len();
            for job in jobs {
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    // Cannot happen (we asked for at most the free slots); hand it back.
                    let _ = completions.send(release(&job)).await;
                    continue;
                };
                let runner = Arc::clone(&self);
                let completions = completions.clone();
                let span = job_span(&job);
                tasks.spawn(
                    async move {
                        runner.execute(job, completions).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
            if got < want && ready_from.is_some() {
                // Short from the watermark: read from the oldest at once.
                continue;
            }
            if got < want {
                // The queue is empty for us: wait for a notification, the poll interval
                // (scheduled jobs coming due, a lost notification) or shutdown.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = wake.notified() => {}
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                }
            }
        }

        // Drain: no more claims; in-flight executions get the grace period.
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::info!(
                remaining = self.in_flight.len(),
                "grace period over; releasing the executions still running"
            );
            self.in_flight.stop_all(StopReason::Shutdown);
            while tasks.join_next().await.is_some() {}
        }
        drop(completions);
        let flush_limit = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(flush_limit);
        let mut completer = completer;
        tokio::select! {
            _ = &mut completer => {}
            () = &mut flush_limit => {
                tracing::warn!("outcomes could not be recorded in time; their jobs will run again when their leases expire");
                abandon.cancel();
                let _ = completer.await;
            }
        }
        background.cancel();
    }

    /// Executes one claimed job and hands its outcome to the completer.
    async fn execute(&self, job: ClaimedJob, completions: mpsc::Sender<Completion>) {
        let held = self.in_flight.start(job.request_id, job.claim);
        let waited = (Utc::now() - job.created_at)
            .to_std()
            .ok()
            .map(|d| d.as_secs_f64());
        // Only a first execution measures enqueue-to-start; later ones waited on purpose.
        self.metrics
            .started(&job.kind, (job.attempt == 1).then_some(waited).flatten());
        let deadline = job
            .deadline
            .map(|d| deadline_instant(d, Utc::now(), Instant::now()));
        let call = Call {
            request_id: job.request_id,
            kind: &job.kind,
            payload: &job.payload,
            attempt: job.attempt,
            deadline,
        };
        let execution = tokio::select! {
            biased;
            () = held.stopped() => None,
            execution = self.executor.execute(call) => Some(execution),
        };
        self.in_flight.end(job.request_id);
        let (action, outcome) = match execution {
            Some(execution) => {
                let policy = self.executor.policy_of(&job.kind);
                let decision = decide(
                    job.attempt,
                    false,
                    &execution.outcome,
                    &policy,
                    Utc::now(),
                    rand::random::<f64>(),
                );
                let action = completion_action(&decision, &execution);
                let outcome = outcome_label(&action);
                (action, outcome)
            }
            None => match held.reason() {
                StopReason::Lost | StopReason::None => {
                    self.metrics.finished(&job.kind, "lost");
                    return;
                }
                StopReason::Cancelled => (
                    CompletionAction::Finish(Finish::Dead(Failure {
                        reason: "cancelled".into(),
                        message: "cancelled by its owner".into(),
                        retryable: false,
                    })),
                    "cancelled",
                ),
                StopReason::Shutdown => (
                    CompletionAction::Reschedule(Reschedule::Release),
                    "released",
                ),
            },
        };
        self.metrics.finished(&job.kind, outcome);
        let span = tracing::Span::current();
        span.record("appstack.outcome", outcome);
        if matches!(action, CompletionAction::Finish(Finish::Dead(_))) {
            span.record("otel.status_code", "error");
        }
        let _ = completions
            .send(Completion {
                request_id: job.request_id,
                claim: job.claim,
                ordering_key: job.ordering_key,
                action,
            })
            .await;
    }

    /// Records outcomes in batches: whatever has arrived while the previous batch was being
    /// written goes into the next one.
    async fn complete_batches(
        self: Arc<Self>,
        mut completed: mpsc::Receiver<Completion>,
        abandon: CancellationToken,
    ) {
        while let Some(first) = completed.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_COMPLETION_BATCH {
                match completed.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let mut failures = 0;
            loop {
                match self.queue.complete(&batch).await {
                    Ok(_) => break,
                    Err(error) => {
                        failures += 1;
                        let pause = backoff(failures);
                        tracing::warn!(%error, outcomes = batch.len(), retry_in = ?pause, "recording outcomes failed");
                        tokio::select! {
                            () = abandon.cancelled() => return,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                }
            }
            self.notifier.events_written();
            if batch.iter().any(|c| {
                matches!(c.action, CompletionAction::Reschedule(Reschedule::Release))
                    || c.ordering_key.is_some()
            }) {
                // Released jobs, and the next job of a finished ordering key, are ready now.
                self.notifier.jobs_ready();
            }
        }
    }

    /// Extends the leases of the executions in flight; stops those no longer held or
    /// cancelled by their owner.
    async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.settings.heartbeat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let held = self.in_flight.claims();
            if held.is_empty() {
                continue;
            }
            match self.queue.heartbeat(&held, self.settings.lease).await {
                Ok(report) => {
                    for id in report.lost {
                        tracing::warn!(request = %id, "lease lost (expired and rescued); stopping the execution");
                        self.in_flight.stop(id, StopReason::Lost);
                    }
                    for id in report.cancelled {
                        self.in_flight.stop(id, StopReason::Cancelled);
                    }
                }
                Err(error) => tracing::warn!(%error, "extending leases failed"),
            }
        }
    }

    /// Turns `appstack_jobs` notifications into wake-ups of the claim loop.
    async fn listen(self: Arc<Self>, wake: Arc<Notify>, stop: CancellationToken) {
        loop {
            let listener = async {
                let mut listener = PgListener::connect_with(self.queue.pool()).await?;
                listener.listen(JOBS_CHANNEL).await?;
                loop {
                    listener.recv().await?;
                    wake.notify_one();
                }
            };
            let result: Result<(), sqlx::Error> = tokio::select! {
                () = stop.cancelled() => return,
                result = listener => result,
            };
            if let Err(error) = result {
                tracing::debug!(%error, "queue notifications interrupted; polling until they are back");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// A job handed back unstarted.
fn release(job: &ClaimedJob) -> Completion {
    Completion {
        request_id: job.request_id,
        claim: job.claim,
        ordering_key: job.ordering_key.clone(),
        action: CompletionAction::Reschedule(Reschedule::Release),
    }
}

/// The metrics label of what is recorded.
fn outcome_label(action: &CompletionAction) -> &'static str {
    match action {
        CompletionAction::Finish(Finish::Succeeded(_)) => "succeeded",
        CompletionAction::Finish(Finish::Failed(_) | Finish::Dead(_)) => "dead",
        CompletionAction::Reschedule(Reschedule::RetryAt { .. }) => "retried",
        CompletionAction::Reschedule(Reschedule::PostponeUntil { .. }) => "postponed",
        CompletionAction::Reschedule(Reschedule::Release | Reschedule::LeaseExpired) => "released",
    }
}

/// 100 ms doubling to 2 s: how long to wait after `failures` database failures in a row.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(Duration::from_secs(2))
}

/// The span of one execution, a consumer span continuing the trace of what queued the job
/// (the submit, or an admin's requeue), named as OpenTelemetry's messaging conventions name
/// processing: `process {kind}`.
fn job_span(job: &ClaimedJob) -> tracing::Span {
    let span = tracing::info_span!(
        "job.process",
        otel.name = %format_args!("process {}", job.kind),
        otel.kind = "consumer",
        messaging.system = "appstack",
        messaging.operation.type = "process",
        messaging.destination.name = %job.kind,
        messaging.message.id = %job.request_id,
        appstack.attempt = job.attempt,
        appstack.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(trace) = &job.trace {
        trace.set_parent_of(&span);
    }
    span
}
