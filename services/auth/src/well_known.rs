//! The published keys over plain HTTP, for gateways and JWT libraries that cannot call gRPC:
//! `/.well-known/jwks.json` (RFC 7517 JWK Set of RFC 8037 OKP keys) and
//! `/.well-known/openid-configuration` (OpenID Connect Discovery 1.0), merged into the
//! auth process's admin router.
//!
//! The discovery document advertises only what exists: there is no HTTP authorization or
//! token endpoint (logins are gRPC), so those members are absent and
//! `response_types_supported` is empty. Envoy `jwt_authn`, AWS API Gateway / ALB JWT
//! authorizers, Kong and PyJWT only need `issuer` and `jwks_uri`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::Auth;
use crate::keyring::KeyRing;

/// Path of the JWK Set.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Path of the OpenID discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// How long clients may cache either document: the `max_age_seconds` `GetJwks` returns, so
/// HTTP and gRPC clients refetch at the same pace. A rotated key is published before it
/// signs only once the folder is re-read, so verifiers also refetch on an unknown `kid`.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// One key as RFC 8037 §2 spells it, members in the usual order.
#[derive(Serialize)]
struct OkpJwk<'a> {
    kty: &'a str,
    crv: &'a str,
    x: &'a str,
    kid: &'a str,
    alg: &'a str,
    #[serde(rename = "use")]
    use_: &'a str,
}

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: Vec<OkpJwk<'a>>,
}

/// OpenID Connect Discovery 1.0 §3, the members that are true of this service.
#[derive(Serialize)]
struct Discovery<'a> {
    issuer: &'a str,
    jwks_uri: &'a str,
    /// REQUIRED by the spec; empty because there is no authorization endpoint.
    response_types_supported: [&'a str; 0],
    /// Every client sees the same `sub` for a user.
    subject_types_supported: [&'a str; 1],
    id_token_signing_alg_values_supported: [&'a str; 1],
    claims_supported: [&'a str; 9],
}

#[derive(Clone)]
struct WellKnown {
    keys: Arc<KeyRing>,
    /// The discovery document never changes while the process runs: rendered once.
    discovery: Arc<Rendered>,
}

/// A JSON body with its entity tag.
struct Rendered {
    body: Vec<u8>,
    etag: HeaderValue,
}

impl Rendered {
    fn new(body: Vec<u8>) -> Self {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::try_from(format!("\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        Self { body, etag }
    }

    /// 200 with the body, or 304 when the client already has this version; both carry the
    /// cache headers (RFC 9111 §4.3.4 wants them on the 304 too).
    fn respond(&self, request: &HeaderMap) -> Response {
        let cache = HeaderValue::try_from(format!("public, max-age={}", MAX_AGE.as_secs()))
            .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
        let headers = [
            (header::CACHE_CONTROL, cache),
            (header::ETAG, self.etag.clone()),
        ];
        if none_match(request, &self.etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (
            StatusCode::OK,
            headers,
            // Plain `application/json` rather than `application/jwk-set+json`: every gateway
            // and library accepts it, not all accept the specific type.
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body.clone(),
        )
            .into_response()
    }
}

/// RFC 9110 §13.1.2: `If-None-Match` matches with the weak comparison, `*` matches anything.
fn none_match(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(ours) = etag.to_str() else {
        return false;
    };
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// The well-known routes of `auth`, to merge into its admin router (see
/// `appstack_common::admin::router`). Anonymous, like `GetJwks`.
pub fn router(auth: &Auth) -> Router {
    let issuer = auth.config.issuer.as_str();
    let jwks_uri = auth.config.jwks_uri();
    let discovery = Discovery {
        issuer,
        jwks_uri: &jwks_uri,
        response_types_supported: [],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["EdDSA"],
        claims_supported: [
            "iss", "aud", "sub", "exp", "nbf", "iat", "jti", "roles", "email",
        ],
    };
    // Serializing plain strings cannot fail; an empty object would be the only fallback.
    let body = serde_json::to_vec_pretty(&discovery).unwrap_or_else(|_| b"{}".to_vec());
    Router::new()
        .route(JWKS_PATH, get(jwks))
        .route(DISCOVERY_PATH, get(discovery_document))
        .with_state(WellKnown {
            keys: auth.keys.clone(),
            discovery: Arc::new(Rendered::new(body)),
        })
}

async fn discovery_document(State(state): State<WellKnown>, request: HeaderMap) -> Response {
    state.discovery.respond(&request)
}

async fn jwks(State(state): State<WellKnown>, request: HeaderMap) -> Response {
    // Read per request (the database holds the set every replica publishes); clients and
    // gateways cache it for MAX_AGE, so this is a handful of queries per minute.
    let keys = match state.keys.jwks().await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(%error, "reading the published keys for the JWKS failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    (header::CACHE_CONTROL, "no-store"),
                    (header::RETRY_AFTER, "1"),
                ],
                "published keys unavailable\n",
            )
                .into_response();
        }
    };
    let set = JwkSet {
        keys: keys
            .iter()
            .map(|k| OkpJwk {
                kty: &k.kty,
                crv: &k.crv,
                x: &k.x,
                kid: &k.kid,
                alg: &k.alg,
                use_: &k.r#use,
            })
            .collect(),
    };
    match serde_json::to_vec(&set) {
        Ok(body) => Rendered::new(body).respond(&request),
        Err(error) => {
            tracing::warn!(%error, "serializing the JWKS failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let etag = HeaderValue::from_static("\"abc\"");
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(v));
            h
        };
        assert!(none_match(&with("\"abc\""), &etag));
        assert!(none_match(&with("W/\"abc\""), &etag));
        assert!(none_match(&with("\"x\", \"abc\""), &etag));
        assert!(none_match(&with("*"), &etag));
        assert!(!none_match(&with("\"abcd\""), &etag));
        assert!(!none_match(&with("abc"), &etag));
        assert!(!none_match(&HeaderMap::new(), &etag));
    }
}
