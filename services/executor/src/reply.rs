//! What one attempt at an external service returned, and how the pipeline judges it.

use appstack_resilience::classify::{Classification, Classify};
use appstack_resilience::classify::{GrpcClassifier, GrpcResponse, HttpClassifier, HttpResponse};
use appstack_resilience::{Attempt, breaker};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// An answer from the service, of either protocol.
#[derive(Debug)]
pub(crate) enum Reply {
    /// An HTTP response, its body read whole.
    Http {
        /// The status.
        status: StatusCode,
        /// The headers (`Retry-After`).
        headers: HeaderMap,
        /// The body.
        body: Bytes,
    },
    /// A gRPC answer: the result, or the status the service failed with.
    Grpc(Result<String, tonic::Status>),
}

/// An attempt that got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The connection could not be made, or broke before the answer was complete. Every
    /// call carries an idempotency key, so a repeat is always safe: retryable.
    #[error("{0}")]
    Transport(String),
    /// The answer was larger than `requests.maxResultBytes`.
    #[error("the result is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

/// The pipeline's judge of external calls: the resilience crate's HTTP and gRPC classifiers
/// for answers; for transport errors, retryable and a failure of the service.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExternalClassifier {
    http: HttpClassifier,
    grpc: GrpcClassifier,
}

impl ExternalClassifier {
    fn judge(&self, attempt: &Attempt<'_, Reply, CallError>) -> (Classification, breaker::Outcome) {
        match attempt {
            Attempt::Response(Reply::Http {
                status, headers, ..
            }) => {
                let response = HttpResponse::Response {
                    status: *status,
                    headers,
                };
                (self.http.classify(&response), self.http.outcome(&response))
            }
            Attempt::Response(Reply::Grpc(answer)) => {
                let empty = HeaderMap::new();
                let response = match answer {
                    Ok(_) => GrpcResponse {
                        code: 0,
                        metadata: &empty,
                    },
                    Err(status) => GrpcResponse {
                        code: status.code() as i32,
                        metadata: status.metadata().as_ref(),
                    },
                };
                (self.grpc.classify(&response), self.grpc.outcome(&response))
            }
            Attempt::Error(CallError::Transport(_)) | Attempt::Timeout => (
                Classification::Retryable { pushback: None },
                breaker::Outcome::Failure,
            ),
            // The service answered; it is the answer that cannot be kept.
            Attempt::Error(CallError::TooLarge { .. }) => {
                (Classification::Permanent, breaker::Outcome::Success)
            }
        }
    }
}

impl Classify<Attempt<'_, Reply, CallError>> for ExternalClassifier {
    fn classify(&self, attempt: &Attempt<'_, Reply, CallError>) -> Classification {
        self.judge(attempt).0
    }

    fn outcome(&self, attempt: &Attempt<'_, Reply, CallError>) -> breaker::Outcome {
        self.judge(attempt).1
    }
}

/// The snake_case name of a gRPC code, for failure reasons (`grpc_unavailable`).
pub(crate) fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}
