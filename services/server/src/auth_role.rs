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
use tower::ServiceBuilder;

use crate::StackConfig;

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

    let checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(DatabaseReady::new(pool.clone()))];
    let admin_router = admin::router(metrics.clone(), checks, shutdown.clone());
    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        admin_router,
        shutdown.clone(),
    ));

    let services = GrpcServices::new()
        .with_service(auth.server(config.server.max_message_bytes))
        .reflect(appstack_proto::FILE_DESCRIPTOR_SET);
    let layer = ServiceBuilder::new()
        .layer(grpc_metrics.layer())
        .layer(auth.auth_layer())
        .into_inner();
    let served = grpc::serve(
        &config.server,
        listeners.grpc,
        services,
        layer,
        shutdown.clone(),
    )
    .await;
    // Whatever ended the gRPC server ends the process's other parts too.
    shutdown.cancel();
    let admin_result = admin_task.await;
    pool.close().await;
    served.context("gRPC server")?;
    admin_result
        .context("admin task")?
        .context("admin HTTP server")?;
    Ok(())
}
