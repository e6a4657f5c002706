//! Starts the whole stack in one process — auth, main and worker, the same code `appstack
//! all` runs — on loopback ports, against a fresh database, with the external-service
//! simulator behind its routes, and quick queue timings for tests.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use appstack_config::{ExternalServiceConfig, Protocol, RouteConfig, StackConfig};
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::auth::v1::{LoginRequest, SignUpRequest};
use appstack_proto::main::v1::request_service_client::RequestServiceClient;
use appstack_proto::worker::v1::worker_admin_client::WorkerAdminClient;
use appstack_server::runner::{self, Listeners, ServiceBuilder};
use appstack_server::{auth_service, request_services};
use appstack_simulator::{FaultPlan, Simulator};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::auth_server::{cheap_password_config, http_get};
use crate::pg;

/// The routes every stack test has: kind → (service, ordering key).
pub const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("echo", "sim-http", None),
    ("echo-grpc", "sim-grpc", None),
    ("ordered", "sim-http", Some("/account")),
];

/// A running stack.
pub struct StackServer {
    /// gRPC address (every service).
    pub grpc: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// The configuration it runs with.
    pub config: StackConfig,
    /// The simulator behind the routes.
    pub simulator: Simulator,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _keys: tempfile::TempDir,
}

/// A bearer token on every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// `authorization: Bearer <token>`.
    ///
    /// # Errors
    ///
    /// When the token is not a valid header value.
    pub fn new(token: &str) -> anyhow::Result<Self> {
        Ok(Self(format!("Bearer {token}").parse()?))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A request-API client acting as one caller.
pub type Requests = RequestServiceClient<InterceptedService<Channel, Bearer>>;
/// A WorkerAdmin client acting as one caller.
pub type Admin = WorkerAdminClient<InterceptedService<Channel, Bearer>>;

impl StackServer {
    /// Starts with the defaults of [`Self::test_config`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts after `adjust` edits the configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut StackConfig)) -> anyhow::Result<Self> {
        let services = vec![
            auth_service::builder(),
            request_services::main_and_worker_builder(),
        ];
        Self::start_services(adjust, services).await
    }

    /// Starts `services` (rather than auth, main and worker) after `adjust` edits the
    /// configuration: a benchmark of the request API alone runs auth and main only.
    pub async fn start_services(
        adjust: impl FnOnce(&mut StackConfig),
        services: Vec<ServiceBuilder>,
    ) -> anyhow::Result<Self> {
        let simulator = Simulator::start_on_loopback(FaultPlan::default()).await?;
        let database = pg::test_database().await?;
        let keys = tempfile::tempdir()?;
        let mut config = Self::test_config(&simulator);
        config.database.url = database.url;
        config.auth.keys_dir = keys.path().to_owned();
        adjust(&mut config);
        let grpc = TcpListener::bind(config.server.grpc_addr).await?;
        let admin = TcpListener::bind(config.server.admin_addr).await?;
        let (grpc_addr, admin_addr) = (grpc.local_addr()?, admin.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(runner::run(
            config.clone(),
            Listeners { grpc, admin },
            services,
            shutdown.clone(),
        ));
        let server = Self {
            grpc: grpc_addr,
            admin: admin_addr,
            config,
            simulator,
            shutdown,
            task: Some(task),
            _keys: keys,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Loopback ports, cheap hashing, the simulator behind [`ROUTES`], quick queue timings
    /// (short leases, fast polls and rescues, short job backoff) and no in-call retries, so
    /// each job attempt is one call and tests count them exactly.
    pub fn test_config(simulator: &Simulator) -> StackConfig {
        let mut config = StackConfig::default();
        config.server.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.shutdown_delay = Duration::ZERO;
        config.server.shutdown_grace = Duration::from_secs(8);
        config.database.migrate_on_start = true;
        config.auth.generate_key_if_missing = true;
        config.auth.password = cheap_password_config();
        config.queue.lease = Duration::from_secs(3);
        config.queue.heartbeat = Duration::from_millis(500);
        config.queue.poll_interval = Duration::from_millis(200);
        config.queue.rescuer_interval = Duration::from_millis(250);
        config.requests.submit_rate.clear();
        for (name, endpoint, protocol) in [
            (
                "sim-http",
                format!("http://{}/process", simulator.http),
                Protocol::Http,
            ),
            (
                "sim-grpc",
                format!("http://{}", simulator.grpc),
                Protocol::Grpc,
            ),
        ] {
            let mut service = ExternalServiceConfig {
                endpoint,
                protocol,
                ..ExternalServiceConfig::default()
            };
            service.resilience.retry.max_attempts = 1;
            config.external_services.insert(name.into(), service);
        }
        for (kind, service, ordering_key) in ROUTES {
            let mut route = RouteConfig {
                service: (*service).into(),
                ordering_key: ordering_key.map(Into::into),
                ..RouteConfig::default()
            };
            route.job_backoff.initial = Duration::from_millis(50);
            route.job_backoff.max = Duration::from_millis(200);
            config.routes.insert((*kind).into(), route);
        }
        config
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(task) = &self.task
                && task.is_finished()
            {
                anyhow::bail!("the stack stopped while starting");
            }
            if let Ok((200, _)) = http_get(self.admin, "/readyz").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the stack was not ready within 30s");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A gRPC channel.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Endpoint::from_shared(format!("http://{}", self.grpc))?
            .connect()
            .await
            .context("connecting to the stack")
    }

    /// Signs `email` up (password `correct horse battery`) and logs in: its access token.
    pub async fn user_token(&self, email: &str) -> anyhow::Result<String> {
        self.sign_up_and_log_in(email, false).await
    }

    /// A user with the `admin` role: its access token.
    pub async fn admin_token(&self, email: &str) -> anyhow::Result<String> {
        self.sign_up_and_log_in(email, true).await
    }

    async fn sign_up_and_log_in(&self, email: &str, admin: bool) -> anyhow::Result<String> {
        let mut auth = AuthServiceClient::new(self.channel().await?);
        let password = "correct horse battery".to_owned();
        auth.sign_up(SignUpRequest {
            email: email.into(),
            password: password.clone(),
        })
        .await?;
        if admin {
            // Roles are granted by an admin; the first one is made in the database, as
            // `appstack bootstrap-admin` does.
            let pool = sqlx::PgPool::connect(&self.config.database.url).await?;
            sqlx::query("UPDATE auth.users SET roles = ARRAY['user', 'admin'] WHERE email = $1")
                .bind(email)
                .execute(&pool)
                .await?;
            pool.close().await;
        }
        let tokens = auth
            .login(LoginRequest {
                email: email.into(),
                password,
            })
            .await?
            .into_inner();
        Ok(tokens.access_token)
    }

    /// A request-API client with `token`.
    pub async fn requests(&self, token: &str) -> anyhow::Result<Requests> {
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        Ok(RequestServiceClient::with_interceptor(
            self.channel().await?,
            bearer,
        ))
    }

    /// A WorkerAdmin client with `token`.
    pub async fn worker_admin(&self, token: &str) -> anyhow::Result<Admin> {
        let bearer = Bearer(format!("Bearer {token}").parse()?);
        Ok(WorkerAdminClient::with_interceptor(
            self.channel().await?,
            bearer,
        ))
    }

    /// `GET path` on the admin port.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.admin, path).await
    }

    /// Stops the stack (graceful drain); how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.context("stack task")?,
            None => Ok(()),
        }
    }
}

impl Drop for StackServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
