//! Process-wide counters of what StatefulWorkflows did, counted by the glue when a task runs for the
//! first time (never during replay), and exported by the worker as Prometheus counters
//! (`stateful_changes_applied`, `stateful_entities_changed`, `stateful_rejected_inputs`,
//! `stateful_children_started`, `stateful_children_restarted`, `stateful_children_cancelled`,
//! `stateful_signals_sent`, `stateful_loads{outcome}`, `stateful_checkpoints`,
//! `stateful_commands_not_issued`, `stateful_hooks_delivered`, `stateful_hooks_refused`), each labelled with the worker's `namespace` and `task_queue`
//! (one pair per process: a worker runs its workflows from one queue of one namespace). Counting
//! has no effect on what a workflow does, so it cannot break determinism.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter.
pub struct Count(AtomicU64);

impl Count {
    const fn new() -> Count {
        Count(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The total so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Batches that changed the state.
pub static CHANGES_APPLIED: Count = Count::new();
/// Entities added, updated or deleted.
pub static ENTITIES_CHANGED: Count = Count::new();
/// Inputs rejected (bad payloads, refused changes, unusable API answers).
pub static REJECTED_INPUTS: Count = Count::new();
/// Child workflows started (first start).
pub static CHILDREN_STARTED: Count = Count::new();
/// Child workflows restarted (ended from outside, started again).
pub static CHILDREN_RESTARTED: Count = Count::new();
/// Child workflows cancelled.
pub static CHILDREN_CANCELLED: Count = Count::new();
/// Signals sent to other workflows.
pub static SIGNALS_SENT: Count = Count::new();
/// Checkpoints (continue-as-new).
pub static CHECKPOINTS: Count = Count::new();
/// Commands not issued because Temporal would refuse them (see `Effect::check`): the core should
/// never produce one, so any count is a bug to look into.
pub static COMMANDS_NOT_ISSUED: Count = Count::new();
/// Hook deliveries answered 2xx.
pub static HOOKS_DELIVERED: Count = Count::new();
/// Hook deliveries refused (non-2xx, or the activity failed after its retries).
pub static HOOKS_REFUSED: Count = Count::new();
/// Loads by outcome: ok, notFound, unauthorized, circuitOpen, failed.
pub static LOADS: [(&str, Count); 5] = [
    ("ok", Count::new()),
    ("notFound", Count::new()),
    ("unauthorized", Count::new()),
    ("circuitOpen", Count::new()),
    ("failed", Count::new()),
];

/// Counts a finished load by outcome.
pub fn load(outcome: &str) {
    let o = match outcome {
        "ok" | "notFound" | "unauthorized" | "circuitOpen" => outcome,
        _ => "failed",
    };
    if let Some((_, c)) = LOADS.iter().find(|(k, _)| *k == o) {
        c.add(1);
    }
}

/// Every plain counter, with its metric name and description.
pub fn all() -> [(&'static str, &'static str, &'static Count); 11] {
    [
        (
            "stateful_changes_applied",
            "Batches that changed a workflow's state",
            &CHANGES_APPLIED,
        ),
        (
            "stateful_entities_changed",
            "Entities added, updated or deleted",
            &ENTITIES_CHANGED,
        ),
        (
            "stateful_rejected_inputs",
            "Rejected inputs",
            &REJECTED_INPUTS,
        ),
        (
            "stateful_children_started",
            "Child workflows started",
            &CHILDREN_STARTED,
        ),
        (
            "stateful_children_restarted",
            "Child workflows restarted",
            &CHILDREN_RESTARTED,
        ),
        (
            "stateful_children_cancelled",
            "Child workflows cancelled",
            &CHILDREN_CANCELLED,
        ),
        (
            "stateful_signals_sent",
            "Signals sent to other workflows",
            &SIGNALS_SENT,
        ),
        (
            "stateful_checkpoints",
            "Checkpoints (continue-as-new)",
            &CHECKPOINTS,
        ),
        (
            "stateful_commands_not_issued",
            "Commands not issued because Temporal would refuse them",
            &COMMANDS_NOT_ISSUED,
        ),
        (
            "stateful_hooks_delivered",
            "Outbound hook deliveries answered 2xx",
            &HOOKS_DELIVERED,
        ),
        (
            "stateful_hooks_refused",
            "Outbound hook deliveries refused (recorded by the workflow's hooks query)",
            &HOOKS_REFUSED,
        ),
    ]
}
