//! Request bodies that can be sent again: buffered once, replayed per attempt.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// The request body the wrapped service receives.
///
/// A body of at most the layer's `max_replay_body` bytes is read into memory once and
/// replayed, unchanged (trailers included), on every attempt. A larger body (or one whose
/// reading failed) is sent once, as it came: the bytes already read first, then the rest of
/// the original body; such a call is never retried.
pub struct ReplayBody<B: Body> {
    kind: Kind<B>,
}

impl<B: Body> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("replayable", &self.is_replayable())
            .finish_non_exhaustive()
    }
}

enum Kind<B: Body> {
    Buffered {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Streaming {
        prefix: VecDeque<Frame<Bytes>>,
        // Boxed so that the body is `Unpin` whatever the error type.
        error: Option<Box<B::Error>>,
        rest: Option<B>,
    },
}

impl<B: Body> ReplayBody<B> {
    /// A body replaying `data` (then `trailers`, if any).
    pub fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// Whether this body can be sent again.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Buffered { .. })
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Kind::Streaming {
                prefix,
                error,
                rest,
            } => {
                if let Some(frame) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(error) = error.take() {
                    *rest = None;
                    return Poll::Ready(Some(Err(*error)));
                }
                match rest {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Streaming {
                prefix,
                error,
                rest,
            } => prefix.is_empty() && error.is_none() && rest.as_ref().is_none_or(B::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { .. } => SizeHint::default(),
        }
    }
}

/// A request body read into memory, or the body to send once.
pub(crate) enum Collected<B: Body> {
    /// The whole body, at most the limit.
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Too large, or reading it failed: send it once.
    Once(ReplayBody<B>),
}

/// Reads `body` into memory if it holds at most `limit` bytes. A body of one chunk (the
/// usual case: a unary gRPC message, a JSON document) is kept as it is, without copying or
/// allocating.
pub(crate) async fn collect<B>(mut body: B, limit: usize) -> Collected<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut more: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut total = 0usize;
    let mut trailers = None;
    let read_so_far = |first: Option<Bytes>, mut more: VecDeque<Frame<Bytes>>| {
        if let Some(data) = first {
            more.push_front(Frame::data(data));
        }
        more
    };
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    total = total.saturating_add(data.len());
                    if first.is_none() && more.is_empty() {
                        first = Some(data);
                    } else {
                        more.push_back(Frame::data(data));
                    }
                    if total > limit {
                        let chunks = read_so_far(first, more);
                        return Collected::Once(streaming(chunks, trailers, None, Some(body)));
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            },
            Some(Err(error)) => {
                let chunks = read_so_far(first, more);
                return Collected::Once(streaming(chunks, trailers, Some(error), None));
            }
        }
    }
    let data = if more.is_empty() {
        first.unwrap_or_default()
    } else {
        let mut buf = BytesMut::with_capacity(total);
        for data in first.iter().chain(more.iter().filter_map(Frame::data_ref)) {
            buf.extend_from_slice(data);
        }
        buf.freeze()
    };
    Collected::Buffered { data, trailers }
}

fn streaming<B: Body>(
    mut prefix: VecDeque<Frame<Bytes>>,
    trailers: Option<HeaderMap>,
    error: Option<B::Error>,
    rest: Option<B>,
) -> ReplayBody<B> {
    if let Some(t) = trailers {
        prefix.push_back(Frame::trailers(t));
    }
    ReplayBody {
        kind: Kind::Streaming {
            prefix,
            error: error.map(Box::new),
            rest,
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    type Frames = std::array::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>, 3>;
    /// A body of several data frames, then trailers.
    type Chunks = StreamBody<futures_util::stream::Iter<Frames>>;

    fn chunks() -> Chunks {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let frames = [
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::trailers(trailers),
        ];
        StreamBody::new(futures_util::stream::iter(frames.map(Ok)))
    }

    #[tokio::test]
    async fn chunks_and_trailers_are_kept() {
        let Collected::Buffered { data, trailers } = collect(chunks(), 4).await else {
            panic!("not buffered");
        };
        assert_eq!(&data[..], b"abcd");
        let collected = ReplayBody::<Chunks>::buffered(data, trailers)
            .collect()
            .await
            .unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "1");
        assert_eq!(&collected.to_bytes()[..], b"abcd");

        let Collected::Once(body) = collect(chunks(), 3).await else {
            panic!("buffered a body over the limit");
        };
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "1");
        assert_eq!(&collected.to_bytes()[..], b"abcd");
    }

    #[tokio::test]
    async fn small_bodies_are_buffered_and_replayed() {
        let Collected::Buffered { data, trailers } =
            collect(Full::new(Bytes::from_static(b"hello")), 16).await
        else {
            panic!("not buffered");
        };
        assert_eq!(&data[..], b"hello");
        for _ in 0..2 {
            let body = ReplayBody::<Full<Bytes>>::buffered(data.clone(), trailers.clone());
            assert!(body.is_replayable());
            assert_eq!(body.size_hint().exact(), Some(5));
            let bytes = body.collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], b"hello");
        }
    }

    #[tokio::test]
    async fn large_bodies_are_sent_once_whole() {
        let Collected::Once(body) = collect(Full::new(Bytes::from_static(b"0123456789")), 4).await
        else {
            panic!("buffered a body over the limit");
        };
        assert!(!body.is_replayable());
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"0123456789");
    }
}
