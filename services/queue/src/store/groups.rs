//! Work handed over one item at a time and performed in groups, as load allows.
//!
//! Items that arrive while earlier groups are being performed wait and go together into the
//! next group (up to a maximum). There is no timer: a lone item goes at once, and groups grow
//! only with load. A fixed number of groups run at a time. The task ends when the last
//! sender is gone, after performing what was handed over.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::StoreError;

/// Where an item's answer goes.
pub(crate) type Answer<R> = oneshot::Sender<Result<R, StoreError>>;

/// Items waiting before callers wait to hand theirs over.
const WAITING: usize = 1024;

/// The sending side; cheap to clone.
#[derive(Debug)]
pub(crate) struct Groups<T> {
    waiting: mpsc::Sender<T>,
}

impl<T> Clone for Groups<T> {
    fn clone(&self) -> Self {
        Self {
            waiting: self.waiting.clone(),
        }
    }
}

impl<T: Send + 'static> Groups<T> {
    /// Starts the task that runs `perform` on groups of up to `max` items, `in_flight` groups
    /// at a time.
    pub(crate) fn spawn<F, Fut>(max: usize, in_flight: usize, perform: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (waiting, received) = mpsc::channel(WAITING);
        tokio::spawn(run(received, max, in_flight, perform));
        Self { waiting }
    }

    /// Hands `item` over; gives it back if the task is gone (its runtime is shutting down).
    pub(crate) async fn hand_over(&self, item: T) -> Result<(), T> {
        self.waiting.send(item).await.map_err(|gone| gone.0)
    }

    /// Hands over the item `with_answer` builds around its answer's sender, and waits for
    /// the answer: the group's work answers every item it receives, so no answer means it
    /// panicked.
    pub(crate) async fn ask<R>(
        &self,
        with_answer: impl FnOnce(Answer<R>) -> T,
    ) -> Result<R, StoreError> {
        let (answer, answered) = oneshot::channel();
        if self.hand_over(with_answer(answer)).await.is_err() {
            return Err(StoreError::Db(sqlx::Error::PoolClosed));
        }
        answered
            .await
            .unwrap_or(Err(StoreError::Db(sqlx::Error::WorkerCrashed)))
    }
}

/// The same failure again, for every item of a group, when `error` happened before any
/// statement was sent (no connection in time, pool closed); `None` when the database may
/// have seen the statement.
pub(crate) fn before_the_database(error: &sqlx::Error) -> Option<sqlx::Error> {
    match error {
        sqlx::Error::PoolTimedOut => Some(sqlx::Error::PoolTimedOut),
        sqlx::Error::PoolClosed => Some(sqlx::Error::PoolClosed),
        _ => None,
    }
}

async fn run<T, F, Fut>(mut received: mpsc::Receiver<T>, max: usize, in_flight: usize, perform: F)
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    loop {
        // A slot first: while every slot is busy, items pile up for the next group.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = received.recv().await else {
            return;
        };
        let mut group = vec![first];
        while group.len() < max {
            match received.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let performing = perform(group);
        tokio::spawn(async move {
            performing.await;
            drop(slot);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn items_arriving_while_a_group_runs_go_together_into_the_next() {
        let seen = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let release = Arc::new(tokio::sync::Notify::new());
        let groups = {
            let (seen, release) = (Arc::clone(&seen), Arc::clone(&release));
            Groups::spawn(3, 1, move |group: Vec<u32>| {
                let (seen, release) = (Arc::clone(&seen), Arc::clone(&release));
                async move {
                    let first = group[0] == 0;
                    seen.lock().unwrap().push(group);
                    if first {
                        // Hold the only slot until the others have arrived.
                        release.notified().await;
                    }
                }
            })
        };
        groups.hand_over(0).await.unwrap();
        tokio::task::yield_now().await;
        for n in 1..=5 {
            groups.hand_over(n).await.unwrap();
        }
        release.notify_one();
        drop(groups);
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        // A lone first item goes at once; the rest in groups of at most three.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![0], vec![1, 2, 3], vec![4, 5]]
        );
    }
}
