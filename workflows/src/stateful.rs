//! `StatefulWorkflow`: the Temporal glue around [`Core`]. Signals and updates only queue messages; the
//! run loop applies everything that arrived in one workflow task as one batch and executes the effects.
//! Workflow code is deterministic: time comes from `ctx.workflow_time()`, maps are `BTreeMap`s, and the
//! schema is read from the input or recorded in history by a local activity.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;
use stateful_engine::Schema;
use temporalio_common::data_converters::RawValue;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ContinueAsNewOptions, LocalActivityOptions, MemoValue,
    SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};
use tracing::{info, warn};

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use stateful_engine::schema::{CancellationType, ParentClosePolicy};
use temporalio_common::UntypedWorkflow;
use temporalio_common::error::{IncomingError, StartChildWorkflowExecutionFailedCause};
use temporalio_sdk::{
    ChildWorkflowCancellationType, ChildWorkflowExecutionError, ChildWorkflowOptions,
    ChildWorkflowStartError, SignalWorkflowOptions, WorkflowCancellationToken,
};

use crate::api::{LoadRequest, Loaded};
use crate::core::{Core, MsgKind};
use crate::input::StartInput;
use crate::markers::{JsonSignal, JsonWorkflow};
use crate::payload;
use crate::tree::{ChildEvent, Effect};

type Outcome = LocalBoxFuture<'static, Option<ChildEvent>>;

/// What a child start resolves to: a start failure to report, or the future of the child's result.
enum Started {
    Failed(Option<ChildEvent>),
    Running(String, u32, Outcome),
}

/// Effects in flight. Each resolves to a child event (fed back into the inbox) or nothing. Plain
/// vectors polled with the workflow's own context, not `FuturesUnordered`: its internal wakers are not
/// SDK primitives, and the SDK's nondeterminism detector rightly refuses them.
#[derive(Default)]
struct InFlight {
    /// Child starts not yet resolved: a run must not close before they are.
    starts: Vec<LocalBoxFuture<'static, Started>>,
    /// Results of started children: they resolve when a child ends.
    watchers: Vec<Outcome>,
    /// Signal deliveries and cancellation requests: they resolve within a workflow task or two.
    acks: Vec<Outcome>,
    /// The running `loadData` activity.
    load: Option<LocalBoxFuture<'static, Loaded>>,
    /// The periodic refresh timer, with the workflow time it was armed for.
    timer: Option<(u64, LocalBoxFuture<'static, ()>)>,
}

/// What woke the run loop besides new messages.
enum Wake {
    /// A child event (or nothing worth reporting).
    Child(Option<ChildEvent>),
    /// A load finished.
    Loaded(Loaded),
    /// The refresh timer fired.
    Timer,
}

/// Failure types of `loadData` that retrying cannot fix.
const LOAD_NON_RETRYABLE: [&str; 4] = ["Unauthorized", "Rejected", "BadBody", "BadInput"];

/// Starts the `loadData` activity when one is due. Loads retry transient failures (5xx, 408, 429 with
/// `Retry-After`, timeouts, connection errors) with backoff, up to 6 attempts; what is left is reported
/// to the workflow, which keeps running and loads again on the next trigger.
fn start_load(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    if inflight.load.is_some() {
        return;
    }
    let Some((LoadRequest { url, reason, batch }, token)) = ctx.state_mut(|s| s.core.take_load())
    else {
        return;
    };
    if !ctx.is_replaying() {
        info!(workflow_id = ctx.workflow_id(), %url, %reason, batch = batch.len(), "loading from the API");
    }
    let opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            temporalio_common::protos::temporal::api::common::v1::RetryPolicy {
                initial_interval: Some(Duration::from_millis(500).try_into().unwrap_or_default()),
                backoff_coefficient: 2.0,
                maximum_interval: Some(Duration::from_secs(30).try_into().unwrap_or_default()),
                maximum_attempts: 6,
                non_retryable_error_types: LOAD_NON_RETRYABLE.map(String::from).to_vec(),
            },
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .build();
    let c = ctx.clone();
    inflight.load = Some(
        async move {
            let not_found = || stateful_activities::LoadOutput {
                status: "notFound".into(),
                data: None,
                updates: None,
                strategy: None,
            };
            let done = if batch.is_empty() {
                c.execute_activity(
                    stateful_activities::HttpActivities::load_data,
                    stateful_activities::LoadInput {
                        url,
                        token,
                        timeout_ms: None,
                    },
                    opts,
                )
                .await
                .map(Loaded::Ok)
            } else {
                let (entities, mut urls): (Vec<String>, Vec<String>) = batch.into_iter().unzip();
                urls.insert(0, url);
                c.execute_activity(
                    stateful_activities::HttpActivities::load_batch,
                    stateful_activities::BatchInput {
                        urls,
                        token,
                        fail_fast: true,
                    },
                    opts,
                )
                .await
                .map(|outs| {
                    let mut outs = outs
                        .into_iter()
                        .map(|v| serde_json::from_value(v).unwrap_or_else(|_| not_found()));
                    let own = outs.next().unwrap_or_else(not_found);
                    Loaded::Many {
                        own,
                        related: entities.into_iter().zip(outs).collect(),
                    }
                })
            };
            match done {
                Ok(l) => l,
                Err(e) => {
                    let (kind, message) = match e.cause() {
                        Some(IncomingError::Application(app)) => (
                            app.type_name().unwrap_or("Failed").to_string(),
                            app.failure()
                                .map(|f| f.message.clone())
                                .unwrap_or_else(|| e.to_string()),
                        ),
                        Some(IncomingError::Timeout(_)) => {
                            ("Timeout".to_string(), "the load timed out".to_string())
                        }
                        _ => ("Failed".to_string(), e.to_string()),
                    };
                    Loaded::Error { kind, message }
                }
            }
        }
        .boxed_local(),
    );
}

/// Arms the refresh timer for the next refresh, unless it is armed already.
fn arm_timer(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    let Some(due) = ctx.state(|s| s.core.refresh_due()) else {
        return;
    };
    if inflight.timer.as_ref().is_some_and(|(at, _)| *at <= due) {
        // Armed for this time or earlier: when it fires early, it is re-armed.
        return;
    }
    let now = now_ms(ctx.workflow_time());
    let wait = Duration::from_millis(due.saturating_sub(now).max(1));
    let c = ctx.clone();
    inflight.timer = Some((
        due,
        async move {
            let _ = c.timer(wait).await;
        }
        .boxed_local(),
    ));
}

/// Polls every future of `set` once; removes and returns the first one that is done.
fn poll_set(set: &mut Vec<Outcome>, cx: &mut std::task::Context<'_>) -> Option<Option<ChildEvent>> {
    for i in 0..set.len() {
        if let std::task::Poll::Ready(x) = set[i].as_mut().poll(cx) {
            drop(set.remove(i));
            return Some(x);
        }
    }
    None
}

fn child_event(
    workflow_id: &str,
    generation: u32,
    event: &str,
    outcome: &str,
    detail: String,
) -> Option<ChildEvent> {
    Some(ChildEvent {
        workflow_id: workflow_id.to_string(),
        generation,
        event: event.into(),
        outcome: outcome.into(),
        detail,
    })
}

/// Runs effects: their commands are issued now; their outcomes arrive through `inflight`.
fn execute(ctx: &WorkflowContext<StatefulWorkflow>, effects: Vec<Effect>, inflight: &mut InFlight) {
    // Effects never inherit the workflow's own cancellation: a cancelled parent must still be able to
    // cancel its children and tell its subscribers.
    for e in effects {
        match e {
            Effect::Start {
                workflow_id,
                generation,
                workflow_type,
                task_queue,
                input,
                parent_close,
                cancel_type,
            } => {
                let opts = ChildWorkflowOptions::builder()
                    .workflow_id(workflow_id.clone())
                    .maybe_task_queue(task_queue)
                    .parent_close_policy(match parent_close {
                        ParentClosePolicy::Abandon => temporalio_sdk::ParentClosePolicy::Abandon,
                        ParentClosePolicy::RequestCancel => {
                            temporalio_sdk::ParentClosePolicy::RequestCancel
                        }
                        ParentClosePolicy::Terminate => {
                            temporalio_sdk::ParentClosePolicy::Terminate
                        }
                    })
                    .cancel_type(match cancel_type {
                        CancellationType::TryCancel => ChildWorkflowCancellationType::TryCancel,
                        CancellationType::WaitCancellationRequested => {
                            ChildWorkflowCancellationType::WaitCancellationRequested
                        }
                        CancellationType::WaitCancellationCompleted => {
                            ChildWorkflowCancellationType::WaitCancellationCompleted
                        }
                        CancellationType::Abandon => ChildWorkflowCancellationType::Abandon,
                    })
                    .cancellation_token(WorkflowCancellationToken::new())
                    .build();
                let c = ctx.clone();
                inflight.starts.push(
                    async move {
                        match c.start_child_workflow(JsonWorkflow(workflow_type), input, opts).await {
                            Err(ChildWorkflowStartError::StartFailed {
                                cause: StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                                ..
                            }) => Started::Failed(child_event(&workflow_id, generation, "alreadyRunning", "", String::new())),
                            Err(e) => Started::Failed(child_event(&workflow_id, generation, "startFailed", "", e.to_string())),
                            Ok(started) => Started::Running(
                                workflow_id.clone(),
                                generation,
                                async move {
                                    match started.result().await {
                                        Ok(_) => child_event(&workflow_id, generation, "ended", "completed", String::new()),
                                        Err(ChildWorkflowExecutionError::Failed(f)) => {
                                            let outcome = match f.cause() {
                                                Some(IncomingError::Cancelled(_)) => "cancelled",
                                                Some(IncomingError::Terminated(_)) => "terminated",
                                                Some(IncomingError::Timeout(_)) => "timedOut",
                                                _ => "failed",
                                            };
                                            child_event(&workflow_id, generation, "ended", outcome, f.failure().message.clone())
                                        }
                                        Err(e) => child_event(&workflow_id, generation, "ended", "failed", e.to_string()),
                                    }
                                }
                                .boxed_local(),
                            ),
                        }
                    }
                    .boxed_local(),
                );
            }
            Effect::Signal {
                workflow_id,
                name,
                payload,
                child_generation,
            } => {
                let fut = ctx.external_workflow(workflow_id.clone(), None).signal(
                    JsonSignal::<UntypedWorkflow>::new(name),
                    payload.unwrap_or(Value::Null),
                    SignalWorkflowOptions::builder()
                        .cancellation_token(WorkflowCancellationToken::new())
                        .build(),
                );
                inflight.acks.push(
                    async move {
                        match (fut.await, child_generation) {
                            (Err(e), Some(g)) => {
                                child_event(&workflow_id, g, "signalFailed", "gone", e.to_string())
                            }
                            _ => None,
                        }
                    }
                    .boxed_local(),
                );
            }
            Effect::Cancel { workflow_id } => {
                let handle = ctx.external_workflow(workflow_id, None);
                inflight.acks.push(
                    async move {
                        let _ = handle
                            .cancel(Some("its parent removed it or ended".into()))
                            .await;
                        None
                    }
                    .boxed_local(),
                );
            }
        }
    }
}

/// Polls the child starts: a started child's result joins the watchers; a failed start is reported.
fn poll_starts(
    inflight: &mut InFlight,
    cx: &mut std::task::Context<'_>,
) -> Option<Option<ChildEvent>> {
    let mut i = 0;
    while i < inflight.starts.len() {
        match inflight.starts[i].as_mut().poll(cx) {
            std::task::Poll::Ready(done) => {
                drop(inflight.starts.remove(i));
                match done {
                    Started::Failed(ev) => return Some(ev),
                    Started::Running(wid, generation, result) => {
                        inflight.watchers.push(result);
                        return Some(child_event(&wid, generation, "started", "", String::new()));
                    }
                }
            }
            std::task::Poll::Pending => i += 1,
        }
    }
    None
}

/// The next effect outcome (never, when none is in flight).
async fn next_outcome(inflight: &mut InFlight) -> Wake {
    futures::future::poll_fn(|cx| {
        if let Some(x) = poll_starts(inflight, cx) {
            return std::task::Poll::Ready(Wake::Child(x));
        }
        for set in [&mut inflight.acks, &mut inflight.watchers] {
            if let Some(x) = poll_set(set, cx) {
                return std::task::Poll::Ready(Wake::Child(x));
            }
        }
        if let Some(f) = inflight.load.as_mut()
            && let std::task::Poll::Ready(l) = f.as_mut().poll(cx)
        {
            inflight.load = None;
            return std::task::Poll::Ready(Wake::Loaded(l));
        }
        if let Some((_, f)) = inflight.timer.as_mut()
            && f.as_mut().poll(cx).is_ready()
        {
            inflight.timer = None;
            return std::task::Poll::Ready(Wake::Timer);
        }
        std::task::Poll::Pending
    })
    .await
}

/// The workflow type name on the wire.
pub const WORKFLOW_TYPE: &str = "StatefulWorkflow";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The worker's schema, handed to workflows that were started without one. Workflows read it through
/// the `workerSchema` local activity, so the value is recorded in their history: a worker restarted with
/// another schema file does not change what a running workflow does.
pub struct SchemaActivities {
    schema: Option<Value>,
}

impl SchemaActivities {
    /// With the worker's schema (extended-format JSON), if it has one.
    pub fn new(schema: Option<&Schema>) -> SchemaActivities {
        SchemaActivities {
            schema: schema.map(Schema::to_json),
        }
    }
}

#[activities]
impl SchemaActivities {
    /// The worker's schema, or null.
    #[activity(name = "workerSchema")]
    pub async fn worker_schema(
        self: Arc<Self>,
        _ctx: ActivityContext,
    ) -> Result<Value, ActivityError> {
        Ok(self.schema.clone().unwrap_or(Value::Null))
    }
}

fn now_ms(t: Option<std::time::SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fail(message: String) -> temporalio_sdk::WorkflowTermination {
    ApplicationFailure::non_retryable(message).into()
}

/// One entity's workflow.
#[workflow]
#[derive(Default)]
pub struct StatefulWorkflow {
    core: Core,
}

impl StatefulWorkflow {
    fn queue(&mut self, kind: MsgKind, input: RawValue) {
        self.core.enqueue(kind, payload::decode(&input), false);
    }
}

#[workflow_methods]
impl StatefulWorkflow {
    /// The main loop.
    #[run(name = "StatefulWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: RawValue) -> WorkflowResult<Value> {
        let input =
            payload::decode(&input).map_err(|e| fail(format!("bad workflow input: {e}")))?;
        let mut start =
            StartInput::parse(&input).map_err(|e| fail(format!("bad workflow input: {e}")))?;
        let schema_json = match start.schema.take() {
            Some(s) => s,
            None => ctx
                .execute_local_activity(
                    SchemaActivities::worker_schema,
                    (),
                    LocalActivityOptions::builder()
                        .start_to_close_timeout(Duration::from_secs(10))
                        .build(),
                )
                .await
                .map_err(|e| fail(format!("could not read the worker's schema: {e}")))?,
        };
        if schema_json.is_null() {
            return Err(fail(
                "no schema: start the worker with --schema FILE (or STATEFUL_SCHEMA), or put `schema` in the input"
                    .into(),
            ));
        }
        let schema =
            Schema::from_json(&schema_json).map_err(|e| fail(format!("bad schema: {e}")))?;
        let wid = ctx.workflow_id().to_string();
        let now = now_ms(ctx.workflow_time());
        ctx.state_mut(|s| s.core.start(start, schema, schema_json, wid, now))
            .map_err(|e| fail(format!("bad workflow input: {e}")))?;
        upsert_memo(ctx);
        if let Some(e) = ctx.state(|s| s.core.integrity_error.clone())
            && !ctx.is_replaying()
        {
            tracing::error!(workflow_id = ctx.workflow_id(), error = %e, "integrity check failed");
        }
        let mut inflight = InFlight::default();
        let first = ctx.state_mut(|s| s.core.initial_effects());
        execute(ctx, first, &mut inflight);
        start_load(ctx, &mut inflight);
        arm_timer(ctx, &mut inflight);
        loop {
            let wake = temporalio_sdk::workflows::select! {
                r = ctx.wait_condition(|s| s.core.has_work()).fuse() => Ok(r.is_err()),
                o = next_outcome(&mut inflight).fuse() => Err(o),
            };
            let cancelled = match wake {
                Ok(c) => c,
                Err(Wake::Child(None)) => continue,
                Err(Wake::Child(Some(ev))) => {
                    let v = serde_json::to_value(&ev).unwrap_or(Value::Null);
                    ctx.state_mut(|s| s.core.enqueue(MsgKind::ChildEvent, Ok(v), false));
                    false
                }
                Err(Wake::Loaded(l)) => {
                    if !ctx.is_replaying() {
                        crate::metrics::load(match &l {
                            Loaded::Ok(o) | Loaded::Many { own: o, .. } => o.status.as_str(),
                            Loaded::Error { kind, .. } => match kind.as_str() {
                                "Unauthorized" => "unauthorized",
                                "CircuitOpen" => "circuitOpen",
                                _ => "failed",
                            },
                        });
                        match &l {
                            Loaded::Ok(o) | Loaded::Many { own: o, .. } => {
                                info!(workflow_id = ctx.workflow_id(), status = %o.status, "loaded from the API")
                            }
                            Loaded::Error { kind, message } => {
                                warn!(workflow_id = ctx.workflow_id(), kind = %kind, error = %message, "load from the API failed")
                            }
                        }
                    }
                    let v = serde_json::to_value(&l).unwrap_or(Value::Null);
                    ctx.state_mut(|s| s.core.enqueue(MsgKind::Loaded, Ok(v), false));
                    false
                }
                Err(Wake::Timer) => {
                    let now = now_ms(ctx.workflow_time());
                    let due = ctx.state(|s| s.core.refresh_due());
                    if due.is_some_and(|d| now >= d) {
                        ctx.state_mut(|s| {
                            s.core
                                .enqueue(MsgKind::RefreshTimer, Ok(Value::Null), false)
                        });
                        false
                    } else {
                        // Fired for a refresh time that moved (a load ran meanwhile): re-arm.
                        arm_timer(ctx, &mut inflight);
                        continue;
                    }
                }
            };
            if cancelled {
                ctx.state_mut(|s| {
                    s.core
                        .enqueue(MsgKind::TemporalCancel, Ok(Value::Null), false)
                });
            }
            let now = now_ms(ctx.workflow_time());
            let out = ctx.state_mut(|s| s.core.process(now));
            if !ctx.is_replaying() {
                use crate::metrics as m;
                m::REJECTED_INPUTS.add(out.rejected.len() as u64);
                if !out.changes.is_empty() {
                    m::CHANGES_APPLIED.add(1);
                    m::ENTITIES_CHANGED.add(out.changes.len() as u64);
                }
                for e in &out.effects {
                    match e {
                        Effect::Start { generation, .. } if *generation > 1 => {
                            m::CHILDREN_RESTARTED.add(1)
                        }
                        Effect::Start { .. } => m::CHILDREN_STARTED.add(1),
                        Effect::Cancel { .. } => m::CHILDREN_CANCELLED.add(1),
                        Effect::Signal { .. } => m::SIGNALS_SENT.add(1),
                    }
                }
                for r in &out.rejected {
                    warn!(workflow_id = ctx.workflow_id(), signal = %r.signal, reason = %r.reason, "rejected input");
                }
                if !out.changes.is_empty() {
                    info!(
                        workflow_id = ctx.workflow_id(),
                        entities = out.changes.len(),
                        origins = %out.changes.sources().iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","),
                        version = ctx.state(|s| s.core.store.version()),
                        "applied changes"
                    );
                }
                if out.token_changed {
                    info!(workflow_id = ctx.workflow_id(), fingerprint = %ctx.state(|s| s.core.token_info()["fingerprint"].clone()), "api token rotated");
                }
                for e in &out.effects {
                    match e {
                        Effect::Start {
                            workflow_id,
                            generation,
                            ..
                        } => {
                            info!(workflow_id = ctx.workflow_id(), child = %workflow_id, generation, "starting child")
                        }
                        Effect::Cancel { workflow_id } => {
                            info!(workflow_id = ctx.workflow_id(), child = %workflow_id, "cancelling child")
                        }
                        Effect::Signal { .. } => {}
                    }
                }
            }
            let skipped = ctx.state_mut(|s| std::mem::take(&mut s.core.tree.newly_skipped));
            if !ctx.is_replaying() {
                for s in skipped {
                    info!(workflow_id = ctx.workflow_id(), child = %s.workflow_id, reason = %s.reason, "child not started");
                }
            }
            execute(ctx, out.effects, &mut inflight);
            start_load(ctx, &mut inflight);
            arm_timer(ctx, &mut inflight);
            if out.status_changed || cancelled {
                upsert_memo(ctx);
            }
            if ctx.state(|s| s.core.status.is_terminal()) {
                // Let accepted updates see their results, and the cascade's commands go out, before the
                // run ends.
                let _ = ctx.wait_condition(|s| s.core.handlers_idle()).await;
                drain_signals(&mut inflight).await;
                return Ok(ctx.state(|s| s.core.data()));
            }
            let limit = ctx.state(|s| s.core.max_history);
            if ctx.continue_as_new_suggested()
                || ctx.history_length() >= limit
                || ctx.state(|s| s.core.checkpoint_requested)
            {
                return continue_as_new(ctx, &mut inflight).await;
            }
        }
    }

    /// `update`: `{data? | updates?, entityName?, strategy?, changeOrigin?, subscriptionId?}`.
    #[signal(name = "update")]
    pub fn on_update(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Update, input);
    }

    /// `delete`: `{data? | deletions?, entityName?, changeOrigin?}`.
    #[signal(name = "delete")]
    pub fn on_delete(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Delete, input);
    }

    /// `state`: the whole normalized state, replacing the current one.
    #[signal(name = "state")]
    pub fn on_state(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::State, input);
    }

    /// `apiToken`: the new token, a JSON string.
    #[signal(name = "apiToken")]
    pub fn on_api_token(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::ApiToken, input);
    }

    /// `apiUrl`: the new URL, a JSON string.
    #[signal(name = "apiUrl")]
    pub fn on_api_url(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::ApiUrl, input);
    }

    /// `refresh` (no argument): load from the API now.
    #[signal(name = "refresh")]
    pub fn on_refresh(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Refresh, input);
    }

    /// `checkpoint` (no argument): continue as new now, recording the state's checksum.
    #[signal(name = "checkpoint")]
    pub fn on_checkpoint(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Checkpoint, input);
    }

    /// `pause` (no argument).
    #[signal(name = "pause")]
    pub fn on_pause(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Pause, input);
    }

    /// `resume` (no argument).
    #[signal(name = "resume")]
    pub fn on_resume(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Resume, input);
    }

    /// `cancel` (no argument): ends the workflow cleanly, returning its data.
    #[signal(name = "cancel")]
    pub fn on_cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Cancel, input);
    }

    /// `status` (chrono-forge's property signal): "running", "paused", "completed" or "cancelled".
    #[signal(name = "status")]
    pub fn on_status(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Status, input);
    }

    /// `subscribe`: a subscription object `{workflowId, subscriptionId, signalName, selector, ...}`.
    #[signal(name = "subscribe")]
    pub fn on_subscribe(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Subscribe, input);
    }

    /// `unsubscribe`: `{workflowId, subscriptionId}`.
    #[signal(name = "unsubscribe")]
    pub fn on_unsubscribe(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::Unsubscribe, input);
    }

    /// `childEnded`: a workflow we manage or follow reports that it ended (`{workflowId, status, reason}`).
    #[signal(name = "childEnded")]
    pub fn on_child_ended(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(MsgKind::ChildEnded, input);
    }

    /// Acknowledged `update`: answers with the new state version, or the reason it was refused.
    #[update(name = "update")]
    pub async fn update_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, MsgKind::Update, input).await
    }

    #[update_validator(update_ack)]
    fn validate_update(
        &self,
        _ctx: &WorkflowContextView,
        input: &RawValue,
    ) -> Result<(), BoxError> {
        Ok(self
            .core
            .validate(MsgKind::Update, &payload::decode(input))?)
    }

    /// Acknowledged `delete`.
    #[update(name = "delete")]
    pub async fn delete_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, MsgKind::Delete, input).await
    }

    #[update_validator(delete_ack)]
    fn validate_delete(
        &self,
        _ctx: &WorkflowContextView,
        input: &RawValue,
    ) -> Result<(), BoxError> {
        Ok(self
            .core
            .validate(MsgKind::Delete, &payload::decode(input))?)
    }

    /// Acknowledged `state`.
    #[update(name = "state")]
    pub async fn state_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, MsgKind::State, input).await
    }

    #[update_validator(state_ack)]
    fn validate_state(&self, _ctx: &WorkflowContextView, input: &RawValue) -> Result<(), BoxError> {
        Ok(self
            .core
            .validate(MsgKind::State, &payload::decode(input))?)
    }

    /// The entity id.
    #[query(name = "id")]
    pub fn q_id(&self, _ctx: &WorkflowContextView) -> Value {
        Value::String(self.core.id.clone())
    }

    /// The entity name.
    #[query(name = "entityName")]
    pub fn q_entity_name(&self, _ctx: &WorkflowContextView) -> Value {
        Value::String(self.core.entity.clone())
    }

    /// The normalized state.
    #[query(name = "state")]
    pub fn q_state(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.state()
    }

    /// The own entity, denormalized (null when absent).
    #[query(name = "data")]
    pub fn q_data(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.data()
    }

    /// `running`, `paused`, `cancelled` or `completed`.
    #[query(name = "status")]
    pub fn q_status(&self, _ctx: &WorkflowContextView) -> Value {
        Value::String(self.core.status_str().to_string())
    }

    /// The API URL (null when unset).
    #[query(name = "apiUrl")]
    pub fn q_api_url(&self, _ctx: &WorkflowContextView) -> Value {
        self.core
            .api_url()
            .map(Value::String)
            .unwrap_or(Value::Null)
    }

    /// The token's fingerprint and rotation count; never the token.
    #[query(name = "apiToken")]
    pub fn q_api_token(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.token_info()
    }

    /// The API: URL, `apiBase`, what the last load did, the refresh interval, the token's fingerprint.
    #[query(name = "api")]
    pub fn q_api(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.api_info()
    }

    /// Recomputes the checksum and checks the state: `{ok, version, checksum, entities, findings}`.
    #[query(name = "validate")]
    pub fn q_validate(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.validate_state()
    }

    /// Recent checkpoints: run id, time, version, checksum, reason.
    #[query(name = "checkpoints")]
    pub fn q_checkpoints(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::to_value(&self.core.checkpoints).unwrap_or(Value::Null)
    }

    /// State version, checksum and counters.
    #[query(name = "version")]
    pub fn q_version(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.version_info()
    }

    /// Messages queued for the next batch.
    #[query(name = "pendingChanges")]
    pub fn q_pending(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.pending()
    }

    /// The last rejected inputs and why.
    #[query(name = "rejected")]
    pub fn q_rejected(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.rejected_info()
    }

    /// The last applied batches.
    #[query(name = "recentChanges")]
    pub fn q_recent(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::to_value(&self.core.recent).unwrap_or(Value::Null)
    }

    /// The audit log: the last 50 applied batches (version, time, origins, entities touched) and the
    /// last 50 rejected inputs, carried over continue-as-new.
    #[query(name = "audit")]
    pub fn q_audit(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::json!({
            "changes": self.core.recent,
            "changesTotal": self.core.changes_total,
            "rejected": self.core.rejected,
            "rejectedTotal": self.core.rejected_total,
            "checkpoints": self.core.checkpoints,
        })
    }

    /// Subscriptions.
    #[query(name = "subscriptions")]
    pub fn q_subscriptions(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::to_value(&self.core.tree.subscriptions).unwrap_or(Value::Null)
    }

    /// Managed children (workflow id, entity, status, generation, last version sent) and the ones
    /// skipped as circular.
    #[query(name = "children")]
    pub fn q_children(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.tree.children_info()
    }

    /// The managed relations of the own entity and their options.
    #[query(name = "managedPaths")]
    pub fn q_managed_paths(&self, _ctx: &WorkflowContextView) -> Value {
        self.core
            .schema_json
            .get(&self.core.entity)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Ancestors' workflow ids.
    #[query(name = "ancestorWorkflowIds")]
    pub fn q_ancestors(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::to_value(&self.core.ancestors).unwrap_or(Value::Null)
    }

    /// The schema this workflow runs with.
    #[query(name = "schema")]
    pub fn q_schema(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.schema_json.clone()
    }
}

async fn acknowledged(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    kind: MsgKind,
    input: RawValue,
) -> Result<Value, BoxError> {
    let ticket = ctx
        .state_mut(|s| s.core.enqueue(kind, payload::decode(&input), true))
        .expect("a ticket was asked for");
    ctx.wait_condition(|s| s.core.results_ready(ticket)).await?;
    match ctx.state_mut(|s| s.core.take_result(ticket)) {
        Some(Ok(v)) => Ok(v),
        Some(Err(reason)) => Err(reason.into()),
        None => Err("the workflow ended before applying this change".into()),
    }
}

fn upsert_memo(ctx: &WorkflowContext<StatefulWorkflow>) {
    let memo = ctx.state(|s| s.core.memo());
    let _ = ctx.upsert_memo(memo.into_iter().map(|(k, v)| (k, Some(MemoValue::new(v)))));
}

/// Before a run ends: every effect has been polled (so its command is out), and every signal and
/// cancellation request is resolved. Child watchers are dropped with the run; the children keep running
/// (they are abandoned on close, and re-attached through the carried registry).
async fn drain_signals(inflight: &mut InFlight) {
    while !inflight.starts.is_empty() {
        futures::future::poll_fn(|cx| {
            let _ = poll_starts(inflight, cx);
            if inflight.starts.is_empty() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
    }
    futures::future::poll_fn(|cx| {
        while poll_set(&mut inflight.watchers, cx).is_some() {}
        std::task::Poll::Ready(())
    })
    .await;
    while !inflight.acks.is_empty() {
        futures::future::poll_fn(|cx| match poll_set(&mut inflight.acks, cx) {
            Some(_) => std::task::Poll::Ready(()),
            None => std::task::Poll::Pending,
        })
        .await;
    }
}

async fn continue_as_new(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    inflight: &mut InFlight,
) -> WorkflowResult<Value> {
    // Apply whatever is still arriving and let accepted updates answer, then hand over.
    loop {
        let now = now_ms(ctx.workflow_time());
        let out = ctx.state_mut(|s| s.core.process(now));
        execute(ctx, out.effects, inflight);
        if ctx.state(|s| s.core.inbox.is_empty() && s.core.handlers_idle()) {
            break;
        }
        let _ = ctx
            .wait_condition(|s| !s.core.inbox.is_empty() || s.core.handlers_idle())
            .await;
    }
    drain_signals(inflight).await;
    let run_id = ctx.run_id().to_string();
    let now = now_ms(ctx.workflow_time());
    let cp = ctx.state_mut(|s| s.core.checkpoint(&run_id, now));
    let next = ctx.state_mut(|s| s.core.carry_input());
    if !ctx.is_replaying() {
        crate::metrics::CHECKPOINTS.add(1);
        info!(workflow_id = ctx.workflow_id(), version = cp.version, checksum = %cp.checksum, reason = %cp.reason, "checkpoint: continuing as new");
    }
    ctx.continue_as_new(payload::encode(&next), ContinueAsNewOptions::default())?;
    unreachable!("continue_as_new always returns Err")
}
