//! `auth`: the auth service's policy (tokens, keys, password hashing, lockout).

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::is_absolute_http_url;
use crate::{Problems, Validate};

/// Settings of the auth service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthConfig {
    /// `iss` of every access token; verifiers require it. Not empty; default
    /// `https://auth.appstack.local`.
    pub issuer: String,
    /// `aud` of every access token; verifiers require it. Not empty; default `appstack`.
    pub audience: String,
    /// Access-token lifetime. Duration, `30s..=24h`; default `15m`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub access_token_ttl: Duration,
    /// Lifetime of one refresh token (each refresh issues a new one). Duration, at least
    /// `accessTokenTtl`; default `14d`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub refresh_token_ttl: Duration,
    /// Absolute lifetime of a session, however often it is refreshed. Duration, from
    /// `refreshTokenTtl` to `366d`; default `30d`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub session_max_lifetime: Duration,
    /// Folder of Ed25519 signing keys, one PKCS#8 PEM file `<kid>.pem` each (a mounted
    /// Kubernetes Secret). The greatest `kid` signs; the others stay published. Default
    /// `/var/run/appstack/auth-keys`.
    pub keys_dir: PathBuf,
    /// Create a signing key when `keysDir` has none (`appstack dev`); off in production.
    /// Default `false`.
    pub generate_key_if_missing: bool,
    /// How often `keysDir` is re-read to pick up a rotated Secret. Duration, at least
    /// `1s`; default `1m`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub key_reload_interval: Duration,
    /// Password hashing.
    pub password: PasswordConfig,
    /// Brute-force protection.
    pub lockout: LockoutConfig,
    /// A refresh token spent less than this long ago may be presented again and gets a
    /// fresh token of the same session, instead of revoking the session as reuse: two tabs
    /// or a retried request refreshing at once both keep working. `0s` turns it off; later
    /// reuse still revokes the whole session. Duration, at most `5m`; default `10s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub refresh_reuse_grace: Duration,
    /// Throttle and answer logins for unknown emails exactly as for known ones (Cognito's
    /// "prevent user existence errors"), so neither lockouts nor timing tell which emails
    /// have accounts. Default `true`.
    pub prevent_user_existence_errors: bool,
    /// The absolute URL of the JWKS that the OpenID discovery document
    /// (`/.well-known/openid-configuration` on the admin port) gives as `jwks_uri`; gateways
    /// and JWT libraries fetch the keys from it. Unset: `{issuer}/.well-known/jwks.json`,
    /// right only when the issuer URL reaches the auth admin port. In a cluster, point it at
    /// the auth Service's admin port, e.g.
    /// `http://appstack-auth.appstack.svc:9090/.well-known/jwks.json`. Must be an absolute
    /// `http` or `https` URL.
    pub jwks_uri: Option<String>,
    /// The auth service's gRPC endpoint, from which processes that do not run auth
    /// themselves (`appstack main`, `appstack worker`) fetch its signing keys (`GetJwks`)
    /// to verify tokens locally, e.g. `http://appstack-auth.appstack.svc:8080`. An
    /// absolute `http` or `https` URL; default `http://127.0.0.1:8080`.
    pub endpoint: String,
}

impl AuthConfig {
    /// `jwksUri`, or its default derived from `issuer`.
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
            endpoint: "http://127.0.0.1:8080".into(),
        }
    }
}

impl Validate for AuthConfig {
    fn check(&self, p: &mut Problems) {
        if self.issuer.trim().is_empty() {
            p.push("issuer", "must not be empty");
        }
        if self.audience.trim().is_empty() {
            p.push("audience", "must not be empty");
        }
        if !(Duration::from_secs(30)..=Duration::from_secs(24 * 3600))
            .contains(&self.access_token_ttl)
        {
            p.push("accessTokenTtl", "must be between 30s and 24h");
        }
        if self.refresh_token_ttl < self.access_token_ttl {
            p.push("refreshTokenTtl", "must not be shorter than accessTokenTtl");
        }
        if self.session_max_lifetime > Duration::from_secs(366 * 24 * 3600) {
            p.push("sessionMaxLifetime", "must be at most 366d");
        }
        if self.session_max_lifetime < self.refresh_token_ttl {
            p.push(
                "sessionMaxLifetime",
                "must not be shorter than refreshTokenTtl",
            );
        }
        if self.key_reload_interval < Duration::from_secs(1) {
            p.push("keyReloadInterval", "must be at least 1s");
        }
        if self.refresh_reuse_grace > Duration::from_secs(300) {
            p.push("refreshReuseGrace", "must be at most 5m");
        }
        if !is_absolute_http_url(&self.endpoint) {
            p.push(
                "endpoint",
                "must be an absolute http(s) URL such as http://appstack-auth.appstack.svc:8080",
            );
        }
        p.field("password", |p| self.password.check(p));
        p.field("lockout", |p| self.lockout.check(p));
        if !is_absolute_http_url(&self.jwks_uri()) {
            p.push(
                "jwksUri",
                "must be an absolute http(s) URL (unset, it is derived from issuer)",
            );
        }
    }
}

/// argon2id parameters and the hashing pool. Defaults are OWASP's: 19 MiB, t=2, p=1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PasswordConfig {
    /// Memory per hash. KiB, `8 × parallelism..=4194304`; default `19456` (19 MiB).
    pub memory_kib: u32,
    /// Passes over the memory. Count, `1..=64`; default `2`.
    pub iterations: u32,
    /// Lanes. Count, `1..=64`; default `1`.
    pub parallelism: u32,
    /// Hashes computed at once, off the async threads; `0` = one per CPU core. Count,
    /// at most `1024`; default `0`.
    pub workers: usize,
    /// Hashes allowed to wait for a worker; beyond that, RESOURCE_EXHAUSTED. Count, at most
    /// `100000`; default `64`.
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
    fn check(&self, p: &mut Problems) {
        if self.memory_kib < 8 * self.parallelism.clamp(1, 64) || self.memory_kib > 4 * 1024 * 1024
        {
            p.push("memoryKib", "must be between 8*parallelism and 4194304");
        }
        if !(1..=64).contains(&self.iterations) {
            p.push("iterations", "must be between 1 and 64");
        }
        if !(1..=64).contains(&self.parallelism) {
            p.push("parallelism", "must be between 1 and 64");
        }
        if self.workers > 1024 {
            p.push("workers", "must be at most 1024");
        }
        if self.queue > 100_000 {
            p.push("queue", "must be at most 100000");
        }
    }
}

/// Per-account lockout after repeated failed logins (as Cognito: 5 failures, then a lockout
/// that doubles with every further failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LockoutConfig {
    /// Failures before the first lockout. Count, at least `1`; default `5`.
    pub threshold: u32,
    /// The first lockout; it doubles with each further failure. Duration, above `0s` and
    /// at most `max`; default `1s`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
    pub base: Duration,
    /// The longest lockout. Duration, at most `7d`; default `15m`.
    #[serde(with = "crate::duration")]
    #[schemars(with = "crate::duration::DurationString")]
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
    fn check(&self, p: &mut Problems) {
        if self.threshold == 0 {
            p.push("threshold", "must be at least 1");
        }
        if self.max > Duration::from_secs(7 * 24 * 3600) {
            p.push("max", "must be at most 7d");
        }
        if self.base.is_zero() || self.max < self.base {
            p.push("base", "must be greater than 0s and not exceed max");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        AuthConfig::default().validate().unwrap();
    }

    #[test]
    fn rules_name_nested_fields() {
        let config = AuthConfig {
            access_token_ttl: Duration::from_secs(1),
            password: PasswordConfig {
                iterations: 0,
                ..PasswordConfig::default()
            },
            lockout: LockoutConfig {
                base: Duration::from_secs(3600),
                ..LockoutConfig::default()
            },
            jwks_uri: Some("/.well-known/jwks.json".into()),
            ..AuthConfig::default()
        };
        let problems = config.validate().unwrap_err().problems;
        assert_eq!(
            problems,
            [
                "accessTokenTtl: must be between 30s and 24h",
                "password.iterations: must be between 1 and 64",
                "lockout.base: must be greater than 0s and not exceed max",
                "jwksUri: must be an absolute http(s) URL (unset, it is derived from issuer)",
            ]
        );
    }

    #[test]
    fn jwks_uri_defaults_from_the_issuer() {
        let config = AuthConfig {
            issuer: "https://auth.example/".into(),
            ..AuthConfig::default()
        };
        assert_eq!(
            config.jwks_uri(),
            "https://auth.example/.well-known/jwks.json"
        );
        let config = AuthConfig {
            issuer: "not a url".into(),
            ..AuthConfig::default()
        };
        assert!(config.validate().unwrap_err().problems[0].starts_with("jwksUri:"));
    }
}
