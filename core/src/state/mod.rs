//! [`Core`]: the state of one StatefulWorkflow and everything it decides without Temporal. The glue
//! feeds it messages and the workflow time, and executes what it returns. It is made of sub-states,
//! each owning its invariants: the identity, the store, the status, the API side with the token
//! ([`ApiState`]), the tree ([`Tree`]), the inbox with its update tickets ([`Inbox`]) and the audit
//! trail ([`Audit`]).

use std::sync::Arc;

use serde_json::{Value, json};
use stateful_engine::{Change, ChangeSet, EntityRef, Schema, Stamp, Store, checksum, wire};

use crate::answer::own_data;
use crate::api::{Api, ApiState};
use crate::audit::{Audit, AuditCarry};
use crate::inbox::Inbox;
use crate::input::{Carry, StartInput};
use crate::limits::Limits;
use crate::msg::{Msg, Signal};
use crate::order::Latest;
use crate::outbox::Outbox;
use crate::secret::TokenState;
use crate::status::Status;
use crate::tree::{Effect, Me, Tree};

mod carry;
mod evolve;
#[cfg(test)]
mod evolve_tests;
#[cfg(test)]
mod hooks_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod ordering_tests;
mod pacing;
#[cfg(test)]
mod peer_tests;
mod process;
mod queries;
mod size;
#[cfg(test)]
mod tests;
mod validate;

pub use process::Processed;

/// Default history length past which a workflow continues as new.
pub const DEFAULT_MAX_HISTORY: u32 = 10_000;

/// Who the workflow is: its entity, its place in the tree, the schema it runs with.
#[derive(Debug, Default)]
struct Ident {
    id: String,
    entity: String,
    workflow_id: String,
    ancestors: Vec<String>,
    /// Shared by every workflow of the worker that runs the same schema (see [`Core::start`]).
    schema: Option<Arc<Schema>>,
    /// The schema as recorded (extended-format JSON), carried over continue-as-new and to children;
    /// shared as the parsed schema is.
    schema_json: Arc<Value>,
    max_history: u32,
    /// The incarnation its starter gave it (carried over continue-as-new).
    incarnation: Option<Stamp>,
    /// The limits it keeps under.
    limits: Limits,
    /// The task queue of its HTTP activities (`None`: its own); handed down and carried over.
    activity_task_queue: Option<String>,
    /// The stamp of the `schema` message that set the schema (unset: the one it started with);
    /// handed down and carried over.
    schema_order: Latest,
    /// How many schema changes the schema has had; handed down and carried over.
    schema_version: u64,
    /// The schema before a change whose effects are not planned yet (a removed relation's
    /// `onRemove` is read from it).
    previous_schema: Option<Arc<Schema>>,
}

/// The state of one StatefulWorkflow.
#[derive(Debug, Default)]
pub struct Core {
    started: bool,
    ident: Ident,
    store: Store,
    status: Status,
    /// Why the workflow ends, once it does.
    end_reason: Option<String>,
    api: ApiState,
    tree: Tree,
    inbox: Inbox,
    audit: Audit,
    /// Set when the state carried into this run does not match the checksum its checkpoint recorded.
    integrity_error: Option<String>,
    /// The initial change set, planned by [`Core::initial_effects`].
    initial: Option<ChangeSet>,
    /// Workflow time of the start (for the stamps of the start's effects).
    started_at: u64,
    /// The stamp of the message that set the status (`pause`, `resume`, `status`).
    status_order: Latest,
    /// Replaying a history recorded before control messages were stamped (see [`Core::set_legacy`]).
    legacy: bool,
    /// Effects not yet issued (see [`crate::outbox`]).
    outbox: Outbox,
    /// What the size guard knows (see [`size`]).
    size: size::SizeGuard,
    /// A deferred hand-over is tried again once the history is this long.
    handover_after: u32,
    /// Payload bytes this run received and sent (an estimate of its history's size, which the SDK
    /// does not tell): past [`MAX_HISTORY_BYTES`] the run continues as new.
    history_bytes: u64,
    /// Derive the API hosts when the input does not name them (see [`Core::set_check_hosts`]).
    check_hosts: bool,
    /// Hand the signals and cancellations that wait to the next run (see
    /// [`Core::set_carry_outbox`]).
    carry_outbox: bool,
    /// The run is handing over or ending: acknowledged updates are refused (see
    /// [`Core::set_draining`]).
    draining: Option<&'static str>,
    /// Outbound change hooks (see [`crate::hooks`]).
    hooks: crate::hooks::Hooks,
}

/// A run's payload bytes (received and sent) past which it continues as new: Temporal terminates a
/// workflow whose history passes 50 MB, and warns at 10 MB.
pub const MAX_HISTORY_BYTES: u64 = 20_000_000;

/// A started core for tests: `schema` (YAML), `input` (a start input), workflow id
/// `{entityName}-{id}`, workflow time `now`.
#[cfg(test)]
pub(crate) fn started_core(schema: &str, input: &Value, now: u64) -> Core {
    let mut c = Core::default();
    let s = Schema::parse(schema, "t").expect("a test schema");
    let js = s.to_json();
    let wid = format!(
        "{}-{}",
        input["entityName"].as_str().unwrap_or_default(),
        input["id"].as_str().unwrap_or_default()
    );
    c.start(
        StartInput::parse(input).expect("a test input"),
        s,
        js,
        wid,
        now,
    )
    .expect("a test input starts");
    c
}

/// What the planner needs to know about the workflow (borrows disjoint parts of [`Core`], so that
/// the tree can be planned mutably at the same time).
fn me<'a>(
    ident: &'a Ident,
    store: &'a Store,
    api: &'a ApiState,
    order: Ordering<'a>,
) -> Option<Me<'a>> {
    let schema = ident.schema.as_deref()?;
    Some(Me {
        legacy: order.legacy,
        token_stamp: api.token.stamp(),
        status_stamp: order.status.get(),
        paused: order.paused,
        control_stamp: order.control,
        incarnation: ident.incarnation.as_ref(),
        schema,
        store,
        own: EntityRef::new(ident.entity.clone(), ident.id.clone()),
        workflow_id: &ident.workflow_id,
        ancestors: &ident.ancestors,
        api_token: api.token(),
        api_base: api.loads.base.as_deref(),
        api_hosts: api.loads.hosts.as_ref(),
        loads: api_url(ident, &api.loads).is_some(),
        schema_json: &ident.schema_json,
        limits: &ident.limits,
        activity_task_queue: ident.activity_task_queue.as_deref(),
        schema_stamp: ident.schema_order.get(),
        schema_version: ident.schema_version,
        previous_schema: ident.previous_schema.as_deref(),
    })
}

/// What the planner needs of the ordering: legacy or not, the status's stamp, and this batch's
/// control stamp.
#[derive(Clone, Copy)]
struct Ordering<'a> {
    legacy: bool,
    paused: bool,
    status: &'a Latest,
    control: Option<&'a Stamp>,
}

impl<'a> Ordering<'a> {
    /// From the parts of [`Core`] it reads (fields, not `&Core`, so that the tree can be borrowed
    /// mutably meanwhile).
    fn new(
        legacy: bool,
        status: Status,
        status_order: &'a Latest,
        control: Option<&'a Stamp>,
    ) -> Ordering<'a> {
        Ordering {
            legacy,
            paused: status == Status::Paused,
            status: status_order,
            control,
        }
    }
}

/// Refuses a client's change that writes an entity whose child workflow id would be too long for
/// Temporal (its siblings are unaffected: the change is refused as a whole, with the reason).
fn check_ids(schema: &Schema, store: &Store, ident: &Ident, change: &Change) -> Result<(), String> {
    let own = EntityRef::new(ident.entity.clone(), ident.id.clone());
    match change {
        Change::Upsert { entities, .. } | Change::SetState { entities } => {
            stateful_engine::plan::check_child_ids(schema, store, &own, entities)
        }
        _ => Ok(()),
    }
}

/// The URL loads use: `apiUrl` (input or signal), or the entity's template filled in.
fn api_url(ident: &Ident, api: &Api) -> Option<String> {
    let template = ident
        .schema
        .as_ref()
        .and_then(|s| s.entity(&ident.entity).ok())
        .and_then(|d| d.api_url.as_deref());
    api.effective_url(template, &ident.entity, &ident.id)
}

impl Core {
    /// Accepts the start input: the schema, the entity, the initial data or state, or the carry-over of
    /// a previous run. An error ends the workflow (it says what is wrong with the input).
    pub fn start(
        &mut self,
        mut input: StartInput,
        schema: impl Into<Arc<Schema>>,
        schema_json: impl Into<Arc<Value>>,
        workflow_id: String,
        now: u64,
    ) -> Result<(), String> {
        let schema: Arc<Schema> = schema.into();
        schema
            .entity(&input.entity_name)
            .map_err(|e| e.to_string())?;
        let carry = input.carry.take();
        self.ident = Ident {
            id: std::mem::take(&mut input.id),
            entity: std::mem::take(&mut input.entity_name),
            workflow_id,
            ancestors: std::mem::take(&mut input.ancestor_workflow_ids),
            schema: Some(schema),
            schema_json: schema_json.into(),
            max_history: input.max_history.unwrap_or(DEFAULT_MAX_HISTORY),
            incarnation: input.incarnation.take(),
            limits: input.limits,
            activity_task_queue: input.activity_task_queue.take(),
            schema_order: Latest::default(),
            schema_version: input.schema_version,
            previous_schema: None,
        };
        self.started_at = now;
        // Stamps a start input brings are taken as a message's are (clamped to a small skew past
        // now): a start cannot freeze the token or the status.
        let admit = |s: Option<Stamp>| s.map(|s| crate::order::admit(s, now)).transpose();
        input.status_stamp = admit(input.status_stamp.take())?;
        input.api_token_stamp = admit(input.api_token_stamp.take())?;
        self.ident.incarnation = admit(self.ident.incarnation.take())?;
        self.ident.schema_order = Latest::new(admit(input.schema_stamp.take())?);
        self.status = input.status;
        self.status_order = Latest::new(input.status_stamp.take());
        self.api = ApiState {
            loads: Api {
                url: input.api_url.take(),
                base: input.api_base.take(),
                refresh_ms: input.refresh_ms,
                ..Api::default()
            },
            token: {
                let token = input.api_token.take();
                // A token given without a stamp (a client's start, a parent of an earlier release)
                // is older than any message: every rotation wins over it.
                let stamp = input
                    .api_token_stamp
                    .take()
                    .or_else(|| token.as_ref().map(|_| Stamp::new(0, "")));
                TokenState::new(token, 0, Latest::new(stamp))
            },
            loaded_by_parent: input.loaded_by_parent,
            url_order: Latest::default(),
        };
        for sub in &mut input.subscriptions {
            // A subscriber's incarnation is a stamp like any other: clamped to a small skew.
            if let Ok(Some(i)) = crate::order::stamp_in_key(sub, "incarnation", now) {
                sub["incarnation"] = json!(i);
            }
        }
        let bad_subs = self.tree.set_subscriptions(&input.subscriptions);
        // A client's (or a parent's) start is refused with the reason; a run continued from an
        // earlier release drops what it would no longer take, rather than fail its next run.
        if let (Some(e), None) = (bad_subs.into_iter().next(), &carry) {
            return Err(format!("`subscriptions`: {e}"));
        }
        let fresh = carry.is_none();
        let given_hosts = input.api_hosts.take();
        match carry {
            Some(c) => self.start_carried(c, now),
            None => self.start_fresh(input, now)?,
        }
        let total = if fresh {
            self.measure_state_with(self.registry_estimate())
        } else {
            self.measure_state()
        };
        let max = self.ident.limits.state_budget();
        if fresh && total > max {
            return Err(format!(
                "the initial state would take {total} bytes, more than the {max} bytes a state may \
                 take (nine tenths of one payload: the state must fit in the input of the next run)"
            ));
        }
        self.set_hosts(given_hosts);
        self.started = true;
        self.rebuild_slices();
        Ok(())
    }

    /// The hosts the token may be sent to: carried over, or given by the input (a parent hands its
    /// own down), or, for a root of this release, those of its `apiBase`, its `apiUrl` and the
    /// schema's URL templates that name a host. A URL the input itself gives is always allowed (the
    /// one who starts a workflow chooses its API).
    fn set_hosts(&mut self, given: Option<std::collections::BTreeSet<String>>) {
        let loads = &mut self.api.loads;
        let mut hosts = match (loads.hosts.take(), given) {
            (Some(h), _) | (None, Some(h)) => h,
            (None, None) if self.check_hosts => {
                let schema = self.ident.schema.as_deref();
                schema
                    .into_iter()
                    .flat_map(|s| s.entities().values())
                    .flat_map(|d| {
                        [d.api_url.as_deref(), d.batch_url.as_deref()]
                            .into_iter()
                            .chain(d.hooks.iter().map(|h| Some(h.url.as_str())))
                    })
                    .flatten()
                    .filter_map(crate::valid::template_host)
                    .collect()
            }
            (None, None) => return,
        };
        for u in [&loads.base, &loads.url].into_iter().flatten() {
            if let Ok(h) = crate::valid::host_of(u) {
                hosts.insert(h);
            }
        }
        loads.hosts = Some(hosts);
    }

    /// Set by the glue before [`Core::start`] for a workflow of this release whose input does not
    /// name its API hosts: they are then derived (see [`Core::set_hosts`]); histories recorded
    /// before allow-lists replay without one.
    pub fn set_check_hosts(&mut self, on: bool) {
        self.check_hosts = on;
    }

    /// A continued run: everything the previous run handed over.
    fn start_carried(&mut self, c: Carry, now: u64) {
        self.store = c.store;
        self.api.token = TokenState::new(
            self.api.token.get().cloned(),
            c.token_rotations,
            c.order.token,
        );
        self.api.url_order = c.order.url;
        self.status_order = c.order.status;
        self.ident.schema_order = c.order.schema;
        self.ident.schema_version = c.schema_version;
        self.audit = Audit::carried(AuditCarry {
            rejected: c.rejected,
            rejected_total: c.rejected_total,
            recent: c.recent,
            changes_total: c.changes_total,
            runs: c.runs,
            checkpoints: c.checkpoints,
        });
        if c.version > crate::input::CARRY_VERSION {
            // A worker rolled back past a change of the carry's shape: said, not silent.
            self.audit.reject(crate::audit::Rejection {
                signal: "carry".into(),
                reason: format!(
                    "the previous run was written by a later release (carry version {}, this worker knows up to {}): what that release added is not carried on",
                    c.version,
                    crate::input::CARRY_VERSION
                ),
                time: now,
                version: self.store.version(),
            });
        }
        if let Some(last) = self.audit.last_checkpoint() {
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
        self.inbox.prepend(c.inbox);
        self.tree.carry_over(c.children, c.order.subscriptions);
        // What the previous run decided and handed over goes first.
        self.outbox.push_carried(c.outbox);
        self.hooks = crate::hooks::Hooks::carried(c.hooks);
        // Children the previous run had no room to start: this run starts them.
        for (wid, generation) in self.tree.queued() {
            self.outbox.push_start(wid, generation);
        }
        // The carried API bookkeeping keeps its next refresh time and any load that was due.
        let loads = &mut self.api.loads;
        *loads = Api {
            url: loads.url.take(),
            base: loads.base.take(),
            refresh_ms: loads.refresh_ms,
            ..c.api.carried()
        };
    }

    /// A first run: the input's `state` (a parent's stamped slice) and `data`, applied as one batch.
    fn start_fresh(&mut self, input: StartInput, now: u64) -> Result<(), String> {
        if let Some(inc) = self.ident.incarnation.clone() {
            // The subscriptions it was started with are as new as its start: an `unsubscribe` sent
            // to an earlier run of it must not remove them.
            let subs: Vec<(String, String)> = self
                .tree
                .subscriptions()
                .iter()
                .map(|s| (s.workflow_id.clone(), s.subscription_id.clone()))
                .collect();
            for (w, sid) in subs {
                self.tree.order_subscription(&w, &sid, &inc, true);
            }
        }
        let schema = self.ident.schema.clone().expect("set by start");
        let entity = self.ident.entity.clone();
        let mut initial = Vec::new();
        if let Some(state) = &input.state {
            // A parent hands its child a stamped slice, so that the child's copy keeps the parent's
            // stamps (and a later, older-stamped write does not lose to the copy made at start).
            let parsed = match &input.state_stamps {
                Some(stamps) => wire::parse_update(
                    &schema,
                    &entity,
                    &json!({"updates": state, "stamps": stamps}),
                ),
                None => wire::parse_state(&schema, state),
            }
            .map_err(|e| format!("`state`: {e}"))?;
            let mut change = parsed.change;
            if let (Change::Writes(w), false) = (&mut change, self.legacy) {
                w.clamp(now.saturating_add(crate::order::MAX_SKEW_MS));
            }
            initial.push(change);
        }
        if let Some(data) = input.data {
            let data = own_data(&schema, &entity, &self.ident.id, data)?;
            let entities = schema
                .normalize_owned(&entity, data)
                .map_err(|e| format!("`data`: {e}"))?;
            initial.push(Change::Upsert {
                entities,
                strategy: Default::default(),
            });
        }
        // The state a parent hands down counts as coming from the parent: it is not echoed back up.
        let source = match (&input.state, self.ident.ancestors.last()) {
            (Some(_), Some(parent)) => parent.clone(),
            _ => "input".to_string(),
        };
        let mut batch = self.store.batch(&schema);
        for c in &initial {
            let stamp = batch.next_stamp(now, &self.ident.workflow_id);
            batch
                .apply(c, &stamp, &source)
                .map_err(|e| format!("the initial data does not apply: {e}"))?;
        }
        let cs = batch.finish();
        self.audit.record(&cs, self.store.version(), now);
        if api_url(&self.ident, &self.api.loads).is_some() && !self.api.loaded_by_parent {
            self.api.loads.want("start");
        }
        self.api.loads.next_refresh_at = self.refresh_interval().map(|i| now.saturating_add(i));
        // The children of the initial state are started by the first batch's plan.
        self.initial = Some(cs);
        Ok(())
    }

    /// Set by the glue while a workflow replays a history recorded before control messages were
    /// stamped: it then sends plain payloads and orders nothing, as that release did.
    pub fn set_legacy(&mut self, legacy: bool) {
        self.legacy = legacy;
    }

    /// True when the next batch would adopt a child whose start was refused because a workflow
    /// with its id already runs, and this run has not decided yet whether such a workflow is
    /// verified first: the glue then asks the `verify-adoption` patch (at this point of the
    /// history, so that a history recorded before verification replays as it ran) and tells the
    /// answer with [`Core::set_verify_adoption`].
    pub fn adoption_mode_needed(&self) -> bool {
        self.tree.verify_adoption().is_none()
            && self.inbox.iter().any(|m| {
                matches!(m, Msg::Child(ev) if ev.event == crate::tree::ChildEventKind::AlreadyRunning)
            })
    }

    /// Whether, in this run, a workflow found running under a child's id is verified to be of
    /// the expected type (a StatefulWorkflow, or the relation's `workflowType`) before it is
    /// adopted; a workflow of another type is then recorded as conflicting, and sent nothing.
    pub fn set_verify_adoption(&mut self, on: bool) {
        self.tree.set_verify_adoption(on);
    }

    /// True when the inbox holds a change from a workflow that sends no stamps (a `changeOrigin`,
    /// no `stamps`: chrono-forge) and this run has not decided whether such peers are answered
    /// (see [`crate::tree::Tree::note_stampless`]): the glue then asks the `echo-stampless-peers`
    /// patch (at this point of the history, so that histories recorded before it replay as they
    /// ran) and tells the answer with [`Core::set_echo_peers`].
    pub fn echo_mode_needed(&self) -> bool {
        !self.legacy
            && self.tree.echo_peers().is_none()
            && self.inbox.iter().any(|m| match m {
                Msg::Wire {
                    signal: crate::msg::Signal::Update | crate::msg::Signal::Delete,
                    payload: Ok(v),
                    ..
                } => {
                    v.get("changeOrigin").is_some_and(Value::is_string)
                        && v.get("stamps").is_none_or(Value::is_null)
                }
                _ => false,
            })
    }

    /// Whether, in this run, peers that send no stamps are answered with the winning values of
    /// what they wrote.
    pub fn set_echo_peers(&mut self, on: bool) {
        self.tree.set_echo_peers(on);
    }

    fn rebuild_slices(&mut self) {
        let order = Ordering::new(self.legacy, self.status, &self.status_order, None);
        if let Some(me) = me(&self.ident, &self.store, &self.api, order) {
            self.tree.rebuild_slices(&me);
        }
    }

    /// Plans the effects of the start (children of the initial state, catch-ups of carried ones);
    /// call once after `start`.
    pub fn initial_effects(&mut self) -> Vec<Effect> {
        let cs = self.initial.take().unwrap_or_default();
        let control = (!self.legacy).then(|| {
            self.store
                .next_stamp(self.started_at, &self.ident.workflow_id)
        });
        let order = Ordering::new(
            self.legacy,
            self.status,
            &self.status_order,
            control.as_ref(),
        );
        match me(&self.ident, &self.store, &self.api, order) {
            Some(me) => self.tree.start_effects(&me, &cs, self.status),
            None => Vec::new(),
        }
    }

    /// Queues a message for the next batch.
    pub fn push(&mut self, msg: Msg) {
        self.inbox.push(msg);
    }

    /// Queues a signal for the next batch.
    pub fn signal(&mut self, signal: Signal, payload: Result<Value, String>) {
        self.inbox.push(Msg::signal(signal, payload));
    }

    /// Queues an acknowledged update; returns the ticket to wait for.
    pub fn enqueue_update(&mut self, signal: Signal, payload: Result<Value, String>) -> u64 {
        self.inbox.push_update(signal, payload)
    }

    /// True once the batch that held `ticket` ran (or the workflow is ending).
    pub fn results_ready(&self, ticket: u64) -> bool {
        self.inbox.answered(ticket) || self.status.is_terminal()
    }

    /// The result of an update, once its batch ran.
    pub fn take_result(&mut self, ticket: u64) -> Option<Result<Value, String>> {
        self.inbox.take_result(ticket)
    }

    /// While the run hands over (continue-as-new) or ends, acknowledged updates are refused with
    /// `why` (the validator's answer; a handover's says to send again), so that none is accepted
    /// that the run could no longer answer. `None` takes them again.
    pub fn set_draining(&mut self, why: Option<&'static str>) {
        self.draining = why;
    }

    /// True when every acknowledged update has taken its result: the run may end or continue as new.
    /// (Tracked here, in state that only changes through `state_mut`, so that waiting on it never misses
    /// a wakeup, unlike `all_handlers_finished()`, whose change wakes nobody.)
    pub fn handlers_idle(&self) -> bool {
        self.inbox.idle()
    }

    /// True when a batch is due.
    pub fn has_work(&self) -> bool {
        self.started && !self.inbox.is_empty()
    }

    /// True when nothing is queued.
    pub fn inbox_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// Checks an update before it is accepted (the validator): decodable, well-formed, and applicable to
    /// the current state.
    pub fn validate(&self, signal: Signal, payload: &Result<Value, String>) -> Result<(), String> {
        if let Some(why) = self.draining {
            return Err(why.to_string());
        }
        let v = payload.as_ref().map_err(|e| e.clone())?;
        let Some(schema) = &self.ident.schema else {
            return Ok(());
        };
        if signal == Signal::Schema {
            return evolve::prepare(&self.ident, &self.store, self.legacy, v, self.started_at)
                .map(|_| ());
        }
        let parsed = match signal {
            Signal::Update => wire::parse_update(schema, &self.ident.entity, v),
            Signal::Delete => wire::parse_delete(schema, &self.ident.entity, v),
            Signal::State => wire::parse_state(schema, v),
            _ => return Ok(()),
        }
        .map_err(|e| e.to_string())?;
        check_ids(schema, &self.store, &self.ident, &parsed.change)?;
        self.store
            .check(schema, &parsed.change)
            .map_err(|e| e.to_string())
    }
}
