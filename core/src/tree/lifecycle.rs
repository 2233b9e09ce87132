//! A child's life as its parent sees it: start confirmed, refused (what runs under its id is
//! verified, then adopted when it is ours, or recorded as conflicting), ended by itself (recorded),
//! ended from outside (restarted, at most [`MAX_RESTARTS`] times), and the catch-ups of children
//! carried over a continue-as-new.

use stateful_engine::{EntityRef, plan};

use super::send::{
    adopt, catch_up, child_input, missed_since_start, outcome_name, start_effect_with,
};
use super::{
    ChildEvent, ChildEventKind, ChildOutcome, ChildRec, ChildStatus, Effect, MAX_RESTARTS, Me, Tree,
};
use crate::WORKFLOW_TYPE;

impl Tree {
    /// Handles what happened to a child; may adopt or restart it.
    pub(super) fn on_child_event(
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
        use ChildEventKind as K;
        use ChildOutcome as O;
        // A child's failure message (or the reason it reported) may be of any length: what the
        // registry keeps, and carries over, is bounded.
        let detail = crate::audit::clip(&ev.detail, crate::audit::MAX_REASON);
        let restart = match (ev.event, ev.outcome) {
            (K::Started, _) => {
                c.confirmed = true;
                // What changed between its start input and now (and a token rotated meanwhile).
                if missed_since_start(me, c) {
                    effects.extend(catch_up(me, &self.slices, &ev.workflow_id, c, true));
                }
                false
            }
            // What runs under its id is verified first (`verify-adoption`): only a workflow of
            // the expected type is adopted (given our subscription, slice and token).
            (K::AlreadyRunning, _) if self.verify_adoption == Some(true) => {
                c.verifying = true;
                if !parent_ending {
                    effects.push(Effect::Verify {
                        workflow_id: ev.workflow_id.clone(),
                        generation: c.generation,
                    });
                }
                false
            }
            // Histories recorded before verification adopt at once.
            (K::AlreadyRunning, _) => {
                effects.extend(adopt(me, &self.slices, &ev.workflow_id, c));
                false
            }
            // A late or repeated answer (the child was decided on already).
            (K::Verified, _) if !c.verifying => false,
            (K::Verified, O::Gone) => {
                // Nothing runs under its id any more: started again (a start that finds it
                // running again is verified again).
                c.verifying = false;
                !parent_ending
            }
            (K::Verified, _) => {
                c.verifying = false;
                match &ev.workflow_type {
                    Some(t) if expected(c, t) => {
                        effects.extend(adopt(me, &self.slices, &ev.workflow_id, c));
                    }
                    found => {
                        let reason = match found {
                            Some(t) => format!(
                                "a `{t}` workflow runs under this id, not {}: not adopted",
                                expectation(c)
                            ),
                            None => format!(
                                "what runs under this id could not be verified ({}): not adopted",
                                detail
                            ),
                        };
                        c.status = ChildStatus::Conflicting;
                        c.conflict = Some(reason.clone());
                        self.newly_conflicting
                            .push((ev.workflow_id.clone(), reason));
                        self.slices
                            .remove(&EntityRef::new(c.entity.clone(), c.id.clone()));
                    }
                }
                false
            }
            (K::StartFailed, _) => {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!("could not start: {detail}"));
                false
            }
            // Ended by itself: recorded, never signalled again.
            (K::Ended | K::Reported, O::Completed) => {
                c.status = ChildStatus::Completed;
                c.ended = Some(if detail.is_empty() {
                    "completed".into()
                } else {
                    detail
                });
                false
            }
            (K::Ended, O::Failed | O::TimedOut) => {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!("{}: {detail}", outcome_name(ev.outcome)));
                false
            }
            // Cancelled or terminated from outside, or gone: restarted with the current state and token.
            _ => !parent_ending,
        };
        if restart {
            effects.extend(self.restart(me, &ev.workflow_id));
        }
        effects
    }

    /// Starts a child again (a new generation) with the current state and token, unless it was
    /// restarted too often or is no longer wanted.
    fn restart(&mut self, me: &Me<'_>, wid: &str) -> Option<Effect> {
        let c = self.children.get_mut(wid)?;
        if c.generation >= MAX_RESTARTS {
            c.status = ChildStatus::Failed;
            c.ended = Some(format!(
                "ended from outside {} times; not restarted again",
                c.generation
            ));
            return None;
        }
        c.generation += 1;
        c.version_sent = me.store.version();
        c.confirmed = false;
        if !me.legacy {
            // Started by us from now on, whoever ran it before.
            c.adopted = false;
        }
        if !me.legacy {
            c.token_sent = me.token_stamp.cloned();
            c.status_sent = me.status_stamp.cloned();
            c.schema_sent = me.schema_stamp.cloned();
            c.incarnation = me.control_stamp.cloned();
        }
        let generation = c.generation;
        let wanted =
            plan::desired_children(me.schema, me.store, &me.own, me.workflow_id, me.ancestors)
                .0
                .iter()
                .any(|s| s.workflow_id == wid);
        let e = wanted
            .then(|| self.start_effect_of(me, wid, generation))
            .flatten();
        if e.is_none()
            && let Some(c) = self.children.get_mut(wid)
        {
            c.status = ChildStatus::Removed;
        }
        e
    }

    /// The start of a child (`generation`) built now, from the current state: its relation's
    /// options, its slice, our token and status. `None` when that generation is no longer to be
    /// started (it ended, was removed, or its relation is gone from the schema).
    pub fn start_effect_of(&mut self, me: &Me<'_>, wid: &str, generation: u32) -> Option<Effect> {
        let c = self.children.get_mut(wid)?;
        if c.status != ChildStatus::Running
            || c.generation != generation
            || c.confirmed
            || c.verifying
        {
            return None;
        }
        let managed = me
            .schema
            .get(&me.own.entity)?
            .relations
            .get(&c.field)?
            .managed
            .clone();
        c.queued = false;
        c.version_sent = me.store.version();
        if !me.legacy {
            c.token_sent = me.token_stamp.cloned();
            c.status_sent = me.status_stamp.cloned();
            c.schema_sent = me.schema_stamp.cloned();
        }
        let spec = plan::ChildSpec {
            workflow_id: wid.to_string(),
            entity: stateful_engine::EntityRef::new(c.entity.clone(), c.id.clone()),
            field: c.field.clone(),
            managed,
        };
        let input = child_input(me, &self.slices, c, Some(&spec), false);
        if me.limits.fits(&input) {
            return Some(start_effect_with(wid, c, &spec, input));
        }
        // Its slice is too large for one payload: it starts with its own entity, and gets the
        // rest (in parts) as a catch-up once its start is confirmed.
        let lean = child_input(me, &self.slices, c, Some(&spec), true);
        if !me.limits.fits(&lean) {
            c.status = ChildStatus::Failed;
            c.ended = Some(format!(
                "not started: even its smallest start input takes {} bytes, more than the {} \
                 bytes one payload may hold",
                me.limits.measure(&lean),
                me.limits.max_payload_bytes
            ));
            return None;
        }
        c.version_sent = 0;
        Some(start_effect_with(wid, c, &spec, lean))
    }

    /// After a continue-as-new: children whose start was confirmed only as the previous run closed
    /// are confirmed now, and get their whole slice and the token (stamped writes are idempotent);
    /// children whose verification was under way are verified again (a repeated answer is ignored).
    pub(super) fn confirm_carried(&mut self, me: &Me<'_>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (wid, c) in self.children.iter_mut() {
            if c.status != ChildStatus::Running || c.confirmed || c.queued {
                continue;
            }
            if c.verifying {
                effects.push(Effect::Verify {
                    workflow_id: wid.clone(),
                    generation: c.generation,
                });
                continue;
            }
            c.confirmed = true;
            effects.extend(catch_up(me, &self.slices, wid, c, true));
        }
        effects
    }
}

/// True when a workflow of type `found` may be adopted as the child `c`: a StatefulWorkflow, or
/// the type its relation declares (`workflowType`).
fn expected(c: &ChildRec, found: &str) -> bool {
    found == WORKFLOW_TYPE || found == c.workflow_type
}

/// What [`expected`] accepts, for a conflict's reason.
fn expectation(c: &ChildRec) -> String {
    if c.workflow_type == WORKFLOW_TYPE {
        format!("`{WORKFLOW_TYPE}`")
    } else {
        format!("`{}` or `{WORKFLOW_TYPE}`", c.workflow_type)
    }
}
