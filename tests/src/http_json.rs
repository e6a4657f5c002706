//! A small HTTP/1.1 JSON client for the front door's tests: real hyper over loopback.

use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// One answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    ///
    /// # Errors
    ///
    /// When it is not JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header as text, or empty.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A client of one server.
#[derive(Clone)]
pub struct HttpJson {
    base: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpJson {
    /// A client of `base`.
    pub fn new(base: SocketAddr) -> Self {
        Self {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends `method path` with `body` (JSON when given) and `headers`.
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.base));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(body)?)
            }
            None => Bytes::new(),
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self.client.request(builder.body(Full::new(bytes))?).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// GET with a token.
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, token, None, &[]).await
    }

    /// POST a JSON body with a token.
    ///
    /// # Errors
    ///
    /// When the connection fails.
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> anyhow::Result<Answer> {
        self.send(Method::POST, path, token, Some(body), &[]).await
    }
}
