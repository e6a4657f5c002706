//! `appstack`: the AppStack server binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use appstack_common::config::ConfigLoader;
use appstack_common::{shutdown, telemetry};
use appstack_config::{LogConfig, LogFormat, StackConfig};
use appstack_server::dev::{self, DevOptions};
use appstack_server::runner::{self, Listeners, ServiceBuilder};
use appstack_server::{auth_service, request_services};
use clap::{Args, Parser, Subcommand};

/// AppStack: a production backend on Kubernetes from one custom resource.
#[derive(Debug, Parser)]
#[command(name = "appstack", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the auth service (users, tokens, JWKS).
    Auth(ServeArgs),
    /// Run the request API (appstack.main.v1.RequestService).
    Main(ServeArgs),
    /// Run the worker: executes queued requests; serves appstack.worker.v1.WorkerAdmin.
    Worker(ServeArgs),
    /// Run auth, main and worker in one process (one gRPC port, one pool): small installs.
    All(ServeArgs),
    /// Apply database migrations, once per version, and exit.
    Migrate(ServeArgs),
    /// Run the whole stack on this machine with a private PostgreSQL.
    Dev(DevArgs),
    /// Run the external-service simulator (HTTP/JSON and gRPC Processor) with fault
    /// injection, for tests, benchmarks and trying the stack out.
    Simulator(SimulatorArgs),
    /// Write a new Ed25519 signing key `<kid>.pem` into a keys folder (key rotation).
    Keygen {
        /// The keys folder (the auth.keysDir of the services).
        #[arg(long)]
        keys_dir: PathBuf,
        /// Key id; default: `k` + the current UTC time, which sorts after older keys.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Print the OpenAPI 3 document of the HTTP/JSON API (what `proto/openapi.json` holds).
    Openapi,
    /// Create the first admin, or give an existing user the admin role. The password is
    /// read from APPSTACK_ADMIN_PASSWORD, else from the first line of standard input.
    BootstrapAdmin {
        /// The admin's email.
        #[arg(long)]
        email: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// Configuration sources, lowest priority first: file, `APPSTACK_*` environment, these flags.
#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "APPSTACK_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: CommonFlags,
    /// PostgreSQL URL (database.url); also DATABASE_URL.
    #[arg(long)]
    database_url: Option<String>,
}

/// The flags every serving role takes, `dev` included.
#[derive(Debug, Args)]
struct CommonFlags {
    /// gRPC listen address (server.grpcAddr).
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// Admin HTTP listen address (server.adminAddr).
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    /// Log format: json or pretty (log.format).
    #[arg(long, value_parser = ["json", "pretty"])]
    log_format: Option<String>,
}

/// Options of `appstack simulator`.
#[derive(Debug, Args)]
struct SimulatorArgs {
    /// HTTP/JSON listen address (`POST` any path; `/_simulator/calls`, `/_simulator/faults`).
    #[arg(long, default_value = "127.0.0.1:7070")]
    http_addr: SocketAddr,
    /// gRPC `appstack.external.v1.Processor` listen address.
    #[arg(long, default_value = "127.0.0.1:7071")]
    grpc_addr: SocketAddr,
    /// The fault plan to start with, as JSON (e.g. `{"errorRate": 0.1}`); default: none.
    #[arg(long, default_value = "{}")]
    faults: String,
    /// Log format: json or pretty.
    #[arg(long, default_value = "pretty", value_parser = ["json", "pretty"])]
    log_format: String,
}

/// `dev`'s sources, lowest first: its own defaults, file, `APPSTACK_*` environment (not
/// `DATABASE_URL`), these flags. See `appstack_server::dev` for what `dev` owns.
#[derive(Debug, Args)]
struct DevArgs {
    /// Where the private PostgreSQL, keys and admin password live; kept between runs.
    #[arg(long, default_value = ".appstack-dev")]
    data_dir: PathBuf,
    /// TOML configuration file, as for every role (database.url is refused).
    #[arg(long, short = 'c', env = "APPSTACK_CONFIG")]
    config: Option<PathBuf>,
    /// Listen addresses (default 127.0.0.1:50051 and 127.0.0.1:9090) and log format (pretty).
    #[command(flatten)]
    flags: CommonFlags,
}

impl CommonFlags {
    fn apply(&self, mut loader: ConfigLoader) -> ConfigLoader {
        if let Some(addr) = self.grpc_addr {
            loader = loader.set("server.grpcAddr", addr);
        }
        if let Some(addr) = self.admin_addr {
            loader = loader.set("server.adminAddr", addr);
        }
        if let Some(format) = &self.log_format {
            loader = loader.set("log.format", format);
        }
        loader
    }
}

impl ServeArgs {
    fn load(&self) -> anyhow::Result<StackConfig> {
        let mut loader = ConfigLoader::new::<StackConfig>();
        if let Some(path) = &self.config {
            loader = loader.file(path);
        }
        loader = self.flags.apply(loader.env());
        if let Some(url) = &self.database_url {
            loader = loader.set("database.url", url);
        }
        Ok(loader.load()?)
    }
}

impl DevArgs {
    /// The absolute data folder and the layered configuration.
    fn load(&self) -> anyhow::Result<(PathBuf, StackConfig)> {
        let data_dir = std::path::absolute(&self.data_dir)
            .with_context(|| format!("resolving {}", self.data_dir.display()))?;
        let mut loader = ConfigLoader::with_defaults(&dev::default_config(&data_dir));
        if let Some(path) = &self.config {
            loader = loader.file(path);
        }
        let config = self.flags.apply(loader.prefixed_env()).load()?;
        Ok((data_dir, config))
    }
}

/// Runs `services` with the configuration of `args` until SIGTERM or Ctrl-C.
/// Traces name the process `service_name` unless `OTEL_SERVICE_NAME` says otherwise.
async fn serve(
    args: &ServeArgs,
    service_name: &str,
    services: Vec<ServiceBuilder>,
) -> anyhow::Result<()> {
    let config = args.load()?;
    let telemetry = telemetry::init(&config.log, service_name)?;
    let listeners = Listeners::bind(&config).await?;
    let served = runner::run(config, listeners, services, shutdown::on_signal()).await;
    telemetry.shutdown().await;
    served
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        // A role is the list of services it runs in one process.
        Command::Auth(args) => serve(&args, "appstack-auth", vec![auth_service::builder()]).await,
        Command::Main(args) => {
            serve(
                &args,
                "appstack-main",
                vec![request_services::main_builder()],
            )
            .await
        }
        Command::Worker(args) => {
            serve(
                &args,
                "appstack-worker",
                vec![request_services::worker_builder()],
            )
            .await
        }
        Command::All(args) => {
            let services = vec![
                auth_service::builder(),
                request_services::main_and_worker_builder(),
            ];
            serve(&args, "appstack", services).await
        }
        Command::Migrate(args) => {
            let config = args.load()?;
            telemetry::init_logging(&config.log)?;
            appstack_server::migrate::run(&config.database)
                .await
                .map(|_| ())
        }
        Command::Dev(args) => {
            let (data_dir, config) = args.load()?;
            let telemetry = telemetry::init(&config.log, "appstack")?;
            let ran = dev::run(DevOptions { data_dir, config }, shutdown::on_signal()).await;
            telemetry.shutdown().await;
            ran
        }
        Command::Simulator(args) => {
            let log = LogConfig {
                format: if args.log_format == "json" {
                    LogFormat::Json
                } else {
                    LogFormat::Pretty
                },
                ..LogConfig::default()
            };
            telemetry::init_logging(&log)?;
            let plan: appstack_simulator::FaultPlan =
                serde_json::from_str(&args.faults).context("--faults is not a fault plan")?;
            let http = tokio::net::TcpListener::bind(args.http_addr)
                .await
                .with_context(|| format!("binding {}", args.http_addr))?;
            let grpc = tokio::net::TcpListener::bind(args.grpc_addr)
                .await
                .with_context(|| format!("binding {}", args.grpc_addr))?;
            let simulator = appstack_simulator::Simulator::start(http, grpc, plan).await?;
            eprintln!(
                "appstack simulator: HTTP on {}, gRPC on {}; change faults with\n  curl -X PUT -d '{{\"errorRate\": 0.2}}' http://{}/_simulator/faults",
                simulator.http, simulator.grpc, simulator.http
            );
            shutdown::on_signal().cancelled().await;
            simulator.stop(std::time::Duration::from_secs(5)).await;
            Ok(())
        }
        Command::Openapi => {
            let document = appstack_server::front_door::published_document()?;
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(())
        }
        Command::Keygen { keys_dir, kid } => {
            let kid = kid.unwrap_or_else(appstack_auth::signing::new_kid);
            let path = appstack_auth::signing::generate_key_file(&keys_dir, &kid)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::BootstrapAdmin { email, serve } => {
            let config = serve.load()?;
            telemetry::init_logging(&config.log)?;
            let password = match std::env::var("APPSTACK_ADMIN_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let pool = runner::prepare_database(&config, "appstack-bootstrap").await?;
            let metrics = appstack_common::metrics::MetricsRegistry::default();
            let auth = appstack_auth::Auth::new(config.auth.clone(), pool, &metrics).await?;
            let outcome = auth.bootstrap_admin(&email, &password).await?;
            println!("{email}: {outcome:?}");
            Ok(())
        }
    }
}
