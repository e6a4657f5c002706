//! The AppStack auth service (replaces Cognito / IAM).
//!
//! - Users sign up with an email and a password, hashed with argon2id on a bounded pool
//!   ([`password`]); logins are throttled per account ([`lockout`]).
//! - Access tokens are short-lived EdDSA JWTs signed by the newest key of a key folder
//!   ([`signing`], [`keyring`]); every key that may have signed a live token is published
//!   through `GetJwks`, and other services verify locally with `appstack-verifier`.
//! - Refresh tokens are opaque, stored as hashes, rotated on every use; presenting a spent one
//!   revokes its whole session family ([`store`]).
//! - Every security event is written to an append-only audit table ([`audit`]).

pub mod audit;
pub mod error;
pub mod keyring;
pub mod lockout;
pub mod password;
pub mod service;
pub mod signing;
pub mod store;
pub mod tokens;
pub mod validate;
pub mod well_known;

use std::sync::Arc;
use std::time::Duration;

use appstack_common::metrics::MetricsRegistry;
use appstack_config::AuthConfig;
use appstack_proto::auth::v1::auth_service_server::AuthServiceServer;
use appstack_verifier::{KeyCache, KeyCacheConfig, Verifier, VerifierConfig};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use sqlx::postgres::PgPool;
use tokio_util::sync::CancellationToken;

pub use error::AuthError;
pub use service::{ADMIN_ROLE, AuthApi, USER_ROLE};

/// Paths of the auth service callable without a token, by exact method path (the process
/// checks at start that each names a method it serves).
pub const ANONYMOUS_PATHS: &[&str] = &[
    "/appstack.auth.v1.AuthService/SignUp",
    "/appstack.auth.v1.AuthService/Login",
    "/appstack.auth.v1.AuthService/Refresh",
    "/appstack.auth.v1.AuthService/Logout",
    "/appstack.auth.v1.AuthService/GetJwks",
    "/appstack.auth.v1.AuthService/ClientCredentialsToken",
];

/// A running auth service: its gRPC API, signing keys and local verifier.
#[derive(Debug)]
pub struct Auth {
    api: AuthApi,
    keys: Arc<keyring::KeyRing>,
    verifier: Arc<Verifier>,
    config: Arc<AuthConfig>,
}

/// What `bootstrap_admin` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// A new admin user was created.
    Created,
    /// An existing user was given the admin role.
    Promoted,
    /// The user was an admin already.
    Unchanged,
}

impl Auth {
    /// Loads signing keys (registering them in the database), builds the password pool, and
    /// registers the auth metrics.
    pub async fn new(
        config: AuthConfig,
        pool: PgPool,
        metrics: &MetricsRegistry,
    ) -> Result<Self, AuthError> {
        let config = Arc::new(config);
        let store = store::Store::new(pool);
        // Tokens signed just before a rotation stay verifiable for their whole life.
        let publish_window = config.access_token_ttl + Duration::from_secs(60);
        let keys = Arc::new(
            keyring::KeyRing::load(
                config.keys_dir.clone(),
                config.generate_key_if_missing,
                store.clone(),
                publish_window,
            )
            .await?,
        );
        let hasher = {
            let password = config.password.clone();
            tokio::task::spawn_blocking(move || password::PasswordHasher::new(&password))
                .await
                .map_err(|_| AuthError::Password(password::PasswordError::Task))??
        };
        let auth_metrics = service::AuthMetrics::default();
        metrics.register(|r| {
            r.register(
                "auth_logins",
                "Login attempts by outcome",
                auth_metrics.logins.clone(),
            );
            r.register(
                "auth_lockouts",
                "Account lockouts started",
                auth_metrics.lockouts.clone(),
            );
            r.register(
                "auth_refresh_reuse_detected",
                "Spent refresh tokens presented again (session family revoked)",
                auth_metrics.reuse_detected.clone(),
            );
        });
        let cache = KeyCache::new(
            keys.clone(),
            KeyCacheConfig {
                min_refetch_interval: Duration::from_secs(1),
            },
        );
        let verifier = Arc::new(Verifier::new(
            VerifierConfig::new(config.issuer.clone(), config.audience.clone()),
            cache,
        ));
        let api = AuthApi::new(config.clone(), store, hasher, keys.clone(), auth_metrics);
        Ok(Self {
            api,
            keys,
            verifier,
            config,
        })
    }

    /// The gRPC service, with message limits.
    pub fn server(&self, max_message_bytes: usize) -> AuthServiceServer<AuthApi> {
        AuthServiceServer::new(self.api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// The verifier for this service's own tokens.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.clone()
    }

    /// The API, for in-process callers (tools, bootstrap).
    pub fn api(&self) -> &AuthApi {
        &self.api
    }

    /// The work that runs beside the API until `stop`, by name: the key-folder reload, the
    /// verifier's key refresh, and the purge of ended sessions.
    pub fn background_tasks(
        &self,
        stop: &CancellationToken,
    ) -> [(&'static str, BoxFuture<'static, ()>); 3] {
        let interval = self.config.key_reload_interval;
        let verifier = self.verifier.clone();
        let refresh_stop = stop.clone();
        [
            (
                "auth key reload",
                self.keys.clone().run_reload(interval, stop.clone()).boxed(),
            ),
            (
                "auth verifier key refresh",
                async move { verifier.keys().run_refresh(interval, refresh_stop).await }.boxed(),
            ),
            (
                "auth session purge",
                purge_ended_sessions(self.api.store().clone(), stop.clone()).boxed(),
            ),
        ]
    }

    /// Makes `email` an admin: creates the user with `password` when absent, else adds the
    /// `admin` role. For the first admin of a new stack.
    pub async fn bootstrap_admin(
        &self,
        email: &str,
        password: &str,
    ) -> Result<BootstrapOutcome, AuthError> {
        let store = self.api.store();
        if let Some(user) = store
            .user_by_email(&validate::normalize_email(email))
            .await?
        {
            if user.roles.iter().any(|r| r == ADMIN_ROLE) {
                return Ok(BootstrapOutcome::Unchanged);
            }
            let mut roles = user.roles.clone();
            roles.push(ADMIN_ROLE.to_owned());
            let roles = validate::roles(&roles).map_err(|why| AuthError::field("roles", why))?;
            store.set_roles(user.id, &roles, "bootstrap").await?;
            return Ok(BootstrapOutcome::Promoted);
        }
        let roles = vec![ADMIN_ROLE.to_owned(), USER_ROLE.to_owned()];
        self.api
            .create_user(email, password, &roles, Some("bootstrap"))
            .await?;
        Ok(BootstrapOutcome::Created)
    }
}

/// Ended sessions and their refresh tokens are kept this long (for reuse detection and
/// investigation), then deleted.
const SESSION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Failures on an email not tried for this long are forgotten (longer than the longest
/// configurable lockout, 7 days, so no lockout is cut short).
const LOGIN_ATTEMPTS_IDLE: Duration = Duration::from_secs(8 * 24 * 3600);
/// How often ended sessions are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes ended sessions hourly until `stop`, so the session tables do not grow without
/// bound. Every replica runs it; the deletes are idempotent.
async fn purge_ended_sessions(store: store::Store, stop: CancellationToken) {
    appstack_common::shutdown::run_every(PURGE_INTERVAL, stop, || async {
        match store.purge_ended_sessions(SESSION_RETENTION).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged ended sessions"),
            Err(error) => tracing::warn!(%error, "purging ended sessions failed"),
        }
        match store.purge_idle_login_attempts(LOGIN_ATTEMPTS_IDLE).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged idle login throttles"),
            Err(error) => tracing::warn!(%error, "purging idle login throttles failed"),
        }
    })
    .await;
}
