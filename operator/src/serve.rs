//! `appstack-operator run`: leader election on a Lease, the controller while leader, an
//! admin port (`/healthz`, `/readyz`, `/metrics`), and a clean stop on SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The Lease the replicas compete for.
pub const LEASE_NAME: &str = "appstack-operator";
/// How long a leader's Lease holds without renewal: the failover time when it dies.
pub const LEASE_SECONDS: u64 = 15;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Watch this namespace only; `None` watches all.
    pub namespace: Option<String>,
    /// Where the admin port listens.
    pub admin_addr: SocketAddr,
    /// The namespace of the Lease; `None`: no leader election (one replica).
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (the pod's name).
    pub identity: String,
    /// The controller's pacing.
    pub tuning: crate::controller::Tuning,
}

/// Runs until SIGTERM or SIGINT.
///
/// # Errors
///
/// When the admin port cannot be bound or the API server cannot be reached at start.
pub async fn serve(client: Client, options: ServeOptions) -> anyhow::Result<()> {
    let metrics = Metrics::default();
    let (leading_tx, leading_rx) = watch::channel(options.lease_namespace.is_none());
    let listener = tokio::net::TcpListener::bind(options.admin_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin port");
    let admin = admin_router(metrics.clone(), leading_rx.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, admin).await {
            tracing::error!(%error, "admin port stopped");
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let Some(lease_namespace) = options.lease_namespace.clone() else {
        metrics.set_leading(true);
        let mut stop = stop_rx.clone();
        crate::controller::run(
            client,
            options.namespace.clone(),
            options.tuning,
            metrics,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await?;
        return Ok(());
    };
    let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
        .with_namespace(lease_namespace)
        .with_identity(options.identity.clone())
        .with_duration(LEASE_SECONDS)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        let mut stop = stop_rx.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = leader.wait_for(|l| *l) => if changed.is_err() { break },
        }
        tracing::info!(identity = %options.identity, "leading: starting the controller");
        let _ = leading_tx.send(true);
        metrics.set_leading(true);
        let (mut lost, mut stop) = (leader.clone(), stop_rx.clone());
        crate::controller::run(
            client.clone(),
            options.namespace.clone(),
            options.tuning,
            metrics.clone(),
            async move {
                tokio::select! {
                    _ = lost.wait_for(|l| !*l) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            },
        )
        .await?;
        let _ = leading_tx.send(false);
        metrics.set_leading(false);
        if *stop_rx.borrow() {
            break;
        }
        tracing::warn!("lost the lease: the controller stopped; waiting to lead again");
    }
    // Closing the channel releases the Lease, so the other replica takes over at once.
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    Ok(())
}

fn admin_router(metrics: Metrics, leading: watch::Receiver<bool>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // A standby is ready too (the body says which it is): a Deployment's rolling update
        // waits for each new pod to be Ready, and a standby that never was would stall
        // every rollout of a two-replica operator.
        .route(
            "/readyz",
            get(move || {
                let leading = *leading.borrow();
                async move { if leading { "leading" } else { "standby" } }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
