//! The gRPC form: `appstack.external.v1.Processor/Process`. A dropped call resets its
//! HTTP/2 stream (the service answers with an error, which the server turns into a reset),
//! the closest gRPC has to a connection dropped mid-call; the connection's other calls go on.

use std::sync::Arc;
use std::task::{Context, Poll};

use appstack_proto::external::v1 as pb;
use appstack_proto::external::v1::processor_server::{Processor, ProcessorServer};
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};
use tower::{Layer, Service};

use crate::Shared;
use crate::faults::Action;
use crate::ledger::Ended;

/// Marks a response whose stream must be reset instead of answered.
#[derive(Clone, Copy, Debug)]
struct DropStream;

struct Echo {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl Processor for Echo {
    async fn process(
        &self,
        request: Request<pb::ProcessRequest>,
    ) -> Result<Response<pb::ProcessResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.into_inner();
        if let Some(traceparent) = &traceparent {
            self.shared
                .ledger()
                .saw_traceparent(&req.idempotency_key, traceparent);
        }
        let Ok(payload) = serde_json::from_str::<serde_json::Value>(&req.payload) else {
            return Err(Status::invalid_argument("payload must be JSON"));
        };
        let action = self.shared.next_action();
        let delay = action.delay();
        self.shared
            .ledger()
            .record(&req.idempotency_key, Ended::of(&action));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match action {
            Action::Succeed { .. } => {
                let result = serde_json::json!({
                    "echo": payload,
                    "id": req.id,
                    "kind": req.kind,
                    "attempt": req.attempt,
                    "idempotencyKey": req.idempotency_key,
                });
                Ok(Response::new(pb::ProcessResponse {
                    result: result.to_string(),
                }))
            }
            Action::Fail { answer, .. } => Err(Status::new(
                Code::from_i32(answer.grpc_code),
                "injected failure",
            )),
            Action::Throttle { retry_after, .. } => {
                let mut status = Status::resource_exhausted("injected throttle");
                let millis = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
                if let Ok(value) = MetadataValue::try_from(millis.to_string()) {
                    status
                        .metadata_mut()
                        .insert("grpc-retry-pushback-ms", value);
                }
                Err(status)
            }
            Action::Drop { .. } => {
                let mut response = Response::new(pb::ProcessResponse::default());
                response.extensions_mut().insert(DropStream);
                Ok(response)
            }
        }
    }
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let service = ProcessorServer::new(Echo { shared });
    let served = tonic::transport::Server::builder()
        .layer(DropLayer)
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        )
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "simulator gRPC server failed");
    }
}

/// Turns a response marked [`DropStream`] into a service error: the server resets the stream.
#[derive(Clone, Copy, Debug)]
struct DropLayer;

impl<S> Layer<S> for DropLayer {
    type Service = DropService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DropService { inner }
    }
}

#[derive(Clone, Debug)]
struct DropService<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for DropService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
{
    type Response = http::Response<ResBody>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await.map_err(Into::into)?;
            if response.extensions().get::<DropStream>().is_some() {
                return Err("injected stream drop".into());
            }
            Ok(response)
        })
    }
}
