//! The decision core of StatefulWorkflow, without Temporal and without I/O: everything a workflow
//! decides, so that its tests run in seconds. The Temporal glue (`stateful-workflows`) feeds a
//! [`Core`] typed messages ([`Msg`]) and the workflow time, and executes the [`Effect`]s it returns.
//!
//! # Layout
//! - [`state`]: [`Core`], the state of one workflow, made of sub-states; a batch ([`Core::process`])
//!   dispatches each message to one small handler; queries, the memo, the continue-as-new hand-over
//!   and the `validate` query.
//! - [`msg`]: the typed inbox's messages ([`Msg`], [`Signal`]); [`inbox`]: the queue and update
//!   tickets; [`audit`]: recent changes, rejections, checkpoints.
//! - [`tree`]: the children registry and subscriptions; [`tree::planner`]: every effect decision.
//! - [`api`]: when to load from the entity's API and from which URL; [`answer`]: what an answer does
//!   to the store; [`load`]: the HTTP activities' inputs, outputs and failure kinds.
//! - [`input`]: the start input (wire protocol) and the continue-as-new carry-over; [`limits`]: what
//!   a workflow keeps under; [`outbox`]: effects leave in waves within those limits.
//! - [`hooks`]: outbound change hooks (`onChange`): observed per batch, coalesced, delivered one at a
//!   time in version order.
//! - [`secret`]: [`Secret`], the token type whose `Debug` shows only a fingerprint.
//! - [`valid`]: checks of the fields messages bring (tokens, URLs and their hosts, subscriptions).
#![deny(missing_docs)]

pub mod answer;
pub mod api;
pub mod audit;
pub mod hooks;
pub mod inbox;
pub mod input;
pub mod limits;
pub mod load;
pub mod msg;
pub mod order;
pub mod outbox;
pub mod secret;
pub mod state;
pub mod status;
pub mod tree;
pub mod valid;

pub use limits::Limits;
pub use load::{FailureKind, LoadOutput, LoadStatus, Loaded};
pub use msg::{Msg, Signal};
pub use outbox::Pending;
pub use secret::Secret;
pub use state::{Core, Processed};
pub use status::Status;
pub use tree::{ChildEvent, ChildEventKind, ChildOutcome, Described, Effect};

/// The workflow type name on the wire.
pub const WORKFLOW_TYPE: &str = "StatefulWorkflow";
