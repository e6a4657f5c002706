//! W3C trace context (`traceparent`, `tracestate`) across AppStack's boundaries: incoming
//! and outgoing gRPC metadata and HTTP headers, and the queue, where a job carries the
//! context of the Submit that queued it so the worker's span continues that trace.
//!
//! The spans are `tracing` spans; `tracing-opentelemetry` gives them OpenTelemetry
//! identities when the process exports traces (`appstack_common::telemetry`). Without that
//! layer every function here does nothing: nothing is injected, no parent is set, and the
//! carrier of a span is `None`.
//!
//! Only the W3C format is spoken, with the SDK's own propagator used directly rather than
//! through a process-global one: nothing else in the process can swap it.

use std::sync::LazyLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The W3C header naming the caller's span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendors' state along the trace.
pub const TRACESTATE: &str = "tracestate";
/// The most `tracestate` kept with a stored job. W3C lets a hop drop entries from the
/// end when the list is too long; a caller's oversized list must not fail its submit.
pub const MAX_STORED_TRACESTATE: usize = 512;

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// A span's context in its W3C text form, to store (a queued job) and to resume later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceCarrier {
    /// `traceparent`: version, trace id, span id, flags.
    pub traceparent: String,
    /// `tracestate`; empty when there is none.
    pub tracestate: String,
}

impl TraceCarrier {
    /// The context of `span`, when it has a valid one (the process exports traces).
    pub fn of(span: &Span) -> Option<Self> {
        let mut carrier = Self {
            traceparent: String::new(),
            tracestate: String::new(),
        };
        PROPAGATOR.inject_context(&span.context(), &mut carrier);
        carrier.tracestate = truncate_tracestate(&carrier.tracestate, MAX_STORED_TRACESTATE);
        (!carrier.traceparent.is_empty()).then_some(carrier)
    }

    /// Makes the context this carrier holds the parent of `span`. A malformed carrier (a
    /// row written by hand) is ignored: the span starts a trace of its own.
    pub fn set_parent_of(&self, span: &Span) {
        adopt(span, PROPAGATOR.extract(self));
    }
}

impl Injector for TraceCarrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = value,
            TRACESTATE => self.tracestate = value,
            _ => {}
        }
    }
}

impl Extractor for TraceCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent.as_str()),
            TRACESTATE if !self.tracestate.is_empty() => Some(self.tracestate.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Makes the context a caller sent in `headers` the parent of `span`. A missing or
/// malformed `traceparent` (anyone can send one) leaves `span` the root of a new trace;
/// the propagator accepts only the W3C format, so hostile values never reach a span.
pub fn set_parent_from_headers(span: &Span, headers: &http::HeaderMap) {
    adopt(span, PROPAGATOR.extract(&HeaderReader(headers)));
}

/// Makes `context` the parent of `span` when it names a span; an empty or invalid one
/// leaves `span` the root of a new trace.
fn adopt(span: &Span, context: opentelemetry::Context) {
    if context.span().span_context().is_valid() {
        // Fails only when the span has no OpenTelemetry layer or has started already.
        let _ = span.set_parent(context);
    }
}

/// Writes `span`'s context into outgoing HTTP `headers` (an external call over HTTP; a
/// gRPC call's headers before they leave).
pub fn inject_headers(span: &Span, headers: &mut http::HeaderMap) {
    PROPAGATOR.inject_context(&span.context(), &mut HeaderWriter(headers));
}

/// Writes `span`'s context into an outgoing gRPC call's metadata.
pub fn inject_metadata(span: &Span, metadata: &mut tonic::metadata::MetadataMap) {
    let mut headers = std::mem::take(metadata).into_headers();
    inject_headers(span, &mut headers);
    *metadata = tonic::metadata::MetadataMap::from_headers(headers);
}

/// The longest prefix of whole `tracestate` list members that fits in `limit` bytes.
fn truncate_tracestate(state: &str, limit: usize) -> String {
    if state.len() <= limit {
        return state.to_owned();
    }
    let mut kept = String::new();
    for member in state.split(',') {
        let extra = usize::from(!kept.is_empty()) + member.len();
        if kept.len() + extra > limit {
            break;
        }
        if !kept.is_empty() {
            kept.push(',');
        }
        kept.push_str(member);
    }
    kept
}

struct HeaderReader<'a>(&'a http::HeaderMap);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderWriter<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::prelude::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The trace id of `span` in hex; `None` without a valid context.
    fn trace_id(span: &Span) -> Option<String> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string())
    }

    /// A subscriber with the OpenTelemetry layer over an SDK provider that keeps nothing:
    /// spans get real identities, as in a process that exports.
    fn with_tracing<T>(body: impl FnOnce() -> T) -> T {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, body)
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn an_incoming_traceparent_becomes_the_parent_and_travels_on() {
        with_tracing(|| {
            let server = tracing::info_span!("server");
            set_parent_from_headers(&server, &headers(&[(TRACEPARENT, CALLER)]));
            assert_eq!(
                trace_id(&server).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let client = server.in_scope(|| tracing::info_span!("client"));
            let mut out = http::HeaderMap::new();
            inject_headers(&client, &mut out);
            let sent = out.get(TRACEPARENT).unwrap().to_str().unwrap();
            assert!(
                sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{sent}"
            );
            // The client span's own id, not the caller's.
            assert!(!sent.contains("00f067aa0ba902b7"), "{sent}");
        });
    }

    #[test]
    fn hostile_or_malformed_traceparents_start_a_new_trace() {
        with_tracing(|| {
            for bad in [
                "",
                "garbage",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ] {
                let span = tracing::info_span!("server");
                set_parent_from_headers(&span, &headers(&[(TRACEPARENT, bad)]));
                let id = trace_id(&span).unwrap();
                assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
            }
        });
    }

    #[test]
    fn a_stored_carrier_resumes_the_trace_with_its_state() {
        with_tracing(|| {
            let submit = tracing::info_span!("submit");
            set_parent_from_headers(
                &submit,
                &headers(&[(TRACEPARENT, CALLER), (TRACESTATE, "vendor=abc")]),
            );
            let stored = TraceCarrier::of(&submit).unwrap();
            assert_eq!(stored.tracestate, "vendor=abc");
            let worker = tracing::info_span!("process");
            stored.set_parent_of(&worker);
            assert_eq!(trace_id(&worker), trace_id(&submit));
            let mut metadata = tonic::metadata::MetadataMap::new();
            inject_metadata(&worker, &mut metadata);
            assert!(
                metadata
                    .get(TRACEPARENT)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .contains("4bf92f3577b34da6a3ce929d0e0e4736")
            );
        });
    }

    #[test]
    fn an_oversized_tracestate_loses_members_from_the_end() {
        assert_eq!(truncate_tracestate("a=1,b=2", 512), "a=1,b=2");
        assert_eq!(truncate_tracestate("a=1,b=2,c=3", 7), "a=1,b=2");
        assert_eq!(truncate_tracestate("a=1,b=2,c=3", 6), "a=1");
        assert_eq!(truncate_tracestate("abcdef=1", 3), "");
        with_tracing(|| {
            let members: Vec<String> = (0..32)
                .map(|i| format!("v{i}={}", "x".repeat(60)))
                .collect();
            let submit = tracing::info_span!("submit");
            set_parent_from_headers(
                &submit,
                &headers(&[(TRACEPARENT, CALLER), (TRACESTATE, &members.join(","))]),
            );
            let stored = TraceCarrier::of(&submit).unwrap();
            assert!(stored.tracestate.len() <= MAX_STORED_TRACESTATE);
            assert!(
                stored.tracestate.starts_with("v0="),
                "{}",
                stored.tracestate
            );
            assert!(stored.traceparent.len() <= 64);
        });
    }

    #[test]
    fn a_malformed_stored_carrier_is_ignored() {
        with_tracing(|| {
            let worker = tracing::info_span!("process");
            TraceCarrier {
                traceparent: "not a traceparent".into(),
                tracestate: String::new(),
            }
            .set_parent_of(&worker);
            assert!(trace_id(&worker).is_some());
        });
    }

    #[test]
    fn without_the_layer_nothing_is_carried() {
        let span = tracing::info_span!("untraced");
        assert_eq!(TraceCarrier::of(&span), None);
        let mut out = http::HeaderMap::new();
        inject_headers(&span, &mut out);
        assert!(out.is_empty());
        assert_eq!(trace_id(&span), None);
    }
}
