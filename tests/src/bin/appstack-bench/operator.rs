//! `operator`: the AppStack operator on the test control plane (etcd, kube-apiserver,
//! kube-controller-manager from `KUBEBUILDER_ASSETS`) and its pure render.
//!
//! - `render_per_sec`: renders of the quickstart example (pure, one thread);
//! - `create_to_applied_p50_ms` / `_max_ms`: 20 AppStacks created one after another, each
//!   timed from its create to its last first-pass child (the migration Job) existing;
//! - `steady_state_writes_per_resync`: API writes (applies, deletes, statuses) while every
//!   one of those stacks, migrated (its Job finished by writing its status: no kubelet) and
//!   settled with all its children, is reconciled again with nothing changed (goal 0);
//! - `operator_rss_mib`: this process's resident memory afterwards — the controller, its
//!   watch caches of 20 stacks and their children, and the bench itself (an upper bound).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_operator::crd::{self, AppStack};
use appstack_operator::metrics::Metrics;
use appstack_operator::render::{self, Rollout, ServedApis};
use appstack_tests::control_plane::ControlPlane;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::measure::Report;

/// AppStacks created.
const STACKS: usize = 20;

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;
    runtime.block_on(measure(seconds))
}

fn example() -> anyhow::Result<AppStack> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/quickstart.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_norway::from_str(&text)?)
}

async fn measure(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("operator");
    let stack = example()?;
    let rollout = Rollout {
        running: Some(stack.spec.version.clone()),
        migrated: true,
    };
    let (started, mut renders) = (Instant::now(), 0u64);
    while started.elapsed() < seconds.min(Duration::from_secs(3)) {
        std::hint::black_box(render::render(
            std::hint::black_box(&stack),
            &ServedApis::CURRENT,
            &rollout,
        )?);
        renders += 1;
    }
    report.real(
        "render_per_sec",
        renders as f64 / started.elapsed().as_secs_f64(),
        0,
        "renders/s",
    )?;

    let plane = ControlPlane::shared().await?;
    let client = plane.client()?;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    if crds.get_opt("appstacks.appstack.dev").await?.is_none() {
        crds.create(&PostParams::default(), &crd::crd()).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let namespace = plane.namespace("bench").await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("shop-db-app".into()),
                    ..Default::default()
                },
                string_data: Some([("uri".to_owned(), "postgres://app@db/app".to_owned())].into()),
                ..Secret::default()
            },
        )
        .await?;
    let metrics = Metrics::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(appstack_operator::controller::run(
        client.clone(),
        Some(namespace.clone()),
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let stacks: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let mut latencies = Vec::new();
    for n in 0..STACKS {
        let mut stack = example()?;
        let name = format!("shop{n}");
        stack.metadata.name = Some(name.clone());
        stack.metadata.namespace = Some(namespace.clone());
        stack.spec.database.secret_name = "shop-db-app".into();
        let created = Instant::now();
        stacks.create(&PostParams::default(), &stack).await?;
        let job = render::migration_job_name(&name, &stack.spec.version);
        while jobs.get_opt(&job).await?.is_none() {
            anyhow::ensure!(
                created.elapsed() < Duration::from_secs(60),
                "{name} never got its Job"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(created.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    report.real(
        "create_to_applied_p50_ms",
        latencies[latencies.len() / 2],
        1,
        "ms",
    )?;
    report.real(
        "create_to_applied_max_ms",
        latencies[latencies.len() - 1],
        1,
        "ms",
    )?;

    // Finish every migration as the Job controller would once a kubelet ran it (no kubelet
    // here), so the Deployments, HPAs and PDBs exist too before the steady state is measured.
    let now = "2026-12-01T00:00:00Z";
    let done = serde_json::json!({"status": {"succeeded": 1, "startTime": now, "completionTime": now,
        "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}]}});
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &namespace);
    for n in 0..STACKS {
        let job = render::migration_job_name(&format!("shop{n}"), &stack.spec.version);
        jobs.patch_status(&job, &PatchParams::default(), &Patch::Merge(&done))
            .await?;
    }
    for n in 0..STACKS {
        let name = format!("shop{n}-worker");
        let waited = Instant::now();
        while deployments.get_opt(&name).await?.is_none() {
            anyhow::ensure!(
                waited.elapsed() < Duration::from_secs(60),
                "{name} never appeared"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Let every stack settle (status written, nothing in motion), then reconcile each again.
    let mut last = (metrics.writes(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if metrics.writes() != last.0 {
            last = (metrics.writes(), Instant::now());
        }
    }
    let (writes_before, reconciles_before, failures_before) =
        (metrics.writes(), metrics.reconciles(), metrics.failures());
    for n in 0..STACKS {
        // A label change is an event (a reconcile) but not a spec change.
        let touch = serde_json::json!({"metadata": {"labels": {"bench.appstack.dev/resync": "1"}}});
        stacks
            .patch(
                &format!("shop{n}"),
                &PatchParams::default(),
                &Patch::Merge(&touch),
            )
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.reconciles() < reconciles_before + STACKS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resynced = metrics.reconciles() - reconciles_before;
    let writes = metrics.writes() - writes_before;
    report.count("resync_reconciles", resynced, "reconciles")?;
    let failed = metrics.failures() - failures_before;
    anyhow::ensure!(
        failed == 0,
        "{failed} reconciles failed during the resync: the writes figure would mean nothing"
    );
    report.real(
        "steady_state_writes_per_resync",
        writes as f64 / resynced.max(1) as f64,
        3,
        "writes",
    )?;
    report.real("operator_rss_mib", rss_mib().unwrap_or(0.0), 1, "MiB")?;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
    Ok(())
}

/// This process's resident set, from `/proc/self/status`.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
