//! The tower layer that authenticates gRPC requests.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response, header};
use tonic::Status;
use tower::{Layer, Service};

use crate::verifier::{Verifier, VerifyError};

/// Verifies the `authorization: Bearer <token>` of every request and puts the caller's
/// [`Identity`](crate::Identity) into the request's extensions; answers UNAUTHENTICATED
/// without calling the service otherwise. Methods allowed anonymously pass untouched; they
/// are named by exact path, so a method added later is never public by accident.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    anonymous: Arc<HashSet<String>>,
}

impl AuthLayer {
    /// A layer verifying with `verifier`; every path needs a token until allowed otherwise.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self {
            verifier,
            anonymous: Arc::new(HashSet::new()),
        }
    }

    /// Lets calls of the method at exactly `path` through without a token, e.g.
    /// `/appstack.auth.v1.AuthService/Login`.
    pub fn allow_anonymous(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.anonymous).insert(path.into());
        self
    }

    fn is_anonymous(&self, path: &str) -> bool {
        self.anonymous.contains(path)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthMiddleware<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthMiddleware {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the inner one (named apart from the generated
/// `AuthService` trait of `appstack.auth.v1`).
#[derive(Clone, Debug)]
pub struct AuthMiddleware<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthMiddleware<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if self.layer.is_anonymous(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The service polled ready is the one that must be called; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.layer.verifier);
        Box::pin(async move {
            let token = match bearer_token(&request) {
                Ok(token) => token,
                Err(status) => return Ok(status.into_http()),
            };
            match verifier.verify(&token).await {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    inner.call(request).await
                }
                Err(VerifyError::KeysUnavailable(reason)) => {
                    // Not the caller's fault: the token may be fine, so do not make clients
                    // discard it.
                    tracing::warn!(%reason, "verification keys unavailable");
                    Ok(
                        Status::unavailable("token verification is temporarily unavailable")
                            .into_http(),
                    )
                }
                Err(error) => {
                    tracing::debug!(%error, path = request.uri().path(), "token refused");
                    Ok(Status::unauthenticated(error.to_string()).into_http())
                }
            }
        })
    }
}

fn bearer_token<B>(request: &Request<B>) -> Result<String, Status> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Status::unauthenticated("a bearer access token is required"))?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Status::unauthenticated("malformed authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Status::unauthenticated(
            "authorization must be `Bearer <token>`",
        ));
    }
    Ok(token.trim().to_owned())
}
