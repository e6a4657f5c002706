//! Wake-ups over LISTEN/NOTIFY, sent outside the transactions that cause them.
//!
//! A `NOTIFY` inside a transaction makes its commit take a database-wide lock, which
//! serialises every notifying commit (and so every submit) behind one another's WAL flush.
//! Instead each process pokes a [`Notifier`] after its commit; one task per process sends
//! the `NOTIFY` on its own, and pokes that arrive while one is being sent are coalesced into
//! the next, sent no sooner than [`NOTIFY_SPACING`] after the last. Listeners lose nothing by
//! this: the notification only says "look again", and workers also poll.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Jobs became ready to claim (submitted, requeued, unblocked, released).
pub const JOBS_CHANNEL: &str = "appstack_jobs";
/// Requests changed status (feeds Watch).
pub const EVENTS_CHANNEL: &str = "appstack_request_events";

/// The least time between two notifications of one process. Under load every submit pokes:
/// sent back to back, notifications cost as many statements as the submits themselves (and
/// wake every listener each time); a worker that is busy claims without them, and one that
/// waits hears within this much.
pub const NOTIFY_SPACING: Duration = Duration::from_millis(1);

/// Coalescing sender of the queue's notifications. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    pokes: Arc<Pokes>,
}

#[derive(Debug, Default)]
struct Pokes {
    jobs: Notify,
    events: Notify,
}

impl Notifier {
    /// Starts the sending task on `pool`, until `stop`.
    pub fn spawn(pool: PgPool, stop: CancellationToken) -> Self {
        let notifier = Self::default();
        let pokes = Arc::clone(&notifier.pokes);
        tokio::spawn(async move {
            loop {
                let channel = tokio::select! {
                    () = stop.cancelled() => return,
                    () = pokes.jobs.notified() => JOBS_CHANNEL,
                    () = pokes.events.notified() => EVENTS_CHANNEL,
                };
                if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(channel)
                    .execute(&pool)
                    .await
                {
                    // Listeners fall back to polling; nothing is lost.
                    tracing::debug!(%error, channel, "queue notification not sent");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(NOTIFY_SPACING) => {}
                }
            }
        });
        notifier
    }

    /// Says that jobs became ready (after the commit that made them so).
    pub fn jobs_ready(&self) {
        self.pokes.jobs.notify_one();
    }

    /// Says that requests changed status (after the commit).
    pub fn events_written(&self) {
        self.pokes.events.notify_one();
    }
}
