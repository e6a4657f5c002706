//! How the layer's HTTP and gRPC attempts are judged: transport errors found in an error's
//! source chain, the gRPC status of a response (its head, or the trailers the layer read
//! ahead), the end of a gRPC body passed on while it streamed, and the [`Classify`]
//! implementations that let [`HttpClassifier`] and [`GrpcClassifier`] judge them.

use std::error::Error as StdError;

use http::{HeaderMap, Response, StatusCode};

use super::{
    Classification, Classify, GrpcClassifier, GrpcResponse, HttpClassifier, HttpResponse,
    TransportError, code,
};
use crate::breaker::Outcome;
use crate::layer::ResponseBody;
use crate::pipeline::Attempt;

/// The header (or trailer) carrying a gRPC status code.
pub const GRPC_STATUS: &str = "grpc-status";

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

/// The gRPC status code of a response the layer answered with:
///
/// 1. its `grpc-status` header (a trailers-only response: how servers answer most errors,
///    and how the layer answers its own refusals);
/// 2. else its `grpc-status` trailer, once the layer has read the body ahead (a gRPC
///    response within the layer's `max_buffered_response`);
/// 3. else, for an HTTP status other than 200, the code the gRPC specification maps it to
///    (`UNAVAILABLE` for 429, 502, 503, 504, …);
/// 4. else `UNKNOWN` if the body was read whole without a status, or failed while read;
/// 5. else `OK`: the status is still to come, at the end of a body the caller reads as it
///    streams (the layer judges it there, for the breaker: see [`StreamEnd`]).
pub fn grpc_code<B: http_body::Body>(response: &Response<ResponseBody<B>>) -> i32 {
    grpc_status(response).0
}

/// [`grpc_code`], and the metadata that came with it (where `grpc-retry-pushback-ms` is).
fn grpc_status<B: http_body::Body>(response: &Response<ResponseBody<B>>) -> (i32, &HeaderMap) {
    let headers = response.headers();
    if let Some(code) = status_in(headers) {
        return (code, headers);
    }
    let body = response.body();
    if let Some(trailers) = body.trailers_read() {
        return (status_in(trailers).unwrap_or(code::UNKNOWN), trailers);
    }
    let code = match response.status() {
        StatusCode::OK if body.received_all() => code::UNKNOWN,
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
    };
    (code, headers)
}

/// The `grpc-status` in `metadata`: `None` if absent, `UNKNOWN` if garbled.
fn status_in(metadata: &HeaderMap) -> Option<i32> {
    let value = metadata.get(GRPC_STATUS)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(code::UNKNOWN),
    )
}

/// The end of a gRPC response body that the layer passed on as it streamed (its status was
/// not in its head, and it was longer than the read-ahead limit, or reading ahead was off):
/// what the breaker learns then. A body that fails mid-stream is a failure whatever the
/// classifier; one dropped before its end records nothing (unless its head was already a
/// failure).
#[derive(Debug, Clone, Copy)]
pub struct StreamEnd<'a> {
    /// Its trailers, where its gRPC status is; `None` if it ended without any.
    pub trailers: Option<&'a HeaderMap>,
}

impl<B, E> Classify<Attempt<'_, Response<ResponseBody<B>>, E>> for HttpClassifier
where
    B: http_body::Body,
    E: StdError + 'static,
{
    fn classify(&self, attempt: &Attempt<'_, Response<ResponseBody<B>>, E>) -> Classification {
        self.classify(&http_response(attempt))
    }

    fn outcome(&self, attempt: &Attempt<'_, Response<ResponseBody<B>>, E>) -> Outcome {
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

/// HTTP trailers carry no status: the head decided.
impl Classify<StreamEnd<'_>> for HttpClassifier {
    fn classify(&self, _: &StreamEnd<'_>) -> Classification {
        Classification::Success
    }
}

impl<B, E> Classify<Attempt<'_, Response<ResponseBody<B>>, E>> for GrpcClassifier
where
    B: http_body::Body,
    E: StdError + 'static,
{
    /// A response by its [`grpc_code`]; a connect error as `UNAVAILABLE` (retryable); any
    /// other transport error as permanent; a timeout as `DEADLINE_EXCEEDED`.
    fn classify(&self, attempt: &Attempt<'_, Response<ResponseBody<B>>, E>) -> Classification {
        match *attempt {
            Attempt::Response(r) => {
                let (code, metadata) = grpc_status(r);
                self.classify(&GrpcResponse { code, metadata })
            }
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
    fn outcome(&self, attempt: &Attempt<'_, Response<ResponseBody<B>>, E>) -> Outcome {
        match *attempt {
            Attempt::Response(r) => {
                let (code, metadata) = grpc_status(r);
                self.outcome(&GrpcResponse { code, metadata })
            }
            Attempt::Error(_) | Attempt::Timeout => Outcome::Failure,
        }
    }
}

/// By the `grpc-status` trailer; a body that ended without one is `UNKNOWN`.
impl Classify<StreamEnd<'_>> for GrpcClassifier {
    fn classify(&self, end: &StreamEnd<'_>) -> Classification {
        let empty = HeaderMap::new();
        let metadata = end.trailers.unwrap_or(&empty);
        self.classify(&GrpcResponse {
            code: status_in(metadata).unwrap_or(code::UNKNOWN),
            metadata,
        })
    }

    fn outcome(&self, end: &StreamEnd<'_>) -> Outcome {
        let empty = HeaderMap::new();
        let metadata = end.trailers.unwrap_or(&empty);
        self.outcome(&GrpcResponse {
            code: status_in(metadata).unwrap_or(code::UNKNOWN),
            metadata,
        })
    }
}
