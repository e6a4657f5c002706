//! The retry budget (Finagle's `RetryBudget`, Linkerd's retry budget).
//!
//! Each original call deposits `ratio` tokens, each retry withdraws one; deposits and
//! withdrawals expire after `ttl`. On top, a reserve of `minRetriesPerSecond × ttl` tokens is
//! always there, so a client with little traffic can still retry. Over any `ttl`, retries
//! are therefore at most `ratio × calls + minRetriesPerSecond × ttl`: in a total outage the
//! load on the callee grows by at most that much, whatever `maxAttempts` says.
//!
//! The ledger is a ring of ten time slices over `ttl`, each one atomic word holding the
//! slice's number and its net tokens, so deposits (one per call) and withdrawals are a
//! compare-and-swap on one word, without a lock. There are eight such rings, each on cache
//! lines of its own, and a thread always writes to the same one: the deposit every call
//! makes does not bounce one cache line between cores. Reading the balance (only when a
//! retry is considered) sums the 80 words. Two retries racing for the last token may both
//! get it: the budget can be overdrawn by at most the number of threads withdrawing at that
//! instant.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryBudgetConfig;
use crate::pad::CachePadded;

/// Token units per token: deposits of a fraction of a token stay exact enough.
const SCALE: i64 = 1000;
/// Time slices in a ring.
const SLICES: u64 = 10;
/// Rings (a power of two).
const SHARDS: usize = 8;

/// The ring this thread writes to.
#[inline]
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

type Ring = [AtomicU64; SLICES as usize];

const VALUE_BITS: u32 = 36;
const VALUE_MASK: u64 = (1 << VALUE_BITS) - 1;
const VALUE_MAX: i64 = (1 << (VALUE_BITS - 1)) - 1;
const VALUE_MIN: i64 = -(1 << (VALUE_BITS - 1));
const EPOCH_BITS: u32 = 64 - VALUE_BITS;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;

fn pack(epoch: u64, value: i64) -> u64 {
    ((epoch & EPOCH_MASK) << VALUE_BITS) | (value.clamp(VALUE_MIN, VALUE_MAX) as u64 & VALUE_MASK)
}

fn unpack(word: u64) -> (u64, i64) {
    let value = ((word << EPOCH_BITS) as i64) >> EPOCH_BITS;
    (word >> VALUE_BITS, value)
}

/// How many slices `current` is ahead of `stored` (negative if `stored` is newer: another
/// thread read the clock a little later), in the wrapping epoch space.
fn age(current: u64, stored: u64) -> i64 {
    let diff = current.wrapping_sub(stored) & EPOCH_MASK;
    ((diff << VALUE_BITS) as i64) >> VALUE_BITS
}

/// A retry budget shared by all calls to one service.
pub struct RetryBudget {
    shards: [CachePadded<Ring>; SHARDS],
    /// `2^64 / slice length in ns`, rounded up: the slice number is a multiplication and a
    /// shift instead of a 64-bit division (which costs more than the rest of a deposit).
    slice_reciprocal: u128,
    epoch: Instant,
    deposit: i64,
    reserve: i64,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("balance", &self.balance())
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget with the given settings (validated ranges assumed; a `ttl` under 10 ms is
    /// taken as 10 ms).
    pub fn new(config: &RetryBudgetConfig) -> Self {
        let ttl = config.ttl.max(Duration::from_millis(10));
        let ratio = if config.ratio.is_finite() {
            config.ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        let reserve = f64::from(config.min_retries_per_second) * ttl.as_secs_f64();
        Self {
            shards: Default::default(),
            slice_reciprocal: {
                let slice_nanos = u64::try_from((ttl / SLICES as u32).as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1);
                (1u128 << 64).div_ceil(u128::from(slice_nanos))
            },
            epoch: Instant::now(),
            deposit: (ratio * SCALE as f64).round() as i64,
            reserve: (reserve * SCALE as f64).round() as i64,
        }
    }

    /// An original call: deposits `ratio` tokens.
    #[inline]
    pub fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    /// [`Self::deposit`] for a caller that has just read the clock.
    #[inline]
    pub fn deposit_at(&self, now: Instant) {
        if self.deposit > 0 {
            self.add(self.deposit, now);
        }
    }

    /// A retry: withdraws one token if the balance has one. `false` means no retry.
    pub fn try_withdraw(&self) -> bool {
        let now = Instant::now();
        if self.units(now) >= SCALE {
            self.add(-SCALE, now);
            true
        } else {
            false
        }
    }

    /// Tokens available now, reserve included.
    pub fn balance(&self) -> f64 {
        self.units(Instant::now()) as f64 / SCALE as f64
    }

    #[inline]
    fn current(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        // Rounding up the reciprocal can put an instant a few nanoseconds early into the
        // next slice; the numbering stays monotonic, which is all the ring needs.
        let elapsed = u128::from(u64::try_from(elapsed).unwrap_or(u64::MAX));
        u64::try_from((elapsed * self.slice_reciprocal) >> 64).unwrap_or(u64::MAX)
    }

    #[inline]
    fn add(&self, units: i64, now: Instant) {
        let current = self.current(now);
        let slot = &self.shards[shard()].0[(current % SLICES) as usize];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let (stored, value) = unpack(word);
            let next = match age(current, stored) {
                0 => pack(stored, value.saturating_add(units)),
                // Expired: the slice starts over.
                a if a > 0 => pack(current, units),
                // Newer than our clock reading: add to it.
                _ => pack(stored, value.saturating_add(units)),
            };
            match slot.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    fn units(&self, now: Instant) -> i64 {
        let current = self.current(now);
        let mut total = self.reserve;
        for slot in self.shards.iter().flat_map(|ring| &ring.0) {
            let (stored, value) = unpack(slot.load(Ordering::Acquire));
            if age(current, stored) < SLICES as i64 {
                total += value;
            }
        }
        total
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn budget(ratio: f64, min_retries_per_second: u32, ttl_secs: u64) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            ratio,
            min_retries_per_second,
            ttl: Duration::from_secs(ttl_secs),
        })
    }

    fn withdraw_all(b: &RetryBudget) -> u32 {
        let mut n = 0;
        while b.try_withdraw() {
            n += 1;
            assert!(n < 1_000_000);
        }
        n
    }

    #[test]
    fn packing_round_trips() {
        for (e, v) in [(0, 0), (5, -1000), (EPOCH_MASK, VALUE_MAX), (7, VALUE_MIN)] {
            assert_eq!(unpack(pack(e, v)), (e, v));
        }
        assert_eq!(unpack(pack(1, i64::MAX)).1, VALUE_MAX);
        assert_eq!(age(0, EPOCH_MASK), 1);
        assert_eq!(age(EPOCH_MASK, 0), -1);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_pay_for_a_share_of_retries() {
        let b = budget(0.2, 0, 10);
        assert!(!b.try_withdraw());
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.balance(), 20.0);
        assert_eq!(withdraw_all(&b), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_refills_after_ttl() {
        let b = budget(0.0, 10, 10);
        assert_eq!(withdraw_all(&b), 100);
        advance(Duration::from_secs(5)).await;
        assert_eq!(withdraw_all(&b), 0);
        advance(Duration::from_secs(5)).await;
        assert_eq!(withdraw_all(&b), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let b = budget(0.5, 0, 10);
        for _ in 0..10 {
            b.deposit();
        }
        advance(Duration::from_secs(9)).await;
        assert_eq!(b.balance(), 5.0);
        advance(Duration::from_secs(1)).await;
        assert_eq!(b.balance(), 0.0);
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_budget_allows_nothing() {
        let b = budget(0.0, 0, 10);
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(!b.try_withdraw());
    }

    #[test]
    fn concurrent_deposits_are_all_counted() {
        let b = std::sync::Arc::new(budget(1.0, 0, 3600));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        b.deposit();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(b.balance(), 40_000.0);
    }
}
