//! The two ways to reach an external service: HTTP/JSON (`POST {endpoint}`) and the gRPC
//! `appstack.external.v1.Processor`.

use std::time::Duration;

use appstack_proto::external::v1::ProcessRequest;
use appstack_proto::external::v1::processor_client::ProcessorClient;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use uuid::Uuid;

use crate::reply::{CallError, Reply};

/// The header carrying the idempotency key on HTTP calls (the Stripe and IETF draft name).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The gRPC metadata key carrying the idempotency key (also in the message).
pub const IDEMPOTENCY_KEY_METADATA: &str = "idempotency-key";

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One attempt's input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub(crate) request_id: Uuid,
    pub(crate) kind: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) attempt: u32,
    /// The attempt's time, passed on (`grpc-timeout`; `Request-Timeout` hint for HTTP).
    pub(crate) timeout: Duration,
}

/// A client for one external service.
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    /// HTTP/JSON.
    Http {
        // Boxed: the client is several times the size of the gRPC one.
        client: Box<HttpsClient>,
        endpoint: Uri,
        max_result_bytes: usize,
    },
    /// gRPC `Processor`.
    Grpc {
        client: ProcessorClient<Channel>,
        /// Host and port, for the attempt's span.
        authority: String,
    },
}

/// A transport could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The endpoint is not a usable URL.
    #[error("endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

impl Transport {
    /// An HTTP client for `endpoint` keeping up to `idle_per_host` idle connections.
    pub(crate) fn http(
        endpoint: &str,
        max_result_bytes: usize,
        idle_per_host: usize,
    ) -> Result<Self, TransportError> {
        let endpoint_uri: Uri =
            endpoint
                .parse()
                .map_err(|e: http::uri::InvalidUri| TransportError::Endpoint {
                    endpoint: endpoint.into(),
                    reason: e.to_string(),
                })?;
        let mut http = HttpConnector::new();
        // Small request/response exchanges: Nagle's delay would dominate them.
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| TransportError::Endpoint {
                endpoint: endpoint.into(),
                reason: format!("TLS setup: {e}"),
            })?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(tls);
        Ok(Self::Http {
            client: Box::new(client),
            endpoint: endpoint_uri,
            max_result_bytes,
        })
    }

    /// A gRPC client for `endpoint`, connecting lazily (a service that is down at start is
    /// a failed call later, not a failed start).
    pub(crate) fn grpc(endpoint: &str, max_result_bytes: usize) -> Result<Self, TransportError> {
        let invalid = |reason: String| TransportError::Endpoint {
            endpoint: endpoint.into(),
            reason,
        };
        let mut channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| invalid(e.to_string()))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if endpoint.starts_with("https://") {
            channel = channel
                .tls_config(ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| invalid(format!("TLS setup: {e}")))?;
        }
        let client = ProcessorClient::new(channel.connect_lazy())
            // The answer's envelope around a result of the largest size kept.
            .max_decoding_message_size(max_result_bytes.saturating_add(1024));
        let authority = endpoint
            .parse::<Uri>()
            .ok()
            .and_then(|uri| uri.authority().map(ToString::to_string))
            .unwrap_or_default();
        Ok(Self::Grpc { client, authority })
    }

    /// One attempt, in the current span (the attempt's client span): its context goes
    /// with the call and its outcome is recorded on it.
    pub(crate) async fn call(&self, out: Outgoing<'_>) -> Result<Reply, CallError> {
        let reply = match self {
            Transport::Http {
                client,
                endpoint,
                max_result_bytes,
            } => http_call(client, endpoint, *max_result_bytes, out).await,
            Transport::Grpc { client, .. } => Ok(grpc_call(client.clone(), out).await),
        };
        record_outcome(&tracing::Span::current(), &reply);
        reply
    }

    /// The attempt span's name, as OpenTelemetry's conventions name client spans: the HTTP
    /// method, or the gRPC `{service}/{method}`.
    pub(crate) fn span_name(&self) -> &'static str {
        match self {
            Transport::Http { .. } => "POST",
            Transport::Grpc { .. } => "appstack.external.v1.Processor/Process",
        }
    }

    /// The endpoint's host and port, for the span (`server.address`).
    pub(crate) fn authority(&self) -> &str {
        match self {
            Transport::Http { endpoint, .. } => endpoint
                .authority()
                .map_or("", http::uri::Authority::as_str),
            Transport::Grpc { authority, .. } => authority,
        }
    }
}

async fn http_call(
    client: &HttpsClient,
    endpoint: &Uri,
    max_result_bytes: usize,
    out: Outgoing<'_>,
) -> Result<Reply, CallError> {
    let key = out.request_id.to_string();
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(endpoint.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(IDEMPOTENCY_KEY_HEADER, key.as_str())
        .header("x-appstack-request-id", key.as_str())
        .header("x-appstack-attempt", out.attempt)
        .header(
            "x-appstack-kind",
            HeaderValue::from_str(out.kind).map_err(|e| CallError::Transport(e.to_string()))?,
        )
        .body(Full::new(Bytes::copy_from_slice(out.payload.as_bytes())))
        .map_err(|e| CallError::Transport(e.to_string()))?;
    appstack_trace::inject_headers(&tracing::Span::current(), request.headers_mut());
    let response = client
        .request(request)
        .await
        .map_err(|e| CallError::Transport(describe(&e)))?;
    let (head, body) = response.into_parts();
    // The whole body inside the attempt: its time counts against the attempt's timeout, and
    // the bulkhead slot is held until the last byte.
    let body = Limited::new(body, max_result_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                CallError::TooLarge {
                    limit: max_result_bytes,
                }
            } else {
                CallError::Transport(format!("reading the response body: {e}"))
            }
        })?
        .to_bytes();
    Ok(Reply::Http {
        status: head.status,
        headers: head.headers,
        body,
    })
}

async fn grpc_call(mut client: ProcessorClient<Channel>, out: Outgoing<'_>) -> Reply {
    let key = out.request_id.to_string();
    let mut request = tonic::Request::new(ProcessRequest {
        id: key.clone(),
        kind: out.kind.to_owned(),
        payload: out.payload.to_owned(),
        idempotency_key: key.clone(),
        attempt: out.attempt,
    });
    request.set_timeout(out.timeout);
    if let Ok(value) = key.parse() {
        request
            .metadata_mut()
            .insert(IDEMPOTENCY_KEY_METADATA, value);
    }
    appstack_trace::inject_metadata(&tracing::Span::current(), request.metadata_mut());
    Reply::Grpc(
        client
            .process(request)
            .await
            .map(|response| response.into_inner().result),
    )
}

/// Records an attempt's answer on its span: the HTTP status or gRPC code, and an error
/// status when it failed (the semantic conventions' rules for client spans: any non-OK
/// gRPC code, an HTTP status of 400 or more, no answer at all).
fn record_outcome(span: &tracing::Span, reply: &Result<Reply, CallError>) {
    let failed = match reply {
        Ok(Reply::Http { status, .. }) => {
            span.record("http.response.status_code", status.as_u16());
            status.as_u16() >= 400
        }
        Ok(Reply::Grpc(Ok(_))) => {
            span.record("rpc.grpc.status_code", 0);
            false
        }
        Ok(Reply::Grpc(Err(status))) => {
            span.record("rpc.grpc.status_code", status.code() as i32);
            true
        }
        Err(_) => true,
    };
    if failed {
        span.record("otel.status_code", "error");
    }
}

/// A hyper client error with its causes, which hold the useful part.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
