//! Real `appstack` processes for the suites that kill them: the binary, a worker's config
//! file, and spawning.

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
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("{} has no target folder", exe.display()))?;
    let binary = dir.join("appstack");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        binary.display()
    );
    Ok(binary)
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
lease = "2s"
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
