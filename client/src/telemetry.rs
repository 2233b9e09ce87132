//! OpenTelemetry tracing, shared by the worker and the starter: off by default, on when the standard
//! OpenTelemetry variables say so, exported over OTLP.
//!
//! - On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set, or
//!   `OTEL_TRACES_EXPORTER=otlp` (then to the default endpoint); `OTEL_TRACES_EXPORTER=none` turns it
//!   off whatever else is set (another exporter named there is refused).
//! - The exporter reads its own variables (`opentelemetry-otlp`): the endpoint, `_PROTOCOL` (`grpc`,
//!   `http/protobuf`, the default, or `http/json`), `_HEADERS`, `_TIMEOUT` (no compression:
//!   `_COMPRESSION` is refused); the SDK reads `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` and `OTEL_BSP_*`.
//! - [`plugins`] is what [`crate::connect::Resolved::connect`] installs on the client: the Temporal
//!   SDK's `OpenTelemetryPlugin`, which traces client calls, workflow runs, handlers, activities and
//!   the calls workflows make, and carries the context in the cross-SDK `_tracer-data` header (workers
//!   created from the client get it too).
//! - Replay: the tracer provider uses the plugin's `WorkflowIdGenerator` (the same span ids in
//!   execution and replay) and `WorkflowSpanProcessor` (nothing exported from a replay).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use temporalio_sdk::SimplePlugin;
use temporalio_sdk::opentelemetry::{
    OpenTelemetryPlugin, WorkflowIdGenerator, WorkflowSpanProcessor,
};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The tracer provider while tracing is on: [`Tracing::shutdown`] exports what is left.
pub struct Tracing {
    provider: SdkTracerProvider,
    /// Where spans go (for the startup log line).
    pub endpoint: String,
    /// `grpc`, `http/protobuf` or `http/json`.
    pub protocol: &'static str,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether the environment asks for traces: `Ok(false)` when it does not. `OTEL_TRACES_EXPORTER` is
/// a list: `otlp` in it turns tracing on, `none` off; another exporter is refused.
fn wanted() -> anyhow::Result<bool> {
    let Some(list) = var("OTEL_TRACES_EXPORTER") else {
        return Ok(var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some());
    };
    let mut on = false;
    for name in list.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        match name.as_str() {
            "otlp" => on = true,
            "none" | "" => {}
            other => bail!("OTEL_TRACES_EXPORTER: `{other}` is not supported (only otlp, or none)"),
        }
    }
    Ok(on)
}

/// The protocol the variables name (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
/// `OTEL_EXPORTER_OTLP_PROTOCOL`; the specification's default `http/protobuf` when neither is set).
fn protocol() -> anyhow::Result<(Protocol, &'static str)> {
    let named =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    match named.as_deref() {
        None | Some("http/protobuf") => Ok((Protocol::HttpBinary, "http/protobuf")),
        Some("http/json") => Ok((Protocol::HttpJson, "http/json")),
        Some("grpc") => Ok((Protocol::Grpc, "grpc")),
        Some(other) => {
            bail!("OTLP protocol `{other}`: use grpc, http/protobuf or http/json")
        }
    }
}

/// The endpoint the exporter will use (as it resolves it), for the log line and the TLS choice.
fn endpoint(protocol: Protocol) -> String {
    if let Some(e) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return e;
    }
    match (var("OTEL_EXPORTER_OTLP_ENDPOINT"), protocol) {
        (Some(e), Protocol::Grpc) => e,
        (Some(e), _) => format!("{}/v1/traces", e.trim_end_matches('/')),
        (None, Protocol::Grpc) => "http://localhost:4317".into(),
        (None, _) => "http://localhost:4318/v1/traces".into(),
    }
}

/// Starts tracing when the environment asks for it (see the module's documentation): sets the global
/// tracer provider the plugin uses, and makes [`plugins`] return it. `service` names the process
/// unless `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) does. Call it inside
/// the Tokio runtime (the gRPC exporter's channel lives there).
pub fn init(service: &str) -> anyhow::Result<Option<Tracing>> {
    if !wanted()? {
        return Ok(None);
    }
    let (protocol, protocol_name) = protocol()?;
    let endpoint = endpoint(protocol);
    let https = endpoint.starts_with("https://");
    let exporter = match protocol {
        Protocol::Grpc => {
            let mut b = SpanExporter::builder().with_tonic();
            if https {
                b = b.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_native_roots(),
                );
            }
            b.build()
        }
        _ => {
            if https {
                bail!(
                    "{endpoint}: the OTLP/HTTP exporter speaks plain HTTP only; use OTEL_EXPORTER_OTLP_PROTOCOL=grpc for a TLS endpoint"
                );
            }
            SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .build()
        }
    }
    .map_err(|e| anyhow!("cannot set up the OTLP trace exporter ({endpoint}): {e}"))?;
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let resource = if named {
        detected
    } else {
        Resource::builder()
            .with_service_name(service.to_string())
            .build()
    };
    let provider = SdkTracerProvider::builder()
        .with_id_generator(WorkflowIdGenerator::default())
        .with_span_processor(WorkflowSpanProcessor::new(
            BatchSpanProcessor::builder(exporter).build(),
        ))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    ENABLED.store(true, Ordering::SeqCst);
    Ok(Some(Tracing {
        provider,
        endpoint,
        protocol: protocol_name,
    }))
}

/// The client plugins tracing needs: the SDK's `OpenTelemetryPlugin` while tracing is on, none
/// otherwise.
pub fn plugins() -> Vec<SimplePlugin> {
    if ENABLED.load(Ordering::SeqCst) {
        vec![OpenTelemetryPlugin::builder().build()]
    } else {
        Vec::new()
    }
}

impl Tracing {
    /// Exports the spans still queued and stops the exporter (at most `timeout`).
    pub async fn shutdown(self, timeout: Duration) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("tracing: the last spans were not all exported: {e}"),
            Err(e) => tracing::warn!("tracing: shutting the exporter down failed: {e}"),
        }
    }
}

/// Runs `fut` in a new root span named `name` while tracing is on (the span of a starter command:
/// every call it makes is one trace), as it is otherwise. The span has no attributes.
pub async fn in_span<F: std::future::Future>(name: String, fut: F) -> F::Output {
    use opentelemetry::trace::{FutureExt as _, TraceContextExt as _, Tracer as _};
    if !ENABLED.load(Ordering::SeqCst) {
        return fut.await;
    }
    let span = opentelemetry::global::tracer("stateful").start(name);
    let cx = opentelemetry::Context::current_with_span(span);
    let out = fut.with_context(cx.clone()).await;
    cx.span().end();
    out
}
