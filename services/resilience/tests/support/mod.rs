//! What the loopback suites share.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

/// Serves `app` on a fresh loopback port until the test's runtime ends.
pub async fn serve_on_loopback(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
