//! The layer's own refusals of a gRPC call, as the gRPC response a server would send: a
//! trailers-only response whose status a gRPC client reads as it reads any other.
//!
//! Without it, a generated tonic client turns the layer's error into `UNKNOWN` (its
//! mapping of any service error). With it, `tonic::Status::code()` is the code of
//! [`ResilienceError::grpc_code`](crate::ResilienceError::grpc_code), `message()` says
//! which service refused and why, and the metadata carries when to come back
//! (`grpc-retry-pushback-ms`) and, in `grpc-status-details-bin`, a `google.rpc.Status`
//! with an `ErrorInfo` (reason, domain) and a `RetryInfo` when the wait is known — which
//! `tonic_types::StatusExt` reads.

use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderValue, Response};
use http_body::Body;

use super::ResponseBody;
use crate::classify::{GRPC_RETRY_PUSHBACK_MS, GRPC_STATUS};
use crate::pipeline::GrpcStatus;

/// The header carrying a gRPC status' message (percent-encoded).
const GRPC_MESSAGE: &str = "grpc-message";
/// The header carrying a serialized `google.rpc.Status` (base64).
const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// A trailers-only gRPC response carrying `status`.
pub(crate) fn response<B: Body>(status: &GrpcStatus) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(status.code));
    headers.insert(GRPC_MESSAGE, percent_encoded(&status.message));
    if let Some(wait) = status.retry_after {
        headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ceil_millis(wait)));
    }
    let details = base64::engine::general_purpose::STANDARD.encode(details(status));
    if let Ok(value) = HeaderValue::try_from(details) {
        headers.insert(GRPC_STATUS_DETAILS, value);
    }
    response
}

/// Whole milliseconds, rounded up (a pushback must not end before the wait does).
fn ceil_millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// The gRPC specification's percent-encoding of a message: every byte outside printable
/// ASCII, and `%`, as `%XX`.
fn percent_encoded(message: &str) -> HeaderValue {
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    // Printable ASCII only: always a valid header value.
    HeaderValue::try_from(encoded).unwrap_or(HeaderValue::from_static(""))
}

/// `google.rpc.Status { code, message, details: [ErrorInfo, RetryInfo?] }` in protobuf's
/// wire format (written here rather than pulling in a protobuf runtime for three small
/// messages; the loopback tests read it back with `tonic-types`).
fn details(status: &GrpcStatus) -> Vec<u8> {
    let mut error_info = Vec::new();
    string_field(&mut error_info, 1, status.reason);
    string_field(&mut error_info, 2, GrpcStatus::DOMAIN);
    let mut out = Vec::with_capacity(128);
    varint_field(&mut out, 1, u64::from(status.code.unsigned_abs()));
    string_field(&mut out, 2, &status.message);
    let error_info = any("type.googleapis.com/google.rpc.ErrorInfo", &error_info);
    bytes_field(&mut out, 3, &error_info);
    if let Some(wait) = status.retry_after {
        let mut duration = Vec::new();
        varint_field(&mut duration, 1, wait.as_secs());
        varint_field(&mut duration, 2, u64::from(wait.subsec_nanos()));
        let mut retry_info = Vec::new();
        bytes_field(&mut retry_info, 1, &duration);
        let retry_info = any("type.googleapis.com/google.rpc.RetryInfo", &retry_info);
        bytes_field(&mut out, 3, &retry_info);
    }
    out
}

/// `google.protobuf.Any { type_url, value }`.
fn any(type_url: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(type_url.len() + value.len() + 4);
    string_field(&mut out, 1, type_url);
    bytes_field(&mut out, 2, value);
    out
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A varint field; zero (the default) is left out, as protobuf encoders do.
fn varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    if value != 0 {
        varint(out, field << 3);
        varint(out, value);
    }
}

fn bytes_field(out: &mut Vec<u8>, field: u64, value: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn string_field(out: &mut Vec<u8>, field: u64, value: &str) {
    bytes_field(out, field, value.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encoded("a: b; 100%"), "a: b; 100%25");
        assert_eq!(percent_encoded("déjà\n"), "d%C3%A9j%C3%A0%0A");
    }

    #[test]
    fn pushback_rounds_up() {
        assert_eq!(ceil_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ceil_millis(Duration::from_secs(3)), 3000);
        assert_eq!(ceil_millis(Duration::ZERO), 0);
    }

    #[test]
    fn a_refusal_is_a_trailers_only_response() {
        let status = GrpcStatus {
            code: 14,
            message: "payments: circuit breaker open: call rejected".into(),
            reason: "CIRCUIT_OPEN",
            retry_after: Some(Duration::from_millis(1500)),
        };
        let r = response::<Full<bytes::Bytes>>(&status);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()[GRPC_RETRY_PUSHBACK_MS], "1500");
        assert!(r.headers().contains_key(GRPC_STATUS_DETAILS));
        assert!(r.body().is_end_stream());
        // Known bytes: code 14, the message, then the details.
        let bytes = details(&status);
        assert_eq!(&bytes[..2], &[0x08, 14]);
        assert_eq!(bytes[2], 0x12);
    }
}
