//! Issuing tokens: EdDSA access tokens and opaque refresh tokens / client secrets.

use std::time::Duration;

use appstack_verifier::{ACCESS_TOKEN_TYPE, AccessClaims};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::signing::KeyPair;

/// What an access token says about its subject.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// `sub`.
    pub id: &'a str,
    /// Roles.
    pub roles: &'a [String],
    /// Email, for users.
    pub email: Option<&'a str>,
}

/// A signed access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The compact JWS.
    pub token: String,
    /// Seconds until expiry.
    pub expires_in: i64,
}

/// Signs an access token with `key`.
pub fn sign_access_token(
    key: &KeyPair,
    issuer: &str,
    audience: &str,
    ttl: Duration,
    subject: &Subject<'_>,
) -> Result<AccessToken, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let ttl_secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let claims = AccessClaims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: subject.id.to_owned(),
        exp: now.saturating_add(ttl_secs),
        nbf: now,
        iat: now,
        jti: uuid::Uuid::now_v7().to_string(),
        roles: subject.roles.to_vec(),
        email: subject.email.map(str::to_owned),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    header.kid = Some(key.kid.clone());
    let token = jsonwebtoken::encode(&header, &claims, &key.encoding_key)?;
    Ok(AccessToken {
        token,
        expires_in: ttl_secs,
    })
}

/// A new opaque secret: 32 random bytes, base64url, behind a readable prefix.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of an opaque secret: its SHA-256. The secret has 256 bits of entropy, so
/// a fast hash is safe; a slow one would only add latency.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "rt_";
/// Prefix of service-account client secrets.
pub const CLIENT_SECRET_PREFIX: &str = "cs_";
/// Prefix of service-account client ids.
pub const CLIENT_ID_PREFIX: &str = "ci_";

/// Whether a presented opaque secret has the shape we issue (cheap rejection of junk).
pub fn plausible_secret(secret: &str, prefix: &str) -> bool {
    secret.len() == prefix.len() + 43
        && secret.starts_with(prefix)
        && secret[prefix.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_issued_shape() {
        let s = new_secret(REFRESH_PREFIX);
        assert!(plausible_secret(&s, REFRESH_PREFIX));
        assert!(!plausible_secret(&s, CLIENT_SECRET_PREFIX));
        assert!(!plausible_secret("rt_short", REFRESH_PREFIX));
        assert_ne!(secret_hash(&s), secret_hash(&new_secret(REFRESH_PREFIX)));
    }
}
