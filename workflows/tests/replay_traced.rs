//! The committed histories (recorded without tracing) replay with tracing on: the SDK's
//! `OpenTelemetryPlugin` installed as the worker installs it (with the `WorkflowIdGenerator` and
//! `WorkflowSpanProcessor` its documentation asks for), and the trace context of a change carried to
//! the commands it causes (`journey`). The plugin only adds headers to commands, which Temporal's
//! determinism checks do not compare; and a replay exports no workflow span.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, Span, SpanData, SpanProcessor};
use stateful_workflows::StatefulWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::opentelemetry::{
    OpenTelemetryPlugin, WorkflowIdGenerator, WorkflowSpanProcessor,
};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// Counts the spans that reach the exporter.
#[derive(Debug, Clone, Default)]
struct Counting(Arc<AtomicUsize>);

impl SpanProcessor for Counting {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, _span: SpanData) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Every `tests/histories/<version>/*.json`, sorted.
fn committed() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/histories");
    let mut out = Vec::new();
    for version in std::fs::read_dir(&dir).expect("tests/histories") {
        let version = version.expect("an entry").path();
        if version.is_dir() {
            for f in std::fs::read_dir(&version).expect("a version's directory") {
                let p = f.expect("an entry").path();
                if p.extension().is_some_and(|e| e == "json") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn committed_histories_replay_with_tracing_on_and_export_nothing() {
    let exported = Counting::default();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(WorkflowIdGenerator::default())
        .with_span_processor(WorkflowSpanProcessor::new(exported.clone()))
        .build();
    let plugin = OpenTelemetryPlugin::builder()
        .tracer(provider.tracer("replay"))
        .build();
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<StatefulWorkflow>()
            .expect("register")
            .worker_plugin(plugin)
            .build(),
    )
    .expect("replayer");
    let paths = committed();
    assert!(paths.len() >= 5, "history fixtures missing");
    let mut failures = Vec::new();
    for p in &paths {
        let h = WorkflowHistory::from_json(&std::fs::read(p).expect("read")).expect("a history");
        if let Err(e) = replayer.replay_workflow(h).await {
            failures.push(format!("{}: {e:#}", p.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "histories no longer replay with tracing on:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        exported.0.load(Ordering::SeqCst),
        0,
        "a replay exported workflow spans"
    );
}
