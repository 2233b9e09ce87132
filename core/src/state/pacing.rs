//! The outbox side of [`Core`]: the glue queues what a batch decided and issues it in waves within
//! the workflow's limits (see [`crate::outbox`]).

use super::{Core, Ordering, me};
use crate::outbox::Pending;
use crate::tree::Effect;

impl Core {
    /// Queues effects to issue (child starts as intents: their children are `queued` until
    /// their start leaves).
    pub fn enqueue(&mut self, effects: Vec<Effect>) {
        for e in &effects {
            if let Effect::Start { workflow_id, .. } = e {
                self.tree.mark_queued(workflow_id);
            }
        }
        self.outbox.push(effects);
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
        self.outbox
            .wave(&self.ident.limits, pending, task, |wid, generation| {
                tree.start_effect_of(&me, wid, generation)
            })
    }

    /// True when children wait to start and this run has as many as it may: continue as new.
    pub fn wants_new_run(&self) -> bool {
        self.outbox.run_full()
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
