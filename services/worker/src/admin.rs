//! `appstack.worker.v1.WorkerAdmin`: queue statistics, dead letters, requeue. Admin only.

use std::collections::BTreeMap;

use appstack_common::db_failure::DbHealth;
use appstack_executor::Executor;
use appstack_proto::worker::v1 as pb;
use appstack_proto::worker::v1::worker_admin_server::WorkerAdmin;
use appstack_queue::page_token;
use appstack_queue::store::{Notifier, Queue, StoreError};
use appstack_resilience::breaker::State;
use appstack_verifier::require_role;
use tonic::{Request, Response, Status};
use uuid::Uuid;

/// The role WorkerAdmin requires.
pub const ADMIN_ROLE: &str = "admin";
/// Most ids one Requeue takes.
const MAX_REQUEUE: usize = 1000;

/// The WorkerAdmin service over the queue.
#[derive(Clone, Debug)]
pub struct WorkerAdminApi {
    queue: Queue,
    notifier: Notifier,
    db: DbHealth,
    executor: Executor,
}

impl WorkerAdminApi {
    /// The service; `executor` is the worker's, whose breakers it reports.
    pub fn new(queue: Queue, notifier: Notifier, executor: Executor) -> Self {
        let db = DbHealth::new(queue.pool().clone());
        Self {
            queue,
            notifier,
            db,
            executor,
        }
    }

    async fn failed(&self, error: StoreError) -> Status {
        match error {
            StoreError::Db(error) => self.db.explain(error).await.into(),
            StoreError::Corrupt(what) => Status::internal(what),
        }
    }
}

fn kind_filter(kind: &str) -> Option<&str> {
    (!kind.is_empty()).then_some(kind)
}

#[tonic::async_trait]
impl WorkerAdmin for WorkerAdminApi {
    async fn queue_stats(
        &self,
        request: Request<pb::QueueStatsRequest>,
    ) -> Result<Response<pb::QueueStatsResponse>, Status> {
        require_role(&request, ADMIN_ROLE)?;
        let kind = request.get_ref().kind.clone();
        let stats = match self.queue.stats(kind_filter(&kind), true).await {
            Ok(stats) => stats,
            Err(error) => return Err(self.failed(error).await),
        };
        let mut per_state: BTreeMap<&'static str, i64> = BTreeMap::new();
        for count in &stats.counts {
            *per_state.entry(count.state.as_str()).or_default() += count.count;
        }
        Ok(Response::new(pb::QueueStatsResponse {
            states: per_state
                .into_iter()
                .map(|(state, count)| pb::StateCount {
                    state: state.into(),
                    count,
                })
                .collect(),
            oldest_ready_age: prost_types::Duration::try_from(stats.oldest_ready_age).ok(),
            in_flight: stats.in_flight,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        require_role(&request, ADMIN_ROLE)?;
        let input = request.get_ref();
        let size = page_token::page_size(input.page_size)
            .map_err(|why| appstack_common::status::invalid_fields([("page_size", why)]))?;
        let before = page_token::decode(&input.page_token).map_err(|e| {
            appstack_common::status::invalid_fields([("page_token", e.to_string())])
        })?;
        let page = match self
            .queue
            .dead_letters(kind_filter(&input.kind), before, size)
            .await
        {
            Ok(page) => page,
            Err(error) => return Err(self.failed(error).await),
        };
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: page
                .items
                .into_iter()
                .map(|dead| pb::DeadLetter {
                    request_id: dead.request_id.to_string(),
                    kind: dead.kind,
                    attempts: dead.attempts,
                    reason: dead.reason,
                    message: dead.message,
                    died_at: Some(timestamp(dead.died_at)),
                })
                .collect(),
            next_page_token: page.next.map(page_token::encode).unwrap_or_default(),
        }))
    }

    async fn requeue(
        &self,
        request: Request<pb::RequeueRequest>,
    ) -> Result<Response<pb::RequeueResponse>, Status> {
        require_role(&request, ADMIN_ROLE)?;
        let input = request.get_ref();
        if input.request_ids.is_empty() || input.request_ids.len() > MAX_REQUEUE {
            return Err(appstack_common::status::invalid_fields([(
                "request_ids",
                format!(
                    "must hold 1 to {MAX_REQUEUE} ids, got {}",
                    input.request_ids.len()
                ),
            )]));
        }
        let mut ids = Vec::with_capacity(input.request_ids.len());
        let mut bad = Vec::new();
        for (i, id) in input.request_ids.iter().enumerate() {
            match Uuid::try_parse(id) {
                Ok(id) => ids.push(id),
                Err(_) => bad.push((format!("request_ids[{i}]"), "is not a request id (a UUID)")),
            }
        }
        if !bad.is_empty() {
            return Err(appstack_common::status::invalid_fields(bad));
        }
        let trace = appstack_trace::TraceCarrier::of(&tracing::Span::current());
        let requeued = match self.queue.requeue(&ids, trace.as_ref()).await {
            Ok(requeued) => requeued,
            Err(error) => return Err(self.failed(error).await),
        };
        if !requeued.is_empty() {
            self.notifier.jobs_ready();
            self.notifier.events_written();
        }
        let skipped = input
            .request_ids
            .iter()
            .filter(|id| Uuid::try_parse(id).is_ok_and(|id| !requeued.contains(&id)))
            .cloned()
            .collect();
        Ok(Response::new(pb::RequeueResponse {
            requeued: requeued.iter().map(Uuid::to_string).collect(),
            skipped,
        }))
    }

    async fn list_external_services(
        &self,
        request: Request<pb::ListExternalServicesRequest>,
    ) -> Result<Response<pb::ListExternalServicesResponse>, Status> {
        require_role(&request, ADMIN_ROLE)?;
        let services = self
            .executor
            .service_health()
            .into_iter()
            .map(|health| pb::ExternalService {
                name: health.name,
                breaker_state: breaker_state_name(health.breaker.state).into(),
                calls: health.breaker.calls,
                failure_rate: health.breaker.failure_rate,
                slow_call_rate: health.breaker.slow_call_rate,
                kinds: health.kinds,
            })
            .collect();
        Ok(Response::new(pb::ListExternalServicesResponse { services }))
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A breaker state as the contract names it.
fn breaker_state_name(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
        State::ForcedOpen => "forced_open",
        State::Disabled => "disabled",
    }
}
