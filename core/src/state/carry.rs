//! The hand-over to the next run (continue-as-new): the checkpoint and the next run's input.

use serde_json::{Value, json};
use stateful_engine::checksum;

use super::Core;
use crate::audit::Checkpoint;
use crate::input::Carry;
use crate::msg::Msg;
use crate::order::OrderCarry;
use crate::status::Status;
use crate::tree::ChildEvent;

impl Core {
    /// Hands the starts still queued and the outcomes that resolved while the run drained (starts confirmed or refused, children
    /// ended, signals not delivered) to the next run, through the carried inbox (ordered mode; a run
    /// replaying an earlier release's history drops them, as that release did).
    pub fn hand_over(&mut self, outcomes: Vec<ChildEvent>) {
        // Starts that found no room in this run stay `queued` in the registry: the next run
        // starts them.
        self.outbox.take_starts();
        if self.legacy {
            return;
        }
        for ev in outcomes {
            self.inbox.push(Msg::Child(ev));
        }
    }

    /// Records the checkpoint of this run's hand-over (call right before `carry_input`).
    pub fn checkpoint(&mut self, run_id: &str, now: u64) -> Checkpoint {
        let sum = checksum(self.store.entities());
        let children_wait = !self.tree.queued().is_empty();
        let history_large = self.history_bytes > super::MAX_HISTORY_BYTES;
        self.audit.checkpoint(
            run_id,
            now,
            self.store.version(),
            sum,
            children_wait,
            history_large,
        )
    }

    /// The input of the next run (continue-as-new): the wire fields plus the carry-over.
    pub fn carry_input(&mut self) -> Value {
        let inbox = self.inbox.carry();
        self.carry_fitted(inbox).0
    }

    /// The size the next run's input would take as a payload now (nothing is taken from the
    /// inbox): the glue checks it before handing over.
    pub fn carry_size(&self) -> u64 {
        self.carry_fitted(self.inbox.peek_carry()).1
    }

    /// The next run's input and its size: with the audit trail (at most a tenth of a payload), or,
    /// when that would not fit, without it (the counts stay): the trail gives way to the state.
    pub(super) fn carry_fitted(&self, inbox: Vec<Msg>) -> (Value, u64) {
        let max = self.ident.limits.max_payload_bytes;
        let outbox = self.outbox_carried();
        let v = self.carry_value(inbox.clone(), self.store.clone(), max / 10, outbox.clone());
        let size = self.ident.limits.measure(&v);
        if size <= max {
            return (v, size);
        }
        let v = self.carry_value(inbox, self.store.clone(), 0, outbox);
        let size = self.ident.limits.measure(&v);
        (v, size)
    }

    /// The size of the next run's input without the store (the store's own size is measured
    /// apart, on a trial copy, by the size guard).
    pub(super) fn carry_overhead(&self) -> u64 {
        let v = self.carry_value(
            self.inbox.peek_carry(),
            stateful_engine::Store::new(),
            self.ident.limits.max_payload_bytes / 10,
            Vec::new(),
        );
        self.ident.limits.measure_part(&v)
    }

    fn carry_value(
        &self,
        inbox: Vec<Msg>,
        store: stateful_engine::Store,
        trail: u64,
        outbox: Vec<crate::outbox::Carried>,
    ) -> Value {
        // The audit trail takes at most `trail` bytes (all of it, with the default limits).
        let audit = self.audit.carry_within(trail);
        let carry = Carry {
            version: crate::input::CARRY_VERSION,
            store,
            token_rotations: self.api.token.rotations(),
            rejected: audit.rejected,
            rejected_total: audit.rejected_total,
            recent: audit.recent,
            changes_total: audit.changes_total,
            runs: audit.runs,
            inbox,
            children: self.tree.children().clone(),
            api: self.api.loads.carried(),
            checkpoints: audit.checkpoints,
            order: OrderCarry {
                token: self.api.token.order().clone(),
                status: self.status_order.clone(),
                url: self.api.url_order.clone(),
                subscriptions: self.tree.sub_order().clone(),
                schema: self.ident.schema_order.clone(),
            },
            outbox,
            schema_version: self.ident.schema_version,
            hooks: self.hooks.carry(),
        };
        let mut v = json!({
            "id": self.ident.id,
            "entityName": self.ident.entity,
            "status": if self.status == Status::Paused { "paused" } else { "running" },
            "subscriptions": self.tree.subscriptions(),
            "ancestorWorkflowIds": self.ident.ancestors,
            "schema": *self.ident.schema_json,
            "maxHistoryLength": self.ident.max_history,
            "carry": carry,
        });
        let loads = &self.api.loads;
        if let Some(u) = &loads.url {
            v["apiUrl"] = json!(u);
        }
        if let Some(b) = &loads.base {
            v["apiBase"] = json!(b);
        }
        if let Some(r) = loads.refresh_ms {
            v["refreshInterval"] = json!(r);
        }
        if self.api.loaded_by_parent {
            v["loadedByParent"] = json!(true);
        }
        if let Some(cp) = self.audit.last_checkpoint() {
            v["checkpoint"] = json!(cp);
        }
        v["limits"] = self.ident.limits.to_input();
        if let Some(q) = &self.ident.activity_task_queue {
            v["activityTaskQueue"] = json!(q);
        }
        if let Some(i) = &self.ident.incarnation {
            v["incarnation"] = json!(i);
        }
        if let Some(t) = self.api.token() {
            v["apiToken"] = json!(t.expose());
        }
        v
    }
}
