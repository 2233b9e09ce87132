//! The tree's data: effects for the glue, child events, the children registry's records, subscriptions.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stateful_engine::Stamp;
use stateful_engine::schema::{CancellationType, ParentClosePolicy};

/// What the glue must do.
#[derive(Clone, PartialEq)]
pub enum Effect {
    /// Start a child workflow.
    Start {
        /// Its workflow id.
        workflow_id: String,
        /// Its generation (restarts count up), echoed in [`ChildEvent`]s.
        generation: u32,
        /// Workflow type.
        workflow_type: String,
        /// Task queue (default: ours).
        task_queue: Option<String>,
        /// Its input.
        input: Value,
        /// Parent-close policy.
        parent_close: ParentClosePolicy,
        /// Cancellation type.
        cancel_type: CancellationType,
    },
    /// Signal a workflow (a child, a parent, a subscriber).
    Signal {
        /// Target.
        workflow_id: String,
        /// Signal name.
        name: String,
        /// Payload (`None`: no argument).
        payload: Option<Value>,
        /// Set when the target is a child: a failed delivery means it is gone.
        child_generation: Option<u32>,
    },
    /// Request cancellation of a workflow.
    Cancel {
        /// Target.
        workflow_id: String,
    },
    /// Find out which workflow runs under a child's id (the `workflowType` local activity), before
    /// it is adopted: its answer comes back as a [`ChildEventKind::Verified`] event.
    Verify {
        /// The child's workflow id.
        workflow_id: String,
        /// Its generation, echoed in the answer.
        generation: u32,
    },
}

/// Payloads may hold the token (a child's input, an `apiToken` signal): `Debug` shows their size only.
impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |v: &Value| v.to_string().len();
        match self {
            Effect::Start {
                workflow_id,
                generation,
                workflow_type,
                input,
                ..
            } => f
                .debug_struct("Start")
                .field("workflow_id", workflow_id)
                .field("generation", generation)
                .field("workflow_type", workflow_type)
                .field("input_bytes", &size(input))
                .finish(),
            Effect::Signal {
                workflow_id,
                name,
                payload,
                child_generation,
            } => f
                .debug_struct("Signal")
                .field("workflow_id", workflow_id)
                .field("name", name)
                .field("payload_bytes", &payload.as_ref().map(size))
                .field("child_generation", child_generation)
                .finish(),
            Effect::Cancel { workflow_id } => f
                .debug_struct("Cancel")
                .field("workflow_id", workflow_id)
                .finish(),
            Effect::Verify {
                workflow_id,
                generation,
            } => f
                .debug_struct("Verify")
                .field("workflow_id", workflow_id)
                .field("generation", generation)
                .finish(),
        }
    }
}

/// What happened to a child, as the glue reports it (a [`crate::Msg::Child`] message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildEvent {
    /// The child.
    pub workflow_id: String,
    /// The generation the event is about.
    pub generation: u32,
    /// What happened.
    pub event: ChildEventKind,
    /// How it ended (for `ended` and `reported`), or why a signal failed.
    #[serde(default)]
    pub outcome: ChildOutcome,
    /// Details (an error message).
    #[serde(default)]
    pub detail: String,
    /// For `verified`: the type of the workflow that runs under the child's id (`None`: none runs,
    /// or it could not be told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_type: Option<String>,
}

impl ChildEvent {
    /// An event about `workflow_id`'s `generation`.
    pub fn new(
        workflow_id: &str,
        generation: u32,
        event: ChildEventKind,
        outcome: ChildOutcome,
        detail: String,
    ) -> ChildEvent {
        ChildEvent {
            workflow_id: workflow_id.to_string(),
            generation,
            event,
            outcome,
            detail,
            workflow_type: None,
        }
    }

    /// The answer of the `workflowType` local activity about `workflow_id`'s `generation` (an
    /// [`Effect::Verify`]): what runs under that id, or why it could not be told. Nothing running
    /// (no workflow has that id, or its last run ended) is outcome `gone`.
    pub fn verified(
        workflow_id: &str,
        generation: u32,
        answer: Result<Described, String>,
    ) -> ChildEvent {
        let (outcome, detail, workflow_type) = match answer {
            Ok(d) if d.running => (ChildOutcome::None, String::new(), d.workflow_type),
            Ok(d) => (
                ChildOutcome::Gone,
                match &d.workflow_type {
                    Some(t) => format!("its last run (a `{t}`) is {}", d.status),
                    None => "no workflow has this id".into(),
                },
                d.workflow_type,
            ),
            Err(e) => (ChildOutcome::None, e, None),
        };
        ChildEvent {
            workflow_type,
            ..ChildEvent::new(
                workflow_id,
                generation,
                ChildEventKind::Verified,
                outcome,
                detail,
            )
        }
    }
}

/// What the `workflowType` local activity found under a workflow id (DescribeWorkflowExecution
/// of its latest run).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Described {
    /// The type of its latest run; `None` when no workflow has that id.
    #[serde(default)]
    pub workflow_type: Option<String>,
    /// True when that run is running.
    #[serde(default)]
    pub running: bool,
    /// Its status (`running`, `completed`, `terminated`, ...; `notFound`).
    #[serde(default)]
    pub status: String,
}

/// What happened to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChildEventKind {
    /// Its start was confirmed.
    Started,
    /// A workflow with its id already runs (another parent's): it is adopted once it is verified
    /// to be of the expected type (see `Verified`).
    AlreadyRunning,
    /// What runs under its id was described (the answer to an [`Effect::Verify`]): `workflow_type`
    /// tells its type; outcome `gone` when nothing runs; `detail` holds the error when it could not
    /// be described.
    Verified,
    /// The server refused to start it.
    StartFailed,
    /// It ended (its result arrived).
    Ended,
    /// A signal to it could not be delivered: it is gone.
    SignalFailed,
    /// It reported that it ended (the `childEnded` signal).
    Reported,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ChildOutcome {
    /// Not an ending.
    #[default]
    #[serde(rename = "")]
    None,
    /// Completed.
    Completed,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Terminated.
    Terminated,
    /// Timed out.
    TimedOut,
    /// Gone (a signal could not reach it).
    Gone,
}

/// A child's state in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildStatus {
    /// Started (or adopted) and not known to have ended.
    Running,
    /// Ended by itself (completed, its entity deleted, a `cancel` signal): not signalled again.
    Completed,
    /// Failed: not signalled again.
    Failed,
    /// Removed from the relation: cancelled (or left running with `onRemove: keep`).
    Removed,
    /// A workflow of another type runs under its id: not adopted, sent nothing, never cancelled
    /// nor restarted (the reason is in [`ChildRec::conflict`]).
    Conflicting,
}

/// One managed child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildRec {
    /// Entity name.
    pub entity: String,
    /// Entity id.
    pub id: String,
    /// Relation field that holds it.
    pub field: String,
    /// Workflow type.
    pub workflow_type: String,
    /// Task queue, when not ours.
    #[serde(default)]
    pub task_queue: Option<String>,
    /// Status.
    pub status: ChildStatus,
    /// Starts so far (1 + restarts).
    pub generation: u32,
    /// Our state version when it was last sent something.
    pub version_sent: u64,
    /// True when another parent runs it and we adopted it.
    #[serde(default)]
    pub adopted: bool,
    /// False between the start command and its confirmation: it is not signalled directly then (the
    /// signal could reach no one), and gets what it missed once its start is confirmed.
    #[serde(default = "yes")]
    pub confirmed: bool,
    /// True while its start waits in the outbox (not issued yet): it is neither signalled nor
    /// cancelled, and a run that continues as new hands it to the next run to start.
    #[serde(default, skip_serializing_if = "is_false")]
    pub queued: bool,
    /// Why it ended, when it did.
    #[serde(default)]
    pub ended: Option<String>,
    /// The stamp of the token it was last given (see [`crate::order`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sent: Option<Stamp>,
    /// The stamp of the status it was last given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_sent: Option<Stamp>,
    /// The stamp of the schema it was last given (none: the schema the tree started with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_sent: Option<Stamp>,
    /// The stamp its current generation was started with (its incarnation): what an earlier,
    /// ended generation sent arrives with an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Stamp>,
    /// When we adopted it (the stamp of our `subscribe`): its answer tells its incarnation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_at: Option<Stamp>,
    /// True while what runs under its id (its start was refused: it already runs) is being
    /// verified ([`Effect::Verify`]): it is neither signalled nor cancelled until it is adopted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub verifying: bool,
    /// Why it is [`ChildStatus::Conflicting`]: the workflow found under its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

/// A subscription (chrono-forge's shape): send `signalName` to `workflowId` when what `selector` takes
/// changes here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Subscriber.
    pub workflow_id: String,
    /// Its id (unique per subscriber).
    #[serde(default)]
    pub subscription_id: String,
    /// `update` or `delete`.
    #[serde(default = "default_signal")]
    pub signal_name: String,
    /// What to send (`*` by default).
    #[serde(default = "default_selector")]
    pub selector: String,
    /// Set on subscriptions a managing parent gave its child (`Entity:id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The child side (`Entity:id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
    /// The subscriber's ancestors.
    #[serde(default)]
    pub ancestor_workflow_ids: Vec<String>,
    /// The subscriber's incarnation (a managing parent's): what an earlier, ended run of it sent
    /// arrives with an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<Stamp>,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_signal() -> String {
    "update".into()
}
fn default_selector() -> String {
    "*".into()
}
