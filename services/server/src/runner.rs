//! The one way a process runs its services, whichever role it plays.
//!
//! Each service provides a [`ServiceBuilder`]: from the process's shared pieces (a
//! [`Context`]: configuration, database pool, metrics, shutdown) it builds its [`Parts`] —
//! gRPC services, public (anonymous) methods, readiness checks, admin routes, background
//! tasks, and possibly the token verifier. [`run`] does the rest, the same for every role:
//!
//! 1. the pool (migrated first when `database.migrateOnStart`), one per process;
//! 2. every builder, in order (nothing is served until all have built);
//! 3. the allow-list of public methods checked against the descriptor set: each must name a
//!    method this process serves, exactly, or the process does not start;
//! 4. the admin port, the gRPC port (one for all services) and the background tasks;
//! 5. whichever ends first — the gRPC server, the admin server, a background task, or the
//!    shutdown signal — ends them all: the gRPC port drains (`server.shutdownDelay`, then
//!    `server.shutdownGrace`), background tasks get the grace to finish, the admin port
//!    closes last (so probes see "not ready" rather than a refused connection), and the
//!    pool gets 2 s to close.
//!
//! A role is a list of builders: `auth` is `[auth_service::builder()]`; `all` will be auth,
//! main and worker in one process, one gRPC port and one pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use appstack_common::admin::{self, ReadinessCheck};
use appstack_common::db::{self, DatabaseReady};
use appstack_common::grpc::{self, Door, GrpcServices, PLUMBING_METHODS};
use appstack_common::methods::MethodTable;
use appstack_common::metrics::{GrpcMetrics, MetricsRegistry};
use appstack_config::StackConfig;
use appstack_verifier::{AuthLayer, Verifier};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use sqlx::postgres::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for pooled connections to be returned.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Listeners bound before start, so callers (tests, `dev`) know the ports.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC, for every service of the process.
    pub grpc: TcpListener,
    /// Admin HTTP.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the configured addresses.
    ///
    /// # Errors
    ///
    /// When an address is taken or not local.
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

/// Connects the pool (lazily: a process starts while the database is down and says so on
/// `/readyz`) and, when `database.migrateOnStart`, migrates.
///
/// # Errors
///
/// When the URL is not a PostgreSQL URL or the migrations fail.
pub async fn prepare_database(config: &StackConfig, application: &str) -> anyhow::Result<PgPool> {
    let pool = db::connect_lazy(&config.database, application)?;
    if config.database.migrate_on_start {
        db::migrate(&pool)
            .await
            .context("applying migrations at start")?;
    }
    Ok(pool)
}

/// What every service of a process shares. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    /// The whole configuration.
    pub config: Arc<StackConfig>,
    /// The process's one pool.
    pub pool: PgPool,
    /// The process's one registry, served on `/metrics`.
    pub metrics: MetricsRegistry,
    /// Cancelled when the process begins to shut down; background tasks end on it.
    pub shutdown: CancellationToken,
    /// The verifier given by a service built earlier in this process, if any: a later
    /// service (main beside auth in `all`) uses it rather than making its own.
    pub verifier: Option<Arc<Verifier>>,
}

/// One service's contribution to a process. Built with the `with_*`/`add_*` methods;
/// [`run`] merges the parts of every service.
#[derive(Default)]
#[must_use]
pub struct Parts {
    grpc: Vec<Box<dyn FnOnce(GrpcServices) -> GrpcServices + Send>>,
    public_methods: Vec<&'static str>,
    readiness: Vec<Arc<dyn ReadinessCheck>>,
    admin: Vec<axum::Router>,
    tasks: Vec<(&'static str, BoxFuture<'static, anyhow::Result<()>>)>,
    verifier: Option<Arc<Verifier>>,
    front_door: bool,
}

impl Parts {
    /// Nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves a gRPC service (a generated `…Server`) on the process's gRPC port.
    pub fn grpc_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc.push(Box::new(move |services: GrpcServices| {
            services.with_service(service)
        }));
        self
    }

    /// Methods callable without a token, by exact path (`/appstack.auth.v1.AuthService/Login`).
    /// [`run`] refuses to start when one is not a method the process serves.
    pub fn public_methods(mut self, paths: &[&'static str]) -> Self {
        self.public_methods.extend_from_slice(paths);
        self
    }

    /// A check `/readyz` runs (the database's is always there).
    pub fn readiness(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.readiness.push(check);
        self
    }

    /// Routes merged into the admin port (paths must not clash: `merge` panics at start).
    pub fn admin_routes(mut self, router: axum::Router) -> Self {
        self.admin.push(router);
        self
    }

    /// Work that runs until [`Context::shutdown`]. Ending before it, with or without an
    /// error, ends the process (so Kubernetes restarts it).
    pub fn task<F>(mut self, name: &'static str, task: F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.push((name, task.boxed()));
        self
    }

    /// The verifier of this process's tokens. The first service to give one is the
    /// process's; later ones see it in [`Context::verifier`].
    pub fn verifier(mut self, verifier: Arc<Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Puts the front door (HTTP/JSON, gRPC-Web, the console) on the gRPC port, when
    /// `frontDoor.enabled`.
    pub fn front_door(mut self) -> Self {
        self.front_door = true;
        self
    }

    fn merge(&mut self, other: Parts) {
        self.front_door |= other.front_door;
        self.grpc.extend(other.grpc);
        self.public_methods.extend(other.public_methods);
        self.readiness.extend(other.readiness);
        self.admin.extend(other.admin);
        self.tasks.extend(other.tasks);
        if self.verifier.is_none() {
            self.verifier = other.verifier;
        }
    }
}

/// How one service of a process is built: a name (for logs, errors and the database
/// connections' `application_name`) and an async function from the [`Context`] to its
/// [`Parts`].
pub struct ServiceBuilder {
    name: &'static str,
    build: Box<dyn FnOnce(Context) -> BoxFuture<'static, anyhow::Result<Parts>> + Send>,
}

impl ServiceBuilder {
    /// A builder named `name` running `build`.
    pub fn new<F, Fut>(name: &'static str, build: F) -> Self
    where
        F: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Parts>> + Send + 'static,
    {
        Self {
            name,
            build: Box::new(move |ctx| build(ctx).boxed()),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every allow-listed public method must be one the process serves, named exactly: a
/// misspelt entry would leave a method that should be public behind authentication, and
/// a prefix (`/pkg.Service/`) is not a method at all.
///
/// # Errors
///
/// Naming every entry that is not a served method.
pub fn check_public_methods(table: &MethodTable, paths: &[&str]) -> anyhow::Result<()> {
    let unknown: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|path| table.method(path).is_none())
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "public (anonymous) methods that are not methods this process serves: {}; each \
             must be an exact `/package.Service/Method` path of the descriptor set",
            unknown.join(", ")
        )
    }
}

/// Runs `services` in one process until `shutdown` (or until one of its parts ends), then
/// drains in order; see the [module docs](self).
///
/// # Errors
///
/// When the database cannot be prepared, a service fails to build, a public method is not
/// served, no service gives a verifier, or a part fails or ends early.
pub async fn run(
    config: StackConfig,
    listeners: Listeners,
    services: Vec<ServiceBuilder>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let names: Vec<&str> = services.iter().map(ServiceBuilder::name).collect();
    let application = format!("appstack-{}", names.join("+"));
    let pool = prepare_database(&config, &application).await?;
    let metrics = MetricsRegistry::default();
    let mut ctx = Context {
        config: Arc::new(config),
        pool: pool.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        verifier: None,
    };
    let mut parts = Parts::new();
    for builder in services {
        let built = (builder.build)(ctx.clone())
            .await
            .with_context(|| format!("starting the {} service", builder.name))?;
        parts.merge(built);
        ctx.verifier.clone_from(&parts.verifier);
    }
    let config = ctx.config;
    let Parts {
        grpc,
        mut public_methods,
        readiness,
        admin: admin_routes,
        tasks,
        verifier,
        front_door,
    } = parts;
    let verifier = verifier.context("no service of this process verifies tokens")?;

    let services = grpc
        .into_iter()
        .fold(GrpcServices::new(), |services, add| add(services))
        .reflect(appstack_proto::FILE_DESCRIPTOR_SET);
    public_methods.extend_from_slice(PLUMBING_METHODS);
    check_public_methods(&services.methods(), &public_methods)?;
    let door: Option<Arc<dyn Door>> = if front_door && config.front_door.enabled {
        Some(Arc::new(crate::front_door::build(
            &config,
            services.service_names(),
            &public_methods,
        )?))
    } else {
        None
    };
    let auth_layer = public_methods
        .iter()
        .fold(AuthLayer::new(verifier), |layer, path| {
            layer.allow_anonymous(*path)
        });

    let mut checks: Vec<Arc<dyn ReadinessCheck>> = vec![Arc::new(DatabaseReady::new(pool.clone()))];
    checks.extend(readiness);
    let admin_router = admin_routes.into_iter().fold(
        admin::router(metrics.clone(), checks, shutdown.clone()),
        axum::Router::merge,
    );
    let admin_stop = CancellationToken::new();
    let mut admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        admin_router,
        admin_stop.clone(),
    ));

    let mut background = JoinSet::new();
    for (name, task) in tasks {
        background.spawn(async move { (name, task.await) });
    }

    let grpc_metrics = GrpcMetrics::new(&metrics);
    let served = grpc::serve(
        &config.server,
        listeners.grpc,
        services,
        &grpc_metrics,
        auth_layer,
        door,
        shutdown.clone(),
    );
    tokio::pin!(served);

    // Whichever part ends first ends the others.
    let mut failures: Vec<anyhow::Error> = Vec::new();
    let mut admin_result = None;
    let grpc_result = tokio::select! {
        result = &mut served => Some(result),
        result = &mut admin_task => {
            admin_result = Some(result);
            None
        }
        Some(ended) = background.join_next() => {
            let failure = if shutdown.is_cancelled() {
                failed(ended)
            } else {
                Some(ended_early(ended))
            };
            failures.extend(failure);
            None
        }
        () = shutdown.cancelled() => None,
    };
    shutdown.cancel();
    // The gRPC drain: health NOT_SERVING, the shutdown delay, then the grace.
    let grpc_result = match grpc_result {
        Some(result) => result,
        None => served.await,
    };
    if let Err(error) = grpc_result {
        failures.push(anyhow::Error::new(error).context("gRPC server"));
    }
    // Background tasks saw the same token; they get the grace to finish their work.
    let grace = config.server.shutdown_grace;
    if tokio::time::timeout(grace, async {
        while let Some(ended) = background.join_next().await {
            failures.extend(failed(ended));
        }
    })
    .await
    .is_err()
    {
        tracing::warn!(
            ?grace,
            "background tasks still running at exit; stopping them"
        );
        background.abort_all();
    }
    // The admin port last: probes saw "not ready" until now.
    admin_stop.cancel();
    let admin_result = match admin_result {
        Some(result) => result,
        None => admin_task.await,
    };
    match admin_result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => failures.push(anyhow::Error::new(error).context("admin HTTP server")),
        Err(error) => failures.push(anyhow::Error::new(error).context("admin task")),
    }
    // Calls cut off by the grace deadline may still hold connections; do not wait for them.
    if tokio::time::timeout(POOL_CLOSE_TIMEOUT, pool.close())
        .await
        .is_err()
    {
        tracing::warn!("database connections still busy at exit; closing anyway");
    }
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(()),
    }
}

/// The error of a background task that ended once shutdown began, if it failed.
fn failed(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> Option<anyhow::Error> {
    match ended {
        Ok((_, Ok(()))) => None,
        Ok((name, Err(error))) => Some(error.context(format!("background task {name}"))),
        Err(error) => Some(anyhow::Error::new(error).context("a background task panicked")),
    }
}

/// The error for a background task that ended before shutdown was asked for.
fn ended_early(
    ended: Result<(&'static str, anyhow::Result<()>), tokio::task::JoinError>,
) -> anyhow::Error {
    match ended {
        Ok((name, Ok(()))) => anyhow::anyhow!("background task {name} ended before shutdown"),
        other => failed(other).unwrap_or_else(|| anyhow::anyhow!("a background task ended")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use appstack_verifier::{KeyCache, StaticKeySource, VerifierConfig};

    use super::*;

    /// The methods of a server with AuthService registered, as `run` gets them.
    fn auth_table() -> MethodTable {
        MethodTable::new(
            &[
                appstack_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
            &[
                "appstack.auth.v1.AuthService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ],
        )
    }

    #[test]
    fn the_public_methods_of_auth_and_the_plumbing_are_served_methods() {
        let table = auth_table();
        check_public_methods(&table, appstack_auth::ANONYMOUS_PATHS).unwrap();
        check_public_methods(&table, PLUMBING_METHODS).unwrap();
    }

    #[test]
    fn a_misspelt_prefix_or_unserved_public_method_is_named() {
        let err = check_public_methods(
            &auth_table(),
            &[
                "/appstack.auth.v1.AuthService/Login",
                "/appstack.auth.v1.AuthService/login",
                "/appstack.auth.v1.AuthService/",
                "/appstack.main.v1.RequestService/Submit",
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "/appstack.auth.v1.AuthService/login, /appstack.auth.v1.AuthService/, /appstack.main.v1.RequestService/Submit;"
            ),
            "{err}"
        );
        assert!(!err.contains("/Login"), "{err}");
    }

    /// A process on loopback ports whose database is never reached (the pool is lazy and
    /// no readiness check runs).
    async fn loopback() -> (StackConfig, Listeners) {
        let mut config = StackConfig::default();
        config.server.grpc_addr = ([127, 0, 0, 1], 0).into();
        config.server.admin_addr = ([127, 0, 0, 1], 0).into();
        config.server.shutdown_delay = Duration::ZERO;
        config.server.shutdown_grace = Duration::from_secs(1);
        config.database.url = "postgres://nobody@127.0.0.1:1/none".into();
        let listeners = Listeners::bind(&config).await.unwrap();
        (config, listeners)
    }

    fn verifier() -> Arc<Verifier> {
        let keys = KeyCache::new(
            Arc::new(StaticKeySource::new(Vec::new())),
            Default::default(),
        );
        Arc::new(Verifier::new(
            VerifierConfig::new("https://issuer", "aud"),
            keys,
        ))
    }

    /// `run` itself refuses to start with a public method it does not serve (here: auth's
    /// Login in a process without the auth service), before serving anything.
    #[tokio::test]
    async fn run_refuses_an_unserved_public_method() {
        let (config, listeners) = loopback().await;
        let admin = listeners.admin.local_addr().unwrap();
        let builder = ServiceBuilder::new("test", |_ctx| async {
            Ok(Parts::new()
                .verifier(verifier())
                .public_methods(&["/appstack.auth.v1.AuthService/Login"]))
        });
        let err = run(config, listeners, vec![builder], CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("/appstack.auth.v1.AuthService/Login"),
            "{err:#}"
        );
        // Nothing was left listening.
        assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    }

    /// Whichever part ends first ends the process: a background task failing stops the
    /// gRPC and admin ports and is the process's error.
    #[tokio::test]
    async fn a_failing_background_task_ends_the_process() {
        let (config, listeners) = loopback().await;
        let (grpc, admin) = (
            listeners.grpc.local_addr().unwrap(),
            listeners.admin.local_addr().unwrap(),
        );
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let builder = ServiceBuilder::new("test", |ctx| async move {
            assert!(ctx.verifier.is_none());
            Ok(Parts::new()
                .verifier(verifier())
                .task("doomed", async move {
                    let _ = started_rx.await;
                    anyhow::bail!("lost the queue")
                }))
        });
        let shutdown = CancellationToken::new();
        let process = tokio::spawn(run(config, listeners, vec![builder], shutdown.clone()));
        // Serving: the admin port answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(admin).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "admin port never opened"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started_tx.send(()).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), process)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("background task doomed: lost the queue"),
            "{err:#}"
        );
        assert!(shutdown.is_cancelled());
        assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
        assert!(tokio::net::TcpStream::connect(admin).await.is_err());
    }
}
