//! Token validation: algorithm allowlist, required claims, issuer, audience, type, time.

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize as _;

use crate::claims::{ACCESS_TOKEN_TYPE, AccessClaims};
use crate::identity::Identity;
use crate::keys::KeyCache;
use crate::verified_tokens::{Verified, VerifiedTokens};

/// Why a token was refused. Every variant maps to UNAUTHENTICATED; the text is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// Not a JWT, or a header or claims that do not parse.
    #[error("malformed token")]
    Malformed,
    /// The header has `crit` (RFC 7515 §4.1.11): it requires extensions we do not
    /// understand (we understand none), so the token must be refused whatever it lists.
    #[error("token requires an unsupported header extension")]
    CriticalHeader,
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
    /// Verified tokens remembered (by SHA-256) until they expire, so a client's next call
    /// with the same token skips the signature check; 0 checks every call in full.
    pub verified_cache_capacity: usize,
}

impl VerifierConfig {
    /// Requires `issuer` and `audience`, with 30 s of clock skew.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_seconds: 30,
            verified_cache_capacity: DEFAULT_VERIFIED_CACHE_CAPACITY,
        }
    }
}

/// Tokens the verifier remembers by default: one per active client is plenty, and an entry
/// is a few hundred bytes.
pub const DEFAULT_VERIFIED_CACHE_CAPACITY: usize = 10_000;

/// Verifies access tokens locally.
#[derive(Debug)]
pub struct Verifier {
    validation: Validation,
    keys: KeyCache,
    verified: VerifiedTokens,
    leeway_seconds: i64,
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
        Self {
            validation,
            keys,
            verified: VerifiedTokens::new(config.verified_cache_capacity),
            leeway_seconds: i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX),
        }
    }

    /// The key cache (for periodic refresh).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// Verifies `token` and returns who it identifies.
    ///
    /// A token verified before is accepted from memory while it has not expired and the
    /// key that verified it is still the one published under its `kid`.
    pub async fn verify(&self, token: &str) -> Result<Identity, VerifyError> {
        let digest = VerifiedTokens::digest(token);
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        if let Some(hit) = self.verified.get(&digest, now)
            && self
                .keys
                .cached(&hit.kid)
                .is_some_and(|current| Arc::ptr_eq(&current, &hit.key))
        {
            return Ok(hit.identity);
        }
        let (identity, kid, key) = self.verify_in_full(token).await?;
        self.verified.insert(
            digest,
            Verified {
                acceptable_until: identity.expires_at.saturating_add(self.leeway_seconds),
                identity: identity.clone(),
                kid,
                key,
            },
        );
        Ok(identity)
    }

    /// Every check, the signature included; also returns the key that verified it.
    async fn verify_in_full(
        &self,
        token: &str,
    ) -> Result<(Identity, String, Arc<jsonwebtoken::DecodingKey>), VerifyError> {
        let header = ProtectedHeader::parse(token)?;
        if header.alg != "EdDSA" {
            return Err(VerifyError::Algorithm);
        }
        if header.crit {
            return Err(VerifyError::CriticalHeader);
        }
        if !header.typ.as_deref().is_some_and(is_access_token_type) {
            return Err(VerifyError::Type);
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let key = self.keys.get(&kid).await?;
        let identity = self.verify_with(token, &key)?;
        Ok((identity, kid, key))
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

/// The members of the JOSE header the checks before the key lookup need, parsed once.
///
/// Our own small struct rather than `jsonwebtoken::Header`: it keeps `alg` as text (so
/// `none` or an unknown name is an algorithm refusal, not a parse failure) and records
/// whether `crit` is present at all — `Header` reads `"crit": null` as absent.
#[derive(Debug, serde::Deserialize)]
struct ProtectedHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

impl ProtectedHeader {
    fn parse(token: &str) -> Result<Self, VerifyError> {
        use base64::Engine as _;
        // Exactly three parts, as jsonwebtoken requires later; checked here so a JWE (five
        // parts) is malformed rather than judged by its header.
        let mut parts = token.split('.');
        let (Some(encoded), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| VerifyError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| VerifyError::Malformed)
    }
}

/// `true` whenever the member exists, whatever its value (including `null`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use appstack_proto::auth::v1::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;
    use crate::keys::{KeyCacheConfig, StaticKeySource};

    /// The RFC 8410 §10.3 example key (public part `Gb9E…ZuE`), so no key generation is needed.
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    const X: &str = "Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE";

    fn verifier() -> Verifier {
        let keys = KeyCache::new(
            Arc::new(StaticKeySource::new(vec![published_key()])),
            KeyCacheConfig::default(),
        );
        Verifier::new(VerifierConfig::new("https://iss", "aud"), keys)
    }

    fn token(edit: impl FnOnce(&mut Header)) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": "https://iss", "aud": "aud", "sub": "u1", "exp": now + 600,
            "nbf": now, "iat": now, "jti": "j"});
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.into());
        header.kid = Some("k1".into());
        edit(&mut header);
        let key = EncodingKey::from_ed_pem(PEM.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    #[tokio::test]
    async fn a_crit_header_is_refused_whatever_it_lists() {
        let v = verifier();
        // Control: the same token without `crit` is accepted.
        assert_eq!(v.verify(&token(|_| {})).await.unwrap().subject, "u1");
        let values = [
            json!(["exp"]),
            json!(["b64"]),
            json!([]),
            json!(null),
            json!("exp"),
            json!({}),
        ];
        for value in values {
            let t = token(|h| {
                if let Value::Array(names) = &value {
                    // A listed name must also be a header member (RFC 7515); include it.
                    for name in names {
                        if let Value::String(name) = name {
                            h.extras.insert(name.clone(), true);
                        }
                    }
                }
                h.extras.insert("crit", value.clone());
            });
            assert_eq!(
                v.verify(&t).await.unwrap_err(),
                VerifyError::CriticalHeader,
                "crit {value}"
            );
        }
    }

    #[tokio::test]
    async fn header_shapes_map_to_their_reasons() {
        use base64::Engine as _;
        let v = verifier();
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let good = token(|_| {});
        let mut parts = good.splitn(2, '.');
        let (_, rest) = (parts.next().unwrap(), parts.next().unwrap());
        let with_header = |h: Value| format!("{}.{rest}", b64(&h));
        let cases = [
            (
                with_header(json!({"alg": "none", "typ": "at+jwt", "kid": "k1"})),
                VerifyError::Algorithm,
            ),
            (
                with_header(json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"})),
                VerifyError::Algorithm,
            ),
            (
                with_header(json!({"typ": "at+jwt", "kid": "k1"})),
                VerifyError::Malformed,
            ),
            (
                with_header(json!({"alg": "EdDSA", "kid": "k1"})),
                VerifyError::Type,
            ),
            (
                with_header(json!({"alg": "EdDSA", "typ": "at+jwt"})),
                VerifyError::UnknownKey,
            ),
            (format!("{good}.extra.parts"), VerifyError::Malformed),
            ("not-base64!.a.b".to_owned(), VerifyError::Malformed),
            ("onlyone".to_owned(), VerifyError::Malformed),
        ];
        for (t, want) in cases {
            assert_eq!(v.verify(&t).await.unwrap_err(), want, "{t}");
        }
    }

    /// A key source whose published set a test can change.
    struct SwitchableSource(std::sync::Mutex<Vec<Jwk>>);

    impl crate::keys::KeySource for SwitchableSource {
        fn fetch(&self) -> futures_util::future::BoxFuture<'_, Result<Vec<Jwk>, VerifyError>> {
            let keys = self.0.lock().unwrap().clone();
            Box::pin(async move { Ok(keys) })
        }
    }

    fn published_key() -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: X.into(),
            kid: "k1".into(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        }
    }

    #[tokio::test]
    async fn a_remembered_token_stops_verifying_once_its_key_is_withdrawn() {
        let source = Arc::new(SwitchableSource(std::sync::Mutex::new(vec![
            published_key(),
        ])));
        let keys = KeyCache::new(
            Arc::clone(&source) as Arc<dyn crate::keys::KeySource>,
            KeyCacheConfig::default(),
        );
        let v = Verifier::new(VerifierConfig::new("https://iss", "aud"), keys);
        let t = token(|_| {});
        // Twice: the second answer comes from memory.
        assert_eq!(v.verify(&t).await.unwrap().subject, "u1");
        assert_eq!(v.verify(&t).await.unwrap().subject, "u1");
        // An emergency revocation: the key leaves the JWKS and the periodic refresh sees it.
        source.0.lock().unwrap().clear();
        v.keys().refresh().await.unwrap();
        assert_eq!(v.verify(&t).await.unwrap_err(), VerifyError::UnknownKey);
    }

    #[tokio::test]
    async fn a_remembered_token_does_not_vouch_for_a_tampered_copy() {
        let v = verifier();
        let good = token(|_| {});
        assert!(v.verify(&good).await.is_ok());
        // The same header and claims with one character inside the signature changed.
        let mut tampered = good.clone().into_bytes();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            v.verify(&tampered).await.unwrap_err(),
            VerifyError::Signature
        );
        assert!(v.verify(&good).await.is_ok());
    }
}
