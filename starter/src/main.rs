//! `starter`: start, signal, query and update StatefulWorkflows.
//!
//! [`cli`] has the flags and subcommands, [`commands`] one function per subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use serde_json::json;

mod cli;
mod commands;
mod transfer;

#[tokio::main]
async fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let json_out = cli.json;
    // OpenTelemetry tracing: off unless the standard OTEL_* variables turn it on; then the command
    // is one trace (a root span `starter <command>`), exported before the process exits.
    let tracing = match stateful_client::telemetry::init("stateful-starter") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let name = format!("starter {}", matches.subcommand_name().unwrap_or("-"));
    let result = stateful_client::telemetry::in_span(name, commands::run(cli)).await;
    if let Some(t) = tracing {
        t.shutdown(std::time::Duration::from_secs(5)).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_out {
                println!("{}", json!({"error": format!("{e:#}")}));
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
