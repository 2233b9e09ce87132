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

/// The stamp in a payload object (`{"stamp": [time, origin]}`), if any; an error says what is wrong.
pub fn stamp_in(v: &Value) -> Result<Option<Stamp>, String> {
    stamp_in_key(v, "stamp")
}

/// The stamp under `key` in a payload object, if any.
pub fn stamp_in_key(v: &Value, key: &str) -> Result<Option<Stamp>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(s) => serde_json::from_value(s.clone())
            .map(Some)
            .map_err(|_| format!("`{key}` must be [time, origin], found {s}")),
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
        let removed = self.latest.values().filter(|(_, alive)| !alive).count();
        if removed <= MAX_UNSUBSCRIBED {
            return;
        }
        let mut dead: Vec<(Stamp, String)> = self
            .latest
            .iter()
            .filter(|(_, (_, alive))| !alive)
            .map(|(k, (s, _))| (s.clone(), k.clone()))
            .collect();
        dead.sort();
        for (_, k) in dead.into_iter().take(removed - MAX_UNSUBSCRIBED) {
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
            stamp_in(&json!({"stamp": [7, "x"]})).unwrap(),
            Some(Stamp::new(7, "x"))
        );
        assert!(stamp_in(&json!({"stamp": "soon"})).is_err());
        assert_eq!(stamp_in(&json!("plain")).unwrap(), None);
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
