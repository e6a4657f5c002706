//! The circuit breaker: a pure state machine over a sliding window, with no I/O.
//!
//! ```text
//!            failure or slow rate ≥ threshold            waitInOpen elapsed
//!  Closed ─────────(once minimumCalls recorded)──▶ Open ───(on the next call)──▶ HalfOpen
//!    ▲                                              ▲                              │
//!    │                                              └──────── a probe failed ──────┤
//!    └───────────────── all halfOpenProbes succeeded (and not too slow) ──────────┘
//! ```
//!
//! [`BreakerMode::ForcedOpen`] and [`BreakerMode::Disabled`] are states of their own, left
//! only by [`CircuitBreaker::set_mode`].
//!
//! Using it: [`CircuitBreaker::try_acquire`] before the call, then
//! [`Permit::record`] with the outcome and the call's duration. A permit dropped without
//! a record (a cancelled call) is not counted, and gives its half-open probe slot back.
//!
//! The fast paths take no lock and do not allocate: admission while closed reads one
//! atomic word; rejection while open reads it and the clock. Recording into a count window
//! is lock-free: a fast success into a window full of fast successes (a healthy service)
//! only reads the shared totals, so it scales across cores; any other outcome is three
//! atomic operations. A time window takes its own short lock. The breaker's lock is taken
//! only for transitions and half-open probes.
//!
//! A [`Permit`] borrows its breaker: taking one writes nothing shared. (The tower layer,
//! whose permits live on in response bodies, turns the permit of the attempt that answers
//! into an owned one holding an `Arc` of the breaker; a reference count is a write to a
//! shared cache line, so only that path pays for it.)
//!
//! Outcomes recorded for an earlier state (a call admitted while closed that ends after
//! the breaker opened) are ignored: each transition increments a generation kept in the
//! same atomic word as the state. (A record already under way when the state changes may
//! still land in the new window: at most one per thread, a race of nanoseconds.)

mod observer;
pub(crate) mod window;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use observer::{BreakerObserver, NoopObserver, PrometheusObserver};

use crate::config::{BreakerMode, CircuitBreakerConfig};
use crate::pad::CachePadded;
use window::{Counts, Window, percent};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are rejected until the wait is over.
    Open,
    /// A few probe calls pass; their outcomes decide between closed and open.
    HalfOpen,
    /// Calls are rejected until the mode is changed.
    ForcedOpen,
    /// Calls pass and nothing is recorded.
    Disabled,
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const DISABLED: u64 = 4;
const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

impl State {
    /// The name used in logs and metric labels (`closed`, `open`, `half_open`,
    /// `forced_open`, `disabled`).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::Disabled => "disabled",
        }
    }

    /// The numeric code used by the state gauge.
    pub fn code(self) -> u8 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::ForcedOpen => 3,
            State::Disabled => 4,
        }
    }

    fn from_word(word: u64) -> State {
        match word & STATE_MASK {
            CLOSED => State::Closed,
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            FORCED_OPEN => State::ForcedOpen,
            _ => State::Disabled,
        }
    }

    fn bits(self) -> u64 {
        match self {
            State::Closed => CLOSED,
            State::Open => OPEN,
            State::HalfOpen => HALF_OPEN,
            State::ForcedOpen => FORCED_OPEN,
            State::Disabled => DISABLED,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended, as far as the breaker is concerned (see [`crate::classify::Classify`]
/// for turning a response into one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The callee did its job (a caller's mistake, such as an invalid argument, is a success
    /// for the breaker).
    Success,
    /// The callee failed.
    Failure,
}

/// A call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// The state that rejected it: `Open`, `HalfOpen` (all probe slots taken) or `ForcedOpen`.
    pub state: State,
    /// When a call will next be admitted as a probe, if known: the end of the open wait.
    /// `None` while half-open (probes are in flight; try again shortly) or forced open.
    pub next_probe_at: Option<Instant>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.next_probe_at {
            Some(at) => write!(
                f,
                "circuit breaker {}; next probe in {:?}",
                self.state,
                at.saturating_duration_since(Instant::now())
            ),
            None => write!(f, "circuit breaker {}", self.state),
        }
    }
}

impl std::error::Error for Rejected {}

/// Thresholds, fixed at construction.
#[derive(Debug)]
struct Settings {
    failure_rate_threshold: f64,
    slow_call_rate_threshold: f64,
    slow_call_duration: Duration,
    minimum_calls: u32,
    wait_in_open: Duration,
    half_open_probes: u32,
}

#[derive(Debug)]
struct Core {
    probes_in_flight: u32,
    probes_done: u32,
    probes_slow: u32,
}

#[derive(Debug)]
struct StateWords {
    /// Generation (upper bits) and state (lower [`STATE_BITS`]); changed only under `core`'s
    /// lock, read without it.
    word: AtomicU64,
    /// While open: nanoseconds from `epoch` to the end of the wait. Written before `word`.
    open_until: AtomicU64,
}

/// A state change, reported after the lock is released.
struct Transition {
    from: State,
    to: State,
    counts: Counts,
}

/// A circuit breaker for one external service. Share it (`Arc`) between all callers of
/// that service.
pub struct CircuitBreaker {
    /// Read by every call, written only on transitions: on cache lines of its own, so that
    /// neither the window's counters nor an `Arc`'s reference counts share them.
    state: CachePadded<StateWords>,
    epoch: Instant,
    settings: Settings,
    window: Window,
    core: Mutex<Core>,
    name: Box<str>,
    observer: Arc<dyn BreakerObserver>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A breaker named `name` (used in logs and metrics: one per external service),
    /// closed (or in the configured mode), without an observer. `config` should have
    /// passed [`crate::ResilienceConfig::validate`]; out-of-range values are clamped.
    pub fn new(name: impl Into<String>, config: &CircuitBreakerConfig) -> Self {
        let state = match config.mode {
            BreakerMode::Enabled => CLOSED,
            BreakerMode::Disabled => DISABLED,
            BreakerMode::ForcedOpen => FORCED_OPEN,
        };
        Self {
            state: CachePadded(StateWords {
                word: AtomicU64::new(state),
                open_until: AtomicU64::new(0),
            }),
            epoch: Instant::now(),
            settings: Settings {
                failure_rate_threshold: config.failure_rate_threshold,
                slow_call_rate_threshold: config.slow_call_rate_threshold,
                slow_call_duration: config.slow_call_duration,
                minimum_calls: config.minimum_calls.max(1),
                wait_in_open: config.wait_in_open,
                half_open_probes: config.half_open_probes.max(1),
            },
            window: Window::from_config(&config.window),
            core: Mutex::new(Core {
                probes_in_flight: 0,
                probes_done: 0,
                probes_slow: 0,
            }),
            name: name.into().into_boxed_str(),
            observer: Arc::new(NoopObserver),
        }
    }

    /// Attaches an observer of transitions (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn BreakerObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state. An `Open` breaker whose wait is over still reports `Open` until
    /// the next call turns it half-open; compare [`Self::next_probe_at`] with now.
    pub fn state(&self) -> State {
        State::from_word(self.state.0.word.load(Ordering::Acquire))
    }

    /// When the breaker is open: the end of its wait, when the next call will be admitted
    /// as a probe. `None` in every other state.
    pub fn next_probe_at(&self) -> Option<Instant> {
        let word = self.state.0.word.load(Ordering::Acquire);
        (word & STATE_MASK == OPEN).then(|| self.open_until())
    }

    /// Calls, failure rate and slow-call rate (percent) in the window now.
    pub fn snapshot(&self) -> Snapshot {
        let second = self.second(Instant::now());
        let counts = self.window.counts(second);
        Snapshot {
            state: self.state(),
            calls: counts.calls,
            failure_rate: counts.failure_rate(),
            slow_call_rate: counts.slow_rate(),
        }
    }

    /// Asks to make a call. While closed or disabled this reads one atomic word; while open
    /// it also reads the clock, and rejects without locking or allocating.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.admit(Instant::now).map(|ticket| Permit {
            breaker: self,
            ticket,
        })
    }

    /// [`Self::try_acquire`] for a caller that has just read the clock: `now` stands for
    /// the current time, so rejection while open reads no clock at all.
    #[inline]
    pub fn try_acquire_at(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        self.admit(|| now).map(|ticket| Permit {
            breaker: self,
            ticket,
        })
    }

    /// Changes the mode at run time: `ForcedOpen` and `Disabled` take effect at once;
    /// `Enabled` leaves either of them for `Closed` with an empty window (and does nothing
    /// if the breaker is already enabled).
    pub fn set_mode(&self, mode: BreakerMode) {
        let transition = {
            let mut core = self.lock();
            let word = self.state.0.word.load(Ordering::Acquire);
            let from = State::from_word(word);
            let to = match (mode, from) {
                (BreakerMode::Enabled, State::ForcedOpen | State::Disabled) => State::Closed,
                (BreakerMode::Enabled, _) => from,
                (BreakerMode::Disabled, _) => State::Disabled,
                (BreakerMode::ForcedOpen, _) => State::ForcedOpen,
            };
            if to == from {
                None
            } else {
                Some(self.transition(&mut core, word, to, Instant::now()))
            }
        };
        if let Some(t) = transition {
            self.report(t);
        }
    }

    #[inline]
    fn admit(&self, now: impl FnOnce() -> Instant) -> Result<Ticket, Rejected> {
        let word = self.state.0.word.load(Ordering::Acquire);
        match word & STATE_MASK {
            CLOSED => Ok(Ticket::new(word, Kind::Closed)),
            DISABLED => Ok(Ticket::new(word, Kind::Passthrough)),
            FORCED_OPEN => Err(Rejected {
                state: State::ForcedOpen,
                next_probe_at: None,
            }),
            OPEN => {
                let until = self.open_until();
                let now = now();
                if now < until {
                    Err(Rejected {
                        state: State::Open,
                        next_probe_at: Some(until),
                    })
                } else {
                    self.admit_slow(now)
                }
            }
            _ => self.admit_slow(now()),
        }
    }

    /// Admission under the lock: open with the wait over, or half-open.
    #[cold]
    fn admit_slow(&self, now: Instant) -> Result<Ticket, Rejected> {
        let mut transition = None;
        let result = {
            let mut core = self.lock();
            let mut word = self.state.0.word.load(Ordering::Acquire);
            if word & STATE_MASK == OPEN {
                let until = self.open_until();
                if now < until {
                    return Err(Rejected {
                        state: State::Open,
                        next_probe_at: Some(until),
                    });
                }
                let t = self.transition(&mut core, word, State::HalfOpen, now);
                word = self.state.0.word.load(Ordering::Acquire);
                transition = Some(t);
            }
            match word & STATE_MASK {
                HALF_OPEN => {
                    if core.probes_in_flight + core.probes_done < self.settings.half_open_probes {
                        core.probes_in_flight += 1;
                        Ok(Ticket::new(word, Kind::Probe))
                    } else {
                        Err(Rejected {
                            state: State::HalfOpen,
                            next_probe_at: None,
                        })
                    }
                }
                CLOSED => Ok(Ticket::new(word, Kind::Closed)),
                DISABLED => Ok(Ticket::new(word, Kind::Passthrough)),
                _ => Err(Rejected {
                    state: State::ForcedOpen,
                    next_probe_at: None,
                }),
            }
        };
        if let Some(t) = transition {
            self.report(t);
        }
        result
    }

    /// Records the outcome of an admitted call.
    fn finish(&self, ticket: Ticket, outcome: Outcome, elapsed: Duration) {
        if ticket.kind == Kind::Passthrough {
            return;
        }
        // The state changed since admission: the outcome belongs to an earlier state.
        if self.state.0.word.load(Ordering::Acquire) != ticket.word {
            return;
        }
        let failure = outcome == Outcome::Failure;
        let slow = elapsed >= self.settings.slow_call_duration;
        let transition = match ticket.kind {
            Kind::Closed => self.record_closed(ticket.word, failure, slow),
            Kind::Probe => {
                let mut core = self.lock();
                let word = self.state.0.word.load(Ordering::Acquire);
                if word != ticket.word {
                    return;
                }
                self.record_probe(&mut core, word, failure, slow)
            }
            Kind::Passthrough => None,
        };
        if let Some(t) = transition {
            self.report(t);
        }
    }

    /// Records into the window without the breaker's lock; takes it only to open.
    fn record_closed(&self, word: u64, failure: bool, slow: bool) -> Option<Transition> {
        let now = self.window.needs_clock().then(Instant::now);
        let second = now.map_or(0, |now| self.second(now));
        let counts = self.window.record(second, failure, slow);
        if !self.trips(counts) {
            return None;
        }
        let mut core = self.lock();
        if self.state.0.word.load(Ordering::Acquire) != word {
            return None; // another call opened it first
        }
        // Decide on settled figures, not on one racing record's view.
        if !self.trips(self.window.counts(second)) {
            return None;
        }
        Some(self.transition(
            &mut core,
            word,
            State::Open,
            now.unwrap_or_else(Instant::now),
        ))
    }

    /// Whether the window's figures open the breaker.
    fn trips(&self, counts: Counts) -> bool {
        let s = &self.settings;
        counts.calls >= s.minimum_calls
            && (counts.failure_rate() >= s.failure_rate_threshold
                || counts.slow_rate() >= s.slow_call_rate_threshold)
    }

    fn record_probe(
        &self,
        core: &mut Core,
        word: u64,
        failure: bool,
        slow: bool,
    ) -> Option<Transition> {
        core.probes_in_flight -= 1;
        core.probes_done += 1;
        core.probes_slow += u32::from(slow);
        let s = &self.settings;
        if failure {
            return Some(self.transition(core, word, State::Open, Instant::now()));
        }
        if core.probes_done < s.half_open_probes {
            return None;
        }
        let to = if percent(core.probes_slow, core.probes_done) >= s.slow_call_rate_threshold {
            State::Open
        } else {
            State::Closed
        };
        Some(self.transition(core, word, to, Instant::now()))
    }

    /// A permit was dropped without a record.
    fn abandon(&self, ticket: Ticket) {
        if ticket.kind != Kind::Probe {
            return;
        }
        let mut core = self.lock();
        if self.state.0.word.load(Ordering::Acquire) == ticket.word {
            core.probes_in_flight -= 1;
        }
    }

    /// Moves to `to` under the lock: a new generation, the open deadline, a fresh window or
    /// fresh probe counters.
    fn transition(&self, core: &mut Core, word: u64, to: State, now: Instant) -> Transition {
        let from = State::from_word(word);
        let second = self.second(now);
        let counts = self.window.counts(second);
        match to {
            State::Open => {
                let until = now + self.settings.wait_in_open;
                let nanos = until.saturating_duration_since(self.epoch).as_nanos();
                self.state
                    .0
                    .open_until
                    .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
            }
            State::HalfOpen => {
                core.probes_in_flight = 0;
                core.probes_done = 0;
                core.probes_slow = 0;
            }
            State::Closed => self.window.reset(),
            State::ForcedOpen | State::Disabled => {}
        }
        let generation = (word >> STATE_BITS).wrapping_add(1);
        self.state
            .0
            .word
            .store((generation << STATE_BITS) | to.bits(), Ordering::Release);
        Transition { from, to, counts }
    }

    /// Logs and reports a transition, outside the lock.
    fn report(&self, t: Transition) {
        let failure_rate = t.counts.failure_rate();
        let slow_call_rate = t.counts.slow_rate();
        if t.to == State::Open || t.to == State::ForcedOpen {
            tracing::warn!(
                breaker = %self.name,
                from = t.from.as_str(),
                to = t.to.as_str(),
                calls = t.counts.calls,
                failure_rate,
                slow_call_rate,
                wait_in_open = ?self.settings.wait_in_open,
                "circuit breaker opened"
            );
        } else {
            tracing::info!(
                breaker = %self.name,
                from = t.from.as_str(),
                to = t.to.as_str(),
                "circuit breaker state changed"
            );
        }
        self.observer.on_transition(&self.name, t.from, t.to);
    }

    fn open_until(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.state.0.open_until.load(Ordering::Acquire))
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Window figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Calls in the window.
    pub calls: u32,
    /// Failed calls in the window, percent.
    pub failure_rate: f64,
    /// Slow calls in the window, percent.
    pub slow_call_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Admitted while closed: recorded in the window.
    Closed,
    /// Admitted while half-open: holds a probe slot.
    Probe,
    /// Admitted while disabled: nothing to record.
    Passthrough,
}

#[derive(Debug, Clone, Copy)]
struct Ticket {
    /// The state word at admission; the outcome counts only if it is unchanged.
    word: u64,
    kind: Kind,
    done: bool,
}

impl Ticket {
    fn new(word: u64, kind: Kind) -> Self {
        Self {
            word,
            kind,
            done: false,
        }
    }
}

/// Leave to make one call, borrowed from the breaker. Record the outcome with
/// [`Permit::record`]; dropping it unrecorded counts nothing.
#[derive(Debug)]
#[must_use = "record the call's outcome with `record`"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Ticket,
}

impl Permit<'_> {
    /// Records how the call ended and how long it took (`elapsed` at or above
    /// `slowCallDuration` makes it a slow call).
    pub fn record(mut self, outcome: Outcome, elapsed: Duration) {
        self.ticket.done = true;
        self.breaker.finish(self.ticket, outcome, elapsed);
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.kind == Kind::Probe
    }
}

impl Permit<'_> {
    /// The same permit, holding `breaker` (the breaker it was taken from, in its `Arc`).
    pub(crate) fn into_owned(mut self, breaker: &Arc<CircuitBreaker>) -> OwnedPermit {
        debug_assert!(std::ptr::eq(self.breaker, &**breaker), "another breaker");
        let ticket = self.ticket;
        // This permit no longer answers for the call: the owned one does.
        self.ticket.done = true;
        OwnedPermit {
            breaker: Arc::clone(breaker),
            ticket,
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.ticket.done {
            self.breaker.abandon(self.ticket);
        }
    }
}

/// A [`Permit`] holding an `Arc` of its breaker, so it can live in a `'static` value (a
/// response body still streaming). Made by [`Permit::into_owned`].
#[derive(Debug)]
#[must_use = "record the call's outcome with `record`"]
pub(crate) struct OwnedPermit {
    breaker: Arc<CircuitBreaker>,
    ticket: Ticket,
}

impl OwnedPermit {
    /// See [`Permit::record`].
    pub(crate) fn record(mut self, outcome: Outcome, elapsed: Duration) {
        self.ticket.done = true;
        self.breaker.finish(self.ticket, outcome, elapsed);
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.ticket.done {
            self.breaker.abandon(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests;
