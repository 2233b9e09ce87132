use std::time::Duration;

use clap::Parser;
use stateful_client::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = worker::WorkerArgs::parse();
    worker::init_logging(args.log_format);
    // OpenTelemetry tracing: off unless the standard OTEL_* variables turn it on.
    let tracing = match telemetry::init("stateful-worker") {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(t) = &tracing {
        tracing::info!(endpoint = %t.endpoint, protocol = t.protocol, "tracing on: exporting spans over OTLP");
    }
    let result = worker::run(args, worker::shutdown_signal()).await;
    // The spans of the last tasks (SIGTERM, SIGINT, or an error) are exported before we exit.
    if let Some(t) = tracing {
        t.shutdown(Duration::from_secs(5)).await;
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
