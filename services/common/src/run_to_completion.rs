//! Every call's handler runs to its end in a task of its own, whatever the client does.
//!
//! When a client cancels, its deadline passes or its connection drops, hyper drops the
//! call's future. A handler dropped between two awaits leaves its work half-done: a
//! transaction whose `BEGIN` was sent but not yet acknowledged stays open on a pooled
//! connection (sqlx 0.9's `begin` is not cancel-safe on PostgreSQL), a login counted as a
//! failure is never forgiven. Running the handler in its own task, detached from the
//! future hyper holds, makes every handler atomic from the client's point of view: it either
//! never starts or runs to completion. A handler that wants to skip work nobody will read
//! (a session whose tokens cannot be delivered) asks [`CallerGone`].
//!
//! This is the one mechanism main, auth and worker share; the pool's connection check
//! (`db::connect_lazy`) is the second line of defence.

use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tower::{Layer, Service};
use tracing::Instrument as _;

/// Tells a handler whether the caller is still waiting for its answer; in the request's
/// extensions of every call served through [`RunToCompletionLayer`].
#[derive(Clone, Debug, Default)]
pub struct CallerGone {
    token: CancellationToken,
}

impl CallerGone {
    /// True once the caller went away (cancelled, deadline passed, connection dropped).
    pub fn is_gone(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The caller's state for `request`; a request served outside the layer (a test calling
    /// a handler directly) counts as a caller that stays.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<CallerGone>()
            .cloned()
            .unwrap_or_default()
    }
}

/// The layer; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunToCompletionLayer;

impl<S> Layer<S> for RunToCompletionLayer {
    type Service = RunToCompletion<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RunToCompletion { inner }
    }
}

/// Service made by [`RunToCompletionLayer`].
#[derive(Clone, Debug)]
pub struct RunToCompletion<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RunToCompletion<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let caller = CallerGone::default();
        request.extensions_mut().insert(caller.clone());
        // The handler keeps the call's span (the server span layer entered it around
        // `call`): a spawned task would otherwise start with none.
        let handler = tokio::spawn(self.inner.call(request).in_current_span());
        Box::pin(async move {
            // Dropped with this future (the caller went away) unless the handler finished.
            let guard = caller.token.clone().drop_guard();
            let outcome = handler.await;
            guard.disarm();
            match outcome {
                Ok(result) => result,
                Err(error) => {
                    tracing::error!(%error, "a call's handler panicked or was aborted");
                    Ok(Status::internal("internal error").into_http())
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_still_finishes_and_sees_the_caller_gone() {
        let finished = Arc::new(AtomicBool::new(false));
        let saw_gone = Arc::new(AtomicBool::new(false));
        let service = {
            let finished = finished.clone();
            let saw_gone = saw_gone.clone();
            tower::service_fn(move |request: Request<()>| {
                let finished = finished.clone();
                let saw_gone = saw_gone.clone();
                async move {
                    let caller = request.extensions().get::<CallerGone>().cloned().unwrap();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    saw_gone.store(caller.is_gone(), Ordering::SeqCst);
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(Response::new(()))
                }
            })
        };
        let call = RunToCompletionLayer
            .layer(service)
            .oneshot(Request::new(()));
        // The caller gives up after 10 ms.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), call)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(finished.load(Ordering::SeqCst));
        assert!(saw_gone.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let service = tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("boom");
            }
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let response = RunToCompletionLayer
            .layer(service)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "13");
    }
}
