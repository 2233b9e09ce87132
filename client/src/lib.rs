//! The client side of StatefulWorkflows, shared by the worker, the starter and the tests:
//!
//! - [`connect`]: connection settings (Temporal's environment variables and profile file, with flags
//!   that override them) and connecting;
//! - [`codec`]: the payload codec: zstd compression, then AES-256-GCM encryption (and its keys);
//! - [`ops`]: operations on StatefulWorkflows by name and JSON (start, signal, query, update, walking a
//!   tree);
//! - [`visibility`]: the namespace's search attributes (checked, registered), list queries and
//!   listing;
//! - [`versioning`]: Worker Versioning: the deployment version a workflow runs on;
//! - [`telemetry`]: OpenTelemetry tracing (OTLP export, the SDK's tracing plugin), off unless the
//!   standard `OTEL_*` variables turn it on.

#![deny(missing_docs)]

pub mod codec;
pub mod connect;
pub mod ops;
pub mod telemetry;
pub mod versioning;
pub mod visibility;
