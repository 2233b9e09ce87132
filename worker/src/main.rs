use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = worker::WorkerArgs::parse();
    worker::init_logging(args.log_format);
    match worker::run(args, worker::shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
