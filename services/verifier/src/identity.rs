//! Who a verified request comes from.

use tonic::{Request, Status};

use crate::claims::AccessClaims;

/// The kind of principal behind a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A human user (sign-up and login).
    User,
    /// A machine client (client-credentials grant).
    ServiceAccount,
}

/// The verified caller of a request, put into the request's extensions by
/// [`AuthLayer`](crate::AuthLayer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token subject.
    pub subject: String,
    /// User or service account.
    pub kind: PrincipalKind,
    /// Granted roles.
    pub roles: Vec<String>,
    /// The user's email, for users.
    pub email: Option<String>,
    /// Token expiry, seconds since the Unix epoch.
    pub expires_at: i64,
    /// The token id (`jti`).
    pub token_id: String,
}

impl Identity {
    /// The identity a set of verified claims describes.
    pub fn from_claims(claims: AccessClaims) -> Self {
        let kind = if claims.sub.starts_with("sa:") {
            PrincipalKind::ServiceAccount
        } else {
            PrincipalKind::User
        };
        Self {
            subject: claims.sub,
            kind,
            roles: claims.roles,
            email: claims.email,
            expires_at: claims.exp,
            token_id: claims.jti,
        }
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The caller of `request`, or UNAUTHENTICATED when no verified identity is attached.
pub fn require_identity<T>(request: &Request<T>) -> Result<&Identity, Status> {
    request
        .extensions()
        .get::<Identity>()
        .ok_or_else(|| Status::unauthenticated("a bearer access token is required"))
}

/// The caller of `request` when it holds `role`; PERMISSION_DENIED when it does not.
pub fn require_role<'r, T>(request: &'r Request<T>, role: &str) -> Result<&'r Identity, Status> {
    let identity = require_identity(request)?;
    if identity.has_role(role) {
        Ok(identity)
    } else {
        Err(Status::permission_denied(format!(
            "the `{role}` role is required"
        )))
    }
}
