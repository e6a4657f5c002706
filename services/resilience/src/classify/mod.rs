//! Classifying call outcomes: retry or not ([`Classification`]), and failure or not for the
//! circuit breaker ([`Outcome`]). The one home of every such judgement:
//!
//! - the [`Classify`] trait, which the [`Pipeline`](crate::Pipeline) asks about each
//!   attempt's [`Attempt`](crate::Attempt);
//! - the protocol rules, pure: [`GrpcClassifier`] over a status code and its metadata
//!   ([`GrpcResponse`]), [`HttpClassifier`] over a status and its headers or a
//!   [`TransportError`] ([`HttpResponse`]), [`retry_after`];
//! - the same rules over what the tower layer sees: its responses (with [`grpc_code`],
//!   which also reads the trailers the layer read ahead), the transport errors found in an
//!   error's source chain ([`transport_error`]), and the end of a gRPC body passed on as it
//!   streamed ([`StreamEnd`]).

mod response;

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

pub use response::{GRPC_STATUS, StreamEnd, grpc_code, transport_error};

use crate::breaker::Outcome;

/// What the retry policy should make of one attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// Done: return it to the caller.
    Success,
    /// A transient failure: another attempt may succeed. `pushback` is the delay the server
    /// asked for (`Retry-After`, `grpc-retry-pushback-ms`); it replaces the computed backoff.
    Retryable {
        /// The server's requested delay before the next attempt, if it sent one.
        pushback: Option<Duration>,
    },
    /// Another attempt would fail the same way (or must not be made): return it.
    Permanent,
    /// The server asked the client not to retry (a negative or malformed
    /// `grpc-retry-pushback-ms`): return it, make no further attempt.
    StopRetrying,
}

impl Classification {
    /// The breaker outcome a classifier reports unless it knows better: `Retryable` and
    /// `StopRetrying` are failures of the callee; `Success` and `Permanent` are not (a
    /// permanent outcome is usually the caller's mistake, such as an invalid argument).
    pub fn default_outcome(self) -> Outcome {
        match self {
            Classification::Success | Classification::Permanent => Outcome::Success,
            Classification::Retryable { .. } | Classification::StopRetrying => Outcome::Failure,
        }
    }
}

/// Classifies the outcome of one attempt, of type `R`.
pub trait Classify<R: ?Sized> {
    /// Whether to retry after this outcome.
    fn classify(&self, response: &R) -> Classification;

    /// Whether this outcome counts as a failure of the callee for the circuit breaker.
    /// Defaults to [`Classification::default_outcome`].
    fn outcome(&self, response: &R) -> Outcome {
        self.classify(response).default_outcome()
    }
}

impl<R: ?Sized, F: Fn(&R) -> Classification> Classify<R> for F {
    fn classify(&self, response: &R) -> Classification {
        self(response)
    }
}

/// gRPC status codes, numbered as in `tonic::Code` and the gRPC specification.
pub mod code {
    /// Not an error.
    pub const OK: i32 = 0;
    /// The operation was cancelled, typically by the caller.
    pub const CANCELLED: i32 = 1;
    /// Unknown error.
    pub const UNKNOWN: i32 = 2;
    /// The client specified an invalid argument.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The deadline expired before the operation could complete.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// Some requested entity was not found.
    pub const NOT_FOUND: i32 = 5;
    /// The entity a client attempted to create already exists.
    pub const ALREADY_EXISTS: i32 = 6;
    /// The caller does not have permission.
    pub const PERMISSION_DENIED: i32 = 7;
    /// Some resource has been exhausted (quota, or the server is overloaded).
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// The system is not in a state required for the operation.
    pub const FAILED_PRECONDITION: i32 = 9;
    /// The operation was aborted, typically by a concurrency conflict.
    pub const ABORTED: i32 = 10;
    /// The operation was attempted past the valid range.
    pub const OUT_OF_RANGE: i32 = 11;
    /// `UNIMPLEMENTED`: the server does not offer this method.
    pub const UNIMPLEMENTED: i32 = 12;
    /// Internal error.
    pub const INTERNAL: i32 = 13;
    /// The service is currently unavailable (transient).
    pub const UNAVAILABLE: i32 = 14;
    /// Unrecoverable data loss or corruption.
    pub const DATA_LOSS: i32 = 15;
    /// The request does not have valid authentication credentials.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// A set of gRPC status codes (a bit set; codes outside `0..32` are never members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CodeSet(u32);

impl CodeSet {
    /// No codes.
    pub const fn empty() -> Self {
        CodeSet(0)
    }

    /// The set of `codes`.
    pub const fn of(codes: &[i32]) -> Self {
        let mut set = CodeSet(0);
        let mut i = 0;
        while i < codes.len() {
            set = set.with(codes[i]);
            i += 1;
        }
        set
    }

    /// This set plus `code`.
    pub const fn with(self, code: i32) -> Self {
        if code >= 0 && code < 32 {
            CodeSet(self.0 | (1 << code))
        } else {
            self
        }
    }

    /// This set without `code`.
    pub const fn without(self, code: i32) -> Self {
        if code >= 0 && code < 32 {
            CodeSet(self.0 & !(1 << code))
        } else {
            self
        }
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: i32) -> bool {
        code >= 0 && code < 32 && self.0 & (1 << code) != 0
    }
}

/// The outcome of one gRPC attempt: its status code (`tonic::Status::code() as i32`, or
/// `0` for a response) and the metadata it came with (headers or trailers).
#[derive(Debug, Clone, Copy)]
pub struct GrpcResponse<'a> {
    /// The status code.
    pub code: i32,
    /// The response metadata, where `grpc-retry-pushback-ms` is looked up.
    pub metadata: &'a HeaderMap,
}

/// The header a gRPC server uses to ask for a delay before the retry (gRFC A6).
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// Classifies gRPC outcomes, after gRFC A6 and the gRPC status-code guide.
///
/// Retryable by default: `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, and `DEADLINE_EXCEEDED` (an
/// attempt's own timeout; once the caller's overall deadline has passed, the deadline rule
/// stops the retries anyway). With a retryable code, `grpc-retry-pushback-ms: <n>` sets the
/// delay to `n` ms, and a negative or malformed value stops the retries.
///
/// `ABORTED` is *not* retried: the status-code guide asks for a retry "at a higher level"
/// (the whole read-modify-write sequence), which a transport-level retry of the last call
/// cannot do. `CANCELLED` is not retried either: usually the caller gave up. Every other
/// code is permanent.
///
/// Failures for the circuit breaker by default: `UNKNOWN`, `DEADLINE_EXCEEDED`,
/// `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` — the codes that say the
/// callee is broken or overloaded. A caller's mistake (`INVALID_ARGUMENT`, `NOT_FOUND`,
/// `PERMISSION_DENIED`, …) leaves the breaker alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcClassifier {
    retryable: CodeSet,
    failures: CodeSet,
}

impl GrpcClassifier {
    /// The default retryable codes.
    pub const DEFAULT_RETRYABLE: CodeSet = CodeSet::of(&[
        code::UNAVAILABLE,
        code::RESOURCE_EXHAUSTED,
        code::DEADLINE_EXCEEDED,
    ]);

    /// The default failure codes.
    pub const DEFAULT_FAILURES: CodeSet = CodeSet::of(&[
        code::UNKNOWN,
        code::DEADLINE_EXCEEDED,
        code::RESOURCE_EXHAUSTED,
        code::INTERNAL,
        code::UNAVAILABLE,
        code::DATA_LOSS,
    ]);

    /// The defaults described above.
    pub const fn new() -> Self {
        Self {
            retryable: Self::DEFAULT_RETRYABLE,
            failures: Self::DEFAULT_FAILURES,
        }
    }

    /// Replaces the retryable codes (`OK` is never retried).
    pub const fn with_retryable(mut self, codes: CodeSet) -> Self {
        self.retryable = codes.without(code::OK);
        self
    }

    /// Replaces the codes that count as failures for the breaker (`OK` never does).
    pub const fn with_failures(mut self, codes: CodeSet) -> Self {
        self.failures = codes.without(code::OK);
        self
    }
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classify<GrpcResponse<'_>> for GrpcClassifier {
    fn classify(&self, response: &GrpcResponse<'_>) -> Classification {
        if response.code == code::OK {
            return Classification::Success;
        }
        if !self.retryable.contains(response.code) {
            return Classification::Permanent;
        }
        match response.metadata.get(GRPC_RETRY_PUSHBACK_MS) {
            None => Classification::Retryable { pushback: None },
            Some(value) => match value.to_str().ok().map(str::trim).map(str::parse::<i64>) {
                Some(Ok(ms)) if ms >= 0 => Classification::Retryable {
                    pushback: Some(Duration::from_millis(ms.unsigned_abs())),
                },
                _ => Classification::StopRetrying,
            },
        }
    }

    fn outcome(&self, response: &GrpcResponse<'_>) -> Outcome {
        if self.failures.contains(response.code) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

/// A set of HTTP status codes `100..=611` (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    /// No statuses.
    pub const fn empty() -> Self {
        StatusSet([0; 8])
    }

    /// This set plus every status in `from..=to`.
    pub const fn with_range(mut self, from: u16, to: u16) -> Self {
        let mut s = from;
        while s <= to {
            if s >= 100 && s < 612 {
                let i = (s - 100) as usize;
                self.0[i / 64] |= 1 << (i % 64);
            }
            s += 1;
        }
        self
    }

    /// This set plus `status`.
    pub const fn with(self, status: u16) -> Self {
        self.with_range(status, status)
    }

    /// This set without `status`.
    pub const fn without(mut self, status: u16) -> Self {
        if status >= 100 && status < 612 {
            let i = (status - 100) as usize;
            self.0[i / 64] &= !(1 << (i % 64));
        }
        self
    }

    /// Whether `status` is in the set.
    pub const fn contains(self, status: u16) -> bool {
        if status >= 100 && status < 612 {
            let i = (status - 100) as usize;
            self.0[i / 64] & (1 << (i % 64)) != 0
        } else {
            false
        }
    }
}

/// How an HTTP attempt failed without a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The connection could not be made: the request never left, so a retry is always safe.
    Connect,
    /// The attempt's own timeout fired.
    Timeout,
    /// The connection broke after the request may have been sent (reset, protocol error).
    Other,
}

/// The outcome of one HTTP attempt.
#[derive(Debug, Clone, Copy)]
pub enum HttpResponse<'a> {
    /// A response arrived.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its headers, where `Retry-After` is looked up.
        headers: &'a HeaderMap,
    },
    /// No response.
    Error(TransportError),
}

/// Classifies HTTP outcomes.
///
/// Retryable by default: `408`, `429`, and every `5xx` except `501 Not Implemented` and
/// `505 HTTP Version Not Supported` (which no retry fixes); connection failures and attempt
/// timeouts. `Retry-After` (delay in seconds, or an HTTP date) on a retryable response sets
/// the delay; a malformed one is ignored. Any other `4xx` is permanent, as is a connection
/// broken after the request was sent ([`TransportError::Other`]: the server may have acted
/// on it; the caller knows whether the request is idempotent, this classifier does not).
///
/// Failures for the circuit breaker by default: the retryable statuses, and every transport
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    retryable: StatusSet,
    failures: StatusSet,
}

impl HttpClassifier {
    /// The default retryable statuses.
    pub const DEFAULT_RETRYABLE: StatusSet = StatusSet::empty()
        .with(408)
        .with(429)
        .with_range(500, 599)
        .without(501)
        .without(505);

    /// The default failure statuses.
    pub const DEFAULT_FAILURES: StatusSet = Self::DEFAULT_RETRYABLE;

    /// The defaults described above.
    pub const fn new() -> Self {
        Self {
            retryable: Self::DEFAULT_RETRYABLE,
            failures: Self::DEFAULT_FAILURES,
        }
    }

    /// Replaces the retryable statuses.
    pub const fn with_retryable(mut self, statuses: StatusSet) -> Self {
        self.retryable = statuses;
        self
    }

    /// Replaces the statuses that count as failures for the breaker.
    pub const fn with_failures(mut self, statuses: StatusSet) -> Self {
        self.failures = statuses;
        self
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classify<HttpResponse<'_>> for HttpClassifier {
    fn classify(&self, response: &HttpResponse<'_>) -> Classification {
        match *response {
            HttpResponse::Response { status, headers } => {
                if !self.retryable.contains(status.as_u16()) {
                    if status.is_client_error() || status.is_server_error() {
                        return Classification::Permanent;
                    }
                    return Classification::Success;
                }
                let pushback = headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now()));
                Classification::Retryable { pushback }
            }
            HttpResponse::Error(TransportError::Connect | TransportError::Timeout) => {
                Classification::Retryable { pushback: None }
            }
            HttpResponse::Error(TransportError::Other) => Classification::Permanent,
        }
    }

    fn outcome(&self, response: &HttpResponse<'_>) -> Outcome {
        match *response {
            HttpResponse::Response { status, .. } if !self.failures.contains(status.as_u16()) => {
                Outcome::Success
            }
            _ => Outcome::Failure,
        }
    }
}

/// Parses a `Retry-After` value: a number of seconds, or an HTTP date (the delay is then
/// the time from `now` to that date, zero if it has passed). `None` if malformed.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn grpc(code: i32, pushback: Option<&str>) -> (Classification, Outcome) {
        let mut metadata = HeaderMap::new();
        if let Some(p) = pushback {
            metadata.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from_str(p).unwrap());
        }
        let r = GrpcResponse {
            code,
            metadata: &metadata,
        };
        let c = GrpcClassifier::new();
        (c.classify(&r), c.outcome(&r))
    }

    const RETRY: Classification = Classification::Retryable { pushback: None };

    #[test]
    fn grpc_codes() {
        assert_eq!(
            grpc(code::OK, None),
            (Classification::Success, Outcome::Success)
        );
        for c in [
            code::UNAVAILABLE,
            code::RESOURCE_EXHAUSTED,
            code::DEADLINE_EXCEEDED,
        ] {
            assert_eq!(grpc(c, None), (RETRY, Outcome::Failure), "code {c}");
        }
        for c in [
            code::INVALID_ARGUMENT,
            code::NOT_FOUND,
            code::ALREADY_EXISTS,
            code::PERMISSION_DENIED,
            code::UNAUTHENTICATED,
            code::FAILED_PRECONDITION,
            code::UNIMPLEMENTED,
            code::OUT_OF_RANGE,
            code::ABORTED,
            code::CANCELLED,
        ] {
            assert_eq!(
                grpc(c, None),
                (Classification::Permanent, Outcome::Success),
                "code {c}"
            );
        }
        for c in [code::INTERNAL, code::UNKNOWN, code::DATA_LOSS] {
            assert_eq!(
                grpc(c, None),
                (Classification::Permanent, Outcome::Failure),
                "code {c}"
            );
        }
        assert_eq!(grpc(99, None).0, Classification::Permanent);
        assert_eq!(grpc(-1, None).0, Classification::Permanent);
    }

    #[test]
    fn grpc_pushback() {
        assert_eq!(
            grpc(code::UNAVAILABLE, Some("250")).0,
            Classification::Retryable {
                pushback: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            grpc(code::UNAVAILABLE, Some("0")).0,
            Classification::Retryable {
                pushback: Some(Duration::ZERO)
            }
        );
        assert_eq!(
            grpc(code::UNAVAILABLE, Some("-1")).0,
            Classification::StopRetrying
        );
        assert_eq!(
            grpc(code::UNAVAILABLE, Some("soon")).0,
            Classification::StopRetrying
        );
        assert_eq!(
            grpc(code::UNAVAILABLE, Some("1.5")).0,
            Classification::StopRetrying
        );
        // Pushback does not make a permanent code retryable.
        assert_eq!(
            grpc(code::INVALID_ARGUMENT, Some("10")).0,
            Classification::Permanent
        );
        assert_eq!(
            Classification::StopRetrying.default_outcome(),
            Outcome::Failure
        );
    }

    #[test]
    fn grpc_configurable_sets() {
        let c = GrpcClassifier::new()
            .with_retryable(CodeSet::of(&[code::ABORTED, code::OK]))
            .with_failures(CodeSet::empty().with(code::ABORTED));
        let md = HeaderMap::new();
        let r = |code| GrpcResponse {
            code,
            metadata: &md,
        };
        assert_eq!(c.classify(&r(code::ABORTED)), RETRY);
        assert_eq!(c.outcome(&r(code::ABORTED)), Outcome::Failure);
        assert_eq!(c.classify(&r(code::UNAVAILABLE)), Classification::Permanent);
        assert_eq!(c.outcome(&r(code::UNAVAILABLE)), Outcome::Success);
        assert_eq!(c.classify(&r(code::OK)), Classification::Success);
        assert!(!CodeSet::of(&[40]).contains(40));
    }

    fn http(status: u16, retry_after: Option<&str>) -> (Classification, Outcome) {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        }
        let r = HttpResponse::Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: &headers,
        };
        let c = HttpClassifier::new();
        (c.classify(&r), c.outcome(&r))
    }

    #[test]
    fn http_statuses() {
        for s in [200, 201, 204, 304] {
            assert_eq!(
                http(s, None),
                (Classification::Success, Outcome::Success),
                "{s}"
            );
        }
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(http(s, None), (RETRY, Outcome::Failure), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert_eq!(
                http(s, None),
                (Classification::Permanent, Outcome::Success),
                "{s}"
            );
        }
        for s in [501, 505] {
            assert_eq!(
                http(s, None),
                (Classification::Permanent, Outcome::Success),
                "{s}"
            );
        }
    }

    #[test]
    fn http_retry_after() {
        assert_eq!(
            http(503, Some("3")).0,
            Classification::Retryable {
                pushback: Some(Duration::from_secs(3))
            }
        );
        // Malformed: ignored, the computed backoff applies.
        assert_eq!(http(503, Some("later")).0, RETRY);
        assert_eq!(http(503, Some("-3")).0, RETRY);
        // Not retryable: Retry-After changes nothing.
        assert_eq!(http(400, Some("3")).0, Classification::Permanent);
        // A date in the past: retry at once.
        assert_eq!(
            http(429, Some("Sun, 06 Nov 1994 08:49:37 GMT")).0,
            Classification::Retryable {
                pushback: Some(Duration::ZERO)
            }
        );
    }

    #[test]
    fn retry_after_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("tomorrow", now), None);
        assert_eq!(retry_after("", now), None);
    }

    #[test]
    fn http_transport_errors() {
        let c = HttpClassifier::new();
        for e in [TransportError::Connect, TransportError::Timeout] {
            assert_eq!(c.classify(&HttpResponse::Error(e)), RETRY);
            assert_eq!(c.outcome(&HttpResponse::Error(e)), Outcome::Failure);
        }
        let other = HttpResponse::Error(TransportError::Other);
        assert_eq!(c.classify(&other), Classification::Permanent);
        assert_eq!(c.outcome(&other), Outcome::Failure);
    }

    #[test]
    fn closures_classify() {
        let c = |r: &Result<u32, ()>| match r {
            Ok(_) => Classification::Success,
            Err(()) => Classification::Retryable { pushback: None },
        };
        assert_eq!(c.classify(&Ok(1)), Classification::Success);
        assert_eq!(c.outcome(&Err(())), Outcome::Failure);
        assert!(!StatusSet::empty().with(700).contains(700));
    }

    proptest::proptest! {
        /// Any pushback a peer sends has one answer: a non-negative whole number of
        /// milliseconds is a delay, anything else (negative, garbled) means stop (gRFC A6).
        #[test]
        fn any_pushback_is_a_delay_or_a_stop(text in "[ -~]{0,24}") {
            proptest::prop_assume!(HeaderValue::from_str(&text).is_ok());
            let (classification, _) = grpc(code::UNAVAILABLE, Some(&text));
            match text.trim().parse::<i64>() {
                Ok(ms) if ms >= 0 => proptest::prop_assert_eq!(
                    classification,
                    Classification::Retryable { pushback: Some(Duration::from_millis(ms.unsigned_abs())) }
                ),
                _ => proptest::prop_assert_eq!(classification, Classification::StopRetrying),
            }
        }

        /// Any `Retry-After` a peer sends is a delay or ignored, never a panic; whole
        /// seconds are taken as they are.
        #[test]
        fn any_retry_after_is_a_delay_or_ignored(text in "[ -~]{0,40}", seconds in proptest::num::u64::ANY) {
            let now = SystemTime::now();
            let _ = retry_after(&text, now);
            proptest::prop_assert_eq!(
                retry_after(&seconds.to_string(), now),
                Some(Duration::from_secs(seconds))
            );
        }
    }
}
