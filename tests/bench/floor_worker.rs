//! `floor-worker`: the raw-Temporal floor of the benchmarks ([`stateful_tests::floor`]) in a worker
//! process of its own, with the release `worker`'s pollers, cache, sticky timeout and runtime (a
//! multi-threaded tokio runtime), so that "ours ÷ floor" compares like with like.
//!
//! `floor-worker --address HOST:PORT --task-queue Q [--max-cached-workflows N]`; the other flags the
//! harness passes every worker (`--namespace`, `--schema`, `--metrics-addr`, `--no-dev-server`)
//! are read and ignored but for the namespace. Logs `worker ready` once it polls.

use anyhow::{Context, bail};
use stateful_tests::floor::floor_worker_options;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut address, mut queue, mut namespace, mut cached) =
        (None, None, "default".to_string(), 1000usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--address" => address = args.next(),
            "--task-queue" => queue = args.next(),
            "--namespace" => namespace = args.next().context("--namespace needs a value")?,
            "--max-cached-workflows" => {
                cached = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--max-cached-workflows needs a number")?
            }
            "--schema" | "--metrics-addr" => {
                args.next();
            }
            "--no-dev-server" => {}
            other => bail!("floor-worker: unknown argument {other}"),
        }
    }
    let address = address.context("--address is required")?;
    let queue = queue.context("--task-queue is required")?;
    let client = stateful_tests::client_in(&address, &namespace).await?;
    let runtime = temporalio_sdk::Runtime::from_current_tokio(Default::default())?;
    let mut worker = temporalio_sdk::Worker::new(
        &runtime,
        client,
        floor_worker_options(queue.clone(), cached),
    )?;
    eprintln!(
        "floor-worker: worker ready task_queue={queue} pid={}",
        std::process::id()
    );
    worker.run().await?;
    Ok(())
}
