//! Reports an oversized request message as RESOURCE_EXHAUSTED, as the gRPC status-code
//! guide specifies ("received message larger than max"). tonic answers OUT_OF_RANGE; clients
//! and retry policies across languages expect RESOURCE_EXHAUSTED.

use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt as _};
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The layer; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct OversizeAsResourceExhausted;

impl<S> Layer<S> for OversizeAsResourceExhausted {
    type Service = OversizeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        OversizeService { inner }
    }
}

/// Service made by [`OversizeAsResourceExhausted`].
#[derive(Clone, Debug)]
pub struct OversizeService<S> {
    inner: S,
}

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OversizeService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        self.inner
            .call(request)
            .map(|result| {
                result.map(|mut response| {
                    let headers = response.headers_mut();
                    let oversized = headers
                        .get("grpc-status")
                        .is_some_and(|s| s == OUT_OF_RANGE)
                        && headers
                            .get("grpc-message")
                            .and_then(|m| m.to_str().ok())
                            .is_some_and(|m| {
                                m.contains("message%20length%20too%20large")
                                    || m.contains("message length too large")
                            });
                    if oversized {
                        headers.insert("grpc-status", RESOURCE_EXHAUSTED);
                    }
                    response
                })
            })
            .boxed()
    }
}
