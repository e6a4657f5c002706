//! gRPC statuses as HTTP answers, as the gRPC–HTTP mapping (`google.rpc.Code`) defines them.
//! The body is the `google.rpc.Status` in proto3 JSON — `code`, `message`, `details` — with the
//! details a gRPC client would get (`BadRequest`, `RetryInfo`, …) under their `@type`s.

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// The HTTP status of a gRPC code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // 499 Client Closed Request, as the mapping has it.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The `google.rpc.Status` JSON of `status`.
pub fn status_json(status: &Status) -> Value {
    json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": details_json(status),
    })
}

/// When the status says to try again (its `RetryInfo`), for a `Retry-After` header.
pub fn retry_after(status: &Status) -> Option<Duration> {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
}

fn details_json(status: &Status) -> Vec<Value> {
    let Ok(details) = status.check_error_details() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(bad) = details.bad_request() {
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": bad.field_violations.iter().map(|v| json!({
                "field": v.field,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(retry) = details.retry_info() {
        let delay = retry.retry_delay.unwrap_or_default();
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": duration_json(delay),
        }));
    }
    if let Some(info) = details.error_info() {
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(failure) = details.precondition_failure() {
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
            "violations": failure.violations.iter().map(|v| json!({
                "type": v.r#type,
                "subject": v.subject,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(quota) = details.quota_failure() {
        out.push(json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": quota.violations.iter().map(|v| json!({
                "subject": v.subject,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    out
}

/// A `google.protobuf.Duration` in proto3 JSON: seconds with up to nine decimals and `s`.
fn duration_json(duration: Duration) -> String {
    let nanos = duration.subsec_nanos();
    if nanos == 0 {
        format!("{}s", duration.as_secs())
    } else {
        let fraction = format!("{nanos:09}");
        format!("{}.{}s", duration.as_secs(), fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_as_the_grpc_http_mapping_says() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn details_travel_in_the_json_body() {
        let status = appstack_common::status::invalid_fields([("email", "is not an email")]);
        let body = status_json(&status);
        assert_eq!(body["code"], 3);
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.BadRequest"
        );
        assert_eq!(body["details"][0]["fieldViolations"][0]["field"], "email");

        let slow = appstack_common::status::exhausted_retry_after(
            "slow down",
            Duration::from_millis(1500),
        );
        assert_eq!(status_json(&slow)["details"][0]["retryDelay"], "1.5s");
        assert_eq!(retry_after(&slow), Some(Duration::from_millis(1500)));
        assert_eq!(status_json(&Status::not_found("x"))["details"], json!([]));
    }
}
