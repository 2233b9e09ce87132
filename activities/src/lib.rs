//! HTTP activities for StatefulWorkflow: load an entity's data from its API, make generic requests
//! (for workflows that write back), load many entities in one call. Errors are classified once, here
//! ([`error`]): what is worth retrying is retried by Temporal, what is not fails at once with a clear
//! type. A per-host circuit breaker ([`breaker`]) makes a failing API fail fast instead of piling up
//! retries from every workflow of a large tree (one probe after the cool-down; only the host's own
//! failures count; at most [`MAX_TRACKED_HOSTS`] hosts tracked). A host policy ([`hosts`]) refuses
//! destinations outside the worker's allow-list and link-local or cloud-metadata ones before anything
//! is sent, and redirects to another host. The API token is sent as a bearer header and never
//! appears in an error, a log line or a result.
//!
//! `StatefulWorkflow` runs `loadData` at start, when its token or URL changes, on `refresh` and every
//! `refreshInterval`, and `loadBatch` (with `partial`) when it loads its children's entities too;
//! `httpRequest` is there for workflows of other types.
//!
//! Every result stays within the worker's result budget (`HttpConfig::max_result_bytes`, under
//! Temporal's 2 MB payload limit): a larger one fails `ResultTooLarge`, not retried, instead of
//! being refused by the server after the work is done.

#![deny(missing_docs)]

pub mod breaker;
pub mod error;
pub mod hosts;
// The SDK's `#[activities]` macro generates an undocumented constant per activity; the activities
// themselves are documented.
#[allow(missing_docs)]
pub mod http;
pub mod metrics;

pub use breaker::{Breaker, Circuit, MAX_TRACKED_HOSTS};
pub use error::{HttpError, MAX_RETRY_AFTER};
pub use hosts::{HostPolicy, Lookup};
pub use http::{HttpActivities, HttpConfig, RequestInput, RequestOutput};
pub use metrics::Metrics;
pub use stateful_core::Secret;
/// The activities' inputs, outputs and failure kinds are the decision core's (Temporal-free) types.
pub use stateful_core::load::{
    BatchInput, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RESULT_BYTES, FailureKind, LoadInput,
    LoadOutput, LoadStatus, PAYLOAD_LIMIT_BYTES,
};
