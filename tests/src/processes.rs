//! Real `appstack` and `appstack-operator` processes for the suites that kill them: the
//! binaries, a worker's config file, and spawning.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use appstack_simulator::Simulator;
use tokio::process::{Child, Command};

/// The `appstack` binary beside the running test's executable (cargo builds it with the
/// workspace's tests).
///
/// # Errors
///
/// When it has not been built.
pub fn appstack_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("appstack")
}

/// The workspace binary `name` in the running executable's target folder (`target/debug`
/// for a test, `target/release` for the release bench).
///
/// # Errors
///
/// When it has not been built.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no folder", exe.display()))?;
    // A test runs from `<profile>/deps`, a binary from `<profile>`.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| anyhow::anyhow!("{} has no target folder", exe.display()))?;
    }
    let binary = dir.join(name);
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        binary.display()
    );
    Ok(binary)
}

/// Starts `appstack-operator run` over `namespace` with leader election on a Lease there,
/// as `identity`, its admin port on `admin_addr`, talking to the apiserver of `kubeconfig`
/// (killed if dropped; its log goes to this process's standard error).
///
/// # Errors
///
/// When the binary is missing or cannot be started.
pub fn spawn_operator(
    kubeconfig: &Path,
    namespace: &str,
    identity: &str,
    admin_addr: std::net::SocketAddr,
) -> anyhow::Result<Child> {
    Ok(Command::new(workspace_binary("appstack-operator")?)
        .args([
            "run",
            "--namespace",
            namespace,
            "--lease-namespace",
            namespace,
        ])
        .args(["--identity", identity])
        .arg("--admin-addr")
        .arg(admin_addr.to_string())
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// Writes a worker's configuration into `dir`: `database_url`, quick queue timings, the
/// simulator's HTTP form as service `sim` without in-call retries, the routes `echo` and
/// `ordered` (ordering key `/account`), and `concurrency` executions at once.
///
/// # Errors
///
/// When the file cannot be written.
pub fn worker_config(
    dir: &Path,
    database_url: &str,
    simulator: &Simulator,
    concurrency: u32,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("worker.toml");
    let text = format!(
        r#"
[server]
grpcAddr = "127.0.0.1:0"
adminAddr = "127.0.0.1:0"
shutdownDelay = "0s"
shutdownGrace = "5s"

[database]
url = "{database_url}"
maxConnections = 8

[log]
format = "json"
filter = "warn"

[queue]
# Short enough that a killed worker's jobs come back within seconds; long enough that a
# live worker starved of CPU for a moment (2 cores, parallel suites) keeps its leases —
# a lease that expires under a live worker makes a second execution, which the ordering
# suite would rightly report as an overlap.
lease = "5s"
heartbeat = "500ms"
pollInterval = "200ms"
rescuerInterval = "250ms"

[worker]
concurrency = {concurrency}
claimBatch = 16

[externalServices.sim]
endpoint = "http://{http}/process"

[externalServices.sim.resilience.retry]
maxAttempts = 1

[routes.echo]
service = "sim"
maxJobAttempts = 10

[routes.ordered]
service = "sim"
maxJobAttempts = 10
orderingKey = "/account"
"#,
        http = simulator.http
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Starts `appstack worker --config config` (killed if dropped).
///
/// # Errors
///
/// When the binary is missing or cannot be started.
pub fn spawn_worker(config: &Path) -> anyhow::Result<Child> {
    Ok(Command::new(appstack_binary()?)
        .arg("worker")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?)
}

/// What the process suites start from: a fresh migrated database (its URL and queue) and a
/// simulator answering after `base` plus up to `jitter` of latency.
pub struct QueueFixture {
    /// The database's URL, for the workers' configuration.
    pub database_url: String,
    /// The queue over it.
    pub queue: appstack_queue::store::Queue,
    /// The external service.
    pub simulator: Simulator,
}

impl QueueFixture {
    /// Creates the database and starts the simulator.
    ///
    /// # Errors
    ///
    /// When the database or the simulator cannot be started.
    pub async fn start(
        base: std::time::Duration,
        jitter: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let database = crate::pg::test_database().await?;
        let pool = sqlx::PgPool::connect(&database.url).await?;
        appstack_common::db::migrate(&pool).await?;
        let simulator = Simulator::start_on_loopback(appstack_simulator::FaultPlan {
            latency: appstack_simulator::faults::Latency { base, jitter },
            ..appstack_simulator::FaultPlan::default()
        })
        .await?;
        Ok(Self {
            database_url: database.url,
            queue: appstack_queue::store::Queue::new(pool),
            simulator,
        })
    }
}
