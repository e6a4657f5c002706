//! How auth failures become gRPC statuses.

use appstack_common::db_failure::DbFailure;
use appstack_common::status::{exhausted_retry_after, invalid_fields};
use chrono::{DateTime, Utc};
use tonic::Status;

use crate::password::PasswordError;

/// A failed auth operation.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Fields break input rules: INVALID_ARGUMENT with field violations.
    #[error("invalid request")]
    InvalidFields(Vec<(&'static str, String)>),
    /// Wrong credentials or an unusable token: UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The account is locked: RESOURCE_EXHAUSTED with RetryInfo.
    #[error("too many failed logins; try again later")]
    Locked(DateTime<Utc>),
    /// The principal is disabled or lacks a role: PERMISSION_DENIED.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// NOT_FOUND.
    #[error("{0}")]
    NotFound(&'static str),
    /// A status decided elsewhere (the verifier's role check).
    #[error("{0}")]
    Refused(Status),
    /// FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(&'static str),
    /// The hashing pool is full: RESOURCE_EXHAUSTED.
    #[error("server busy: too many password operations; retry shortly")]
    Busy,
    /// The database failed; handlers explain it ([`DbFailure`]) before answering.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The caller went away before the work that needs it (the caller never sees this).
    #[error("the caller went away")]
    CallerGone,
    /// Hashing failed.
    #[error("password hashing: {0}")]
    Password(PasswordError),
    /// Signing failed.
    #[error("signing: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
    /// A signing-key problem.
    #[error(transparent)]
    Keys(#[from] crate::signing::KeyError),
    /// Signing keys are inconsistent with the database.
    #[error("signing keys: {0}")]
    KeyConflict(String),
}

impl From<PasswordError> for AuthError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => Self::Busy,
            other => Self::Password(other),
        }
    }
}

impl AuthError {
    /// One invalid field.
    pub fn field(field: &'static str, why: &str) -> Self {
        Self::InvalidFields(vec![(field, why.to_owned())])
    }
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidFields(fields) => invalid_fields(fields),
            AuthError::Unauthenticated(m) => Status::unauthenticated(m),
            AuthError::Locked(until) => {
                let wait = (until - Utc::now()).to_std().unwrap_or_default();
                exhausted_retry_after(
                    "too many failed logins; the account is locked for now",
                    wait,
                )
            }
            AuthError::PermissionDenied(m) => Status::permission_denied(m),
            AuthError::AlreadyExists(m) => Status::already_exists(m),
            AuthError::NotFound(m) => Status::not_found(m),
            AuthError::FailedPrecondition(m) => Status::failed_precondition(m),
            AuthError::Refused(status) => status,
            AuthError::Busy => exhausted_retry_after(
                "server busy: too many password operations; retry shortly",
                std::time::Duration::from_millis(200),
            ),
            AuthError::Database(error) => DbFailure::classify(error).into(),
            AuthError::CallerGone => Status::cancelled("the caller went away"),
            other => {
                tracing::error!(error = %other, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
