//! A timeout that costs nothing when the future is ready at once.
//!
//! `tokio::time::timeout_at` builds its timer before the first poll, and building one reads
//! the runtime handle (a reference count shared by every thread). Here the timer is built
//! only when the future first returns `Pending`: a call that completes at once, or a
//! bulkhead slot that is free, never touches it.
//!
//! Once the timer is armed, it is looked at before the future: a future that ends at the
//! deadline because of its own copy of it (tonic's `Channel` enforces the `grpc-timeout`
//! the layer sends, and fails with its own error in the same timer tick) is the timeout it
//! is, not that error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

/// The deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

pin_project! {
    /// `future`, or [`Elapsed`] at `deadline`. The future is polled first until it is
    /// pending, so one that is ready at once wins even after the deadline (as with tokio's
    /// timeout); after that the deadline is looked at first.
    pub(crate) struct Deadline<F> {
        #[pin]
        future: F,
        #[pin]
        timer: Option<Sleep>,
        deadline: Instant,
    }
}

/// Runs `future` until `deadline`.
pub(crate) fn until<F: Future>(deadline: Instant, future: F) -> Deadline<F> {
    Deadline {
        future,
        timer: None,
        deadline,
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(timer) = this.timer.as_mut().as_pin_mut() {
            if timer.poll(cx).is_ready() {
                return Poll::Ready(Err(Elapsed));
            }
            return this.future.poll(cx).map(Ok);
        }
        if let Poll::Ready(value) = this.future.poll(cx) {
            return Poll::Ready(Ok(value));
        }
        this.timer.set(Some(sleep_until(*this.deadline)));
        match this.timer.as_pin_mut().map(|timer| timer.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Elapsed)),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_wins_even_past_the_deadline() {
        let past = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(until(past, async { 7 }).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_future_times_out_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(250);
        let result = until(deadline, std::future::pending::<()>()).await;
        assert_eq!(result, Err(Elapsed));
        assert_eq!(Instant::now(), deadline);
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_ending_at_the_deadline_itself_is_a_timeout() {
        let deadline = Instant::now() + Duration::from_millis(250);
        let own_copy = async move {
            tokio::time::sleep_until(deadline).await;
            "its own timeout error"
        };
        assert_eq!(until(deadline, own_copy).await, Err(Elapsed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_future_that_finishes_in_time_is_returned() {
        let deadline = Instant::now() + Duration::from_millis(250);
        let result = until(deadline, async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            "done"
        })
        .await;
        assert_eq!(result, Ok("done"));
    }
}
