//! The typed inbox's messages: a wire message (a signal or an acknowledged update, with its decoded
//! payload and update ticket), or an event from the glue (a finished load, a child event, the refresh
//! timer, a Temporal cancellation request). Messages cross continue-as-new in the carry-over, in the
//! shape earlier releases recorded (`{kind, payload, ticket}`), so runs of either release read them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::load::Loaded;
use crate::tree::ChildEvent;

/// The signals (and acknowledged updates) a workflow takes, by wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `update`
    Update,
    /// `delete`
    Delete,
    /// `state`
    State,
    /// `apiToken`
    ApiToken,
    /// `apiUrl`
    ApiUrl,
    /// `refresh`: load from the API now.
    Refresh,
    /// `checkpoint`: continue as new now, recording the state's checksum.
    Checkpoint,
    /// `pause`
    Pause,
    /// `resume`
    Resume,
    /// `cancel`
    Cancel,
    /// `status` (chrono-forge's property signal)
    Status,
    /// `subscribe`: a subscription object.
    Subscribe,
    /// `unsubscribe`: `{workflowId, subscriptionId}`.
    Unsubscribe,
    /// `childEnded`: a child (or any publisher) reports that it ended.
    ChildEnded,
    /// `schema`: a new schema (the schema file's format, as JSON), or ours `{schema, stamp,
    /// version}` from a parent.
    Schema,
}

impl Signal {
    /// Every signal.
    pub const ALL: [Signal; 15] = [
        Signal::Update,
        Signal::Delete,
        Signal::State,
        Signal::ApiToken,
        Signal::ApiUrl,
        Signal::Refresh,
        Signal::Checkpoint,
        Signal::Pause,
        Signal::Resume,
        Signal::Cancel,
        Signal::Status,
        Signal::Subscribe,
        Signal::Unsubscribe,
        Signal::ChildEnded,
        Signal::Schema,
    ];

    /// The signal name.
    pub fn name(self) -> &'static str {
        Kind::from(self).name()
    }

    /// The signal of a name.
    pub fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A received message, waiting for the next batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Recorded", into = "Recorded")]
pub enum Msg {
    /// A signal or an acknowledged update.
    Wire {
        /// Which one.
        signal: Signal,
        /// Its decoded JSON, or why it could not be decoded.
        payload: Result<Value, String>,
        /// For acknowledged updates: the ticket under which the result is kept for the caller.
        ticket: Option<u64>,
    },
    /// A `loadData` activity finished.
    Loaded(Loaded),
    /// Something happened to a child.
    Child(ChildEvent),
    /// The periodic refresh timer fired.
    RefreshTimer,
    /// Temporal asked this workflow to cancel.
    TemporalCancel,
}

impl Msg {
    /// A signal's message (no ticket).
    pub fn signal(signal: Signal, payload: Result<Value, String>) -> Msg {
        Msg::Wire {
            signal,
            payload,
            ticket: None,
        }
    }

    /// The name rejections and the `pendingChanges` query show.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The update ticket, if any.
    pub fn ticket(&self) -> Option<u64> {
        match self {
            Msg::Wire { ticket, .. } => *ticket,
            _ => None,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Msg::Wire { signal, .. } => Kind::from(*signal),
            Msg::Loaded(_) => Kind::Loaded,
            Msg::Child(_) => Kind::ChildEvent,
            Msg::RefreshTimer => Kind::RefreshTimer,
            Msg::TemporalCancel => Kind::TemporalCancel,
        }
    }
}

/// Every message kind, as recorded in carry-overs (`kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Kind {
    Update,
    Delete,
    State,
    ApiToken,
    ApiUrl,
    Refresh,
    Checkpoint,
    RefreshTimer,
    Loaded,
    Pause,
    Resume,
    Cancel,
    Status,
    Subscribe,
    Unsubscribe,
    ChildEnded,
    ChildEvent,
    TemporalCancel,
    Schema,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::State => "state",
            Kind::ApiToken => "apiToken",
            Kind::ApiUrl => "apiUrl",
            Kind::Refresh => "refresh",
            Kind::Checkpoint => "checkpoint",
            Kind::RefreshTimer => "refreshInterval",
            Kind::Loaded => "loadData",
            Kind::Pause => "pause",
            Kind::Resume => "resume",
            Kind::Cancel => "cancel",
            Kind::Status => "status",
            Kind::Subscribe => "subscribe",
            Kind::Unsubscribe => "unsubscribe",
            Kind::ChildEnded => "childEnded",
            Kind::ChildEvent => "childEvent",
            Kind::TemporalCancel => "cancellation",
            Kind::Schema => "schema",
        }
    }

    /// The signal of this kind, for wire messages (the inverse of `From<Signal>`).
    fn signal(self) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| Kind::from(*s) == self)
    }
}

impl From<Signal> for Kind {
    fn from(s: Signal) -> Kind {
        match s {
            Signal::Update => Kind::Update,
            Signal::Delete => Kind::Delete,
            Signal::State => Kind::State,
            Signal::ApiToken => Kind::ApiToken,
            Signal::ApiUrl => Kind::ApiUrl,
            Signal::Refresh => Kind::Refresh,
            Signal::Checkpoint => Kind::Checkpoint,
            Signal::Pause => Kind::Pause,
            Signal::Resume => Kind::Resume,
            Signal::Cancel => Kind::Cancel,
            Signal::Status => Kind::Status,
            Signal::Subscribe => Kind::Subscribe,
            Signal::Unsubscribe => Kind::Unsubscribe,
            Signal::ChildEnded => Kind::ChildEnded,
            Signal::Schema => Kind::Schema,
        }
    }
}

/// The recorded shape of a message.
#[derive(Serialize, Deserialize)]
struct Recorded {
    kind: Kind,
    payload: Result<Value, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ticket: Option<u64>,
}

impl TryFrom<Recorded> for Msg {
    type Error = String;

    fn try_from(r: Recorded) -> Result<Msg, String> {
        if let Some(signal) = r.kind.signal() {
            return Ok(Msg::Wire {
                signal,
                payload: r.payload,
                ticket: r.ticket,
            });
        }
        let parsed = |what: &str| -> Result<Value, String> {
            r.payload
                .clone()
                .map_err(|e| format!("a carried {what} holds no payload: {e}"))
        };
        Ok(match r.kind {
            Kind::Loaded => {
                Msg::Loaded(serde_json::from_value(parsed("load")?).map_err(|e| e.to_string())?)
            }
            Kind::ChildEvent => Msg::Child(
                serde_json::from_value(parsed("child event")?).map_err(|e| e.to_string())?,
            ),
            Kind::RefreshTimer => Msg::RefreshTimer,
            _ => Msg::TemporalCancel,
        })
    }
}

impl From<Msg> for Recorded {
    fn from(m: Msg) -> Recorded {
        let kind = m.kind();
        let (payload, ticket) = match m {
            Msg::Wire {
                payload, ticket, ..
            } => (payload, ticket),
            Msg::Loaded(l) => (serde_json::to_value(l).map_err(|e| e.to_string()), None),
            Msg::Child(c) => (serde_json::to_value(c).map_err(|e| e.to_string()), None),
            Msg::RefreshTimer | Msg::TemporalCancel => (Ok(Value::Null), None),
        };
        Recorded {
            kind,
            payload,
            ticket,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{ChildEventKind, ChildOutcome};
    use serde_json::json;

    #[test]
    fn messages_keep_the_shape_earlier_releases_carried() {
        let recorded = json!([
            {"kind": "update", "payload": {"Ok": {"data": {"id": "u"}}}},
            {"kind": "apiToken", "payload": {"Err": "no payload"}},
            {"kind": "childEvent", "payload": {"Ok": {"workflowId": "L-1", "generation": 2, "event": "ended", "outcome": "cancelled", "detail": ""}}},
            {"kind": "loaded", "payload": {"Ok": {"error": {"type": "Unauthorized", "message": "401"}}}},
            {"kind": "refreshTimer", "payload": {"Ok": null}},
            {"kind": "temporalCancel", "payload": {"Ok": null}},
        ]);
        let msgs: Vec<Msg> = serde_json::from_value(recorded.clone()).unwrap();
        assert!(matches!(
            &msgs[2],
            Msg::Child(ev) if ev.event == ChildEventKind::Ended && ev.outcome == ChildOutcome::Cancelled
        ));
        assert_eq!(msgs[3].name(), "loadData");
        assert_eq!(serde_json::to_value(&msgs).unwrap(), recorded);
    }
}
