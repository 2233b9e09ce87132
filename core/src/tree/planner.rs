//! The planner: every effect a batch calls for, decided in one place. Children to start, restart and
//! remove; what each running child must learn of a change set (its slice only, never what came from
//! it); what each subscriber must learn; the cascade when the workflow ends; pause and resume; token
//! forwarding; catch-ups after a start, an adoption, a continue-as-new or a pause.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use stateful_engine::plan::{self, Audience, ChildSpec, Selector};
use stateful_engine::schema::OnRemove;
use stateful_engine::{ChangeSet, EntityRef};

use super::send::{
    catch_up, catch_up_payload, push_outgoing, stamped, start_effect, status_payload,
    subscription_base, tag_incarnation, token_payload,
};
use super::{ChildEvent, ChildRec, ChildStatus, Effect, Me, Tree};
use crate::WORKFLOW_TYPE;
use crate::status::Status;

/// Our whole stamped state: `(updates, stamps)`, computed once per batch however many subscribers
/// get it.
fn whole_stamped(me: &Me<'_>) -> (Value, Value) {
    let all: BTreeSet<EntityRef> = me
        .store
        .entities()
        .iter()
        .flat_map(|(e, g)| {
            g.keys()
                .map(move |id| EntityRef::new(e.clone(), id.clone()))
        })
        .collect();
    plan::stamped_slice(me.store, me.schema, &all)
}

/// Our whole stamped state for a subscriber (a catch-up: stamped writes are idempotent).
fn whole_state(me: &Me<'_>, whole: &(Value, Value), s: &super::Subscription) -> Effect {
    let (state, stamps) = whole;
    Effect::Signal {
        workflow_id: s.workflow_id.clone(),
        name: "update".into(),
        payload: Some(catch_up_payload(
            me,
            json!({"updates": state, "stamps": stamps, "changeOrigin": me.workflow_id, "subscriptionId": s.subscription_id}),
        )),
        child_generation: None,
    }
}

/// Records, in ordered mode, that a child was given our status.
fn status_sent<'a>(me: &'a Me<'_>) -> impl Fn(&mut ChildRec) + 'a {
    move |c| {
        if !me.legacy {
            c.status_sent = me.status_stamp.cloned();
        }
    }
}

/// Records, in ordered mode, that a child was given our token.
fn token_sent<'a>(me: &'a Me<'_>) -> impl Fn(&mut ChildRec) + 'a {
    move |c| {
        if !me.legacy {
            c.token_sent = me.token_stamp.cloned();
        }
    }
}

/// A child that runs, is ours and may be signalled.
fn confirmed_running(c: &ChildRec) -> bool {
    c.status == ChildStatus::Running && c.confirmed && !c.queued && !c.verifying
}

/// Where the workflow stands when a batch's effects are planned.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Its status before the batch.
    pub before: Status,
    /// Its status after the batch.
    pub status: Status,
    /// Why it ends, when it does.
    pub end_reason: &'a str,
    /// The batch rotated the token.
    pub token_changed: bool,
    /// The batch changed the schema (the slices were rebuilt with the new one).
    pub schema_changed: bool,
}

impl Tree {
    /// The effects of the start: catch-ups of children carried over a continue-as-new, and the
    /// children of the initial state. A workflow started paused plans nothing until it resumes.
    pub fn start_effects(&mut self, me: &Me<'_>, cs: &ChangeSet, status: Status) -> Vec<Effect> {
        if status != Status::Running {
            self.dirty = true;
            return Vec::new();
        }
        let mut effects = self.confirm_carried(me);
        effects.extend(self.plan(me, cs, false, None));
        tag_incarnation(me, &mut effects);
        effects
    }

    /// The effects of a batch: child events first, then the cascade (ending), the pause, or the
    /// resume and the plan of the change set.
    pub fn effects(
        &mut self,
        me: &Me<'_>,
        cs: &ChangeSet,
        events: &[ChildEvent],
        s: Situation<'_>,
    ) -> Vec<Effect> {
        let ending = s.status.is_terminal();
        let mut effects = Vec::new();
        let echo = std::mem::take(&mut self.echo);
        // The slices follow the state first (ordered mode): a child restarted by this batch's
        // events starts with what this batch brought, and while paused they keep up, so that the
        // resume's catch-ups hold what changed meanwhile.
        let mut deltas = (!me.legacy).then(|| self.slices.update(me.schema, me.store, cs));
        for ev in events {
            effects.extend(self.on_child_event(me, ev, ending));
        }
        if s.status != Status::Running {
            // Paused: the resume sends every subscriber our whole state anyway.
            self.dirty |= !self.fresh.is_empty();
            self.fresh.clear();
        }
        if ending {
            effects.extend(self.cancel_all());
            effects.extend(self.tell_subscribers_we_ended(me, s));
        } else if s.status == Status::Paused {
            if s.before != Status::Paused {
                self.forward(
                    &mut effects,
                    "pause",
                    |c| status_payload(me, c),
                    status_sent(me),
                );
            }
            if !cs.is_empty() || s.token_changed || s.schema_changed {
                self.dirty = true;
            }
        } else {
            if s.before == Status::Paused {
                self.forward(
                    &mut effects,
                    "resume",
                    |c| status_payload(me, c),
                    status_sent(me),
                );
                if self.dirty {
                    effects.extend(self.resync(me));
                    self.forward(
                        &mut effects,
                        "apiToken",
                        |c| token_payload(me, c),
                        token_sent(me),
                    );
                }
            }
            let planned = self.plan(me, cs, s.token_changed, deltas.take());
            if s.schema_changed {
                // To the children that stay, before anything the new schema shapes.
                effects.extend(self.schema_to_children(me));
            }
            effects.extend(planned);
            if s.schema_changed {
                effects.extend(self.after_schema_change(me));
            }
            effects.extend(self.welcome(me));
            // (Paused, the resume's resynchronization answers them.)
            effects.extend(self.answer_stampless(me, echo));
        }
        self.let_go.clear();
        tag_incarnation(me, &mut effects);
        effects
    }

    /// A schema change, once planned (the children of new relations started, those of removed
    /// ones removed): every running, confirmed StatefulWorkflow child is given the new schema (see
    /// [`super::send::schema_catch_up`]), sent before the plan's effects.
    fn schema_to_children(&mut self, me: &Me<'_>) -> Vec<Effect> {
        self.children
            .iter_mut()
            .filter(|(_, c)| confirmed_running(c))
            .filter_map(|(wid, c)| super::send::schema_catch_up(me, wid, c))
            .collect()
    }

    /// A schema change, after its plan: every running, confirmed child gets its whole slice, which
    /// new relations may have widened (stamped writes are idempotent).
    fn after_schema_change(&mut self, me: &Me<'_>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (wid, c) in self
            .children
            .iter_mut()
            .filter(|(_, c)| confirmed_running(c))
        {
            effects.extend(catch_up(me, &self.slices, wid, c, false));
        }
        effects
    }

    /// The answers to peers that sent no stamps (see [`Tree::note_stampless`]): to a running,
    /// confirmed child, our rows of what it touched within its slice; to a subscriber, what its
    /// `update` (and `delete`) subscription selects. Anyone else is told nothing: a message cannot
    /// make us write to a workflow outside the tree.
    fn answer_stampless(
        &self,
        me: &Me<'_>,
        echo: BTreeMap<String, BTreeMap<EntityRef, bool>>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (peer, touched) in echo {
            let child = self
                .children
                .get(&peer)
                .filter(|c| c.status == ChildStatus::Running && c.confirmed);
            if let Some(c) = child {
                let root = EntityRef::new(c.entity.clone(), c.id.clone());
                let Some(members) = self.slices.members(&root) else {
                    continue;
                };
                let within: BTreeMap<EntityRef, bool> = touched
                    .into_iter()
                    .filter(|(r, _)| members.contains(r))
                    .collect();
                let out = plan::echo(
                    me.store,
                    me.schema,
                    &within,
                    &Selector::parse("*"),
                    me.workflow_id,
                );
                push_outgoing(&mut effects, &peer, out, Some(c.generation));
                continue;
            }
            for s in self.subscriptions.iter().filter(|s| s.workflow_id == peer) {
                let out = plan::echo(
                    me.store,
                    me.schema,
                    &touched,
                    &Selector::parse(&s.selector),
                    me.workflow_id,
                );
                let payload = match s.signal_name.as_str() {
                    "delete" => out.delete,
                    _ => out.update,
                };
                if let Some(mut p) = payload {
                    p["subscriptionId"] = json!(s.subscription_id);
                    effects.push(Effect::Signal {
                        workflow_id: peer.clone(),
                        name: s.signal_name.clone(),
                        payload: Some(p),
                        child_generation: None,
                    });
                }
            }
        }
        effects
    }

    fn tell_subscribers_we_ended(&mut self, me: &Me<'_>, s: Situation<'_>) -> Vec<Effect> {
        let mut told = BTreeSet::new();
        let mut effects = Vec::new();
        // The parents that let go are told too (ordered mode): one of them may have adopted us
        // again meanwhile (its `subscribe` is on its way), and must learn that we ended.
        let let_go = std::mem::take(&mut self.let_go);
        let targets = self
            .subscriptions
            .iter()
            .map(|sub| sub.workflow_id.clone())
            .chain(let_go.into_iter().filter(|_| !me.legacy));
        for target in targets {
            if told.insert(target.clone()) {
                effects.push(Effect::Signal {
                    workflow_id: target,
                    name: "childEnded".into(),
                    payload: Some(json!({"workflowId": me.workflow_id, "status": s.status.as_str(), "reason": s.end_reason})),
                    child_generation: None,
                });
            }
        }
        effects
    }

    /// The effects of a change set: children to remove and to start, what running children and
    /// subscribers must learn, and the token to forward.
    fn plan(
        &mut self,
        me: &Me<'_>,
        cs: &ChangeSet,
        token_changed: bool,
        deltas: Option<BTreeMap<EntityRef, stateful_engine::SliceDelta>>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let deltas = deltas.unwrap_or_else(|| self.slices.update(me.schema, me.store, cs));
        let (desired, skipped) =
            plan::desired_children(me.schema, me.store, &me.own, me.workflow_id, me.ancestors);
        for s in &skipped {
            if !self.skipped.contains(s) {
                self.newly_skipped.push(s.clone());
            }
        }
        // What is skipped now (no longer what ever was: the set stays as small as the relations).
        self.skipped = skipped.into_iter().collect();
        let desired: BTreeMap<String, ChildSpec> = desired
            .into_iter()
            .map(|c| (c.workflow_id.clone(), c))
            .collect();
        self.remove_gone(me, &desired, &mut effects);
        self.start_new(me, &desired, &mut effects);
        self.forget_ended(&desired);
        self.send_to_children(me, &deltas, &mut effects);
        self.send_to_subscribers(me, cs, &mut effects);
        if token_changed && me.api_token.is_some() {
            self.forward(
                &mut effects,
                "apiToken",
                |c| token_payload(me, c),
                token_sent(me),
            );
        }
        effects
    }

    /// Forgets the oldest records of ended children that no relation holds any more, past
    /// [`MAX_ENDED_CHILDREN`] (the registry stays bounded however many children come and go).
    fn forget_ended(&mut self, desired: &BTreeMap<String, ChildSpec>) {
        let mut gone: Vec<(u64, String)> = self
            .children
            .iter()
            .filter(|(w, c)| c.status != ChildStatus::Running && !desired.contains_key(*w))
            .map(|(w, c)| (c.version_sent, w.clone()))
            .collect();
        if gone.len() <= super::MAX_ENDED_CHILDREN {
            return;
        }
        gone.sort();
        let extra = gone.len() - super::MAX_ENDED_CHILDREN;
        for (_, w) in gone.into_iter().take(extra) {
            self.children.remove(&w);
        }
    }

    /// Children removed from their relation: a StatefulWorkflow is unsubscribed (it ends itself when
    /// its last managing parent lets go, so that a shared child keeps running for the others), any
    /// other workflow is cancelled; `onRemove: keep` leaves it alone. A workflow that was never
    /// ours (conflicting, or still being verified) is told nothing.
    fn remove_gone(
        &mut self,
        me: &Me<'_>,
        desired: &BTreeMap<String, ChildSpec>,
        effects: &mut Vec<Effect>,
    ) {
        let gone: Vec<String> = self
            .children
            .iter()
            .filter(|(w, c)| {
                matches!(c.status, ChildStatus::Running | ChildStatus::Conflicting)
                    && !desired.contains_key(*w)
            })
            .map(|(w, _)| w.clone())
            .collect();
        for wid in gone {
            let c = self.children.get_mut(&wid).expect("listed above");
            let ours = c.status == ChildStatus::Running && !std::mem::take(&mut c.verifying);
            c.status = ChildStatus::Removed;
            c.ended = Some("removed from the relation".into());
            self.slices
                .remove(&EntityRef::new(c.entity.clone(), c.id.clone()));
            if !ours {
                continue;
            }
            // A relation that a schema change removed ends its children as it said.
            let relation = |s: &stateful_engine::Schema| {
                s.get(&me.own.entity)
                    .and_then(|d| d.relations.get(&c.field))
                    .map(|r| r.managed.on_remove)
            };
            let keep = relation(me.schema)
                .or_else(|| me.previous_schema.and_then(relation))
                .is_some_and(|r| r == OnRemove::Keep);
            // A child whose start never left the outbox is simply not started.
            if keep || std::mem::take(&mut c.queued) {
                continue;
            }
            if c.workflow_type == WORKFLOW_TYPE {
                let base = subscription_base(me, &c.field, &c.id);
                for sid in [base.clone(), format!("{base}:delete")] {
                    effects.push(Effect::Signal {
                        workflow_id: wid.clone(),
                        name: "unsubscribe".into(),
                        payload: Some(stamped(
                            me,
                            json!({"workflowId": me.workflow_id, "subscriptionId": sid}),
                        )),
                        child_generation: None,
                    });
                }
            } else {
                effects.push(Effect::Cancel { workflow_id: wid });
            }
        }
    }

    /// New children (and children that were removed and came back).
    fn start_new(
        &mut self,
        me: &Me<'_>,
        desired: &BTreeMap<String, ChildSpec>,
        effects: &mut Vec<Effect>,
    ) {
        for (wid, spec) in desired {
            let known = self.children.get(wid);
            if known.is_some_and(|c| {
                matches!(
                    c.status,
                    ChildStatus::Running
                        | ChildStatus::Completed
                        | ChildStatus::Failed
                        | ChildStatus::Conflicting
                )
            }) {
                continue;
            }
            let rec = ChildRec {
                entity: spec.entity.entity.clone(),
                id: spec.entity.id.clone(),
                field: spec.field.clone(),
                workflow_type: spec.managed.workflow_type.clone(),
                task_queue: spec.managed.task_queue.clone(),
                status: ChildStatus::Running,
                generation: known.map_or(1, |c| c.generation + 1),
                version_sent: me.store.version(),
                adopted: false,
                confirmed: false,
                ended: None,
                adopted_at: None,
                queued: false,
                token_sent: (!me.legacy).then(|| me.token_stamp.cloned()).flatten(),
                status_sent: (!me.legacy).then(|| me.status_stamp.cloned()).flatten(),
                schema_sent: me.schema_stamp.cloned(),
                incarnation: (!me.legacy).then(|| me.control_stamp.cloned()).flatten(),
                verifying: false,
                conflict: None,
            };
            self.slices.insert(
                me.schema,
                me.store,
                spec.entity.clone(),
                [me.own.clone()].into(),
            );
            effects.push(start_effect(me, &self.slices, wid, &rec, spec));
            self.children.insert(wid.clone(), rec);
        }
    }

    /// What running, confirmed children must learn: their slice's part of the change set.
    fn send_to_children(
        &mut self,
        me: &Me<'_>,
        deltas: &BTreeMap<EntityRef, stateful_engine::SliceDelta>,
        effects: &mut Vec<Effect>,
    ) {
        let version = me.store.version();
        let all = Selector::parse("*");
        for (root, delta) in deltas {
            let Some((wid, c)) = self.children.iter_mut().find(|(_, c)| {
                c.status == ChildStatus::Running && c.entity == root.entity && c.id == root.id
            }) else {
                continue;
            };
            if !c.confirmed {
                continue;
            }
            let members = self.slices.members(root).cloned().unwrap_or_default();
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
                    skip_own_entered: !me.legacy,
                    receiver_holds_own_writes: !me.legacy && c.generation == 1,
                },
            );
            push_outgoing(effects, wid, out, Some(c.generation));
            c.version_sent = version;
        }
    }

    /// What each subscriber must learn (through its selector), never what came from it.
    fn send_to_subscribers(&self, me: &Me<'_>, cs: &ChangeSet, effects: &mut Vec<Effect>) {
        let none = BTreeSet::new();
        for s in &self.subscriptions {
            let sel = Selector::parse(&s.selector);
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
                    skip_own_entered: !me.legacy,
                    receiver_holds_own_writes: false,
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
    }

    /// New subscribers get our whole state (an adopting parent learns what its child holds).
    fn welcome(&mut self, me: &Me<'_>) -> Vec<Effect> {
        let fresh = std::mem::take(&mut self.fresh);
        let mut effects = Vec::new();
        let mut whole = None;
        for s in self
            .subscriptions
            .iter()
            .filter(|s| s.signal_name == "update")
        {
            let Some((_, _, stamp)) = fresh
                .iter()
                .find(|(w, id, _)| *w == s.workflow_id && *id == s.subscription_id)
            else {
                continue;
            };
            let whole = whole.get_or_insert_with(|| whole_stamped(me));
            let mut e = whole_state(me, whole, s);
            if let Effect::Signal {
                payload: Some(p), ..
            } = &mut e
            {
                p["answers"] = json!(stamp);
            }
            effects.push(e);
        }
        effects
    }

    /// The same signal to every running, confirmed child, with the payload each understands.
    fn forward(
        &mut self,
        effects: &mut Vec<Effect>,
        name: &str,
        payload: impl Fn(&ChildRec) -> Option<Value>,
        sent: impl Fn(&mut ChildRec),
    ) {
        for (wid, c) in self.children.iter_mut() {
            if c.status != ChildStatus::Running || !c.confirmed {
                continue;
            }
            effects.push(Effect::Signal {
                workflow_id: wid.clone(),
                name: name.into(),
                payload: payload(c),
                child_generation: Some(c.generation),
            });
            sent(c);
        }
    }

    /// Cancels every running child (the cascade of our own end); a workflow not verified to be
    /// ours is left alone, and so is a conflicting one (it is not `Running`).
    fn cancel_all(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (wid, c) in self.children.iter_mut() {
            if c.status == ChildStatus::Running {
                c.status = ChildStatus::Removed;
                c.ended = Some("parent ended".into());
                let unverified = std::mem::take(&mut c.verifying);
                if !std::mem::take(&mut c.queued) && !unverified {
                    effects.push(Effect::Cancel {
                        workflow_id: wid.clone(),
                    });
                }
            }
        }
        effects
    }

    /// After a pause: every running child gets its whole slice again, every subscriber our whole state
    /// (stamped writes are idempotent, so this only fills in what they missed); a child not yet
    /// verified to be ours is verified again instead.
    fn resync(&mut self, me: &Me<'_>) -> Vec<Effect> {
        self.dirty = false;
        let mut effects = Vec::new();
        for (wid, c) in self
            .children
            .iter_mut()
            .filter(|(_, c)| c.status == ChildStatus::Running && !c.queued)
        {
            if c.verifying {
                // Not ours until verified: asked again (a run that started paused after a
                // continue-as-new asked nothing yet); a repeated answer is ignored.
                effects.push(Effect::Verify {
                    workflow_id: wid.clone(),
                    generation: c.generation,
                });
                continue;
            }
            c.confirmed = true;
            effects.extend(catch_up(me, &self.slices, wid, c, false));
        }
        let mut whole = None;
        for s in self
            .subscriptions
            .iter()
            .filter(|s| s.signal_name == "update")
        {
            let whole = whole.get_or_insert_with(|| whole_stamped(me));
            effects.push(whole_state(me, whole, s));
        }
        effects
    }
}
