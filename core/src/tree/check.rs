//! The outgoing-command check, a second line of defence: whether Temporal would accept the command an
//! [`Effect`] becomes. The core should never produce one it would refuse (input validation, the
//! planner, the outbox's splitting and limits keep to these rules); the glue checks every effect
//! once more as the last step before it issues the command, and drops one that fails (logged,
//! counted; a child start that fails is reported back as a failed start), because a refused
//! command fails the workflow task again and again (the workflow is wedged), and a payload over the
//! server's size limit fails the workflow.
//!
//! The rules keep to what the server refuses, and no more: a command that an earlier release issued
//! and the server accepted must still be issued on replay (dropping it would change the history).
//! So there is no rule about control characters or the like (Temporal accepts any UTF-8).
//!
//! - workflow id (child start, signal, cancellation request): not empty, at most
//!   [`MAX_WORKFLOW_ID_LEN`] bytes;
//! - signal name: not empty, at most [`MAX_SIGNAL_NAME_LEN`] bytes;
//! - workflow type (child start): not empty, at most [`MAX_WORKFLOW_TYPE_LEN`] bytes;
//! - task queue (child start, when set): at most [`MAX_TASK_QUEUE_LEN`] bytes (an empty one is
//!   accepted: the server starts the child on its parent's task queue);
//! - payload (a start's input, a signal's argument): at most `limits.max_payload_bytes`, as
//!   [`Limits::measure`] measures it.
//!
//! A verification ([`Effect::Verify`]) is no command (a local activity, whose failure comes back as
//! its answer): it always passes.

use serde_json::Value;

pub use stateful_engine::plan::MAX_WORKFLOW_ID_LEN;

use super::Effect;
use crate::limits::Limits;

/// The longest signal name sent. Temporal's command checker refuses only an empty one; its frontend
/// refuses a client's signal whose name is longer than `limit.maxIDLength` (1,000 by default). The
/// same bound here: no name a client could send is cut off, and a subscriber cannot make us send
/// names of any length.
pub const MAX_SIGNAL_NAME_LEN: usize = 1_000;

/// The longest workflow type name of a child start (Temporal: `limit.maxIDLength`, 1,000 by
/// default).
pub const MAX_WORKFLOW_TYPE_LEN: usize = 1_000;

/// The longest task queue name of a child start (Temporal: `limit.maxIDLength`, 1,000 by default).
pub const MAX_TASK_QUEUE_LEN: usize = 1_000;

/// How much of a name a reason quotes.
const QUOTE: usize = 100;

/// `what` is not empty and at most `max` bytes long.
fn name(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("its {what} is empty"));
    }
    if s.len() > max {
        return Err(format!(
            "its {what} `{}` is {} bytes long, more than the {max} taken",
            crate::audit::clip(s, QUOTE),
            s.len()
        ));
    }
    Ok(())
}

/// `v` fits in one payload.
fn payload(what: &str, v: &Value, limits: &Limits) -> Result<(), String> {
    let bytes = limits.measure(v);
    if bytes > limits.max_payload_bytes {
        return Err(format!(
            "its {what} takes {bytes} bytes, more than the {} bytes one payload may hold",
            limits.max_payload_bytes
        ));
    }
    Ok(())
}

impl Effect {
    /// Whether Temporal would accept the command this effect becomes (see the module
    /// documentation): `Err` says why not.
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        let (what, workflow_id) = match self {
            Effect::Start { workflow_id, .. } => ("child start", workflow_id),
            Effect::Signal { workflow_id, .. } => ("signal", workflow_id),
            Effect::Cancel { workflow_id } => ("cancellation request", workflow_id),
            // Not a command: a local activity, whose failure comes back as its answer.
            Effect::Verify { .. } => return Ok(()),
        };
        let target = crate::audit::clip(workflow_id, QUOTE);
        let result = (|| {
            name("workflow id", workflow_id, MAX_WORKFLOW_ID_LEN)?;
            match self {
                Effect::Start {
                    workflow_type,
                    task_queue,
                    input,
                    ..
                } => {
                    name("workflow type", workflow_type, MAX_WORKFLOW_TYPE_LEN)?;
                    if let Some(q) = task_queue.as_deref().filter(|q| !q.is_empty()) {
                        name("task queue", q, MAX_TASK_QUEUE_LEN)?;
                    }
                    payload("input", input, limits)
                }
                Effect::Signal {
                    name: signal,
                    payload: p,
                    ..
                } => {
                    name("signal name", signal, MAX_SIGNAL_NAME_LEN)?;
                    p.as_ref().map_or(Ok(()), |p| payload("payload", p, limits))
                }
                Effect::Cancel { .. } | Effect::Verify { .. } => Ok(()),
            }
        })();
        result.map_err(|e| format!("{what} to `{target}` not issued: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use stateful_engine::schema::{CancellationType, ParentClosePolicy};

    use super::*;

    fn start(wid: &str, workflow_type: &str, task_queue: Option<&str>, input: Value) -> Effect {
        Effect::Start {
            workflow_id: wid.into(),
            generation: 1,
            workflow_type: workflow_type.into(),
            task_queue: task_queue.map(str::to_string),
            input,
            parent_close: ParentClosePolicy::Abandon,
            cancel_type: CancellationType::TryCancel,
        }
    }

    fn signal(wid: &str, name: &str, payload: Option<Value>) -> Effect {
        Effect::Signal {
            workflow_id: wid.into(),
            name: name.into(),
            payload,
            child_generation: None,
        }
    }

    #[test]
    fn what_the_server_accepts_passes_and_what_it_refuses_says_why() {
        let l = Limits::default();
        let long = |n: usize| "x".repeat(n);
        for ok in [
            start("Listing-l", "StatefulWorkflow", None, json!({"id": "l"})),
            start(&long(MAX_WORKFLOW_ID_LEN), "W", Some("q"), json!(null)),
            // The server puts it on its parent's task queue.
            start("Listing-l", "W", Some(""), json!({})),
            signal("User-u", "update", Some(json!({"updates": {}}))),
            signal("User-u", &long(MAX_SIGNAL_NAME_LEN), None),
            signal("User-ü\u{1}", "pause", None),
            Effect::Cancel {
                workflow_id: "Listing-l".into(),
            },
        ] {
            assert_eq!(ok.check(&l), Ok(()), "{ok:?}");
        }
        let big = json!({"text": long(l.max_payload_bytes as usize)});
        for (bad, says) in [
            (start("", "W", None, json!({})), "workflow id is empty"),
            (
                start(&long(MAX_WORKFLOW_ID_LEN + 1), "W", None, json!({})),
                "1001 bytes long",
            ),
            (start("L-1", "", None, json!({})), "workflow type is empty"),
            (
                start("L-1", &long(MAX_WORKFLOW_TYPE_LEN + 1), None, json!({})),
                "workflow type",
            ),
            (
                start("L-1", "W", Some(&long(MAX_TASK_QUEUE_LEN + 1)), json!({})),
                "task queue",
            ),
            (start("L-1", "W", None, big.clone()), "input takes"),
            (signal("", "update", None), "workflow id is empty"),
            (signal("U-1", "", None), "signal name is empty"),
            (
                signal("U-1", &long(MAX_SIGNAL_NAME_LEN + 1), None),
                "signal name",
            ),
            (signal("U-1", "update", Some(big)), "payload takes"),
            (
                Effect::Cancel {
                    workflow_id: String::new(),
                },
                "cancellation request to `` not issued: its workflow id is empty",
            ),
        ] {
            let e = bad.check(&l).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.len() < 400, "the reason stays short: {e}");
        }
        // Compressed payloads are measured compressed.
        let c = Limits {
            compressed: true,
            ..Limits::default()
        };
        let repetitive = json!({"text": "words ".repeat(500_000)});
        assert!(
            signal("U-1", "update", Some(repetitive.clone()))
                .check(&c)
                .is_ok()
        );
        assert!(signal("U-1", "update", Some(repetitive)).check(&l).is_err());
    }
}
