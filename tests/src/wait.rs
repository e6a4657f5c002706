//! Waiting for a condition that a real server reaches in its own time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 200 ms until it gives a value, for at most `limit`.
///
/// # Panics
///
/// When `limit` passes first, naming `what` — this is for tests.
#[allow(clippy::panic)]
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < limit, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
