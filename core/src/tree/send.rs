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
    // Its incarnation is whatever its own starter gave it: its answer to our `subscribe` tells.
    c.incarnation = None;
    c.adopted_at = me.control_stamp.cloned();
    let root = EntityRef::new(c.entity.clone(), c.id.clone());
    let mut effects: Vec<Effect> = child_subscriptions(me, &c.field, &root, true, true)
        .into_iter()
        .map(|s| Effect::Signal {
            workflow_id: wid.to_string(),
            name: "subscribe".into(),
            payload: Some(stamped(me, s)),
            child_generation: None,
        })
        .collect();
    // What it holds of the status is unknown: it is told ours.
    c.status_sent = None;
    effects.extend(catch_up(me, slices, wid, c, true));
    effects
}

/// The `apiToken` payload for a child: stamped for a StatefulWorkflow, the plain string for a
/// workflow of another type (chrono-forge's payload).
pub(super) fn token_payload(me: &Me<'_>, c: &ChildRec) -> Option<Value> {
    let t = me.api_token?;
    Some(match me.token_stamp {
        Some(s) if !me.legacy && c.workflow_type == WORKFLOW_TYPE => {
            json!({"token": t.expose(), "stamp": s})
        }
        _ => json!(t.expose()),
    })
}

/// The `pause` / `resume` payload for a child: the status's stamp for a StatefulWorkflow, none for
/// a workflow of another type.
pub(super) fn status_payload(me: &Me<'_>, c: &ChildRec) -> Option<Value> {
    match me.status_stamp {
        Some(s) if !me.legacy && c.workflow_type == WORKFLOW_TYPE => Some(json!({"stamp": s})),
        _ => None,
    }
}

/// Tags what we send with our incarnation (ordered mode), so that a receiver tells a late message of
/// an ended run of ours from the current run's.
pub(super) fn tag_incarnation(me: &Me<'_>, effects: &mut [Effect]) {
    let (Some(i), false) = (me.incarnation, me.legacy) else {
        return;
    };
    for e in effects {
        if let Effect::Signal {
            name,
            payload: Some(p),
            ..
        } = e
            && matches!(name.as_str(), "update" | "delete" | "childEnded")
            && p.is_object()
        {
            p["incarnation"] = json!(i);
        }
    }
}

/// Marks a catch-up (a whole stamped slice, which may hold the receiver's own writes: stamped writes
/// are idempotent), so that it is told apart from a change's propagation.
pub(super) fn catch_up_payload(me: &Me<'_>, mut payload: Value) -> Value {
    if !me.legacy {
        payload["catchUp"] = json!(true);
    }
    payload
}

/// Adds this batch's control stamp to a payload that sets something (`subscribe`, `unsubscribe`).
pub(super) fn stamped(me: &Me<'_>, mut payload: Value) -> Value {
    if let (Some(s), false) = (me.control_stamp, me.legacy) {
        payload["stamp"] = json!(s);
    }
    payload
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
            if let (Some(i), false) = (me.incarnation, me.legacy) {
                subs.last_mut().expect("just pushed")["incarnation"] = json!(i);
            }
        }
    }
    subs
}

/// A child's start input: its stamped slice (`lean`: its own entity only, the rest follows as a
/// catch-up once it runs), subscriptions back to us, ancestors, and what it inherits (schema,
/// token, `apiBase`, whether we load it in a batch).
pub(super) fn child_input(
    me: &Me<'_>,
    slices: &SliceIndex,
    rec: &ChildRec,
    spec: Option<&ChildSpec>,
    lean: bool,
) -> Value {
    let root = EntityRef::new(rec.entity.clone(), rec.id.clone());
    let members = if lean {
        [root.clone()].into()
    } else {
        slices.members(&root).cloned().unwrap_or_default()
    };
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
        // A schema changed since the tree started: its stamp, so that an older `schema` message
        // never undoes it (written only then: the inputs of trees that never changed theirs keep
        // their shape).
        if let Some(s) = me.schema_stamp {
            input["schemaStamp"] = json!(s);
            input["schemaVersion"] = json!(me.schema_version);
        }
    }
    if let Some(t) = me.api_token {
        input["apiToken"] = json!(t.expose());
        if let (Some(s), true, false) = (me.token_stamp, ours, me.legacy) {
            input["apiTokenStamp"] = json!(s);
        }
    }
    if let (Some(i), true, false) = (&rec.incarnation, ours, me.legacy) {
        input["incarnation"] = json!(i);
    }
    if let (Some(s), true, false) = (me.status_stamp, ours, me.legacy) {
        // Our status and its stamp: a started child is paused with us, and a pause or resume
        // older than ours that was meant for an earlier run of it is ignored.
        input["statusStamp"] = json!(s);
        if me.paused {
            input["status"] = json!("paused");
        }
    }
    if let Some(b) = me.api_base {
        input["apiBase"] = json!(b);
    }
    if let (Some(h), true) = (me.api_hosts, ours) {
        input["apiHosts"] = json!(h);
    }
    if ours {
        // Always written (even the defaults): whether payloads are compressed is recorded.
        input["limits"] = me.limits.to_input();
    }
    if let (Some(q), true) = (me.activity_task_queue, ours) {
        input["activityTaskQueue"] = json!(q);
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
    start_effect_with(
        wid,
        rec,
        spec,
        child_input(me, slices, rec, Some(spec), false),
    )
}

/// A child's start with the given input.
pub(super) fn start_effect_with(
    wid: &str,
    rec: &ChildRec,
    spec: &ChildSpec,
    input: Value,
) -> Effect {
    Effect::Start {
        workflow_id: wid.to_string(),
        generation: rec.generation,
        workflow_type: rec.workflow_type.clone(),
        task_queue: rec.task_queue.clone(),
        input,
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
    // A schema it was not given goes first: the slice that follows may need it.
    let mut effects: Vec<Effect> = schema_catch_up(me, wid, c).into_iter().collect();
    effects.push(Effect::Signal {
        workflow_id: wid.to_string(),
        name: "update".into(),
        payload: Some(catch_up_payload(
            me,
            json!({"updates": state, "stamps": stamps, "changeOrigin": me.workflow_id}),
        )),
        child_generation: Some(c.generation),
    });
    if with_token && let Some(t) = token_payload(me, c) {
        effects.push(Effect::Signal {
            workflow_id: wid.to_string(),
            name: "apiToken".into(),
            payload: Some(t),
            child_generation: Some(c.generation),
        });
        c.token_sent = me.token_stamp.cloned();
    }
    effects.extend(status_catch_up(me, wid, c));
    c.version_sent = me.store.version();
    effects
}

/// Our status, when the child was not given the latest (ordered mode): `pause` or `resume` with the
/// status's stamp.
fn status_catch_up(me: &Me<'_>, wid: &str, c: &mut ChildRec) -> Option<Effect> {
    if me.legacy || me.status_stamp.is_none() || c.status_sent.as_ref() == me.status_stamp {
        return None;
    }
    let payload = status_payload(me, c);
    c.status_sent = me.status_stamp.cloned();
    Some(Effect::Signal {
        workflow_id: wid.to_string(),
        name: if me.paused { "pause" } else { "resume" }.into(),
        payload,
        child_generation: Some(c.generation),
    })
}

/// Our schema, when a StatefulWorkflow child was not given the latest (a schema change since it
/// started or was last told): `schema` with the schema's stamp and version. A child of another
/// workflow type is never sent it.
pub(super) fn schema_catch_up(me: &Me<'_>, wid: &str, c: &mut ChildRec) -> Option<Effect> {
    let stamp = me.schema_stamp?;
    if me.legacy || c.workflow_type != WORKFLOW_TYPE || c.schema_sent.as_ref() == Some(stamp) {
        return None;
    }
    c.schema_sent = Some(stamp.clone());
    Some(Effect::Signal {
        workflow_id: wid.to_string(),
        name: "schema".into(),
        payload: Some(
            json!({"schema": me.schema_json, "stamp": stamp, "version": me.schema_version}),
        ),
        child_generation: Some(c.generation),
    })
}

/// True when a child whose start was just confirmed missed something since its start input: a
/// change of the state, and (ordered mode) a token, status or schema given to the others
/// meanwhile.
pub(super) fn missed_since_start(me: &Me<'_>, c: &ChildRec) -> bool {
    c.version_sent < me.store.version()
        || (!me.legacy
            && (c.token_sent.as_ref() != me.token_stamp
                || (me.status_stamp.is_some() && c.status_sent.as_ref() != me.status_stamp)
                || (me.schema_stamp.is_some()
                    && c.workflow_type == WORKFLOW_TYPE
                    && c.schema_sent.as_ref() != me.schema_stamp)))
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
