//! Starts the real auth service (the same code `appstack auth` runs) on loopback ports,
//! against a fresh database, with its own signing-key folder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use appstack_config::StackConfig;
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_server::auth_service;
use appstack_server::runner::{self, Listeners};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::pg;

/// A running auth server.
pub struct AuthServer {
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// The database it uses.
    pub database_url: String,
    /// Its signing-key folder.
    pub keys_dir: PathBuf,
    /// The configuration it runs with.
    pub config: StackConfig,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _keys: tempfile::TempDir,
}

/// argon2 parameters cheap enough for functional tests (the benchmark uses OWASP's).
pub fn cheap_password_config() -> appstack_config::PasswordConfig {
    appstack_config::PasswordConfig {
        memory_kib: 1024,
        iterations: 1,
        parallelism: 1,
        workers: 0,
        queue: 256,
    }
}

impl AuthServer {
    /// Starts on a fresh database with cheap password hashing.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts on a fresh database with cheap password hashing, after `adjust` edits the
    /// configuration (it may restore production hashing).
    pub async fn start_with(adjust: impl FnOnce(&mut StackConfig)) -> anyhow::Result<Self> {
        let (mut config, keys) = Self::test_config().await?;
        adjust(&mut config);
        let grpc = TcpListener::bind(config.server.grpc_addr).await?;
        let admin = TcpListener::bind(config.server.admin_addr).await?;
        Self::start_on(config, keys, grpc, admin).await
    }

    /// As [`Self::start_with`], but the loopback ports are bound first and `adjust` is told
    /// the admin address: for settings that name the server's own URL (`auth.jwksUri`).
    pub async fn start_bound(
        adjust: impl FnOnce(&mut StackConfig, SocketAddr),
    ) -> anyhow::Result<Self> {
        let (mut config, keys) = Self::test_config().await?;
        let grpc = TcpListener::bind(config.server.grpc_addr).await?;
        let admin = TcpListener::bind(config.server.admin_addr).await?;
        adjust(&mut config, admin.local_addr()?);
        Self::start_on(config, keys, grpc, admin).await
    }

    async fn test_config() -> anyhow::Result<(StackConfig, tempfile::TempDir)> {
        let database = pg::test_database().await?;
        let keys = tempfile::tempdir()?;
        let mut config = StackConfig::default();
        config.server.grpc_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.shutdown_delay = Duration::ZERO;
        config.server.shutdown_grace = Duration::from_secs(5);
        config.database.url = database.url.clone();
        config.database.migrate_on_start = true;
        config.auth.keys_dir = keys.path().to_owned();
        config.auth.generate_key_if_missing = true;
        config.auth.password = cheap_password_config();
        Ok((config, keys))
    }

    async fn start_on(
        config: StackConfig,
        keys: tempfile::TempDir,
        grpc: TcpListener,
        admin: TcpListener,
    ) -> anyhow::Result<Self> {
        let grpc_addr = grpc.local_addr()?;
        let admin_addr = admin.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(runner::run(
            config.clone(),
            Listeners { grpc, admin },
            vec![auth_service::builder()],
            shutdown.clone(),
        ));
        let server = Self {
            grpc: grpc_addr,
            admin: admin_addr,
            database_url: config.database.url.clone(),
            keys_dir: keys.path().to_owned(),
            config,
            shutdown,
            task: Some(task),
            _keys: keys,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(task) = &self.task
                && task.is_finished()
            {
                anyhow::bail!("the auth server stopped while starting");
            }
            if let Ok((200, _)) = self.admin_get("/readyz").await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the auth server was not ready within 30s");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A gRPC channel to the server.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Endpoint::from_shared(format!("http://{}", self.grpc))?
            .connect()
            .await
            .context("connecting to the auth server")
    }

    /// An auth client.
    pub async fn client(&self) -> anyhow::Result<AuthServiceClient<Channel>> {
        Ok(AuthServiceClient::new(self.channel().await?))
    }

    /// `GET path` on the admin port: status code and body (a plain HTTP/1.1 exchange).
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.admin, path).await
    }

    /// Stops the server (graceful drain) and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.context("auth server task")?,
            None => Ok(()),
        }
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A minimal HTTP/1.1 GET over loopback, enough for the admin port.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
