//! `StatefulWorkflow`: the `#[workflow]` type, its signals, acknowledged updates and queries. Signals
//! and updates only queue typed messages for the [`Core`]; the run loop ([`crate::run`]) applies them.
//! Workflow code is deterministic: time comes from `ctx.workflow_time()`, maps are `BTreeMap`s, and the
//! schema is read from the input or recorded in history by a local activity.

use std::sync::Arc;

use serde_json::Value;
use stateful_core::{Core, Signal};
use stateful_engine::Schema;
use temporalio_common::data_converters::RawValue;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::payload;

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

/// One entity's workflow.
#[workflow]
#[derive(Default)]
pub struct StatefulWorkflow {
    pub(crate) core: Core,
    /// Whether this run sets its search attributes (decided once, as it starts: see
    /// [`crate::visibility`]).
    pub(crate) search_attributes: bool,
    /// The trace context of the first message of the next batch (see [`crate::journey`]).
    pub(crate) journey: crate::journey::Journey,
    /// Hook deliveries (delivered, refused) already counted in the metrics.
    pub(crate) hooks_reported: (u64, u64),
    /// Extensions: the `custom` signals and updates waiting for their batch (see
    /// [`crate::extend`]).
    pub(crate) ext: crate::extend::Inbox,
}

impl StatefulWorkflow {
    fn queue(&mut self, signal: Signal, input: RawValue) {
        self.journey.note();
        self.core.signal(signal, payload::decode(&input));
    }
}

#[workflow_methods]
impl StatefulWorkflow {
    /// The main loop.
    #[run(name = "StatefulWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: RawValue) -> WorkflowResult<Value> {
        // Every line the run logs names its workflow (see `crate::logging`).
        let span = crate::logging::span(ctx);
        tracing::Instrument::instrument(crate::run::run(ctx, input), span).await
    }

    /// `update`: `{data? | updates?, entityName?, strategy?, changeOrigin?, subscriptionId?}`.
    #[signal(name = "update")]
    pub fn on_update(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Update, input);
    }

    /// `delete`: `{data? | deletions?, entityName?, changeOrigin?}`.
    #[signal(name = "delete")]
    pub fn on_delete(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Delete, input);
    }

    /// `state`: the whole normalized state, replacing the current one.
    #[signal(name = "state")]
    pub fn on_state(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::State, input);
    }

    /// `apiToken`: the new token, a JSON string.
    #[signal(name = "apiToken")]
    pub fn on_api_token(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::ApiToken, input);
    }

    /// `apiUrl`: the new URL, a JSON string.
    #[signal(name = "apiUrl")]
    pub fn on_api_url(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::ApiUrl, input);
    }

    /// `refresh` (no argument): load from the API now.
    #[signal(name = "refresh")]
    pub fn on_refresh(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Refresh, input);
    }

    /// `checkpoint` (no argument): continue as new now, recording the state's checksum.
    #[signal(name = "checkpoint")]
    pub fn on_checkpoint(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Checkpoint, input);
    }

    /// `pause` (no argument).
    #[signal(name = "pause")]
    pub fn on_pause(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Pause, input);
    }

    /// `resume` (no argument).
    #[signal(name = "resume")]
    pub fn on_resume(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Resume, input);
    }

    /// `cancel` (no argument): ends the workflow cleanly, returning its data.
    #[signal(name = "cancel")]
    pub fn on_cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Cancel, input);
    }

    /// `status` (chrono-forge's property signal): "running", "paused", "completed" or "cancelled".
    #[signal(name = "status")]
    pub fn on_status(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Status, input);
    }

    /// `subscribe`: a subscription object `{workflowId, subscriptionId, signalName, selector, ...}`.
    #[signal(name = "subscribe")]
    pub fn on_subscribe(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Subscribe, input);
    }

    /// `unsubscribe`: `{workflowId, subscriptionId}`.
    #[signal(name = "unsubscribe")]
    pub fn on_unsubscribe(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Unsubscribe, input);
    }

    /// `childEnded`: a workflow we manage or follow reports that it ended (`{workflowId, status, reason}`).
    #[signal(name = "childEnded")]
    pub fn on_child_ended(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::ChildEnded, input);
    }

    /// `schema`: a new schema (the schema file's format, as a JSON object), applied to this
    /// workflow and handed down to its subtree when allowed; refused with the reasons otherwise.
    #[signal(name = "schema")]
    pub fn on_schema(&mut self, _ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        self.queue(Signal::Schema, input);
    }

    /// Acknowledged `schema`: answers with the schema the workflow then runs (`{checksum,
    /// version, ...}`), or the reasons it was refused.
    #[update(name = "schema")]
    pub async fn schema_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, Signal::Schema, input).await
    }

    #[update_validator(schema_ack)]
    fn validate_schema(
        &self,
        _ctx: &WorkflowContextView,
        input: &RawValue,
    ) -> Result<(), BoxError> {
        Ok(self
            .core
            .validate(Signal::Schema, &payload::decode(input))?)
    }

    /// Acknowledged `update`: answers with the new state version, or the reason it was refused.
    #[update(name = "update")]
    pub async fn update_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, Signal::Update, input).await
    }

    #[update_validator(update_ack)]
    fn validate_update(
        &self,
        _ctx: &WorkflowContextView,
        input: &RawValue,
    ) -> Result<(), BoxError> {
        Ok(self
            .core
            .validate(Signal::Update, &payload::decode(input))?)
    }

    /// Acknowledged `delete`.
    #[update(name = "delete")]
    pub async fn delete_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, Signal::Delete, input).await
    }

    #[update_validator(delete_ack)]
    fn validate_delete(
        &self,
        _ctx: &WorkflowContextView,
        input: &RawValue,
    ) -> Result<(), BoxError> {
        Ok(self
            .core
            .validate(Signal::Delete, &payload::decode(input))?)
    }

    /// Acknowledged `state`.
    #[update(name = "state")]
    pub async fn state_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        acknowledged(ctx, Signal::State, input).await
    }

    #[update_validator(state_ack)]
    fn validate_state(&self, _ctx: &WorkflowContextView, input: &RawValue) -> Result<(), BoxError> {
        Ok(self.core.validate(Signal::State, &payload::decode(input))?)
    }

    /// `custom`: a custom worker's own signal, `{"name": ..., "args": ...}` (or the name alone),
    /// run by the handler registered under that name at the start of the next batch (see
    /// [`crate::extend`]); dropped with a warning when no handler has that name.
    #[signal(name = "custom")]
    pub fn on_custom(&mut self, ctx: &mut SyncWorkflowContext<Self>, input: RawValue) {
        let replaying = ctx.is_replaying();
        crate::extend::signal_arrived(self, payload::decode(&input), replaying);
    }

    /// Acknowledged `custom`: a custom worker's own update, `{"name": ..., "args": ...}`, answered
    /// by the handler registered under that name (run at the start of the next batch).
    #[update(name = "custom")]
    pub async fn custom_ack(
        ctx: &mut WorkflowContext<Self>,
        input: RawValue,
    ) -> Result<Value, BoxError> {
        Ok(crate::extend::acknowledged(ctx, payload::decode(&input)).await?)
    }

    #[update_validator(custom_ack)]
    fn validate_custom(
        &self,
        _ctx: &WorkflowContextView,
        input: &RawValue,
    ) -> Result<(), BoxError> {
        Ok(crate::extend::validate_update(
            &self.core,
            &payload::decode(input),
        )?)
    }

    /// `custom`: a custom worker's own query, `{"name": ..., "args": ...}` (or the name alone),
    /// answered by the handler registered under that name; an error names the known ones.
    #[query(name = "custom")]
    pub fn q_custom(&self, _ctx: &WorkflowContextView, input: RawValue) -> Result<Value, BoxError> {
        let v = crate::extend::query(&self.core, payload::decode(&input))?;
        fit(&self.core, v)
    }

    /// The entity id.
    #[query(name = "id")]
    pub fn q_id(&self, _ctx: &WorkflowContextView) -> Value {
        Value::String(self.core.id().to_string())
    }

    /// The entity name.
    #[query(name = "entityName")]
    pub fn q_entity_name(&self, _ctx: &WorkflowContextView) -> Value {
        Value::String(self.core.entity().to_string())
    }

    /// The normalized state.
    #[query(name = "state")]
    pub fn q_state(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        fit(&self.core, self.core.state())
    }

    /// The own entity, denormalized (null when absent).
    #[query(name = "data")]
    pub fn q_data(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        fit(&self.core, self.core.data())
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

    /// The outbound change hooks: the entity's hooks, deliveries waiting and out, delivered and
    /// refused counts, the last delivery and recent refusals with their reasons.
    #[query(name = "hooks")]
    pub fn q_hooks(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.hooks_info()
    }

    /// The API: URL, `apiBase`, what the last load did, the refresh interval, the token's fingerprint.
    #[query(name = "api")]
    pub fn q_api(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.api_info()
    }

    /// Recomputes the checksum and checks the state: `{ok, version, checksum, entities, findings}`.
    #[query(name = "validate")]
    pub fn q_validate(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        fit(&self.core, self.core.validate_state())
    }

    /// Recent checkpoints: run id, time, version, checksum, reason.
    #[query(name = "checkpoints")]
    pub fn q_checkpoints(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.audit().checkpoints_info()
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
        self.core.audit().recent_info()
    }

    /// The audit log: the last 50 applied batches (version, time, origins, entities touched) and the
    /// last 50 rejected inputs, carried over continue-as-new.
    #[query(name = "audit")]
    pub fn q_audit(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        fit(&self.core, self.core.audit().info())
    }

    /// Subscriptions.
    #[query(name = "subscriptions")]
    pub fn q_subscriptions(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        fit(&self.core, self.core.subscriptions_info())
    }

    /// Managed children (workflow id, entity, status, generation, last version sent), the ones
    /// skipped (and why), and counts by status.
    #[query(name = "children")]
    pub fn q_children(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        // A registry too large for one answer lists its first records (the counts stay whole).
        let mut max = usize::MAX;
        loop {
            let v = self.core.tree().children_info_within(max);
            if max == 0 || self.core.limits().fits(&v) {
                return fit(&self.core, v);
            }
            max = if max == usize::MAX { 4_000 } else { max / 2 };
        }
    }

    /// What a tree view shows of this workflow, in one answer: `status`, `entityName`, `id`,
    /// `version` (as the `version` query), `api` (as the `api` query: the token's fingerprint
    /// only), `children` (as the `children` query, cut to fit), `subscriptions`, and the hooks'
    /// counts. The explorer asks it instead of five queries per workflow.
    #[query(name = "overview")]
    pub fn q_overview(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        let mut max = None;
        loop {
            let v = self.core.overview(max);
            if max == Some(0) || self.core.limits().fits(&v) {
                return fit(&self.core, v);
            }
            max = Some(max.map_or(4_000, |m: usize| m / 2));
        }
    }

    /// The managed relations of the own entity and their options.
    #[query(name = "managedPaths")]
    pub fn q_managed_paths(&self, _ctx: &WorkflowContextView) -> Value {
        self.core.managed_paths()
    }

    /// Ancestors' workflow ids.
    #[query(name = "ancestorWorkflowIds")]
    pub fn q_ancestors(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::to_value(self.core.ancestors()).unwrap_or(Value::Null)
    }

    /// The schema this workflow runs with: `{checksum, version, stamp, entities, schema}`.
    #[query(name = "schema")]
    pub fn q_schema(&self, _ctx: &WorkflowContextView) -> Result<Value, BoxError> {
        fit(&self.core, self.core.schema_info())
    }
}

/// A query's answer, unless it is too large for one payload: the query then fails, saying so
/// (rather than the whole query task).
fn fit(core: &Core, v: Value) -> Result<Value, BoxError> {
    let l = core.limits();
    let n = l.measure(&v);
    if n <= l.max_payload_bytes {
        return Ok(v);
    }
    Err(format!(
        "the answer would take {n} bytes, more than the {} bytes one payload may hold: query \
         something smaller, or run the tree with payload compression (worker --compress)",
        l.max_payload_bytes
    )
    .into())
}

async fn acknowledged(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    signal: Signal,
    input: RawValue,
) -> Result<Value, BoxError> {
    let ticket = ctx.state_mut(|s| {
        s.journey.note();
        s.core.enqueue_update(signal, payload::decode(&input))
    });
    ctx.wait_condition(|s| s.core.results_ready(ticket)).await?;
    match ctx.state_mut(|s| s.core.take_result(ticket)) {
        Some(Ok(v)) => Ok(v),
        Some(Err(reason)) => Err(reason.into()),
        None => Err("the workflow ended before applying this change".into()),
    }
}
