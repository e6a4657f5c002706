//! Where a worker's next claim starts reading the ready jobs (pure).
//!
//! A claim walks the ready jobs in `run_at` order. Every job claimed leaves a dead entry at
//! the front of that order, which PostgreSQL removes only once no snapshot can still see
//! it: while any session holds an old snapshot open (a long report, a stuck transaction),
//! each claim walks past every job claimed since, and claims slow down as the backlog
//! burns. A claim that starts just below the newest `run_at` this worker has claimed skips
//! them.
//!
//! What it could skip is a job that became ready with an older `run_at`: a submit whose
//! transaction committed late (its `run_at` is its transaction's start), or a retry time
//! from a worker whose clock runs behind the database's. The margin covers the first in the
//! usual case; for the rest, a claim reads from the very oldest at least every
//! `full_every`, right after a bounded claim comes back short, after the claim's filter
//! changes, and again and again for as long as such reads find jobs below the mark (a
//! backlog of a kind that was excluded, the next jobs of ordering keys, which keep their
//! submit time so they keep their place).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// How far below the newest `run_at` claimed a bounded claim starts: a submit's `run_at` is
/// its transaction's start, and it commits within this much in the usual case.
pub const DEFAULT_CLAIM_MARGIN: Duration = Duration::from_millis(100);
/// A claim reads from the oldest ready job at least this often.
pub const DEFAULT_FULL_READ_EVERY: Duration = Duration::from_secs(1);

/// A worker's claim start, updated from what its claims return.
#[derive(Clone, Debug)]
pub struct ClaimWatermark {
    /// The newest `run_at` claimed so far (database time).
    newest_claimed: Option<DateTime<Utc>>,
    /// When a claim last read from the oldest ready job.
    last_full_read: Option<Instant>,
    margin: chrono::TimeDelta,
    full_every: Duration,
}

impl Default for ClaimWatermark {
    /// [`DEFAULT_CLAIM_MARGIN`] and [`DEFAULT_FULL_READ_EVERY`].
    fn default() -> Self {
        Self::new(DEFAULT_CLAIM_MARGIN, DEFAULT_FULL_READ_EVERY)
    }
}

impl ClaimWatermark {
    /// Bounded claims start `margin` below the newest `run_at` claimed; one claim in every
    /// `full_every` reads from the oldest.
    pub fn new(margin: Duration, full_every: Duration) -> Self {
        Self {
            newest_claimed: None,
            last_full_read: None,
            margin: chrono::TimeDelta::from_std(margin).unwrap_or(chrono::TimeDelta::MAX),
            full_every,
        }
    }

    /// The lowest `run_at` the next claim reads, or `None` to read from the oldest.
    pub fn start(&self, now: Instant) -> Option<DateTime<Utc>> {
        let last_full_read = self.last_full_read?;
        if now.duration_since(last_full_read) >= self.full_every {
            return None;
        }
        self.bounded_start()
    }

    /// Records a claim that read from `started_at` (what [`start`](Self::start) said),
    /// wanted `wanted` jobs and got those whose `run_at`s are `claimed`.
    pub fn claimed(
        &mut self,
        started_at: Option<DateTime<Utc>>,
        wanted: usize,
        claimed: impl IntoIterator<Item = DateTime<Utc>>,
        now: Instant,
    ) {
        // The start a bounded claim would have had before this one.
        let bound = self.bounded_start();
        let (mut got, mut below_the_mark) = (0, false);
        for run_at in claimed {
            got += 1;
            below_the_mark |= bound.is_some_and(|bound| run_at < bound);
            if self.newest_claimed.is_none_or(|newest| run_at > newest) {
                self.newest_claimed = Some(run_at);
            }
        }
        self.last_full_read = match started_at {
            // A read from the oldest that found jobs a bounded claim would have skipped:
            // read from the oldest again until it finds none, so such a backlog drains at
            // the full claim rate, not one claim a period.
            None if below_the_mark => None,
            None => Some(now),
            // Short from the mark: the next claim reads from the oldest.
            Some(_) if got < wanted => None,
            Some(_) => self.last_full_read,
        };
    }

    /// Makes the next claim read from the oldest (the claim's filter changed: jobs of kinds
    /// it excluded may be waiting far below the mark).
    pub fn read_from_oldest_next(&mut self) {
        self.last_full_read = None;
    }

    fn bounded_start(&self) -> Option<DateTime<Utc>> {
        self.newest_claimed
            .map(|newest| newest.checked_sub_signed(self.margin).unwrap_or(newest))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    fn mark() -> ClaimWatermark {
        ClaimWatermark::new(Duration::from_millis(100), Duration::from_secs(1))
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_claim_reads_from_the_oldest_and_the_next_from_below_the_newest() {
        let mut w = mark();
        let t0 = Instant::now();
        assert_eq!(w.start(t0), None);
        w.claimed(None, 3, [at(10), at(30), at(20)], t0);
        assert_eq!(w.start(t0), Some(at(30 - 100)));
        // Full batches from the mark keep it.
        w.claimed(Some(at(-70)), 2, [at(40), at(50)], t0);
        assert_eq!(w.start(t0), Some(at(50 - 100)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_read_comes_at_least_every_period() {
        let mut w = mark();
        let t0 = Instant::now();
        w.claimed(None, 1, [at(10)], t0);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(w.start(Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(w.start(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_claim_from_the_mark_makes_the_next_read_from_the_oldest() {
        let mut w = mark();
        let t0 = Instant::now();
        w.claimed(None, 4, [at(10)], t0);
        let start = w.start(t0);
        assert!(start.is_some());
        w.claimed(start, 4, [at(20), at(25)], t0);
        assert_eq!(w.start(t0), None);
        // An empty full read is a full read: the next one starts from the mark again.
        w.claimed(None, 4, [], t0);
        assert_eq!(w.start(t0), Some(at(25 - 100)));
    }

    #[tokio::test(start_paused = true)]
    async fn reads_from_the_oldest_go_on_while_they_find_jobs_below_the_mark() {
        let mut w = mark();
        let t0 = Instant::now();
        w.claimed(None, 2, [at(1_000), at(1_010)], t0);
        // A backlog far below the mark (a kind that was excluded) is found by a full read...
        w.read_from_oldest_next();
        assert_eq!(w.start(t0), None);
        w.claimed(None, 2, [at(5), at(6)], t0);
        // ...and the next read is from the oldest again, until one finds nothing below.
        assert_eq!(w.start(t0), None);
        w.claimed(None, 2, [at(1_020)], t0);
        assert_eq!(w.start(t0), Some(at(1_020 - 100)));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_claimed_yet_means_the_oldest() {
        let mut w = mark();
        let t0 = Instant::now();
        w.claimed(None, 4, [], t0);
        assert_eq!(w.start(t0), None);
    }

    proptest! {
        /// Whatever the claims return, the start never passes the newest claimed `run_at`
        /// minus the margin, and never moves back.
        #[test]
        fn the_start_stays_a_margin_below_the_newest_claimed_and_never_moves_back(
            batches in proptest::collection::vec(proptest::collection::vec(0i64..10_000, 0..8), 1..30),
        ) {
            let mut w = mark();
            let now = Instant::now();
            let mut newest: Option<i64> = None;
            let mut last_start: Option<DateTime<Utc>> = None;
            for batch in batches {
                let start = w.start(now);
                if let (Some(start), Some(last)) = (start, last_start) {
                    prop_assert!(start >= last);
                }
                if let Some(start) = start {
                    prop_assert_eq!(Some(start), newest.map(|n| at(n - 100)));
                    last_start = Some(start);
                }
                for &ms in &batch {
                    newest = Some(newest.map_or(ms, |n| n.max(ms)));
                }
                w.claimed(start, 8, batch.into_iter().map(at), now);
            }
        }
    }
}
