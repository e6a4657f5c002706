//! A server-streaming rpc as Server-Sent Events: one `message` event per response message
//! (its proto3 JSON on one line), then exactly one closing event — `end` with the OK status,
//! or `error` with the `google.rpc.Status` — so a client can tell a finished stream from a
//! dropped connection. A comment line every 15 s keeps idle proxies from closing it.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use prost_reflect::MessageDescriptor;
use tonic::Status;
use tonic::body::Body;

use crate::door::error_response;
use crate::frame::FrameReader;
use crate::{http_error, transcode};

/// How long a quiet stream goes before a keep-alive comment.
const KEEPALIVE: Duration = Duration::from_secs(15);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The SSE answer to a streaming gRPC `response` whose messages are `output`s.
pub fn events(response: Response<Body>, output: MessageDescriptor, limit: usize) -> Response<Body> {
    let (parts, body) = response.into_parts();
    // A failure before the first message comes as a trailers-only answer: a plain error.
    if let Some(status) = Status::from_header_map(&parts.headers)
        && status.code() != tonic::Code::Ok
    {
        return error_response(&status);
    }
    let state = Stream {
        body,
        reader: FrameReader::new(limit),
        output,
        pending: VecDeque::new(),
        finished: false,
    };
    let frames = futures_util::stream::unfold(state, Stream::next_frame);
    let mut answer = Response::new(Body::new(StreamBody::new(frames)));
    *answer.status_mut() = StatusCode::OK;
    let headers = answer.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    answer
}

struct Stream {
    body: Body,
    reader: FrameReader,
    output: MessageDescriptor,
    pending: VecDeque<Bytes>,
    finished: bool,
}

impl Stream {
    async fn next_frame(mut self) -> Option<(Result<Frame<Bytes>, BoxError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(Frame::data(event)), self));
            }
            if self.finished {
                return None;
            }
            match tokio::time::timeout(KEEPALIVE, self.body.frame()).await {
                Err(_quiet) => {
                    return Some((
                        Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n"))),
                        self,
                    ));
                }
                Ok(None) => self.close(&Status::unknown("the stream ended without a status")),
                Ok(Some(Err(error))) => {
                    self.close(&Status::unavailable(format!("the stream broke: {error}")));
                }
                Ok(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.reader.push(&data);
                        self.drain_messages();
                    }
                    Err(frame) => {
                        let status = frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .unwrap_or_else(|| {
                                Status::unknown("the stream ended without a status")
                            });
                        self.close(&status);
                    }
                },
            }
        }
    }

    fn drain_messages(&mut self) {
        loop {
            match self.reader.next_message() {
                Ok(Some(message)) => match transcode::response_json(&self.output, &message) {
                    Ok(json) => self.pending.push_back(event("message", &json)),
                    Err(status) => return self.close(&status),
                },
                Ok(None) => return,
                Err(error) => return self.close(&Status::internal(error.to_string())),
            }
        }
    }

    fn close(&mut self, status: &Status) {
        let name = if status.code() == tonic::Code::Ok {
            "end"
        } else {
            "error"
        };
        let json = serde_json::to_vec(&http_error::status_json(status)).unwrap_or_default();
        self.pending.push_back(event(name, &json));
        self.finished = true;
    }
}

/// One event; `data` is compact JSON, so it holds no newline.
fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + name.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
