//! Sliding windows over call outcomes, with running aggregates.
//!
//! Both windows keep the number of calls, failures and slow calls they hold, updated as
//! outcomes enter and leave, so reading the rates is O(1).

use std::time::Duration;

use crate::config::{WindowConfig, WindowKind};

/// Calls, failures and slow calls currently in a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Counts {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failure);
        self.slow += u32::from(slow);
    }

    fn remove(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    /// Failure rate in percent (0 when empty).
    pub(crate) fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow-call rate in percent (0 when empty).
    pub(crate) fn slow_rate(&self) -> f64 {
        percent(self.slow, self.calls)
    }
}

pub(crate) fn percent(part: u32, total: u32) -> f64 {
    if total == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(total)
    }
}

const FAILURE: u8 = 1;
const SLOW: u8 = 2;

/// The last `size` outcomes, in a ring of one byte each.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    next: usize,
    len: usize,
    counts: Counts,
}

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            ring: vec![0; size.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
            counts: Counts::default(),
        }
    }

    pub(crate) fn record(&mut self, failure: bool, slow: bool) {
        let capacity = self.ring.len();
        if self.len == capacity {
            let old = self.ring[self.next];
            self.counts.remove(Counts {
                calls: 1,
                failures: u32::from(old & FAILURE != 0),
                slow: u32::from(old & SLOW != 0),
            });
        } else {
            self.len += 1;
        }
        self.ring[self.next] = if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        self.next += 1;
        if self.next == capacity {
            self.next = 0;
        }
        self.counts.add(failure, slow);
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    pub(crate) fn reset(&mut self) {
        self.next = 0;
        self.len = 0;
        self.counts = Counts::default();
    }
}

/// The outcomes of the last `buckets` seconds, one bucket per second. The current second's
/// bucket is partial, so the window covers between `buckets - 1` and `buckets` seconds.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Counts]>,
    /// The second (since the breaker's epoch) of the newest bucket.
    newest: u64,
    counts: Counts,
}

impl TimeWindow {
    pub(crate) fn new(buckets: usize) -> Self {
        Self {
            buckets: vec![Counts::default(); buckets.max(1)].into_boxed_slice(),
            newest: 0,
            counts: Counts::default(),
        }
    }

    /// Moves the window so that `second` is its newest bucket. A second older than the
    /// newest (a caller that read the clock before another one) is treated as the newest.
    fn advance(&mut self, second: u64) {
        if second <= self.newest {
            return;
        }
        let n = self.buckets.len() as u64;
        if second - self.newest >= n {
            self.buckets.fill(Counts::default());
            self.counts = Counts::default();
        } else {
            for s in self.newest + 1..=second {
                let bucket = &mut self.buckets[(s % n) as usize];
                self.counts.remove(*bucket);
                *bucket = Counts::default();
            }
        }
        self.newest = second;
    }

    pub(crate) fn record(&mut self, second: u64, failure: bool, slow: bool) {
        self.advance(second);
        let n = self.buckets.len() as u64;
        self.buckets[(self.newest % n) as usize].add(failure, slow);
        self.counts.add(failure, slow);
    }

    pub(crate) fn counts(&mut self, second: u64) -> Counts {
        self.advance(second);
        self.counts
    }

    pub(crate) fn reset(&mut self) {
        self.buckets.fill(Counts::default());
        self.counts = Counts::default();
    }
}

/// Either kind of window.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn from_config(config: &WindowConfig) -> Self {
        match config.kind {
            WindowKind::Count => Window::Count(CountWindow::new(config.size as usize)),
            WindowKind::Time => Window::Time(TimeWindow::new(seconds(config.duration) as usize)),
        }
    }

    /// Whether `record` and `counts` use the time (`second`) argument.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    pub(crate) fn record(&mut self, second: u64, failure: bool, slow: bool) {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.record(second, failure, slow),
        }
    }

    pub(crate) fn counts(&mut self, second: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(second),
        }
    }

    pub(crate) fn reset(&mut self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

/// Whole seconds of a window duration, at least one.
fn seconds(d: Duration) -> u64 {
    d.as_secs().max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn count_window_evicts_oldest() {
        let mut w = CountWindow::new(3);
        w.record(true, false);
        w.record(false, true);
        w.record(false, false);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        w.record(false, false); // evicts the failure
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.record(false, false); // evicts the slow call
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.counts().failure_rate(), 0.0);
        w.reset();
        assert_eq!(w.counts(), Counts::default());
    }

    #[test]
    fn time_window_forgets_old_seconds() {
        let mut w = TimeWindow::new(10);
        w.record(0, true, false);
        w.record(5, true, true);
        assert_eq!(w.counts(9).calls, 2);
        assert_eq!(
            w.counts(10),
            Counts {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.counts(15), Counts::default());
        w.record(100, false, false);
        assert_eq!(w.counts(100).calls, 1);
        // A late reader with an older clock reading lands in the newest bucket.
        w.record(99, true, false);
        assert_eq!(
            w.counts(100),
            Counts {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
    }

    /// One step of a property test: an outcome, and how many seconds pass before it.
    #[derive(Debug, Clone)]
    struct Step {
        gap: u64,
        failure: bool,
        slow: bool,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            (
                prop_oneof![4 => Just(0u64), 2 => 1u64..3, 1 => 3u64..30],
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(gap, failure, slow)| Step { gap, failure, slow }),
            0..300,
        )
    }

    /// The naive model: every outcome with its second, counted by scanning.
    fn reference(history: &[(u64, bool, bool)], keep: impl Fn(usize, u64) -> bool) -> Counts {
        let mut counts = Counts::default();
        for (i, &(second, failure, slow)) in history.iter().enumerate() {
            if keep(i, second) {
                counts.add(failure, slow);
            }
        }
        counts
    }

    proptest! {
        #[test]
        fn count_window_matches_reference(size in 1usize..40, steps in steps()) {
            let mut w = CountWindow::new(size);
            let mut history = Vec::new();
            for step in &steps {
                w.record(step.failure, step.slow);
                history.push((0, step.failure, step.slow));
                let len = history.len();
                let expected = reference(&history, |i, _| i + size >= len);
                prop_assert_eq!(w.counts(), expected);
                prop_assert_eq!(w.counts().failure_rate(), expected.failure_rate());
                prop_assert_eq!(w.counts().slow_rate(), expected.slow_rate());
            }
        }

        #[test]
        fn time_window_matches_reference(buckets in 1u64..20, steps in steps()) {
            let mut w = TimeWindow::new(buckets as usize);
            let mut history = Vec::new();
            let mut now = 0u64;
            for step in &steps {
                now += step.gap;
                w.record(now, step.failure, step.slow);
                history.push((now, step.failure, step.slow));
                // Also look a little later, without recording.
                for later in [now, now + step.gap / 2] {
                    let expected = reference(&history, |_, s| s + buckets > later);
                    let counts = w.counts(later);
                    prop_assert_eq!(counts, expected);
                    prop_assert_eq!(counts.failure_rate(), expected.failure_rate());
                    prop_assert_eq!(counts.slow_rate(), expected.slow_rate());
                }
                now += step.gap / 2;
            }
        }
    }
}
