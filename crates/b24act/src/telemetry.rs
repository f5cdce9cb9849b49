//! Trace export: with the `otel` feature and `[telemetry] enabled`, the spans `serve` makes go to
//! an OpenTelemetry collector over OTLP/HTTP (docs/telemetry.md).
//!
//! The spans are the ones the code already has (`call`, `job`, `delivery`, `install_event`,
//! `b24_call`, …); this only adds a `tracing` layer that sends them, at the levels `RUST_LOG`
//! enables. A binary built without the feature reads the same `[telemetry]` section and refuses
//! `enabled = true`, rather than silently exporting nothing.

use host::config::TelemetryConfig;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// A layer that exports spans, when export is on.
pub type ExportLayer<S> = Option<Box<dyn Layer<S> + Send + Sync + 'static>>;

/// Refuses `telemetry.enabled` in a binary that cannot export.
pub fn ensure_built_in(telemetry: &TelemetryConfig) -> anyhow::Result<()> {
    if telemetry.enabled && !cfg!(feature = "otel") {
        anyhow::bail!(
            "telemetry.enabled is true, but this b24act was built without trace export: build it \
             with `cargo build --release --features otel`, or set telemetry.enabled = false \
             (B24ACT__TELEMETRY__ENABLED=false)"
        );
    }
    Ok(())
}

/// The layer sending spans as `telemetry` says (`None` when export is off), and what flushes it
/// at exit. Call it inside the tokio runtime: the batch processor is a task on it.
pub fn start<S>(telemetry: &TelemetryConfig) -> anyhow::Result<(ExportLayer<S>, Exporter)>
where
    S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    ensure_built_in(telemetry)?;
    #[cfg(feature = "otel")]
    if telemetry.enabled {
        let (layer, provider) = otel::start(telemetry)?;
        return Ok((Some(layer), Exporter { provider: Some(provider) }));
    }
    Ok((None, Exporter::default()))
}

/// Holds the export until [`Exporter::shutdown`]; holds nothing when export is off.
#[derive(Default)]
#[must_use = "spans still buffered are lost unless the exporter is shut down"]
pub struct Exporter {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Exporter {
    /// Sends the spans still buffered and stops. Call it after the runtime's `block_on` has
    /// returned, while the runtime still exists: this blocks until the batch task, which runs on
    /// the runtime, has sent them (at most the export timeout, 10 s).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(error = %b24::report::ErrorChain(&error), "the last spans were not exported");
        }
    }
}

#[cfg(feature = "otel")]
mod otel {
    use std::time::Duration;

    use anyhow::Context;
    use host::config::TelemetryConfig;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::runtime::Tokio;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing::Subscriber;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    /// How long one export request may take; also bounds the flush at exit.
    const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Targets whose spans and events are the export's own doing: the SDK's internal logs and
    /// the HTTP stack that carries the spans. Exporting those would make every export cause
    /// another one.
    const EXPORTERS_OWN: [&str; 5] = ["opentelemetry", "reqwest", "hyper", "h2", "rustls"];

    pub(super) fn start<S>(
        telemetry: &TelemetryConfig,
    ) -> anyhow::Result<(Box<dyn Layer<S> + Send + Sync + 'static>, SdkTracerProvider)>
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        // The exporter's reqwest client uses rustls without a built-in provider, as the REST
        // client does (b24::rest::HttpClient). Fails only if one is installed, as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(telemetry.endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .with_context(|| format!("telemetry.endpoint: exporting to {}", telemetry.endpoint))?;
        let resource = Resource::builder_empty()
            .with_service_name(telemetry.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        // A call and a job each start a trace (nothing upstream sends a trace context), so
        // the ratio decides for whole traces.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(telemetry.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter, Tokio).build())
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("b24act"))
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                !EXPORTERS_OWN.iter().any(|own| metadata.target().starts_with(own))
            }))
            .boxed();
        Ok((layer, provider))
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::Registry;

    use super::*;

    fn enabled() -> TelemetryConfig {
        TelemetryConfig { enabled: true, ..TelemetryConfig::default() }
    }

    #[test]
    fn with_export_off_there_is_no_layer() {
        let (layer, exporter) = start::<Registry>(&TelemetryConfig::default()).unwrap();
        assert!(layer.is_none());
        exporter.shutdown();
    }

    #[cfg(not(feature = "otel"))]
    #[test]
    fn a_binary_without_the_feature_refuses_export_and_names_the_feature() {
        let refused = ensure_built_in(&enabled()).unwrap_err().to_string();
        assert!(refused.starts_with("telemetry.enabled is true"), "{refused}");
        assert!(refused.contains("--features otel"), "{refused}");
        assert!(start::<Registry>(&enabled()).is_err());
    }

    // Multi-threaded: the shutdown waits for the batch task, which must run meanwhile.
    #[cfg(feature = "otel")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_binary_with_the_feature_exports_when_enabled() {
        ensure_built_in(&enabled()).unwrap();
        let (layer, exporter) = start::<Registry>(&enabled()).unwrap();
        assert!(layer.is_some());
        exporter.shutdown();
    }
}
