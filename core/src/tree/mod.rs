//! The tree around a workflow: its managed children (registry, slices) and its subscribers
//! ([`Tree`]), and the one planner that decides every effect of a batch ([`planner`]). Pure: the glue
//! executes the [`Effect`]s and reports back what happened to children as [`ChildEvent`]s.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use stateful_engine::{EntityRef, Schema, SliceIndex, Stamp, Store, plan};

use crate::order::SubscriptionOrder;
use crate::secret::Secret;

pub mod check;
mod lifecycle;
pub mod planner;
mod send;
mod types;

pub use check::{
    MAX_SIGNAL_NAME_LEN, MAX_TASK_QUEUE_LEN, MAX_WORKFLOW_ID_LEN, MAX_WORKFLOW_TYPE_LEN,
};
pub use planner::Situation;
pub use types::{
    ChildEvent, ChildEventKind, ChildOutcome, ChildRec, ChildStatus, Described, Effect,
    Subscription,
};

/// After this many restarts a child that keeps ending from outside is left alone (and shows as failed).
pub const MAX_RESTARTS: u32 = 20;

/// Subscriptions one workflow keeps; a `subscribe` past it is refused with the reason.
pub const MAX_SUBSCRIPTIONS: usize = 1_000;

/// Records of ended children that their relation no longer holds, kept (the newest first) to tell
/// late news of them from news of a new child; older ones are forgotten.
pub const MAX_ENDED_CHILDREN: usize = 1_000;

/// The tree state of one workflow.
#[derive(Debug, Default)]
pub struct Tree {
    /// Children by workflow id.
    children: BTreeMap<String, ChildRec>,
    /// Children not started because they would close a cycle.
    skipped: BTreeSet<plan::Skipped>,
    /// Subscriptions held here (this workflow publishes to them).
    subscriptions: Vec<Subscription>,
    /// Slices of the running children (rebuilt, never carried).
    slices: SliceIndex,
    /// Changes happened while paused: resynchronize everyone on resume.
    dirty: bool,
    /// Skipped since the glue last looked (it logs each once).
    newly_skipped: Vec<plan::Skipped>,
    /// The latest `subscribe` / `unsubscribe` of each subscription (carried over).
    sub_order: SubscriptionOrder,
    /// Subscriptions added since the last plan: they get our whole state (a new parent must learn
    /// what its adopted child holds).
    fresh: Vec<(String, String, Stamp)>,
    /// Managing parents that unsubscribed in this batch.
    let_go: Vec<String>,
    /// Children found conflicting since the glue last looked (it logs each once): workflow id
    /// and reason.
    newly_conflicting: Vec<(String, String)>,
    /// `Some(true)` when a workflow found running under a child's id is verified before it is
    /// adopted (the glue decides it under the `verify-adoption` patch; not carried: each run
    /// asks); `None` until decided.
    verify_adoption: Option<bool>,
    /// `Some(true)` when a peer that sends no stamps (a chrono-forge workflow) is answered with the
    /// winning values of what it wrote (the glue decides it under the `echo-stampless-peers`
    /// patch; not carried: each run asks); `None` until decided.
    echo_peers: Option<bool>,
    /// What such peers wrote in this batch: per peer, the entities (and whether the peer deleted
    /// them). Answered, or dropped, by the batch's plan.
    echo: BTreeMap<String, BTreeMap<EntityRef, bool>>,
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
    pub api_token: Option<&'a Secret>,
    /// Its `apiBase` (for children's input).
    pub api_base: Option<&'a str>,
    /// The hosts the token may be sent to (handed down in children's input).
    pub api_hosts: Option<&'a std::collections::BTreeSet<String>>,
    /// True when it loads from an API (children whose entity has a `batchUrl` are then loaded by it).
    pub loads: bool,
    /// Its recorded schema (for children's input).
    pub schema_json: &'a Value,
    /// The limits it keeps under (handed down to children).
    pub limits: &'a crate::limits::Limits,
    /// The task queue of its HTTP activities, when not its own (handed down to children).
    pub activity_task_queue: Option<&'a str>,
    /// True while it replays a history recorded before control messages were stamped: it sends
    /// plain payloads and orders nothing (see [`crate::order`]).
    pub legacy: bool,
    /// The stamp of the message that set its token.
    pub token_stamp: Option<&'a Stamp>,
    /// The stamp of the message that set its status.
    pub status_stamp: Option<&'a Stamp>,
    /// True while it is paused.
    pub paused: bool,
    /// A fresh stamp for what this batch sends that sets something (`subscribe`, `unsubscribe`,
    /// a child's incarnation).
    pub control_stamp: Option<&'a Stamp>,
    /// Its own incarnation (the stamp its starter gave it), sent with what it sends.
    pub incarnation: Option<&'a Stamp>,
    /// The stamp of the `schema` message that set its schema (none: the one it started with).
    pub schema_stamp: Option<&'a Stamp>,
    /// How many schema changes its schema has had.
    pub schema_version: u64,
    /// The schema it ran before a schema change not yet planned (a removed relation's `onRemove`).
    pub previous_schema: Option<&'a Schema>,
}

impl Tree {
    /// Takes the registry and the subscriptions' order carried from a previous run (the
    /// subscriptions themselves come with the start input).
    pub fn carry_over(
        &mut self,
        children: BTreeMap<String, ChildRec>,
        sub_order: SubscriptionOrder,
    ) {
        self.children = children;
        self.sub_order = sub_order;
    }

    /// Whether a workflow found running under a child's id is verified (its type described)
    /// before it is adopted, as decided for this run; `None` while undecided (it is then adopted
    /// at once, as releases before verification did).
    pub fn verify_adoption(&self) -> Option<bool> {
        self.verify_adoption
    }

    /// Decides, for this run, whether adoptions are verified (see [`Tree::verify_adoption`]).
    pub fn set_verify_adoption(&mut self, on: bool) {
        self.verify_adoption = Some(on);
    }

    /// Whether, in this run, peers that send no stamps are answered with the winning values of what
    /// they wrote (see [`Tree::note_stampless`]); `None` while undecided (they are not).
    pub fn echo_peers(&self) -> Option<bool> {
        self.echo_peers
    }

    /// Decides, for this run, whether peers that send no stamps are answered.
    pub fn set_echo_peers(&mut self, on: bool) {
        self.echo_peers = Some(on);
    }

    /// A workflow that sends no stamps (`peer`, its `changeOrigin`) wrote (or deleted) `r` in this
    /// batch. Such a peer (chrono-forge) applies whatever arrives last and never sends back what
    /// came from us, while we order its writes by their arrival here: when both wrote at once, each
    /// would keep the other's value. So the batch's plan answers it with our winning values of what
    /// it touched, once (our answer carries our `changeOrigin`, which its echo guard does not send
    /// on). Only a running child of ours or a subscriber is answered, with what it may see.
    pub fn note_stampless(&mut self, peer: &str, r: EntityRef, deleted: bool) {
        if self.echo_peers != Some(true) {
            return;
        }
        let touched = self.echo.entry(peer.to_string()).or_default();
        let was = touched.get(&r).copied().unwrap_or(deleted);
        touched.insert(r, was && deleted);
    }

    /// The subscriptions' order (carried over continue-as-new).
    pub fn sub_order(&self) -> &SubscriptionOrder {
        &self.sub_order
    }

    /// Takes a `subscribe` (`alive`) or `unsubscribe` stamped `s`: false when a newer or equal message
    /// about the same subscription was taken already (the caller ignores it).
    pub fn order_subscription(
        &mut self,
        workflow_id: &str,
        subscription_id: &str,
        s: &Stamp,
        alive: bool,
    ) -> bool {
        self.sub_order
            .accept(workflow_id, subscription_id, s, alive)
    }

    /// The children registry (carried over continue-as-new).
    pub fn children(&self) -> &BTreeMap<String, ChildRec> {
        &self.children
    }

    /// The subscriptions held here.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Children whose start waits in an outbox (with the generation to start), by workflow id.
    pub fn queued(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter(|(_, c)| c.status == ChildStatus::Running && c.queued)
            .map(|(w, c)| (w.clone(), c.generation))
            .collect()
    }

    /// True when `generation` of a child is still to be started.
    pub fn is_startable(&self, workflow_id: &str, generation: u32) -> bool {
        self.children.get(workflow_id).is_some_and(|c| {
            c.status == ChildStatus::Running
                && c.generation == generation
                && !c.confirmed
                && !c.verifying
        })
    }

    /// Marks a child's start as waiting in the outbox.
    pub fn mark_queued(&mut self, workflow_id: &str) {
        if let Some(c) = self.children.get_mut(workflow_id) {
            c.queued = true;
        }
    }

    /// The running children, by workflow id.
    pub fn running(&self) -> impl Iterator<Item = (&String, &ChildRec)> {
        self.children
            .iter()
            .filter(|(_, c)| c.status == ChildStatus::Running)
    }

    /// The children found to be another workflow than ours (not adopted), by workflow id.
    pub fn conflicting(&self) -> impl Iterator<Item = (&String, &ChildRec)> {
        self.children
            .iter()
            .filter(|(_, c)| c.status == ChildStatus::Conflicting)
    }

    /// Children found conflicting since the last call (each is reported once): workflow id and
    /// reason.
    pub fn take_newly_conflicting(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.newly_conflicting)
    }

    /// Children skipped since the last call (each is reported once).
    pub fn take_newly_skipped(&mut self) -> Vec<plan::Skipped> {
        std::mem::take(&mut self.newly_skipped)
    }

    /// Parses the subscriptions of the input (malformed ones are returned as rejection reasons).
    pub fn set_subscriptions(&mut self, raw: &[Value]) -> Vec<String> {
        let mut errors = Vec::new();
        for v in raw {
            match serde_json::from_value::<Subscription>(v.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| crate::valid::subscription(&s).map(|_| s))
            {
                Ok(s) => {
                    self.subscribe(s);
                }
                Err(e) => errors.push(format!(
                    "bad subscription {}: {e}",
                    crate::audit::clip(&v.to_string(), 200)
                )),
            }
        }
        errors
    }

    /// Adds a subscription (unless the same `(workflowId, subscriptionId)` is there); true when added.
    pub fn subscribe(&mut self, s: Subscription) -> bool {
        if self
            .subscriptions
            .iter()
            .any(|x| x.workflow_id == s.workflow_id && x.subscription_id == s.subscription_id)
        {
            return false;
        }
        self.subscriptions.push(s);
        true
    }

    /// Adds (or renews) a subscription from a newer `subscribe` message stamped `stamp`: the next
    /// plan sends the subscriber our whole state, as the answer to that `subscribe` (a parent that
    /// adopts us, or starts over after a restart, learns what we hold, and which run of ours is the
    /// running one).
    pub fn subscribe_fresh(&mut self, s: Subscription, stamp: Stamp) {
        let key = (s.workflow_id.clone(), s.subscription_id.clone(), stamp);
        match self
            .subscriptions
            .iter_mut()
            .find(|x| x.workflow_id == s.workflow_id && x.subscription_id == s.subscription_id)
        {
            // Renewed (by a new run of the subscriber: its incarnation changed).
            Some(x) => *x = s,
            None => self.subscriptions.push(s),
        }
        self.fresh.push(key);
    }

    /// Removes one subscription; returns true when it was the last one a managing parent held.
    pub fn unsubscribe(&mut self, workflow_id: &str, subscription_id: &str) -> bool {
        let had_parent = self.subscriptions.iter().any(|s| s.parent.is_some());
        if self.subscriptions.iter().any(|s| {
            s.workflow_id == workflow_id
                && s.subscription_id == subscription_id
                && s.parent.is_some()
        }) {
            self.let_go.push(workflow_id.to_string());
        }
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

    /// Forgets every child (tests of the `validate` query).
    #[cfg(test)]
    pub(crate) fn forget_children(&mut self) {
        self.children.clear();
    }

    /// The incarnation `workflow_id` runs as now, as far as we know: a running child's (the one we
    /// started it with, or the newest its messages showed), or a managing parent's (from its
    /// subscription).
    pub fn incarnation_of(&self, workflow_id: &str) -> Option<&Stamp> {
        match self.children.get(workflow_id) {
            // A first start not yet confirmed may turn out to be someone else's running workflow.
            Some(c) if c.status == ChildStatus::Running => c.incarnation.as_ref(),
            _ => self
                .subscriptions
                .iter()
                .filter(|s| s.workflow_id == workflow_id)
                .filter_map(|s| s.incarnation.as_ref())
                .max(),
        }
    }

    /// True for a running child we adopted whose answer to our `subscribe` (`answers`: the stamp of
    /// the `subscribe` it answers) has not come yet: until it does, what arrives from it may be
    /// from an ended run.
    pub fn awaits_answer(&self, workflow_id: &str, answers: Option<&Stamp>) -> bool {
        self.children.get(workflow_id).is_some_and(|c| {
            c.status == ChildStatus::Running
                && c.adopted
                && c.incarnation.is_none()
                && c.adopted_at
                    .as_ref()
                    .is_some_and(|at| answers.is_none_or(|a| a < at))
        })
    }

    /// Learns from a message that `workflow_id` (a running child we adopted, or whose start is
    /// confirmed) runs as `incarnation` or newer.
    pub fn learn_incarnation(&mut self, workflow_id: &str, incarnation: &Stamp) {
        if let Some(c) = self.children.get_mut(workflow_id)
            && c.status == ChildStatus::Running
            && (c.confirmed || c.adopted)
            && c.incarnation
                .as_ref()
                .is_none_or(|known| known < incarnation)
        {
            c.incarnation = Some(incarnation.clone());
        }
    }

    /// The `children` query: every child's record, the skipped ones, and counts by status
    /// (`queued` and `verifying` apart). Past `max_records` records, the list holds the first
    /// ones and `truncated` is set: the counts stay whole.
    pub fn children_info(&self) -> Value {
        self.children_info_within(usize::MAX)
    }

    /// [`Tree::children_info`] with at most `max_records` records listed.
    pub fn children_info_within(&self, max_records: usize) -> Value {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for c in self.children.values() {
            let k = match c.status {
                _ if c.queued && c.status == ChildStatus::Running => "queued",
                _ if c.verifying && c.status == ChildStatus::Running => "verifying",
                ChildStatus::Running => "running",
                ChildStatus::Completed => "completed",
                ChildStatus::Failed => "failed",
                ChildStatus::Removed => "removed",
                ChildStatus::Conflicting => "conflicting",
            };
            *counts.entry(k).or_default() += 1;
        }
        let list: Vec<Value> = self
            .children
            .iter()
            .take(max_records)
            .map(|(w, c)| {
                json!({"workflowId": w, "entityName": c.entity, "id": c.id, "field": c.field,
                       "workflowType": c.workflow_type, "status": c.status, "generation": c.generation,
                       "versionSent": c.version_sent, "adopted": c.adopted, "queued": c.queued, "ended": c.ended,
                       "verifying": c.verifying, "conflict": c.conflict})
            })
            .collect();
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .take(max_records)
            .map(|s| json!({"workflowId": s.workflow_id, "reason": s.reason}))
            .collect();
        json!({"children": list, "skipped": skipped, "counts": counts, "total": self.children.len(),
               "truncated": self.children.len() > max_records || self.skipped.len() > max_records})
    }
}

#[cfg(test)]
pub(crate) mod tests;
