//! `appstack.main.v1.RequestService`: each handler calls a function returning
//! [`MainError`] and maps it once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use appstack_common::db_failure::DbHealth;
use appstack_config::RequestsConfig;
use appstack_executor::{Call, Executor};
use appstack_proto::main::v1 as pb;
use appstack_proto::main::v1::request_service_server::RequestService;
use appstack_queue::page_token;
use appstack_queue::store::{
    CancelOutcome, Completion, GetBatcher, ListFilter, Mode, NewRequest, Notifier, Queue,
    StoreError, SubmitBatcher, SubmitOutcome, Viewer,
};
use appstack_verifier::{Identity, require_identity};
use appstack_worker::{deadline_instant, sync_completion_action};
use chrono::Utc;
use futures_util::Stream;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::check::check_submit;
use crate::convert;
use crate::error::MainError;
use crate::rate_limit::SubmitRates;
use crate::sync_leases::SyncLeases;
use crate::watch::EventsHub;

/// The role that sees every caller's requests.
pub const ADMIN_ROLE: &str = "admin";

/// The request API. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RequestApi {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    holder: String,
    queue: Queue,
    submits: SubmitBatcher,
    gets: GetBatcher,
    executor: Executor,
    notifier: Notifier,
    limits: RequestsConfig,
    lease: Duration,
    rates: SubmitRates,
    sync_leases: SyncLeases,
    hub: EventsHub,
    db: DbHealth,
}

/// What the API is built from.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) holder: String,
    pub(crate) queue: Queue,
    /// ASYNC submits, grouped under load.
    pub(crate) submits: SubmitBatcher,
    /// Gets, grouped under load.
    pub(crate) gets: GetBatcher,
    pub(crate) executor: Executor,
    pub(crate) notifier: Notifier,
    pub(crate) limits: RequestsConfig,
    pub(crate) lease: Duration,
    pub(crate) sync_leases: SyncLeases,
    pub(crate) hub: EventsHub,
}

impl RequestApi {
    pub(crate) fn new(parts: Parts) -> Self {
        let rates = SubmitRates::new(&parts.limits.submit_rate);
        let db = DbHealth::new(parts.queue.pool().clone());
        Self {
            inner: Arc::new(Inner {
                holder: parts.holder,
                queue: parts.queue,
                submits: parts.submits,
                gets: parts.gets,
                executor: parts.executor,
                notifier: parts.notifier,
                limits: parts.limits,
                lease: parts.lease,
                rates,
                sync_leases: parts.sync_leases,
                hub: parts.hub,
                db,
            }),
        }
    }

    /// Forgets idle callers' rate-limit buckets.
    pub(crate) fn forget_idle_callers(&self) {
        self.inner.rates.forget_idle();
    }

    /// The gRPC answer of a failed call.
    async fn answer<T>(&self, result: Result<T, MainError>) -> Result<Response<T>, Status> {
        match result {
            Ok(value) => Ok(Response::new(value)),
            Err(error) => Err(match error.status() {
                Ok(status) => status,
                Err(store) => self.store_status(store).await,
            }),
        }
    }

    async fn store_status(&self, error: StoreError) -> Status {
        match error {
            StoreError::Db(error) => self.inner.db.explain(error).await.into(),
            StoreError::Corrupt(what) => {
                tracing::error!(%what, "unreadable stored data");
                Status::internal("stored data could not be read")
            }
        }
    }

    async fn submit(
        &self,
        caller: &Identity,
        input: &pb::SubmitRequest,
        callers_deadline: Option<Instant>,
    ) -> Result<pb::SubmitResponse, MainError> {
        let inner = &self.inner;
        let checked = check_submit(input, &inner.executor, &inner.limits, Utc::now())
            .map_err(MainError::Invalid)?;
        inner
            .rates
            .take(&caller.subject, &caller.roles)
            .map_err(|over| MainError::RateLimited {
                per_second: over.per_second,
                retry_after: over.retry_after,
            })?;
        // An ASYNC job carries this call's span: the worker's execution continues its
        // trace. A SYNC request executes inside this span and stores none.
        let trace = (checked.mode == Mode::Async)
            .then(|| appstack_trace::TraceCarrier::of(&tracing::Span::current()))
            .flatten();
        let new = NewRequest {
            owner: &caller.subject,
            kind: &checked.kind,
            payload: &checked.payload,
            idempotency_key: checked.idempotency_key.as_deref(),
            ordering_key: checked.ordering_key.as_deref(),
            deadline: checked.deadline,
            trace: trace.as_ref(),
        };
        match checked.mode {
            Mode::Async => match inner.submits.submit_async(&new).await? {
                SubmitOutcome::Created(record) => {
                    inner.notifier.jobs_ready();
                    Ok(submitted(record, false))
                }
                SubmitOutcome::Replayed(record) => Ok(submitted(record, true)),
                SubmitOutcome::KeyReused(_) => Err(MainError::KeyReused(
                    checked.idempotency_key.unwrap_or_default(),
                )),
            },
            Mode::Sync => {
                let (record, job) = match inner
                    .queue
                    .submit_sync(&new, &inner.holder, inner.lease)
                    .await?
                {
                    SubmitOutcome::Created(created) => created,
                    SubmitOutcome::Replayed(record) => return Ok(submitted(record, true)),
                    SubmitOutcome::KeyReused(_) => {
                        return Err(MainError::KeyReused(
                            checked.idempotency_key.unwrap_or_default(),
                        ));
                    }
                };
                inner.sync_leases.hold(record.id, job.claim);
                // The sooner of the caller's gRPC deadline, the request's own deadline and
                // requests.syncTimeout; the route's timeout applies inside the executor.
                let now = Instant::now();
                let mut deadline = now + inner.limits.sync_timeout;
                if let Some(callers) = callers_deadline {
                    deadline = deadline.min(callers);
                }
                if let Some(own) = record.deadline {
                    deadline = deadline.min(deadline_instant(own, Utc::now(), now));
                }
                let execution = inner
                    .executor
                    .execute(Call {
                        request_id: record.id,
                        kind: &record.kind,
                        payload: &record.payload,
                        attempt: 1,
                        deadline: Some(deadline),
                    })
                    .await;
                let recorded = inner
                    .queue
                    .complete(&[Completion {
                        request_id: record.id,
                        claim: job.claim,
                        ordering_key: None,
                        action: sync_completion_action(&execution),
                    }])
                    .await;
                inner.sync_leases.release(record.id);
                recorded?;
                inner.notifier.events_written();
                let finished = inner
                    .queue
                    .get(record.id, Viewer::Owner(&caller.subject))
                    .await?
                    .ok_or(MainError::NotFound)?;
                Ok(submitted(finished, false))
            }
        }
    }

    async fn get(&self, caller: &Identity, id: &str) -> Result<pb::Request, MainError> {
        let id = parse_id(id)?;
        let record = self
            .inner
            .gets
            .get(id, viewer(caller))
            .await?
            .ok_or(MainError::NotFound)?;
        Ok(convert::request(record))
    }

    async fn list(
        &self,
        caller: &Identity,
        input: &pb::ListRequest,
    ) -> Result<pb::ListResponse, MainError> {
        let mut bad = Vec::new();
        let size = page_token::page_size(input.page_size).unwrap_or_else(|why| {
            bad.push(("page_size", why));
            page_token::DEFAULT_PAGE_SIZE
        });
        let before = page_token::decode(&input.page_token).unwrap_or_else(|e| {
            bad.push(("page_token", e.to_string()));
            None
        });
        let mut statuses = Vec::new();
        for status in &input.statuses {
            match convert::state(*status) {
                Some(state) => statuses.push(state),
                None => bad.push(("statuses", format!("{status} is not a request status"))),
            }
        }
        if !bad.is_empty() {
            return Err(MainError::Invalid(bad));
        }
        let filter = ListFilter {
            statuses,
            kind: (!input.kind.is_empty()).then(|| input.kind.clone()),
            before,
        };
        let page = self.inner.queue.list(viewer(caller), &filter, size).await?;
        Ok(pb::ListResponse {
            requests: page.items.into_iter().map(convert::request).collect(),
            next_page_token: page.next.map(page_token::encode).unwrap_or_default(),
        })
    }

    async fn cancel(&self, caller: &Identity, id: &str) -> Result<pb::Request, MainError> {
        let id = parse_id(id)?;
        match self.inner.queue.cancel(id, viewer(caller)).await? {
            CancelOutcome::Cancelled(record) => {
                self.inner.notifier.events_written();
                Ok(convert::request(record))
            }
            CancelOutcome::AlreadyFinished(record) => {
                Err(MainError::AlreadyFinished(record.status.as_str()))
            }
            CancelOutcome::NotFound => Err(MainError::NotFound),
        }
    }

    async fn watch(
        &self,
        caller: &Identity,
        input: &pb::WatchRequest,
    ) -> Result<ReceiverStream<Result<pb::RequestEvent, Status>>, MainError> {
        let id = parse_id(&input.id)?;
        let after = i32::try_from(input.after_sequence)
            .ok()
            .filter(|after| *after >= 0)
            .ok_or_else(|| {
                MainError::Invalid(vec![(
                    "after_sequence",
                    "must be between 0 and 2147483647".into(),
                )])
            })?;
        self.inner
            .queue
            .get(id, viewer(caller))
            .await?
            .ok_or(MainError::NotFound)?;
        let slot = self
            .inner
            .hub
            .admit()
            .ok_or(MainError::TooManyWatchers(self.inner.hub.max_streams()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let api = self.clone();
        tokio::spawn(async move {
            let hub = api.inner.hub.clone();
            let queue = api.inner.queue.clone();
            hub.stream(queue, id, after, tx, slot, |error| match error {
                // A read failing mid-stream: the client resumes with after_sequence.
                StoreError::Db(error) => {
                    Status::unavailable(format!("reading the request's events failed: {error}"))
                }
                StoreError::Corrupt(what) => Status::internal(what),
            })
            .await;
        });
        Ok(ReceiverStream::new(rx))
    }
}

fn submitted(record: appstack_queue::store::RequestRecord, replayed: bool) -> pb::SubmitResponse {
    pb::SubmitResponse {
        request: Some(convert::request(record)),
        replayed,
    }
}

fn viewer(caller: &Identity) -> Viewer<'_> {
    if caller.has_role(ADMIN_ROLE) {
        Viewer::Admin
    } else {
        Viewer::Owner(&caller.subject)
    }
}

fn parse_id(id: &str) -> Result<Uuid, MainError> {
    Uuid::try_parse(id)
        .map_err(|_| MainError::Invalid(vec![("id", "is not a request id (a UUID)".into())]))
}

/// The caller's deadline from `grpc-timeout`, on the monotonic clock.
fn callers_deadline<T>(request: &Request<T>) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?;
    let header = http::HeaderValue::from_bytes(value.as_bytes()).ok()?;
    appstack_resilience::layer::grpc_timeout::parse_grpc_timeout(&header)
        .map(|timeout| Instant::now() + timeout)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::RequestEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RequestService for RequestApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = require_identity(&request)?;
        let deadline = callers_deadline(&request);
        let result = RequestApi::submit(self, caller, request.get_ref(), deadline).await;
        self.answer(result).await
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::Request>, Status> {
        let caller = require_identity(&request)?;
        let result = RequestApi::get(self, caller, &request.get_ref().id).await;
        self.answer(result).await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let caller = require_identity(&request)?;
        let result = RequestApi::list(self, caller, request.get_ref()).await;
        self.answer(result).await
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::Request>, Status> {
        let caller = require_identity(&request)?;
        let result = RequestApi::cancel(self, caller, &request.get_ref().id).await;
        self.answer(result).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = require_identity(&request)?;
        let result = RequestApi::watch(self, caller, request.get_ref())
            .await
            .map(|stream| Box::pin(stream) as WatchStream);
        self.answer(result).await
    }

    async fn list_kinds(
        &self,
        request: Request<pb::ListKindsRequest>,
    ) -> Result<Response<pb::ListKindsResponse>, Status> {
        require_identity(&request)?;
        let mut kinds = self.inner.executor.kinds();
        kinds.sort();
        Ok(Response::new(pb::ListKindsResponse { kinds }))
    }
}
