//! The tree around a workflow: its managed children (registry, slices) and its subscribers
//! ([`Tree`]), and the one planner that decides every effect of a batch ([`planner`]). Pure: the glue
//! executes the [`Effect`]s and reports back what happened to children as [`ChildEvent`]s.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use stateful_engine::{EntityRef, Schema, SliceIndex, Store, plan};

use crate::secret::Secret;

pub mod planner;
mod send;
mod types;

pub use planner::Situation;
pub use types::{
    ChildEvent, ChildEventKind, ChildOutcome, ChildRec, ChildStatus, Effect, Subscription,
};

/// After this many restarts a child that keeps ending from outside is left alone (and shows as failed).
pub const MAX_RESTARTS: u32 = 20;

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
    /// True when it loads from an API (children whose entity has a `batchUrl` are then loaded by it).
    pub loads: bool,
    /// Its recorded schema (for children's input).
    pub schema_json: &'a Value,
}

impl Tree {
    /// The registry carried from a previous run.
    pub fn with_children(children: BTreeMap<String, ChildRec>) -> Tree {
        Tree {
            children,
            ..Tree::default()
        }
    }

    /// The children registry (carried over continue-as-new).
    pub fn children(&self) -> &BTreeMap<String, ChildRec> {
        &self.children
    }

    /// The subscriptions held here.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// The running children, by workflow id.
    pub fn running(&self) -> impl Iterator<Item = (&String, &ChildRec)> {
        self.children
            .iter()
            .filter(|(_, c)| c.status == ChildStatus::Running)
    }

    /// Children skipped since the last call (each is reported once).
    pub fn take_newly_skipped(&mut self) -> Vec<plan::Skipped> {
        std::mem::take(&mut self.newly_skipped)
    }

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

    /// Forgets every child (tests of the `validate` query).
    #[cfg(test)]
    pub(crate) fn forget_children(&mut self) {
        self.children.clear();
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

#[cfg(test)]
mod tests;
