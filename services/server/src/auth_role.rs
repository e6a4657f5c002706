//! `appstack auth`: the auth service with its admin port.

use std::sync::Arc;

use anyhow::Context as _;
use appstack_auth::Auth;
use appstack_common::admin::{self, ReadinessCheck};
use appstack_common::db::{self, DatabaseReady};
use appstack_common::grpc::{self, GrpcServices};
use appstack_common::metrics::{GrpcMetrics, MetricsRegistry};
use sqlx::postgres::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::StackConfig;

/// How long shutdown waits for pooled connections to be returned.
const POOL_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Listeners bound before start, so callers (tests, `dev`) know the ports.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC.
    pub grpc: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &StackConfig) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(config.server.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC on {}", config.server.grpc_addr))?;
        let admin = TcpListener::bind(config.server.admin_addr)
            .await
            .with_context(|| format!("binding admin HTTP on {}", config.server.admin_addr))?;
        Ok(Self { grpc, admin })
    }
}

/// Connects the pool and, when configured, migrates.
pub async fn prepare_database(config: &StackConfig, application: &str) -> anyhow::Result<PgPool> {
    let pool = db::connect_lazy(&config.database, application)?;
    if config.database.migrate_on_start {
        db::migrate(&pool)
            .await
            .context("applying migrations at start")?;
    }
    Ok(pool)
}

/// Runs the auth service until `shutdown`, then drains.
pub async fn run(
    config: StackConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = prepare_database(&config, "appstack-auth").await?;
    let metrics = MetricsRegistry::default();
    let auth = Auth::new(config.auth.clone(), pool.clone(), &metrics)
        .await
        .context("starting the auth service")?;
    auth.spawn_background(shutdown.clone());
    let grpc_metrics = GrpcMetrics::new(&metrics);

    // The admin port outlives the gRPC drain, so probes see "not ready" rather than a refused
    // connection while calls finish.
    let checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(DatabaseReady::new(pool.clone()))];
    // The JWKS and discovery document ride on the admin port: plain HTTP for gateways and
    // JWT libraries, while the gRPC port keeps requiring gRPC.
    let admin_router = admin::router(metrics.clone(), checks, shutdown.clone())
        .merge(appstack_auth::well_known::router(&auth));
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        admin_router,
        admin_stop.clone(),
    ));

    let services = GrpcServices::new()
        .with_service(auth.server(config.server.max_message_bytes))
        .reflect(appstack_proto::FILE_DESCRIPTOR_SET);
    let served = grpc::serve(
        &config.server,
        listeners.grpc,
        services,
        &grpc_metrics,
        auth.auth_layer(),
        shutdown.clone(),
    )
    .await;
    // Whatever ended the gRPC server ends the process's other parts too.
    shutdown.cancel();
    admin_stop.cancel();
    let admin_result = admin_task.await;
    // Calls cut off by the grace deadline may still hold connections; do not wait for them.
    if tokio::time::timeout(POOL_CLOSE_TIMEOUT, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still busy at exit; closing anyway");
    }
    served.context("gRPC server")?;
    admin_result
        .context("admin task")?
        .context("admin HTTP server")?;
    Ok(())
}
