//! The request API's errors, and their gRPC answers (mapped once, in the handlers).

use std::time::Duration;

use appstack_common::status::{exhausted_retry_after, invalid_fields};
use appstack_queue::store::StoreError;
use tonic::Status;

use crate::check::Violation;

/// Why a call of the request API failed.
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    /// Broken input rules, each naming its field: INVALID_ARGUMENT with BadRequest details.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<Violation>),
    /// No such request for this caller (another caller's request included): NOT_FOUND.
    #[error("no such request")]
    NotFound,
    /// The idempotency key names an earlier request with another kind or payload:
    /// FAILED_PRECONDITION.
    #[error("idempotency key {0:?} was used for a different request")]
    KeyReused(String),
    /// Cancel of a finished request: FAILED_PRECONDITION.
    #[error("the request has already finished ({0})")]
    AlreadyFinished(&'static str),
    /// Over the caller's submit rate: RESOURCE_EXHAUSTED with RetryInfo.
    #[error("over the submit rate of {per_second}/s")]
    RateLimited {
        /// The limit.
        per_second: u32,
        /// When to try again.
        retry_after: Duration,
    },
    /// Too many streams open: RESOURCE_EXHAUSTED.
    #[error("too many Watch streams are open on this server ({0}); try again later")]
    TooManyWatchers(usize),
    /// The database failed: UNAVAILABLE (unreachable or saturated) or INTERNAL.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MainError {
    /// The answer for everything but a store error (which needs the pool's health).
    pub(crate) fn status(self) -> Result<Status, StoreError> {
        Ok(match self {
            MainError::Invalid(violations) => invalid_fields(violations),
            MainError::NotFound => Status::not_found("no such request"),
            MainError::KeyReused(key) => Status::failed_precondition(format!(
                "idempotency key {key:?} was already used for a request with another kind or payload; use a new key"
            )),
            MainError::AlreadyFinished(status) => {
                Status::failed_precondition(format!("the request has already finished ({status})"))
            }
            MainError::RateLimited {
                per_second,
                retry_after,
            } => exhausted_retry_after(
                format!(
                    "over your submit rate of {per_second}/s; retry in {} ms",
                    retry_after.as_millis().max(1)
                ),
                retry_after,
            ),
            MainError::TooManyWatchers(max) => Status::resource_exhausted(format!(
                "too many Watch streams are open on this server ({max}); try again later"
            )),
            MainError::Store(error) => return Err(error),
        })
    }
}
