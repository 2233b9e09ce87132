//! The limits a workflow keeps under: how much it has outstanding at once (Temporal refuses a
//! workflow task that would leave more than 2,000 pending child workflows, signals or cancellation
//! requests per run, by default), how many bytes one workflow task sends (a task's completion is one
//! gRPC message, 4 MB at most), and how large one payload may be (2 MB by default).
//!
//! The defaults sit well under Temporal's defaults. A cluster with other limits sets `limits` in the
//! start input (`starter start --limits JSON`); the limits are recorded in the input, carried over
//! continue-as-new and handed down to children, so that a workflow replays with the limits it ran
//! with.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Child workflows one run may have started and not seen end (Temporal: 2,000 per run).
pub const DEFAULT_MAX_CHILDREN_PER_RUN: u32 = 1_000;
/// Signals sent and not yet acknowledged by the server (Temporal: 2,000).
pub const DEFAULT_MAX_PENDING_SIGNALS: u32 = 1_000;
/// Cancellation requests sent and not yet acknowledged (Temporal: 2,000).
pub const DEFAULT_MAX_PENDING_CANCELS: u32 = 1_000;
/// Bytes of payloads issued in one workflow task (its completion must stay under 4 MB).
pub const DEFAULT_MAX_TASK_BYTES: u64 = 2_500_000;
/// Largest payload the workflow produces (Temporal refuses payloads over 2 MiB by default).
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 2_000_000;

/// The limits of one workflow (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Children one run may have started and not seen end; past it, the run continues as new and
    /// the next run starts the rest.
    pub max_children_per_run: u32,
    /// Signals in flight at once.
    pub max_pending_signals: u32,
    /// Cancellation requests in flight at once.
    pub max_pending_cancels: u32,
    /// Bytes of payloads issued in one workflow task.
    pub max_task_bytes: u64,
    /// Largest payload: a child's start input, a signal, the continue-as-new input, an answer.
    pub max_payload_bytes: u64,
    /// Payloads are compressed by the payload codec (zstd): sizes are measured compressed. Set
    /// from the worker's `--compress` when a tree's root starts, then recorded and handed down.
    #[serde(default, skip_serializing_if = "is_false")]
    pub compressed: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The zstd level the payload codec compresses with (sizes are measured the same way).
pub const ZSTD_LEVEL: i32 = 3;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_children_per_run: DEFAULT_MAX_CHILDREN_PER_RUN,
            max_pending_signals: DEFAULT_MAX_PENDING_SIGNALS,
            max_pending_cancels: DEFAULT_MAX_PENDING_CANCELS,
            max_task_bytes: DEFAULT_MAX_TASK_BYTES,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            compressed: false,
        }
    }
}

/// `(name, lowest, highest)` of each limit.
const RANGES: [(&str, u64, u64); 5] = [
    ("maxChildrenPerRun", 1, 1_900),
    ("maxPendingSignals", 1, 1_900),
    ("maxPendingCancels", 1, 1_900),
    ("maxTaskBytes", 10_000, 3_500_000),
    ("maxPayloadBytes", 10_000, 2_000_000),
];

impl Limits {
    /// The `limits` field of the inputs this workflow writes: the limits that differ from the
    /// defaults, and always whether payloads are compressed (so that it is recorded).
    pub fn to_input(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let d = serde_json::to_value(Limits::default()).unwrap_or_default();
        if let (Value::Object(m), Value::Object(d)) = (&mut v, d) {
            m.retain(|k, x| d.get(k) != Some(x));
        }
        v["compressed"] = Value::Bool(self.compressed);
        v
    }

    /// Parses the `limits` field of a start input: an object whose fields are all optional
    /// (defaults otherwise), each a whole number within its range.
    pub fn parse(v: Option<&Value>) -> Result<Limits, String> {
        let m = match v {
            None | Some(Value::Null) => return Ok(Limits::default()),
            Some(Value::Object(m)) => m,
            Some(_) => return Err("`limits` must be an object".into()),
        };
        if let Some(k) = m
            .keys()
            .find(|k| *k != "compressed" && !RANGES.iter().any(|(n, ..)| n == k))
        {
            return Err(format!(
                "`limits.{k}` is not a limit; known: {}",
                RANGES.map(|r| r.0).join(", ")
            ));
        }
        let mut l = Limits::default();
        let get = |m: &Map<String, Value>, i: usize, default: u64| -> Result<u64, String> {
            let (name, lo, hi) = RANGES[i];
            match m.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_u64().filter(|n| (lo..=hi).contains(n)).ok_or_else(|| {
                    format!("`limits.{name}` must be a whole number from {lo} to {hi}")
                }),
            }
        };
        l.max_children_per_run = get(m, 0, l.max_children_per_run.into())? as u32;
        l.max_pending_signals = get(m, 1, l.max_pending_signals.into())? as u32;
        l.max_pending_cancels = get(m, 2, l.max_pending_cancels.into())? as u32;
        l.max_task_bytes = get(m, 3, l.max_task_bytes)?;
        l.max_payload_bytes = get(m, 4, l.max_payload_bytes)?;
        l.compressed = match m.get("compressed") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("`limits.compressed` must be true or false".into()),
        };
        Ok(l)
    }

    /// The size `v` takes as a payload: its JSON length, or, when payloads are compressed and it is
    /// larger than a payload may be, its compressed length (deterministic: the same bytes compress
    /// to the same length).
    pub fn measure(&self, v: &Value) -> u64 {
        let plain = crate::outbox::json_len(v);
        if !self.compressed || plain <= self.max_payload_bytes {
            return plain;
        }
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        zstd::bulk::compress(&bytes, ZSTD_LEVEL).map_or(plain, |c| c.len() as u64)
    }

    /// The size `v` adds to a payload it is part of: its compressed length when payloads are
    /// compressed (parts compress about as well as the whole), its JSON length otherwise.
    pub fn measure_part(&self, v: &Value) -> u64 {
        if !self.compressed {
            return crate::outbox::json_len(v);
        }
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        zstd::bulk::compress(&bytes, ZSTD_LEVEL).map_or(bytes.len() as u64, |c| c.len() as u64)
    }

    /// What the state (the whole next-run input) may take when a change is admitted: nine tenths
    /// of a payload. The last tenth is kept for what grows without a change (children's records
    /// as they start and end, the audit trail, what resolves as a run hands over).
    pub fn state_budget(&self) -> u64 {
        self.max_payload_bytes - self.max_payload_bytes / 10
    }

    /// True when `v` fits in one payload.
    pub fn fits(&self, v: &Value) -> bool {
        self.measure(v) <= self.max_payload_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_defaults_overrides_and_refuses_what_is_out_of_range() {
        assert_eq!(Limits::parse(None).unwrap(), Limits::default());
        let l = Limits::parse(Some(&json!({"maxChildrenPerRun": 10}))).unwrap();
        assert_eq!(l.max_children_per_run, 10);
        assert_eq!(l.max_pending_signals, DEFAULT_MAX_PENDING_SIGNALS);
        // What it writes, it reads.
        let back = Limits::parse(Some(&l.to_input())).unwrap();
        assert_eq!(back, l);
        assert_eq!(
            l.to_input(),
            json!({"maxChildrenPerRun": 10, "compressed": false})
        );
        let c = Limits::parse(Some(&json!({"compressed": true}))).unwrap();
        assert!(c.compressed);
        // Repetitive JSON over the limit fits once compressed; the plain measure does not.
        let big = json!({"text": "words and more words ".repeat(200_000)});
        assert!(!Limits::default().fits(&big));
        assert!(c.fits(&big));
        assert!(c.measure(&big) < 100_000);
        for (v, says) in [
            (json!({"compressed": "yes"}), "true or false"),
            (json!(3), "must be an object"),
            (json!({"maxChildrenPerRun": 0}), "from 1 to 1900"),
            (json!({"maxChildrenPerRun": 5000}), "from 1 to 1900"),
            (json!({"maxPayloadBytes": "big"}), "maxPayloadBytes"),
            (json!({"maxKids": 3}), "not a limit"),
        ] {
            let e = Limits::parse(Some(&v)).unwrap_err();
            assert!(e.contains(says), "{v}: {e}");
        }
    }
}
