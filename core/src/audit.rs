//! The audit trail: recent changes, rejected inputs, checkpoints and their totals, all carried over
//! continue-as-new and each bounded.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stateful_engine::{ChangeKind, ChangeSet};

/// How many rejected inputs the `rejected` query keeps.
pub const MAX_REJECTED: usize = 50;
/// Longest rejection reason kept (longer ones are cut, saying how long they were): a reason may
/// quote the input it refuses.
pub const MAX_REASON: usize = 500;
/// Longest entity reference or origin kept in a change record.
pub const MAX_NAME: usize = 200;

/// `s`, cut at `max` bytes (on a character boundary) with a note of its length.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}
/// How many change records the `recentChanges` query keeps.
pub const MAX_RECENT: usize = 50;
/// How many checkpoints the `checkpoints` query keeps.
pub const MAX_CHECKPOINTS: usize = 20;

/// A rejected input, as the `rejected` query shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Signal or update name.
    pub signal: String,
    /// Why it was rejected.
    pub reason: String,
    /// Workflow time (ms since the epoch).
    pub time: u64,
    /// State version when it was rejected.
    pub version: u64,
}

/// One applied batch, as the `recentChanges` query shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// State version after the batch.
    pub version: u64,
    /// Workflow time (ms since the epoch).
    pub time: u64,
    /// Where the changes came from.
    pub sources: Vec<String>,
    /// Entities added.
    pub added: usize,
    /// Entities updated.
    pub updated: usize,
    /// Entities deleted.
    pub deleted: usize,
    /// The first changed entities (`Entity.id`).
    pub entities: Vec<String>,
}

/// A checkpoint: a run handed its state over to the next one (continue-as-new).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The run that handed over.
    pub run_id: String,
    /// Workflow time (ms since the epoch).
    pub time: u64,
    /// State version handed over.
    pub version: u64,
    /// Checksum of the canonical state handed over.
    pub checksum: String,
    /// `checkpoint` (the signal) or `history` (the history grew past its limit, or the server asked).
    pub reason: String,
}

/// The audit trail of one workflow.
#[derive(Debug, Default)]
pub struct Audit {
    rejected: VecDeque<Rejection>,
    rejected_total: u64,
    recent: VecDeque<ChangeRecord>,
    changes_total: u64,
    /// Runs before this one (continue-as-new count).
    runs: u64,
    checkpoints: VecDeque<Checkpoint>,
    checkpoint_requested: bool,
}

/// What a run hands the next one of its audit trail (fields of the carry-over).
#[derive(Debug, Clone, Default)]
pub struct AuditCarry {
    /// Recent rejected inputs.
    pub rejected: Vec<Rejection>,
    /// Rejected inputs ever.
    pub rejected_total: u64,
    /// Recent change records.
    pub recent: Vec<ChangeRecord>,
    /// Applied batches ever.
    pub changes_total: u64,
    /// Runs before the next one.
    pub runs: u64,
    /// Recent checkpoints.
    pub checkpoints: Vec<Checkpoint>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, x: T, max: usize) {
    q.push_back(x);
    while q.len() > max {
        q.pop_front();
    }
}

impl Audit {
    /// The trail carried from a previous run (this run counts one more).
    pub fn carried(c: AuditCarry) -> Audit {
        Audit {
            rejected: c.rejected.into(),
            rejected_total: c.rejected_total,
            recent: c.recent.into(),
            changes_total: c.changes_total,
            runs: c.runs + 1,
            checkpoints: c.checkpoints.into(),
            checkpoint_requested: false,
        }
    }

    /// What the next run inherits.
    pub fn carry(&self) -> AuditCarry {
        AuditCarry {
            rejected: self.rejected.iter().cloned().collect(),
            rejected_total: self.rejected_total,
            recent: self.recent.iter().cloned().collect(),
            changes_total: self.changes_total,
            runs: self.runs,
            checkpoints: self.checkpoints.iter().cloned().collect(),
        }
    }

    /// What the next run inherits, its lists of rejections and of recent changes cut to their
    /// newest records that take at most `budget` bytes each (so that, with a small payload limit,
    /// the trail does not crowd the state out of the next run's input).
    pub fn carry_within(&self, budget: u64) -> AuditCarry {
        fn newest<T: Serialize + Clone>(q: &VecDeque<T>, budget: u64) -> Vec<T> {
            let mut used = 0;
            let mut kept: Vec<T> = q
                .iter()
                .rev()
                .take_while(|x| {
                    used += crate::load::json_len(*x) as u64 + 1;
                    used <= budget
                })
                .cloned()
                .collect();
            kept.reverse();
            kept
        }
        AuditCarry {
            rejected: newest(&self.rejected, budget),
            recent: newest(&self.recent, budget),
            ..self.carry()
        }
    }

    /// Records a rejected input.
    pub fn reject(&mut self, mut r: Rejection) {
        self.rejected_total += 1;
        r.reason = clip(&r.reason, MAX_REASON);
        push_bounded(&mut self.rejected, r, MAX_REJECTED);
    }

    /// Records an applied batch (nothing when it changed nothing).
    pub fn record(&mut self, cs: &ChangeSet, version: u64, now: u64) {
        if cs.is_empty() {
            return;
        }
        self.changes_total += 1;
        let count = |k: ChangeKind| cs.entities.values().filter(|c| c.kind == k).count();
        let rec = ChangeRecord {
            version,
            time: now,
            sources: cs
                .sources()
                .iter()
                .take(10)
                .map(|s| clip(s, MAX_NAME))
                .collect(),
            added: count(ChangeKind::Added),
            updated: count(ChangeKind::Updated),
            deleted: count(ChangeKind::Deleted),
            entities: cs
                .entities
                .keys()
                .take(10)
                .map(|r| clip(&r.to_string(), MAX_NAME))
                .collect(),
        };
        push_bounded(&mut self.recent, rec, MAX_RECENT);
    }

    /// The last applied batch, if this workflow (or a run before it) applied one.
    pub fn last_change(&self) -> Option<&ChangeRecord> {
        self.recent.back()
    }

    /// Asks for a checkpoint (the `checkpoint` signal).
    pub fn request_checkpoint(&mut self) {
        self.checkpoint_requested = true;
    }

    /// True when a `checkpoint` signal asked for a new run.
    pub fn checkpoint_requested(&self) -> bool {
        self.checkpoint_requested
    }

    /// Records this run's hand-over.
    pub fn checkpoint(
        &mut self,
        run_id: &str,
        now: u64,
        version: u64,
        checksum: String,
        children_wait: bool,
        history_large: bool,
    ) -> Checkpoint {
        let reason = if std::mem::take(&mut self.checkpoint_requested) {
            "checkpoint"
        } else if children_wait {
            // The run had started as many children as it may: the next one starts the rest.
            "children"
        } else if history_large {
            "historySize"
        } else {
            "history"
        };
        let cp = Checkpoint {
            run_id: run_id.to_string(),
            time: now,
            version,
            checksum,
            reason: reason.into(),
        };
        push_bounded(&mut self.checkpoints, cp.clone(), MAX_CHECKPOINTS);
        cp
    }

    /// The last checkpoint (the hand-over to this run, or this run's own).
    pub fn last_checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoints.back()
    }

    /// Recent checkpoints.
    pub fn checkpoints(&self) -> impl Iterator<Item = &Checkpoint> {
        self.checkpoints.iter()
    }

    /// Rejected inputs ever.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_total
    }

    /// Applied batches ever.
    pub fn changes_total(&self) -> u64 {
        self.changes_total
    }

    /// Runs before this one.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// The `rejected` query.
    pub fn rejected_info(&self) -> Value {
        json!({"total": self.rejected_total, "recent": self.rejected})
    }

    /// The `recentChanges` query.
    pub fn recent_info(&self) -> Value {
        serde_json::to_value(&self.recent).unwrap_or(Value::Null)
    }

    /// The `checkpoints` query.
    pub fn checkpoints_info(&self) -> Value {
        serde_json::to_value(&self.checkpoints).unwrap_or(Value::Null)
    }

    /// The `audit` query.
    pub fn info(&self) -> Value {
        json!({
            "changes": self.recent,
            "changesTotal": self.changes_total,
            "rejected": self.rejected,
            "rejectedTotal": self.rejected_total,
            "checkpoints": self.checkpoints,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carried_trail_keeps_its_newest_records_within_a_budget() {
        let mut a = Audit::default();
        for i in 0..MAX_REJECTED as u64 {
            a.reject(Rejection {
                signal: "update".into(),
                reason: format!("{i} {}", "x".repeat(1_000)),
                time: i,
                version: 0,
            });
        }
        assert_eq!(a.carry_within(u64::MAX).rejected.len(), MAX_REJECTED);
        let kept = a.carry_within(2_000).rejected;
        assert_eq!(kept.len(), 3, "three reasons of some 540 bytes each");
        assert_eq!(
            kept.iter().map(|r| r.time).collect::<Vec<_>>(),
            [47, 48, 49],
            "the newest, in order"
        );
        assert!(a.carry_within(10).rejected.is_empty());
        assert_eq!(a.carry_within(10).rejected_total, MAX_REJECTED as u64);
    }
}
