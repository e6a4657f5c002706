//! The front door on main's port: every request is one of
//!
//! - **gRPC** (`application/grpc…`): to the local stack, or to the peer that serves the
//!   service (auth, the worker's admin API) when this process does not;
//! - **gRPC-Web** (`application/grpc-web…`): translated by `tonic-web`, then as gRPC;
//! - **HTTP**: a JSON route of the contract (transcoded into a gRPC call through the same
//!   path), `/openapi.json`, or a page of the console.
//!
//! Rpcs open without a token are limited per client address here, on all three, before the
//! call costs anything. Bodies and headers are bounded; CORS is off unless origins are
//! configured.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use appstack_common::grpc::{BoxedGrpc, Door};
use appstack_config::{Cidr, FrontDoorConfig};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer as _, Service, ServiceExt as _};

use crate::client_address::{AddressLimit, ClientAddress};
use crate::frame;
use crate::http_error;
use crate::routes::{Route, RouteMiss, RouteTable};
use crate::sse;
use crate::transcode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Headers of an HTTP call passed on to the gRPC call it becomes.
const FORWARDED_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("grpc-timeout"),
];

/// Where the door's HTTP pages come from: the console and anything else that is not an API
/// route. Given the request, answers it.
pub type Pages =
    tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, std::convert::Infallible>;

/// A peer serving some of the routed services (a tonic `Channel`, boxed).
pub type Peer = tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// The front door's setup.
pub struct FrontDoorParts {
    /// The JSON routes (of the local and forwarded services).
    pub routes: RouteTable,
    /// The OpenAPI document served at `/openapi.json`.
    pub openapi: Bytes,
    /// Services served by peers, by full name.
    pub remote: HashMap<String, Peer>,
    /// The rpcs callable without a token, by gRPC path, limited per address.
    pub public_methods: HashSet<String>,
    /// The console, if served.
    pub pages: Option<Pages>,
    /// Limits and CORS.
    pub config: FrontDoorConfig,
    /// The largest gRPC message (responses over it are refused).
    pub max_message_bytes: usize,
}

/// The front door, installed with [`appstack_common::grpc::serve`].
pub struct FrontDoor {
    shared: Arc<Shared>,
}

struct Shared {
    routes: RouteTable,
    openapi: Bytes,
    remote: HashMap<String, Peer>,
    public_methods: HashSet<String>,
    pages: Option<Pages>,
    config: FrontDoorConfig,
    max_message_bytes: usize,
    clients: ClientAddress,
    public_limit: AddressLimit,
    cors: Option<tower_http::cors::CorsLayer>,
}

impl FrontDoor {
    /// The door of `parts`. Trusted proxies must be valid CIDRs (the configuration's
    /// validation ensures it; an invalid one is skipped).
    pub fn new(parts: FrontDoorParts) -> Self {
        let trusted = parts
            .config
            .trusted_proxies
            .iter()
            .filter_map(|text| Cidr::parse(text))
            .collect();
        let cors = cors_layer(&parts.config.cors_allowed_origins);
        Self {
            shared: Arc::new(Shared {
                public_limit: AddressLimit::new(&parts.config.public_rate),
                clients: ClientAddress::new(trusted),
                routes: parts.routes,
                openapi: parts.openapi,
                remote: parts.remote,
                public_methods: parts.public_methods,
                pages: parts.pages,
                config: parts.config,
                max_message_bytes: parts.max_message_bytes,
                cors,
            }),
        }
    }
}

/// CORS for the configured origins; none configured, none allowed (the layer is absent).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
                HeaderName::from_static("traceparent"),
            ])
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

impl Door for FrontDoor {
    fn wrap(&self, grpc: BoxedGrpc) -> BoxedGrpc {
        BoxedGrpc::new(DoorService {
            shared: Arc::clone(&self.shared),
            local: grpc,
        })
    }
}

#[derive(Clone)]
struct DoorService {
    shared: Arc<Shared>,
    local: BoxedGrpc,
}

impl Service<Request<Body>> for DoorService {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each call is sent on a clone, made ready there.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let door = self.clone();
        Box::pin(async move { door.handle(request).await })
    }
}

/// What a request is, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    GrpcWeb,
    Http,
}

fn protocol_of(request: &Request<Body>) -> Protocol {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/grpc-web") {
        Protocol::GrpcWeb
    } else if content_type.starts_with("application/grpc") {
        Protocol::Grpc
    } else {
        Protocol::Http
    }
}

impl DoorService {
    async fn handle(self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        match protocol_of(&request) {
            Protocol::Grpc => self.grpc(request).await,
            Protocol::GrpcWeb => {
                let cors = self.shared.cors.clone();
                let web = tonic_web::GrpcWebLayer::new().layer(tower::service_fn(
                    move |request: Request<Body>| self.clone().grpc(request),
                ));
                match cors {
                    Some(cors) => Ok(cors.layer(web).oneshot(request).await?.map(Body::new)),
                    None => web.oneshot(request).await,
                }
            }
            Protocol::Http => {
                let cors = self.shared.cors.clone();
                let http = tower::service_fn(move |request: Request<Body>| {
                    let door = self.clone();
                    async move { Ok::<_, BoxError>(door.http(request).await) }
                });
                match cors {
                    Some(cors) => Ok(cors.layer(http).oneshot(request).await?.map(Body::new)),
                    None => http.oneshot(request).await,
                }
            }
        }
    }

    /// A gRPC call: limited when public, then to whoever serves it.
    async fn grpc(self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let path = request.uri().path().to_owned();
        if let Err(status) = self.admit_public(&path, &request) {
            return Ok(status.into_http());
        }
        self.backend(&path).oneshot(request).await
    }

    /// The per-address limit, for the rpcs callable without a token.
    fn admit_public(&self, grpc_path: &str, request: &Request<Body>) -> Result<(), Status> {
        if !self.shared.public_methods.contains(grpc_path) {
            return Ok(());
        }
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|addr| addr.ip());
        let Some(client) = self.shared.clients.of(peer, request.headers()) else {
            return Ok(());
        };
        self.shared.public_limit.take(client).map_err(|wait| {
            appstack_common::status::exhausted_retry_after(
                format!(
                    "too many unauthenticated calls from {client}; at most {} per second",
                    self.shared.config.public_rate.per_second
                ),
                wait,
            )
        })
    }

    /// The stack serving the rpc at `grpc_path`: a peer's, or this process's.
    fn backend(&self, grpc_path: &str) -> BoxedGrpc {
        let service = grpc_path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        match self.shared.remote.get(service) {
            Some(peer) => BoxedGrpc::new(peer.clone()),
            None => self.local.clone(),
        }
    }

    /// An HTTP request: an API route, the OpenAPI document, or a page.
    async fn http(self, request: Request<Body>) -> Response<Body> {
        let header_bytes: usize = request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        if header_bytes > self.shared.config.max_header_bytes {
            return plain_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &Status::invalid_argument(format!(
                    "request headers are {header_bytes} bytes; at most {}",
                    self.shared.config.max_header_bytes
                )),
            );
        }
        let path = request.uri().path();
        if path == "/openapi.json" && matches!(*request.method(), Method::GET | Method::HEAD) {
            return json_response(
                StatusCode::OK,
                self.shared.openapi.clone(),
                "public, max-age=300",
            );
        }
        let resolved = self.shared.routes.resolve(request.method(), path);
        match resolved {
            Ok((route, bound)) => {
                let route = route.clone();
                self.call_route(route, bound, request).await
            }
            Err(miss) if path.starts_with("/v1/") => route_miss(miss, request.method(), path),
            Err(miss) => match self.shared.pages.clone() {
                Some(pages) if matches!(*request.method(), Method::GET | Method::HEAD) => {
                    match pages.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                }
                _ => route_miss(miss, request.method(), path),
            },
        }
    }

    /// One JSON route: the body read within its bound, transcoded, called, answered.
    async fn call_route(
        self,
        route: Route,
        bound: Vec<(String, String)>,
        request: Request<Body>,
    ) -> Response<Body> {
        if let Err(status) = self.admit_public(&route.grpc_path, &request) {
            return error_response(&status);
        }
        let (parts, body) = request.into_parts();
        let has_body = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length != "0");
        if has_body
            && parts.method != Method::GET
            && let Some(content_type) = parts.headers.get(header::CONTENT_TYPE)
            && !content_type
                .to_str()
                .is_ok_and(|ct| ct.starts_with("application/json"))
        {
            return plain_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &Status::invalid_argument(
                    "request bodies are JSON: Content-Type: application/json",
                ),
            );
        }
        let limit = self.shared.config.max_body_bytes;
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                return plain_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &Status::resource_exhausted(format!("the request body is over {limit} bytes")),
                );
            }
            Err(error) => {
                return error_response(&Status::cancelled(format!(
                    "reading the request body: {error}"
                )));
            }
        };
        let message = match transcode::request_message(&route, &bound, parts.uri.query(), &body) {
            Ok(message) => message,
            Err(status) => return error_response(&status),
        };
        let grpc = match grpc_request(&route, &parts, message) {
            Ok(grpc) => grpc,
            Err(status) => return error_response(&status),
        };
        let response = match self.backend(&route.grpc_path).oneshot(grpc).await {
            Ok(response) => response,
            Err(error) => {
                return error_response(&Status::unavailable(format!(
                    "calling {}: {error}",
                    route.grpc_path
                )));
            }
        };
        if route.streams() {
            sse::events(response, route.output(), self.shared.max_message_bytes)
        } else {
            unary_response(response, &route, self.shared.max_message_bytes).await
        }
    }
}

/// The gRPC request an HTTP call becomes: the route's path, the protobuf body, the caller's
/// credentials and trace context, and the connection's address (which the stack reads).
fn grpc_request(
    route: &Route,
    parts: &http::request::Parts,
    message: Vec<u8>,
) -> Result<Request<Body>, Status> {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(route.grpc_path.as_str())
        .version(http::Version::HTTP_2)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Body::new(Full::new(frame::encode(&message))))
        .map_err(|e| Status::internal(format!("building the gRPC call: {e}")))?;
    for name in &FORWARDED_HEADERS {
        for value in parts.headers.get_all(name) {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Some(info) = parts.extensions.get::<TcpConnectInfo>() {
        request.extensions_mut().insert(info.clone());
    }
    Ok(request)
}

/// A unary gRPC answer as JSON: its one message, or its status as an error.
async fn unary_response(response: Response<Body>, route: &Route, limit: usize) -> Response<Body> {
    let (parts, body) = response.into_parts();
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        return error_response(&status);
    }
    let collected = match Limited::new(body, limit.saturating_add(5)).collect().await {
        Ok(collected) => collected,
        Err(error) => {
            return error_response(&Status::unavailable(format!(
                "reading the gRPC answer: {error}"
            )));
        }
    };
    let status = collected
        .trailers()
        .and_then(Status::from_header_map)
        .unwrap_or_else(|| Status::unknown("the gRPC answer ended without a status"));
    if status.code() != tonic::Code::Ok {
        return error_response(&status);
    }
    let mut reader = frame::FrameReader::new(limit);
    reader.push(&collected.to_bytes());
    let message = match (reader.next_message(), reader.finish()) {
        (Ok(Some(message)), _) => message,
        (Err(error), _) => return error_response(&Status::internal(error.to_string())),
        (Ok(None), _) => {
            return error_response(&Status::internal("the gRPC answer had no message"));
        }
    };
    match transcode::response_json(&route.output(), &message) {
        Ok(json) => json_response(StatusCode::OK, Bytes::from(json), "no-store"),
        Err(status) => error_response(&status),
    }
}

/// The answer to a request no route matches.
fn route_miss(miss: RouteMiss, method: &Method, path: &str) -> Response<Body> {
    match miss {
        RouteMiss::NotFound => plain_error(
            StatusCode::NOT_FOUND,
            &Status::not_found(format!("no route {method} {path}; see /openapi.json")),
        ),
        RouteMiss::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut response = plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &Status::unimplemented(format!("{path} answers {allow}, not {method}")),
            );
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
    }
}

/// A status as its HTTP answer: the mapped HTTP status, the `google.rpc.Status` body, and
/// `Retry-After` or `WWW-Authenticate` where the status calls for them.
pub fn error_response(status: &Status) -> Response<Body> {
    plain_error(http_error::http_status(status.code()), status)
}

fn plain_error(http_status: StatusCode, status: &Status) -> Response<Body> {
    let body = serde_json::to_vec(&http_error::status_json(status)).unwrap_or_default();
    let mut response = json_response(http_status, Bytes::from(body), "no-store");
    if let Some(wait) = http_error::retry_after(status) {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if status.code() == tonic::Code::Unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn json_response(status: StatusCode, body: Bytes, cache: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
