//! Logs and traces: structured logging with `tracing`, and OpenTelemetry traces over
//! OTLP/gRPC when the standard `OTEL_*` environment names a collector.
//!
//! Both are layers over one `tracing` registry, each with its own filter: the log filter
//! (`log.filter`, `RUST_LOG`) says which lines are written, and never hides spans from the
//! trace layer, which takes every span and event at INFO and above. Our spans are at INFO;
//! the libraries' own (hyper, h2, tonic) are below it and stay out of traces.

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use appstack_config::{LogConfig, LogFormat};

/// How long shutdown waits for the last spans to reach the collector.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter (from `log.filter` or `RUST_LOG`) does not parse.
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The OTLP settings ask for what this build does not speak.
    #[error("{0}")]
    Unsupported(String),
    /// The OTLP exporter could not be built from its settings.
    #[error("OpenTelemetry trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Whether traces are exported, from the OpenTelemetry SDK's standard variables
/// (`lookup` reads one): only when a collector is named
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`), the SDK is not
/// disabled (`OTEL_SDK_DISABLED=true`) and the traces exporter is not `none`. Any other
/// exporter or protocol than OTLP over gRPC is refused with a clear message rather than
/// silently ignored.
///
/// # Errors
///
/// When `OTEL_TRACES_EXPORTER` or `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` names something
/// else than OTLP over gRPC.
pub fn traces_wanted(lookup: impl Fn(&str) -> Option<String>) -> Result<bool, TelemetryError> {
    let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(false);
    }
    match set("OTEL_TRACES_EXPORTER").as_deref().map(str::trim) {
        None | Some("otlp") => {}
        Some("none") => return Ok(false),
        Some(other) => {
            return Err(TelemetryError::Unsupported(format!(
                "OTEL_TRACES_EXPORTER={other:?} is not supported: AppStack exports traces with OTLP (otlp) or not at all (none)"
            )));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = set(name)
            && protocol.trim() != "grpc"
        {
            return Err(TelemetryError::Unsupported(format!(
                "{name}={protocol:?} is not supported: AppStack exports OTLP over gRPC (grpc, port 4317)"
            )));
        }
    }
    Ok(set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some())
}

/// What [`init`] installed; [`Telemetry::shutdown`] sends the spans still buffered.
#[derive(Debug, Default)]
#[must_use = "shut it down at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the trace exporter (bounded by a few seconds). On a blocking
    /// thread: the SDK's batch thread needs this runtime to send its last batch.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let flushed = tokio::task::spawn_blocking(move || {
                provider.shutdown_with_timeout(TRACE_FLUSH_TIMEOUT)
            })
            .await;
            if let Ok(Err(error)) = flushed {
                tracing::warn!(%error, "sending the last spans failed");
            }
        }
    }
}

/// Installs logging alone (one-shot commands: migrate, bootstrap). See [`init`].
///
/// # Errors
///
/// When the filter does not parse.
pub fn init_logging(config: &LogConfig) -> Result<(), TelemetryError> {
    install(config, log_filter(config)?, None);
    Ok(())
}

/// Installs the global subscriber: logs as `config` says (`RUST_LOG`, when set, overrides
/// `log.filter`), and traces to the OTLP collector the environment names, as
/// `service_name` unless `OTEL_SERVICE_NAME` says otherwise (see [`traces_wanted`]). Must
/// run inside the Tokio runtime (the exporter's gRPC client lives there). A second call
/// (tests start many servers in one process) keeps the first subscriber.
///
/// # Errors
///
/// When the filter does not parse or the OTLP settings are unusable.
pub fn init(config: &LogConfig, service_name: &str) -> Result<Telemetry, TelemetryError> {
    let filter = log_filter(config)?;
    let provider = if traces_wanted(|name| std::env::var(name).ok())? {
        Some(tracer_provider(service_name)?)
    } else {
        None
    };
    if install(config, filter, provider.as_ref()) {
        Ok(Telemetry { provider })
    } else {
        // Another subscriber was there first: this provider would never see a span.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        Ok(Telemetry::default())
    }
}

fn log_filter(config: &LogConfig) -> Result<EnvFilter, TelemetryError> {
    Ok(match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => EnvFilter::try_new(value)?,
        _ => EnvFilter::try_new(&config.filter)?,
    })
}

fn tracer_provider(service_name: &str) -> Result<SdkTracerProvider, TelemetryError> {
    // Endpoint, headers, timeout and compression come from the standard variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    // Sampler (OTEL_TRACES_SAMPLER, default parent-based always-on), limits and the batch
    // (OTEL_BSP_*) come from the environment too.
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build())
}

/// Installs the subscriber, logs through `filter`; false when one was installed already.
fn install(config: &LogConfig, filter: EnvFilter, provider: Option<&SdkTracerProvider>) -> bool {
    let traces = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("appstack"))
            .with_filter(LevelFilter::INFO)
    });
    let registry = tracing_subscriber::registry().with(traces);
    let result = match config.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .compact()
                    .with_ansi(use_colour(
                        std::io::stdout().is_terminal(),
                        std::env::var_os("NO_COLOR").as_deref(),
                    ))
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.is_ok()
}

/// Whether pretty logs are coloured: only on a terminal (a file or a pipe would get raw
/// escape codes), and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>). `is_terminal` is about stdout, where the log layer writes.
pub fn use_colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{TelemetryError, traces_wanted, use_colour};
    use std::ffi::OsStr;

    fn wanted(pairs: &[(&str, &str)]) -> Result<bool, TelemetryError> {
        traces_wanted(|name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn traces_only_when_a_collector_is_named() {
        assert!(!wanted(&[]).unwrap_or(true));
        assert!(!wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap_or(true));
        assert!(wanted(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")]).unwrap_or(false));
        assert!(
            wanted(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://otel:4317")]).unwrap_or(false)
        );
        assert!(
            !wanted(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ])
            .unwrap_or(true)
        );
        assert!(
            !wanted(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])
            .unwrap_or(true)
        );
        assert!(
            wanted(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])
            .unwrap_or(false)
        );
    }

    #[test]
    fn other_exporters_and_protocols_are_refused_by_name() {
        for (name, value) in [
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ] {
            let error = wanted(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317"),
                (name, value),
            ])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(error.contains(name) && error.contains(value), "{error}");
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
