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
    ApplicationFailure, ContinueAsNewOptions, LocalActivityOptions, MemoValue, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};
use tracing::{info, warn};

use crate::core::{Core, MsgKind, Status};
use crate::input::StartInput;
use crate::payload;

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
        loop {
            let cancelled = ctx.wait_condition(|s| s.core.has_work()).await.is_err();
            let now = now_ms(ctx.workflow_time());
            let out = ctx.state_mut(|s| {
                let out = s.core.process(now);
                if cancelled && !s.core.status.is_terminal() {
                    s.core.status = Status::Cancelled;
                }
                out
            });
            if !ctx.is_replaying() {
                for r in &out.rejected {
                    warn!(workflow_id = ctx.workflow_id(), signal = %r.signal, reason = %r.reason, "rejected input");
                }
                if !out.changes.is_empty() {
                    info!(
                        workflow_id = ctx.workflow_id(),
                        entities = out.changes.len(),
                        version = ctx.state(|s| s.core.store.version()),
                        "applied changes"
                    );
                }
                if out.token_changed {
                    info!(workflow_id = ctx.workflow_id(), fingerprint = %ctx.state(|s| s.core.token_info()["fingerprint"].clone()), "api token rotated");
                }
            }
            if out.status_changed || cancelled {
                upsert_memo(ctx);
            }
            if ctx.state(|s| s.core.status.is_terminal()) {
                // Let updates already accepted see their results before the run ends.
                let _ = ctx.wait_condition(|s| s.core.handlers_idle()).await;
                return Ok(ctx.state(|s| s.core.data()));
            }
            let limit = ctx.state(|s| s.core.max_history);
            if ctx.continue_as_new_suggested() || ctx.history_length() >= limit {
                return continue_as_new(ctx).await;
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
        Value::String(self.core.status.as_str().to_string())
    }

    /// The API URL (null when unset).
    #[query(name = "apiUrl")]
    pub fn q_api_url(&self, _ctx: &WorkflowContextView) -> Value {
        self.core
            .api_url
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null)
    }

    /// The token's fingerprint and rotation count; never the token.
    #[query(name = "apiToken")]
    pub fn q_api_token(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.token_info()
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

    /// Subscriptions.
    #[query(name = "subscriptions")]
    pub fn q_subscriptions(&self, _ctx: &WorkflowContextView) -> Value {
        Value::Array(self.core.subscriptions.clone())
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
    let _ = ctx.upsert_memo(memo.map(|(k, v)| (k, Some(MemoValue::new(v)))));
}

async fn continue_as_new(ctx: &mut WorkflowContext<StatefulWorkflow>) -> WorkflowResult<Value> {
    // Apply whatever is still arriving and let accepted updates answer, then hand over.
    loop {
        let now = now_ms(ctx.workflow_time());
        ctx.state_mut(|s| s.core.process(now));
        if ctx.state(|s| s.core.inbox.is_empty() && s.core.handlers_idle()) {
            break;
        }
        let _ = ctx
            .wait_condition(|s| !s.core.inbox.is_empty() || s.core.handlers_idle())
            .await;
    }
    let next = ctx.state_mut(|s| s.core.carry_input());
    if !ctx.is_replaying() {
        info!(workflow_id = ctx.workflow_id(), "continuing as new");
    }
    ctx.continue_as_new(payload::encode(&next), ContinueAsNewOptions::default())?;
    unreachable!("continue_as_new always returns Err")
}
