//! Integration tests against a real Temporal dev server (started from the `temporal` CLI) and the real
//! `worker` binary. Run with `scripts/test`; `cargo test -p stateful-tests --test e2e -- NAME` runs the
//! tests whose name contains NAME, and `-- --list` lists them.
//!
//! Every `pub async fn NAME(env: &Env) -> anyhow::Result<()>` of the modules below is a test: `build.rs`
//! collects them (see `common/collect.rs`), and [`stateful_tests::harness`] runs them.

mod adoption; // a workflow found running under a child's id is adopted only when it is ours
mod api; // loading from an entity API, token rotation, no token leaks
mod cli; // the temporal CLI and the starter binary, as a user runs them
mod durable; // checkpoints, validation, the payload codec, export and import
mod explorer; // the web explorer in headless Chromium (WebDriver): the tree, live updates, actions, no token; `starter tree --format dot|mermaid`
mod extend; // a custom Rust worker (examples/custom-worker): its hook, activity, custom query, signal and update
mod hooks; // outbound change hooks against a local receiver: order, coalescing, keys, retries, refusals, pause
mod hostile; // careless and hostile clients through the temporal CLI: refused, harmless, no failed task
mod http_security; // the HTTP servers' limits, the codec server's token and CORS, secrets kept from children
mod lifecycle; // batching and continue-as-new, with workers of their own
mod limits; // big trees and big states: paced children, size budgets, long ids, deep data
mod many_workers; // three workers of their own restarted and killed under a 111-workflow tree's burst and rotation
mod mixed; // mixed fleets with chrono-forge peers (ForgeWorkflow): convergence and restarts both ways
mod observability; // the JSON log, and our metrics' labels and Prometheus names
mod recovery; // SIGKILL of the worker mid-burst and mid-rotation; temporal workflow reset
mod replay; // recorded histories replay with the current code
mod rolling_deploy; // a rolling deploy with real processes, versioned and not: build B (a patched difference) replaces A under a burst
mod scale_out; // workflow-only and activity-only workers on queues of their own, /healthz and /readyz, the drain on SIGTERM
mod schema_evolution; // a running tree's schema changed with `starter schema apply`: relations added and removed
mod tracing; // OpenTelemetry: one trace across a tree, a change's journey, to a local OTLP receiver
mod tree; // managed children and subscriptions
mod ui; // what the Temporal UI shows: summaries, details, current details; never the token
mod versioning; // Worker Versioning: pinned trees, moved by a checkpoint or `starter upgrade`; `starter tree` shows versions
mod visibility; // search attributes: temporal workflow list and starter list find a tree; registration
mod workflow; // StatefulWorkflow's signals, updates, queries, status and input errors

use std::process::ExitCode;

use stateful_tests::TestFn;
use stateful_tests::harness::{self, FinalFn};

fn main() -> ExitCode {
    let tests: Vec<(&'static str, TestFn)> = include!(concat!(env!("OUT_DIR"), "/e2e_tests.rs"));
    // After every other test: they recorded the fresh histories it replays.
    let replay_all: FinalFn = || Box::pin(async { replay::replay_all().await.map(|_| ()) });
    harness::main(tests, vec![("replay::replay_all", replay_all)])
}
