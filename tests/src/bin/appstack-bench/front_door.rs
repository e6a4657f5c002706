//! `front-door`: one Get through the HTTP/JSON front door against the same Get over gRPC, in
//! the same run, on the same server: calls per second and latency percentiles of each, their
//! ratio, and the JSON path's added cost per call at p50. The JSON phase runs between two
//! gRPC phases and is compared with their mean, so drift over the run cancels.
//!
//! Both sides: 16 callers, each on its own connection (gRPC: HTTP/2; JSON: HTTP/1.1
//! keep-alive), a bearer token on every call, Gets of 500 existing requests. The same
//! connection layout on both sides, so the difference is the door's work: routing, the
//! JSON↔protobuf transcoding, the in-process gRPC call and HTTP/1.1 framing. Only auth and
//! main run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use appstack_proto::main::v1::{GetRequest, Mode, SubmitRequest};
use appstack_server::{auth_service, request_services};
use appstack_tests::http_json::HttpJson;
use appstack_tests::stack_server::{Requests, StackServer};
use http::StatusCode;

use crate::measure::{Latencies, Report};

const CLIENTS: usize = 16;
const CHANNELS: usize = CLIENTS;
const REQUESTS: usize = 500;

pub(crate) fn run(seconds: Duration) -> anyhow::Result<()> {
    crate::measure::runtime()?.block_on(measure(seconds))
}

/// One phase's outcome.
struct Phase {
    per_sec: f64,
    latencies: Latencies,
}

async fn measure(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("front-door");
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
    let mut grpc = Vec::new();
    for _ in 0..CHANNELS {
        grpc.push(stack.requests(&token).await?);
    }
    let mut ids = Vec::new();
    for n in 0..REQUESTS {
        let answer = grpc[0]
            .clone()
            .submit(SubmitRequest {
                kind: "echo".into(),
                payload: format!("{{\"n\":{n}}}"),
                idempotency_key: String::new(),
                mode: Mode::Async as i32,
                deadline: None,
            })
            .await?
            .into_inner();
        ids.push(answer.request.context("no request")?.id);
    }
    let ids = Arc::new(ids);
    let http = HttpJson::new(stack.grpc);
    let token = Arc::new(token);

    eprintln!("front-door: gRPC, JSON, gRPC phases of {seconds:?} each");
    let before = grpc_phase(&grpc, &ids, seconds).await?;
    let json = json_phase(&http, &token, &ids, seconds).await?;
    let after = grpc_phase(&grpc, &ids, seconds).await?;

    let grpc_rate = (before.per_sec + after.per_sec) / 2.0;
    let mut grpc_latencies = Latencies::new()?;
    grpc_latencies.merge(&before.latencies)?;
    grpc_latencies.merge(&after.latencies)?;
    report.real("grpc_get_per_sec", grpc_rate, 0, "calls/s")?;
    report.real("json_get_per_sec", json.per_sec, 0, "calls/s")?;
    report.real("json_to_grpc_ratio", json.per_sec / grpc_rate, 3, "ratio")?;
    for (name, latencies) in [("grpc", &grpc_latencies), ("json", &json.latencies)] {
        report.real(
            &format!("{name}_get_p50_ms"),
            latencies.quantile_ms(0.5),
            3,
            "ms",
        )?;
        report.real(
            &format!("{name}_get_p99_ms"),
            latencies.quantile_ms(0.99),
            3,
            "ms",
        )?;
    }
    let added = json.latencies.quantile_ns(0.5) as f64 - grpc_latencies.quantile_ns(0.5) as f64;
    report.real("json_added_p50_us", added / 1_000.0, 1, "us")?;
    let bundle: usize = appstack_console::bundle()
        .iter()
        .map(|(_, size)| size)
        .sum();
    report.count("console_bundle_bytes", bundle as u64, "bytes")?;
    stack.stop().await?;
    Ok(())
}

async fn grpc_phase(
    clients: &[Requests],
    ids: &Arc<Vec<String>>,
    seconds: Duration,
) -> anyhow::Result<Phase> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for lane in 0..CLIENTS {
        let mut client = clients[lane % clients.len()].clone();
        let ids = Arc::clone(ids);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::new()?;
            let mut n = lane;
            while started.elapsed() < seconds {
                let id = ids[n % ids.len()].clone();
                let call = Instant::now();
                client.get(GetRequest { id }).await?;
                latencies.record(call.elapsed());
                n += CLIENTS;
            }
            anyhow::Ok(latencies)
        }));
    }
    collect(tasks, started).await
}

async fn json_phase(
    http: &HttpJson,
    token: &Arc<String>,
    ids: &Arc<Vec<String>>,
    seconds: Duration,
) -> anyhow::Result<Phase> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for lane in 0..CLIENTS {
        let http = http.clone();
        let (ids, token) = (Arc::clone(ids), Arc::clone(token));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::new()?;
            let mut n = lane;
            while started.elapsed() < seconds {
                let path = format!("/v1/requests/{}", ids[n % ids.len()]);
                let call = Instant::now();
                let answer = http.get(&path, Some(&token)).await?;
                anyhow::ensure!(
                    answer.status == StatusCode::OK,
                    "GET {path}: {}",
                    answer.status
                );
                latencies.record(call.elapsed());
                n += CLIENTS;
            }
            anyhow::Ok(latencies)
        }));
    }
    collect(tasks, started).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Latencies>>>,
    started: Instant,
) -> anyhow::Result<Phase> {
    let mut all = Latencies::new()?;
    for task in tasks {
        all.merge(&task.await??)?;
    }
    let per_sec = all.samples() as f64 / started.elapsed().as_secs_f64();
    Ok(Phase {
        per_sec,
        latencies: all,
    })
}
