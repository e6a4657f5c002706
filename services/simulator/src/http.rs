//! The HTTP/JSON form: `POST` to any path with a JSON body and an `Idempotency-Key`
//! header; the answer echoes the body. `/_simulator/calls` and `/_simulator/faults` are the
//! control endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::faults::{Action, FaultPlan};
use crate::ledger::Ended;

/// The request header carrying the idempotency key (the IETF draft's name).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let router = Router::new()
        .route("/_simulator/calls", get(calls))
        .route("/_simulator/faults", get(faults).put(set_faults))
        .fallback(post(process))
        .with_state(shared);
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::warn!(%error, "simulator HTTP server failed");
    }
}

async fn calls(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.ledger().stats())
}

async fn faults(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.plan())
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let plan: FaultPlan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(error) => return (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    };
    match shared.set_plan(plan) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(invalid) => (StatusCode::BAD_REQUEST, invalid.to_string()).into_response(),
    }
}

async fn process(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        // Not a fault: the caller sent something that is not JSON.
        return (StatusCode::BAD_REQUEST, "the body must be JSON").into_response();
    };
    let action = shared.next_action();
    let delay = action.delay();
    shared.ledger().record(&key, Ended::of(&action));
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        shared.ledger().saw_traceparent(&key, traceparent);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match action {
        Action::Succeed { slow_body, .. } => {
            let answer = serde_json::json!({ "echo": payload, "idempotencyKey": key });
            let bytes = Bytes::from(answer.to_string());
            json_response(StatusCode::OK, slow(bytes, slow_body))
        }
        Action::Fail { answer, .. } => {
            let status =
                StatusCode::from_u16(answer.http_status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            json_response(status, Body::from(r#"{"error":"injected failure"}"#))
        }
        Action::Throttle { retry_after, .. } => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                Body::from(r#"{"error":"injected throttle"}"#),
            );
            // Whole seconds, rounded up: a client must not come back too early.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        // A body that fails at once: hyper closes the connection without a complete answer.
        Action::Drop { .. } => Response::new(Body::from_stream(failing_body())),
    }
}

fn json_response(status: StatusCode, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The body in two parts `gap` apart, or whole.
fn slow(bytes: Bytes, gap: Option<Duration>) -> Body {
    let Some(gap) = gap else {
        return Body::from(bytes);
    };
    let half = bytes.len() / 2;
    let (first, second) = (bytes.slice(..half), bytes.slice(half..));
    Body::from_stream(two_parts(first, second, gap))
}

fn two_parts(
    first: Bytes,
    second: Bytes,
    gap: Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    stream::unfold(0u8, move |step| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            match step {
                0 => Some((Ok(first), 1)),
                1 => {
                    tokio::time::sleep(gap).await;
                    Some((Ok(second), 2))
                }
                _ => None,
            }
        }
    })
}

fn failing_body() -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    stream::once(async {
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected connection drop",
        ))
    })
}
