//! The outbox side of [`Core`]: the glue queues what a batch decided and issues it in waves within
//! the workflow's limits (see [`crate::outbox`]).

use super::{Core, Ordering, me};
use crate::outbox::{Pending, split_payload};
use crate::tree::Effect;

impl Core {
    /// Queues effects to issue (child starts as intents: their children are `queued` until
    /// their start leaves).
    ///
    /// An `update` or `delete` too large for one payload is split by entity; a part that still
    /// does not fit (one entity larger than a payload) is not sent, and shows in `rejected`.
    pub fn enqueue(&mut self, effects: Vec<Effect>) {
        let limits = self.ident.limits;
        let mut out = Vec::with_capacity(effects.len());
        for e in effects {
            match e {
                Effect::Start {
                    ref workflow_id, ..
                } => {
                    self.tree.mark_queued(workflow_id);
                    out.push(e);
                }
                Effect::Signal {
                    workflow_id,
                    name,
                    payload: Some(p),
                    child_generation,
                } if !limits.fits(&p) => {
                    let key = if name == "delete" {
                        "deletions"
                    } else {
                        "updates"
                    };
                    for part in split_payload(&p, key, limits.max_payload_bytes * 4 / 5) {
                        if limits.fits(&part) {
                            out.push(Effect::Signal {
                                workflow_id: workflow_id.clone(),
                                name: name.clone(),
                                payload: Some(part),
                                child_generation,
                            });
                        } else {
                            self.not_sent(&name, &workflow_id, limits.measure(&part));
                        }
                    }
                }
                other => out.push(other),
            }
        }
        self.outbox.push(out);
    }

    /// Records a message that could not be sent: larger than a payload may be.
    fn not_sent(&mut self, name: &str, to: &str, bytes: u64) {
        let reason = format!(
            "`{name}` to {to} not sent: it takes {bytes} bytes, more than the {} bytes one \
             payload may hold",
            self.ident.limits.max_payload_bytes
        );
        self.audit.reject(crate::audit::Rejection {
            signal: format!("outgoing {name}"),
            reason,
            time: self.started_at,
            version: self.store.version(),
        });
    }

    /// The next wave of effects to issue now, given what is `pending` and the workflow task
    /// `task` (any number that changes from one workflow task to the next).
    pub fn release(&mut self, pending: Pending, task: u64) -> Vec<Effect> {
        let order = Ordering::new(self.legacy, self.status, &self.status_order, None);
        let Some(me) = me(&self.ident, &self.store, &self.api, order) else {
            return Vec::new();
        };
        let tree = &mut self.tree;
        self.outbox
            .retain_starts(|wid, generation| tree.is_startable(wid, generation));
        let wave = self
            .outbox
            .wave(&self.ident.limits, pending, task, |wid, generation| {
                tree.start_effect_of(&me, wid, generation)
            });
        self.history_bytes += wave.iter().map(Effect::payload_bytes).sum::<u64>();
        wave
    }

    /// True when this run should continue as new: children wait to start and it has as many as
    /// it may, or its history holds some [`super::MAX_HISTORY_BYTES`] of payloads.
    pub fn wants_new_run(&self) -> bool {
        self.outbox.run_full() || self.history_bytes > super::MAX_HISTORY_BYTES
    }

    /// Set by the glue for a run of this release: at a hand-over, the signals and cancellations
    /// that wait go to the next run in the carry-over (when it has room for them) instead of being
    /// issued first, so that a fan-out of thousands spreads over runs instead of passing Temporal's
    /// history limit in one.
    pub fn set_carry_outbox(&mut self, on: bool) {
        self.carry_outbox = on;
    }

    /// True when this run hands what waits to the next run (see [`Core::set_carry_outbox`]).
    pub fn carries_outbox(&self) -> bool {
        self.carry_outbox
    }

    /// What waits, as the next run takes it over (nothing unless [`Core::set_carry_outbox`]).
    pub(super) fn outbox_carried(&self) -> Vec<crate::outbox::Carried> {
        if !self.carry_outbox {
            return Vec::new();
        }
        self.outbox.peek_ready()
    }

    /// The workflow ends: signals that wait for children whose cancellation waits too are
    /// dropped (see [`crate::outbox::Outbox`]).
    pub fn drop_signals_to_cancelled(&mut self) {
        self.outbox.drop_signals_to_cancelled();
    }

    /// True when nothing but child starts waits in the outbox (a run may hand over).
    pub fn outbox_settled(&self) -> bool {
        self.outbox.only_starts()
    }

    /// True when nothing waits in the outbox.
    pub fn outbox_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Effects waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }
}
