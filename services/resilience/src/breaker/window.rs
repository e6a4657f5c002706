//! Sliding windows over call outcomes, with running aggregates.
//!
//! Both windows keep the number of calls, failures and slow calls they hold, updated as
//! outcomes enter and leave, so reading the rates is O(1).

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::config::{WindowConfig, WindowKind};
use crate::pad::CachePadded;

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

/// Slot contents of a count window: 0 is an empty slot.
const RECORDED: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

/// Bits per field of the packed totals, and the bias that keeps a field from borrowing
/// from its neighbour while it is transiently below zero (see [`CountWindow`]).
const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const BIAS: i64 = 1 << 20;

/// The packed `(calls, failures, slow)` contribution of a slot value.
fn contribution(slot: u8) -> i64 {
    i64::from(slot & RECORDED)
        + (i64::from((slot & FAILURE) >> 1) << FIELD_BITS)
        + (i64::from((slot & SLOW) >> 2) << (2 * FIELD_BITS))
}

/// The last `size` outcomes, lock-free: a ring of one atomic byte per call, a position
/// counter, and the totals packed in one atomic word.
///
/// Recording takes a slot (`fetch_add` on the position), swaps the outcome into it, and
/// adds (new − old) to the totals with one `fetch_add`, which also returns the totals
/// after this record: O(1), no lock. Each slot change is matched by exactly one delta, so
/// the totals always return to the ring's true contents; while several threads record at
/// once a field may transiently be off by the number of threads in flight (even below
/// zero, which the bias absorbs). Sequentially it is exact. Sizes up to 100 000 fit.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[AtomicU8]>,
    /// The totals of a full window of fast successes.
    full_and_clean: u64,
    /// Written by every record: kept on a cache line of its own, away from the breaker's
    /// state word that every admission reads.
    hot: CachePadded<Hot>,
}

#[derive(Debug)]
struct Hot {
    next: AtomicUsize,
    totals: AtomicU64,
}

const BIASED_ZERO: u64 =
    (BIAS as u64) | ((BIAS as u64) << FIELD_BITS) | ((BIAS as u64) << (2 * FIELD_BITS));

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            ring: (0..size).map(|_| AtomicU8::new(0)).collect(),
            full_and_clean: BIASED_ZERO + size as u64,
            hot: CachePadded(Hot {
                next: AtomicUsize::new(0),
                totals: AtomicU64::new(BIASED_ZERO),
            }),
        }
    }

    /// Records an outcome; returns the counts just after it.
    ///
    /// A fast success recorded into a full window of fast successes changes nothing (it
    /// would evict one identical outcome from a ring of identical outcomes), so it is not
    /// written at all: a healthy service's calls only read the shared totals, which keeps
    /// the breaker scaling across cores.
    pub(crate) fn record(&self, failure: bool, slow: bool) -> Counts {
        if !failure && !slow {
            let totals = self.hot.0.totals.load(Ordering::Acquire);
            if totals == self.full_and_clean {
                return decode(totals);
            }
        }
        let position = self.hot.0.next.fetch_add(1, Ordering::Relaxed) % self.ring.len();
        let new = RECORDED | if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        let old = self.ring[position].swap(new, Ordering::AcqRel);
        let delta = (contribution(new) - contribution(old)) as u64;
        let after = self
            .hot
            .0
            .totals
            .fetch_add(delta, Ordering::AcqRel)
            .wrapping_add(delta);
        decode(after)
    }

    pub(crate) fn counts(&self) -> Counts {
        decode(self.hot.0.totals.load(Ordering::Acquire))
    }

    /// Empties the window (each slot's contribution is taken back as it is cleared, so a
    /// record racing with the reset leaves the totals consistent).
    pub(crate) fn reset(&self) {
        let mut delta = 0i64;
        for slot in &self.ring {
            delta -= contribution(slot.swap(0, Ordering::AcqRel));
        }
        self.hot.0.totals.fetch_add(delta as u64, Ordering::AcqRel);
    }
}

fn decode(word: u64) -> Counts {
    let field = |shift: u32| {
        let biased = ((word >> shift) & FIELD_MASK) as i64;
        u32::try_from((biased - BIAS).max(0)).unwrap_or(u32::MAX)
    };
    Counts {
        calls: field(0),
        failures: field(FIELD_BITS),
        slow: field(2 * FIELD_BITS),
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

/// Either kind of window, safe to share: the count window is lock-free, the time window
/// has its own small lock (never held while the breaker's lock is taken).
#[derive(Debug)]
// The count window is large only by its cache-line padding, on purpose; one per breaker.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(Mutex<TimeWindow>),
}

impl Window {
    pub(crate) fn from_config(config: &WindowConfig) -> Self {
        match config.kind {
            WindowKind::Count => Window::Count(CountWindow::new(config.size as usize)),
            WindowKind::Time => Window::Time(Mutex::new(TimeWindow::new(
                seconds(config.duration) as usize
            ))),
        }
    }

    /// Whether `record` and `counts` use the time (`second`) argument.
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Records an outcome; returns the counts just after it.
    pub(crate) fn record(&self, second: u64, failure: bool, slow: bool) -> Counts {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => {
                let mut w = lock(w);
                w.record(second, failure, slow);
                w.counts(second)
            }
        }
    }

    pub(crate) fn counts(&self, second: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => lock(w).counts(second),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => lock(w).reset(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        let w = CountWindow::new(3);
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

    /// Totals recomputed from the ring's contents.
    fn recount(w: &CountWindow) -> Counts {
        let mut counts = Counts::default();
        for slot in &w.ring {
            let v = slot.load(std::sync::atomic::Ordering::Relaxed);
            if v & RECORDED != 0 {
                counts.add(v & FAILURE != 0, v & SLOW != 0);
            }
        }
        counts
    }

    #[test]
    fn count_window_totals_stay_consistent_under_contention() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        w.record((i + t) % 3 == 0, (i * t) % 5 == 0);
                        if t == 0 && i % 5000 == 0 {
                            w.reset();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let counts = w.counts();
        assert_eq!(counts, recount(&w));
        assert_eq!(counts.calls, 64);
    }

    #[test]
    fn a_full_clean_window_is_not_written() {
        let w = CountWindow::new(3);
        for _ in 0..3 {
            w.record(false, false);
        }
        let position = w.hot.0.next.load(std::sync::atomic::Ordering::Relaxed);
        w.record(false, false);
        assert_eq!(
            w.hot.0.next.load(std::sync::atomic::Ordering::Relaxed),
            position
        );
        // Then a failure, kept for exactly three records.
        w.record(true, false);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
        w.record(false, false);
        w.record(false, false);
        assert_eq!(w.counts().failures, 1);
        w.record(false, false);
        assert_eq!(
            w.counts(),
            Counts {
                calls: 3,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(w.counts(), recount(&w));
    }

    #[test]
    fn count_window_holds_its_largest_size() {
        let w = CountWindow::new(100_000);
        for i in 0..250_000u32 {
            w.record(true, i % 2 == 0);
        }
        assert_eq!(
            w.counts(),
            Counts {
                calls: 100_000,
                failures: 100_000,
                slow: 50_000
            }
        );
        w.reset();
        assert_eq!(w.counts(), Counts::default());
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
            let w = CountWindow::new(size);
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
