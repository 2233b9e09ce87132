//! The workflow's state and everything it decides without Temporal: the inbox of messages, batches,
//! rejections, status, the token, queries' answers and the continue-as-new carry-over. The Temporal glue
//! (`stateful.rs`) feeds it messages and the workflow time, and executes what it returns.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stateful_engine::{
    Change, ChangeKind, ChangeSet, EntityRef, Schema, Store, checksum, fingerprint, wire,
};

use crate::api::{Api, LoadRequest, LoadState, Loaded};
use crate::input::{Carry, StartInput};
use crate::tree::{ChildEvent, Effect, Me, Subscription, Tree};

/// Default history length past which a workflow continues as new.
pub const DEFAULT_MAX_HISTORY: u32 = 10_000;
/// How many rejected inputs the `rejected` query keeps.
pub const MAX_REJECTED: usize = 50;
/// How many change records the `recentChanges` query keeps.
pub const MAX_RECENT: usize = 50;

/// The workflow's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Applying changes and their effects.
    #[default]
    Running,
    /// Changes are recorded; their effects wait for `resume`.
    Paused,
    /// Ended by the `cancel` signal or a Temporal cancellation request.
    Cancelled,
    /// Ended because its entity was deleted, or by the `status` signal.
    Completed,
}

impl Status {
    /// The status as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Cancelled => "cancelled",
            Status::Completed => "completed",
        }
    }

    /// True once the workflow is ending.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Cancelled | Status::Completed)
    }
}

/// Which signal or update a message came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MsgKind {
    /// `update`
    Update,
    /// `delete`
    Delete,
    /// `state`
    State,
    /// `apiToken`
    ApiToken,
    /// `apiUrl`
    ApiUrl,
    /// `refresh`: load from the API now.
    Refresh,
    /// `checkpoint`: continue as new now, recording the state's checksum.
    Checkpoint,
    /// The periodic refresh timer fired (from the glue).
    RefreshTimer,
    /// A `loadData` activity finished (from the glue).
    Loaded,
    /// `pause`
    Pause,
    /// `resume`
    Resume,
    /// `cancel`
    Cancel,
    /// `status` (chrono-forge's property signal)
    Status,
    /// `subscribe`: a subscription object.
    Subscribe,
    /// `unsubscribe`: `{workflowId, subscriptionId}`.
    Unsubscribe,
    /// `childEnded`: a child (or any publisher) reports that it ended.
    ChildEnded,
    /// What happened to a child (from the glue).
    ChildEvent,
    /// A Temporal cancellation request (from the glue).
    TemporalCancel,
}

impl MsgKind {
    /// The signal name.
    pub fn name(self) -> &'static str {
        match self {
            MsgKind::Update => "update",
            MsgKind::Delete => "delete",
            MsgKind::State => "state",
            MsgKind::ApiToken => "apiToken",
            MsgKind::ApiUrl => "apiUrl",
            MsgKind::Refresh => "refresh",
            MsgKind::Checkpoint => "checkpoint",
            MsgKind::RefreshTimer => "refreshInterval",
            MsgKind::Loaded => "loadData",
            MsgKind::Pause => "pause",
            MsgKind::Resume => "resume",
            MsgKind::Cancel => "cancel",
            MsgKind::Status => "status",
            MsgKind::Subscribe => "subscribe",
            MsgKind::Unsubscribe => "unsubscribe",
            MsgKind::ChildEnded => "childEnded",
            MsgKind::ChildEvent => "childEvent",
            MsgKind::TemporalCancel => "cancellation",
        }
    }
}

/// A received message, waiting for the next batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Msg {
    /// Which signal or update.
    pub kind: MsgKind,
    /// Its decoded JSON, or why it could not be decoded.
    pub payload: Result<Value, String>,
    /// For Temporal updates: the ticket under which the result is kept for the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<u64>,
}

/// A rejected input, as the `rejected` query shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Signal or update name.
    pub signal: String,
    /// Why it was rejected.
    pub reason: String,
    /// Workflow time (ms since the epoch).
    pub time: u64,
    /// State version when it was rejected.
    pub version: u64,
}

/// One applied batch, as the `recentChanges` query shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// State version after the batch.
    pub version: u64,
    /// Workflow time (ms since the epoch).
    pub time: u64,
    /// Where the changes came from.
    pub sources: Vec<String>,
    /// Entities added, updated and deleted.
    pub added: usize,
    /// Entities updated.
    pub updated: usize,
    /// Entities deleted.
    pub deleted: usize,
    /// The first changed entities (`Entity.id`).
    pub entities: Vec<String>,
}

/// How many checkpoints the `checkpoints` query keeps.
pub const MAX_CHECKPOINTS: usize = 20;

/// A checkpoint: a run handed its state over to the next one (continue-as-new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The run that handed over.
    pub run_id: String,
    /// Workflow time (ms since the epoch).
    pub time: u64,
    /// State version handed over.
    pub version: u64,
    /// Checksum of the canonical state handed over.
    pub checksum: String,
    /// `checkpoint` (the signal) or `history` (the history grew past its limit, or the server asked).
    pub reason: String,
}

/// What a batch did, for the glue to act on.
#[derive(Debug, Default)]
pub struct Processed {
    /// The change set.
    pub changes: ChangeSet,
    /// The status changed.
    pub status_changed: bool,
    /// The token changed.
    pub token_changed: bool,
    /// The API URL changed.
    pub url_changed: bool,
    /// Rejections of this batch (to log).
    pub rejected: Vec<Rejection>,
    /// What to do: start, signal, cancel.
    pub effects: Vec<Effect>,
}

/// The state of one StatefulWorkflow.
#[derive(Debug, Default)]
pub struct Core {
    /// Set once the input was accepted.
    pub started: bool,
    /// Entity id.
    pub id: String,
    /// Entity name.
    pub entity: String,
    /// This workflow's id.
    pub workflow_id: String,
    /// The schema it runs with.
    pub schema: Option<Rc<Schema>>,
    /// The schema as recorded (extended-format JSON), carried over continue-as-new and to children.
    pub schema_json: Value,
    /// The entities.
    pub store: Store,
    /// Status.
    pub status: Status,
    /// The API: URL, base, refresh interval and what the last load did.
    pub api: Api,
    api_token: Option<String>,
    /// How many times the token was rotated.
    pub token_rotations: u64,
    /// Children and subscriptions.
    pub tree: Tree,
    /// Why the workflow ends, once it does.
    pub end_reason: Option<String>,
    /// Ancestors' workflow ids.
    pub ancestors: Vec<String>,
    /// Messages waiting for the next batch.
    pub inbox: VecDeque<Msg>,
    next_ticket: u64,
    /// Acknowledged updates whose handler has not yet taken its result.
    open_tickets: std::collections::BTreeSet<u64>,
    results: BTreeMap<u64, Result<Value, String>>,
    /// Recent rejections.
    pub rejected: VecDeque<Rejection>,
    /// Rejections ever.
    pub rejected_total: u64,
    /// Recent change records.
    pub recent: VecDeque<ChangeRecord>,
    /// Batches that changed something, ever.
    pub changes_total: u64,
    /// History length past which to continue as new.
    pub max_history: u32,
    /// Runs before this one (continue-as-new count).
    pub runs: u64,
    /// Its parent loads its entity in a batch: it does not load at start or on a new token itself.
    pub loaded_by_parent: bool,
    /// Recent checkpoints (the last one handed the state over to this run).
    pub checkpoints: VecDeque<Checkpoint>,
    /// A `checkpoint` signal asked for a new run.
    pub checkpoint_requested: bool,
    /// Set when the state carried into this run does not match the checksum its checkpoint recorded.
    pub integrity_error: Option<String>,
    initial: Option<ChangeSet>,
}

impl Core {
    /// Accepts the start input: the schema, the entity, the initial data or state, or the carry-over of
    /// a previous run. An error ends the workflow (it says what is wrong with the input).
    pub fn start(
        &mut self,
        input: StartInput,
        schema: Schema,
        schema_json: Value,
        workflow_id: String,
        now: u64,
    ) -> Result<(), String> {
        schema
            .entity(&input.entity_name)
            .map_err(|e| e.to_string())?;
        let schema = Rc::new(schema);
        self.id = input.id;
        self.entity = input.entity_name;
        self.workflow_id = workflow_id;
        self.schema = Some(schema.clone());
        self.schema_json = schema_json;
        self.status = input.status;
        self.api = Api {
            url: input.api_url,
            base: input.api_base,
            refresh_ms: input.refresh_ms,
            ..Api::default()
        };
        self.api_token = input.api_token;
        self.loaded_by_parent = input.loaded_by_parent;
        let bad_subs = self.tree.set_subscriptions(&input.subscriptions);
        if let Some(e) = bad_subs.into_iter().next() {
            return Err(format!("`subscriptions`: {e}"));
        }
        self.ancestors = input.ancestor_workflow_ids;
        self.max_history = input.max_history.unwrap_or(DEFAULT_MAX_HISTORY);
        if let Some(c) = input.carry {
            self.store = c.store;
            self.token_rotations = c.token_rotations;
            self.rejected = c.rejected.into();
            self.rejected_total = c.rejected_total;
            self.recent = c.recent.into();
            self.changes_total = c.changes_total;
            self.runs = c.runs + 1;
            self.checkpoints = c.checkpoints.into();
            if let Some(last) = self.checkpoints.back() {
                let got = checksum(self.store.entities());
                if got != last.checksum {
                    self.integrity_error = Some(format!(
                        "the state carried from run {} has checksum {got}, but its checkpoint recorded {}",
                        last.run_id, last.checksum
                    ));
                }
            }
            // Messages carried from the previous run came first; any that already arrived in this
            // run's first task (their handlers ran before the run loop) follow them.
            let arrived = std::mem::take(&mut self.inbox);
            self.inbox = c.inbox.into();
            self.inbox.extend(arrived);
            self.tree.children = c.children;
            // The carried API bookkeeping keeps its next refresh time and any load that was due.
            self.api = Api {
                url: self.api.url.take(),
                base: self.api.base.take(),
                refresh_ms: self.api.refresh_ms,
                ..c.api.carried()
            };
            self.started = true;
            self.rebuild();
            return Ok(());
        }
        let mut initial = Vec::new();
        if let Some(state) = &input.state {
            // A parent hands its child a stamped slice, so that the child's copy keeps the parent's
            // stamps (and a later, older-stamped write does not lose to the copy made at start).
            let parsed = match &input.state_stamps {
                Some(stamps) => wire::parse_update(
                    &schema,
                    &self.entity,
                    &json!({"updates": state, "stamps": stamps}),
                ),
                None => wire::parse_state(&schema, state),
            }
            .map_err(|e| format!("`state`: {e}"))?;
            initial.push(parsed.change);
        }
        if let Some(data) = input.data {
            let data = self.own_data(data)?;
            let entities = schema
                .normalize_owned(&self.entity, data)
                .map_err(|e| format!("`data`: {e}"))?;
            initial.push(Change::Upsert {
                entities,
                strategy: Default::default(),
            });
        }
        // The state a parent hands down counts as coming from the parent: it is not echoed back up.
        let source = match (&input.state, self.ancestors.last()) {
            (Some(_), Some(parent)) => parent.clone(),
            _ => "input".to_string(),
        };
        let mut batch = self.store.batch(&schema);
        for c in &initial {
            let stamp = batch.next_stamp(now, &self.workflow_id);
            batch
                .apply(c, &stamp, &source)
                .map_err(|e| format!("the initial data does not apply: {e}"))?;
        }
        let cs = batch.finish();
        self.record(&cs, now);
        self.started = true;
        self.rebuild();
        if self.api_url().is_some() && !self.loaded_by_parent {
            self.api.want("start");
        }
        self.api.next_refresh_at = self.refresh_interval().map(|i| now + i);
        // The children of the initial state are started by the first batch's plan.
        self.initial = Some(cs);
        Ok(())
    }

    fn me(&self) -> Option<Me<'_>> {
        Some(Me {
            schema: self.schema.as_deref()?,
            store: &self.store,
            own: EntityRef::new(self.entity.clone(), self.id.clone()),
            workflow_id: &self.workflow_id,
            ancestors: &self.ancestors,
            api_token: self.api_token.as_deref(),
            api_base: self.api.base.as_deref(),
            loads: self.api_url().is_some(),
            schema_json: &self.schema_json,
        })
    }

    fn rebuild(&mut self) {
        let mut tree = std::mem::take(&mut self.tree);
        if let Some(me) = self.me() {
            tree.rebuild_slices(&me);
        }
        self.tree = tree;
    }

    /// Plans the effects of the start (children of the initial state); call once after `start`.
    pub fn initial_effects(&mut self) -> Vec<Effect> {
        let cs = self.initial.take().unwrap_or_default();
        if self.status != Status::Running {
            self.tree.dirty = true;
            return Vec::new();
        }
        let mut tree = std::mem::take(&mut self.tree);
        let effects = self
            .me()
            .map(|me| {
                let mut e = tree.confirm_carried(&me);
                e.extend(tree.plan(&me, &cs, false));
                e
            })
            .unwrap_or_default();
        self.tree = tree;
        effects
    }

    /// The input's `data` for the own entity: its id is filled in when missing and must match.
    fn own_data(&self, data: Value) -> Result<Value, String> {
        match &self.schema {
            Some(schema) => own_data(schema, &self.entity, &self.id, data),
            None => Ok(data),
        }
    }

    /// Queues a message; for Temporal updates, returns the ticket to wait for.
    pub fn enqueue(
        &mut self,
        kind: MsgKind,
        payload: Result<Value, String>,
        with_ticket: bool,
    ) -> Option<u64> {
        let ticket = with_ticket.then(|| {
            self.next_ticket += 1;
            self.open_tickets.insert(self.next_ticket);
            self.next_ticket
        });
        self.inbox.push_back(Msg {
            kind,
            payload,
            ticket,
        });
        ticket
    }

    /// True once the batch that held `ticket` ran (or the workflow is ending).
    pub fn results_ready(&self, ticket: u64) -> bool {
        self.results.contains_key(&ticket) || self.status.is_terminal()
    }

    /// The result of an update, once its batch ran.
    pub fn take_result(&mut self, ticket: u64) -> Option<Result<Value, String>> {
        self.open_tickets.remove(&ticket);
        self.results.remove(&ticket)
    }

    /// True when every acknowledged update has taken its result: the run may end or continue as new.
    /// (Tracked here, in state that only changes through `state_mut`, so that waiting on it never misses
    /// a wakeup, unlike `all_handlers_finished()`, whose change wakes nobody.)
    pub fn handlers_idle(&self) -> bool {
        self.open_tickets.is_empty()
    }

    /// True when a batch is due.
    pub fn has_work(&self) -> bool {
        self.started && !self.inbox.is_empty()
    }

    /// Checks an update before it is accepted (the validator): decodable, well-formed, and applicable to
    /// the current state.
    pub fn validate(&self, kind: MsgKind, payload: &Result<Value, String>) -> Result<(), String> {
        let v = payload.as_ref().map_err(|e| e.clone())?;
        let Some(schema) = &self.schema else {
            return Ok(());
        };
        let parsed = match kind {
            MsgKind::Update => wire::parse_update(schema, &self.entity, v),
            MsgKind::Delete => wire::parse_delete(schema, &self.entity, v),
            MsgKind::State => wire::parse_state(schema, v),
            _ => return Ok(()),
        }
        .map_err(|e| e.to_string())?;
        self.store
            .check(schema, &parsed.change)
            .map_err(|e| e.to_string())
    }

    /// Applies every queued message, in arrival order, as one batch.
    pub fn process(&mut self, now: u64) -> Processed {
        let mut out = Processed::default();
        let Some(schema) = self.schema.clone() else {
            return out;
        };
        let msgs: Vec<Msg> = self.inbox.drain(..).collect();
        let version = self.store.version();
        let mut rejections = Vec::new();
        let mut ok_tickets = Vec::new();
        let before_status = self.status;
        let before_shown = self.status_str();
        let mut child_events: Vec<ChildEvent> = Vec::new();
        let own_def = schema.entity(&self.entity).ok();
        let template = own_def.and_then(|d| d.api_url.clone());
        let interval = self
            .api
            .interval(own_def.and_then(|d| d.refresh_interval_ms));
        let mut batch = self.store.batch(&schema);
        for msg in msgs {
            let reject = |reason: String, rejections: &mut Vec<(Option<u64>, Rejection)>| {
                rejections.push((
                    msg.ticket,
                    Rejection {
                        signal: msg.kind.name().to_string(),
                        reason,
                        time: now,
                        version,
                    },
                ))
            };
            match msg.kind {
                MsgKind::Update | MsgKind::Delete | MsgKind::State => {
                    let parsed = msg.payload.clone().and_then(|v| {
                        match msg.kind {
                            MsgKind::Update => wire::parse_update(&schema, &self.entity, &v),
                            MsgKind::Delete => wire::parse_delete(&schema, &self.entity, &v),
                            _ => wire::parse_state(&schema, &v),
                        }
                        .map_err(|e| e.to_string())
                    });
                    match parsed {
                        Err(reason) => reject(reason, &mut rejections),
                        Ok(inc) => {
                            let stamp = batch.next_stamp(now, &self.workflow_id);
                            let source = inc.origin.as_deref().unwrap_or("client");
                            match batch.apply(&inc.change, &stamp, source) {
                                Ok(()) => ok_tickets.extend(msg.ticket),
                                Err(e) => reject(e.to_string(), &mut rejections),
                            }
                        }
                    }
                }
                MsgKind::ApiToken => match &msg.payload {
                    Ok(Value::String(t)) if t.is_empty() => {}
                    Ok(Value::String(t)) => {
                        if self.api_token.as_deref() != Some(t.as_str()) {
                            self.api_token = Some(t.clone());
                            self.token_rotations += 1;
                            out.token_changed = true;
                            if !self.loaded_by_parent {
                                self.api.want("apiToken");
                            }
                        }
                    }
                    Ok(Value::Null) => {}
                    Ok(other) => reject(
                        format!(
                            "`apiToken` takes the token as a JSON string, found {}",
                            stateful_engine::error::json_type(other)
                        ),
                        &mut rejections,
                    ),
                    Err(e) => reject(e.clone(), &mut rejections),
                },
                MsgKind::ApiUrl => match &msg.payload {
                    Ok(Value::String(u)) if !u.is_empty() => {
                        if self.api.url.as_deref() != Some(u.as_str()) {
                            self.api.url = Some(u.clone());
                            out.url_changed = true;
                            self.api.want("apiUrl");
                        }
                    }
                    Ok(_) => reject(
                        "`apiUrl` takes the URL as a non-empty JSON string".into(),
                        &mut rejections,
                    ),
                    Err(e) => reject(e.clone(), &mut rejections),
                },
                MsgKind::Checkpoint => self.checkpoint_requested = true,
                MsgKind::Refresh | MsgKind::RefreshTimer => {
                    let has_url = self
                        .api
                        .effective_url(template.as_deref(), &self.entity, &self.id)
                        .is_some();
                    if has_url {
                        self.api.want(msg.kind.name());
                    } else if msg.kind == MsgKind::Refresh {
                        reject(
                            "no API to load from: set `apiUrl`, or `apiBase` with an entity `apiUrl` template".into(),
                            &mut rejections,
                        );
                    }
                    if msg.kind == MsgKind::RefreshTimer && !has_url {
                        self.api.next_refresh_at = interval.map(|i| now + i);
                    }
                }
                MsgKind::Loaded => match msg.payload.clone().and_then(|v| serde_json::from_value::<Loaded>(v).map_err(|e| e.to_string())) {
                    Err(e) => reject(e, &mut rejections),
                    Ok(loaded) => {
                        self.api.finish(&loaded, now, interval);
                        let outputs: Vec<(&str, &stateful_activities::LoadOutput)> = match &loaded {
                            Loaded::Ok(o) => vec![(self.entity.as_str(), o)],
                            Loaded::Many { own, related } => std::iter::once((self.entity.as_str(), own))
                                .chain(related.iter().map(|(e, o)| (e.as_str(), o)))
                                .collect(),
                            Loaded::Error { .. } => Vec::new(),
                        };
                        let mut failure = None;
                        for (i, (entity, output)) in outputs.into_iter().enumerate() {
                            let change = if i == 0 {
                                loaded_change(&schema, &self.entity, &self.id, output)
                            } else {
                                related_change(&schema, entity, output)
                            };
                            let applied = change.and_then(|c| match c {
                                None => Ok(()),
                                Some(change) => {
                                    let stamp = batch.next_stamp(now, &self.workflow_id);
                                    batch
                                        .apply(&change, &stamp, "api")
                                        .map_err(|e| format!("the API's data does not apply: {e}"))
                                }
                            });
                            if let Err(reason) = applied {
                                failure.get_or_insert(reason.clone());
                                reject(reason, &mut rejections);
                            }
                        }
                        if let Some(reason) = failure {
                            self.api.state = LoadState::Failed;
                            self.api.last_error = Some(reason);
                        }
                    }
                },
                // Control signals take no argument; whatever came with them is ignored.
                MsgKind::Pause => {
                    if self.status == Status::Running {
                        self.status = Status::Paused;
                    }
                }
                MsgKind::Resume => {
                    if self.status == Status::Paused {
                        self.status = Status::Running;
                    }
                }
                MsgKind::Cancel => {
                    if !self.status.is_terminal() {
                        self.status = Status::Cancelled;
                    }
                }
                MsgKind::TemporalCancel => {
                    if !self.status.is_terminal() {
                        self.status = Status::Cancelled;
                        self.end_reason = Some("cancelled".into());
                    }
                }
                MsgKind::Subscribe => match msg.payload.clone().map(serde_json::from_value::<Subscription>) {
                    Ok(Ok(sub)) if !sub.workflow_id.is_empty() => self.tree.subscribe(sub),
                    Ok(Ok(_)) => reject("a subscription needs `workflowId`".into(), &mut rejections),
                    Ok(Err(e)) => reject(format!("not a subscription: {e}"), &mut rejections),
                    Err(e) => reject(e, &mut rejections),
                },
                MsgKind::Unsubscribe => {
                    let p = msg.payload.as_ref().ok();
                    let field = |k: &str| p.and_then(|v| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
                    match (field("workflowId"), field("subscriptionId")) {
                        (Some(w), Some(sid)) => {
                            if self.tree.unsubscribe(&w, &sid) && !self.status.is_terminal() {
                                // No managing parent references this entity any more.
                                self.status = Status::Cancelled;
                                self.end_reason = Some("no parent references it any more".into());
                            }
                        }
                        _ => reject("`unsubscribe` takes {workflowId, subscriptionId}".into(), &mut rejections),
                    }
                }
                MsgKind::ChildEnded | MsgKind::ChildEvent => {
                    let ev = msg.payload.clone().and_then(|v| {
                        if msg.kind == MsgKind::ChildEvent {
                            serde_json::from_value::<ChildEvent>(v).map_err(|e| e.to_string())
                        } else {
                            // A report from a child: {workflowId, status, reason}.
                            let wid = v.get("workflowId").and_then(|x| x.as_str()).unwrap_or_default().to_string();
                            let reason = v.get("reason").and_then(|x| x.as_str()).unwrap_or_default().to_string();
                            let generation = self.tree.children.get(&wid).map_or(0, |c| c.generation);
                            let outcome = if reason == "cancelled" { "cancelled" } else { "completed" };
                            Ok(ChildEvent { workflow_id: wid, generation, event: "reported".into(), outcome: outcome.into(), detail: reason })
                        }
                    });
                    match ev {
                        Ok(ev) => child_events.push(ev),
                        Err(e) => reject(e, &mut rejections),
                    }
                }
                MsgKind::Status => match msg.payload.as_ref().ok().and_then(|v| v.as_str()) {
                    Some("running") if self.status == Status::Paused => self.status = Status::Running,
                    Some("paused") if self.status == Status::Running => self.status = Status::Paused,
                    Some("running" | "paused") => {}
                    Some("completed" | "complete") if !self.status.is_terminal() => {
                        self.status = Status::Completed
                    }
                    Some("cancelled" | "cancelling" | "cancel") if !self.status.is_terminal() => {
                        self.status = Status::Cancelled
                    }
                    Some("completed" | "complete" | "cancelled" | "cancelling" | "cancel") => {}
                    _ => reject(
                        "`status` takes one of \"running\", \"paused\", \"completed\", \"cancelled\"".into(),
                        &mut rejections,
                    ),
                },
            }
        }
        let cs = batch.finish();
        let own = EntityRef::new(self.entity.clone(), self.id.clone());
        if cs
            .entities
            .get(&own)
            .is_some_and(|c| c.kind == ChangeKind::Deleted)
            && !self.status.is_terminal()
        {
            self.status = Status::Completed;
        }
        let new_version = self.store.version();
        for t in ok_tickets {
            self.results
                .insert(t, Ok(json!({"version": new_version, "changed": cs.len()})));
        }
        for (ticket, r) in rejections {
            if let Some(t) = ticket {
                self.results.insert(t, Err(r.reason.clone()));
            }
            self.rejected_total += 1;
            self.rejected.push_back(r.clone());
            while self.rejected.len() > MAX_REJECTED {
                self.rejected.pop_front();
            }
            out.rejected.push(r);
        }
        self.record(&cs, now);
        if self.status.is_terminal() && self.end_reason.is_none() {
            self.end_reason = Some(match self.status {
                Status::Completed => "completed".into(),
                _ => "cancel signal".into(),
            });
        }
        out.status_changed = self.status != before_status || self.status_str() != before_shown;
        out.effects = self.effects(&cs, &child_events, before_status, out.token_changed);
        out.changes = cs;
        out
    }

    fn effects(
        &mut self,
        cs: &ChangeSet,
        events: &[ChildEvent],
        before: Status,
        token_changed: bool,
    ) -> Vec<Effect> {
        let mut tree = std::mem::take(&mut self.tree);
        let mut effects = Vec::new();
        if let Some(me) = self.me() {
            let ending = self.status.is_terminal();
            for ev in events {
                effects.extend(tree.on_child_event(&me, ev, ending));
            }
            if ending {
                // The cascade: every child is cancelled, and subscribers learn that we ended.
                effects.extend(tree.cancel_all());
                let reason = self.end_reason.clone().unwrap_or_default();
                let mut told = std::collections::BTreeSet::new();
                for s in &tree.subscriptions {
                    if told.insert(s.workflow_id.clone()) {
                        effects.push(Effect::Signal {
                            workflow_id: s.workflow_id.clone(),
                            name: "childEnded".into(),
                            payload: Some(json!({"workflowId": self.workflow_id, "status": self.status.as_str(), "reason": reason})),
                            child_generation: None,
                        });
                    }
                }
            } else if self.status == Status::Paused {
                if before != Status::Paused {
                    tree.forward(&mut effects, "pause", None);
                }
                if !cs.is_empty() || token_changed {
                    tree.dirty = true;
                }
            } else {
                if before == Status::Paused {
                    tree.forward(&mut effects, "resume", None);
                    if tree.dirty {
                        effects.extend(tree.resync(&me));
                        if let Some(t) = me.api_token {
                            tree.forward(&mut effects, "apiToken", Some(json!(t)));
                        }
                    }
                }
                effects.extend(tree.plan(&me, cs, token_changed));
            }
        }
        self.tree = tree;
        effects
    }

    fn record(&mut self, cs: &ChangeSet, now: u64) {
        if cs.is_empty() {
            return;
        }
        self.changes_total += 1;
        let count = |k: ChangeKind| cs.entities.values().filter(|c| c.kind == k).count();
        self.recent.push_back(ChangeRecord {
            version: self.store.version(),
            time: now,
            sources: cs.sources().iter().map(|s| s.to_string()).collect(),
            added: count(ChangeKind::Added),
            updated: count(ChangeKind::Updated),
            deleted: count(ChangeKind::Deleted),
            entities: cs.entities.keys().take(10).map(|r| r.to_string()).collect(),
        });
        while self.recent.len() > MAX_RECENT {
            self.recent.pop_front();
        }
    }

    /// The status as queries and the memo show it: `unauthorized` while running with a token the API
    /// refused.
    pub fn status_str(&self) -> &'static str {
        if self.status == Status::Running && self.api.state == LoadState::Unauthorized {
            "unauthorized"
        } else {
            self.status.as_str()
        }
    }

    /// The URL loads use: `apiUrl` (input or signal), or the entity's template filled in.
    pub fn api_url(&self) -> Option<String> {
        let template = self
            .schema
            .as_ref()
            .and_then(|s| s.entity(&self.entity).ok())
            .and_then(|d| d.api_url.as_deref());
        self.api.effective_url(template, &self.entity, &self.id)
    }

    /// The refresh interval in force (input, else the entity's), in ms.
    pub fn refresh_interval(&self) -> Option<u64> {
        let entity = self
            .schema
            .as_ref()
            .and_then(|s| s.entity(&self.entity).ok())
            .and_then(|d| d.refresh_interval_ms);
        self.api.interval(entity)
    }

    /// The load to start now, with the token to send, if one is due (never while paused or ending).
    pub fn take_load(&mut self) -> Option<(LoadRequest, Option<String>)> {
        if self.status != Status::Running || !self.started {
            return None;
        }
        let url = self.api_url();
        let mut req = self.api.take_load(url)?;
        req.batch = self.batch_requests();
        Some((req, self.api_token.clone()))
    }

    /// The batch URLs of the running children whose entity has a `batchUrl`.
    fn batch_requests(&self) -> Vec<(String, String)> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        let mut ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for c in self
            .tree
            .children
            .values()
            .filter(|c| c.status == crate::tree::ChildStatus::Running)
        {
            ids.entry(c.entity.as_str()).or_default().push(c.id.clone());
        }
        let mut out = Vec::new();
        for (entity, ids) in ids {
            if let Some(t) = schema
                .entity(entity)
                .ok()
                .and_then(|d| d.batch_url.as_deref())
            {
                for url in crate::api::batch_urls(t, self.api.base.as_deref(), entity, &ids) {
                    out.push((entity.to_string(), url));
                }
            }
        }
        out
    }

    /// When the next periodic refresh is due (workflow time, ms), while one is scheduled.
    pub fn refresh_due(&self) -> Option<u64> {
        if self.status.is_terminal() {
            return None;
        }
        self.api.next_refresh_at
    }

    /// The `api` query.
    pub fn api_info(&self) -> Value {
        let mut v = self
            .api
            .info(self.api_url(), self.refresh_interval(), self.token_info());
        v["loadedByParent"] = json!(self.loaded_by_parent);
        v
    }

    /// The API token (a secret: for activities and children only, never for queries or logs).
    pub fn api_token(&self) -> Option<&str> {
        self.api_token.as_deref()
    }

    /// What the `apiToken` query answers: a fingerprint and the rotation count, never the token.
    pub fn token_info(&self) -> Value {
        json!({
            "set": self.api_token.is_some(),
            "fingerprint": self.api_token.as_deref().map(fingerprint),
            "rotations": self.token_rotations,
        })
    }

    /// The own entity, denormalized, or null.
    pub fn data(&self) -> Value {
        match &self.schema {
            Some(s) => s
                .denormalize(self.store.entities(), &self.entity, &self.id)
                .unwrap_or(Value::Null),
            None => Value::Null,
        }
    }

    /// The normalized state.
    pub fn state(&self) -> Value {
        serde_json::to_value(self.store.entities()).unwrap_or(Value::Null)
    }

    /// The `version` query.
    pub fn version_info(&self) -> Value {
        json!({
            "version": self.store.version(),
            "checksum": checksum(self.store.entities()),
            "entities": self.store.len(),
            "changes": self.changes_total,
            "runs": self.runs + 1,
        })
    }

    /// The `pendingChanges` query: what is queued for the next batch (signal names only; payloads may hold
    /// secrets).
    pub fn pending(&self) -> Value {
        json!({
            "count": self.inbox.len(),
            "signals": self.inbox.iter().map(|m| m.kind.name()).collect::<Vec<_>>(),
        })
    }

    /// The `rejected` query.
    pub fn rejected_info(&self) -> Value {
        json!({"total": self.rejected_total, "recent": self.rejected})
    }

    /// The memo: entity name, id, status, and, once there is one, the last checkpoint's version and
    /// checksum (never the token).
    pub fn memo(&self) -> Vec<(&'static str, String)> {
        let mut m = vec![
            ("entityName", self.entity.clone()),
            ("id", self.id.clone()),
            ("status", self.status_str().to_string()),
        ];
        if let Some(c) = self.checkpoints.back() {
            m.push(("checkpoint", format!("v{} {}", c.version, c.checksum)));
        }
        m
    }

    /// Records the checkpoint of this run's hand-over (call right before `carry_input`).
    pub fn checkpoint(&mut self, run_id: &str, now: u64) -> Checkpoint {
        let reason = if std::mem::take(&mut self.checkpoint_requested) {
            "checkpoint"
        } else {
            "history"
        };
        let cp = Checkpoint {
            run_id: run_id.to_string(),
            time: now,
            version: self.store.version(),
            checksum: checksum(self.store.entities()),
            reason: reason.into(),
        };
        self.checkpoints.push_back(cp.clone());
        while self.checkpoints.len() > MAX_CHECKPOINTS {
            self.checkpoints.pop_front();
        }
        cp
    }

    /// The input of the next run (continue-as-new): the wire fields plus the carry-over.
    pub fn carry_input(&mut self) -> Value {
        let carry = Carry {
            store: self.store.clone(),
            token_rotations: self.token_rotations,
            rejected: self.rejected.iter().cloned().collect(),
            rejected_total: self.rejected_total,
            recent: self.recent.iter().cloned().collect(),
            changes_total: self.changes_total,
            runs: self.runs,
            inbox: self
                .inbox
                .drain(..)
                .filter(|m| m.ticket.is_none())
                .collect(),
            children: self.tree.children.clone(),
            api: self.api.carried(),
            checkpoints: self.checkpoints.iter().cloned().collect(),
        };
        let mut v = json!({
            "id": self.id,
            "entityName": self.entity,
            "status": if self.status == Status::Paused { "paused" } else { "running" },
            "subscriptions": self.tree.subscriptions,
            "ancestorWorkflowIds": self.ancestors,
            "schema": self.schema_json,
            "maxHistoryLength": self.max_history,
            "carry": carry,
        });
        if let Some(u) = &self.api.url {
            v["apiUrl"] = json!(u);
        }
        if let Some(b) = &self.api.base {
            v["apiBase"] = json!(b);
        }
        if let Some(r) = self.api.refresh_ms {
            v["refreshInterval"] = json!(r);
        }
        if self.loaded_by_parent {
            v["loadedByParent"] = json!(true);
        }
        if let Some(cp) = self.checkpoints.back() {
            v["checkpoint"] = json!(cp);
        }
        if let Some(t) = &self.api_token {
            v["apiToken"] = json!(t);
        }
        v
    }
}

/// The own entity's `data`: its id is filled in when missing and must match.
fn own_data(schema: &Schema, entity: &str, id: &str, mut data: Value) -> Result<Value, String> {
    let def = schema.entity(entity).map_err(|e| e.to_string())?;
    if let (Value::Object(m), Some(attr)) = (&mut data, def.id_attribute.single()) {
        match m.get(attr) {
            None | Some(Value::Null) => {
                m.insert(attr.to_string(), Value::String(id.to_string()));
            }
            Some(v) => {
                if stateful_engine::normalize::id_key(v).as_deref() != Some(id) {
                    return Err(format!(
                        "`data.{attr}` is {v} but the input's `id` is \"{id}\""
                    ));
                }
            }
        }
    }
    Ok(data)
}

/// What a load's output does to the store (chrono-forge's `loadData` rules: `updates` when given, else
/// `data` normalized; `strategy` defaults to `$merge`). A 404 deletes the entity when its schema says
/// `onNotFound: delete`.
fn loaded_change(
    schema: &Schema,
    entity: &str,
    id: &str,
    out: &stateful_activities::LoadOutput,
) -> Result<Option<Change>, String> {
    if out.status == "notFound" {
        let def = schema.entity(entity).map_err(|e| e.to_string())?;
        return Ok(
            (def.on_not_found == stateful_engine::OnNotFound::Delete).then(|| Change::Delete {
                refs: [EntityRef::new(entity, id)].into(),
            }),
        );
    }
    // `updates` wins over `data`; only `data` is checked against the own entity.
    let data = match &out.data {
        _ if out.updates.as_ref().is_some_and(|u| !u.is_null()) => None,
        Some(d) if d.is_object() => Some(
            own_data(schema, entity, id, d.clone())
                .map_err(|e| format!("the API's answer is for another entity: {e}"))?,
        ),
        other => other.clone(),
    };
    load_message(out, data, entity)
        .map(|msg| wire::parse_update(schema, entity, &msg))
        .transpose()
        .map(|inc| inc.map(|i| i.change))
        .map_err(|e| format!("the API's answer does not fit the schema: {e}"))
}

/// The `update` message a load's output stands for (chrono-forge's `loadData` rules: `updates` when
/// given, else `data` normalized as `entity`; `strategy` defaults to `$merge`), or none.
fn load_message(
    out: &stateful_activities::LoadOutput,
    data: Option<Value>,
    entity: &str,
) -> Option<Value> {
    let strategy = json!(out.strategy.as_deref().unwrap_or("$merge"));
    match (&out.updates, data) {
        (Some(u), _) if !u.is_null() => Some(json!({"updates": u, "strategy": strategy})),
        (_, Some(d)) if !d.is_null() => {
            Some(json!({"data": d, "entityName": entity, "strategy": strategy}))
        }
        _ => None,
    }
}

/// What a batch output for related entities does: their `data` (a list) or `updates` are merged.
fn related_change(
    schema: &Schema,
    entity: &str,
    out: &stateful_activities::LoadOutput,
) -> Result<Option<Change>, String> {
    if out.status == "notFound" {
        return Ok(None);
    }
    load_message(out, out.data.clone(), entity)
        .map(|msg| wire::parse_update(schema, entity, &msg))
        .transpose()
        .map(|inc| inc.map(|i| i.change))
        .map_err(|e| format!("the API's batch answer for {entity} does not fit the schema: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse("User: {listings: [Listing]}\nListing: {user: User}", "t").unwrap()
    }

    fn started(input: Value) -> Core {
        let mut c = Core::default();
        let s = schema();
        let js = s.to_json();
        c.start(
            StartInput::parse(&input).unwrap(),
            s,
            js,
            "User-u".into(),
            1000,
        )
        .unwrap();
        c
    }

    #[test]
    fn a_batch_applies_in_arrival_order_and_answers_each_update() {
        let mut c = started(json!({"id": "u", "entityName": "User", "data": {"id": "u"}}));
        c.enqueue(
            MsgKind::Update,
            Ok(json!({"data": {"id": "u", "n": 1}})),
            false,
        );
        let t1 = c
            .enqueue(
                MsgKind::Update,
                Ok(json!({"data": {"id": "u", "n": 2}})),
                true,
            )
            .unwrap();
        let t2 = c
            .enqueue(
                MsgKind::Update,
                Ok(json!({"updates": {"Listing": {"x": {}}}, "strategy": "$set"})),
                true,
            )
            .unwrap();
        c.enqueue(MsgKind::Update, Err("no payload".into()), false);
        let out = c.process(2000);
        assert_eq!(c.data(), json!({"id": "u", "n": 2}));
        assert_eq!(c.store.version(), 2, "one batch, one version");
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(c.take_result(t1).unwrap().unwrap()["version"], json!(2));
        assert!(
            c.take_result(t2)
                .unwrap()
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(c.handlers_idle());
    }

    #[test]
    fn carry_over_keeps_everything_and_messages_that_arrived_first_in_the_new_run() {
        let mut c = started(
            json!({"id": "u", "entityName": "User", "data": {"id": "u"}, "apiToken": "t1"}),
        );
        c.enqueue(MsgKind::ApiToken, Ok(json!("t2")), false);
        c.enqueue(MsgKind::Update, Ok(json!(1)), false);
        c.process(2000);
        c.enqueue(
            MsgKind::Update,
            Ok(json!({"data": {"id": "u", "a": 1}})),
            false,
        );
        let next = c.carry_input();
        assert!(c.inbox.is_empty());
        // In the new run, a message arrives before the run loop takes the input.
        let mut n = Core::default();
        n.enqueue(
            MsgKind::Update,
            Ok(json!({"data": {"id": "u", "a": 2}})),
            false,
        );
        let s = schema();
        let js = s.to_json();
        n.start(
            StartInput::parse(&next).unwrap(),
            s,
            js,
            "User-u".into(),
            3000,
        )
        .unwrap();
        n.process(3000);
        assert_eq!(
            n.data(),
            json!({"id": "u", "a": 2}),
            "carried message first, then the new one"
        );
        assert_eq!(n.token_info()["fingerprint"], json!(fingerprint("t2")));
        assert_eq!(n.token_info()["rotations"], json!(1));
        assert_eq!(n.rejected_total, 1);
        assert_eq!(n.runs, 1);
    }

    #[test]
    fn control_signals_and_status_transitions() {
        let mut c = started(json!({"id": "u", "entityName": "User", "status": "paused"}));
        c.enqueue(MsgKind::Pause, Err("no payload".into()), false);
        c.process(1);
        assert_eq!(c.status, Status::Paused);
        c.enqueue(MsgKind::Resume, Err("no payload".into()), false);
        assert!(c.process(2).status_changed);
        assert_eq!(c.status, Status::Running);
        c.enqueue(MsgKind::Cancel, Ok(Value::Null), false);
        c.enqueue(MsgKind::Resume, Ok(Value::Null), false);
        c.process(3);
        assert_eq!(
            c.status,
            Status::Cancelled,
            "resume does not revive an ended workflow"
        );
    }

    #[test]
    fn queries_never_hold_the_token() {
        let c = started(json!({"id": "u", "entityName": "User", "apiToken": "very-secret"}));
        let all = [
            c.token_info(),
            c.version_info(),
            c.pending(),
            c.rejected_info(),
            c.state(),
            c.data(),
        ];
        for v in all {
            assert!(!v.to_string().contains("very-secret"));
        }
        assert!(!c.api_info().to_string().contains("very-secret"));
    }

    fn loaded(c: &mut Core, l: Loaded, now: u64) -> Processed {
        c.enqueue(MsgKind::Loaded, Ok(serde_json::to_value(l).unwrap()), false);
        c.process(now)
    }

    fn ok(data: Value) -> Loaded {
        Loaded::Ok(stateful_activities::LoadOutput {
            status: "ok".into(),
            data: Some(data),
            updates: None,
            strategy: None,
        })
    }

    fn api_core(schema: &str, input: Value) -> Core {
        let mut c = Core::default();
        let s = Schema::parse(schema, "t").unwrap();
        let js = s.to_json();
        c.start(
            StartInput::parse(&input).unwrap(),
            s,
            js,
            "User-u".into(),
            1000,
        )
        .unwrap();
        c
    }

    #[test]
    fn loads_at_start_from_the_template_and_applies_with_origin_api() {
        let mut c = api_core(
            "User: {apiUrl: '{apiBase}/users/{id}', refreshInterval: 60s}",
            json!({"id": "u", "entityName": "User", "apiBase": "http://h/", "apiToken": "t1"}),
        );
        let (req, token) = c.take_load().expect("a load at start");
        assert_eq!(req.url, "http://h/users/u");
        assert_eq!(token.as_deref(), Some("t1"));
        assert!(c.take_load().is_none(), "one at a time");
        assert_eq!(c.refresh_due(), Some(61_000));
        let out = loaded(&mut c, ok(json!({"name": "Ann"})), 2000);
        assert_eq!(c.data(), json!({"id": "u", "name": "Ann"}));
        assert_eq!(
            out.changes
                .sources()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ["api"]
        );
        assert_eq!(c.api.state, LoadState::Ok);
        assert_eq!(
            c.refresh_due(),
            Some(62_000),
            "the next refresh counts from the load"
        );
        assert!(c.take_load().is_none());
        c.enqueue(MsgKind::RefreshTimer, Ok(Value::Null), false);
        c.process(62_000);
        assert_eq!(c.take_load().unwrap().0.url, "http://h/users/u");
    }

    #[test]
    fn unauthorized_shows_in_the_status_until_a_new_token_loads() {
        let mut c = api_core(
            "User: {}",
            json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "apiToken": "old"}),
        );
        c.take_load().unwrap();
        let out = loaded(
            &mut c,
            Loaded::Error {
                kind: "Unauthorized".into(),
                message: "unauthorized: the API answered 401".into(),
            },
            2000,
        );
        assert!(out.status_changed, "the memo follows");
        assert_eq!(c.status_str(), "unauthorized");
        assert_eq!(c.memo()[2].1, "unauthorized");
        assert!(c.take_load().is_none(), "no retry with the same token");
        c.enqueue(MsgKind::ApiToken, Ok(json!("new")), false);
        c.process(3000);
        let (_, token) = c.take_load().expect("a new token reloads");
        assert_eq!(token.as_deref(), Some("new"));
        loaded(&mut c, ok(json!({"n": 1})), 4000);
        assert_eq!(c.status_str(), "running");
    }

    #[test]
    fn not_found_keeps_or_deletes_as_the_schema_says() {
        let nf = Loaded::Ok(stateful_activities::LoadOutput {
            status: "notFound".into(),
            data: None,
            updates: None,
            strategy: None,
        });
        let input =
            json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "data": {"n": 1}});
        let mut keep = api_core("User: {}", input.clone());
        keep.take_load().unwrap();
        loaded(&mut keep, nf.clone(), 2000);
        assert_eq!(keep.api.state, LoadState::NotFound);
        assert_eq!(keep.data(), json!({"id": "u", "n": 1}));
        assert_eq!(keep.status, Status::Running);
        let mut del = api_core("User: {onNotFound: delete}", input);
        del.take_load().unwrap();
        loaded(&mut del, nf, 2000);
        assert_eq!(del.status, Status::Completed);
        assert_eq!(del.data(), Value::Null);
    }

    #[test]
    fn unusable_answers_are_rejected_and_change_nothing() {
        let mut c = api_core(
            "User: {}",
            json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "data": {"n": 1}}),
        );
        c.take_load().unwrap();
        let out = loaded(&mut c, ok(json!({"id": "someone-else"})), 2000);
        assert_eq!(out.rejected.len(), 1);
        assert!(
            out.rejected[0].reason.contains("another entity"),
            "{:?}",
            out.rejected
        );
        assert_eq!(c.api.state, LoadState::Failed);
        assert_eq!(c.data(), json!({"id": "u", "n": 1}));
        // A `refresh` without any API is refused with a reason.
        let mut none = api_core("User: {}", json!({"id": "u", "entityName": "User"}));
        assert!(none.take_load().is_none());
        none.enqueue(MsgKind::Refresh, Ok(Value::Null), false);
        let out = none.process(2000);
        assert!(
            out.rejected[0].reason.contains("no API"),
            "{:?}",
            out.rejected
        );
    }

    #[test]
    fn a_checkpoint_records_the_checksum_and_the_next_run_verifies_it() {
        let mut c = started(json!({"id": "u", "entityName": "User", "data": {"id": "u", "n": 1}}));
        c.enqueue(MsgKind::Checkpoint, Ok(Value::Null), false);
        c.process(2000);
        assert!(c.checkpoint_requested);
        let cp = c.checkpoint("run-1", 2000);
        assert_eq!(
            (cp.reason.as_str(), cp.version),
            ("checkpoint", c.store.version())
        );
        assert_eq!(cp.checksum, checksum(c.store.entities()));
        let next = c.carry_input();
        assert_eq!(next["checkpoint"]["checksum"], json!(cp.checksum));
        let start = |input: &Value| {
            let mut n = Core::default();
            let s = schema();
            let js = s.to_json();
            n.start(
                StartInput::parse(input).unwrap(),
                s,
                js,
                "User-u".into(),
                3000,
            )
            .unwrap();
            n
        };
        let n = start(&next);
        assert_eq!(n.integrity_error, None);
        assert_eq!(n.checkpoints.len(), 1);
        assert_eq!(n.memo()[3].1, format!("v{} {}", cp.version, cp.checksum));
        // A carried state that does not match its checkpoint is reported.
        let mut bad = next.clone();
        bad["carry"]["checkpoints"][0]["checksum"] = json!("sha256:0000");
        assert!(start(&bad).integrity_error.unwrap().contains("sha256:0000"));
    }

    #[test]
    fn api_settings_and_a_due_load_survive_continue_as_new() {
        let mut c = api_core(
            "User: {refreshInterval: 60s}",
            json!({"id": "u", "entityName": "User", "apiUrl": "http://h/u", "apiBase": "http://b"}),
        );
        c.take_load().unwrap();
        let next = c.carry_input();
        let mut n = Core::default();
        let s = Schema::from_json(&next["schema"]).unwrap();
        n.start(
            StartInput::parse(&next).unwrap(),
            s,
            next["schema"].clone(),
            "User-u".into(),
            5000,
        )
        .unwrap();
        assert_eq!(n.api.base.as_deref(), Some("http://b"));
        assert_eq!(n.refresh_due(), Some(61_000), "the refresh time is kept");
        assert_eq!(n.take_load().unwrap().0.reason, "continued");
    }
}

#[cfg(test)]
mod tree_tests {
    use super::*;
    use crate::tree::{ChildStatus, Effect};
    use serde_json::json;

    fn start(schema: &str, input: Value) -> (Core, Vec<Effect>) {
        let mut c = Core::default();
        let s = Schema::parse(schema, "t").unwrap();
        let js = s.to_json();
        c.start(
            StartInput::parse(&input).unwrap(),
            s,
            js,
            format!(
                "{}-{}",
                input["entityName"].as_str().unwrap(),
                input["id"].as_str().unwrap()
            ),
            1,
        )
        .unwrap();
        let e = c.initial_effects();
        (c, e)
    }

    #[test]
    fn on_remove_keep_leaves_the_child_running_and_cancel_unsubscribes() {
        let (mut c, e) = start(
            "User: {listings: {entity: Listing, many: true, onRemove: keep}, photos: [Photo]}\nListing: {}\nPhoto: {}",
            json!({"id": "u", "entityName": "User", "data": {"id": "u", "listings": [{"id": "l"}], "photos": [{"id": "p"}]}}),
        );
        assert_eq!(
            e.iter()
                .filter(|e| matches!(e, Effect::Start { .. }))
                .count(),
            2
        );
        c.enqueue(
            MsgKind::Update,
            Ok(json!({"data": {"id": "u", "listings": [], "photos": []}})),
            false,
        );
        let out = c.process(2);
        // `keep`: no message at all to Listing-l; `cancel` (default): Photo-p is told its parent let go.
        assert!(!out.effects.iter().any(
            |e| matches!(e, Effect::Signal { workflow_id, .. } if workflow_id == "Listing-l")
        ));
        assert!(out.effects.iter().any(|e| matches!(e, Effect::Signal { workflow_id, name, .. } if workflow_id == "Photo-p" && name == "unsubscribe")));
        assert_eq!(c.tree.children["Listing-l"].status, ChildStatus::Removed);
    }

    #[test]
    fn a_child_started_with_a_stamped_slice_keeps_the_parents_stamps() {
        let (_, e) = start(
            "User: {listings: [Listing]}\nListing: {user: User}",
            json!({"id": "u", "entityName": "User", "data": {"id": "u", "listings": [{"id": "l", "user": "u", "name": "x"}]}}),
        );
        let Some(Effect::Start { input, .. }) = e.into_iter().next() else {
            panic!("no start")
        };
        assert_eq!(
            input["stateStamps"]["Listing"]["l"]["name"],
            json!([1, "User-u"])
        );
        let (child, _) = start("User: {listings: [Listing]}\nListing: {user: User}", input);
        assert_eq!(
            child.store.meta("Listing", "l").unwrap().stamps["name"],
            stateful_engine::Stamp::new(1, "User-u")
        );
    }
}
