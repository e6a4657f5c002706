//! How HTTP and gRPC attempts are judged: transport errors found in an error's source
//! chain, the gRPC status of a response head, and the [`Classify`] implementations that let
//! [`HttpClassifier`] and [`GrpcClassifier`] judge the layer's attempts.

use std::error::Error as StdError;

use http::{HeaderMap, Response, StatusCode};

use crate::breaker::Outcome;
use crate::pipeline::Attempt;
use crate::retry::classify::{
    GrpcClassifier, GrpcResponse, HttpClassifier, HttpResponse, TransportError, code,
};
use crate::retry::{Classification, Classify};

/// Finds what kind of transport error `error` is: [`TransportError::Connect`] if its
/// `source()` chain holds an `std::io::Error` of kind `ConnectionRefused`,
/// `AddrNotAvailable`, `NetworkUnreachable` or `HostUnreachable` (hyper-util's and tonic's
/// connect errors do), [`TransportError::Timeout`] for kind `TimedOut`, otherwise
/// [`TransportError::Other`].
pub fn transport_error(error: &(dyn StdError + 'static)) -> TransportError {
    use std::io::ErrorKind;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::HostUnreachable => return TransportError::Connect,
                ErrorKind::TimedOut => return TransportError::Timeout,
                _ => {}
            }
        }
        next = e.source();
    }
    TransportError::Other
}

impl<B, E: StdError + 'static> Classify<Attempt<'_, Response<B>, E>> for HttpClassifier {
    fn classify(&self, attempt: &Attempt<'_, Response<B>, E>) -> Classification {
        self.classify(&http_response(attempt))
    }

    fn outcome(&self, attempt: &Attempt<'_, Response<B>, E>) -> Outcome {
        self.outcome(&http_response(attempt))
    }
}

fn http_response<'a, B, E: StdError + 'static>(
    attempt: &Attempt<'a, Response<B>, E>,
) -> HttpResponse<'a> {
    match *attempt {
        Attempt::Response(r) => HttpResponse::Response {
            status: r.status(),
            headers: r.headers(),
        },
        Attempt::Error(e) => HttpResponse::Error(transport_error(e)),
        Attempt::Timeout => HttpResponse::Error(TransportError::Timeout),
    }
}

/// The gRPC status of a response head: its `grpc-status` header (a trailers-only response,
/// which is how servers answer an error at once); without one, `OK` for HTTP 200 (the
/// status then comes in the trailers, after the layer is done) and otherwise the status the
/// gRPC specification maps the HTTP status to (`UNAVAILABLE` for 429, 502, 503, 504, …).
pub fn grpc_code<B>(response: &Response<B>) -> i32 {
    if let Some(value) = response.headers().get("grpc-status") {
        return value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(code::UNKNOWN);
    }
    match response.status() {
        StatusCode::OK => code::OK,
        StatusCode::BAD_REQUEST => code::INTERNAL,
        StatusCode::UNAUTHORIZED => code::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => code::PERMISSION_DENIED,
        StatusCode::NOT_FOUND => code::UNIMPLEMENTED,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

impl<B, E: StdError + 'static> Classify<Attempt<'_, Response<B>, E>> for GrpcClassifier {
    /// A response by its [`grpc_code`]; a connect error as `UNAVAILABLE` (retryable); any
    /// other transport error as permanent; a timeout as `DEADLINE_EXCEEDED`.
    fn classify(&self, attempt: &Attempt<'_, Response<B>, E>) -> Classification {
        match *attempt {
            Attempt::Response(r) => self.classify(&GrpcResponse {
                code: grpc_code(r),
                metadata: r.headers(),
            }),
            Attempt::Error(e) => match transport_error(e) {
                TransportError::Connect => self.classify(&GrpcResponse {
                    code: code::UNAVAILABLE,
                    metadata: &HeaderMap::new(),
                }),
                TransportError::Timeout | TransportError::Other => Classification::Permanent,
            },
            Attempt::Timeout => self.classify(&GrpcResponse {
                code: code::DEADLINE_EXCEEDED,
                metadata: &HeaderMap::new(),
            }),
        }
    }

    /// A response by its [`grpc_code`]; every transport error and timeout is a failure.
    fn outcome(&self, attempt: &Attempt<'_, Response<B>, E>) -> Outcome {
        match *attempt {
            Attempt::Response(r) => self.outcome(&GrpcResponse {
                code: grpc_code(r),
                metadata: r.headers(),
            }),
            Attempt::Error(_) | Attempt::Timeout => Outcome::Failure,
        }
    }
}
