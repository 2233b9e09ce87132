//! Extensions: a custom worker's own Rust code beside `StatefulWorkflow` (the stable API of a custom
//! worker, built with `worker::Worker::builder()`).
//!
//! - **Entity hooks** ([`EntityHook`], one or more per entity): called in workflow code after every
//!   batch that changed the workflow's own entity (or its status), with the change ([`HookCx`]);
//!   they act through the same paths as the planner: an `update` applied in the next batch
//!   ([`HookCx::update`], [`HookCx::set`]), a signal to any workflow ([`HookCx::signal`]), an
//!   activity run by name ([`HookCx::activity`], its result back in
//!   [`EntityHook::on_activity_result`]).
//! - **Custom signals, acknowledged updates and queries**, by name: the SDK has no dynamic handlers,
//!   so `StatefulWorkflow` declares one of each named `custom`, whose argument is an envelope
//!   `{"name": "...", "args": ...}` (or just the name, as a JSON string) dispatched to the handler
//!   registered under that name ([`Extensions::signal`], [`Extensions::update`],
//!   [`Extensions::query`]). Signals and updates run in workflow code at the start of the next batch,
//!   with a [`HookCx`] (their `update`s apply in that same batch); queries get a read-only
//!   [`QueryCx`].
//!
//! The extensions are installed once per process, before the worker starts ([`install`]); none by
//! default, and then the workflow does exactly what it does without this module (no command, no
//! marker: histories replay unchanged).
//!
//! # Determinism
//!
//! Hooks and custom signal and update handlers are workflow code: they run again, in the same order,
//! whenever a workflow is replayed, and must make the same calls. No I/O (files, network,
//! environment variables), no clock (use [`HookCx::now_ms`]), no randomness, no iteration over a
//! `HashMap` or `HashSet` (use `BTreeMap`); state kept between calls belongs in the entity (write it
//! with [`HookCx::set`]), never in the hook's own fields (one hook serves every workflow of the
//! process, and a workflow evicted from the cache is rebuilt by replay). Everything else (HTTP,
//! databases, clocks) goes in an activity. Query handlers may not change anything.
//!
//! # Versioning
//!
//! A change to hook or handler code that changes the commands it issues for the same history (an
//! action added or removed, another activity name or input, another signal) breaks the replay of the
//! workflows that ran the old code: guard it with [`HookCx::patched`] (the SDK's `patched`), or ship
//! it as a new Worker Deployment version (pinned: README, "Upgrading"). An `update` a hook emits is
//! a message, not a command, but what it writes changes the state later batches decide on: treat it
//! like a command. Changes to query handlers need neither.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::LocalBoxFuture;
use serde_json::{Map, Value, json};
use stateful_core::{Core, Effect, Signal};
use stateful_engine::normalize::EntityRef;
use temporalio_common::UntypedActivity;
use temporalio_common::protos::temporal::api::common::v1::RetryPolicy;
use temporalio_sdk::{ActivityOptions, WorkflowCancellationToken, WorkflowContext};
use tracing::warn;

use crate::StatefulWorkflow;
use crate::effects::InFlight;
use crate::payload;

/// An entity's row: field name → value (normalized: a relation holds ids).
pub type Row = Map<String, Value>;

/// Deterministic code that reacts to the changes of one entity type, in the workflows that own an
/// entity of that type (see the [module](self) documentation for the rules it must follow).
pub trait EntityHook: Send + Sync + 'static {
    /// Called after every batch that changed the workflow's own entity (its fields, its creation,
    /// its deletion) or its status; [`HookCx::changes`] says what changed.
    fn on_change(&self, cx: &mut HookCx<'_>);

    /// Called with the result of an activity this hook asked for ([`HookCx::activity`]), once it
    /// succeeded or failed for good (its retries exhausted). Results of the activities a custom
    /// signal or update handler asked for go to every hook of the entity. Default: nothing.
    fn on_activity_result(&self, cx: &mut HookCx<'_>, done: &ActivityDone) {
        let _ = (cx, done);
    }
}

/// The result of an activity asked for by [`HookCx::activity`].
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityDone {
    /// The activity's name.
    pub name: String,
    /// Its input, as it was sent.
    pub input: Value,
    /// Its result, or why it failed (`TYPE: message` for an application failure).
    pub result: Result<Value, String>,
}

/// How one field of the owned entity changed in a batch (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// Before the batch.
    pub old: Option<Value>,
    /// After it.
    pub new: Option<Value>,
}

/// How an activity asked for by a hook or handler runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOptions {
    /// Time limit of one attempt.
    pub start_to_close: Duration,
    /// Attempts at most (1: no retry); retries back off from 1 s to 1 min.
    pub max_attempts: i32,
    /// The activity task queue; `None`: the one the workflow's HTTP activities use (the worker's
    /// `--activity-task-queue`, recorded by the tree's root, or the workflow's own queue).
    pub task_queue: Option<String>,
    /// Application failure types that are not retried.
    pub non_retryable: Vec<String>,
}

impl Default for CallOptions {
    /// One minute per attempt, 5 attempts, the workflow's activity queue.
    fn default() -> Self {
        CallOptions {
            start_to_close: Duration::from_secs(60),
            max_attempts: 5,
            task_queue: None,
            non_retryable: Vec::new(),
        }
    }
}

/// Activities a workflow runs at once for its hooks and handlers; more wait their turn, in order.
pub const MAX_CALLS_IN_FLIGHT: usize = 20;

/// What a hook or handler may read and do (see [`EntityHook`]). Its actions are taken once it
/// returns: `update`s are queued as `update` messages (applied in the next batch for a hook, in the
/// current one for a handler), signals go out with the batch's effects, activities start.
pub struct HookCx<'a> {
    env: &'a dyn Env,
    view: View,
    changes: BTreeMap<String, FieldChange>,
    status_changed: bool,
    existed: bool,
    actions: Actions,
}

/// What the workflow is, for a [`HookCx`] (a snapshot).
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    pub(crate) workflow_id: String,
    pub(crate) entity: String,
    pub(crate) id: String,
    pub(crate) version: u64,
    pub(crate) status: String,
    pub(crate) now_ms: u64,
    pub(crate) row: Option<Row>,
    pub(crate) replaying: bool,
}

/// What a hook or handler asked for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Actions {
    pub(crate) updates: Vec<Value>,
    pub(crate) signals: Vec<(String, String, Value)>,
    pub(crate) activities: Vec<Call>,
}

/// An activity to run for a hook (`owner`: its index among the entity's hooks; `None`: a handler).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    owner: Option<usize>,
    name: String,
    input: Value,
    options: CallOptions,
}

/// What hooks read through the workflow (a fake in the unit tests).
pub(crate) trait Env {
    fn env_patched(&self, id: &str) -> bool;
    fn env_data(&self) -> Value;
    fn env_state(&self) -> Value;
}

impl Env for WorkflowContext<StatefulWorkflow> {
    fn env_patched(&self, id: &str) -> bool {
        self.patched(id)
    }
    fn env_data(&self) -> Value {
        self.state(|s| s.core.data())
    }
    fn env_state(&self) -> Value {
        self.state(|s| s.core.state())
    }
}

impl<'a> HookCx<'a> {
    pub(crate) fn new(env: &'a dyn Env, view: View, before: Option<Option<&Row>>) -> HookCx<'a> {
        let (changes, existed) = match before {
            Some(b) => (diff(b, view.row.as_ref()), b.is_some()),
            None => (BTreeMap::new(), view.row.is_some()),
        };
        HookCx {
            env,
            view,
            changes,
            status_changed: false,
            existed,
            actions: Actions::default(),
        }
    }

    /// This workflow's id.
    pub fn workflow_id(&self) -> &str {
        &self.view.workflow_id
    }

    /// The entity type this workflow owns.
    pub fn entity(&self) -> &str {
        &self.view.entity
    }

    /// The owned entity's id.
    pub fn id(&self) -> &str {
        &self.view.id
    }

    /// The state's version (after the batch).
    pub fn version(&self) -> u64 {
        self.view.version
    }

    /// `running`, `paused`, `completed` or `cancelled`.
    pub fn status(&self) -> &str {
        &self.view.status
    }

    /// True when the batch changed the status.
    pub fn status_changed(&self) -> bool {
        self.status_changed
    }

    /// Workflow time, in ms since the epoch (deterministic: the time of the workflow task).
    pub fn now_ms(&self) -> u64 {
        self.view.now_ms
    }

    /// True while the workflow is replayed: skip logs and metrics then (the calls themselves must
    /// stay the same).
    pub fn is_replaying(&self) -> bool {
        self.view.replaying
    }

    /// The owned entity's row (normalized), `None` when it does not exist.
    pub fn row(&self) -> Option<&Row> {
        self.view.row.as_ref()
    }

    /// One field of the owned row.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.view.row.as_ref()?.get(field)
    }

    /// The fields the batch changed, with their old and new values (empty for handlers and
    /// activity results).
    pub fn changes(&self) -> &BTreeMap<String, FieldChange> {
        &self.changes
    }

    /// True when the batch changed `field`.
    pub fn changed(&self, field: &str) -> bool {
        self.changes.contains_key(field)
    }

    /// True when the batch created the owned entity.
    pub fn created(&self) -> bool {
        !self.existed && self.view.row.is_some()
    }

    /// True when the batch deleted the owned entity.
    pub fn deleted(&self) -> bool {
        self.existed && self.view.row.is_none()
    }

    /// The owned entity, denormalized (what the `data` query answers).
    pub fn data(&self) -> Value {
        self.env.env_data()
    }

    /// The whole normalized state (what the `state` query answers).
    pub fn state(&self) -> Value {
        self.env.env_state()
    }

    /// The SDK's `patched`: true for code running for the first time or replaying a history that
    /// took this branch, false replaying one that did not. Guard every change of what a hook does
    /// with it (see the [module](self) documentation).
    pub fn patched(&self, id: &str) -> bool {
        self.env.env_patched(id)
    }

    /// Queues an `update` message with this payload (`{data}` or `{updates}`, as a client sends),
    /// applied as a client's update is.
    pub fn update(&mut self, payload: Value) {
        self.actions.updates.push(payload);
    }

    /// Queues an update of fields of the owned entity (`{field: value, ...}`), as
    /// `{"updates": {Entity: {id: fields}}}` (the default `$merge`: other fields are kept).
    pub fn set(&mut self, fields: Map<String, Value>) {
        let mut rows = Map::new();
        rows.insert(self.view.id.clone(), Value::Object(fields));
        let mut entities = Map::new();
        entities.insert(self.view.entity.clone(), Value::Object(rows));
        self.update(json!({ "updates": entities }));
    }

    /// Signals a workflow (`payload`: the signal's one argument), through the outbox, as the
    /// planner's signals go.
    pub fn signal(
        &mut self,
        workflow_id: impl Into<String>,
        name: impl Into<String>,
        payload: Value,
    ) {
        self.actions
            .signals
            .push((workflow_id.into(), name.into(), payload));
    }

    /// Runs an activity by name (one JSON argument, a JSON result), with [`CallOptions::default`].
    pub fn activity(&mut self, name: impl Into<String>, input: Value) {
        self.activity_with(name, input, CallOptions::default());
    }

    /// Runs an activity by name with these options.
    pub fn activity_with(&mut self, name: impl Into<String>, input: Value, options: CallOptions) {
        self.actions.activities.push(Call {
            owner: None,
            name: name.into(),
            input,
            options,
        });
    }

    pub(crate) fn into_actions(self, owner: Option<usize>) -> Actions {
        let mut a = self.actions;
        for c in &mut a.activities {
            c.owner = owner;
        }
        a
    }
}

/// What a query handler may read: the workflow's state, never changed.
pub struct QueryCx<'a> {
    core: &'a Core,
}

impl QueryCx<'_> {
    /// The entity type this workflow owns.
    pub fn entity(&self) -> &str {
        self.core.entity()
    }

    /// The owned entity's id.
    pub fn id(&self) -> &str {
        self.core.id()
    }

    /// The state's version.
    pub fn version(&self) -> u64 {
        self.core.store().version()
    }

    /// `running`, `paused`, `completed` or `cancelled`.
    pub fn status(&self) -> &str {
        self.core.status_str()
    }

    /// The owned entity's row (normalized), `None` when it does not exist.
    pub fn row(&self) -> Option<&Row> {
        self.core.store().get(self.core.entity(), self.core.id())
    }

    /// One field of the owned row.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.row()?.get(field)
    }

    /// The owned entity, denormalized (what the `data` query answers).
    pub fn data(&self) -> Value {
        self.core.data()
    }

    /// The whole normalized state (what the `state` query answers).
    pub fn state(&self) -> Value {
        self.core.state()
    }

    /// The last applied batches (what the `recentChanges` query answers).
    pub fn recent_changes(&self) -> Value {
        self.core.audit().recent_info()
    }
}

type SignalFn = dyn Fn(&mut HookCx<'_>, Value) + Send + Sync;
type UpdateFn = dyn Fn(&mut HookCx<'_>, Value) -> Result<Value, String> + Send + Sync;
type QueryFn = dyn Fn(&QueryCx<'_>, Value) -> Result<Value, String> + Send + Sync;

/// A custom worker's hooks and handlers, installed once per process ([`install`]).
#[derive(Default, Clone)]
pub struct Extensions {
    hooks: BTreeMap<String, Vec<Arc<dyn EntityHook>>>,
    signals: BTreeMap<String, Arc<SignalFn>>,
    updates: BTreeMap<String, Arc<UpdateFn>>,
    queries: BTreeMap<String, Arc<QueryFn>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field(
                "hooks",
                &self
                    .hooks
                    .iter()
                    .map(|(e, h)| (e, h.len()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("signals", &self.signals.keys().collect::<Vec<_>>())
            .field("updates", &self.updates.keys().collect::<Vec<_>>())
            .field("queries", &self.queries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Extensions {
    /// None.
    pub fn new() -> Extensions {
        Extensions::default()
    }

    /// Adds a hook on `entity` (after the ones added before: hooks run in this order).
    pub fn hook(mut self, entity: impl Into<String>, hook: impl EntityHook) -> Extensions {
        self.hooks
            .entry(entity.into())
            .or_default()
            .push(Arc::new(hook));
        self
    }

    /// Registers the custom signal `name` (replacing one of the same name).
    pub fn signal(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&mut HookCx<'_>, Value) + Send + Sync + 'static,
    ) -> Extensions {
        self.signals.insert(name.into(), Arc::new(f));
        self
    }

    /// Registers the custom acknowledged update `name`: its answer, or the error the caller gets.
    pub fn update(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&mut HookCx<'_>, Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Extensions {
        self.updates.insert(name.into(), Arc::new(f));
        self
    }

    /// Registers the custom query `name`: its answer, or the error the caller gets.
    pub fn query(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&QueryCx<'_>, Value) -> Result<Value, String> + Send + Sync + 'static,
    ) -> Extensions {
        self.queries.insert(name.into(), Arc::new(f));
        self
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
            && self.signals.is_empty()
            && self.updates.is_empty()
            && self.queries.is_empty()
    }

    /// The names of the custom signals, updates and queries, and the entities with hooks.
    pub fn describe(&self) -> Value {
        json!({
            "hooks": self.hooks.iter().map(|(e, h)| (e.clone(), json!(h.len()))).collect::<Map<_, _>>(),
            "signals": self.signals.keys().collect::<Vec<_>>(),
            "updates": self.updates.keys().collect::<Vec<_>>(),
            "queries": self.queries.keys().collect::<Vec<_>>(),
        })
    }

    fn hooks_of(&self, entity: &str) -> &[Arc<dyn EntityHook>] {
        self.hooks.get(entity).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Answers a `custom` query (`{name, args}`).
    pub(crate) fn query_with(
        &self,
        core: &Core,
        input: Result<Value, String>,
    ) -> Result<Value, String> {
        let (name, args) = envelope(input)?;
        let f = self
            .queries
            .get(&name)
            .ok_or_else(|| unknown("query", &name, self.queries.keys()))?;
        f(&QueryCx { core }, args)
    }

    /// Checks a `custom` update before it is accepted: a registered name.
    pub(crate) fn check_update(&self, input: &Result<Value, String>) -> Result<(), String> {
        let (name, _) = envelope(input.clone())?;
        if self.updates.contains_key(&name) {
            Ok(())
        } else {
            Err(unknown("update", &name, self.updates.keys()))
        }
    }
}

static INSTALLED: OnceLock<Extensions> = OnceLock::new();

/// Installs this process's extensions (once, before the worker starts; an error if some were
/// installed already).
pub fn install(ext: Extensions) -> Result<(), String> {
    INSTALLED
        .set(ext)
        .map_err(|_| "extensions are installed once per process".to_string())
}

/// The extensions of this process, if any were installed.
pub fn installed() -> Option<&'static Extensions> {
    INSTALLED.get().filter(|e| !e.is_empty())
}

/// `{"name": ..., "args": ...}` (or a JSON string: the name, with null args).
fn envelope(input: Result<Value, String>) -> Result<(String, Value), String> {
    match input? {
        Value::String(name) => Ok((name, Value::Null)),
        Value::Object(mut m) => match m.remove("name") {
            Some(Value::String(name)) => Ok((name, m.remove("args").unwrap_or(Value::Null))),
            _ => Err("a custom message needs `name`: {\"name\": \"...\", \"args\": ...}".into()),
        },
        _ => Err("a custom message is {\"name\": \"...\", \"args\": ...} or a name".into()),
    }
}

fn unknown<'a>(kind: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!("no custom {kind} `{name}`: this worker registers none")
    } else {
        format!(
            "no custom {kind} `{name}`: this worker registers {}",
            known.join(", ")
        )
    }
}

/// The fields whose value differs between two rows.
fn diff(before: Option<&Row>, after: Option<&Row>) -> BTreeMap<String, FieldChange> {
    let empty = Row::new();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let mut out = BTreeMap::new();
    for k in b.keys().chain(a.keys()) {
        let (old, new) = (b.get(k), a.get(k));
        if old != new && !out.contains_key(k) {
            out.insert(
                k.clone(),
                FieldChange {
                    old: old.cloned(),
                    new: new.cloned(),
                },
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The glue: what `StatefulWorkflow` and the run loop call. Nothing here runs without extensions.

/// A custom signal or update waiting for its batch.
#[derive(Debug)]
struct Queued {
    name: String,
    args: Value,
    ticket: Option<u64>,
}

/// The custom messages of a workflow: queued for the next batch, and the updates' answers.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queued: Vec<Queued>,
    answers: BTreeMap<u64, Result<Value, String>>,
    waiting: usize,
    next_ticket: u64,
}

impl Inbox {
    /// A batch is due for custom messages.
    pub(crate) fn has_work(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Nothing queued, and every update took its answer.
    pub(crate) fn idle(&self) -> bool {
        self.queued.is_empty() && self.waiting == 0
    }
}

/// The `custom` signal: queued when its name is registered; otherwise dropped with a warning (the
/// SDK drops a signal nobody handles, too).
pub(crate) fn signal_arrived(
    s: &mut StatefulWorkflow,
    input: Result<Value, String>,
    replaying: bool,
) {
    let known = installed().ok_or_else(|| unknown("signal", "?", std::iter::empty()));
    let checked = envelope(input).and_then(|(name, args)| {
        let ext = known.clone()?;
        if ext.signals.contains_key(&name) {
            Ok((name, args))
        } else {
            Err(unknown("signal", &name, ext.signals.keys()))
        }
    });
    match checked {
        Ok((name, args)) => s.ext.queued.push(Queued {
            name,
            args,
            ticket: None,
        }),
        Err(reason) if !replaying => warn!(%reason, "custom signal dropped"),
        Err(_) => {}
    }
}

/// The `custom` update's validator: a registered name, and the run takes updates.
pub(crate) fn validate_update(core: &Core, input: &Result<Value, String>) -> Result<(), String> {
    // Refused while the run hands over or ends, as the other updates are (the core answers for any
    // signal kind it does not parse: only its draining state).
    core.validate(Signal::Refresh, &Ok(Value::Null))?;
    match installed() {
        Some(ext) => ext.check_update(input),
        None => Err(unknown("update", "?", std::iter::empty())),
    }
}

/// The `custom` query.
pub(crate) fn query(core: &Core, input: Result<Value, String>) -> Result<Value, String> {
    match installed() {
        Some(ext) => ext.query_with(core, input),
        None => Err("this worker registers no custom query".into()),
    }
}

/// The `custom` update: queued for the next batch, whose dispatch answers it.
pub(crate) async fn acknowledged(
    ctx: &mut WorkflowContext<StatefulWorkflow>,
    input: Result<Value, String>,
) -> Result<Value, String> {
    let (name, args) = envelope(input)?;
    let ticket = ctx.state_mut(|s| {
        let t = s.ext.next_ticket;
        s.ext.next_ticket += 1;
        s.ext.waiting += 1;
        s.ext.queued.push(Queued {
            name,
            args,
            ticket: Some(t),
        });
        t
    });
    let _ = ctx
        .wait_condition(|s| s.ext.answers.contains_key(&ticket) || s.core.status().is_terminal())
        .await;
    ctx.state_mut(|s| {
        s.ext.waiting = s.ext.waiting.saturating_sub(1);
        s.ext.answers.remove(&ticket)
    })
    .unwrap_or_else(|| Err(crate::run::ENDED.to_string()))
}

/// Activities run for hooks and handlers: running, and waiting for room.
#[derive(Default)]
pub(crate) struct Calls {
    running: Vec<LocalBoxFuture<'static, ActivityOutcome>>,
    waiting: VecDeque<Call>,
}

/// A finished activity, for its hook.
pub(crate) struct ActivityOutcome {
    owner: Option<usize>,
    done: ActivityDone,
}

impl Calls {
    /// True when none is running or waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// The activities finished now (polled once each, in order).
    pub(crate) fn poll_done(&mut self, cx: &mut Context<'_>) -> Vec<ActivityOutcome> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].as_mut().poll(cx) {
                Poll::Ready(o) => {
                    drop(self.running.remove(i));
                    out.push(o);
                }
                Poll::Pending => i += 1,
            }
        }
        out
    }
}

fn view(ctx: &WorkflowContext<StatefulWorkflow>) -> View {
    let now_ms = crate::run::now_ms(ctx.workflow_time());
    let workflow_id = ctx.workflow_id().to_string();
    let replaying = ctx.is_replaying();
    ctx.state(|s| View {
        workflow_id,
        entity: s.core.entity().to_string(),
        id: s.core.id().to_string(),
        version: s.core.store().version(),
        status: s.core.status_str().to_string(),
        now_ms,
        row: s.core.store().get(s.core.entity(), s.core.id()).cloned(),
        replaying,
    })
}

/// What a batch's hooks compare with: the owned row before it, when the entity has hooks.
pub(crate) struct Before(Option<Row>);

/// Before a batch: the custom signals and updates queued since the last one run (their `update`s
/// join this batch), and the owned row is kept for the hooks. Nothing without extensions.
pub(crate) fn before_batch(
    ctx: &WorkflowContext<StatefulWorkflow>,
    inflight: &mut InFlight,
) -> Option<Before> {
    let ext = installed()?;
    dispatch(ctx, ext, inflight);
    let has_hooks = ctx.state(|s| !ext.hooks_of(s.core.entity()).is_empty());
    has_hooks
        .then(|| Before(ctx.state(|s| s.core.store().get(s.core.entity(), s.core.id()).cloned())))
}

/// Runs the queued custom signals and updates, in arrival order.
fn dispatch(ctx: &WorkflowContext<StatefulWorkflow>, ext: &Extensions, inflight: &mut InFlight) {
    let queued = ctx.state_mut(|s| std::mem::take(&mut s.ext.queued));
    for q in queued {
        let mut cx = HookCx::new(ctx, view(ctx), None);
        let answer = match q.ticket {
            None => {
                if let Some(f) = ext.signals.get(&q.name) {
                    f(&mut cx, q.args);
                }
                None
            }
            Some(t) => Some((
                t,
                match ext.updates.get(&q.name) {
                    Some(f) => f(&mut cx, q.args),
                    None => Err(unknown("update", &q.name, ext.updates.keys())),
                },
            )),
        };
        let actions = cx.into_actions(None);
        take_actions(ctx, actions, None, inflight);
        if let Some((t, a)) = answer {
            ctx.state_mut(|s| s.ext.answers.insert(t, a));
        }
    }
}

/// After a batch: the entity's hooks, when it changed the owned entity or the status. The signals
/// they ask for join the batch's effects (after the planner's).
pub(crate) fn after_batch(
    ctx: &WorkflowContext<StatefulWorkflow>,
    before: Option<Before>,
    out: &mut stateful_core::Processed,
    inflight: &mut InFlight,
) {
    let (Some(Before(row)), Some(ext)) = (before, installed()) else {
        return;
    };
    let own = ctx.state(|s| EntityRef::new(s.core.entity(), s.core.id()));
    if !(out.changes.entities.contains_key(&own) || out.status_changed) {
        return;
    }
    let hooks = ext.hooks_of(&own.entity);
    for (i, h) in hooks.iter().enumerate() {
        let mut cx = HookCx::new(ctx, view(ctx), Some(row.as_ref()));
        cx.status_changed = out.status_changed;
        h.on_change(&mut cx);
        let actions = cx.into_actions(Some(i));
        take_actions(ctx, actions, Some(&mut out.effects), inflight);
    }
}

/// A finished activity: its result to the hook that asked (every hook, for a handler's), then the
/// next waiting one starts.
pub(crate) fn activity_done(
    ctx: &WorkflowContext<StatefulWorkflow>,
    o: ActivityOutcome,
    inflight: &mut InFlight,
) {
    if let Some(ext) = installed() {
        let hooks = ctx.state(|s| ext.hooks_of(s.core.entity()).to_vec());
        for (i, h) in hooks.iter().enumerate() {
            if o.owner.is_some_and(|owner| owner != i) {
                continue;
            }
            let mut cx = HookCx::new(ctx, view(ctx), None);
            h.on_activity_result(&mut cx, &o.done);
            let actions = cx.into_actions(Some(i));
            let mut signals = Vec::new();
            take_actions(ctx, actions, Some(&mut signals), inflight);
            ctx.state_mut(|s| s.core.enqueue(signals));
        }
    }
    start_waiting(ctx, inflight);
}

/// Takes a hook's or handler's actions: updates to the inbox, signals to `effects` (or the outbox),
/// activities started.
fn take_actions(
    ctx: &WorkflowContext<StatefulWorkflow>,
    actions: Actions,
    effects: Option<&mut Vec<Effect>>,
    inflight: &mut InFlight,
) {
    let Actions {
        updates,
        signals,
        activities,
    } = actions;
    if !updates.is_empty() {
        ctx.state_mut(|s| {
            for u in updates {
                s.core.signal(Signal::Update, Ok(u));
            }
        });
    }
    let signals: Vec<Effect> = signals
        .into_iter()
        .map(|(workflow_id, name, payload)| Effect::Signal {
            workflow_id,
            name,
            payload: Some(payload),
            child_generation: None,
        })
        .collect();
    match effects {
        Some(e) => e.extend(signals),
        None if !signals.is_empty() => ctx.state_mut(|s| s.core.enqueue(signals)),
        None => {}
    }
    inflight.ext.waiting.extend(activities);
    start_waiting(ctx, inflight);
}

/// Starts waiting activities while fewer than [`MAX_CALLS_IN_FLIGHT`] run.
fn start_waiting(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    while inflight.ext.running.len() < MAX_CALLS_IN_FLIGHT {
        let Some(call) = inflight.ext.waiting.pop_front() else {
            return;
        };
        let queue = call
            .options
            .task_queue
            .clone()
            .or_else(|| ctx.state(|s| s.core.activity_task_queue().map(str::to_string)));
        let o = &call.options;
        let options = ActivityOptions::with_start_to_close_timeout(o.start_to_close)
            .maybe_task_queue(queue)
            .summary(format!("custom activity {}", call.name))
            .retry_policy(RetryPolicy {
                initial_interval: Some(Duration::from_secs(1).try_into().unwrap_or_default()),
                backoff_coefficient: 2.0,
                maximum_interval: Some(Duration::from_secs(60).try_into().unwrap_or_default()),
                maximum_attempts: o.max_attempts.max(1),
                non_retryable_error_types: o.non_retryable.clone(),
            })
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        let c = ctx.clone();
        inflight.ext.running.push(
            async move {
                // Scheduled at the first poll (the run loop's, in the same workflow task).
                let got = c
                    .execute_activity(
                        UntypedActivity::new(call.name.clone()),
                        payload::encode(&call.input),
                        options,
                    )
                    .await;
                let result = match got {
                    Ok(raw) => payload::decode(&raw),
                    Err(e) => Err(crate::loading::failure_text(&e, "the activity timed out")),
                };
                ActivityOutcome {
                    owner: call.owner,
                    done: ActivityDone {
                        name: call.name,
                        input: call.input,
                        result,
                    },
                }
            }
            .boxed_local(),
        );
    }
}

/// True when activities of hooks or handlers are running or waiting.
pub(crate) fn calls_out(inflight: &InFlight) -> bool {
    !inflight.ext.is_empty()
}

/// Waits for the next activities of hooks or handlers to finish and hands their results over.
pub(crate) async fn settle_some(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    if inflight.ext.running.is_empty() {
        start_waiting(ctx, inflight);
    }
    if inflight.ext.running.is_empty() {
        return;
    }
    let done = futures::future::poll_fn(|cx| {
        let d = inflight.ext.poll_done(cx);
        if d.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(d)
        }
    })
    .await;
    for o in done {
        activity_done(ctx, o, inflight);
    }
}

/// Before a run ends: the custom messages still queued run, and the activities of hooks and
/// handlers finish (their results go to the hooks; the `update`s they ask for then are not
/// applied: the run ends). Nothing without extensions.
pub(crate) async fn before_end(ctx: &WorkflowContext<StatefulWorkflow>, inflight: &mut InFlight) {
    let Some(ext) = installed() else {
        return;
    };
    dispatch(ctx, ext, inflight);
    while calls_out(inflight) {
        settle_some(ctx, inflight).await;
    }
}

/// Unit tests of hooks and handlers without Temporal: a [`HookCx`] over rows you give, and what the
/// hook asked for.
pub mod testing {
    use super::*;
    use std::cell::RefCell;

    /// What a hook or handler asked for in a [`Probe`].
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct Recorded {
        /// The `update` payloads ([`HookCx::update`], [`HookCx::set`]).
        pub updates: Vec<Value>,
        /// The signals: workflow id, signal name, payload.
        pub signals: Vec<(String, String, Value)>,
        /// The activities: name, input, options.
        pub activities: Vec<(String, Value, CallOptions)>,
        /// The patches asked ([`HookCx::patched`]), in order.
        pub patches: Vec<String>,
    }

    /// A workflow as a hook sees it: its entity, id, the owned row before and after a batch.
    #[derive(Debug, Clone)]
    pub struct Probe {
        view: View,
        before: Option<Row>,
        status_changed: bool,
        patched: bool,
        data: Value,
    }

    struct Fake<'a> {
        patched: bool,
        asked: &'a RefCell<Vec<String>>,
        data: &'a Value,
    }

    impl Env for Fake<'_> {
        fn env_patched(&self, id: &str) -> bool {
            self.asked.borrow_mut().push(id.to_string());
            self.patched
        }
        fn env_data(&self) -> Value {
            self.data.clone()
        }
        fn env_state(&self) -> Value {
            Value::Null
        }
    }

    fn object(v: Value) -> Option<Row> {
        match v {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }

    impl Probe {
        /// The workflow `{entity}-{id}`, running, with no row.
        pub fn new(entity: &str, id: &str) -> Probe {
            Probe {
                view: View {
                    workflow_id: format!("{entity}-{id}"),
                    entity: entity.into(),
                    id: id.into(),
                    status: "running".into(),
                    ..View::default()
                },
                before: None,
                status_changed: false,
                patched: true,
                data: Value::Null,
            }
        }

        /// The owned row before the batch (a JSON object; anything else: none).
        pub fn before(mut self, row: Value) -> Probe {
            self.before = object(row);
            self
        }

        /// The owned row after the batch (a JSON object; anything else: none).
        pub fn after(mut self, row: Value) -> Probe {
            self.view.row = object(row);
            self
        }

        /// The status (after the batch), and whether the batch changed it.
        pub fn status(mut self, status: &str, changed: bool) -> Probe {
            self.view.status = status.into();
            self.status_changed = changed;
            self
        }

        /// The version and workflow time (ms).
        pub fn at(mut self, version: u64, now_ms: u64) -> Probe {
            self.view.version = version;
            self.view.now_ms = now_ms;
            self
        }

        /// What [`HookCx::patched`] answers (default: true, as for new code on a new history).
        pub fn patched(mut self, answer: bool) -> Probe {
            self.patched = answer;
            self
        }

        /// What [`HookCx::data`] answers.
        pub fn data(mut self, data: Value) -> Probe {
            self.data = data;
            self
        }

        fn with<R>(&self, changes: bool, f: impl FnOnce(&mut HookCx<'_>) -> R) -> (R, Recorded) {
            let asked = RefCell::new(Vec::new());
            let env = Fake {
                patched: self.patched,
                asked: &asked,
                data: &self.data,
            };
            let before = changes.then_some(self.before.as_ref());
            let mut cx = HookCx::new(&env, self.view.clone(), before);
            cx.status_changed = changes && self.status_changed;
            let r = f(&mut cx);
            let a = cx.into_actions(None);
            let recorded = Recorded {
                updates: a.updates,
                signals: a.signals,
                activities: a
                    .activities
                    .into_iter()
                    .map(|c| (c.name, c.input, c.options))
                    .collect(),
                patches: asked.into_inner(),
            };
            (r, recorded)
        }

        /// Runs `hook.on_change` on the batch from [`before`](Self::before) to
        /// [`after`](Self::after).
        pub fn on_change(&self, hook: &dyn EntityHook) -> Recorded {
            self.with(true, |cx| hook.on_change(cx)).1
        }

        /// Runs `hook.on_activity_result` (the row: [`after`](Self::after)).
        pub fn on_activity_result(&self, hook: &dyn EntityHook, done: &ActivityDone) -> Recorded {
            self.with(false, |cx| hook.on_activity_result(cx, done)).1
        }

        /// Runs a custom signal or update handler (the row: [`after`](Self::after)): its answer and
        /// what it asked for.
        pub fn handler<R>(&self, f: impl FnOnce(&mut HookCx<'_>) -> R) -> (R, Recorded) {
            self.with(false, f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        patches: RefCell<Vec<String>>,
    }

    impl Env for Fake {
        fn env_patched(&self, id: &str) -> bool {
            self.patches.borrow_mut().push(id.to_string());
            true
        }
        fn env_data(&self) -> Value {
            json!({"id": "l1"})
        }
        fn env_state(&self) -> Value {
            json!({})
        }
    }

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap()
    }

    fn view(r: Option<Row>) -> View {
        View {
            workflow_id: "Listing-l1".into(),
            entity: "Listing".into(),
            id: "l1".into(),
            version: 3,
            status: "running".into(),
            now_ms: 1_000,
            row: r,
            replaying: false,
        }
    }

    struct PriceWatch;

    impl EntityHook for PriceWatch {
        fn on_change(&self, cx: &mut HookCx<'_>) {
            if let Some(FieldChange { new: Some(p), .. }) = cx.changes().get("price").cloned()
                && cx.patched("alerts")
            {
                cx.activity("priceAlert", json!({"price": p}));
                cx.signal("Audit-1", "seen", json!({"price": p}));
            }
        }

        fn on_activity_result(&self, cx: &mut HookCx<'_>, done: &ActivityDone) {
            let mut m = Map::new();
            m.insert(
                "lastAlert".into(),
                done.result.clone().unwrap_or(Value::Null),
            );
            cx.set(m);
        }
    }

    #[test]
    fn a_hook_sees_the_change_and_its_actions_are_recorded() {
        let env = Fake {
            patches: RefCell::default(),
        };
        let before = row(json!({"id": "l1", "price": 10, "title": "x"}));
        let after = row(json!({"id": "l1", "price": 12, "title": "x", "tag": 1}));
        let mut cx = HookCx::new(&env, view(Some(after)), Some(Some(&before)));
        assert!(cx.changed("price") && cx.changed("tag") && !cx.changed("title"));
        assert_eq!(
            cx.changes()["price"],
            FieldChange {
                old: Some(json!(10)),
                new: Some(json!(12))
            }
        );
        assert!(!cx.created() && !cx.deleted());
        PriceWatch.on_change(&mut cx);
        assert_eq!(*env.patches.borrow(), vec!["alerts".to_string()]);
        let a = cx.into_actions(Some(0));
        assert_eq!(a.activities.len(), 1);
        assert_eq!(a.activities[0].owner, Some(0));
        assert_eq!(a.activities[0].name, "priceAlert");
        assert_eq!(a.activities[0].input, json!({"price": 12}));
        assert_eq!(
            a.signals,
            vec![("Audit-1".into(), "seen".into(), json!({"price": 12}))]
        );

        let mut cx = HookCx::new(&env, view(None), None);
        let done = ActivityDone {
            name: "priceAlert".into(),
            input: json!({"price": 12}),
            result: Ok(json!("alerted at 12")),
        };
        PriceWatch.on_activity_result(&mut cx, &done);
        assert_eq!(
            cx.into_actions(None).updates,
            vec![json!({"updates": {"Listing": {"l1": {"lastAlert": "alerted at 12"}}}})]
        );
    }

    #[test]
    fn creation_and_deletion_show() {
        let env = Fake {
            patches: RefCell::default(),
        };
        let r = row(json!({"id": "l1"}));
        let cx = HookCx::new(&env, view(Some(r.clone())), Some(None));
        assert!(cx.created() && cx.changed("id"));
        let cx = HookCx::new(&env, view(None), Some(Some(&r)));
        assert!(cx.deleted() && cx.changes()["id"].new.is_none());
    }

    #[test]
    fn envelopes_and_unknown_names() {
        assert_eq!(
            envelope(Ok(json!({"name": "a", "args": [1]}))).unwrap(),
            ("a".to_string(), json!([1]))
        );
        assert_eq!(
            envelope(Ok(json!("a"))).unwrap(),
            ("a".to_string(), Value::Null)
        );
        assert!(
            envelope(Ok(json!({"args": 1})))
                .unwrap_err()
                .contains("`name`")
        );
        assert!(envelope(Ok(json!(3))).is_err());
        assert_eq!(envelope(Err("bad".into())).unwrap_err(), "bad");

        let ext = Extensions::new()
            .hook("Listing", PriceWatch)
            .query("priceHistory", |q, _| Ok(json!(q.version())))
            .update("reset", |_, _| Ok(Value::Null))
            .signal("ping", |_, _| {});
        assert!(!ext.is_empty() && Extensions::new().is_empty());
        assert_eq!(
            ext.describe(),
            json!({"hooks": {"Listing": 1}, "signals": ["ping"], "updates": ["reset"],
                   "queries": ["priceHistory"]})
        );
        assert!(ext.check_update(&Ok(json!({"name": "reset"}))).is_ok());
        assert_eq!(
            ext.check_update(&Ok(json!({"name": "nope"}))).unwrap_err(),
            "no custom update `nope`: this worker registers reset"
        );
        let core = Core::default();
        assert_eq!(
            ext.query_with(&core, Ok(json!({"name": "priceHistory"})))
                .unwrap(),
            json!(0)
        );
        assert_eq!(
            ext.query_with(&core, Ok(json!("nope"))).unwrap_err(),
            "no custom query `nope`: this worker registers priceHistory"
        );
        assert_eq!(ext.hooks_of("Listing").len(), 1);
        assert!(ext.hooks_of("User").is_empty());
    }

    #[test]
    fn nothing_is_installed_by_default() {
        // The stock worker installs nothing: the workflow then never calls an extension.
        assert!(installed().is_none());
        assert!(query(&Core::default(), Ok(json!("x"))).is_err());
        assert!(validate_update(&Core::default(), &Ok(json!("x"))).is_err());
    }
}
