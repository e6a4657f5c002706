//! Answers, before any handler runs, what the transport and decoder would get wrong:
//! - a method this server does not serve is UNIMPLEMENTED, whether or not the caller sent a
//!   token (the authentication layer sits inside this one);
//! - a unary request whose text is invalid (not UTF-8, or holding NUL; see [`wire_text`]) is
//!   INVALID_ARGUMENT with a `BadRequest` naming the field, instead of INTERNAL from the
//!   decoder or from PostgreSQL.
//!
//! Every string field of every contract is checked here, in one place, so no handler can
//! forget one. Client-streaming methods are passed through unchecked (none exists yet); their
//! handlers must check each message.
//!
//! [`wire_text`]: crate::wire_text

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};

use crate::methods::MethodTable;
use crate::status::invalid_fields;
use crate::wire_text::check_message;

/// gRPC's length-prefixed message header: a compression flag and a 4-byte length.
const FRAME_HEADER: usize = 5;

/// The layer; see the module docs.
#[derive(Clone, Debug)]
pub struct RequestCheckLayer {
    table: Arc<MethodTable>,
    max_message_bytes: usize,
}

impl RequestCheckLayer {
    /// Checks calls against `table`; bodies over `max_message_bytes` (plus framing) are
    /// refused with RESOURCE_EXHAUSTED, as the decoder would.
    pub fn new(table: Arc<MethodTable>, max_message_bytes: usize) -> Self {
        Self {
            table,
            max_message_bytes,
        }
    }
}

impl<S> Layer<S> for RequestCheckLayer {
    type Service = RequestCheck<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestCheck {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service made by [`RequestCheckLayer`].
#[derive(Clone, Debug)]
pub struct RequestCheck<S> {
    inner: S,
    layer: RequestCheckLayer,
}

impl<S, ResBody> Service<Request<Body>> for RequestCheck<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let Some(method) = self.layer.table.method(request.uri().path()) else {
            let status = Status::unimplemented(format!(
                "this server does not serve {}",
                request.uri().path()
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        if method.client_streaming {
            return Box::pin(self.inner.call(request));
        }
        let input_type = method.input_type.clone();
        // The service polled ready is the one that must be called; keep a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let table = self.layer.table.clone();
        let limit = self.layer.max_message_bytes.saturating_add(FRAME_HEADER);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status = if error.is::<http_body_util::LengthLimitError>() {
                        Status::resource_exhausted(format!(
                            "request message larger than the {} bytes this server accepts",
                            limit - FRAME_HEADER
                        ))
                    } else {
                        // The client reset the stream or the connection broke.
                        Status::cancelled("the request body did not arrive")
                    };
                    return Ok(status.into_http());
                }
            };
            if let Err(status) = check_frames(&table, &input_type, bytes.clone()) {
                return Ok(status.into_http());
            }
            inner
                .call(Request::from_parts(parts, Body::new(Full::new(bytes))))
                .await
        })
    }
}

/// Checks every length-prefixed message in `body`. Compressed messages are left to the
/// decoder (which refuses encodings the server did not enable); a truncated frame is too.
fn check_frames(table: &MethodTable, input_type: &str, mut body: Bytes) -> Result<(), Status> {
    while body.len() >= FRAME_HEADER {
        let compressed = body[0] != 0;
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() - FRAME_HEADER < len {
            return Ok(());
        }
        body.advance(FRAME_HEADER);
        let message = body.split_to(len);
        if compressed {
            continue;
        }
        if let Err(problem) = check_message(table, input_type, &message) {
            return Err(invalid_fields([problem.violation()]));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use appstack_proto::auth::v1 as pb;
    use prost::Message as _;
    use tonic::Code;

    use super::*;

    fn framed(message: &[u8]) -> Bytes {
        let mut out = vec![0u8];
        out.extend(u32::try_from(message.len()).unwrap().to_be_bytes());
        out.extend(message);
        out.into()
    }

    #[test]
    fn frames_are_checked_and_compressed_ones_skipped() {
        let table = MethodTable::new(
            &[appstack_proto::FILE_DESCRIPTOR_SET],
            &["appstack.auth.v1.AuthService"],
        );
        let input = "appstack.auth.v1.LoginRequest";
        let bad = pb::LoginRequest {
            email: "a\0@b.c".into(),
            password: "x".into(),
        }
        .encode_to_vec();
        let status = check_frames(&table, input, framed(&bad)).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("email"), "{}", status.message());

        let mut compressed = framed(&bad).to_vec();
        compressed[0] = 1;
        assert!(check_frames(&table, input, compressed.into()).is_ok());

        let good = pb::LoginRequest {
            email: "a@b.c".into(),
            password: "x".into(),
        }
        .encode_to_vec();
        assert!(check_frames(&table, input, framed(&good)).is_ok());
        // A truncated frame goes to the decoder, which reports it.
        assert!(check_frames(&table, input, framed(&good).slice(..4)).is_ok());
    }
}
