//! main and worker's parts of a process (`appstack main`, `appstack worker`, `all`, `dev`).
//!
//! Both share one [`Executor`] per process — one client, breaker, retry budget and bulkhead
//! per external service — so in `all` a SYNC request and a queued one count against the
//! same breaker, as they call the same service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use appstack_executor::Executor;
use appstack_main::Main;
use appstack_proto::worker::v1::worker_admin_server::WorkerAdminServer;
use appstack_queue::store::{Notifier, Queue};
use appstack_verifier::{GrpcJwksSource, KeyCache, KeyCacheConfig, Verifier, VerifierConfig};
use appstack_worker::{Worker, WorkerAdminApi};
use tonic::transport::Endpoint;

use crate::runner::{Context, Parts, ServiceBuilder};

/// How often a remote verifier refreshes the auth service's keys.
const KEY_REFRESH: Duration = Duration::from_secs(60);
/// Time kept from the shutdown grace for releasing and recording after the worker's drain.
const DRAIN_MARGIN: Duration = Duration::from_secs(3);

/// The request API alone (`appstack main`).
pub fn main_builder() -> ServiceBuilder {
    ServiceBuilder::new("main", |ctx| build(ctx, true, false))
}

/// The worker alone (`appstack worker`).
pub fn worker_builder() -> ServiceBuilder {
    ServiceBuilder::new("worker", |ctx| build(ctx, false, true))
}

/// main and worker in one process, sharing the executor (`all`, `dev`).
pub fn main_and_worker_builder() -> ServiceBuilder {
    ServiceBuilder::new("main+worker", |ctx| build(ctx, true, true))
}

/// This process's name in the leases it holds: the pod name in Kubernetes (`HOSTNAME`), and
/// a random suffix so a restarted container never mistakes an old lease for its own.
fn instance_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "appstack".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{role}/{}", &suffix[..8])
}

async fn build(ctx: Context, main: bool, worker: bool) -> anyhow::Result<Parts> {
    let config = Arc::clone(&ctx.config);
    let queue = Queue::new(ctx.pool.clone());
    let mut executor = None;
    ctx.metrics
        .register(|registry| executor = Some(Executor::new(&config, registry)));
    let executor = executor
        .context("the metrics registry did not run the executor's registration")?
        .context("building the external services' clients")?;
    let notifier = Notifier::spawn(ctx.pool.clone(), ctx.shutdown.clone());
    let mut parts = Parts::new();
    if ctx.verifier.is_none() {
        // No auth service in this process: verify with the keys of the remote one.
        let channel = Endpoint::from_shared(config.auth.endpoint.clone())
            .with_context(|| format!("auth.endpoint {:?}", config.auth.endpoint))?
            .connect_lazy();
        let keys = KeyCache::new(
            Arc::new(GrpcJwksSource::new(channel)),
            KeyCacheConfig::default(),
        );
        let verifier = Arc::new(Verifier::new(
            VerifierConfig::new(config.auth.issuer.clone(), config.auth.audience.clone()),
            keys,
        ));
        let refreshing = Arc::clone(&verifier);
        let stop = ctx.shutdown.clone();
        parts = parts
            .verifier(verifier)
            .task("verifier key refresh", async move {
                refreshing.keys().run_refresh(KEY_REFRESH, stop).await;
                Ok(())
            });
    }
    if main {
        let api = Main::start(
            instance_name("main"),
            queue.clone(),
            executor.clone(),
            notifier.clone(),
            &config,
            ctx.shutdown.clone(),
        );
        parts = parts
            .grpc_service(api.server(config.server.max_message_bytes))
            .front_door();
    }
    if worker {
        let mut built = None;
        ctx.metrics.register(|registry| {
            built = Some(Worker::new(
                instance_name("worker"),
                queue.clone(),
                executor.clone(),
                notifier.clone(),
                &config,
                registry,
            ));
        });
        let job_loop =
            built.context("the metrics registry did not run the worker's registration")?;
        let grace = config.server.shutdown_grace.saturating_sub(DRAIN_MARGIN);
        let shutdown = ctx.shutdown.clone();
        parts = parts
            .grpc_service(
                WorkerAdminServer::new(WorkerAdminApi::new(queue, notifier, executor.clone()))
                    .max_decoding_message_size(config.server.max_message_bytes),
            )
            .task("worker", async move {
                job_loop.run(shutdown, grace).await;
                Ok(())
            });
    }
    Ok(parts)
}
