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
//! - `auth-existence`: the median time of a wrong-password login for an email with an
//!   account minus one without, with `auth.prevent_user_existence_errors` on and off, in
//!   the same run (`--seconds` does not apply: a fixed count of logins).
//!
//! - `resilience`: the resilience pipeline's cost per call against the bare call, in the
//!   same run (goal: at most 150 ns at p50 and no allocation), rejection while open (at
//!   most 100 ns), a breaker shared by every core (at least half of one thread's rate),
//!   the layer over a real tonic call on loopback, and attempts per call in a total outage
//!   (at most 1.2 plus the budget's floor).
//!
//! - `queue`: the PostgreSQL queue alone (claim a batch, no-op, complete it): claims per
//!   second with an empty history, with a million finished requests in the tables
//!   (`history_ratio`, goal ≥ 0.9), and while another session holds a snapshot open
//!   (`xmin_held_ratio`, goal ≥ 0.8).
//!
//! - `worker`: the burn-down of 20,000 queued requests through the real worker, each an HTTP
//!   call to the simulator at zero latency (`burn_down_per_sec`, goal ≥ 6,000).
//!
//! - `submit` / `get`: ASYNC submits and Gets per second through gRPC (authentication
//!   included) against `pgbench` at the same concurrency, on the same database
//!   (`submit_to_pgbench_ratio` goal ≥ 0.7, `get_to_pgbench_ratio` goal ≥ 0.5).
//!
//! - `end-to-end`: submit → succeeded through the whole stack: `completed_per_sec`, and
//!   at half that rate `enqueue_to_start_p50_ms` (goal ≤ 5) and `_p99_ms` (goal ≤ 25).
//!
//! - `operator`: the operator on the test control plane: `create_to_applied_p50_ms`,
//!   `steady_state_writes_per_resync` (goal 0), `operator_rss_mib`, and `render_per_sec`.
//!
//! - `traces`: ASYNC submits through the whole stack with every span exported over
//!   OTLP/gRPC to a loopback receiver, against the same stack untraced in the same run:
//!   `traced_to_untraced_ratio`, latencies, `spans_per_request`.
//!
//! - `front-door`: Gets through the HTTP/JSON front door against the same Gets over gRPC,
//!   in the same run: `json_to_grpc_ratio`, `json_added_p50_us`, latencies, and the
//!   console's bundle size.
//!
//! To add a scenario: a module with a `run` function, a variant of [`Scenario`], and the
//! shared helpers in `measure` (`Report` prints figures, `Latencies` keeps percentiles).

mod auth_existence;
mod auth_login;
mod auth_verify;
mod end_to_end;
mod front_door;
mod measure;
mod operator;
mod queue;
mod requests;
mod resilience;
mod traces;
mod worker;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Median wrong-password login time for a known email minus an unknown one, with
    /// `auth.prevent_user_existence_errors` on and off (goal: no measurable gap when on).
    AuthExistence,
    /// The resilience pipeline's cost per call (goal: <= 150 ns, no allocation), rejection
    /// while open (<= 100 ns), contention on a shared breaker (>= 0.5 of one thread) and
    /// attempts per call in an outage (<= 1.2 + the budget's floor).
    Resilience,
    /// The PostgreSQL queue alone (claim, no-op, complete): claims per second, the same
    /// with a million finished requests in the tables (goal: ratio >= 0.9), and while a
    /// snapshot is held open (goal: ratio >= 0.8).
    Queue,
    /// Burn-down of 20,000 queued requests through the worker, each an HTTP call to the
    /// simulator at zero latency (goal: >= 6,000 per second on 2 cores).
    Worker,
    /// ASYNC submits per second through gRPC vs pgbench running the same SQL at the same
    /// concurrency (goal: ratio >= 0.7).
    Submit,
    /// Gets per second through gRPC vs `pgbench -S` at the same concurrency (goal: ratio
    /// >= 0.5).
    Get,
    /// Submit → succeeded through the whole stack: the sustained rate, and enqueue-to-start
    /// latency at half of it (goals: p50 <= 5 ms, p99 <= 25 ms).
    EndToEnd,
    /// The operator on the test control plane: create → applied, API writes per
    /// steady-state resync (goal 0), resident memory, and the pure render rate.
    Operator,
    /// ASYNC submits through the whole stack with traces exported over OTLP to a loopback
    /// receiver, against the same stack untraced in the same run.
    Traces,
    /// Gets through the HTTP/JSON front door against the same Gets over gRPC, in the same
    /// run: rates, latencies, the ratio and the JSON path's added cost per call.
    FrontDoor,
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
        Scenario::AuthVerify => auth_verify::run(cli.seconds),
        Scenario::AuthLogin(args) => auth_login::run(cli.seconds, &args),
        Scenario::AuthExistence => auth_existence::run(),
        Scenario::Resilience => resilience::run(cli.seconds),
        Scenario::Queue => queue::run(cli.seconds),
        Scenario::Worker => worker::run(),
        Scenario::Submit => requests::run(cli.seconds, false),
        Scenario::Get => requests::run(cli.seconds, true),
        Scenario::EndToEnd => end_to_end::run(cli.seconds),
        Scenario::Operator => operator::run(cli.seconds),
        Scenario::Traces => traces::run(cli.seconds),
        Scenario::FrontDoor => front_door::run(cli.seconds),
    }
}
