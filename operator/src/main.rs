//! `appstack-operator`: print the CRD, render an AppStack offline.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use appstack_operator::crd::{self, AppStack};
use appstack_operator::render::{
    self, AutoscalingApi, DisruptionApi, GrpcRouteApi, Rollout, ServedApis,
};
use clap::{Parser, Subcommand, ValueEnum};

/// The AppStack operator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator: the controller while this replica holds the Lease.
    Run {
        /// Watch only this namespace (a Role instead of a ClusterRole); default: all.
        #[arg(long, env = "APPSTACK_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
        /// The admin port: /healthz, /readyz (leading), /metrics.
        #[arg(long, default_value = "0.0.0.0:8081")]
        admin_addr: std::net::SocketAddr,
        /// The namespace of the leader-election Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// Run without leader election (a single replica).
        #[arg(long)]
        no_leader_election: bool,
        /// This replica's name in the Lease.
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Stacks reconciled at once.
        #[arg(long, env = "APPSTACK_OPERATOR_CONCURRENCY", default_value_t = 8,
              value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
        /// Events for one stack within this many milliseconds make one reconcile.
        #[arg(long, env = "APPSTACK_OPERATOR_DEBOUNCE_MS", default_value_t = 200)]
        debounce_ms: u64,
        /// Seconds between discoveries of what the server serves; on a change (KEDA or the
        /// Gateway API installed) the controller restarts with the new kinds.
        #[arg(long, env = "APPSTACK_OPERATOR_REDISCOVER_SECONDS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..))]
        rediscover_seconds: u64,
    },
    /// Print the AppStack CRD (YAML).
    Crd,
    /// Print the children of an AppStack as YAML, offline: for review and `kubectl diff`.
    Render {
        /// The AppStack manifest (YAML or JSON); `-` reads standard input.
        #[arg(long, short = 'f')]
        file: PathBuf,
        /// The API versions to render for.
        #[arg(long, value_enum, default_value_t = Apis::Current)]
        apis: Apis,
        /// Render as if this version were running and the spec's version not yet migrated
        /// (what an upgrade applies first).
        #[arg(long)]
        running: Option<String>,
        /// Render as for a cluster with KEDA (`keda.sh/v1alpha1`): the worker's queue
        /// scaling becomes a ScaledObject.
        #[arg(long)]
        keda: bool,
        /// Render as for a cluster serving the Gateway API's GRPCRoute (`v1`).
        #[arg(long)]
        gateway_api: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Apis {
    /// `autoscaling/v2`, `policy/v1` (Kubernetes 1.23+).
    Current,
    /// `autoscaling/v2beta2`, `policy/v1beta1` (Kubernetes 1.20).
    Legacy,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run {
            namespace,
            admin_addr,
            lease_namespace,
            no_leader_election,
            identity,
            concurrency,
            debounce_ms,
            rediscover_seconds,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .json()
                .init();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            runtime.block_on(async move {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the Kubernetes API")?;
                let identity =
                    identity.unwrap_or_else(|| format!("appstack-operator-{}", std::process::id()));
                let options = appstack_operator::serve::ServeOptions {
                    namespace,
                    admin_addr,
                    lease_namespace: if no_leader_election {
                        None
                    } else {
                        Some(lease_namespace.unwrap_or_else(|| "default".into()))
                    },
                    identity,
                    tuning: appstack_operator::controller::Tuning {
                        concurrency,
                        debounce: std::time::Duration::from_millis(debounce_ms),
                        rediscover: std::time::Duration::from_secs(rediscover_seconds),
                    },
                };
                appstack_operator::serve::serve(client, options).await
            })?;
        }
        Command::Crd => {
            print!("{}", crd::crd_yaml().context("writing the CRD")?);
        }
        Command::Render {
            file,
            apis,
            running,
            keda,
            gateway_api,
        } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading standard input")?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let mut stack: AppStack =
                serde_norway::from_str(&text).context("parsing the AppStack")?;
            if stack.metadata.namespace.is_none() {
                stack.metadata.namespace = Some("default".into());
            }
            let mut apis = match apis {
                Apis::Current => ServedApis::CURRENT,
                Apis::Legacy => ServedApis {
                    autoscaling: Some(AutoscalingApi::V2beta2),
                    disruption: Some(DisruptionApi::V1beta1),
                    ..ServedApis::CURRENT
                },
            };
            apis.keda = keda;
            if gateway_api {
                apis.grpc_route = Some(GrpcRouteApi::V1);
            }
            let rollout = match running {
                Some(running) => Rollout {
                    running: Some(running),
                    migrated: false,
                },
                None => Rollout {
                    running: Some(stack.spec.version.clone()),
                    migrated: true,
                },
            };
            let desired = render::render(&stack, &apis, &rollout)?;
            print!(
                "{}",
                render::to_yaml(&desired, &apis).context("writing YAML")?
            );
        }
    }
    Ok(())
}
