//! `appstack dev`: the whole stack on this machine. Starts a private PostgreSQL from the
//! server binaries found here, migrates it, generates a signing key, creates an admin, runs
//! every service, prints how to call them, and stops everything on Ctrl-C.
//!
//! # Configuration
//!
//! The same sources as every role, lowest first: [`default_config`] (loopback addresses,
//! keys in the data folder, pretty logs, no shutdown delay), the TOML file (`--config` or
//! `APPSTACK_CONFIG`), the `APPSTACK_*` environment, then flags. Two values belong to `dev`:
//!
//! - `database.url` is the private cluster's, known once it has started. A URL given by the
//!   file or `APPSTACK_DATABASE__URL` is refused rather than used: `dev` writes an admin
//!   with a password kept in the data folder, and doing that silently to some other
//!   (perhaps shared) database would surprise; run `appstack migrate`, `bootstrap-admin`
//!   and `auth` against your own database instead. The conventional `DATABASE_URL` is not
//!   read at all, since shells often keep it set for other tools.
//! - `database.migrateOnStart` is always on: nothing else migrates the private cluster.
//!
//! # One build per service
//!
//! The services run through the same [`crate::runner`] as every role, each built once:
//! `dev`'s auth builder starts the auth service, creates the admin with it, prints the
//! banner, and hands the same service to the runner to serve.
//!
//! # One process per data folder
//!
//! [`run`] locks the data folder ([`lock::DataDirLock`]) before anything else, so a second
//! `dev` on the same folder exits with a message naming the folder and the holder's pid,
//! having started, stopped and generated nothing. Without it, the second one adopted the
//! first one's PostgreSQL and stopped it on its way out. The lock is `dev`'s, not
//! `appstack-localpg`'s: it covers the keys and the admin password too, and the test
//! support shares one cluster between processes on purpose. Holding the lock, `dev` owns
//! the cluster, so it also stops one it adopted (left running by a `dev` that was killed).

pub mod lock;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use appstack_auth::BootstrapOutcome;
use appstack_config::{LogFormat, StackConfig};
use appstack_localpg::{LocalPostgres, Options};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

use crate::runner::{self, Listeners, ServiceBuilder};
use crate::{auth_service, request_services};

/// The development stack's settings.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where PostgreSQL's data, the signing keys and the admin password live.
    pub data_dir: PathBuf,
    /// The layered configuration, on top of [`default_config`]; its `database.url` must
    /// still be [`PRIVATE_DATABASE_URL`].
    pub config: StackConfig,
}

/// The development admin account.
pub const DEV_ADMIN_EMAIL: &str = "admin@appstack.dev";

/// The `database.url` of [`default_config`]: a stand-in (it passes the rules) that [`run`]
/// replaces with the private cluster's URL once its port is known. Any other value means a
/// source set one, which [`run`] refuses.
pub const PRIVATE_DATABASE_URL: &str = "postgres://appstack@127.0.0.1/appstack";

/// The name of the database `dev` creates in its private cluster.
const DATABASE: &str = "appstack";

/// `dev`'s defaults, the lowest configuration layer: gRPC on 127.0.0.1:50051, admin HTTP
/// on 127.0.0.1:9090, no shutdown delay (no load balancer to drain) and a 5 s grace, the
/// private database migrated at start, pretty logs, keys in `<data_dir>/auth-keys`
/// (generated when missing).
pub fn default_config(data_dir: &Path) -> StackConfig {
    let mut config = StackConfig::default();
    config.server.grpc_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 50051));
    config.server.admin_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9090));
    config.server.shutdown_delay = Duration::ZERO;
    config.server.shutdown_grace = Duration::from_secs(5);
    config.database.url = PRIVATE_DATABASE_URL.to_owned();
    config.database.migrate_on_start = true;
    config.log.format = LogFormat::Pretty;
    config.auth.keys_dir = data_dir.join("auth-keys");
    config.auth.generate_key_if_missing = true;
    config
}

/// The JWKS on the admin port at `admin`, as the discovery document gives it in `dev`.
fn local_jwks_uri(admin: SocketAddr) -> String {
    format!("http://{admin}/.well-known/jwks.json")
}

/// Runs the development stack until `shutdown`.
///
/// # Errors
///
/// When `database.url` was set by a source, the data folder is locked by another process
/// ([`lock::LockError::Held`]), a port is taken (checked before PostgreSQL starts), or
/// PostgreSQL, the migrations or the services fail.
pub async fn run(options: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let DevOptions {
        data_dir,
        mut config,
    } = options;
    if config.database.url != PRIVATE_DATABASE_URL {
        anyhow::bail!(
            "appstack dev runs its own PostgreSQL and does not take database.url (it was set by \
             the config file or APPSTACK_DATABASE__URL); to use your own database, run \
             `appstack migrate`, `appstack bootstrap-admin` and `appstack auth` against it"
        );
    }
    config.database.migrate_on_start = true;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&data_dir)
        .with_context(|| format!("resolving {}", data_dir.display()))?;
    // Before anything touches the folder; held until this function returns.
    let _lock = lock::DataDirLock::acquire(&data_dir)?;
    // Before PostgreSQL: a taken port then costs nothing to start or undo.
    let listeners = Listeners::bind(&config).await?;
    // The discovery document must point at a JWKS this machine serves: the admin port.
    if config.auth.jwks_uri.is_none() {
        config.auth.jwks_uri = Some(local_jwks_uri(listeners.admin.local_addr()?));
    }
    eprintln!(
        "appstack dev: starting PostgreSQL in {}",
        data_dir.join("postgres").display()
    );
    // The external services requests go to: the simulator, unless the configuration
    // declares its own.
    let simulator =
        appstack_simulator::Simulator::start_on_loopback(appstack_simulator::FaultPlan::default())
            .await
            .context("starting the external-service simulator")?;
    if config.external_services.is_empty() && config.routes.is_empty() {
        add_simulator_routes(&mut config, &simulator);
    }
    let postgres = LocalPostgres::start(Options::new(data_dir.join("postgres")))
        .await
        .context("starting the private PostgreSQL")?;
    config.database.url = postgres.url(DATABASE);
    let result = run_with_postgres(
        config, listeners, &data_dir, &postgres, &simulator, shutdown,
    )
    .await;
    simulator.stop(Duration::from_secs(2)).await;
    eprintln!("appstack dev: stopping PostgreSQL");
    let stopped = postgres.stop().await;
    result?;
    stopped.context("stopping PostgreSQL")?;
    Ok(())
}

/// The routes `dev` gives a configuration without any: `echo` over HTTP/JSON, `echo-grpc`
/// over the gRPC Processor, and `ordered` (HTTP, one at a time per payload `account`), all
/// to the simulator.
pub fn add_simulator_routes(config: &mut StackConfig, simulator: &appstack_simulator::Simulator) {
    use appstack_config::{ExternalServiceConfig, Protocol, RouteConfig};
    config.external_services.insert(
        "simulator".into(),
        ExternalServiceConfig {
            endpoint: format!("http://{}/process", simulator.http),
            protocol: Protocol::Http,
            ..ExternalServiceConfig::default()
        },
    );
    config.external_services.insert(
        "simulator-grpc".into(),
        ExternalServiceConfig {
            endpoint: format!("http://{}", simulator.grpc),
            protocol: Protocol::Grpc,
            ..ExternalServiceConfig::default()
        },
    );
    let route = |service: &str, ordering_key: Option<&str>| RouteConfig {
        service: service.into(),
        ordering_key: ordering_key.map(Into::into),
        ..RouteConfig::default()
    };
    config
        .routes
        .insert("echo".into(), route("simulator", None));
    config
        .routes
        .insert("echo-grpc".into(), route("simulator-grpc", None));
    config
        .routes
        .insert("ordered".into(), route("simulator", Some("/account")));
}

async fn run_with_postgres(
    config: StackConfig,
    listeners: Listeners,
    data_dir: &Path,
    postgres: &LocalPostgres,
    simulator: &appstack_simulator::Simulator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    ensure_database(postgres, DATABASE).await?;
    let password = admin_password(data_dir)?;
    let banner = Banner {
        grpc: listeners.grpc.local_addr()?,
        admin: listeners.admin.local_addr()?,
        postgres: postgres.url(DATABASE),
        data_dir: data_dir.to_owned(),
        simulator: simulator.http,
        kinds: config.routes.keys().cloned().collect(),
    };
    // The runner migrates first (`migrateOnStart`); the admin is created before serving, so
    // the banner is true when printed.
    let auth = ServiceBuilder::new("auth", move |ctx| async move {
        let auth = auth_service::start(&ctx).await?;
        let outcome = auth.bootstrap_admin(DEV_ADMIN_EMAIL, &password).await?;
        banner.print(&password, outcome);
        Ok(auth_service::parts(&auth, &ctx))
    });
    let services = vec![auth, request_services::main_and_worker_builder()];
    runner::run(config, listeners, services, shutdown).await
}

async fn ensure_database(postgres: &LocalPostgres, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(&postgres.url("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // `name` is our constant, not input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
    }
    conn.close().await?;
    Ok(())
}

/// The admin password, made once per data folder and kept in it (mode 0600).
fn admin_password(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let password = format!("dev-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(&path, &password).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(password)
}

/// What the banner shows besides the admin login.
struct Banner {
    grpc: SocketAddr,
    admin: SocketAddr,
    postgres: String,
    data_dir: PathBuf,
    simulator: SocketAddr,
    kinds: Vec<String>,
}

impl Banner {
    fn print(&self, password: &str, outcome: BootstrapOutcome) {
        let (grpc, admin, db) = (self.grpc, self.admin, &self.postgres);
        let created = if outcome == BootstrapOutcome::Created {
            " (created)"
        } else {
            ""
        };
        let data = self.data_dir.display();
        let lines = [
            String::new(),
            "AppStack dev stack is up. Ctrl-C stops everything.".to_owned(),
            String::new(),
            format!("  console       http://{grpc}/   (sign in as the admin below)"),
            format!("  HTTP/JSON     http://{grpc}/v1/...   (OpenAPI: http://{grpc}/openapi.json)"),
            format!(
                "  gRPC          {grpc}   (auth, main and worker; reflection on; gRPC-Web too)"
            ),
            format!("  admin HTTP    http://{admin}/healthz  /readyz  /metrics"),
            format!("  JWKS          {}", local_jwks_uri(admin)),
            format!("  PostgreSQL    {db}"),
            format!("  data folder   {data}"),
            format!(
                "  simulator     http://{}/_simulator/faults   (request kinds: {})",
                self.simulator,
                self.kinds.join(", ")
            ),
            format!("  admin user    {DEV_ADMIN_EMAIL} / {password}{created}"),
            String::new(),
            "Try it with curl:".to_owned(),
            format!(
                "  curl -s -X POST http://{grpc}/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"{DEV_ADMIN_EMAIL}\",\"password\":\"{password}\"}}'"
            ),
            format!(
                "  curl -s -X POST http://{grpc}/v1/requests -H \"authorization: Bearer $ACCESS_TOKEN\" -H 'content-type: application/json' -d '{{\"kind\":\"echo\",\"payload\":\"{{}}\",\"mode\":\"MODE_SYNC\"}}'"
            ),
            String::new(),
            "Try it with grpcurl:".to_owned(),
            format!("  grpcurl -plaintext {grpc} list"),
            format!(
                "  grpcurl -plaintext -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse battery\"}}' {grpc} appstack.auth.v1.AuthService/SignUp"
            ),
            format!(
                "  grpcurl -plaintext -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse battery\"}}' {grpc} appstack.auth.v1.AuthService/Login"
            ),
            "  export ACCESS_TOKEN=<accessToken from the Login answer>".to_owned(),
            format!(
                "  grpcurl -plaintext -H \"authorization: Bearer $ACCESS_TOKEN\" {grpc} appstack.auth.v1.AuthService/WhoAmI"
            ),
            format!(
                "  grpcurl -plaintext -H \"authorization: Bearer $ACCESS_TOKEN\" -d '{{\"kind\":\"echo\",\"payload\":\"{{\\\"hello\\\":1}}\",\"mode\":\"MODE_SYNC\"}}' {grpc} appstack.main.v1.RequestService/Submit"
            ),
            format!(
                "  grpcurl -plaintext -H \"authorization: Bearer $ACCESS_TOKEN\" -d '{{\"kind\":\"echo\",\"payload\":\"{{\\\"hello\\\":2}}\",\"mode\":\"MODE_ASYNC\",\"idempotencyKey\":\"first\"}}' {grpc} appstack.main.v1.RequestService/Submit"
            ),
            format!(
                "  grpcurl -plaintext -H \"authorization: Bearer $ACCESS_TOKEN\" -d '{{\"id\":\"<id from the Submit answer>\"}}' {grpc} appstack.main.v1.RequestService/Watch"
            ),
            "Queue statistics need the admin: log in as the admin user above, then".to_owned(),
            format!(
                "  grpcurl -plaintext -H \"authorization: Bearer $ADMIN_TOKEN\" {grpc} appstack.worker.v1.WorkerAdmin/QueueStats"
            ),
            String::new(),
        ];
        eprintln!("{}", lines.join("\n"));
    }
}
