//! `appstack dev`: the whole stack on this machine. Starts a private PostgreSQL from the
//! server binaries found here, migrates it, generates a signing key, creates an admin, runs
//! every service, prints how to call them, and stops everything on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use appstack_auth::{Auth, BootstrapOutcome};
use appstack_common::metrics::MetricsRegistry;
use appstack_localpg::{LocalPostgres, Options};
use sqlx::Connection as _;
use tokio_util::sync::CancellationToken;

use crate::StackConfig;
use crate::auth_role::{self, Listeners};

/// The development stack's settings (from `appstack dev` flags).
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Where PostgreSQL's data, the signing keys and the admin password live.
    pub data_dir: PathBuf,
    /// gRPC address.
    pub grpc_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
}

/// The development admin account.
pub const DEV_ADMIN_EMAIL: &str = "admin@appstack.dev";

/// Runs the development stack until `shutdown`.
pub async fn run(options: DevOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.data_dir)
        .with_context(|| format!("creating {}", options.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&options.data_dir)?;
    eprintln!(
        "appstack dev: starting PostgreSQL in {}",
        data_dir.join("postgres").display()
    );
    let postgres = LocalPostgres::start(Options::new(data_dir.join("postgres")))
        .await
        .context("starting the private PostgreSQL")?;
    let result = run_with_postgres(&options, &data_dir, &postgres, shutdown).await;
    eprintln!("appstack dev: stopping PostgreSQL");
    let stopped = postgres.stop().await;
    result?;
    stopped.context("stopping PostgreSQL")?;
    Ok(())
}

async fn run_with_postgres(
    options: &DevOptions,
    data_dir: &Path,
    postgres: &LocalPostgres,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    ensure_database(postgres, "appstack").await?;
    let mut config = StackConfig::default();
    config.server.grpc_addr = options.grpc_addr;
    config.server.admin_addr = options.admin_addr;
    config.server.shutdown_delay = std::time::Duration::ZERO;
    config.server.shutdown_grace = std::time::Duration::from_secs(5);
    config.database.url = postgres.url("appstack");
    config.database.migrate_on_start = true;
    config.log.format = appstack_common::config::LogFormat::Pretty;
    config.auth.keys_dir = data_dir.join("auth-keys");
    config.auth.generate_key_if_missing = true;

    // Migrate and create the admin before serving, so the banner is true when printed.
    let pool = auth_role::prepare_database(&config, "appstack-dev").await?;
    let auth = Auth::new(
        config.auth.clone(),
        pool.clone(),
        &MetricsRegistry::default(),
    )
    .await?;
    let password = admin_password(data_dir)?;
    let outcome = auth.bootstrap_admin(DEV_ADMIN_EMAIL, &password).await?;
    drop(auth);
    pool.close().await;

    let listeners = Listeners::bind(&config).await?;
    let grpc = listeners.grpc.local_addr()?;
    let admin = listeners.admin.local_addr()?;
    print_banner(grpc, admin, &password, outcome, postgres, data_dir);
    auth_role::run(config, listeners, shutdown).await
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

fn print_banner(
    grpc: SocketAddr,
    admin: SocketAddr,
    password: &str,
    outcome: BootstrapOutcome,
    postgres: &LocalPostgres,
    data_dir: &Path,
) {
    let created = if outcome == BootstrapOutcome::Created {
        " (created)"
    } else {
        ""
    };
    let db = postgres.url("appstack");
    let data = data_dir.display();
    let lines = [
        String::new(),
        "AppStack dev stack is up. Ctrl-C stops everything.".to_owned(),
        String::new(),
        format!("  auth gRPC     {grpc}   (appstack.auth.v1.AuthService; reflection on)"),
        format!("  admin HTTP    http://{admin}/healthz  /readyz  /metrics"),
        format!("  PostgreSQL    {db}"),
        format!("  data folder   {data}"),
        format!("  admin user    {DEV_ADMIN_EMAIL} / {password}{created}"),
        String::new(),
        "Try it with grpcurl:".to_owned(),
        format!("  grpcurl -plaintext {grpc} list"),
        format!(
            "  grpcurl -plaintext -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse battery\"}}' {grpc} appstack.auth.v1.AuthService/SignUp"
        ),
        format!(
            "  grpcurl -plaintext -d '{{\"email\":\"me@example.com\",\"password\":\"correct horse battery\"}}' {grpc} appstack.auth.v1.AuthService/Login"
        ),
        format!(
            "  grpcurl -plaintext -H \"authorization: Bearer $ACCESS_TOKEN\" {grpc} appstack.auth.v1.AuthService/WhoAmI"
        ),
        String::new(),
    ];
    eprintln!("{}", lines.join("\n"));
}
