//! Ordering of control messages. Temporal does not order signals between workflows (a retried
//! transfer can arrive after a newer one), so everything a message sets, not only fields, carries a
//! stamp (the same hybrid clock as field writes): the token, the URL, the status (`pause`, `resume`,
//! `status`) and each subscription. A workflow keeps, for each thing it sets, the stamp of the message
//! that set it last, and ignores an older one. An unstamped message (a client, chrono-forge) is
//! stamped on arrival.
//!
//! Our stamped payloads (plain payloads are still accepted):
//! - `apiToken`: `{"token": "...", "stamp": [time, origin]}`
//! - `apiUrl`: `{"url": "...", "stamp": [...]}`
//! - `status`: `{"status": "paused", "stamp": [...]}`
//! - `pause`, `resume`: `{"stamp": [...]}` (chrono-forge ignores their argument)
//! - `subscribe`: the subscription object with a `stamp` field; `unsubscribe`:
//!   `{workflowId, subscriptionId, stamp}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stateful_engine::Stamp;

/// How many removed subscriptions are remembered (so that an older `subscribe` arriving after their
/// `unsubscribe` does not bring them back); the oldest are forgotten first.
pub const MAX_UNSUBSCRIBED: usize = 2_000;

/// The most bytes (ids and origins) the removed subscriptions remembered may take, so that they
/// never crowd the state out of the next run's input; the oldest are forgotten first.
pub const MAX_UNSUBSCRIBED_BYTES: usize = 100_000;

/// How far past the receiver's time a stamp from a message may be (ms). A later one is clamped to
/// it: a message (a client's, or a forged one) cannot set something so far in the future that every
/// later message about it is ignored. Workflows of one cluster share the server's clock; their hybrid
/// clocks run ahead of it only by the stamps they made in a burst (1 ms each).
pub const MAX_SKEW_MS: u64 = 60_000;

/// The longest origin a stamp may name (a workflow id: Temporal's limit is 1,000 bytes).
pub const MAX_ORIGIN_LEN: usize = 1_000;

/// A stamp from a message, as this workflow takes it at workflow time `now`: its time clamped to
/// `now` + [`MAX_SKEW_MS`]; refused when its origin is longer than [`MAX_ORIGIN_LEN`].
pub fn admit(s: Stamp, now: u64) -> Result<Stamp, String> {
    if s.origin.len() > MAX_ORIGIN_LEN {
        return Err(format!(
            "a stamp's origin takes {} bytes, more than the {MAX_ORIGIN_LEN} a workflow id may",
            s.origin.len()
        ));
    }
    let max = now.saturating_add(MAX_SKEW_MS);
    if s.time > max {
        return Ok(Stamp {
            time: max,
            origin: s.origin,
        });
    }
    Ok(s)
}

/// The stamp in a payload object (`{"stamp": [time, origin]}`), if any, admitted at `now` (see
/// [`admit`]); an error says what is wrong.
pub fn stamp_in(v: &Value, now: u64) -> Result<Option<Stamp>, String> {
    stamp_in_key(v, "stamp", now)
}

/// The stamp under `key` in a payload object, if any, admitted at `now` (see [`admit`]).
pub fn stamp_in_key(v: &Value, key: &str, now: u64) -> Result<Option<Stamp>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(s) => serde_json::from_value(s.clone())
            .map_err(|_| {
                format!(
                    "`{key}` must be [time, origin], found {}",
                    crate::audit::clip(&s.to_string(), 100)
                )
            })
            .and_then(|s| admit(s, now))
            .map(Some),
    }
}

/// The stamp of the last message that set one thing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Latest(Option<Stamp>);

impl Latest {
    /// Starting at `stamp` (none: older than any message).
    pub fn new(stamp: Option<Stamp>) -> Latest {
        Latest(stamp)
    }

    /// Takes a message stamped `s`: true (and `s` is now the latest) when it is newer than every
    /// message taken so far; false when it is older or the same (the caller ignores it).
    pub fn accept(&mut self, s: &Stamp) -> bool {
        if self.0.as_ref().is_some_and(|held| held >= s) {
            return false;
        }
        self.0 = Some(s.clone());
        true
    }

    /// The latest stamp.
    pub fn get(&self) -> Option<&Stamp> {
        self.0.as_ref()
    }

    /// True when no message set it.
    pub fn is_unset(&self) -> bool {
        self.0.is_none()
    }

    /// True when a message stamped `s` would be taken (see [`Latest::accept`]), without taking it.
    pub fn would_accept(&self, s: &Stamp) -> bool {
        self.0.as_ref().is_none_or(|held| held < s)
    }
}

/// The latest stamp of each subscription `(workflowId, subscriptionId)`, and whether that message
/// added or removed it. Bounded: removed ones beyond [`MAX_UNSUBSCRIBED`] are forgotten, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionOrder {
    latest: BTreeMap<String, (Stamp, bool)>,
}

fn key(workflow_id: &str, subscription_id: &str) -> String {
    format!("{workflow_id}\u{1f}{subscription_id}")
}

impl SubscriptionOrder {
    /// Takes a `subscribe` (`alive`) or `unsubscribe` stamped `s`: false when an equal or newer
    /// message about the same subscription was taken already.
    pub fn accept(
        &mut self,
        workflow_id: &str,
        subscription_id: &str,
        s: &Stamp,
        alive: bool,
    ) -> bool {
        let k = key(workflow_id, subscription_id);
        if self.latest.get(&k).is_some_and(|(held, _)| held >= s) {
            return false;
        }
        self.latest.insert(k, (s.clone(), alive));
        self.forget_oldest_removed();
        true
    }

    fn forget_oldest_removed(&mut self) {
        let (mut removed, mut bytes) = (0, 0);
        for (k, (s, alive)) in &self.latest {
            if !alive {
                removed += 1;
                bytes += k.len() + s.origin.len();
            }
        }
        if removed <= MAX_UNSUBSCRIBED && bytes <= MAX_UNSUBSCRIBED_BYTES {
            return;
        }
        let mut dead: Vec<(Stamp, String)> = self
            .latest
            .iter()
            .filter(|(_, (_, alive))| !alive)
            .map(|(k, (s, _))| (s.clone(), k.clone()))
            .collect();
        dead.sort();
        for (s, k) in dead {
            if removed <= MAX_UNSUBSCRIBED && bytes <= MAX_UNSUBSCRIBED_BYTES {
                break;
            }
            removed -= 1;
            bytes -= k.len() + s.origin.len();
            self.latest.remove(&k);
        }
    }

    /// How many subscriptions are remembered.
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

/// What a run hands the next one of its ordering (part of the carry-over).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCarry {
    /// The token's.
    #[serde(default)]
    pub token: Latest,
    /// The status's (`pause`, `resume`, `status`).
    #[serde(default)]
    pub status: Latest,
    /// The URL's.
    #[serde(default)]
    pub url: Latest,
    /// Each subscription's.
    #[serde(default)]
    pub subscriptions: SubscriptionOrder,
    /// The schema's (a `schema` message; none while the workflow runs the schema it started with).
    #[serde(default, skip_serializing_if = "Latest::is_unset")]
    pub schema: Latest,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_older_or_equal_message_is_refused() {
        let mut l = Latest::default();
        assert!(l.accept(&Stamp::new(5, "a")));
        assert!(!l.accept(&Stamp::new(4, "z")));
        assert!(!l.accept(&Stamp::new(5, "a")), "the same message twice");
        assert!(l.accept(&Stamp::new(5, "b")), "ties break on the origin");
        assert_eq!(
            stamp_in(&json!({"stamp": [7, "x"]}), 0).unwrap(),
            Some(Stamp::new(7, "x"))
        );
        assert!(stamp_in(&json!({"stamp": "soon"}), 0).is_err());
        assert_eq!(stamp_in(&json!("plain"), 0).unwrap(), None);
    }

    #[test]
    fn a_stamp_from_the_future_is_clamped_and_a_long_origin_refused() {
        let now = 1_000_000;
        let far = stamp_in(&json!({"stamp": [u64::MAX, "x"]}), now).unwrap();
        assert_eq!(far, Some(Stamp::new(now + MAX_SKEW_MS, "x")));
        let near = stamp_in(&json!({"stamp": [now + 5, "x"]}), now).unwrap();
        assert_eq!(
            near,
            Some(Stamp::new(now + 5, "x")),
            "within the skew: kept"
        );
        let long = "o".repeat(MAX_ORIGIN_LEN + 1);
        assert!(stamp_in(&json!({"stamp": [1, long]}), now).is_err());
        // Even at the end of time, no overflow.
        assert_eq!(
            admit(Stamp::new(u64::MAX, "x"), u64::MAX).unwrap().time,
            u64::MAX
        );
    }

    #[test]
    fn an_old_subscribe_does_not_undo_a_newer_unsubscribe_and_removed_ones_are_bounded() {
        let mut o = SubscriptionOrder::default();
        assert!(o.accept("P", "s", &Stamp::new(9, "P"), false));
        assert!(!o.accept("P", "s", &Stamp::new(3, "P"), true));
        for i in 0..(MAX_UNSUBSCRIBED as u64 + 10) {
            o.accept("Q", &format!("s{i}"), &Stamp::new(10 + i, "Q"), false);
        }
        assert_eq!(o.len(), MAX_UNSUBSCRIBED);
        assert!(
            o.accept("Q", "s0", &Stamp::new(1, "Q"), true),
            "the oldest removed ones are forgotten"
        );
    }
}
