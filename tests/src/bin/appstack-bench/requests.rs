//! `submit` and `get`: the request API through gRPC (authentication included), against
//! `pgbench` at the same concurrency in the same run, on the same database.
//!
//! - `submit`: ASYNC submits per second vs `pgbench` running the submit's own SQL (the
//!   request row, its event and its job in one statement): `submit_to_pgbench_ratio`
//!   (goal ≥ 0.7).
//! - `get`: Gets of random existing requests per second vs `pgbench -S` (its built-in
//!   select-only transaction): `get_to_pgbench_ratio` (goal ≥ 0.5). Beside it, the same
//!   server's ceiling for a call with no token and no statement (the health check), so the
//!   share of the transport is seen: `noop_grpc_calls_per_sec`.
//!
//! Only auth and main run (no worker competing for the cores); the PostgreSQL is the test
//! support's private one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_proto::main::v1::{GetRequest, Mode, SubmitRequest};
use appstack_server::{auth_service, request_services};
use appstack_tests::stack_server::StackServer;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::measure::Report;

/// Concurrent callers, for both sides.
const CLIENTS: usize = 16;
/// gRPC connections the callers share.
const CHANNELS: usize = 4;

/// The submit statement, as `pgbench` runs it.
const SUBMIT_SQL: &str = "WITH ins AS (
  INSERT INTO requests.requests (id, owner, kind, mode, status, payload, last_sequence, created_at, updated_at)
  VALUES (gen_random_uuid(), 'pgbench', 'echo', 'async', 'queued', '{\"n\": 1}'::jsonb, 1, now(), now())
  RETURNING *
), job AS (
  INSERT INTO requests.jobs (request_id, kind, mode, state, run_at)
  SELECT id, kind, 'async', 'queued', created_at FROM ins
), event AS (
  INSERT INTO requests.events (request_id, sequence, to_status, at) SELECT id, 1, 'queued', created_at FROM ins
)
SELECT id, owner, kind, mode, status, payload::text, created_at FROM ins;
";

pub(crate) fn run(seconds: Duration, get: bool) -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure(seconds, get))
}

async fn measure(seconds: Duration, get: bool) -> anyhow::Result<()> {
    let report = Report::new(if get { "get" } else { "submit" });
    let services = vec![auth_service::builder(), request_services::main_builder()];
    let stack = StackServer::start_services(
        |config| {
            config.log.filter = "warn".into();
            config.database.max_connections = 32;
        },
        services,
    )
    .await?;
    let token = stack.user_token("bench@example.com").await?;
    let mut clients = Vec::new();
    for _ in 0..CHANNELS {
        clients.push(stack.requests(&token).await?);
    }
    let url = stack.config.database.url.clone();
    if get {
        // Requests to read: submitted through the API.
        let mut ids = Vec::new();
        for n in 0..2_000 {
            let answer = clients[0].submit(async_submit(n)).await?.into_inner();
            ids.push(answer.request.context("no request")?.id);
        }
        let ids = Arc::new(ids);
        let grpc = phase(&clients, seconds, move |mut client, n| {
            let ids = Arc::clone(&ids);
            async move {
                let id = ids[n % ids.len()].clone();
                client.get(GetRequest { id }).await.map(drop)
            }
        })
        .await?;
        // The ceiling of the transport here: the same server, channels and callers, for a
        // call with neither a token nor a statement (the health check).
        let mut health = Vec::new();
        for _ in 0..CHANNELS {
            health.push(HealthClient::new(stack.channel().await?));
        }
        let noop = phase(&health, seconds, |mut client, _| async move {
            client
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(drop)
        })
        .await?;
        pgbench_init(&url).await?;
        let baseline = pgbench(&url, seconds, &["-S"], None).await?;
        report.real("noop_grpc_calls_per_sec", noop, 0, "calls/s")?;
        report.real("get_to_noop_grpc_ratio", grpc / noop, 3, "ratio")?;
        report.real("noop_grpc_to_pgbench_ratio", noop / baseline, 3, "ratio")?;
        report.real("gets_per_sec", grpc, 0, "calls/s")?;
        report.real("pgbench_select_tps", baseline, 0, "tx/s")?;
        report.real("get_to_pgbench_ratio", grpc / baseline, 3, "ratio")?;
    } else {
        let grpc = phase(&clients, seconds, |mut client, n| async move {
            client.submit(async_submit(n)).await.map(drop)
        })
        .await?;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("submit.sql");
        std::fs::write(&script, SUBMIT_SQL)?;
        let baseline = pgbench(&url, seconds, &[], Some(&script)).await?;
        report.real("submits_per_sec", grpc, 0, "calls/s")?;
        report.real("pgbench_submit_tps", baseline, 0, "tx/s")?;
        report.real("submit_to_pgbench_ratio", grpc / baseline, 3, "ratio")?;
    }
    report.count("clients", CLIENTS as u64, "connections")?;
    stack.stop().await?;
    Ok(())
}

fn async_submit(n: usize) -> SubmitRequest {
    SubmitRequest {
        kind: "echo".into(),
        payload: format!(r#"{{"n":{n}}}"#),
        idempotency_key: String::new(),
        mode: Mode::Async as i32,
        deadline: None,
    }
}

/// Runs `call` from [`CLIENTS`] callers for `seconds`; calls per second (any error ends
/// the run: a benchmark of failures measures nothing).
async fn phase<C, F, Fut>(clients: &[C], seconds: Duration, call: F) -> anyhow::Result<f64>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for lane in 0..CLIENTS {
        let client = clients[lane % clients.len()].clone();
        let (done, stop, call) = (Arc::clone(&done), Arc::clone(&stop), call.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = lane * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                call(client.clone(), n).await?;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    tokio::time::sleep(seconds).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for task in tasks {
        task.await?
            .map_err(|status| anyhow::anyhow!("a call failed: {status}"))?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}

/// The `pgbench` of the machine's PostgreSQL.
fn pgbench_binary() -> anyhow::Result<std::path::PathBuf> {
    let mut candidates: Vec<_> = glob_postgres_bins()
        .into_iter()
        .map(|dir| dir.join("pgbench"))
        .filter(|p| p.exists())
        .collect();
    candidates.sort();
    candidates
        .pop()
        .context("pgbench not found under /usr/lib/postgresql/*/bin")
}

fn glob_postgres_bins() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default()
}

async fn pgbench_init(url: &str) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(pgbench_binary()?)
        .args(["-i", "-s", "10", "-q", url])
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Runs `pgbench` at [`CLIENTS`] for `seconds` with `args` (and a script); its tps.
async fn pgbench(
    url: &str,
    seconds: Duration,
    args: &[&str],
    script: Option<&Path>,
) -> anyhow::Result<f64> {
    let mut command = tokio::process::Command::new(pgbench_binary()?);
    command
        .arg("-n")
        .args(["-c", &CLIENTS.to_string(), "-j", "2", "-M", "prepared"])
        .args(["-T", &seconds.as_secs().max(1).to_string()])
        .args(args);
    if let Some(script) = script {
        command.arg("-f").arg(script);
    }
    let output = command.arg(url).output().await?;
    let text = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        text,
        String::from_utf8_lossy(&output.stderr)
    );
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .with_context(|| format!("no tps in pgbench's output: {text}"))
}
