//! Stored records to the wire.

use appstack_proto::main::v1 as pb;
use appstack_queue::JobState;
use appstack_queue::store::{EventRecord, Mode, RequestRecord};
use chrono::{DateTime, Utc};

/// The wire status of a job state.
pub(crate) fn status(state: JobState) -> pb::Status {
    match state {
        JobState::Queued => pb::Status::Queued,
        JobState::Scheduled => pb::Status::Scheduled,
        JobState::Running => pb::Status::Running,
        JobState::Succeeded => pb::Status::Succeeded,
        JobState::Failed => pb::Status::Failed,
        JobState::Dead => pb::Status::Dead,
        JobState::Cancelled => pb::Status::Cancelled,
    }
}

/// The job state of a wire status; `None` for `STATUS_UNSPECIFIED` and unknown numbers.
pub(crate) fn state(status: i32) -> Option<JobState> {
    Some(match pb::Status::try_from(status).ok()? {
        pb::Status::Unspecified => return None,
        pb::Status::Queued => JobState::Queued,
        pb::Status::Scheduled => JobState::Scheduled,
        pb::Status::Running => JobState::Running,
        pb::Status::Succeeded => JobState::Succeeded,
        pb::Status::Failed => JobState::Failed,
        pb::Status::Dead => JobState::Dead,
        pb::Status::Cancelled => JobState::Cancelled,
    })
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A wall-clock time from the wire; `None` when out of range.
pub(crate) fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(at.nanos).ok()?;
    DateTime::from_timestamp(at.seconds, nanos)
}

/// A request on the wire.
pub(crate) fn request(record: RequestRecord) -> pb::Request {
    pb::Request {
        id: record.id.to_string(),
        kind: record.kind,
        payload: record.payload,
        mode: match record.mode {
            Mode::Sync => pb::Mode::Sync,
            Mode::Async => pb::Mode::Async,
        } as i32,
        status: status(record.status) as i32,
        idempotency_key: record.idempotency_key.unwrap_or_default(),
        attempts: record.attempts,
        result: record.result.unwrap_or_default(),
        last_failure: record.last_failure.map(|f| pb::Failure {
            reason: f.reason,
            message: f.message,
            retryable: f.retryable,
        }),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        deadline: record.deadline.map(timestamp),
    }
}

/// An event on the wire.
pub(crate) fn event(record: EventRecord) -> pb::RequestEvent {
    pb::RequestEvent {
        request_id: record.request_id.to_string(),
        sequence: i64::from(record.sequence),
        from_status: record.from.map_or(pb::Status::Unspecified, status) as i32,
        to_status: status(record.to) as i32,
        attempt: record.attempt,
        detail: record.detail,
        at: Some(timestamp(record.at)),
    }
}
