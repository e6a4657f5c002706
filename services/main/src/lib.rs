//! main: the request API, `appstack.main.v1.RequestService`.
//!
//! Callers submit requests of a routed `kind` with a JSON payload. ASYNC requests are stored
//! and queued in one statement and answered at once; SYNC ones are stored as running under a
//! lease this process keeps alive, executed through the same
//! [`Executor`] the worker uses, inside the caller's deadline,
//! and answered with their outcome. Get, List, Cancel and Watch read and change the stored
//! requests; a caller sees only their own (another's is NOT_FOUND), the `admin` role all.
//! Submits are limited per caller by `requests.submitRate` (token buckets, `governor`).

mod api;
mod check;
mod convert;
mod error;
mod rate_limit;
mod sync_leases;
mod watch;

use std::time::Duration;

use appstack_config::StackConfig;
use appstack_executor::Executor;
use appstack_proto::main::v1::request_service_server::RequestServiceServer;
use appstack_queue::store::{GetBatcher, Notifier, Queue, SubmitBatcher};
use tokio_util::sync::CancellationToken;

pub use api::{ADMIN_ROLE, RequestApi};
pub use check::{CheckedSubmit, MAX_IDEMPOTENCY_KEY_CHARS, MAX_ORDERING_KEY_BYTES, check_submit};
pub use error::MainError;
pub use rate_limit::{OverLimit, SubmitRates};

use crate::api::Parts;
use crate::sync_leases::SyncLeases;
use crate::watch::EventsHub;

/// Most Watch streams one process serves at once.
pub const MAX_WATCH_STREAMS: usize = 10_000;
/// How often idle callers' rate-limit buckets are forgotten.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

/// The request API with its background tasks.
#[derive(Debug)]
pub struct Main {
    api: RequestApi,
}

impl Main {
    /// Builds the API and starts its background tasks (the SYNC leases' heartbeat, the
    /// event listener for Watch, the rate limiter's cleanup) until `shutdown`. `holder`
    /// names this process in the leases of its SYNC requests.
    pub fn start(
        holder: impl Into<String>,
        queue: Queue,
        executor: Executor,
        notifier: Notifier,
        config: &StackConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let sync_leases = SyncLeases::default();
        tokio::spawn(sync_leases.clone().keep(
            queue.clone(),
            config.queue.lease,
            config.queue.heartbeat,
            shutdown.clone(),
        ));
        let hub = EventsHub::spawn(&queue, MAX_WATCH_STREAMS, shutdown.clone());
        let api = RequestApi::new(Parts {
            holder: holder.into(),
            submits: SubmitBatcher::spawn(queue.clone()),
            gets: GetBatcher::spawn(queue.clone()),
            queue,
            executor,
            notifier,
            limits: config.requests.clone(),
            lease: config.queue.lease,
            sync_leases,
            hub,
        });
        let cleanup = api.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => cleanup.forget_idle_callers(),
                }
            }
        });
        Self { api }
    }

    /// The gRPC service, its messages limited to `max_message_bytes`.
    pub fn server(&self, max_message_bytes: usize) -> RequestServiceServer<RequestApi> {
        RequestServiceServer::new(self.api.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}
