//! The bulkhead: at most `maxConcurrent` calls in flight to one service, at most `maxQueue`
//! more waiting (each for at most `queueTimeout`), and every call beyond that rejected at
//! once. Memory and waiting time stay bounded however slow the service gets.

use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, timeout_at};

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

/// A slot in the bulkhead, given back when dropped. It borrows the bulkhead, so taking and
/// giving back a slot touch only the slot counter (no reference count, no lock).
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct BulkheadPermit<'a> {
    inner: &'a Inner,
}

impl fmt::Debug for BulkheadPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit").finish_non_exhaustive()
    }
}

impl Drop for BulkheadPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl BulkheadPermit<'_> {
    /// The same slot, held through `bulkhead` (the one it was taken from).
    pub(crate) fn into_owned(self, bulkhead: &Bulkhead) -> OwnedBulkheadPermit {
        debug_assert!(
            std::ptr::eq(self.inner, &*bulkhead.inner),
            "another bulkhead"
        );
        // The slot stays taken: the owned permit gives it back.
        std::mem::forget(self);
        OwnedBulkheadPermit {
            inner: Arc::clone(&bulkhead.inner),
        }
    }
}

/// A slot held through an `Arc` of the bulkhead, so it can live in a `'static` value (a
/// response body still streaming); given back when dropped. Made by
/// [`BulkheadPermit::into_owned`].
pub(crate) struct OwnedBulkheadPermit {
    inner: Arc<Inner>,
}

impl fmt::Debug for OwnedBulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBulkheadPermit")
            .finish_non_exhaustive()
    }
}

impl Drop for OwnedBulkheadPermit {
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// A concurrency limit with a bounded, time-limited waiting line. Share it between all
/// callers of one service; clones share the limit.
///
/// The slots are one atomic counter: taking a free slot is one compare-and-swap, giving it
/// back one subtraction, and a waiter is woken only when there is one. (tokio's `Semaphore`
/// takes a lock on every release, which costs more than the rest of the pipeline together
/// under contention.) Waiters are woken in the order they arrived, but a newcomer that
/// finds a free slot takes it at once, without queueing behind them; a waiter never waits
/// longer than `queueTimeout`.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    in_flight: AtomicU32,
    waiting: AtomicU32,
    released: Notify,
    max_concurrent: u32,
    max_queue: u32,
    queue_timeout: Duration,
}

impl Inner {
    #[inline]
    fn try_take(&self) -> bool {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= self.max_concurrent {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    #[inline]
    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        // SeqCst on both sides: either a waiter's retry sees this slot free, or this load
        // sees the waiter (which registered for the wake-up before retrying).
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_one();
        }
    }
}

/// Leaves the waiting line when dropped, also when the waiting call is cancelled.
struct InLine<'a>(&'a AtomicU32);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Bulkhead {
    /// A bulkhead with the limits of `config` (at least one slot).
    pub fn new(config: &BulkheadConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                in_flight: AtomicU32::new(0),
                waiting: AtomicU32::new(0),
                released: Notify::new(),
                max_concurrent: config.max_concurrent.max(1),
                max_queue: config.max_queue,
                queue_timeout: config.queue_timeout,
            }),
        }
    }

    /// Takes a slot if one is free, without waiting.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadRejected> {
        if self.inner.try_take() {
            Ok(BulkheadPermit { inner: &self.inner })
        } else {
            Err(BulkheadRejected::Full)
        }
    }

    /// Takes a slot: at once if one is free; otherwise waits in line for at most
    /// `queueTimeout` if the line has room; otherwise rejects at once.
    pub async fn acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadRejected> {
        if let Ok(permit) = self.try_acquire() {
            return Ok(permit);
        }
        self.wait_in_line().await
    }

    async fn wait_in_line(&self) -> Result<BulkheadPermit<'_>, BulkheadRejected> {
        let inner = &*self.inner;
        if inner.max_queue == 0 {
            return Err(BulkheadRejected::Full);
        }
        let position = inner.waiting.fetch_add(1, Ordering::SeqCst);
        let _in_line = InLine(&inner.waiting);
        if position >= inner.max_queue {
            return Err(BulkheadRejected::Full);
        }
        // Validated settings cannot overflow; unvalidated ones wait without a limit.
        let until = Instant::now().checked_add(inner.queue_timeout);
        loop {
            let mut released = pin!(inner.released.notified());
            // Registered before looking, so a release in between is not missed.
            released.as_mut().enable();
            if inner.try_take() {
                return Ok(BulkheadPermit { inner });
            }
            match until {
                Some(until) => {
                    if timeout_at(until, released).await.is_err() {
                        return Err(BulkheadRejected::QueueTimeout);
                    }
                }
                None => released.await,
            }
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Acquire)
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_more_than_the_limit_in_flight_under_contention() {
        let b = Bulkhead::new(&BulkheadConfig {
            max_concurrent: 3,
            max_queue: 64,
            queue_timeout: Duration::from_secs(30),
        });
        let peak = Arc::new(AtomicU32::new(0));
        let inside = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (b, peak, inside) = (b.clone(), peak.clone(), inside.clone());
                tokio::spawn(async move {
                    for _ in 0..200 {
                        let _slot = b.acquire().await.unwrap();
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.waiting(), 0);
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
