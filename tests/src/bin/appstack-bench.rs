//! `appstack-bench`: AppStack's benchmarks, one subcommand per scenario.
//!
//! ```text
//! cargo run --release -p appstack-tests --bin appstack-bench -- <scenario> [--seconds N]
//! ```
//!
//! Every figure is printed on stdout as one JSON line,
//! `{"bench":"<scenario>","metric":"<name>","value":<number>,"unit":"<unit>"}`; progress and
//! context go to stderr, so `… 2>/dev/null | jq` sees only figures. Benchmarks measure and
//! print; they never assert on timing. Each measured phase lasts `--seconds` (default 5,
//! fractions allowed); everything runs on loopback and stops by itself.
//!
//! Scenarios:
//!
//! - `auth-verify`: access-token verifications per second through the real
//!   `appstack_verifier::Verifier` (a `KeyCache` over a `StaticKeySource`), on one thread and
//!   on one thread per core, against raw Ed25519 signature checks of the same token. The
//!   issue's goal is at least 15,000 `verifications_per_sec_per_core`.
//! - `auth-login`: logins per second through the real gRPC auth service (with its private
//!   PostgreSQL and the default OWASP argon2id parameters) against raw argon2id password
//!   verifications per second with the same parameters, in the same run. The goal is a
//!   `login_to_argon2_ratio` of at least 0.9.
//!
//! To add a scenario: a variant of [`Scenario`], one function running it, and the shared
//! helpers ([`Report`] prints figures, [`Latencies`] keeps percentiles, [`cores`]).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use appstack_auth::signing;
use appstack_auth::tokens::{Subject, sign_access_token};
use appstack_proto::auth::v1::auth_service_client::AuthServiceClient;
use appstack_proto::auth::v1::{Jwk, LoginRequest, SignUpRequest};
use appstack_tests::auth_server::AuthServer;
use appstack_verifier::{KeyCache, KeyCacheConfig, StaticKeySource, Verifier, VerifierConfig};
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::Verifier as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::transport::Channel;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "appstack-bench",
    about = "AppStack benchmarks: one JSON line per figure on stdout, progress on stderr"
)]
struct Cli {
    /// Seconds per measured phase (fractions allowed).
    #[arg(long, global = true, default_value = "5", value_parser = parse_seconds)]
    seconds: Duration,
    /// The scenario to run.
    #[command(subcommand)]
    scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
enum Scenario {
    /// Access-token verifications per second per core through the real verifier, against
    /// raw Ed25519 signature checks (goal: >= 15,000 per core).
    AuthVerify,
    /// Logins per second through the real gRPC auth service, against raw argon2id
    /// verifications with the same parameters (goal: ratio >= 0.9).
    AuthLogin(AuthLoginArgs),
}

/// Options of `auth-login`.
#[derive(Debug, Args)]
struct AuthLoginArgs {
    /// Concurrent clients, each with its own connection and account (default: 2 × cores,
    /// enough to keep one hash per core running while the others do their database and
    /// token work, far below the hashing queue).
    #[arg(long)]
    clients: Option<usize>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        return Err("must be a number of seconds in (0, 3600]".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::AuthVerify => auth_verify(cli.seconds),
        Scenario::AuthLogin(args) => auth_login(cli.seconds, &args),
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// One printed figure.
#[derive(Debug, Serialize)]
struct Figure<'a> {
    bench: &'a str,
    metric: &'a str,
    value: serde_json::Value,
    unit: &'a str,
}

/// Prints a scenario's figures, one JSON line each.
#[derive(Debug, Clone, Copy)]
struct Report {
    bench: &'static str,
}

impl Report {
    fn new(bench: &'static str) -> Self {
        Self { bench }
    }

    /// Prints an integer figure.
    fn count(&self, metric: &str, value: u64, unit: &str) -> anyhow::Result<()> {
        self.print(metric, serde_json::Value::from(value), unit)
    }

    /// Prints a real figure rounded to `decimals` places.
    fn real(&self, metric: &str, value: f64, decimals: i32, unit: &str) -> anyhow::Result<()> {
        let scale = 10f64.powi(decimals);
        let rounded = (value * scale).round() / scale;
        // Not finite (a phase that completed nothing): JSON null.
        let value =
            serde_json::Number::from_f64(rounded).map_or(serde_json::Value::Null, Into::into);
        self.print(metric, value, unit)
    }

    fn print(&self, metric: &str, value: serde_json::Value, unit: &str) -> anyhow::Result<()> {
        let line = serde_json::to_string(&Figure {
            bench: self.bench,
            metric,
            value,
            unit,
        })?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").context("writing to stdout")?;
        out.flush().context("writing to stdout")
    }
}

/// A latency histogram in nanoseconds (1 ns to 1 h, 3 significant digits).
struct Latencies(Histogram<u64>);

impl Latencies {
    fn new() -> anyhow::Result<Self> {
        Ok(Self(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?))
    }

    fn record(&mut self, latency: Duration) {
        self.0
            .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    fn merge(&mut self, other: &Self) -> anyhow::Result<()> {
        self.0
            .add(&other.0)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))
    }

    fn samples(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0..=1), in nanoseconds.
    fn quantile_ns(&self, quantile: f64) -> u64 {
        self.0.value_at_quantile(quantile)
    }

    /// The latency at `quantile` (0..=1), in milliseconds.
    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.quantile_ns(quantile) as f64 / 1e6
    }
}

/// Operations completed in a timed phase, and how long the phase took.
#[derive(Debug, Clone, Copy)]
struct Throughput {
    operations: u64,
    elapsed: Duration,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }
}

/// Calls `operation` in a loop on the calling thread until `duration` has passed.
fn run_for(
    duration: Duration,
    mut operation: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut operations = 0u64;
    while Instant::now() < deadline {
        operation()?;
        operations += 1;
    }
    Ok(Throughput {
        operations,
        elapsed: start.elapsed(),
    })
}

/// Runs `operation` in a loop on one thread per core for `duration` (after a common start);
/// the aggregate rate is the sum of the threads' rates.
fn run_on_every_core(
    threads: usize,
    duration: Duration,
    operation: impl Fn() -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(f64, Vec<Throughput>)> {
    let start = Barrier::new(threads);
    let results: Vec<anyhow::Result<Throughput>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    run_for(duration, &operation)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a benchmark thread panicked")))
            })
            .collect()
    });
    let per_thread = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let total = per_thread.iter().map(Throughput::per_sec).sum();
    Ok((total, per_thread))
}

/// The cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A warm-up before a measured phase: a fifth of it, at most one second.
fn warmup_for(duration: Duration) -> Duration {
    (duration / 5).min(Duration::from_secs(1))
}

// ---------------------------------------------------------------------------------------
// auth-verify
// ---------------------------------------------------------------------------------------

/// The goal of the verification issue.
const VERIFY_GOAL_PER_CORE: f64 = 15_000.0;

const ISSUER: &str = "https://auth.bench.appstack";
const AUDIENCE: &str = "appstack-bench";

/// A signed access token, the verifier for it and its raw parts.
struct VerifyFixture {
    token: String,
    verifier: Arc<Verifier>,
    public_key: [u8; 32],
    /// `header.payload`, the bytes the signature covers.
    signing_input: Vec<u8>,
    signature: ed25519_dalek::Signature,
}

impl VerifyFixture {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        signing::generate_key_file(dir.path(), "kbench")?;
        let folder = signing::load_folder(dir.path())?;
        let key = folder.active().context("the generated key was not found")?;
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: key.public_x(),
            kid: key.kid.clone(),
            alg: "EdDSA".into(),
            r#use: "sig".into(),
        };
        let roles = vec!["user".to_owned()];
        let subject = Subject {
            id: "0197a3f0-0000-7000-8000-000000000001",
            roles: &roles,
            email: Some("bench@example.com"),
        };
        let token =
            sign_access_token(key, ISSUER, AUDIENCE, Duration::from_secs(3600), &subject)?.token;
        let keys = KeyCache::new(
            Arc::new(StaticKeySource::new(vec![jwk])),
            KeyCacheConfig::default(),
        );
        let verifier = Arc::new(Verifier::new(VerifierConfig::new(ISSUER, AUDIENCE), keys));

        let (signing_input, encoded_signature) = token
            .rsplit_once('.')
            .context("the token has no signature part")?;
        let signature_bytes = URL_SAFE_NO_PAD
            .decode(encoded_signature)
            .context("decoding the token's signature")?;
        let signature = ed25519_dalek::Signature::from_slice(&signature_bytes)?;
        Ok(Self {
            signing_input: signing_input.as_bytes().to_vec(),
            token,
            verifier,
            public_key: key.public_key,
            signature,
        })
    }
}

/// Verifies `token` in a loop on the current thread for `duration`, timing every call.
///
/// Latency is sampled per call: a verification takes tens of microseconds and reading the
/// clock (TSC through the vDSO) tens of nanoseconds, so per-call timing costs well under 1%.
/// The throughput of this loop therefore includes that small overhead.
async fn verify_loop(
    verifier: &Verifier,
    token: &str,
    duration: Duration,
    mut latencies: Option<&mut Latencies>,
) -> anyhow::Result<Throughput> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut operations = 0u64;
    let mut now = start;
    while now < deadline {
        let result = verifier.verify(token).await;
        let done = Instant::now();
        result.map_err(|e| anyhow!("the verifier refused the benchmark token: {e}"))?;
        if let Some(latencies) = latencies.as_deref_mut() {
            latencies.record(done - now);
        }
        operations += 1;
        now = done;
    }
    Ok(Throughput {
        operations,
        elapsed: start.elapsed(),
    })
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

fn auth_verify(seconds: Duration) -> anyhow::Result<()> {
    let report = Report::new("auth-verify");
    let fixture = VerifyFixture::new()?;
    let warmup = warmup_for(seconds);
    eprintln!(
        "auth-verify: token of {} bytes, {:.1}s per phase",
        fixture.token.len(),
        seconds.as_secs_f64()
    );

    // One thread: the first call fills the key cache, the warm-up settles caches and clocks.
    let runtime = current_thread_runtime()?;
    let mut latencies = Latencies::new()?;
    let single = runtime.block_on(async {
        fixture
            .verifier
            .verify(&fixture.token)
            .await
            .map_err(|e| anyhow!("the first verification failed: {e}"))?;
        verify_loop(&fixture.verifier, &fixture.token, warmup, None).await?;
        verify_loop(
            &fixture.verifier,
            &fixture.token,
            seconds,
            Some(&mut latencies),
        )
        .await
    })?;
    drop(runtime);
    eprintln!(
        "auth-verify: one thread: {} verifications in {:.2}s",
        single.operations,
        single.elapsed.as_secs_f64()
    );

    // One thread per core, sharing the verifier, each on its own current-thread runtime.
    let threads = cores();
    let all_start = Barrier::new(threads);
    let all: Vec<anyhow::Result<Throughput>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let verifier = Arc::clone(&fixture.verifier);
                let token = fixture.token.as_str();
                let all_start = &all_start;
                scope.spawn(move || {
                    let runtime = current_thread_runtime()?;
                    runtime.block_on(async {
                        verify_loop(&verifier, token, warmup, None).await?;
                        all_start.wait();
                        verify_loop(&verifier, token, seconds, None).await
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a benchmark thread panicked")))
            })
            .collect()
    });
    let all = all.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let all_cores: f64 = all.iter().map(Throughput::per_sec).sum();
    eprintln!(
        "auth-verify: {threads} threads: {:?} verifications/s each",
        all.iter().map(|t| t.per_sec().round()).collect::<Vec<_>>()
    );

    // Raw Ed25519 on one thread, with the check jsonwebtoken makes (`verify`, not
    // `verify_strict`), on the same bytes and signature.
    let key = ed25519_dalek::VerifyingKey::from_bytes(&fixture.public_key)?;
    key.verify(&fixture.signing_input, &fixture.signature)
        .context("the token's signature does not verify with the raw key")?;
    let raw_check = || -> anyhow::Result<()> {
        key.verify(&fixture.signing_input, &fixture.signature)?;
        Ok(())
    };
    run_for(warmup, &raw_check)?;
    let raw = run_for(seconds, &raw_check)?;
    // Diagnostic: jsonwebtoken rebuilds the `VerifyingKey` (a point decompression) from the
    // cached `DecodingKey` bytes on every decode; this is raw verify plus that step.
    let raw_with_key_decode = run_for(seconds, || {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&fixture.public_key)?;
        key.verify(&fixture.signing_input, &fixture.signature)?;
        Ok(())
    })?;

    let per_core = single.per_sec();
    report.real(
        "verifications_per_sec_per_core",
        per_core,
        1,
        "verifications/s",
    )?;
    report.count("verify_latency_p50_ns", latencies.quantile_ns(0.50), "ns")?;
    report.count("verify_latency_p99_ns", latencies.quantile_ns(0.99), "ns")?;
    report.real(
        "verifications_per_sec_all_cores",
        all_cores,
        1,
        "verifications/s",
    )?;
    report.count("cores", u64::try_from(threads)?, "cores")?;
    report.real(
        "raw_ed25519_verify_per_sec",
        raw.per_sec(),
        1,
        "verifications/s",
    )?;
    report.real(
        "raw_ed25519_verify_with_key_decode_per_sec",
        raw_with_key_decode.per_sec(),
        1,
        "verifications/s",
    )?;
    report.real(
        "verifier_to_raw_ratio",
        per_core / raw.per_sec(),
        3,
        "ratio",
    )?;
    eprintln!(
        "auth-verify: goal >= {VERIFY_GOAL_PER_CORE} verifications/s per core: {} ({per_core:.0}, {} latency samples)",
        if per_core >= VERIFY_GOAL_PER_CORE {
            "met"
        } else {
            "NOT met"
        },
        latencies.samples(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// auth-login
// ---------------------------------------------------------------------------------------

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
    params: appstack_auth::config::PasswordConfig,
}

fn auth_login(seconds: Duration, args: &AuthLoginArgs) -> anyhow::Result<()> {
    let report = Report::new("auth-login");
    let threads = cores();
    let clients = args.clients.unwrap_or(2 * threads).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;

    let server = runtime.block_on(AuthServer::start_with(|c| {
        // Keep the default OWASP parameters (19 MiB, t=2, p=1) and one worker per core; only
        // make room in the queue so the clients never meet RESOURCE_EXHAUSTED.
        c.auth.password = appstack_auth::config::PasswordConfig {
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
    config: &appstack_auth::config::PasswordConfig,
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
