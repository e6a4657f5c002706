//! `appstack-operator`: print the CRD, render an AppStack offline.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use appstack_operator::crd::{self, AppStack};
use appstack_operator::render::{self, AutoscalingApi, DisruptionApi, Rollout, ServedApis};
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
        Command::Crd => {
            print!("{}", crd::crd_yaml().context("writing the CRD")?);
        }
        Command::Render {
            file,
            apis,
            running,
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
            let apis = match apis {
                Apis::Current => ServedApis::CURRENT,
                Apis::Legacy => ServedApis {
                    autoscaling: Some(AutoscalingApi::V2beta2),
                    disruption: Some(DisruptionApi::V1beta1),
                },
            };
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
