//! The tree around a workflow: its managed children (registry, slices) and its subscribers, and the
//! effects a batch calls for. Pure: the glue executes the [`Effect`]s and reports back what happened to
//! children as [`ChildEvent`] messages.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stateful_engine::plan::{self, Audience, ChildSpec, Selector};
use stateful_engine::schema::{CancellationType, OnRemove, ParentClosePolicy};
use stateful_engine::{ChangeSet, EntityRef, Schema, SliceIndex, Store};

/// What the glue must do.
#[derive(Debug, Clone, PartialEq)]
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
}

/// What happened to a child, as the glue reports it (a `childEvent` message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildEvent {
    /// The child.
    pub workflow_id: String,
    /// The generation the event is about.
    pub generation: u32,
    /// `alreadyRunning`, `startFailed`, `ended`, `signalFailed`.
    pub event: String,
    /// For `ended`: `completed`, `failed`, `cancelled`, `terminated`, `timedOut`.
    #[serde(default)]
    pub outcome: String,
    /// Details (an error message).
    #[serde(default)]
    pub detail: String,
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
    /// Why it ended, when it did.
    #[serde(default)]
    pub ended: Option<String>,
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
}

fn yes() -> bool {
    true
}

fn default_signal() -> String {
    "update".into()
}
fn default_selector() -> String {
    "*".into()
}

/// After this many restarts a child that keeps ending from outside is left alone (and shows as failed).
pub const MAX_RESTARTS: u32 = 20;

/// The tree state of one workflow.
#[derive(Debug, Default)]
pub struct Tree {
    /// Children by workflow id.
    pub children: BTreeMap<String, ChildRec>,
    /// Children not started because they would close a cycle.
    pub skipped: BTreeSet<plan::Skipped>,
    /// Subscriptions held here (this workflow publishes to them).
    pub subscriptions: Vec<Subscription>,
    /// Slices of the running children (rebuilt, never carried).
    pub slices: SliceIndex,
    /// Changes happened while paused: resynchronize everyone on resume.
    pub dirty: bool,
    /// Skipped since the glue last looked (it logs each once).
    pub newly_skipped: Vec<plan::Skipped>,
}

/// What a workflow knows about itself, for planning.
pub struct Me<'a> {
    /// Its schema.
    pub schema: &'a Schema,
    /// Its store.
    pub store: &'a Store,
    /// Its entity.
    pub own: EntityRef,
    /// Its workflow id.
    pub workflow_id: &'a str,
    /// Its ancestors.
    pub ancestors: &'a [String],
    /// Its token (for children's input).
    pub api_token: Option<&'a str>,
    /// Its `apiBase` (for children's input).
    pub api_base: Option<&'a str>,
    /// True when it loads from an API (children whose entity has a `batchUrl` are then loaded by it).
    pub loads: bool,
    /// Its recorded schema (for children's input).
    pub schema_json: &'a Value,
}

impl Tree {
    /// Parses the subscriptions of the input (malformed ones are returned as rejection reasons).
    pub fn set_subscriptions(&mut self, raw: &[Value]) -> Vec<String> {
        let mut errors = Vec::new();
        for v in raw {
            match serde_json::from_value::<Subscription>(v.clone()) {
                Ok(s) => self.subscribe(s),
                Err(e) => errors.push(format!("bad subscription {v}: {e}")),
            }
        }
        errors
    }

    /// Adds a subscription (unless the same `(workflowId, subscriptionId)` is there).
    pub fn subscribe(&mut self, s: Subscription) {
        if !self
            .subscriptions
            .iter()
            .any(|x| x.workflow_id == s.workflow_id && x.subscription_id == s.subscription_id)
        {
            self.subscriptions.push(s);
        }
    }

    /// Removes one subscription; returns true when it was the last one a managing parent held.
    pub fn unsubscribe(&mut self, workflow_id: &str, subscription_id: &str) -> bool {
        let had_parent = self.subscriptions.iter().any(|s| s.parent.is_some());
        self.subscriptions
            .retain(|s| !(s.workflow_id == workflow_id && s.subscription_id == subscription_id));
        had_parent && !self.subscriptions.iter().any(|s| s.parent.is_some())
    }

    /// Rebuilds the slice index (after a start or a continue-as-new).
    pub fn rebuild_slices(&mut self, me: &Me<'_>) {
        self.slices = SliceIndex::new();
        for c in self
            .children
            .values()
            .filter(|c| c.status == ChildStatus::Running)
        {
            self.slices.insert(
                me.schema,
                me.store,
                EntityRef::new(c.entity.clone(), c.id.clone()),
                [me.own.clone()].into(),
            );
        }
    }

    /// The subscriptions a child gets: back to us, for updates and deletes.
    fn child_subscriptions(
        me: &Me<'_>,
        spec_field: &str,
        child: &EntityRef,
        subscribe_updates: bool,
        subscribe_deletes: bool,
    ) -> Vec<Value> {
        let base = format!(
            "{}:{}.{}:{}",
            me.own.entity, me.own.id, spec_field, child.id
        );
        let mut subs = Vec::new();
        for (on, suffix, signal) in [
            (subscribe_updates, "", "update"),
            (subscribe_deletes, ":delete", "delete"),
        ] {
            if on {
                subs.push(json!({
                    "workflowId": me.workflow_id,
                    "subscriptionId": format!("{base}{suffix}"),
                    "signalName": signal,
                    "selector": "*",
                    "parent": format!("{}:{}", me.own.entity, me.own.id),
                    "child": format!("{}:{}", child.entity, child.id),
                    "ancestorWorkflowIds": me.ancestors,
                }));
            }
        }
        subs
    }

    fn child_input(
        me: &Me<'_>,
        slices: &SliceIndex,
        rec: &ChildRec,
        spec: Option<&ChildSpec>,
    ) -> Value {
        let root = EntityRef::new(rec.entity.clone(), rec.id.clone());
        let members = slices.members(&root).cloned().unwrap_or_default();
        let (state, stamps) = plan::stamped_slice(me.store, me.schema, &members);
        let (up, del) = spec.map_or((true, true), |s| {
            (s.managed.subscribe_updates, s.managed.subscribe_deletes)
        });
        let mut ancestors = me.ancestors.to_vec();
        ancestors.push(me.workflow_id.to_string());
        let mut input = json!({
            "id": rec.id,
            "entityName": rec.entity,
            "state": state,
            "stateStamps": stamps,
            "subscriptions": Self::child_subscriptions(me, &rec.field, &root, up, del),
            "ancestorWorkflowIds": ancestors,
        });
        if rec.workflow_type == crate::WORKFLOW_TYPE {
            input["schema"] = me.schema_json.clone();
        }
        if let Some(t) = me.api_token {
            input["apiToken"] = json!(t);
        }
        if let Some(b) = me.api_base {
            input["apiBase"] = json!(b);
        }
        if me.loads
            && rec.workflow_type == crate::WORKFLOW_TYPE
            && me
                .schema
                .entity(&rec.entity)
                .is_ok_and(|d| d.batch_url.is_some())
        {
            input["loadedByParent"] = json!(true);
        }
        input
    }

    fn start_effect(
        me: &Me<'_>,
        slices: &SliceIndex,
        wid: &str,
        rec: &ChildRec,
        spec: &ChildSpec,
    ) -> Effect {
        Effect::Start {
            workflow_id: wid.to_string(),
            generation: rec.generation,
            workflow_type: rec.workflow_type.clone(),
            task_queue: rec.task_queue.clone(),
            input: Self::child_input(me, slices, rec, Some(spec)),
            parent_close: spec.managed.parent_close_policy,
            cancel_type: spec.managed.cancellation_type,
        }
    }

    /// The effects of a batch: children to start and to remove, what each running child must learn of
    /// `cs` (its slice only, never what came from it), and what each subscriber must learn.
    pub fn plan(&mut self, me: &Me<'_>, cs: &ChangeSet, token_changed: bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        let version = me.store.version();
        let deltas = self.slices.update(me.schema, me.store, cs);
        let (desired, skipped) =
            plan::desired_children(me.schema, me.store, &me.own, me.workflow_id, me.ancestors);
        for s in skipped {
            if !self.skipped.contains(&s) {
                self.newly_skipped.push(s.clone());
                self.skipped.insert(s);
            }
        }
        let desired: BTreeMap<String, ChildSpec> = desired
            .into_iter()
            .map(|c| (c.workflow_id.clone(), c))
            .collect();
        // Removed from the relation.
        let gone: Vec<String> = self
            .children
            .iter()
            .filter(|(w, c)| c.status == ChildStatus::Running && !desired.contains_key(*w))
            .map(|(w, _)| w.clone())
            .collect();
        for wid in gone {
            let c = self.children.get_mut(&wid).expect("listed above");
            c.status = ChildStatus::Removed;
            c.ended = Some("removed from the relation".into());
            let root = EntityRef::new(c.entity.clone(), c.id.clone());
            self.slices.remove(&root);
            let keep = me
                .schema
                .get(&me.own.entity)
                .and_then(|d| d.relations.get(&c.field))
                .is_some_and(|r| r.managed.on_remove == OnRemove::Keep);
            if keep {
                continue;
            }
            if c.workflow_type == crate::WORKFLOW_TYPE {
                // A StatefulWorkflow ends itself when its last managing parent unsubscribes, so that a
                // child shared with other parents keeps running for them.
                let base = format!("{}:{}.{}:{}", me.own.entity, me.own.id, c.field, c.id);
                for sid in [base.clone(), format!("{base}:delete")] {
                    effects.push(Effect::Signal {
                        workflow_id: wid.clone(),
                        name: "unsubscribe".into(),
                        payload: Some(json!({"workflowId": me.workflow_id, "subscriptionId": sid})),
                        child_generation: None,
                    });
                }
            } else {
                effects.push(Effect::Cancel {
                    workflow_id: wid.clone(),
                });
            }
        }
        // New children (and children that were removed and came back).
        for (wid, spec) in &desired {
            let running = self
                .children
                .get(wid)
                .is_some_and(|c| c.status == ChildStatus::Running);
            let finished = self
                .children
                .get(wid)
                .is_some_and(|c| matches!(c.status, ChildStatus::Completed | ChildStatus::Failed));
            if running || finished {
                continue;
            }
            let generation = self.children.get(wid).map_or(1, |c| c.generation + 1);
            let rec = ChildRec {
                entity: spec.entity.entity.clone(),
                id: spec.entity.id.clone(),
                field: spec.field.clone(),
                workflow_type: spec.managed.workflow_type.clone(),
                task_queue: spec.managed.task_queue.clone(),
                status: ChildStatus::Running,
                generation,
                version_sent: version,
                adopted: false,
                confirmed: false,
                ended: None,
            };
            self.slices.insert(
                me.schema,
                me.store,
                spec.entity.clone(),
                [me.own.clone()].into(),
            );
            effects.push(Self::start_effect(me, &self.slices, wid, &rec, spec));
            self.children.insert(wid.clone(), rec);
        }
        // What running children must learn.
        for (root, delta) in &deltas {
            let Some((wid, c)) = self.children.iter_mut().find(|(_, c)| {
                c.status == ChildStatus::Running && c.entity == root.entity && c.id == root.id
            }) else {
                continue;
            };
            if !c.confirmed {
                continue;
            }
            let members = self.slices.members(root).cloned().unwrap_or_default();
            let all = Selector::parse("*");
            let out = plan::outgoing(
                me.store,
                me.schema,
                &delta.changes,
                me.workflow_id,
                &Audience {
                    receiver: wid,
                    within: Some(&members),
                    entered: &delta.entered,
                    selector: &all,
                },
            );
            push_outgoing(&mut effects, wid, out, Some(c.generation));
            c.version_sent = version;
        }
        // Subscribers.
        for s in &self.subscriptions {
            let sel = Selector::parse(&s.selector);
            let none = BTreeSet::new();
            let out = plan::outgoing(
                me.store,
                me.schema,
                cs,
                me.workflow_id,
                &Audience {
                    receiver: &s.workflow_id,
                    within: None,
                    entered: &none,
                    selector: &sel,
                },
            );
            let payload = match s.signal_name.as_str() {
                "delete" => out.delete,
                _ => out.update,
            };
            if let Some(mut p) = payload {
                p["subscriptionId"] = json!(s.subscription_id);
                effects.push(Effect::Signal {
                    workflow_id: s.workflow_id.clone(),
                    name: s.signal_name.clone(),
                    payload: Some(p),
                    child_generation: None,
                });
            }
        }
        if token_changed && let Some(t) = me.api_token {
            self.forward(&mut effects, "apiToken", Some(json!(t)));
        }
        effects
    }

    /// After a continue-as-new: children whose start was confirmed only as the previous run closed
    /// are confirmed now, and get their whole slice and the token (stamped writes are idempotent).
    pub fn confirm_carried(&mut self, me: &Me<'_>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (wid, c) in self.children.iter_mut() {
            if c.status != ChildStatus::Running || c.confirmed {
                continue;
            }
            c.confirmed = true;
            effects.extend(catch_up(me, &self.slices, wid, c, true));
        }
        effects
    }

    /// The same signal to every running child.
    pub fn forward(&self, effects: &mut Vec<Effect>, name: &str, payload: Option<Value>) {
        for (wid, c) in &self.children {
            if c.status == ChildStatus::Running && c.confirmed {
                effects.push(Effect::Signal {
                    workflow_id: wid.clone(),
                    name: name.into(),
                    payload: payload.clone(),
                    child_generation: Some(c.generation),
                });
            }
        }
    }

    /// Cancels every running child (the cascade of our own end).
    pub fn cancel_all(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (wid, c) in self.children.iter_mut() {
            if c.status == ChildStatus::Running {
                c.status = ChildStatus::Removed;
                c.ended = Some("parent ended".into());
                effects.push(Effect::Cancel {
                    workflow_id: wid.clone(),
                });
            }
        }
        effects
    }

    /// After a pause: every running child gets its whole slice again, every subscriber our whole state
    /// (stamped writes are idempotent, so this only fills in what they missed).
    pub fn resync(&mut self, me: &Me<'_>) -> Vec<Effect> {
        self.dirty = false;
        let mut effects = Vec::new();
        for (wid, c) in self
            .children
            .iter_mut()
            .filter(|(_, c)| c.status == ChildStatus::Running)
        {
            c.confirmed = true;
            effects.extend(catch_up(me, &self.slices, wid, c, false));
        }
        for s in self
            .subscriptions
            .iter()
            .filter(|s| s.signal_name == "update")
        {
            let all: BTreeSet<EntityRef> = me
                .store
                .entities()
                .iter()
                .flat_map(|(e, g)| {
                    g.keys()
                        .map(move |id| EntityRef::new(e.clone(), id.clone()))
                })
                .collect();
            let (state, stamps) = plan::stamped_slice(me.store, me.schema, &all);
            effects.push(Effect::Signal {
                workflow_id: s.workflow_id.clone(),
                name: "update".into(),
                payload: Some(json!({"updates": state, "stamps": stamps, "changeOrigin": me.workflow_id, "subscriptionId": s.subscription_id})),
                child_generation: None,
            });
        }
        effects
    }

    /// Handles what happened to a child; may restart it.
    pub fn on_child_event(
        &mut self,
        me: &Me<'_>,
        ev: &ChildEvent,
        parent_ending: bool,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(c) = self.children.get_mut(&ev.workflow_id) else {
            return effects;
        };
        if c.generation != ev.generation || c.status != ChildStatus::Running {
            return effects;
        }
        if ev.event == "started" {
            c.confirmed = true;
            // What changed between its start input and now (and a token rotated meanwhile).
            if c.version_sent < me.store.version() {
                effects.extend(catch_up(me, &self.slices, &ev.workflow_id, c, true));
            }
            return effects;
        }
        let restart = match (ev.event.as_str(), ev.outcome.as_str()) {
            ("alreadyRunning", _) => {
                // Another parent runs it: adopt it — subscribe to it and send it our slice.
                c.adopted = true;
                c.confirmed = true;
                let root = EntityRef::new(c.entity.clone(), c.id.clone());
                for s in Self::child_subscriptions(me, &c.field, &root, true, true) {
                    effects.push(Effect::Signal {
                        workflow_id: ev.workflow_id.clone(),
                        name: "subscribe".into(),
                        payload: Some(s),
                        child_generation: None,
                    });
                }
                effects.extend(catch_up(me, &self.slices, &ev.workflow_id, c, true));
                false
            }
            ("startFailed", _) => {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!("could not start: {}", ev.detail));
                false
            }
            // Ended by itself: recorded, never signalled again.
            ("ended", "completed") | ("reported", "completed") => {
                c.status = ChildStatus::Completed;
                c.ended = Some(if ev.detail.is_empty() {
                    "completed".into()
                } else {
                    ev.detail.clone()
                });
                false
            }
            ("ended", "failed") | ("ended", "timedOut") => {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!("{}: {}", ev.outcome, ev.detail));
                false
            }
            // Cancelled or terminated from outside, or gone: restarted with the current state and token.
            _ => !parent_ending,
        };
        if restart {
            if c.generation >= MAX_RESTARTS {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!(
                    "ended from outside {} times; not restarted again",
                    c.generation
                ));
                return effects;
            }
            c.generation += 1;
            c.version_sent = me.store.version();
            c.confirmed = false;
            let rec = c.clone();
            let wid = ev.workflow_id.clone();
            let spec =
                plan::desired_children(me.schema, me.store, &me.own, me.workflow_id, me.ancestors)
                    .0
                    .into_iter()
                    .find(|s| s.workflow_id == wid);
            match spec {
                Some(spec) => effects.push(Self::start_effect(me, &self.slices, &wid, &rec, &spec)),
                None => {
                    if let Some(c) = self.children.get_mut(&wid) {
                        c.status = ChildStatus::Removed;
                    }
                }
            }
        }
        effects
    }

    /// The `children` query.
    pub fn children_info(&self) -> Value {
        let list: Vec<Value> = self
            .children
            .iter()
            .map(|(w, c)| {
                json!({"workflowId": w, "entityName": c.entity, "id": c.id, "field": c.field,
                       "workflowType": c.workflow_type, "status": c.status, "generation": c.generation,
                       "versionSent": c.version_sent, "adopted": c.adopted, "ended": c.ended})
            })
            .collect();
        json!({"children": list, "skipped": self.skipped.iter().map(|s| json!({"workflowId": s.workflow_id, "reason": s.reason})).collect::<Vec<_>>()})
    }
}

/// Brings a child up to date: its whole stamped slice (stamped writes are idempotent, so this only
/// fills in what it missed) and, with `with_token`, the current token; records what was sent.
fn catch_up(
    me: &Me<'_>,
    slices: &SliceIndex,
    wid: &str,
    c: &mut ChildRec,
    with_token: bool,
) -> Vec<Effect> {
    let root = EntityRef::new(c.entity.clone(), c.id.clone());
    let members = slices.members(&root).cloned().unwrap_or_default();
    let (state, stamps) = plan::stamped_slice(me.store, me.schema, &members);
    let mut effects = vec![Effect::Signal {
        workflow_id: wid.to_string(),
        name: "update".into(),
        payload: Some(json!({"updates": state, "stamps": stamps, "changeOrigin": me.workflow_id})),
        child_generation: Some(c.generation),
    }];
    if with_token && let Some(t) = me.api_token {
        effects.push(Effect::Signal {
            workflow_id: wid.to_string(),
            name: "apiToken".into(),
            payload: Some(json!(t)),
            child_generation: Some(c.generation),
        });
    }
    c.version_sent = me.store.version();
    effects
}

fn push_outgoing(
    effects: &mut Vec<Effect>,
    wid: &str,
    out: plan::Outgoing,
    generation: Option<u32>,
) {
    if let Some(u) = out.update {
        effects.push(Effect::Signal {
            workflow_id: wid.to_string(),
            name: "update".into(),
            payload: Some(u),
            child_generation: generation,
        });
    }
    if let Some(d) = out.delete {
        effects.push(Effect::Signal {
            workflow_id: wid.to_string(),
            name: "delete".into(),
            payload: Some(d),
            child_generation: generation,
        });
    }
}
