//! The claims of an AppStack access token (RFC 9068 profile).

use serde::{Deserialize, Serialize};

/// The `typ` header of every access token.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// Claims carried by an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the auth service's configured issuer URL.
    pub iss: String,
    /// Audience: the stack's configured audience.
    pub aud: String,
    /// Subject: a user id, or `sa:<id>` for a service account.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
    /// Roles granted to the subject.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user's email; absent for service accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}
