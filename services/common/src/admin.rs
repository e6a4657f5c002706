//! The admin HTTP port: `/healthz` (the process answers), `/readyz` (every readiness check
//! passes and the process is not shutting down) and `/metrics` (Prometheus text), plus
//! whatever routes a role merges in (see [`router`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::MetricsRegistry;

/// Something the process needs before it can take traffic (the database, migrations, …).
pub trait ReadinessCheck: Send + Sync + 'static {
    /// A short name shown in `/readyz` output.
    fn name(&self) -> &'static str;
    /// `Err` with a reason when not ready.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A readiness check gives up after this long and counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AdminState {
    metrics: MetricsRegistry,
    checks: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    shutting_down: CancellationToken,
}

/// Builds the admin router. `/readyz` fails once `shutting_down` is cancelled, so load
/// balancers stop sending new work while in-flight work drains.
///
/// A role adds its own routes with [`Router::merge`] (e.g. auth's `/.well-known/…`
/// documents); `/healthz`, `/readyz` and `/metrics` are taken, and `merge` panics at start
/// on a path registered twice, so a clash cannot go unnoticed.
pub fn router(
    metrics: MetricsRegistry,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    shutting_down: CancellationToken,
) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            metrics,
            checks: Arc::new(checks),
            shutting_down,
        })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.shutting_down.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    let mut failures = Vec::new();
    for check in state.checks.iter() {
        match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => failures.push(format!("{}: {reason}", check.name())),
            Err(_) => failures.push(format!("{}: timed out", check.name())),
        }
    }
    if failures.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, failures.join("\n") + "\n")
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "admin HTTP listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
