//! What the pipeline decided, and the one mapping of its decisions to gRPC statuses.

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::State;
use crate::bulkhead::BulkheadRejected;
use crate::classify::code;

/// What the pipeline decided, or the operation's own error.
#[derive(Debug, thiserror::Error)]
pub enum ResilienceError<E> {
    /// The circuit breaker refused the call. Try again at `next_probe_at` (when known).
    #[error("circuit breaker {state}: call rejected")]
    CircuitOpen {
        /// The breaker's state: `Open`, `HalfOpen` (all probes in flight) or `ForcedOpen`.
        state: State,
        /// When the breaker will admit a probe: the end of its open wait. `None` while
        /// half-open (try again shortly) or forced open.
        next_probe_at: Option<Instant>,
    },
    /// The bulkhead had no slot (and no room, or no time, in its waiting line).
    #[error("{reason}: call rejected")]
    BulkheadFull {
        /// Full at once, or timed out in the line.
        reason: BulkheadRejected,
    },
    /// The caller's deadline passed: before an attempt could start, or during the last one.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The last attempt ran out of `timeout.perAttempt` and no retry was possible.
    #[error("attempt timed out")]
    Timeout,
    /// The operation failed on the last attempt.
    #[error(transparent)]
    Inner(E),
}

/// The gRPC status standing for one of the pipeline's own decisions: what a gRPC caller is
/// told. The layer answers a refused gRPC call with it as a trailers-only response, so a
/// tonic client's `Status` has this code and message, `grpc-retry-pushback-ms` and a
/// `google.rpc.RetryInfo` when [`Self::retry_after`] is known, and a `google.rpc.ErrorInfo`
/// with [`Self::reason`] in [`GrpcStatus::DOMAIN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStatus {
    /// The code (see [`ResilienceError::grpc_code`]).
    pub code: i32,
    /// For people: which service refused, why, and when to come back.
    pub message: String,
    /// For programs (`ErrorInfo.reason`): `CIRCUIT_OPEN`, `BULKHEAD_FULL`,
    /// `DEADLINE_EXCEEDED` or `ATTEMPT_TIMEOUT`. The first two mean the callee never saw the
    /// call (reschedule it without spending an attempt).
    pub reason: &'static str,
    /// How long to wait before calling again, when known: the time to the breaker's next
    /// probe.
    pub retry_after: Option<Duration>,
}

impl GrpcStatus {
    /// `ErrorInfo.domain` of the pipeline's refusals.
    pub const DOMAIN: &'static str = "resilience.appstack";
}

impl<E> ResilienceError<E> {
    /// When the breaker will next admit a call, for a [`ResilienceError::CircuitOpen`].
    pub fn next_probe_at(&self) -> Option<Instant> {
        match self {
            ResilienceError::CircuitOpen { next_probe_at, .. } => *next_probe_at,
            _ => None,
        }
    }

    /// Whether the pipeline refused the call without the callee seeing it (breaker or
    /// bulkhead): the caller may reschedule it.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            ResilienceError::CircuitOpen { .. } | ResilienceError::BulkheadFull { .. }
        )
    }

    /// The gRPC status code of the pipeline's own decisions: `UNAVAILABLE` for an open
    /// breaker (the callee is taken to be down; come back at [`Self::next_probe_at`] when
    /// known), `RESOURCE_EXHAUSTED` for a full bulkhead (our own limit on calls in flight to
    /// it), `DEADLINE_EXCEEDED` for the caller's deadline or the last attempt's timeout.
    /// `None` for the operation's own error, which only its caller can map.
    pub fn grpc_code(&self) -> Option<i32> {
        match self {
            ResilienceError::CircuitOpen { .. } => Some(code::UNAVAILABLE),
            ResilienceError::BulkheadFull { .. } => Some(code::RESOURCE_EXHAUSTED),
            ResilienceError::DeadlineExceeded | ResilienceError::Timeout => {
                Some(code::DEADLINE_EXCEEDED)
            }
            ResilienceError::Inner(_) => None,
        }
    }

    /// The whole gRPC status of the pipeline's own decisions, for the external service
    /// `service` (named in the message): [`Self::grpc_code`], a message, a reason and the
    /// time to come back. `None` for the operation's own error.
    pub fn grpc_status(&self, service: &str) -> Option<GrpcStatus> {
        let code = self.grpc_code()?;
        // The same decision without the operation's error type, to show it.
        let (decision, reason) = match *self {
            ResilienceError::CircuitOpen {
                state,
                next_probe_at,
            } => (
                ResilienceError::<Infallible>::CircuitOpen {
                    state,
                    next_probe_at,
                },
                "CIRCUIT_OPEN",
            ),
            ResilienceError::BulkheadFull { reason } => {
                (ResilienceError::BulkheadFull { reason }, "BULKHEAD_FULL")
            }
            ResilienceError::DeadlineExceeded => {
                (ResilienceError::DeadlineExceeded, "DEADLINE_EXCEEDED")
            }
            ResilienceError::Timeout | ResilienceError::Inner(_) => {
                (ResilienceError::Timeout, "ATTEMPT_TIMEOUT")
            }
        };
        let retry_after = self
            .next_probe_at()
            .map(|at| at.saturating_duration_since(Instant::now()));
        let message = match retry_after {
            Some(wait) => {
                // Shown to the millisecond, rounded up.
                let millis = wait.as_nanos().div_ceil(1_000_000);
                let shown = Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX));
                format!("{service}: {decision}; next probe in {shown:?}")
            }
            None => format!("{service}: {decision}"),
        };
        Some(GrpcStatus {
            code,
            message,
            reason,
            retry_after,
        })
    }

    /// The operation's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            ResilienceError::Inner(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Error = ResilienceError<std::io::Error>;

    #[tokio::test(start_paused = true)]
    async fn each_decision_has_its_grpc_status() {
        let in_4s = Instant::now() + Duration::from_secs(4);
        let open = Error::CircuitOpen {
            state: State::Open,
            next_probe_at: Some(in_4s),
        };
        let status = open.grpc_status("payments").unwrap();
        assert_eq!(
            status,
            GrpcStatus {
                code: code::UNAVAILABLE,
                message: "payments: circuit breaker open: call rejected; next probe in 4s".into(),
                reason: "CIRCUIT_OPEN",
                retry_after: Some(Duration::from_secs(4)),
            }
        );
        let forced = Error::CircuitOpen {
            state: State::ForcedOpen,
            next_probe_at: None,
        };
        let status = forced.grpc_status("payments").unwrap();
        assert_eq!((status.code, status.retry_after), (code::UNAVAILABLE, None));
        assert_eq!(
            status.message,
            "payments: circuit breaker forced_open: call rejected"
        );
        let full = Error::BulkheadFull {
            reason: BulkheadRejected::Full,
        };
        let status = full.grpc_status("payments").unwrap();
        assert_eq!(
            (status.code, status.reason, status.message.as_str()),
            (
                code::RESOURCE_EXHAUSTED,
                "BULKHEAD_FULL",
                "payments: bulkhead full: call rejected"
            )
        );
        for (error, reason) in [
            (Error::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Error::Timeout, "ATTEMPT_TIMEOUT"),
        ] {
            let status = error.grpc_status("payments").unwrap();
            assert_eq!(
                (status.code, status.reason),
                (code::DEADLINE_EXCEEDED, reason)
            );
            assert_eq!(error.grpc_code(), Some(status.code));
        }
        let inner = Error::Inner(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(inner.grpc_code(), None);
        assert!(inner.grpc_status("payments").is_none());
    }
}
