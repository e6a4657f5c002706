//! The `appstack.auth.v1.AuthService` gRPC implementation.

use std::sync::Arc;

use appstack_common::db_failure::DbHealth;
use appstack_common::run_to_completion::CallerGone;
use appstack_proto::auth::v1 as pb;
use appstack_proto::auth::v1::auth_service_server::AuthService;
use appstack_verifier::{PrincipalKind, require_identity, require_role};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use subtle::ConstantTimeEq as _;
use tonic::{Request, Response, Status};

use crate::audit::AuditKind;
use crate::error::AuthError;
use crate::keyring::KeyRing;
use crate::lockout::LockoutPolicy;
use crate::password::PasswordHasher;
use crate::store::{RefreshOutcome, Reservation, Store, UserRow};
use crate::tokens::{self, Subject};
use crate::validate;
use appstack_config::AuthConfig;

/// The role that may administer users and service accounts.
pub const ADMIN_ROLE: &str = "admin";
/// The role every user gets at sign-up.
pub const USER_ROLE: &str = "user";

/// Labels of the login counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `wrong_credentials`, `locked`, `disabled`, `busy`, `abandoned` (the caller went
    /// away before its session started).
    pub outcome: &'static str,
}

/// Auth-specific metrics.
#[derive(Clone, Debug, Default)]
pub struct AuthMetrics {
    /// Logins by outcome.
    pub logins: Family<OutcomeLabels, Counter>,
    /// Lockouts started.
    pub lockouts: Counter,
    /// Refresh-token reuse detections.
    pub reuse_detected: Counter,
}

/// The auth service.
#[derive(Clone, Debug)]
pub struct AuthApi {
    config: Arc<AuthConfig>,
    store: Store,
    hasher: PasswordHasher,
    keys: Arc<KeyRing>,
    lockout: LockoutPolicy,
    metrics: AuthMetrics,
    db: DbHealth,
}

type GrpcResult<T> = Result<Response<T>, Status>;

impl AuthApi {
    /// Assembles the service.
    pub fn new(
        config: Arc<AuthConfig>,
        store: Store,
        hasher: PasswordHasher,
        keys: Arc<KeyRing>,
        metrics: AuthMetrics,
    ) -> Self {
        let lockout = LockoutPolicy::new(config.lockout.clone());
        let db = DbHealth::new(store.pool().clone());
        Self {
            db,
            config,
            store,
            hasher,
            keys,
            lockout,
            metrics,
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn access_token(&self, subject: &Subject<'_>) -> Result<tokens::AccessToken, AuthError> {
        let key = self.keys.active();
        Ok(tokens::sign_access_token(
            &key,
            &self.config.issuer,
            &self.config.audience,
            self.config.access_token_ttl,
            subject,
        )?)
    }

    fn count_login(&self, outcome: &'static str) {
        self.metrics
            .logins
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The one place an operation's result becomes a gRPC answer; a database failure is
    /// explained first (unreachable, saturated, timed out), which needs the pool.
    async fn answer<T>(&self, result: Result<T, AuthError>) -> GrpcResult<T> {
        match result {
            Ok(value) => Ok(Response::new(value)),
            Err(AuthError::Database(error)) => Err(self.db.explain(error).await.into()),
            Err(other) => Err(other.into()),
        }
    }

    /// Checks the password and starts a session. The attempt is counted before the hash is
    /// checked; the handler runs to completion even if the caller goes away, so a correct
    /// password always forgives it, and no session is started for a caller who will never
    /// receive its tokens.
    async fn login(
        &self,
        email: &str,
        password: &str,
        caller: &CallerGone,
    ) -> Result<pb::TokenResponse, AuthError> {
        let mut bad = Vec::new();
        if let Err(why) = validate::email(email) {
            bad.push(("email", why.to_owned()));
        }
        if let Err(why) = validate::presented_password(password) {
            bad.push(("password", why.to_owned()));
        }
        if !bad.is_empty() {
            return Err(AuthError::InvalidFields(bad));
        }
        // Take a hashing slot first: under overload the attempt is refused before it counts.
        let slot = self
            .hasher
            .admit()
            .inspect_err(|_| self.count_login("busy"))?;
        let normalized = validate::normalize_email(email);
        let throttle_unknown = self.config.prevent_user_existence_errors;
        let Some((user, reservation)) = self
            .store
            .reserve_attempt(&normalized, &self.lockout, throttle_unknown)
            .await?
        else {
            // Unknown email, not throttled: the same hashing work as a real account.
            slot.verify(password, None).await?;
            self.audit_failure(None, &normalized, None).await?;
            return Err(AuthError::Unauthenticated("invalid email or password"));
        };
        // Known and (when throttled) unknown emails take the same steps from here on: the
        // same statements, the same hashing work, the same answers.
        let subject = user.as_ref().map(|u| u.id.to_string());
        let failures = match reservation {
            Reservation::Locked(until) => {
                self.store
                    .audit(
                        AuditKind::LoginLocked,
                        subject.as_deref(),
                        None,
                        serde_json::json!({ "until": until, "email": normalized }),
                    )
                    .await?;
                self.count_login("locked");
                return Err(AuthError::Locked(until));
            }
            Reservation::Granted { failures } => failures,
        };
        let verification = slot
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let Some(user) = user.filter(|_| verification.matches) else {
            self.audit_failure(subject.as_deref(), &normalized, Some(failures))
                .await?;
            return Err(AuthError::Unauthenticated("invalid email or password"));
        };
        let subject = user.id.to_string();
        if user.disabled_at.is_some() {
            self.store.clear_failures(&normalized).await?;
            self.count_login("disabled");
            return Err(AuthError::PermissionDenied("this user is disabled"));
        }
        if caller.is_gone() {
            self.store.clear_failures(&normalized).await?;
            self.count_login("abandoned");
            return Err(AuthError::CallerGone);
        }
        if verification.needs_rehash {
            self.rehash(&user, password).await;
        }
        let refresh = tokens::new_secret(tokens::REFRESH_PREFIX);
        self.store
            .start_session(
                user.id,
                &normalized,
                &tokens::secret_hash(&refresh),
                self.config.refresh_token_ttl,
                self.config.session_max_lifetime,
            )
            .await?
            .then_some(())
            .ok_or(AuthError::PermissionDenied("this user is disabled"))?;
        let access = self.access_token(&Subject {
            id: &subject,
            roles: &user.roles,
            email: Some(&user.email),
        })?;
        self.count_login("ok");
        Ok(pb::TokenResponse {
            access_token: access.token,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            refresh_token: refresh,
            refresh_expires_in: secs(self.config.refresh_token_ttl),
            subject,
        })
    }

    /// Records a failed login (`failures` counted, when throttled), and a lockout when this
    /// failure reached the threshold.
    async fn audit_failure(
        &self,
        subject: Option<&str>,
        normalized: &str,
        failures: Option<u32>,
    ) -> Result<(), AuthError> {
        self.store
            .audit(
                AuditKind::LoginFailed,
                subject,
                None,
                serde_json::json!({ "email": normalized, "failures": failures }),
            )
            .await?;
        if failures.is_some_and(|f| f >= self.lockout.threshold()) {
            self.metrics.lockouts.inc();
            self.store
                .audit(
                    AuditKind::Lockout,
                    subject,
                    None,
                    serde_json::json!({ "email": normalized, "failures": failures }),
                )
                .await?;
        }
        self.count_login("wrong_credentials");
        Ok(())
    }

    /// Best effort: a failed rehash leaves the old (still valid) hash for next time.
    async fn rehash(&self, user: &UserRow, password: &str) {
        match self.hasher.hash(password).await {
            Ok(hash) => {
                if let Err(error) = self.store.update_password_hash(user.id, &hash).await {
                    tracing::warn!(%error, user = %user.id, "storing a rehashed password failed");
                }
            }
            Err(error) => tracing::debug!(%error, user = %user.id, "rehash skipped"),
        }
    }

    async fn refresh(&self, token: &str) -> Result<pb::TokenResponse, AuthError> {
        if token.is_empty() {
            return Err(AuthError::field("refresh_token", "is required"));
        }
        if !tokens::plausible_secret(token, tokens::REFRESH_PREFIX) {
            return Err(AuthError::Unauthenticated("invalid refresh token"));
        }
        let next = tokens::new_secret(tokens::REFRESH_PREFIX);
        let outcome = self
            .store
            .rotate_refresh_token(
                &tokens::secret_hash(token),
                &tokens::secret_hash(&next),
                self.config.refresh_token_ttl,
                self.config.refresh_reuse_grace,
            )
            .await?;
        match outcome {
            RefreshOutcome::Rotated { user, expires_in } => {
                let subject = user.id.to_string();
                let access = self.access_token(&Subject {
                    id: &subject,
                    roles: &user.roles,
                    email: Some(&user.email),
                })?;
                Ok(pb::TokenResponse {
                    access_token: access.token,
                    token_type: "Bearer".into(),
                    expires_in: access.expires_in,
                    refresh_token: next,
                    refresh_expires_in: secs(expires_in),
                    subject,
                })
            }
            RefreshOutcome::Invalid => Err(AuthError::Unauthenticated(
                "invalid or expired refresh token",
            )),
            RefreshOutcome::Reused => {
                self.metrics.reuse_detected.inc();
                Err(AuthError::Unauthenticated(
                    "refresh token reuse detected; the session was revoked",
                ))
            }
            RefreshOutcome::SessionEnded => Err(AuthError::Unauthenticated(
                "the session has ended; log in again",
            )),
            RefreshOutcome::Disabled => Err(AuthError::PermissionDenied("this user is disabled")),
        }
    }

    async fn client_credentials(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<pb::TokenResponse, AuthError> {
        if client_id.is_empty() || client_id.len() > 128 {
            return Err(AuthError::field(
                "client_id",
                "is required and at most 128 characters",
            ));
        }
        if secret.is_empty() || secret.len() > 256 {
            return Err(AuthError::field(
                "client_secret",
                "is required and at most 256 characters",
            ));
        }
        let presented = tokens::secret_hash(secret);
        let account = self.store.service_account(client_id).await?;
        let valid = account
            .as_ref()
            .is_some_and(|a| bool::from(a.secret_hash.as_slice().ct_eq(&presented)));
        let Some(account) = account.filter(|_| valid) else {
            self.store
                .audit(
                    AuditKind::ClientCredentialsFailed,
                    None,
                    None,
                    serde_json::json!({ "client_id": client_id }),
                )
                .await?;
            return Err(AuthError::Unauthenticated("invalid client credentials"));
        };
        let subject = format!("sa:{}", account.id);
        if account.disabled_at.is_some() {
            return Err(AuthError::PermissionDenied(
                "this service account is disabled",
            ));
        }
        self.store
            .audit(
                AuditKind::ClientCredentialsOk,
                Some(&subject),
                None,
                serde_json::json!({}),
            )
            .await?;
        let access = self.access_token(&Subject {
            id: &subject,
            roles: &account.roles,
            email: None,
        })?;
        Ok(pb::TokenResponse {
            access_token: access.token,
            token_type: "Bearer".into(),
            expires_in: access.expires_in,
            refresh_token: String::new(),
            refresh_expires_in: 0,
            subject,
        })
    }

    /// The caller's subject if it holds the admin role *now*: the token says so, and the
    /// database agrees (not disabled, role not revoked since the token was issued).
    async fn current_admin<T>(&self, request: &Request<T>) -> Result<String, AuthError> {
        let identity = require_role(request, ADMIN_ROLE).map_err(AuthError::Refused)?;
        let revoked = || AuthError::PermissionDenied("the `admin` role is required");
        let admin_now = match identity.kind {
            PrincipalKind::User => {
                let id = uuid::Uuid::parse_str(&identity.subject).map_err(|_| revoked())?;
                self.store.user_by_id(id).await?.is_some_and(|u| {
                    u.disabled_at.is_none() && u.roles.iter().any(|r| r == ADMIN_ROLE)
                })
            }
            PrincipalKind::ServiceAccount => {
                let id = identity
                    .subject
                    .strip_prefix("sa:")
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                    .ok_or_else(revoked)?;
                self.store
                    .service_account_by_id(id)
                    .await?
                    .is_some_and(|(roles, disabled)| {
                        disabled.is_none() && roles.iter().any(|r| r == ADMIN_ROLE)
                    })
            }
        };
        if admin_now {
            Ok(identity.subject.clone())
        } else {
            Err(revoked())
        }
    }

    /// Creates a user (sign-up, or an admin bootstrap with other roles).
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        roles: &[String],
        actor: Option<&str>,
    ) -> Result<UserRow, AuthError> {
        let mut bad = Vec::new();
        if let Err(why) = validate::email(email) {
            bad.push(("email", why.to_owned()));
        }
        if let Err(why) = validate::new_password(password) {
            bad.push(("password", why.to_owned()));
        }
        if !bad.is_empty() {
            return Err(AuthError::InvalidFields(bad));
        }
        let normalized = validate::normalize_email(email);
        if self.store.user_by_email(&normalized).await?.is_some() {
            return Err(AuthError::AlreadyExists("a user with this email exists"));
        }
        let hash = self.hasher.hash(password).await?;
        self.store
            .create_user(email.trim(), &normalized, &hash, roles, actor)
            .await?
            .ok_or(AuthError::AlreadyExists("a user with this email exists"))
    }
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn user_message(user: &UserRow) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        roles: user.roles.clone(),
        disabled: user.disabled_at.is_some(),
        created_at: Some(timestamp(user.created_at)),
    }
}

fn user_id(field: &'static str, value: &str) -> Result<uuid::Uuid, AuthError> {
    validate::uuid(value).map_err(|why| AuthError::field(field, why))
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn sign_up(&self, request: Request<pb::SignUpRequest>) -> GrpcResult<pb::SignUpResponse> {
        let req = request.into_inner();
        let result = self
            .create_user(&req.email, &req.password, &[USER_ROLE.to_owned()], None)
            .await
            .map(|user| pb::SignUpResponse {
                user: Some(user_message(&user)),
            });
        self.answer(result).await
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> GrpcResult<pb::TokenResponse> {
        let caller = CallerGone::of(&request);
        let req = request.into_inner();
        let result = self.login(&req.email, &req.password, &caller).await;
        self.answer(result).await
    }

    async fn refresh(&self, request: Request<pb::RefreshRequest>) -> GrpcResult<pb::TokenResponse> {
        let result = self.refresh(&request.into_inner().refresh_token).await;
        self.answer(result).await
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> GrpcResult<pb::LogoutResponse> {
        let token = request.into_inner().refresh_token;
        let result = async {
            if token.is_empty() {
                return Err(AuthError::field("refresh_token", "is required"));
            }
            if tokens::plausible_secret(&token, tokens::REFRESH_PREFIX) {
                self.store
                    .revoke_family_of(&tokens::secret_hash(&token))
                    .await?;
            }
            Ok(pb::LogoutResponse {})
        }
        .await;
        self.answer(result).await
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> GrpcResult<pb::GetJwksResponse> {
        let result = self.keys.jwks().await.map(|keys| pb::GetJwksResponse {
            keys,
            max_age_seconds: i64::try_from(crate::well_known::MAX_AGE.as_secs())
                .unwrap_or(i64::MAX),
        });
        self.answer(result).await
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> GrpcResult<pb::WhoAmIResponse> {
        let identity = require_identity(&request)?;
        Ok(Response::new(pb::WhoAmIResponse {
            subject: identity.subject.clone(),
            principal_kind: match identity.kind {
                PrincipalKind::User => "user".into(),
                PrincipalKind::ServiceAccount => "service_account".into(),
            },
            email: identity.email.clone().unwrap_or_default(),
            roles: identity.roles.clone(),
            expires_at: Some(prost_types::Timestamp {
                seconds: identity.expires_at,
                nanos: 0,
            }),
        }))
    }

    async fn set_roles(
        &self,
        request: Request<pb::SetRolesRequest>,
    ) -> GrpcResult<pb::SetRolesResponse> {
        let result = async {
            let actor = self.current_admin(&request).await?;
            let req = request.get_ref();
            let id = user_id("user_id", &req.user_id)?;
            let roles =
                validate::roles(&req.roles).map_err(|why| AuthError::field("roles", why))?;
            let user = self
                .store
                .set_roles(id, &roles, &actor)
                .await?
                .ok_or(AuthError::NotFound("no such user"))?;
            Ok(pb::SetRolesResponse {
                user: Some(user_message(&user)),
            })
        }
        .await;
        self.answer(result).await
    }

    async fn disable_user(
        &self,
        request: Request<pb::DisableUserRequest>,
    ) -> GrpcResult<pb::DisableUserResponse> {
        let result = async {
            let actor = self.current_admin(&request).await?;
            let id = user_id("user_id", &request.get_ref().user_id)?;
            if actor == id.to_string() {
                return Err(AuthError::FailedPrecondition(
                    "an admin cannot disable themselves",
                ));
            }
            let (user, revoked) = self
                .store
                .disable_user(id, &actor)
                .await?
                .ok_or(AuthError::NotFound("no such user"))?;
            Ok(pb::DisableUserResponse {
                user: Some(user_message(&user)),
                revoked_sessions: revoked,
            })
        }
        .await;
        self.answer(result).await
    }

    async fn create_service_account(
        &self,
        request: Request<pb::CreateServiceAccountRequest>,
    ) -> GrpcResult<pb::CreateServiceAccountResponse> {
        let result = async {
            let actor = self.current_admin(&request).await?;
            let req = request.get_ref();
            let mut bad = Vec::new();
            if let Err(why) = validate::service_account_name(&req.name) {
                bad.push(("name", why.to_owned()));
            }
            let roles = match validate::roles(&req.roles) {
                Ok(roles) => roles,
                Err(why) => {
                    bad.push(("roles", why.to_owned()));
                    Vec::new()
                }
            };
            if !bad.is_empty() {
                return Err(AuthError::InvalidFields(bad));
            }
            let client_id = tokens::new_secret(tokens::CLIENT_ID_PREFIX);
            let secret = tokens::new_secret(tokens::CLIENT_SECRET_PREFIX);
            let id = self
                .store
                .create_service_account(
                    &req.name,
                    &client_id,
                    &tokens::secret_hash(&secret),
                    &roles,
                    &actor,
                )
                .await?
                .ok_or(AuthError::AlreadyExists(
                    "a service account with this name exists",
                ))?;
            Ok(pb::CreateServiceAccountResponse {
                id: id.to_string(),
                client_id,
                client_secret: secret,
            })
        }
        .await;
        self.answer(result).await
    }

    async fn disable_service_account(
        &self,
        request: Request<pb::DisableServiceAccountRequest>,
    ) -> GrpcResult<pb::DisableServiceAccountResponse> {
        let result = async {
            let actor = self.current_admin(&request).await?;
            let id = user_id("id", &request.get_ref().id)?;
            if !self.store.disable_service_account(id, &actor).await? {
                return Err(AuthError::NotFound("no such service account"));
            }
            Ok(pb::DisableServiceAccountResponse {})
        }
        .await;
        self.answer(result).await
    }

    async fn client_credentials_token(
        &self,
        request: Request<pb::ClientCredentialsTokenRequest>,
    ) -> GrpcResult<pb::TokenResponse> {
        let req = request.into_inner();
        let result = self
            .client_credentials(&req.client_id, &req.client_secret)
            .await;
        self.answer(result).await
    }
}
