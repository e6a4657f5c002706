//! The auth service's settings (`[auth]` in the config file).

use std::path::PathBuf;
use std::time::Duration;

use appstack_common::config::Validate;
use serde::{Deserialize, Serialize};

/// Settings of the auth service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of every access token; verifiers require it.
    pub issuer: String,
    /// `aud` of every access token; verifiers require it.
    pub audience: String,
    /// Access-token lifetime.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Lifetime of one refresh token (each refresh issues a new one).
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// Absolute lifetime of a session, however often it is refreshed.
    #[serde(with = "humantime_serde")]
    pub session_max_lifetime: Duration,
    /// Folder of Ed25519 signing keys, one PKCS#8 PEM file `<kid>.pem` each (a mounted
    /// Kubernetes Secret). The greatest `kid` signs; the others stay published.
    pub keys_dir: PathBuf,
    /// Create a signing key when `keys_dir` has none (`appstack dev`); off in production.
    pub generate_key_if_missing: bool,
    /// How often `keys_dir` is re-read to pick up a rotated Secret.
    #[serde(with = "humantime_serde")]
    pub key_reload_interval: Duration,
    /// Password hashing.
    pub password: PasswordConfig,
    /// Brute-force protection.
    pub lockout: LockoutConfig,
    /// A refresh token spent less than this long ago may be presented again and gets a
    /// fresh token of the same session, instead of revoking the session as reuse: two tabs
    /// or a retried request refreshing at once both keep working. `0s` turns it off; later
    /// reuse still revokes the whole session.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// Throttle and answer logins for unknown emails exactly as for known ones (Cognito's
    /// "prevent user existence errors"), so neither lockouts nor timing tell which emails
    /// have accounts.
    pub prevent_user_existence_errors: bool,
    /// The absolute URL of the JWKS that the OpenID discovery document
    /// (`/.well-known/openid-configuration` on the admin port) gives as `jwks_uri`; gateways
    /// and JWT libraries fetch the keys from it. Unset: `{issuer}/.well-known/jwks.json`,
    /// right only when the issuer URL reaches the auth admin port. In a cluster, point it at
    /// the auth Service's admin port, e.g.
    /// `http://appstack-auth.appstack.svc:9090/.well-known/jwks.json`. Must be an absolute
    /// `http` or `https` URL.
    pub jwks_uri: Option<String>,
}

impl AuthConfig {
    /// `jwks_uri`, or its default derived from `issuer`.
    pub fn jwks_uri(&self) -> String {
        match &self.jwks_uri {
            Some(uri) => uri.clone(),
            None => format!(
                "{}/.well-known/jwks.json",
                self.issuer.trim_end_matches('/')
            ),
        }
    }
}

/// True for an absolute `http`/`https` URL with a host.
fn is_absolute_http_url(text: &str) -> bool {
    text.parse::<axum::http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some_and(|a| !a.host().is_empty())
    })
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "https://auth.appstack.local".into(),
            audience: "appstack".into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            session_max_lifetime: Duration::from_secs(30 * 24 * 3600),
            keys_dir: PathBuf::from("/var/run/appstack/auth-keys"),
            generate_key_if_missing: false,
            key_reload_interval: Duration::from_secs(60),
            password: PasswordConfig::default(),
            lockout: LockoutConfig::default(),
            refresh_reuse_grace: Duration::from_secs(10),
            prevent_user_existence_errors: true,
            jwks_uri: None,
        }
    }
}

impl Validate for AuthConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.issuer.trim().is_empty() {
            problems.push("auth.issuer must not be empty".into());
        }
        if self.audience.trim().is_empty() {
            problems.push("auth.audience must not be empty".into());
        }
        if !(Duration::from_secs(30)..=Duration::from_secs(24 * 3600))
            .contains(&self.access_token_ttl)
        {
            problems.push("auth.access_token_ttl must be between 30s and 24h".into());
        }
        if self.refresh_token_ttl < self.access_token_ttl {
            problems.push(
                "auth.refresh_token_ttl must not be shorter than auth.access_token_ttl".into(),
            );
        }
        if self.session_max_lifetime > Duration::from_secs(366 * 24 * 3600) {
            problems.push("auth.session_max_lifetime must be at most 366d".into());
        }
        if self.session_max_lifetime < self.refresh_token_ttl {
            problems.push(
                "auth.session_max_lifetime must not be shorter than auth.refresh_token_ttl".into(),
            );
        }
        if self.key_reload_interval < Duration::from_secs(1) {
            problems.push("auth.key_reload_interval must be at least 1s".into());
        }
        if self.refresh_reuse_grace > Duration::from_secs(300) {
            problems.push("auth.refresh_reuse_grace must be at most 5m".into());
        }
        self.password.validate(problems);
        self.lockout.validate(problems);
        if !is_absolute_http_url(&self.jwks_uri()) {
            problems.push(
                "auth.jwks_uri must be an absolute http(s) URL (unset, it is derived from auth.issuer)"
                    .into(),
            );
        }
    }
}

/// argon2id parameters and the hashing pool. Defaults are OWASP's: 19 MiB, t=2, p=1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordConfig {
    /// Memory per hash, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// Hashes computed at once, off the async threads; 0 = one per CPU core.
    pub workers: usize,
    /// Hashes allowed to wait for a worker; beyond that, RESOURCE_EXHAUSTED.
    pub queue: usize,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            workers: 0,
            queue: 64,
        }
    }
}

impl Validate for PasswordConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.memory_kib < 8 * self.parallelism.max(1) || self.memory_kib > 4 * 1024 * 1024 {
            problems
                .push("auth.password.memory_kib must be between 8*parallelism and 4194304".into());
        }
        if self.iterations == 0 || self.iterations > 64 {
            problems.push("auth.password.iterations must be between 1 and 64".into());
        }
        if self.parallelism == 0 || self.parallelism > 64 {
            problems.push("auth.password.parallelism must be between 1 and 64".into());
        }
        if self.workers > 1024 {
            problems.push("auth.password.workers must be at most 1024".into());
        }
        if self.queue > 100_000 {
            problems.push("auth.password.queue must be at most 100000".into());
        }
    }
}

/// Per-account lockout after repeated failed logins (as Cognito: 5 failures, then a lockout
/// that doubles with every further failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutConfig {
    /// Failures before the first lockout.
    pub threshold: u32,
    /// The first lockout.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// The longest lockout.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(15 * 60),
        }
    }
}

impl Validate for LockoutConfig {
    fn validate(&self, problems: &mut Vec<String>) {
        if self.threshold == 0 {
            problems.push("auth.lockout.threshold must be positive".into());
        }
        if self.max > Duration::from_secs(7 * 24 * 3600) {
            problems.push("auth.lockout.max must be at most 7d".into());
        }
        if self.base.is_zero() || self.max < self.base {
            problems
                .push("auth.lockout.base must be positive and not exceed auth.lockout.max".into());
        }
    }
}
