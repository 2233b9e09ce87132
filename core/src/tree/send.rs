//! What the planner sends: a child's start input and subscriptions, catch-ups, adoption, and a
//! change set's outgoing `update` / `delete` payloads.

use serde_json::{Value, json};
use stateful_engine::plan::{self, ChildSpec};
use stateful_engine::{EntityRef, SliceIndex};

use super::{ChildOutcome, ChildRec, Effect, Me};
use crate::WORKFLOW_TYPE;

pub(super) fn outcome_name(o: ChildOutcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Another parent runs it: adopt it — subscribe to it and send it our slice.
pub(super) fn adopt(me: &Me<'_>, slices: &SliceIndex, wid: &str, c: &mut ChildRec) -> Vec<Effect> {
    c.adopted = true;
    c.confirmed = true;
    let root = EntityRef::new(c.entity.clone(), c.id.clone());
    let mut effects: Vec<Effect> = child_subscriptions(me, &c.field, &root, true, true)
        .into_iter()
        .map(|s| Effect::Signal {
            workflow_id: wid.to_string(),
            name: "subscribe".into(),
            payload: Some(s),
            child_generation: None,
        })
        .collect();
    effects.extend(catch_up(me, slices, wid, c, true));
    effects
}

/// `Entity:id.field:childId`: the id of the subscriptions a parent gives a child.
pub(super) fn subscription_base(me: &Me<'_>, field: &str, child_id: &str) -> String {
    format!("{}:{}.{}:{}", me.own.entity, me.own.id, field, child_id)
}

/// The subscriptions a child gets: back to us, for updates and deletes.
pub(super) fn child_subscriptions(
    me: &Me<'_>,
    field: &str,
    child: &EntityRef,
    subscribe_updates: bool,
    subscribe_deletes: bool,
) -> Vec<Value> {
    let base = subscription_base(me, field, &child.id);
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

/// A child's start input: its stamped slice, subscriptions back to us, ancestors, and what it
/// inherits (schema, token, `apiBase`, whether we load it in a batch).
pub(super) fn child_input(
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
        "subscriptions": child_subscriptions(me, &rec.field, &root, up, del),
        "ancestorWorkflowIds": ancestors,
    });
    let ours = rec.workflow_type == WORKFLOW_TYPE;
    if ours {
        input["schema"] = me.schema_json.clone();
    }
    if let Some(t) = me.api_token {
        input["apiToken"] = json!(t.expose());
    }
    if let Some(b) = me.api_base {
        input["apiBase"] = json!(b);
    }
    if me.loads
        && ours
        && me
            .schema
            .entity(&rec.entity)
            .is_ok_and(|d| d.batch_url.is_some())
    {
        input["loadedByParent"] = json!(true);
    }
    input
}

pub(super) fn start_effect(
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
        input: child_input(me, slices, rec, Some(spec)),
        parent_close: spec.managed.parent_close_policy,
        cancel_type: spec.managed.cancellation_type,
    }
}

/// Brings a child up to date: its whole stamped slice (stamped writes are idempotent, so this only
/// fills in what it missed) and, with `with_token`, the current token; records what was sent.
pub(super) fn catch_up(
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
            payload: Some(json!(t.expose())),
            child_generation: Some(c.generation),
        });
    }
    c.version_sent = me.store.version();
    effects
}

pub(super) fn push_outgoing(
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
