//! The size guard: the state always fits in the input of the next run (continue-as-new), one
//! payload. A change that would make it too large is refused with a reason, and the workflow keeps
//! running with the state it has.
//!
//! Measuring the whole carry-over on every change would cost a serialization of the state per
//! message, so the guard keeps the size last measured and the payload bytes of the changes applied
//! since. While `measured + GROWTH_FACTOR × growth` stays within the limit, a change goes through
//! unmeasured (the store grows by at most a few times a change's size: a stamp per written field).
//! Past that, the change is applied to a copy of the store first, and the copy is measured.

use serde_json::Value;
use stateful_engine::store::Batch;
use stateful_engine::{Change, ChangeKind, Schema, Stamp};

use super::Core;
use crate::limits::Limits;
use crate::msg::Msg;
use crate::outbox::json_len;

/// How much the carry-over may grow per byte of a change's payload, at most (the store's stamps,
/// and a registry record per new child).
pub(crate) const GROWTH_FACTOR: u64 = 8;

/// What a new child's record adds to the registry, besides its workflow id (plain JSON).
const CHILD_RECORD_BYTES: u64 = 400;

/// What the guard knows between batches (not carried: measured again when a run starts).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SizeGuard {
    /// The carry-over's size, last measured.
    measured: u64,
    /// Payload bytes of the changes applied since.
    growth: u64,
}

/// The guard during one batch.
pub(super) struct SizeStep<'a> {
    pub(super) guard: &'a mut SizeGuard,
    pub(super) limits: &'a crate::limits::Limits,
    /// The carry-over's size without the store, measured when the batch started close to the
    /// limit (`None` otherwise: the batch cannot reach it).
    pub(super) overhead: Option<u64>,
    /// The own entity's name (its managed relations make children).
    pub(super) own_entity: &'a str,
}

/// What a message brings, in payload bytes.
pub(super) fn msg_bytes(m: &Msg) -> u64 {
    match m {
        Msg::Wire { payload: Ok(v), .. } => json_len(v),
        Msg::Loaded(l) => json_len(&serde_json::to_value(l).unwrap_or(Value::Null)),
        _ => 0,
    }
}

impl SizeGuard {
    /// True when `incoming` more payload bytes may bring the carry-over close to `limits`: the
    /// batch then measures the overhead first.
    pub(super) fn near(&self, limits: &Limits, incoming: u64) -> bool {
        // A tiny entity of a child's type (`{"id": "l1"}`) brings a registry record of some
        // 400 bytes: hence the wider margin here than in `admit`.
        self.measured + 4 * GROWTH_FACTOR * (self.growth + incoming) > limits.state_budget()
    }
}

/// The entity types the own entity's managed relations start children for.
fn child_targets<'s>(schema: &'s Schema, own_entity: &str) -> Vec<&'s str> {
    schema
        .get(own_entity)
        .map(|d| {
            d.relations
                .values()
                .filter(|r| r.managed.auto_start)
                .map(|r| r.target.as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// How many entities of the children's types a change writes (each may become a child).
fn possible_children(change: &Change, targets: &[&str]) -> u64 {
    let n = match change {
        Change::Upsert { entities, .. } | Change::SetState { entities } => targets
            .iter()
            .filter_map(|t| entities.get(*t))
            .map(|g| g.len())
            .sum(),
        Change::Writes(w) => w
            .fields
            .keys()
            .filter(|r| targets.contains(&&*r.entity))
            .count(),
        Change::Delete { .. } => 0,
    };
    n as u64
}

impl SizeStep<'_> {
    /// Admits a change of `bytes` payload bytes, or refuses it when the carry-over would no longer
    /// fit in one payload (the store is left untouched then).
    pub(super) fn admit(
        &mut self,
        schema: &Schema,
        batch: &Batch<'_>,
        change: &Change,
        stamp: &Stamp,
        source: &str,
        bytes: u64,
    ) -> Result<(), String> {
        let max = self.limits.state_budget();
        let targets = child_targets(schema, self.own_entity);
        // Each entity of a child's type may bring a registry record, whatever its own size.
        let bytes = bytes + possible_children(change, &targets) * CHILD_RECORD_BYTES;
        let g = &mut *self.guard;
        if g.measured + GROWTH_FACTOR * (g.growth + bytes) <= max {
            g.growth += bytes;
            return Ok(());
        }
        // Not measured at the batch's start (it did not look close): the whole carry-over
        // last measured bounds the part without the store.
        let overhead = self.overhead.unwrap_or(g.measured);
        let mut trial = batch.store().clone();
        let Ok(cs) = trial.apply(schema, change, stamp, source) else {
            // It does not apply: the batch says why.
            return Ok(());
        };
        let store = serde_json::to_value(&trial).unwrap_or(Value::Null);
        let (plain, measured) = (json_len(&store), self.limits.measure_part(&store));
        // The registry records of the children this change brings, at the store's compression.
        let children: u64 = cs
            .entities
            .iter()
            .filter(|(r, c)| c.kind == ChangeKind::Added && targets.contains(&&*r.entity))
            .map(|(r, _)| CHILD_RECORD_BYTES + 2 * (r.entity.len() + r.id.len()) as u64)
            .sum();
        let total = overhead + measured + children * measured / plain.max(1);
        if total > max {
            return Err(format!(
                "refused: with this change the workflow's state would take {total} bytes{}, more \
                 than the {max} bytes a state may take (nine tenths of one payload: the state must \
                 fit in the input of the next run); the state is unchanged. Remove or split data{}",
                if self.limits.compressed {
                    " compressed"
                } else {
                    ""
                },
                if self.limits.compressed {
                    ""
                } else {
                    ", or run the tree with payload compression (worker --compress)"
                }
            ));
        }
        g.measured = total;
        g.growth = 0;
        Ok(())
    }
}

impl Core {
    /// The limits this workflow keeps under.
    pub fn limits(&self) -> &Limits {
        &self.ident.limits
    }

    /// The hand-over found the next run's input too large (it should not happen: the guard refuses
    /// what would make it so): this run goes on, and tries again after `history` events. The
    /// children whose start waited are queued again.
    pub fn defer_handover(&mut self, history: u32) {
        self.handover_after = history;
        for (wid, generation) in self.tree.queued() {
            self.outbox.push_start(wid, generation);
        }
    }

    /// True unless a hand-over was deferred and the history is not yet `handover_after` long.
    pub fn handover_allowed(&self, history: u32) -> bool {
        history >= self.handover_after
    }

    /// Payload bytes of what waits in the inbox.
    pub(super) fn inbox_bytes(&self) -> u64 {
        self.inbox.iter().map(msg_bytes).sum()
    }

    /// What the registry records of the children a first run's state brings will add to the
    /// carry-over (they are registered by its first plan, after the start is measured).
    pub(super) fn registry_estimate(&self) -> u64 {
        let Some(schema) = self.ident.schema.as_deref() else {
            return 0;
        };
        let targets = child_targets(schema, &self.ident.entity);
        self.store
            .entities()
            .iter()
            .filter(|(e, _)| targets.contains(&e.as_str()) && **e != self.ident.entity)
            .flat_map(|(e, rows)| rows.keys().map(move |id| (e, id)))
            .map(|(e, id)| CHILD_RECORD_BYTES + 2 * (e.len() + id.len()) as u64)
            .sum()
    }

    /// Measures the carry-over (at the start of a run, and when the guard needs a fresh figure).
    pub(super) fn measure_state(&mut self) -> u64 {
        self.measure_state_with(0)
    }

    /// [`Core::measure_state`], plus `more` bytes of plain JSON known to come (the registry of a
    /// first run), counted at the carry-over's compression when payloads are compressed.
    pub(super) fn measure_state_with(&mut self, more: u64) -> u64 {
        let (v, measured) = self.carry_fitted(self.inbox.peek_carry());
        let total = if more > 0 && self.ident.limits.compressed {
            // The whole as it will be measured once it is larger: compressed, the records about
            // as well as the rest.
            let plain = json_len(&v);
            let packed = self.ident.limits.measure_part(&v);
            let whole = plain + more;
            if whole <= self.ident.limits.max_payload_bytes {
                whole
            } else {
                packed + more * packed / plain.max(1)
            }
        } else {
            measured + more
        };
        self.size = SizeGuard {
            measured: total,
            growth: 0,
        };
        total
    }
}
