//! The gRPC server every service runs: its own services plus `grpc.health.v1` and
//! reflection (v1 and v1alpha, so older grpcurl works), HTTP/2 keepalive and stream limits,
//! and a graceful shutdown bounded by a deadline.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};

use crate::metadata_limit::{HTTP2_HEADER_LIST_LIMIT, MetadataLimitLayer};
use crate::methods::MethodTable;
use crate::metrics::GrpcMetrics;
use crate::request_check::RequestCheckLayer;
use crate::run_to_completion::RunToCompletionLayer;
use crate::server_span::ServerSpanLayer;
use appstack_config::ServerConfig;

/// The plumbing methods every server answers, callable without a token.
pub const PLUMBING_METHODS: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// The plumbing every server answers beside its own services.
const PLUMBING_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A boxed gRPC server stack: what a [`Door`] wraps and calls.
pub type BoxedGrpc = tower::util::BoxCloneService<
    Request<Body>,
    Response<Body>,
    Box<dyn std::error::Error + Send + Sync>,
>;

/// Something in front of the gRPC stack on the same port: it sees every request first
/// (HTTP/1.1 too) and may answer it itself or pass it, or a request it made, to the stack.
/// main's front door (HTTP/JSON, gRPC-Web, the console) is one.
pub trait Door: Send + Sync + 'static {
    /// The service answering the port, given the whole gRPC stack.
    fn wrap(&self, grpc: BoxedGrpc) -> BoxedGrpc;
}

/// Puts a [`Door`], when there is one, in front of the layers inside it.
#[derive(Clone)]
struct DoorLayer(Option<Arc<dyn Door>>);

impl<S, ResBody> Layer<S> for DoorLayer
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Service = BoxedGrpc;

    fn layer(&self, inner: S) -> BoxedGrpc {
        use tower::ServiceExt as _;
        let grpc = BoxedGrpc::new(
            inner
                .map_response(|response: Response<ResBody>| response.map(Body::new))
                .map_err(Into::into),
        );
        match &self.0 {
            Some(door) => door.wrap(grpc),
            None => grpc,
        }
    }
}

/// The gRPC server failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcServeError {
    /// Reflection could not read the descriptor set.
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The services one gRPC server answers, with their health entries.
pub struct GrpcServices {
    routes: Routes,
    health: HealthReporter,
    names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
}

impl GrpcServices {
    /// An empty set; the health service and reflection are always added.
    pub fn new() -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        Self {
            routes: Routes::new(health_service),
            health,
            names: Vec::new(),
            descriptor_sets: vec![tonic_health::pb::FILE_DESCRIPTOR_SET],
        }
    }

    /// Adds a service; it reports SERVING in `grpc.health.v1` once the server starts.
    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: Service<Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Publishes this encoded `FileDescriptorSet` through reflection.
    pub fn reflect(mut self, descriptor_set: &'static [u8]) -> Self {
        self.descriptor_sets.push(descriptor_set);
        self
    }

    /// The health reporter, to flip services to NOT_SERVING.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Every method the server will answer: the registered services' and the plumbing's
    /// (health, both reflection versions), as the descriptor sets given to [`Self::reflect`]
    /// declare them. What [`serve`] labels metrics with and refuses everything else by.
    pub fn methods(&self) -> MethodTable {
        let mut sets = self.descriptor_sets.clone();
        sets.extend([
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        MethodTable::new(&sets, &self.served())
    }

    /// The registered services, by full name (the plumbing not included).
    pub fn service_names(&self) -> &[&'static str] {
        &self.names
    }

    /// The registered services and the plumbing, by full name.
    fn served(&self) -> Vec<&'static str> {
        let mut served = self.names.clone();
        served.extend(PLUMBING_SERVICES);
        served
    }
}

impl Default for GrpcServices {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `services` on `listener` until `shutdown` is cancelled.
///
/// Layers, outermost first: the `door` when given (which also turns HTTP/1.1 on), the call's span (continuing the caller's trace), RED `metrics` (labelled only with served methods), the oversize
/// remap, the metadata limit, the request check (UNIMPLEMENTED for methods not served,
/// INVALID_ARGUMENT for invalid text), run-to-completion (handlers finish even when the
/// caller goes away), then the caller's `layer` (authentication).
/// On shutdown: everything turns NOT_SERVING at once, the listener stays open for
/// `config.shutdown_delay` (load balancers notice the failing readiness and stop routing),
/// then closes; in-flight calls get `config.shutdown_grace` to finish.
pub async fn serve<L, ResBody>(
    config: &ServerConfig,
    listener: TcpListener,
    services: GrpcServices,
    metrics: &GrpcMetrics,
    layer: L,
    door: Option<Arc<dyn Door>>,
    shutdown: CancellationToken,
) -> Result<(), GrpcServeError>
where
    L: Layer<Routes> + Clone + Send + 'static,
    L::Service: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    <L::Service as Service<Request<Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Default + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let table = Arc::new(services.methods());
    let served = services.served();
    let GrpcServices {
        mut routes,
        health,
        names,
        descriptor_sets,
    } = services;
    // Reflection lists, and the server answers, exactly the services registered here: a
    // contract in the descriptor set that this process does not serve is not advertised.
    let mut v1 = tonic_reflection::server::Builder::configure();
    let mut v1alpha = tonic_reflection::server::Builder::configure();
    for name in &served {
        v1 = v1.with_service_name(*name);
        v1alpha = v1alpha.with_service_name(*name);
    }
    for set in &descriptor_sets {
        v1 = v1.register_encoded_file_descriptor_set(set);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
    }
    routes = routes
        .add_service(v1.build_v1()?)
        .add_service(v1alpha.build_v1alpha()?);

    for name in &names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    health.set_service_status("", ServingStatus::Serving).await;

    let addr = listener.local_addr().ok();
    tracing::info!(?addr, services = ?names, "gRPC listening");
    let drain_started = CancellationToken::new();
    let server = Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_max_header_list_size(Some(HTTP2_HEADER_LIST_LIMIT))
        .accept_http1(door.is_some())
        .layer(DoorLayer(door))
        .layer(ServerSpanLayer::new(table.clone()))
        .layer(metrics.layer(table.clone()))
        .layer(crate::oversize::OversizeAsResourceExhausted)
        .layer(MetadataLimitLayer::new(config.max_metadata_bytes))
        .layer(RequestCheckLayer::new(table, config.max_message_bytes))
        .layer(RunToCompletionLayer)
        .layer(layer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(config.keepalive_interval)),
            {
                let shutdown = shutdown.clone();
                let health = health.clone();
                let drain_started = drain_started.clone();
                let delay = config.shutdown_delay;
                async move {
                    shutdown.cancelled().await;
                    for name in &names {
                        health
                            .set_service_status(*name, ServingStatus::NotServing)
                            .await;
                    }
                    health
                        .set_service_status("", ServingStatus::NotServing)
                        .await;
                    tokio::time::sleep(delay).await;
                    drain_started.cancel();
                }
            },
        );
    tokio::pin!(server);
    let grace = config.shutdown_grace;
    tokio::select! {
        result = &mut server => result?,
        () = async { drain_started.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown grace expired; dropping the remaining gRPC calls");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_methods_exist() {
        let table = MethodTable::new(
            &[
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
            &PLUMBING_SERVICES,
        );
        for path in PLUMBING_METHODS {
            assert!(table.method(path).is_some(), "{path}");
        }
    }
}
