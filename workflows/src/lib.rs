//! `StatefulWorkflow` on Temporal: the glue around the pure engine.
//!
//! - [`core`]: the workflow's state and decisions, without Temporal (inbox, batches, rejections, status).
//! - [`stateful`]: the `#[workflow]` type, its signals, queries and updates, and the run loop.
//! - [`input`]: the start input (wire protocol) and the continue-as-new carry-over.
//! - [`payload`]: tolerant payload decoding.
//! - [`markers`]: typed-by-name handles for clients and other workflows.
//! - [`api`]: loading from the entity's HTTP API: when, from which URL, and what the last load did.
//! - [`validate`]: the `validate` query (checksum, schema conformance, references, children registry).
//! - [`metrics`]: process-wide counters the worker exports to Prometheus.
//! - [`tree`]: managed children and subscriptions: what a batch must start, signal and cancel.

pub mod api;
pub mod core;
pub mod input;
pub mod markers;
pub mod metrics;
pub mod payload;
pub mod stateful;
pub mod tree;
pub mod validate;

pub use stateful::{SchemaActivities, StatefulWorkflow, WORKFLOW_TYPE};

/// The default task queue.
pub const DEFAULT_TASK_QUEUE: &str = "stateful";
