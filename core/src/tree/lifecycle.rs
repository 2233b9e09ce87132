//! A child's life as its parent sees it: start confirmed, refused (adopted), ended by itself
//! (recorded), ended from outside (restarted, at most [`MAX_RESTARTS`] times), and the catch-ups of
//! children carried over a continue-as-new.

use stateful_engine::plan;

use super::send::{
    adopt, catch_up, child_input, missed_since_start, outcome_name, start_effect_with,
};
use super::{
    ChildEvent, ChildEventKind, ChildOutcome, ChildStatus, Effect, MAX_RESTARTS, Me, Tree,
};

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
        let restart = match (ev.event, ev.outcome) {
            (K::Started, _) => {
                c.confirmed = true;
                // What changed between its start input and now (and a token rotated meanwhile).
                if missed_since_start(me, c) {
                    effects.extend(catch_up(me, &self.slices, &ev.workflow_id, c, true));
                }
                false
            }
            (K::AlreadyRunning, _) => {
                effects.extend(adopt(me, &self.slices, &ev.workflow_id, c));
                false
            }
            (K::StartFailed, _) => {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!("could not start: {}", ev.detail));
                false
            }
            // Ended by itself: recorded, never signalled again.
            (K::Ended | K::Reported, O::Completed) => {
                c.status = ChildStatus::Completed;
                c.ended = Some(if ev.detail.is_empty() {
                    "completed".into()
                } else {
                    ev.detail.clone()
                });
                false
            }
            (K::Ended, O::Failed | O::TimedOut) => {
                c.status = ChildStatus::Failed;
                c.ended = Some(format!("{}: {}", outcome_name(ev.outcome), ev.detail));
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
        if c.status != ChildStatus::Running || c.generation != generation || c.confirmed {
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
    /// are confirmed now, and get their whole slice and the token (stamped writes are idempotent).
    pub(super) fn confirm_carried(&mut self, me: &Me<'_>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (wid, c) in self.children.iter_mut() {
            if c.status != ChildStatus::Running || c.confirmed || c.queued {
                continue;
            }
            c.confirmed = true;
            effects.extend(catch_up(me, &self.slices, wid, c, true));
        }
        effects
    }
}
