//! `StatefulWorkflow` on Temporal: only the glue around the decision core (`stateful-core`).
//!
//! - [`stateful`]: the `#[workflow]` type, its signals, acknowledged updates and queries.
//! - [`run`]: the run loop, one `run_batch` for the main loop and the continue-as-new hand-over, and
//!   the one place that turns a processed batch into metrics and log lines.
//! - [`effects`]: one function per effect (start a child, signal, cancel) and the outcomes in flight.
//! - [`loading`]: the `loadData` / `loadBatch` activities and the refresh timer.
//! - `hooks`: outbound change hooks, one `httpRequest` call at a time.
//! - [`describe`]: the `workflowType` local activity, which tells what runs under a child's id
//!   before it is adopted.
//! - [`extend`]: a custom worker's Rust extensions: entity hooks, custom signals, updates and
//!   queries (the stable API behind `worker::Worker::builder()`).
//! - [`payload`]: tolerant payload decoding.
//! - [`markers`]: typed-by-name handles for clients and other workflows.
//! - `logging`: the span every line of a run is logged in (namespace, task queue, workflow id, run
//!   id, workflow type).
//! - [`metrics`]: process-wide counters the worker exports to Prometheus.
//! - [`visibility`]: the search attributes (`StatefulEntity`, `StatefulId`, `StatefulStatus`,
//!   `StatefulRoot`) and the patch under which a run sets them.
//! - [`ui`]: what the Temporal UI shows: static summary and details, current details, and the
//!   summaries of loads and child starts.
#![deny(missing_docs)]

// The SDK's `#[activities]` macro generates an undocumented constant per method.
#[allow(missing_docs)]
pub mod describe;
pub(crate) mod effects;
pub mod extend;
pub(crate) mod hooks;
pub(crate) mod journey;
pub(crate) mod loading;
pub(crate) mod logging;
pub mod markers;
pub mod metrics;
pub mod payload;
pub(crate) mod run;
mod schemas;
// The SDK's `#[workflow_methods]` and `#[activities]` macros generate an undocumented constant per
// method; the methods themselves are documented.
#[allow(missing_docs)]
pub mod stateful;
pub mod ui;
pub mod visibility;

pub use describe::DescribeActivities;
pub use stateful::{SchemaActivities, StatefulWorkflow};
pub use stateful_core::WORKFLOW_TYPE;

/// The default task queue.
pub const DEFAULT_TASK_QUEUE: &str = "stateful";

static PAYLOAD_COMPRESSION: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Tells the workflows of this process that the payload codec compresses (the worker's
/// `--compress`). A tree's root reads it when it first starts and records it in its input
/// (`limits.compressed`), handed down to its children and over continue-as-new: sizes are then
/// measured compressed, and a state of several megabytes of JSON fits in one payload.
pub fn set_payload_compression(on: bool) {
    PAYLOAD_COMPRESSION.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the payload codec of this process compresses.
pub(crate) fn payload_compression() -> bool {
    PAYLOAD_COMPRESSION.load(std::sync::atomic::Ordering::Relaxed)
}

static ACTIVITY_TASK_QUEUE: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Tells the workflows of this process on which task queue the HTTP activities (`loadData`,
/// `loadBatch`) run (the worker's `--activity-task-queue`; `None`: each workflow's own). A tree's
/// root reads it only when it first starts and records it in the inputs it writes
/// (`activityTaskQueue`: its children's, its next run's), so that the tree keeps that queue
/// whatever the worker that replays it is configured with.
pub fn set_activity_task_queue(queue: Option<String>) {
    *ACTIVITY_TASK_QUEUE
        .write()
        .unwrap_or_else(|p| p.into_inner()) = queue.filter(|q| !q.is_empty());
}

/// The HTTP activities' task queue of this process (read by a root's first run only).
pub(crate) fn activity_task_queue() -> Option<String> {
    ACTIVITY_TASK_QUEUE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

static ADOPT_WORKER_SCHEMA: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Tells the workflows of this process to move to the worker's schema at their next
/// continue-as-new (the worker's `--adopt-worker-schema`). Read only by a continued run that starts
/// outside replay, whose decision is recorded in its history (the `adopt-worker-schema` patch, as
/// [`visibility`] records its own).
pub fn set_adopt_worker_schema(on: bool) {
    ADOPT_WORKER_SCHEMA.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether continued runs move to the worker's schema.
pub(crate) fn adopt_worker_schema() -> bool {
    ADOPT_WORKER_SCHEMA.load(std::sync::atomic::Ordering::Relaxed)
}

static SEARCH_ATTRIBUTES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells the workflows of this process that the namespace has the search attributes of
/// [`visibility`] (the worker checks, and registers them when it may, at startup). Read only by a
/// run that starts outside replay, whose decision is then recorded in its history (the patch
/// [`visibility::PATCH`]): see [`visibility`].
pub fn set_search_attributes(on: bool) {
    SEARCH_ATTRIBUTES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the namespace has the search attributes, as this worker found.
pub(crate) fn search_attributes() -> bool {
    SEARCH_ATTRIBUTES.load(std::sync::atomic::Ordering::Relaxed)
}

static TEST_PATCHED_DIFFERENCE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// **Test-only** (the worker's hidden `--test-patched-difference`; exists only for the
/// rolling-deploy e2e test, `tests/rolling_deploy.rs`): makes this process "build B", a build
/// with a deliberate behaviour difference guarded by the patch [`TEST_DIFFERENCE_PATCH`]. A run
/// that starts outside replay on such a worker records the patch's marker and upserts the memo
/// field [`TEST_DIFFERENCE_MEMO`] = `"B"`, once, as it starts. Read only where the patch is decided
/// (as [`set_search_attributes`]): a replaying run always asks the patch and gets what its history
/// recorded, whatever the replaying worker's flag, so histories written with or without it replay
/// on any worker. Never set in production.
pub fn set_test_patched_difference(on: bool) {
    TEST_PATCHED_DIFFERENCE.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether this process is the rolling-deploy test's build B.
pub(crate) fn test_patched_difference() -> bool {
    TEST_PATCHED_DIFFERENCE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The patch of the rolling-deploy test's behaviour difference ([`set_test_patched_difference`]).
pub const TEST_DIFFERENCE_PATCH: &str = "test-rolling-deploy-difference";

/// The memo field a run under [`TEST_DIFFERENCE_PATCH`] upserts (to `"B"`).
pub const TEST_DIFFERENCE_MEMO: &str = "deployedBehaviour";
