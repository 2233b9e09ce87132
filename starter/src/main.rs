//! `starter`: start, signal, query and update StatefulWorkflows.
//!
//! [`cli`] has the flags and subcommands, [`commands`] one function per subcommand.

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;

mod cli;
mod commands;
mod transfer;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let json_out = cli.json;
    match commands::run(cli).await {
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
