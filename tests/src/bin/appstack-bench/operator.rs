//! `operator`: the AppStack operator on the test control plane (etcd, kube-apiserver,
//! kube-controller-manager from `KUBEBUILDER_ASSETS`) and its pure render.
//!
//! - `render_per_sec`: renders of the quickstart example (pure, one thread);
//! - `create_to_applied_p50_ms` / `_max_ms`: 20 AppStacks created one after another, each
//!   timed from its create to its last first-pass child (the migration Job) existing;
//! - `steady_state_writes_per_resync`: API writes (applies, deletes, statuses) while every
//!   one of those stacks, migrated (its Job finished by writing its status: no kubelet) and
//!   settled with all its children, is reconciled again with nothing changed (goal 0);
//! - `converge_100_s`: 100 AppStacks created at once until each reports its version deployed,
//!   under a real operator process;
//! - `rss_mib_100_stacks`: that process's resident memory with the 100 stacks (goal ≤ 50),
//!   beside `rss_mib_idle`, the same process leading with no stack yet.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_operator::crd::AppStack;
use appstack_operator::metrics::Metrics;
use appstack_operator::render::{self, Rollout, ServedApis};
use appstack_tests::auth_server::http_get;
use appstack_tests::control_plane::ControlPlane;
use appstack_tests::{operator_fixture, processes};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

use crate::measure::Report;

/// AppStacks created one by one, for the latency and the steady state.
const STACKS: usize = 20;
/// AppStacks created at once, for convergence and memory.
const MANY: usize = 100;

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure(seconds))
}

async fn measure(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("operator");
    let stack = operator_fixture::quickstart("default")?;
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
    operator_fixture::install_crd(&client).await?;
    let namespace = plane.namespace("bench").await?;
    operator_fixture::create_database_secret(&client, &namespace).await?;
    let metrics = Metrics::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(appstack_operator::controller::run(
        client.clone(),
        Some(namespace.clone()),
        Default::default(),
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));

    let stacks: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let mut latencies = Vec::new();
    for n in 0..STACKS {
        let mut stack = operator_fixture::quickstart(&namespace)?;
        let name = format!("shop{n}");
        stack.metadata.name = Some(name.clone());
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
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &namespace);
    for n in 0..STACKS {
        let job = render::migration_job_name(&format!("shop{n}"), &stack.spec.version);
        operator_fixture::finish_job(&client, &namespace, &job, true).await?;
    }
    for n in 0..STACKS {
        let name = render::component_name(&format!("shop{n}"), render::Component::Worker);
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
    operator_fixture::settled(&metrics, Duration::from_secs(3)).await;
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
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;

    plane.delete_namespace(&namespace).await?;

    converge_many(&plane, &client).await
}

/// `converge_100_s` and `rss_mib_100_stacks`: a real `appstack-operator run` process (the
/// binary beside this one) over a fresh namespace; [`MANY`] stacks created at once, each
/// migration finished as soon as its Job appears; converged when every stack reports its
/// version deployed for its current generation. Its resident memory is then read from
/// `/proc` once the stacks have settled.
async fn converge_many(plane: &ControlPlane, client: &kube::Client) -> anyhow::Result<()> {
    let report = Report::new("operator");
    // The namespaces of earlier runs go with all their children: measured while the
    // namespace controller deletes thousands of objects, the figure would be theirs.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let waited = Instant::now();
    loop {
        let terminating = namespaces
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating"))
            .count();
        if terminating == 0 || waited.elapsed() > Duration::from_secs(180) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let namespace = plane.namespace("bench-many").await?;
    operator_fixture::create_database_secret(client, &namespace).await?;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut operator = processes::spawn_operator(&plane.kubeconfig, &namespace, "bench", admin)?;
    let waited = Instant::now();
    while !matches!(http_get(admin, "/readyz").await, Ok((200, body)) if body == "leading") {
        anyhow::ensure!(
            waited.elapsed() < Duration::from_secs(60),
            "the operator never led"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = operator.id().context("the operator exited")?;
    report.real(
        "rss_mib_idle",
        rss_mib(pid).context("reading the operator's memory")?,
        1,
        "MiB",
    )?;

    let stacks: Api<AppStack> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let started = Instant::now();
    for n in 0..MANY {
        let mut stack = operator_fixture::quickstart(&namespace)?;
        stack.metadata.name = Some(format!("stack{n}"));
        stacks.create(&PostParams::default(), &stack).await?;
    }
    let mut finished = std::collections::BTreeSet::new();
    loop {
        for job in jobs.list(&ListParams::default()).await? {
            let name = job.metadata.name.unwrap_or_default();
            if finished.insert(name.clone()) {
                operator_fixture::finish_job(client, &namespace, &name, true).await?;
            }
        }
        let converged = stacks
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|status| {
                    status.version.as_deref() == Some(s.spec.version.as_str())
                        && status.observed_generation == s.metadata.generation
                })
            })
            .count();
        if converged == MANY {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {converged} of {MANY} stacks converged in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.real("converge_100_s", started.elapsed().as_secs_f64(), 2, "s")?;
    // What the convergence cost: reconciles and API writes per stack, from its metrics.
    let (_, metrics) = http_get(admin, "/metrics").await?;
    let sum_of = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    for (name, figure) in [
        (
            "appstack_operator_reconciles_total",
            "converge_reconciles_per_stack",
        ),
        (
            "appstack_operator_api_writes_total",
            "converge_writes_per_stack",
        ),
    ] {
        report.real(figure, sum_of(name) / MANY as f64, 1, "per stack")?;
    }
    report.real(
        "converge_reconcile_mean_ms",
        1000.0 * sum_of("appstack_operator_reconcile_duration_seconds_sum")
            / sum_of("appstack_operator_reconcile_duration_seconds_count"),
        1,
        "ms",
    )?;
    // Settle: the Deployments' status updates, and the reconciles they bring, go on after
    // convergence. (The children are watched for metadata only; the operator caches the
    // AppStacks alone.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    report.real(
        "rss_mib_100_stacks",
        rss_mib(pid).context("reading the operator's memory")?,
        1,
        "MiB",
    )?;
    operator.start_kill()?;
    let _ = operator.wait().await;
    plane.delete_namespace(&namespace).await
}

/// The resident set of process `pid`, from `/proc/<pid>/status`.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
