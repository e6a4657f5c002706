//! From an execution and the queue's decision to what is recorded: pure.

use appstack_executor::{Execution, Failure};
use appstack_queue::decide::{Decision, GiveUpReason};
use appstack_queue::store::{CompletionAction, Finish, Reschedule};
use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// What to record for a queued request after `execution`, as `decision` says.
pub fn completion_action(decision: &Decision, execution: &Execution) -> CompletionAction {
    let failure = |fallback: &str| {
        execution.failure.clone().unwrap_or_else(|| Failure {
            reason: fallback.to_owned(),
            message: String::new(),
            retryable: false,
        })
    };
    match decision {
        Decision::Succeed => CompletionAction::Finish(Finish::Succeeded(
            execution.result.clone().unwrap_or_else(|| "null".into()),
        )),
        // The store discards whatever a cancelled request's execution reports.
        Decision::Cancel => CompletionAction::Finish(Finish::Dead(failure("cancelled"))),
        Decision::GiveUp(GiveUpReason::Permanent(reason)) => {
            CompletionAction::Finish(Finish::Dead(failure(reason)))
        }
        Decision::GiveUp(GiveUpReason::AttemptsExhausted(reason)) => {
            let mut failure = failure(reason);
            failure.message = format!("attempts exhausted; last failure: {}", failure.message);
            CompletionAction::Finish(Finish::Dead(failure))
        }
        Decision::RetryAt(at) => CompletionAction::Reschedule(Reschedule::RetryAt {
            at: *at,
            failure: failure("failed"),
        }),
        Decision::PostponeUntil(at) => CompletionAction::Reschedule(Reschedule::PostponeUntil {
            at: *at,
            reason: execution
                .failure
                .as_ref()
                .map_or_else(|| "postponed".to_owned(), |f| f.reason.clone()),
        }),
    }
}

/// What to record for a SYNC request: its one execution is final (SYNC requests do not go
/// back to the queue; the caller decides whether to submit again).
pub fn sync_completion_action(execution: &Execution) -> CompletionAction {
    match (&execution.result, &execution.failure) {
        (Some(result), None) => CompletionAction::Finish(Finish::Succeeded(result.clone())),
        (_, Some(failure)) => CompletionAction::Finish(Finish::Failed(failure.clone())),
        (None, None) => CompletionAction::Finish(Finish::Succeeded("null".into())),
    }
}

/// A stored wall-clock deadline on the monotonic clock: the one conversion, at the edge
/// between the queue (wall clock, shared by processes) and the pipeline (monotonic).
pub fn deadline_instant(
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
    now_instant: Instant,
) -> Instant {
    match (deadline - now).to_std() {
        Ok(left) => now_instant + left,
        // Already past.
        Err(_) => now_instant,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use appstack_executor::Outcome;

    use super::*;

    fn failed(reason: &str) -> Execution {
        Execution {
            outcome: Outcome::Permanent {
                reason: reason.into(),
            },
            result: None,
            failure: Some(Failure {
                reason: reason.into(),
                message: "no".into(),
                retryable: false,
            }),
            calls: 1,
        }
    }

    #[test]
    fn decisions_map_to_what_the_store_records() {
        let ok = Execution {
            outcome: Outcome::Succeeded,
            result: Some("{\"a\":1}".into()),
            failure: None,
            calls: 1,
        };
        assert_eq!(
            completion_action(&Decision::Succeed, &ok),
            CompletionAction::Finish(Finish::Succeeded("{\"a\":1}".into()))
        );
        let dead = completion_action(
            &Decision::GiveUp(GiveUpReason::AttemptsExhausted("http_503".into())),
            &failed("http_503"),
        );
        let CompletionAction::Finish(Finish::Dead(failure)) = dead else {
            panic!("{dead:?}")
        };
        assert_eq!(failure.reason, "http_503");
        assert!(failure.message.starts_with("attempts exhausted"));
        let at = Utc::now();
        assert!(matches!(
            completion_action(&Decision::PostponeUntil(at), &failed("circuit_open")),
            CompletionAction::Reschedule(Reschedule::PostponeUntil { reason, .. }) if reason == "circuit_open"
        ));
        assert!(matches!(
            sync_completion_action(&failed("http_400")),
            CompletionAction::Finish(Finish::Failed(f)) if f.reason == "http_400"
        ));
    }

    #[test]
    fn deadlines_convert_once_and_a_past_one_is_now() {
        let now = Utc::now();
        let instant = Instant::now();
        let later = deadline_instant(now + chrono::Duration::milliseconds(1500), now, instant);
        assert_eq!(later - instant, Duration::from_millis(1500));
        assert_eq!(
            deadline_instant(now - chrono::Duration::seconds(5), now, instant),
            instant
        );
    }
}
