//! Access-token verification for AppStack services.
//!
//! Tokens are EdDSA JWTs signed by the auth service. A [`Verifier`] checks them locally,
//! with no call per request: the public keys come from a [`KeyCache`] that is filled from
//! a [`KeySource`] (the auth service's `GetJwks` over gRPC, [`GrpcJwksSource`]) and refetched,
//! rate limited, when a token names a key it does not know (a rotation). [`AuthLayer`] puts
//! the caller's [`Identity`] into each gRPC request or answers UNAUTHENTICATED.
//!
//! ```no_run
//! # async fn example(channel: tonic::transport::Channel) {
//! use std::sync::Arc;
//! use appstack_verifier::{AuthLayer, GrpcJwksSource, KeyCache, Verifier, VerifierConfig};
//!
//! let keys = KeyCache::new(Arc::new(GrpcJwksSource::new(channel)), Default::default());
//! let verifier = Verifier::new(VerifierConfig::new("https://auth.appstack", "appstack"), keys);
//! let layer = AuthLayer::new(Arc::new(verifier)).allow_anonymous("/grpc.health.v1.Health/Check");
//! # }
//! ```

mod claims;
mod identity;
mod keys;
mod layer;
mod verified_tokens;
mod verifier;

pub use claims::{ACCESS_TOKEN_TYPE, AccessClaims};
pub use identity::{Identity, PrincipalKind, require_identity, require_role};
pub use keys::{GrpcJwksSource, KeyCache, KeyCacheConfig, KeySource, StaticKeySource};
pub use layer::{AuthLayer, AuthMiddleware};
pub use verifier::{DEFAULT_VERIFIED_CACHE_CAPACITY, Verifier, VerifierConfig, VerifyError};
