//! Security events written to the append-only `auth.audit_events` table.

/// The kinds of security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A user signed up.
    SignUp,
    /// A login succeeded.
    LoginOk,
    /// A login failed (wrong password, unknown email).
    LoginFailed,
    /// An account was locked after repeated failures.
    Lockout,
    /// A login was refused because the account is locked.
    LoginLocked,
    /// A refresh token was exchanged.
    Refresh,
    /// A spent refresh token was presented again; its family was revoked.
    RefreshReuseDetected,
    /// A session family was revoked by logout.
    Logout,
    /// An admin changed a user's roles.
    RoleChange,
    /// An admin disabled a user.
    UserDisabled,
    /// A service account was created.
    ServiceAccountCreated,
    /// A service account was disabled.
    ServiceAccountDisabled,
    /// A service account obtained a token.
    ClientCredentialsOk,
    /// A client-credentials request failed.
    ClientCredentialsFailed,
    /// A new signing key became active.
    KeyRotation,
}

impl AuditKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignUp => "sign_up",
            Self::LoginOk => "login_ok",
            Self::LoginFailed => "login_failed",
            Self::Lockout => "lockout",
            Self::LoginLocked => "login_locked",
            Self::Refresh => "refresh",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::Logout => "logout",
            Self::RoleChange => "role_change",
            Self::UserDisabled => "user_disabled",
            Self::ServiceAccountCreated => "service_account_created",
            Self::ServiceAccountDisabled => "service_account_disabled",
            Self::ClientCredentialsOk => "client_credentials_ok",
            Self::ClientCredentialsFailed => "client_credentials_failed",
            Self::KeyRotation => "key_rotation",
        }
    }
}
