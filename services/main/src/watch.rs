//! Watch: a request's events as they are appended, until it is finished.
//!
//! One listener per process turns `appstack_request_events` notifications into a counter
//! that every Watch stream waits on (or polls, every second, when notifications are lost).
//! A stream reads the events after the last one it sent, so a notification it missed, a
//! batch of several transitions, or a reconnect with `after_sequence` lose nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use appstack_proto::main::v1 as pb;
use appstack_queue::store::{EVENTS_CHANNEL, Queue};
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use uuid::Uuid;

use crate::convert;

/// Events read per query.
const EVENTS_PER_READ: u32 = 100;
/// The longest a stream waits before reading again without a notification.
const POLL: Duration = Duration::from_secs(1);
/// The shortest time between two reads of one stream, however many notifications arrive.
const MIN_READ_GAP: Duration = Duration::from_millis(50);

/// Notifications of new events, shared by the streams of one process.
#[derive(Clone, Debug)]
pub(crate) struct EventsHub {
    changed: watch::Receiver<u64>,
    open: Arc<AtomicUsize>,
    max_streams: usize,
}

impl EventsHub {
    /// Starts the listener on `queue`'s pool, until `stop`.
    pub(crate) fn spawn(queue: &Queue, max_streams: usize, stop: CancellationToken) -> Self {
        let (tx, rx) = watch::channel(0u64);
        let pool = queue.pool().clone();
        tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(EVENTS_CHANNEL).await?;
                    loop {
                        listener.recv().await?;
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                };
                let result: Result<(), sqlx::Error> = tokio::select! {
                    () = stop.cancelled() => return,
                    result = listen => result,
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "event notifications interrupted; Watch streams poll meanwhile");
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        });
        Self {
            changed: rx,
            open: Arc::new(AtomicUsize::new(0)),
            max_streams,
        }
    }

    /// A slot for one more stream, or `None` when `max_streams` are open.
    pub(crate) fn admit(&self) -> Option<StreamSlot> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.max_streams {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(StreamSlot {
            open: Arc::clone(&self.open),
        })
    }

    /// The most streams open at once.
    pub(crate) fn max_streams(&self) -> usize {
        self.max_streams
    }

    /// Streams `id`'s events after `after` into `out` until a terminal one (or the caller
    /// leaves). Runs in its own task.
    pub(crate) async fn stream(
        &self,
        queue: Queue,
        id: Uuid,
        mut after: i32,
        out: mpsc::Sender<Result<pb::RequestEvent, Status>>,
        slot: StreamSlot,
        on_error: impl Fn(appstack_queue::store::StoreError) -> Status,
    ) {
        let _slot = slot;
        let mut changed = self.changed.clone();
        loop {
            match queue.events_after(id, after, EVENTS_PER_READ).await {
                Ok(events) => {
                    let full = events.len() == EVENTS_PER_READ as usize;
                    for event in events {
                        after = event.sequence;
                        let terminal = event.to.is_terminal();
                        if out.send(Ok(convert::event(event))).await.is_err() {
                            return;
                        }
                        if terminal {
                            return;
                        }
                    }
                    if full {
                        continue;
                    }
                }
                Err(error) => {
                    let _ = out.send(Err(on_error(error))).await;
                    return;
                }
            }
            tokio::select! {
                () = out.closed() => return,
                _ = changed.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
            tokio::time::sleep(MIN_READ_GAP).await;
        }
    }
}

/// Holds one of the open-stream slots.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    open: Arc<AtomicUsize>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}
