//! One execution: the call through the pipeline, and what it amounts to for the queue.

use std::time::Duration;

use appstack_queue::decide::Outcome;
use appstack_queue::store::Failure;
use appstack_resilience::breaker::State;
use appstack_resilience::pipeline::Executed;
use appstack_resilience::{ResilienceError, retry::Stop};
use tokio::time::Instant;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::Executor;
use crate::json::check_result;
use crate::reply::{CallError, ExternalClassifier, Reply, grpc_code_name};
use crate::transport::Outgoing;
use appstack_resilience::Attempt;
use appstack_resilience::classify::{Classification, Classify as _};

/// One request to execute.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The request id; also the idempotency key sent.
    pub request_id: Uuid,
    /// Its kind.
    pub kind: &'a str,
    /// Its payload (JSON text).
    pub payload: &'a str,
    /// The execution's number (the job attempt), from 1.
    pub attempt: u32,
    /// The caller's deadline, converted to the monotonic clock at the caller's edge; the
    /// route's timeout applies too, whichever is sooner.
    pub deadline: Option<Instant>,
}

/// What one execution came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Execution {
    /// For the queue's decision.
    pub outcome: Outcome,
    /// The result (JSON text), when it succeeded.
    pub result: Option<String>,
    /// The failure to record, when it did not.
    pub failure: Option<Failure>,
    /// Calls made to the service (in-call retries included; 0 when refused).
    pub calls: u32,
}

impl Execution {
    fn failed(
        outcome: Outcome,
        reason: &str,
        message: String,
        retryable: bool,
        calls: u32,
    ) -> Self {
        Self {
            outcome,
            result: None,
            failure: Some(Failure {
                reason: reason.to_owned(),
                message,
                retryable,
            }),
            calls,
        }
    }
}

impl Executor {
    /// Executes `call` on its route's service. A kind with no route is a permanent failure
    /// (`unknown_kind`: its route was removed after it was queued).
    pub async fn execute(&self, call: Call<'_>) -> Execution {
        let Some(route) = self.route(call.kind) else {
            return Execution::failed(
                Outcome::Permanent {
                    reason: "unknown_kind".into(),
                },
                "unknown_kind",
                format!("no route for kind {:?} any more", call.kind),
                false,
                0,
            );
        };
        let started = Instant::now();
        let route_end = started + route.timeout;
        let deadline = call.deadline.map_or(route_end, |d| d.min(route_end));
        let service = &route.service;
        let deadline = service.pipeline.deadline(Some(deadline));
        let executed = service
            .pipeline
            .execute_until(deadline, |ctx| {
                // One client span per call made (in-call retries each get theirs); its
                // context is what the service receives as `traceparent`.
                let span = tracing::info_span!(
                    "external.call",
                    otel.name = %service.transport.span_name(),
                    otel.kind = "client",
                    appstack.service = %service.name,
                    appstack.request_id = %call.request_id,
                    appstack.attempt = call.attempt,
                    server.address = %service.transport.authority(),
                    http.response.status_code = tracing::field::Empty,
                    rpc.grpc.status_code = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                );
                service
                    .transport
                    .call(Outgoing {
                        request_id: call.request_id,
                        kind: call.kind,
                        payload: call.payload,
                        attempt: call.attempt,
                        timeout: ctx.timeout,
                    })
                    .instrument(span)
            })
            .await;
        let budget_spent = executed.stop == Stop::BudgetExhausted;
        let mut execution = judge(executed, self.max_result_bytes, Instant::now());
        if let Outcome::Retryable { reason, .. } = &execution.outcome {
            // The call failed and the breaker is open now — this failure opened it, or it
            // was a probe that kept it open: the service is known to be down, so the
            // failure is the outage's, not the request's. It waits for the next probe
            // without spending the attempt, as the requests refused while open do; a
            // request dies of attempts only while its service is up.
            let breaker = service.pipeline.breaker();
            if matches!(breaker.state(), State::Open | State::ForcedOpen) {
                let probe_in = probe_in(breaker.next_probe_at(), Instant::now());
                tracing::debug!(%reason, ?probe_in, "failure during an outage: waiting for the breaker");
                execution.outcome = Outcome::BreakerOpen { probe_in };
            }
        }
        self.metrics
            .record(route, &execution, started.elapsed(), budget_spent);
        execution
    }
}

/// What a pipeline execution amounts to, at `now`.
pub(crate) fn judge(
    executed: Executed<Reply, CallError>,
    max_result_bytes: usize,
    now: Instant,
) -> Execution {
    let calls = executed.attempts;
    let budget_out = executed.stop == Stop::BudgetExhausted;
    // The answer judged as the pipeline judged it: one home for which HTTP statuses are
    // retryable and for the server's delay (`Retry-After`, `grpc-retry-pushback-ms`).
    let judged = executed
        .value
        .as_ref()
        .ok()
        .map(|reply| ExternalClassifier::default().classify(&Attempt::Response(reply)));
    let server_delay = match judged {
        Some(Classification::Retryable { pushback }) => pushback,
        _ => None,
    };
    let mut execution = match executed.value {
        Ok(Reply::Http { status, body, .. }) => {
            if status.is_success() {
                succeeded(&body, max_result_bytes, calls)
            } else {
                let retryable = matches!(
                    judged,
                    Some(Classification::Retryable { .. } | Classification::StopRetrying)
                );
                let reason = format!("http_{}", status.as_u16());
                let message = body_excerpt(&body, status.canonical_reason().unwrap_or(""));
                failure(reason, message, retryable, server_delay, calls)
            }
        }
        Ok(Reply::Grpc(Ok(result))) => succeeded(result.as_bytes(), max_result_bytes, calls),
        Ok(Reply::Grpc(Err(status))) => {
            let retryable = is_retryable_grpc(status.code());
            let reason = format!("grpc_{}", grpc_code_name(status.code()));
            failure(
                reason,
                status.message().to_owned(),
                retryable,
                server_delay,
                calls,
            )
        }
        Err(ResilienceError::CircuitOpen { next_probe_at, .. }) => Execution {
            outcome: Outcome::BreakerOpen {
                probe_in: probe_in(next_probe_at, now),
            },
            result: None,
            failure: Some(Failure {
                reason: "circuit_open".into(),
                message: "the service's circuit breaker is open; not called".into(),
                retryable: true,
            }),
            calls: 0,
        },
        Err(ResilienceError::BulkheadFull { reason }) => Execution {
            outcome: Outcome::BulkheadFull,
            result: None,
            failure: Some(Failure {
                reason: "bulkhead_full".into(),
                message: format!("{reason}; not called"),
                retryable: true,
            }),
            calls: 0,
        },
        Err(ResilienceError::DeadlineExceeded | ResilienceError::Timeout) => failure(
            "timeout".into(),
            "the service did not answer in time".into(),
            true,
            None,
            calls,
        ),
        Err(ResilienceError::Inner(CallError::Transport(message))) => {
            failure("connection_error".into(), message, true, None, calls)
        }
        Err(ResilienceError::Inner(CallError::TooLarge { limit })) => failure(
            "result_too_large".into(),
            format!("the result is larger than requests.maxResultBytes ({limit} bytes)"),
            false,
            None,
            calls,
        ),
    };
    if budget_out && let Some(failure) = execution.failure.as_mut() {
        failure
            .message
            .push_str(" (in-call retries stopped: the retry budget is spent)");
    }
    execution
}

fn succeeded(body: &[u8], max_result_bytes: usize, calls: u32) -> Execution {
    let text = match std::str::from_utf8(body) {
        // An empty 2xx body is a result without content.
        Ok("") => "null",
        Ok(text) => text,
        Err(_) => {
            return failure(
                "invalid_result".into(),
                "the result is not UTF-8 text".into(),
                false,
                None,
                calls,
            );
        }
    };
    match check_result(text, max_result_bytes) {
        Ok(()) => Execution {
            outcome: Outcome::Succeeded,
            result: Some(text.to_owned()),
            failure: None,
            calls,
        },
        Err(problem) => failure(
            "invalid_result".into(),
            format!("the result {problem}"),
            false,
            None,
            calls,
        ),
    }
}

fn failure(
    reason: String,
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
    calls: u32,
) -> Execution {
    let outcome = if retryable {
        Outcome::Retryable {
            reason: reason.clone(),
            retry_after,
        }
    } else {
        Outcome::Permanent {
            reason: reason.clone(),
        }
    };
    Execution::failed(outcome, &reason, message, retryable, calls)
}

/// The codes the `Processor` contract calls retryable: UNAVAILABLE, RESOURCE_EXHAUSTED,
/// DEADLINE_EXCEEDED and ABORTED — the pipeline's in-call defaults plus ABORTED, which a
/// redelivery (a whole new execution) may retry where an in-call retry must not — and
/// UNKNOWN and INTERNAL, which a crashing server sends (as HTTP 500).
fn is_retryable_grpc(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Unknown
            | Code::Internal
    )
}

/// How long until the breaker admits a probe; a second when it cannot say (half-open with
/// every probe in flight, or forced open).
fn probe_in(next_probe_at: Option<Instant>, now: Instant) -> Duration {
    next_probe_at.map_or(Duration::from_secs(1), |at| {
        at.saturating_duration_since(now)
    })
}

/// The start of an error body, for the record: enough to recognise, never the whole thing.
fn body_excerpt(body: &[u8], fallback: &str) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    if text.is_empty() {
        fallback.to_owned()
    } else {
        text.to_owned()
    }
}
