//! The checks of a Submit, before anything is stored: pure, so every rule is tested directly.

use appstack_config::RequestsConfig;
use appstack_executor::Executor;
use appstack_executor::json::{check_payload, ordering_key_at};
use appstack_proto::main::v1 as pb;
use appstack_queue::store::Mode;
use chrono::{DateTime, Utc};

use crate::convert::from_timestamp;

/// Longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;
/// Longest ordering-key value, in bytes (it is indexed; PostgreSQL's B-tree entries are
/// limited to about 2.7 KB).
pub const MAX_ORDERING_KEY_BYTES: usize = 256;

/// A Submit that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedSubmit {
    /// A routed kind.
    pub kind: String,
    /// The payload as sent (a JSON object within the limit).
    pub payload: String,
    /// SYNC or ASYNC.
    pub mode: Mode,
    /// The caller's idempotency key.
    pub idempotency_key: Option<String>,
    /// The route's ordering-key value for this payload.
    pub ordering_key: Option<String>,
    /// The caller's deadline.
    pub deadline: Option<DateTime<Utc>>,
}

/// One broken rule: the field and what is wrong, for a BadRequest detail.
pub type Violation = (&'static str, String);

/// Checks `input` against the routes of `executor` and the `limits`, at `now`. Every
/// broken rule is reported.
pub fn check_submit(
    input: &pb::SubmitRequest,
    executor: &Executor,
    limits: &RequestsConfig,
    now: DateTime<Utc>,
) -> Result<CheckedSubmit, Vec<Violation>> {
    let mut bad: Vec<Violation> = Vec::new();
    let route = if input.kind.is_empty() {
        bad.push(("kind", "is required".into()));
        None
    } else {
        let route = executor.route(&input.kind);
        if route.is_none() {
            let mut kinds = executor.kinds();
            kinds.sort();
            bad.push((
                "kind",
                format!(
                    "{:?} is not a routed kind (routed: {})",
                    truncate(&input.kind, 64),
                    kinds.join(", ")
                ),
            ));
        }
        route
    };
    let mode = match pb::Mode::try_from(input.mode) {
        Ok(pb::Mode::Sync) => Some(Mode::Sync),
        Ok(pb::Mode::Async) => Some(Mode::Async),
        _ => {
            bad.push(("mode", "must be MODE_SYNC or MODE_ASYNC".into()));
            None
        }
    };
    let payload = match check_payload(&input.payload, limits.max_payload_bytes) {
        Ok(value) => Some(value),
        Err(problem) => {
            bad.push(("payload", problem.to_string()));
            None
        }
    };
    let idempotency_key = if input.idempotency_key.is_empty() {
        None
    } else if input.idempotency_key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        bad.push((
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        ));
        None
    } else if input.idempotency_key.chars().any(char::is_control) {
        bad.push((
            "idempotency_key",
            "must not contain control characters".into(),
        ));
        None
    } else {
        Some(input.idempotency_key.clone())
    };
    let deadline = match &input.deadline {
        None => None,
        Some(at) => match from_timestamp(at) {
            None => {
                bad.push(("deadline", "is not a valid time".into()));
                None
            }
            Some(at) if at <= now => {
                bad.push(("deadline", "is in the past".into()));
                None
            }
            Some(at) => Some(at),
        },
    };
    let mut ordering_key = None;
    if let Some(pointer) = route.and_then(|r| r.ordering_key()) {
        if mode == Some(Mode::Sync) {
            bad.push((
                "mode",
                format!(
                    "kind {:?} runs in order (by the payload's {pointer}); submit it MODE_ASYNC",
                    input.kind
                ),
            ));
        }
        if let Some(payload) = &payload {
            match ordering_key_at(payload, pointer) {
                None => bad.push((
                    "payload",
                    format!("must hold a string, number or boolean at {pointer} (the ordering key of kind {:?})", input.kind),
                )),
                Some(key) if key.len() > MAX_ORDERING_KEY_BYTES => bad.push((
                    "payload",
                    format!("the ordering key at {pointer} must be at most {MAX_ORDERING_KEY_BYTES} bytes"),
                )),
                Some(key) => ordering_key = Some(key),
            }
        }
    }
    match (bad.is_empty(), mode) {
        (true, Some(mode)) => Ok(CheckedSubmit {
            kind: input.kind.clone(),
            payload: input.payload.clone(),
            mode,
            idempotency_key,
            ordering_key,
            deadline,
        }),
        _ => Err(bad),
    }
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}
