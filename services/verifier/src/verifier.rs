//! Token validation: algorithm allowlist, required claims, issuer, audience, type, time.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use crate::claims::{ACCESS_TOKEN_TYPE, AccessClaims};
use crate::identity::Identity;
use crate::keys::KeyCache;

/// Why a token was refused. Every variant maps to UNAUTHENTICATED; the text is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or a header or claims that do not parse.
    #[error("malformed token")]
    Malformed,
    /// Signed with an algorithm other than EdDSA (including `none`).
    #[error("token algorithm not allowed")]
    Algorithm,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    Type,
    /// No `kid`, or one that no published key has.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("invalid token signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("token issuer not accepted")]
    Issuer,
    /// Wrong `aud`.
    #[error("token audience not accepted")]
    Audience,
    /// A required claim is missing.
    #[error("token lacks a required claim")]
    MissingClaim,
    /// The keys could not be fetched.
    #[error("verification keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// What a token must say to be accepted.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl VerifierConfig {
    /// Requires `issuer` and `audience`, with 30 s of clock skew.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: 30,
        }
    }
}

/// Verifies access tokens locally.
#[derive(Debug)]
pub struct Verifier {
    validation: Validation,
    keys: KeyCache,
}

impl Verifier {
    /// A verifier for `config` using `keys`.
    pub fn new(config: VerifierConfig, keys: KeyCache) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[config.issuer]);
        validation.set_audience(&[config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = config.leeway_seconds;
        Self { validation, keys }
    }

    /// The key cache (for periodic refresh).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// Verifies `token` and returns who it identifies.
    pub async fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `alg: none` and other algorithms jsonwebtoken does not know fail to parse.
            ErrorKind::Json(_) if token_names_an_algorithm(token) => VerifyError::Algorithm,
            _ => VerifyError::Malformed,
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Algorithm);
        }
        if !header.typ.as_deref().is_some_and(is_access_token_type) {
            return Err(VerifyError::Type);
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let key = self.keys.get(&kid).await?;
        self.verify_with(token, &key)
    }

    /// Verifies with the key already looked up; synchronous (no I/O).
    fn verify_with(
        &self,
        token: &str,
        key: &Arc<jsonwebtoken::DecodingKey>,
    ) -> Result<Identity, VerifyError> {
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|e| map_error(e.kind()))?;
        if data.claims.sub.is_empty() {
            return Err(VerifyError::MissingClaim);
        }
        Ok(Identity::from_claims(data.claims))
    }
}

/// RFC 9068: `at+jwt`, optionally with the `application/` prefix, case-insensitive.
fn is_access_token_type(typ: &str) -> bool {
    let typ = typ.strip_prefix("application/").unwrap_or(typ);
    typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
}

/// True when the header parses as JSON with an `alg` member, so a parse failure was the
/// algorithm's name (e.g. `none`), not garbage.
fn token_names_an_algorithm(token: &str) -> bool {
    use base64::Engine as _;
    let Some(encoded) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("alg").cloned())
        .is_some()
}

fn map_error(kind: &ErrorKind) -> VerifyError {
    match kind {
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidIssuer => VerifyError::Issuer,
        ErrorKind::InvalidAudience => VerifyError::Audience,
        ErrorKind::InvalidSignature => VerifyError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => VerifyError::Algorithm,
        ErrorKind::MissingRequiredClaim(_) => VerifyError::MissingClaim,
        _ => VerifyError::Malformed,
    }
}
