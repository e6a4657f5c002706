//! An external microservice simulator: the HTTP/JSON form (`POST` any path, an
//! `Idempotency-Key` header, a JSON body, the body echoed back) and the gRPC form
//! (`appstack.external.v1.Processor`), with faults injected from a [`FaultPlan`] set at start
//! and changed at run time (`PUT /_simulator/faults`, or [`Simulator::set_faults`]). Every
//! call is recorded by idempotency key ([`Ledger`]), so tests count duplicate executions.
//!
//! Used by the tests, the benchmarks and `appstack dev`; it listens on loopback only in all
//! of them.

pub mod faults;
mod grpc;
mod http;
pub mod ledger;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{Action, ErrorAnswer, FaultPlan, InvalidPlan, Latency, Outage};
pub use ledger::{CallStats, Ledger};

/// The simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The fault plan breaks a rule.
    #[error(transparent)]
    Plan(#[from] InvalidPlan),
    /// A listener could not be bound or read.
    #[error("simulator listener: {0}")]
    Io(#[from] std::io::Error),
}

/// What both servers share: the plan (with when it took effect) and the ledger.
#[derive(Debug)]
pub(crate) struct Shared {
    plan: RwLock<(FaultPlan, Instant)>,
    ledger: Ledger,
}

impl Shared {
    /// The action for one call now, drawing the random samples.
    pub(crate) fn next_action(&self) -> Action {
        let (pick, spread): (f64, f64) = (rand::random(), rand::random());
        let guard = self.plan.read().unwrap_or_else(|p| p.into_inner());
        let (plan, since) = &*guard;
        plan.decide(since.elapsed(), pick, spread)
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub(crate) fn plan(&self) -> FaultPlan {
        self.plan
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    pub(crate) fn set_plan(&self, plan: FaultPlan) -> Result<(), InvalidPlan> {
        plan.validate()?;
        *self.plan.write().unwrap_or_else(|p| p.into_inner()) = (plan, Instant::now());
        Ok(())
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    /// The HTTP/JSON address.
    pub http: SocketAddr,
    /// The gRPC `Processor` address.
    pub grpc: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Serves on the two listeners with `plan` until [`Simulator::stop`] or drop.
    pub async fn start(
        http: TcpListener,
        grpc: TcpListener,
        plan: FaultPlan,
    ) -> Result<Self, SimulatorError> {
        plan.validate()?;
        let shared = Arc::new(Shared {
            plan: RwLock::new((plan, Instant::now())),
            ledger: Ledger::default(),
        });
        let stop = CancellationToken::new();
        let http_addr = http.local_addr()?;
        let grpc_addr = grpc.local_addr()?;
        let tasks = vec![
            tokio::spawn(http::serve(http, shared.clone(), stop.clone())),
            tokio::spawn(grpc::serve(grpc, shared.clone(), stop.clone())),
        ];
        tracing::info!(http = %http_addr, grpc = %grpc_addr, "simulator listening");
        Ok(Self {
            http: http_addr,
            grpc: grpc_addr,
            shared,
            stop,
            tasks,
        })
    }

    /// Binds both protocols on fresh loopback ports.
    pub async fn start_on_loopback(plan: FaultPlan) -> Result<Self, SimulatorError> {
        let http = TcpListener::bind(("127.0.0.1", 0)).await?;
        let grpc = TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::start(http, grpc, plan).await
    }

    /// Replaces the plan; its outage windows count from now.
    pub fn set_faults(&self, plan: FaultPlan) -> Result<(), InvalidPlan> {
        self.shared.set_plan(plan)
    }

    /// The calls so far.
    pub fn calls(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// Stops both servers (in-flight calls get up to `grace`).
    pub async fn stop(mut self, grace: Duration) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(grace, task).await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
