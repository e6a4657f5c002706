//! The response body the layer answers with: read ahead or streamed, holding the attempt's
//! bulkhead slot and breaker permit until the callee's part of it ends.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::breaker::Outcome;
use crate::classify::{Classify, StreamEnd};
use crate::pipeline::{OwnedAdmission, Pipeline};

/// The response body of the layer's service: the callee's body, passed on as it arrives
/// (after what the layer read ahead of it, if anything), or nothing at all for a refusal
/// answered as a gRPC status.
///
/// While the callee's part is still streaming, the body holds the attempt's bulkhead slot
/// and breaker permit. When it ends (its last frame, its trailers, or an error), the
/// breaker records the call, timed from the slot to that moment, and the slot is given
/// back: a failure if the body failed, or if a gRPC status in its trailers says so;
/// otherwise what the response head said. A body dropped before its end gives the slot
/// back and records nothing, as a cancelled call — unless its head was already a failure
/// (an HTTP `503` whose body nobody read), which is recorded.
pub struct ResponseBody<B: Body> {
    /// What the layer read ahead and has not passed on yet. Boxed: only gRPC responses
    /// have it, and every response is moved a few times on its way to the caller.
    ahead: Option<Box<Ahead>>,
    rest: Rest<B>,
    /// The attempt, while the callee's part streams.
    guard: Option<Guard>,
}

/// A body read ahead: the first chunk (kept without a copy), any others, the trailers.
#[derive(Default)]
struct Ahead {
    first: Option<Bytes>,
    more: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Ahead {
    fn next_data(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.more.pop_front())
    }

    fn has_data(&self) -> bool {
        self.first.is_some() || !self.more.is_empty()
    }

    fn len(&self) -> u64 {
        self.first
            .iter()
            .chain(&self.more)
            .map(|d| d.len() as u64)
            .sum()
    }
}

enum Rest<B: Body> {
    /// Still to come from the callee.
    Streaming(B),
    /// The callee's part has ended (or there never was one: a refusal).
    Ended,
    /// Reading ahead failed: the error, passed on after the data read before it. Boxed, so
    /// that the body is `Unpin` whatever the error type.
    Failed(Option<Box<B::Error>>),
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rest = match self.rest {
            Rest::Streaming(_) => "streaming",
            Rest::Ended => "ended",
            Rest::Failed(_) => "failed",
        };
        f.debug_struct("ResponseBody")
            .field("read_ahead", &self.ahead.is_some())
            .field("rest", &rest)
            .field("holds_slot", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> ResponseBody<B> {
    /// `body`, passed on as it arrives.
    pub(crate) fn streaming(body: B) -> Self {
        Self::with(None, Rest::Streaming(body))
    }

    /// No body: a response made by the layer itself.
    pub(crate) fn empty() -> Self {
        Self::with(None, Rest::Ended)
    }

    fn with(ahead: Option<Box<Ahead>>, rest: Rest<B>) -> Self {
        Self {
            ahead,
            rest,
            guard: None,
        }
    }

    /// The trailers, if the layer read the whole body ahead and it had some.
    pub(crate) fn trailers_read(&self) -> Option<&HeaderMap> {
        self.ahead.as_ref()?.trailers.as_ref()
    }

    /// Whether the callee's part is over: ended (read ahead whole, or empty) or failed.
    pub(crate) fn received_all(&self) -> bool {
        match &self.rest {
            Rest::Streaming(body) => body.is_end_stream(),
            Rest::Ended | Rest::Failed(_) => true,
        }
    }

    /// Holds `guard` until the callee's part ends.
    pub(crate) fn hold(&mut self, guard: Guard) {
        self.guard = Some(guard);
    }

    /// Ends the guard, if any.
    fn finish(&mut self, end: End<'_>) {
        if let Some(guard) = self.guard.take() {
            guard.finish(end);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> ResponseBody<B> {
    /// Reads `body` into memory while it holds at most `limit` bytes: whole (its trailers
    /// with it), or up to the frame that went over the limit, the rest to be streamed. A
    /// body of one chunk (a unary gRPC message) is kept without copying or allocating.
    pub(crate) async fn read_ahead(mut body: B, limit: usize) -> Self {
        let mut ahead = Box::<Ahead>::default();
        let mut total = 0usize;
        let rest = loop {
            if body.is_end_stream() {
                break Rest::Ended;
            }
            let frame = body.frame().await;
            match frame {
                None => break Rest::Ended,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        total = total.saturating_add(data.len());
                        if ahead.first.is_none() {
                            ahead.first = Some(data);
                        } else {
                            ahead.more.push_back(data);
                        }
                        if total > limit {
                            break Rest::Streaming(body);
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            // Trailers are a body's last frame.
                            ahead.trailers = Some(t);
                            break Rest::Ended;
                        }
                    }
                },
                Some(Err(error)) => break Rest::Failed(Some(Box::new(error))),
            }
        };
        Self::with(Some(ahead), rest)
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.ahead.as_mut().and_then(|ahead| ahead.next_data()) {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let body = match &mut this.rest {
            Rest::Streaming(body) => body,
            Rest::Ended => {
                let trailers = this.ahead.as_mut().and_then(|ahead| ahead.trailers.take());
                return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
            }
            Rest::Failed(error) => return Poll::Ready(error.take().map(|e| Err(*e))),
        };
        let polled = ready!(Pin::new(&mut *body).poll_frame(cx));
        let ended = match &polled {
            None => Some((End::Complete(None), Rest::Ended)),
            Some(Ok(frame)) => match frame.trailers_ref() {
                Some(trailers) => Some((End::Complete(Some(trailers)), Rest::Ended)),
                // Ended with its last data frame: a caller that trusts `is_end_stream`
                // polls no more.
                None => body
                    .is_end_stream()
                    .then_some((End::Complete(None), Rest::Ended)),
            },
            Some(Err(_)) => Some((End::Failed, Rest::Failed(None))),
        };
        if let Some((end, rest)) = ended {
            this.finish(end);
            this.rest = rest;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        let ahead = self.ahead.as_deref();
        !ahead.is_some_and(Ahead::has_data)
            && match &self.rest {
                Rest::Streaming(body) => body.is_end_stream(),
                Rest::Ended => ahead.is_none_or(|ahead| ahead.trailers.is_none()),
                Rest::Failed(error) => error.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.ahead.as_deref().map_or(0, Ahead::len);
        match &self.rest {
            Rest::Streaming(body) => {
                let hint = body.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower().saturating_add(ahead));
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper.saturating_add(ahead));
                }
                sum
            }
            Rest::Ended | Rest::Failed(_) => SizeHint::with_exact(ahead),
        }
    }
}

/// How the callee's part of a body ended.
pub(crate) enum End<'a> {
    /// All of it arrived, with these trailers if it had any.
    Complete(Option<&'a HeaderMap>),
    /// Reading it failed (the connection broke, the stream was reset).
    Failed,
}

/// The attempt a response body answers for, until the callee's part of it ends.
pub(crate) struct Guard {
    admission: Option<OwnedAdmission>,
    /// The classifier, for a gRPC body whose status was not in its head (it comes in the
    /// trailers).
    judge: Option<Arc<dyn JudgeEnd>>,
}

impl Guard {
    pub(crate) fn new(admission: OwnedAdmission, judge: Option<Arc<dyn JudgeEnd>>) -> Self {
        Self {
            admission: Some(admission),
            judge,
        }
    }

    /// Records the call: a failure if the head or the end says so.
    fn finish(mut self, end: End<'_>) {
        let Some(admission) = self.admission.take() else {
            return;
        };
        let outcome = match (end, admission.outcome(), &self.judge) {
            (End::Failed, _, _) | (_, Outcome::Failure, _) => Outcome::Failure,
            (End::Complete(trailers), Outcome::Success, Some(judge)) => {
                judge.outcome(StreamEnd { trailers })
            }
            (End::Complete(_), Outcome::Success, None) => Outcome::Success,
        };
        admission.record(outcome);
    }
}

impl Drop for Guard {
    /// Dropped before the end: a failure the head already showed still counts; otherwise
    /// the call counts as cancelled (nothing recorded, the slot given back).
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take()
            && admission.outcome() == Outcome::Failure
        {
            admission.record(Outcome::Failure);
        }
    }
}

/// The classifier's judgement of a streamed gRPC body's end, with the classifier's type
/// erased (a response body is not generic over it): the pipeline itself, shared.
pub(crate) trait JudgeEnd: Send + Sync {
    fn outcome(&self, end: StreamEnd<'_>) -> Outcome;
}

impl<C> JudgeEnd for Pipeline<C>
where
    C: for<'a> Classify<StreamEnd<'a>> + Send + Sync,
{
    fn outcome(&self, end: StreamEnd<'_>) -> Outcome {
        self.classifier().outcome(&end)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    type Frames = std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>;
    type Chunks = StreamBody<futures_util::stream::Iter<Frames>>;

    fn chunks(frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> Chunks {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn grpc_trailers(code: i32) -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", code.into());
        t
    }

    #[tokio::test]
    async fn a_small_body_is_read_whole_with_its_trailers() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::trailers(grpc_trailers(14))),
        ];
        let body = ResponseBody::read_ahead(chunks(frames), 4).await;
        assert!(body.received_all());
        assert_eq!(body.trailers_read().unwrap()["grpc-status"], "14");
        assert_eq!(body.size_hint().exact(), Some(4));
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        assert_eq!(&collected.to_bytes()[..], b"abcd");
    }

    #[tokio::test]
    async fn a_large_body_streams_on_after_what_was_read() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"cd"))),
            Ok(Frame::data(Bytes::from_static(b"ef"))),
            Ok(Frame::trailers(grpc_trailers(0))),
        ];
        let body = ResponseBody::read_ahead(chunks(frames), 3).await;
        assert!(!body.received_all());
        assert!(body.trailers_read().is_none());
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(&collected.to_bytes()[..], b"abcdef");
    }

    #[tokio::test]
    async fn an_error_while_reading_ahead_comes_after_the_data() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::ErrorKind::ConnectionReset.into()),
        ];
        let mut body = ResponseBody::read_ahead(chunks(frames), 100).await;
        assert!(body.received_all());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn an_ended_body_is_received_and_an_empty_one_too() {
        let body = ResponseBody::read_ahead(Full::new(Bytes::from_static(b"x")), 10).await;
        assert!(body.received_all());
        assert!(body.trailers_read().is_none());
        let body = ResponseBody::<Full<Bytes>>::empty();
        assert!(body.received_all() && body.is_end_stream());
        assert!(ResponseBody::streaming(Full::new(Bytes::new())).received_all());
        assert!(!ResponseBody::streaming(Full::new(Bytes::from_static(b"x"))).received_all());
    }
}
