//! Paced effects: what a batch decides goes into the [`Outbox`], and leaves it in waves that keep the
//! workflow under its [`Limits`]: pending child starts, signals and cancellation requests, and bytes
//! per workflow task. A wave takes effects in order; an effect that does not fit waits, and so does
//! everything after it of the same kind or for the same workflow, so nothing is reordered for a
//! given target (a child is signalled only once its start is confirmed, so its start never has to
//! hold its signals back). Child starts are kept as intents (the child's id and generation) and their input is
//! built when they leave, from the state of that moment; starts that wait when a run has as many
//! children as it may are handed to the next run through the registry (see `Core::hand_over`).

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::limits::Limits;
use crate::tree::Effect;

/// What the glue has outstanding in this run, as Temporal counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    /// Children this run started that have not ended (their start confirmed or not).
    pub children: usize,
    /// Signals not yet acknowledged.
    pub signals: usize,
    /// Cancellation requests not yet acknowledged.
    pub cancels: usize,
}

/// One queued effect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Queued {
    /// Start (or restart) a child: its input is built when it leaves.
    Start {
        /// The child's workflow id.
        workflow_id: String,
        /// The generation to start.
        generation: u32,
    },
    /// A signal or a cancellation request, ready to go.
    Ready(Effect),
}

impl Queued {
    fn target(&self) -> &str {
        match self {
            Queued::Start { workflow_id, .. } => workflow_id,
            Queued::Ready(Effect::Signal { workflow_id, .. })
            | Queued::Ready(Effect::Cancel { workflow_id })
            | Queued::Ready(Effect::Start { workflow_id, .. })
            | Queued::Ready(Effect::Verify { workflow_id, .. }) => workflow_id,
        }
    }

    fn kind(&self) -> usize {
        match self {
            Queued::Start { .. } | Queued::Ready(Effect::Start { .. }) => 0,
            Queued::Ready(Effect::Signal { .. }) => 1,
            Queued::Ready(Effect::Cancel { .. }) => 2,
            // A local activity: no limit of Temporal's counts it.
            Queued::Ready(Effect::Verify { .. }) => 3,
        }
    }
}

/// A signal or a cancellation request a run hands to the next one (part of the carry-over).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Carried {
    /// The target.
    pub workflow_id: String,
    /// The signal's name; none for a cancellation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The signal's argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Set when the target is a child (a failed delivery means it is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_generation: Option<u32>,
}

impl From<Effect> for Carried {
    fn from(e: Effect) -> Carried {
        match e {
            Effect::Signal {
                workflow_id,
                name,
                payload,
                child_generation,
            } => Carried {
                workflow_id,
                signal: Some(name),
                payload,
                child_generation,
            },
            Effect::Cancel { workflow_id }
            | Effect::Start { workflow_id, .. }
            | Effect::Verify { workflow_id, .. } => Carried {
                workflow_id,
                signal: None,
                payload: None,
                child_generation: None,
            },
        }
    }
}

impl From<Carried> for Effect {
    fn from(c: Carried) -> Effect {
        match c.signal {
            Some(name) => Effect::Signal {
                workflow_id: c.workflow_id,
                name,
                payload: c.payload,
                child_generation: c.child_generation,
            },
            None => Effect::Cancel {
                workflow_id: c.workflow_id,
            },
        }
    }
}

/// The queue of effects not yet issued, and the bytes issued in the current workflow task.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Queued>,
    /// The workflow task the byte count is for.
    task: Option<u64>,
    task_bytes: u64,
    /// Set when a start waited because the run has as many children as it may.
    run_full: bool,
}

/// The serialized size of a JSON value, without building it.
pub fn json_len(v: &Value) -> u64 {
    crate::load::json_len(v) as u64
}

impl Effect {
    /// The bytes of its payload (a start's input, a signal's argument).
    pub fn payload_bytes(&self) -> u64 {
        match self {
            Effect::Start { input, .. } => json_len(input),
            Effect::Signal { payload, .. } => payload.as_ref().map_or(0, json_len),
            Effect::Cancel { .. } | Effect::Verify { .. } => 0,
        }
    }
}

/// Splits an `update` (`key` = `updates`) or `delete` (`deletions`) payload into payloads of about
/// `target` bytes each, by entity: each part holds some entities' rows with their stamps, and every
/// other field (`changeOrigin`, `subscriptionId`, ...). Stamped writes commute, so the parts may be
/// applied in any order and together say what the whole said. A single entity larger than `target`
/// makes a part of its own.
pub fn split_payload(p: &Value, key: &str, target: u64) -> Vec<Value> {
    let (Some(rows), Some(obj)) = (p.get(key).and_then(Value::as_object), p.as_object()) else {
        return vec![p.clone()];
    };
    let stamps = p.get("stamps").and_then(Value::as_object);
    let mut base = obj.clone();
    base.remove(key);
    base.remove("stamps");
    let base_len = json_len(&Value::Object(base.clone()));
    let mut parts = Vec::new();
    let mut part: (
        serde_json::Map<String, Value>,
        serde_json::Map<String, Value>,
        u64,
    ) = Default::default();
    let flush = |part: &mut (serde_json::Map<_, _>, serde_json::Map<_, _>, u64),
                 parts: &mut Vec<Value>| {
        if part.0.is_empty() {
            return;
        }
        let (r, st, _) = std::mem::take(part);
        let mut v = Value::Object(base.clone());
        v[key] = Value::Object(r);
        v["stamps"] = Value::Object(st);
        parts.push(v);
    };
    for (entity, group) in rows {
        for (id, row) in group.as_object().into_iter().flatten() {
            let stamp = stamps
                .and_then(|s| s.get(entity))
                .and_then(|g| g.get(id))
                .cloned();
            let len = json_len(row) + stamp.as_ref().map_or(0, json_len) + id.len() as u64 + 16;
            if part.2 > 0 && base_len + part.2 + len > target {
                flush(&mut part, &mut parts);
            }
            let r = part.0.entry(entity.clone()).or_insert_with(|| json!({}));
            r[id] = row.clone();
            if let Some(st) = stamp {
                part.1.entry(entity.clone()).or_insert_with(|| json!({}))[id] = st;
            }
            part.2 += len;
        }
    }
    flush(&mut part, &mut parts);
    if parts.is_empty() {
        parts.push(p.clone());
    }
    parts
}

impl Outbox {
    /// Queues effects (child starts as intents).
    pub(crate) fn push(&mut self, effects: impl IntoIterator<Item = Effect>) {
        for e in effects {
            self.queue.push_back(match e {
                Effect::Start {
                    workflow_id,
                    generation,
                    ..
                } => Queued::Start {
                    workflow_id,
                    generation,
                },
                other => Queued::Ready(other),
            });
        }
    }

    /// Queues a start intent.
    pub(crate) fn push_start(&mut self, workflow_id: String, generation: u32) {
        self.queue.push_back(Queued::Start {
            workflow_id,
            generation,
        });
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when only child starts wait (a run may continue as new: they go over in the registry).
    pub fn only_starts(&self) -> bool {
        self.queue.iter().all(|q| q.kind() == 0)
    }

    /// How many effects wait.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when a start waited because the run has as many children as it may: the run should
    /// continue as new, and the next one starts the rest.
    pub fn run_full(&self) -> bool {
        self.run_full
    }

    /// Drops the start intents that are no longer wanted (their child ended or was removed).
    pub(crate) fn retain_starts(&mut self, wanted: impl Fn(&str, u32) -> bool) {
        self.queue.retain(|q| match q {
            Queued::Start {
                workflow_id,
                generation,
            } => wanted(workflow_id, *generation),
            _ => true,
        });
    }

    /// Takes the start intents that wait (for the hand-over to the next run).
    pub(crate) fn take_starts(&mut self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        self.queue.retain(|q| match q {
            Queued::Start {
                workflow_id,
                generation,
            } => {
                out.push((workflow_id.clone(), *generation));
                false
            }
            _ => true,
        });
        out
    }

    /// The signals and cancellation requests that wait, in order (for a run that hands them to the
    /// next one rather than issue them all before it ends).
    pub(crate) fn peek_ready(&self) -> Vec<Carried> {
        self.queue
            .iter()
            .filter_map(|q| match q {
                Queued::Ready(e @ (Effect::Signal { .. } | Effect::Cancel { .. })) => {
                    Some(Carried::from(e.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The effects an earlier run handed over: first in line (they were decided before anything
    /// this run decides).
    pub(crate) fn push_carried(&mut self, carried: Vec<Carried>) {
        for c in carried.into_iter().rev() {
            self.queue.push_front(Queued::Ready(c.into()));
        }
    }

    /// A workflow that ends cancels its children: the signals still waiting for a workflow whose
    /// cancellation waits too are dropped (they would only lengthen the last run's history).
    pub(crate) fn drop_signals_to_cancelled(&mut self) {
        let cancelled: BTreeSet<String> = self
            .queue
            .iter()
            .filter_map(|q| match q {
                Queued::Ready(Effect::Cancel { workflow_id }) => Some(workflow_id.clone()),
                _ => None,
            })
            .collect();
        if cancelled.is_empty() {
            return;
        }
        self.queue.retain(|q| {
            !matches!(q, Queued::Ready(Effect::Signal { workflow_id, .. }) if cancelled.contains(workflow_id))
        });
    }

    /// The next wave: effects in order while they fit `limits` given what is `pending` and what
    /// workflow task `task` issued already. `build` turns a start intent into its effect (`None`: the
    /// child is no longer to be started; the intent is dropped).
    pub(crate) fn wave(
        &mut self,
        limits: &Limits,
        pending: Pending,
        task: u64,
        mut build: impl FnMut(&str, u32) -> Option<Effect>,
    ) -> Vec<Effect> {
        if self.task != Some(task) {
            self.task = Some(task);
            self.task_bytes = 0;
        }
        let caps = [
            limits.max_children_per_run as usize,
            limits.max_pending_signals as usize,
            limits.max_pending_cancels as usize,
            usize::MAX,
        ];
        let mut counts = [pending.children, pending.signals, pending.cancels, 0];
        let mut held_kinds = [false; 4];
        let mut held_targets: BTreeSet<String> = BTreeSet::new();
        let mut kept = VecDeque::new();
        let mut out = Vec::new();
        self.run_full = false;
        while let Some(q) = self.queue.pop_front() {
            let k = q.kind();
            if held_kinds[k] || held_targets.contains(q.target()) || counts[k] >= caps[k] {
                if counts[k] >= caps[k] {
                    // Full: the rest of this kind waits too (in order).
                    held_kinds[k] = true;
                    self.run_full |= k == 0;
                }
                // A waiting start holds nothing else back: its input is built from the state
                // of the moment it leaves, which holds whatever was sent before it.
                if k != 0 {
                    held_targets.insert(q.target().to_string());
                }
                kept.push_back(q);
                continue;
            }
            let e = match &q {
                Queued::Start {
                    workflow_id,
                    generation,
                } => match build(workflow_id, *generation) {
                    Some(e) => e,
                    None => continue,
                },
                Queued::Ready(e) => e.clone(),
            };
            let size = e.payload_bytes();
            // One effect alone always goes (the planner keeps each under the payload limit).
            if self.task_bytes + size > limits.max_task_bytes && self.task_bytes > 0 {
                kept.push_back(q);
                kept.extend(self.queue.drain(..));
                break;
            }
            self.task_bytes += size;
            counts[k] += 1;
            out.push(e);
        }
        self.queue = kept;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sig(to: &str, n: usize) -> Effect {
        Effect::Signal {
            workflow_id: to.into(),
            name: "update".into(),
            payload: Some(json!("x".repeat(n))),
            child_generation: None,
        }
    }

    fn start(to: &str) -> Effect {
        Effect::Start {
            workflow_id: to.into(),
            generation: 1,
            workflow_type: "W".into(),
            task_queue: None,
            input: json!({}),
            parent_close: Default::default(),
            cancel_type: Default::default(),
        }
    }

    fn targets(es: &[Effect]) -> Vec<String> {
        es.iter()
            .map(|e| match e {
                Effect::Start { workflow_id, .. } => format!("start {workflow_id}"),
                Effect::Signal { workflow_id, .. } => format!("signal {workflow_id}"),
                Effect::Cancel { workflow_id } => format!("cancel {workflow_id}"),
                Effect::Verify { workflow_id, .. } => format!("verify {workflow_id}"),
            })
            .collect()
    }

    fn limits(children: u32, signals: u32, bytes: u64) -> Limits {
        Limits {
            max_children_per_run: children,
            max_pending_signals: signals,
            max_pending_cancels: 1,
            max_task_bytes: bytes,
            ..Limits::default()
        }
    }

    #[test]
    fn waves_keep_each_kind_in_order_and_stay_within_the_limits() {
        let mut o = Outbox::default();
        o.push([
            sig("a", 1),
            sig("b", 1),
            start("c"),
            sig("d", 1),
            start("e"),
        ]);
        o.push([Effect::Cancel {
            workflow_id: "f".into(),
        }]);
        let l = limits(1, 2, 1_000_000);
        let w = o.wave(&l, Pending::default(), 1, |w, _| Some(start(w)));
        // Two signals and one start fit; `d` waits behind the signals' limit, `e` behind the run's.
        assert_eq!(targets(&w), ["signal a", "signal b", "start c", "cancel f"]);
        assert!(o.run_full());
        assert!(!o.only_starts());
        // The signals were acknowledged: `d` goes; `e` still waits for a new run.
        let w = o.wave(
            &l,
            Pending {
                children: 1,
                ..Pending::default()
            },
            2,
            |w, _| Some(start(w)),
        );
        assert_eq!(targets(&w), ["signal d"]);
        assert!(o.only_starts());
        assert_eq!(o.take_starts(), [("e".to_string(), 1)]);
        assert!(o.is_empty());
    }

    #[test]
    fn a_task_sends_at_most_its_bytes_and_one_large_effect_alone() {
        let mut o = Outbox::default();
        o.push([sig("a", 600), sig("b", 600), sig("c", 2_000), sig("d", 10)]);
        let l = limits(10, 100, 1_000);
        let w = o.wave(&l, Pending::default(), 7, |_, _| None);
        assert_eq!(targets(&w), ["signal a"]);
        // Same task: nothing more fits.
        assert!(o.wave(&l, Pending::default(), 7, |_, _| None).is_empty());
        let w = o.wave(&l, Pending::default(), 8, |_, _| None);
        assert_eq!(targets(&w), ["signal b"]);
        // Larger than a task's bytes: it goes alone in a task of its own.
        let w = o.wave(&l, Pending::default(), 9, |_, _| None);
        assert_eq!(targets(&w), ["signal c"]);
        let w = o.wave(&l, Pending::default(), 10, |_, _| None);
        assert_eq!(targets(&w), ["signal d"]);
    }

    #[test]
    fn a_waiting_signal_holds_back_its_target_and_a_waiting_start_nothing() {
        let mut o = Outbox::default();
        o.push([start("a"), sig("a", 1), sig("b", 1)]);
        let w = o.wave(
            &limits(1, 10, 1_000_000),
            Pending {
                children: 1,
                ..Pending::default()
            },
            1,
            |w, _| Some(start(w)),
        );
        assert_eq!(targets(&w), ["signal a", "signal b"]);
        assert_eq!(o.len(), 1);
        // A start no longer wanted is dropped.
        o.retain_starts(|_, _| false);
        assert!(o.is_empty());
        // A waiting signal holds back what follows for the same target, not for others.
        let cancel = |w: &str| Effect::Cancel {
            workflow_id: w.into(),
        };
        o.push([sig("a", 1), cancel("a"), cancel("b")]);
        let busy = Pending {
            signals: 10,
            ..Pending::default()
        };
        let l = limits(1, 10, 1_000_000);
        assert_eq!(targets(&o.wave(&l, busy, 3, |_, _| None)), ["cancel b"]);
        let w = o.wave(&l, Pending::default(), 4, |_, _| None);
        assert_eq!(targets(&w), ["signal a", "cancel a"]);
    }

    #[test]
    fn a_large_update_splits_by_entity_and_each_part_keeps_its_stamps_and_fields() {
        let mut updates = serde_json::Map::new();
        let mut stamps = serde_json::Map::new();
        for i in 0..50 {
            updates.insert(format!("l{i}"), json!({"text": "x".repeat(100)}));
            stamps.insert(format!("l{i}"), json!({"text": [i, "w"]}));
        }
        let p = json!({"updates": {"Listing": updates, "User": {"u": {"n": 1}}},
                       "stamps": {"Listing": stamps, "User": {"u": {"n": [1, "w"]}}},
                       "changeOrigin": "w", "subscriptionId": "s"});
        let parts = split_payload(&p, "updates", 1_000);
        assert!(parts.len() > 5, "{} parts", parts.len());
        let mut seen = 0;
        for part in &parts {
            assert!(json_len(part) <= 1_000, "{}", json_len(part));
            assert_eq!(part["changeOrigin"], "w");
            assert_eq!(part["subscriptionId"], "s");
            for (e, g) in part["updates"].as_object().unwrap() {
                for id in g.as_object().unwrap().keys() {
                    assert_eq!(part["stamps"][e][id], p["stamps"][e][id]);
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 51);
        // Small enough: one part, the same payload.
        assert_eq!(split_payload(&p, "updates", 1_000_000), vec![p]);
    }

    #[test]
    fn json_len_is_the_serialized_length() {
        let v = json!({"a": [1, "two", null], "b": {"c": "é"}});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len() as u64);
    }
}
