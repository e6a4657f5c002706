//! Refuses a call whose request metadata is too large, that call only.
//!
//! HTTP/2 (the `h2` crate under hyper) enforces its own header-list limit: past it, the
//! stream gets HTTP 431 (clients see UNKNOWN), and a header block well past it (or spread
//! over many CONTINUATION frames) is treated as abuse and the whole connection is closed
//! with GOAWAY — failing every other call multiplexed on it, which behind a proxy or mesh
//! means other users' calls. So the transport's limit is set high
//! ([`HTTP2_HEADER_LIST_LIMIT`]) and the real limit is enforced here, per call, with the
//! status the gRPC status-code guide gives for it: RESOURCE_EXHAUSTED.

use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt as _};
use http::{HeaderMap, Request, Response};
use tonic::Status;
use tower::{Layer, Service};

/// The header-list size the HTTP/2 transport is told to accept: above every configurable
/// limit, so calls within it are answered here rather than by the transport.
pub const HTTP2_HEADER_LIST_LIMIT: u32 = 2 * 1024 * 1024;

/// HTTP/2's per-entry overhead in a header list's size (RFC 9113 §6.5.2).
const ENTRY_OVERHEAD: usize = 32;

/// The size of `headers` as HTTP/2 counts it: name + value + 32 bytes per entry.
pub fn header_list_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ENTRY_OVERHEAD)
        .sum()
}

/// The layer; see the module docs.
#[derive(Clone, Copy, Debug)]
pub struct MetadataLimitLayer {
    limit: usize,
}

impl MetadataLimitLayer {
    /// Refuses calls whose metadata exceeds `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for MetadataLimitLayer {
    type Service = MetadataLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetadataLimit {
            inner,
            limit: self.limit,
        }
    }
}

/// Service made by [`MetadataLimitLayer`].
#[derive(Clone, Debug)]
pub struct MetadataLimit<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MetadataLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let size = header_list_size(request.headers());
        if size > self.limit {
            let status = Status::resource_exhausted(format!(
                "request metadata is {size} bytes; this server accepts at most {} bytes",
                self.limit
            ));
            return futures_util::future::ready(Ok(status.into_http())).boxed();
        }
        self.inner.call(request).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_http2() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", http::HeaderValue::from_static("Bearer x"));
        assert_eq!(header_list_size(&headers), 13 + 8 + 32);
    }

    #[test]
    fn limits_are_ordered() {
        assert!(appstack_config::MAX_METADATA_BYTES_LIMIT < HTTP2_HEADER_LIST_LIMIT as usize);
    }
}
