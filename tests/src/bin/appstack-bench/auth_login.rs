//! `auth-login`: logins per second through the real gRPC auth service.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::auth::v1::{LoginRequest, SignUpRequest};
use appstack_tests::auth_server::AuthServer;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use tonic::transport::Channel;

use crate::AuthLoginArgs;
use crate::measure::{Latencies, Report, cores, run_on_every_core};

/// The goal of the login issue: logins per second over raw argon2id per second.
const LOGIN_GOAL_RATIO: f64 = 0.9;

/// What one login client did in the measured phase.
struct ClientRun {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies: Latencies,
    finished: Instant,
}

/// The login phase's outcome.
struct LoginRun {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latencies: Latencies,
    elapsed: Duration,
    params: appstack_config::PasswordConfig,
}

pub(crate) fn run(seconds: Duration, args: &AuthLoginArgs) -> anyhow::Result<()> {
    let report = Report::new("auth-login");
    let threads = cores();
    let clients = args.clients.unwrap_or(2 * threads).max(1);
    let runtime = crate::measure::runtime()?;

    let server = runtime.block_on(AuthServer::start_with(|c| {
        // Keep the default OWASP parameters (19 MiB, t=2, p=1) and one worker per core; only
        // make room in the queue so the clients never meet RESOURCE_EXHAUSTED.
        c.auth.password = appstack_config::PasswordConfig {
            queue: 1024,
            ..Default::default()
        };
    }))?;
    let outcome = runtime.block_on(login_phase(&server, clients, seconds));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            if let Err(stop) = runtime.block_on(server.stop()) {
                eprintln!("auth-login: stopping the server: {stop:#}");
            }
            return Err(error);
        }
    };

    // Raw argon2id in the same process, the server idle: one *verify* of a PHC hash per
    // operation, as a login does, on one thread per core.
    let baseline = argon2_baseline(&outcome.params, threads, seconds);
    runtime
        .block_on(server.stop())
        .context("stopping the auth server")?;
    let (argon2_per_sec, argon2_latencies) = baseline?;

    let logins_per_sec = outcome.ok as f64 / outcome.elapsed.as_secs_f64();
    let login_errors: u64 = outcome.errors.values().sum();
    report.real("logins_per_sec", logins_per_sec, 2, "logins/s")?;
    report.real(
        "login_latency_p50_ms",
        outcome.latencies.quantile_ms(0.50),
        2,
        "ms",
    )?;
    report.real(
        "login_latency_p99_ms",
        outcome.latencies.quantile_ms(0.99),
        2,
        "ms",
    )?;
    report.count("login_errors", login_errors, "errors")?;
    report.count("login_clients", u64::try_from(clients)?, "clients")?;
    report.real("argon2_per_sec", argon2_per_sec, 2, "verifications/s")?;
    report.real(
        "argon2_latency_p50_ms",
        argon2_latencies.quantile_ms(0.50),
        2,
        "ms",
    )?;
    report.count("cores", u64::try_from(threads)?, "cores")?;
    let ratio = logins_per_sec / argon2_per_sec;
    report.real("login_to_argon2_ratio", ratio, 3, "ratio")?;
    if !outcome.errors.is_empty() {
        eprintln!("auth-login: errors by code: {:?}", outcome.errors);
    }
    eprintln!(
        "auth-login: goal login_to_argon2_ratio >= {LOGIN_GOAL_RATIO}: {} ({ratio:.3})",
        if ratio >= LOGIN_GOAL_RATIO {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

/// Signs up one user per client, warms every client with one login, then logs in from every
/// client in a loop for `seconds`.
async fn login_phase(
    server: &AuthServer,
    clients: usize,
    seconds: Duration,
) -> anyhow::Result<LoginRun> {
    let params = server.config.auth.password.clone();
    eprintln!(
        "auth-login: server on {} (argon2id m={} KiB t={} p={}, workers={} (0 = one per core), queue={}); {clients} clients, {:.1}s",
        server.grpc,
        params.memory_kib,
        params.iterations,
        params.parallelism,
        params.workers,
        params.queue,
        seconds.as_secs_f64()
    );

    let mut setup = tokio::task::JoinSet::new();
    for index in 0..clients {
        let channel = server.channel().await?;
        setup.spawn(async move {
            let mut client = AuthServiceClient::new(channel);
            let email = format!("bench-{index}@example.com");
            let password = format!("bench-password-{index}-correct-horse");
            client
                .sign_up(SignUpRequest {
                    email: email.clone(),
                    password: password.clone(),
                })
                .await
                .map_err(|s| anyhow!("signing up {email}: {s}"))?;
            let login = LoginRequest { email, password };
            client
                .login(login.clone())
                .await
                .map_err(|s| anyhow!("warm-up login of {}: {s}", login.email))?;
            anyhow::Ok((client, login))
        });
    }
    let mut ready = Vec::with_capacity(clients);
    while let Some(joined) = setup.join_next().await {
        ready.push(joined.context("a setup task failed")??);
    }
    eprintln!("auth-login: {clients} users signed up and logged in once; measuring");

    let start = Instant::now();
    let deadline = start + seconds;
    let mut runs = tokio::task::JoinSet::new();
    for (client, login) in ready {
        runs.spawn(login_loop(client, login, deadline));
    }
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    let mut latencies = Latencies::new()?;
    let mut finished = start;
    while let Some(joined) = runs.join_next().await {
        let run = joined.context("a login client failed")??;
        ok += run.ok;
        for (code, count) in run.errors {
            *errors.entry(code).or_insert(0) += count;
        }
        latencies.merge(&run.latencies)?;
        finished = finished.max(run.finished);
    }
    // Calls started before the deadline all count, so the phase ends when the last ends.
    let elapsed = finished - start;
    eprintln!(
        "auth-login: {ok} logins ({} errors) in {:.2}s",
        errors.values().sum::<u64>(),
        elapsed.as_secs_f64()
    );
    Ok(LoginRun {
        ok,
        errors,
        latencies,
        elapsed,
        params,
    })
}

/// Logs in over and over until `deadline`; never stops on a refused login (counted by code).
async fn login_loop(
    mut client: AuthServiceClient<Channel>,
    login: LoginRequest,
    deadline: Instant,
) -> anyhow::Result<ClientRun> {
    let mut run = ClientRun {
        ok: 0,
        errors: BTreeMap::new(),
        latencies: Latencies::new()?,
        finished: Instant::now(),
    };
    let mut now = Instant::now();
    while now < deadline {
        let result = client.login(login.clone()).await;
        let done = Instant::now();
        run.latencies.record(done - now);
        match result {
            Ok(_) => run.ok += 1,
            Err(status) => {
                *run.errors
                    .entry(format!("{:?}", status.code()))
                    .or_insert(0) += 1
            }
        }
        now = done;
    }
    run.finished = now;
    Ok(run)
}

/// argon2id verifications per second of a PHC hash made with `config`'s parameters, on
/// `threads` threads for `seconds`, and their latencies.
fn argon2_baseline(
    config: &appstack_config::PasswordConfig,
    threads: usize,
    seconds: Duration,
) -> anyhow::Result<(f64, Latencies)> {
    let params = argon2::Params::new(
        config.memory_kib,
        config.iterations,
        config.parallelism,
        None,
    )
    .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let password = b"bench-password-correct-horse";
    let salt = SaltString::generate(&mut OsRng);
    let phc = argon2
        .hash_password(password, &salt)
        .map_err(|e| anyhow!("hashing: {e}"))?
        .to_string();
    let stored = PasswordHash::new(&phc).map_err(|e| anyhow!("parsing the PHC hash: {e}"))?;
    let verify = || -> anyhow::Result<()> {
        argon2
            .verify_password(password, &stored)
            .map_err(|e| anyhow!("verifying: {e}"))
    };
    // A few timed verifications on one otherwise idle thread, for context (a hash takes tens
    // of milliseconds, so per-call timing is negligible); then the throughput phase.
    let mut latencies = Latencies::new()?;
    for _ in 0..3 {
        let start = Instant::now();
        verify()?;
        latencies.record(start.elapsed());
    }
    let (per_sec, per_thread) = run_on_every_core(threads, seconds, verify)?;
    eprintln!(
        "auth-login: argon2 baseline: {threads} threads: {:?} verifications",
        per_thread.iter().map(|t| t.operations).collect::<Vec<_>>()
    );
    Ok((per_sec, latencies))
}
