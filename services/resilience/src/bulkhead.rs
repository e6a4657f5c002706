//! The bulkhead: at most `maxConcurrent` calls in flight to one service, at most `maxQueue`
//! more waiting (each for at most `queueTimeout`), and every call beyond that rejected at
//! once. Memory and waiting time stay bounded however slow the service gets.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

use crate::config::BulkheadConfig;

/// Why the bulkhead refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkheadRejected {
    /// Every slot was taken and the waiting line was full (or not allowed).
    Full,
    /// The call waited `queueTimeout` without getting a slot.
    QueueTimeout,
}

impl fmt::Display for BulkheadRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BulkheadRejected::Full => f.write_str("bulkhead full"),
            BulkheadRejected::QueueTimeout => f.write_str("bulkhead queue timeout"),
        }
    }
}

impl std::error::Error for BulkheadRejected {}

/// A slot in the bulkhead, given back when dropped. It borrows the bulkhead, so taking one
/// touches only the slot counter (no reference count).
#[derive(Debug)]
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    _permit: SemaphorePermit<'a>,
}

/// A concurrency limit with a bounded, time-limited waiting line (FIFO). Share it between
/// all callers of one service; clones share the limit.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    semaphore: Semaphore,
    waiting: AtomicU32,
    max_concurrent: u32,
    max_queue: u32,
    queue_timeout: Duration,
}

/// Leaves the waiting line when dropped, also when the waiting call is cancelled.
struct InLine<'a>(&'a AtomicU32);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A bulkhead with the limits of `config` (at least one slot).
    pub fn new(config: &BulkheadConfig) -> Self {
        let max_concurrent = config.max_concurrent.max(1);
        Self {
            inner: Arc::new(Inner {
                semaphore: Semaphore::new(max_concurrent as usize),
                waiting: AtomicU32::new(0),
                max_concurrent,
                max_queue: config.max_queue,
                queue_timeout: config.queue_timeout,
            }),
        }
    }

    /// Takes a slot if one is free, without waiting.
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadRejected> {
        match self.inner.semaphore.try_acquire() {
            Ok(permit) => Ok(BulkheadPermit { _permit: permit }),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                Err(BulkheadRejected::Full)
            }
        }
    }

    /// Takes a slot: at once if one is free; otherwise waits in line for at most
    /// `queueTimeout` if the line has room; otherwise rejects at once.
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadRejected> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let inner = &*self.inner;
        if inner.max_queue == 0 {
            return Err(BulkheadRejected::Full);
        }
        let position = inner.waiting.fetch_add(1, Ordering::AcqRel);
        let _in_line = InLine(&inner.waiting);
        if position >= inner.max_queue {
            return Err(BulkheadRejected::Full);
        }
        match tokio::time::timeout(inner.queue_timeout, inner.semaphore.acquire()).await {
            Ok(Ok(permit)) => Ok(BulkheadPermit { _permit: permit }),
            Ok(Err(_closed)) => Err(BulkheadRejected::Full),
            Err(_elapsed) => Err(BulkheadRejected::QueueTimeout),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        let available = u32::try_from(self.inner.semaphore.available_permits()).unwrap_or(0);
        self.inner.max_concurrent.saturating_sub(available)
    }

    /// Calls waiting for a slot now.
    pub fn waiting(&self) -> u32 {
        self.inner
            .waiting
            .load(Ordering::Acquire)
            .min(self.inner.max_queue)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::time::{Instant, advance};

    fn bulkhead(max_concurrent: u32, max_queue: u32) -> Bulkhead {
        Bulkhead::new(&BulkheadConfig {
            max_concurrent,
            max_queue,
            queue_timeout: Duration::from_millis(100),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_then_rejects_at_once() {
        let b = bulkhead(2, 0);
        let p1 = b.acquire().await.unwrap();
        let _p2 = b.acquire().await.unwrap();
        assert_eq!(b.in_flight(), 2);
        let start = Instant::now();
        assert_eq!(b.acquire().await.unwrap_err(), BulkheadRejected::Full);
        assert_eq!(Instant::now(), start, "rejected without waiting");
        assert_eq!(b.try_acquire().unwrap_err(), BulkheadRejected::Full);
        drop(p1);
        assert_eq!(b.in_flight(), 1);
        let _p3 = b.try_acquire().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_line_waits_and_times_out() {
        let b = bulkhead(1, 1);
        let held = b.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                let start = Instant::now();
                let result = b.acquire().await;
                (result.map(drop), start.elapsed())
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.waiting(), 1);
        // The line is full: the next caller is rejected at once.
        assert_eq!(b.acquire().await.unwrap_err(), BulkheadRejected::Full);
        let (result, waited) = waiter.await.unwrap();
        assert_eq!(result.unwrap_err(), BulkheadRejected::QueueTimeout);
        assert_eq!(waited, Duration::from_millis(100));
        assert_eq!(b.waiting(), 0);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_released_slot() {
        let b = bulkhead(1, 4);
        let held = b.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        advance(Duration::from_millis(50)).await;
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_line() {
        let b = bulkhead(1, 1);
        let _held = b.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.waiting(), 1);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(b.waiting(), 0);
        // Its place in line is free again.
        let again = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(b.waiting(), 1);
        assert_eq!(
            again.await.unwrap().unwrap_err(),
            BulkheadRejected::QueueTimeout
        );
    }
}
