//! The workflow's start input (chrono-forge compatible, plus our optional fields).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use stateful_engine::{Stamp, Store};

use crate::audit::{ChangeRecord, Checkpoint, Rejection};
use crate::msg::Msg;
use crate::order::OrderCarry;
use crate::secret::Secret;
use crate::status::Status;
use crate::tree::ChildRec;

/// The version of [`Carry`]'s shape this release writes. 0 (no `version`) is every release before
/// versions: their carries decode (each field added since has a default; the replay test
/// `carried_inputs_of_every_release_decode` reads the ones in the committed histories). Bump it with
/// any change of shape, keep the older ones decoding, and say what changed here:
/// - 1: `version` itself (the shape of the releases before, plus `outbox`).
/// - 2: `schemaVersion`, and `order.schema` (the stamp of the `schema` message that set the schema).
/// - 3: `hooks` (outbound change hooks: what waits, what was cut short, counts).
pub const CARRY_VERSION: u32 = 3;

/// What a continued-as-new run inherits besides the wire fields: the store with its stamps, counters and
/// logs, and anything still queued.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Carry {
    /// The shape's version ([`CARRY_VERSION`] when written by this release; 0 when absent). A
    /// carry of a later version (a worker rolled back past a change of shape) is taken for what
    /// this release knows of it: its newer fields are lost (see README "Upgrading").
    #[serde(default)]
    pub version: u32,
    /// The store, stamps included.
    pub store: Store,
    /// How many times the token was rotated.
    #[serde(default)]
    pub token_rotations: u64,
    /// Recent rejected inputs.
    #[serde(default)]
    pub rejected: Vec<Rejection>,
    /// Rejected inputs ever.
    #[serde(default)]
    pub rejected_total: u64,
    /// Recent change records.
    #[serde(default)]
    pub recent: Vec<ChangeRecord>,
    /// Applied batches ever.
    #[serde(default)]
    pub changes_total: u64,
    /// Runs before this one.
    #[serde(default)]
    pub runs: u64,
    /// Messages not yet applied.
    #[serde(default)]
    pub inbox: Vec<Msg>,
    /// Managed children (they keep running across continue-as-new).
    #[serde(default)]
    pub children: std::collections::BTreeMap<String, ChildRec>,
    /// Load bookkeeping: the next refresh time, a load that was due, the last outcome.
    #[serde(default)]
    pub api: crate::api::Api,
    /// Recent checkpoints, the last one being the hand-over to this run.
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    /// The stamps of what control messages set (token, status, URL, subscriptions).
    #[serde(default)]
    pub order: OrderCarry,
    /// Signals and cancellation requests decided but not yet issued: the next run issues them
    /// first (a run with a long history hands them over rather than issue them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<crate::outbox::Carried>,
    /// How many schema changes the schema it runs has had (0: the one the tree started with).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub schema_version: u64,
    /// Outbound change hooks: deliveries waiting or cut short by the hand-over, and counts.
    #[serde(default, skip_serializing_if = "crate::hooks::HooksCarry::is_empty")]
    pub hooks: crate::hooks::HooksCarry,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A parsed start input.
#[derive(Debug, Clone, Default)]
pub struct StartInput {
    /// Entity id (as a string key).
    pub id: String,
    /// Entity name.
    pub entity_name: String,
    /// Denormalized entity data.
    pub data: Option<Value>,
    /// Normalized state.
    pub state: Option<Value>,
    /// Ours: the stamps of `state` (a parent's slice keeps the parent's stamps).
    pub state_stamps: Option<Value>,
    /// Initial status.
    pub status: Status,
    /// API URL.
    pub api_url: Option<String>,
    /// API token.
    pub api_token: Option<Secret>,
    /// Ours: the stamp of the message that set the token (a parent hands it down with the token).
    pub api_token_stamp: Option<Stamp>,
    /// Ours: the stamp of the message that set the status (a parent hands it down).
    pub status_stamp: Option<Stamp>,
    /// Ours: the incarnation its starter gave it (see [`crate::tree::Me::incarnation`]).
    pub incarnation: Option<Stamp>,
    /// Ours: the base URL that fills `{apiBase}` in the schema's URL templates (handed down the tree).
    pub api_base: Option<String>,
    /// Ours: reload from the API this often (ms).
    pub refresh_ms: Option<u64>,
    /// Ours: the hosts the token may be sent to (handed down the tree, carried over); `None` when
    /// the input does not say (see [`crate::valid::allowed`]).
    pub api_hosts: Option<std::collections::BTreeSet<String>>,
    /// Ours: the task queue of the HTTP activities (`loadData`, `loadBatch`); `None`: the
    /// workflow's own. Set by a root's first run from the worker's `--activity-task-queue`, handed
    /// down the tree and carried over, so that a workflow replays with the queue it ran with.
    pub activity_task_queue: Option<String>,
    /// Ours: the parent loads this entity in a batch (no load at start or on a new token).
    pub loaded_by_parent: bool,
    /// Subscriptions.
    pub subscriptions: Vec<Value>,
    /// Ancestors' workflow ids.
    pub ancestor_workflow_ids: Vec<String>,
    /// The schema this workflow runs with (extended-format JSON), when the starter provided it.
    pub schema: Option<Value>,
    /// Ours: the stamp of the `schema` message that set `schema` (a parent hands it down).
    pub schema_stamp: Option<Stamp>,
    /// Ours: how many schema changes `schema` has had (a parent hands it down).
    pub schema_version: u64,
    /// History length past which the workflow continues as new.
    pub max_history: Option<u32>,
    /// Ours: the limits it keeps under (handed down the tree, carried over continue-as-new).
    pub limits: crate::limits::Limits,
    /// Carry-over from the previous run.
    pub carry: Option<Carry>,
}

fn opt_str(m: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn stamp_field(m: &Map<String, Value>, key: &str) -> Result<Option<Stamp>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(s) => serde_json::from_value(s.clone())
            .map(Some)
            .map_err(|_| format!("`{key}` must be [time, origin], found {s}")),
    }
}

fn list(m: &Map<String, Value>, key: &str) -> Result<Vec<Value>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(format!("`{key}` must be an array")),
    }
}

fn parse_status(m: &Map<String, Value>) -> Result<Status, String> {
    match opt_str(m, "status")?.as_deref() {
        None | Some("running") => Ok(Status::Running),
        Some("paused") => Ok(Status::Paused),
        Some(other) => Err(format!(
            "`status` must be \"running\" or \"paused\" at start, found \"{other}\""
        )),
    }
}

fn parse_max_history(m: &Map<String, Value>) -> Result<Option<u32>, String> {
    match m.get("maxHistoryLength") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (100..=50_000).contains(n))
            .map(|n| Some(n as u32))
            .ok_or_else(|| "`maxHistoryLength` must be a number between 100 and 50000".into()),
    }
}

impl StartInput {
    /// Parses and checks the input; the error says what is wrong.
    pub fn parse(v: &Value) -> Result<StartInput, String> {
        let m = v.as_object().ok_or_else(|| {
            "the input must be a JSON object like {\"id\": \"u1\", \"entityName\": \"User\", \"data\": {...}}"
                .to_string()
        })?;
        let id = match m.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err("`id` must be a non-empty string or a number".into()),
            None => return Err("the input needs `id` (the entity's id)".into()),
        };
        let entity_name = match opt_str(m, "entityName")? {
            Some(e) if !e.is_empty() => e,
            _ => return Err("the input needs `entityName` (e.g. \"User\")".into()),
        };
        let status = parse_status(m)?;
        let ancestor_workflow_ids = list(m, "ancestorWorkflowIds")?
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err("`ancestorWorkflowIds` must hold workflow ids (strings)".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_history = parse_max_history(m)?;
        let carry = match m.get("carry") {
            None | Some(Value::Null) => None,
            Some(c) => Some(
                serde_json::from_value(c.clone())
                    .map_err(|e| format!("`carry` (continue-as-new state) is malformed: {e}"))?,
            ),
        };
        let nonempty = |key: &str| m.get(key).filter(|v| !v.is_null()).cloned();
        let fresh = carry.is_none();
        let input = StartInput {
            id,
            entity_name,
            data: nonempty("data"),
            state: nonempty("state"),
            state_stamps: nonempty("stateStamps"),
            status,
            api_url: opt_str(m, "apiUrl")?,
            api_token: opt_str(m, "apiToken")?
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            api_token_stamp: stamp_field(m, "apiTokenStamp")?,
            status_stamp: stamp_field(m, "statusStamp")?,
            incarnation: stamp_field(m, "incarnation")?,
            api_base: opt_str(m, "apiBase")?.filter(|b| !b.is_empty()),
            loaded_by_parent: m.get("loadedByParent") == Some(&Value::Bool(true)),
            refresh_ms: match m.get("refreshInterval") {
                None | Some(Value::Null) => None,
                Some(v) => match stateful_engine::schema::parse_duration_ms(v) {
                    Ok(ms) => Some(ms),
                    Err(e) if fresh => return Err(format!("`refreshInterval`: {e}")),
                    // A run continued from an earlier release that took it: the entity's default.
                    Err(_) => None,
                },
            },
            api_hosts: match m.get("apiHosts") {
                None | Some(Value::Null) => None,
                Some(v) => Some(crate::valid::hosts(v)?),
            },
            activity_task_queue: opt_str(m, "activityTaskQueue")?.filter(|q| !q.is_empty()),
            subscriptions: list(m, "subscriptions")?,
            ancestor_workflow_ids,
            schema: nonempty("schema"),
            schema_stamp: stamp_field(m, "schemaStamp")?,
            schema_version: m
                .get("schemaVersion")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
            max_history,
            limits: crate::limits::Limits::parse(m.get("limits"))?,
            carry,
        };
        if fresh {
            input.check()?;
        }
        Ok(input)
    }

    /// The checks of a first run's input (a client's or a parent's start): lengths, the token's and
    /// the URLs' shape. A run continued from an earlier release is not refused for what that
    /// release took.
    fn check(&self) -> Result<(), String> {
        use stateful_engine::plan::{MAX_TREE_DEPTH, MAX_WORKFLOW_ID_LEN};
        let long = |what: &str, s: &str, max: usize| {
            (s.len() > max).then(|| {
                format!(
                    "`{what}` takes {} bytes, more than the {max} taken",
                    s.len()
                )
            })
        };
        if let Some(e) = long("id", &self.id, MAX_WORKFLOW_ID_LEN)
            .or_else(|| long("entityName", &self.entity_name, crate::valid::MAX_NAME_LEN))
            .or_else(|| {
                let queue = self.activity_task_queue.as_deref().unwrap_or_default();
                long("activityTaskQueue", queue, crate::valid::MAX_NAME_LEN)
            })
        {
            return Err(e);
        }
        if self.ancestor_workflow_ids.len() >= MAX_TREE_DEPTH {
            return Err(format!(
                "`ancestorWorkflowIds` holds {} ids: a tree is at most {MAX_TREE_DEPTH} levels deep",
                self.ancestor_workflow_ids.len()
            ));
        }
        if let Some(e) = self
            .ancestor_workflow_ids
            .iter()
            .find_map(|a| long("ancestorWorkflowIds", a, MAX_WORKFLOW_ID_LEN))
        {
            return Err(e);
        }
        if self.subscriptions.len() > crate::tree::MAX_SUBSCRIPTIONS {
            return Err(format!(
                "`subscriptions` holds {}, more than the {} a workflow keeps",
                self.subscriptions.len(),
                crate::tree::MAX_SUBSCRIPTIONS
            ));
        }
        if let Some(t) = &self.api_token {
            crate::valid::token(t.expose()).map_err(|e| format!("`apiToken`: {e}"))?;
        }
        for (k, u) in [("apiUrl", &self.api_url), ("apiBase", &self.api_base)] {
            if let Some(u) = u {
                crate::valid::host_of(u).map_err(|e| format!("`{k}`: {e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_or_bad_fields_say_what_is_wrong() {
        for (v, want) in [
            (json!(42), "must be a JSON object"),
            (json!({}), "needs `id`"),
            (json!({"id": "1"}), "needs `entityName`"),
            (json!({"id": true, "entityName": "User"}), "`id` must be"),
            (
                json!({"id": 1, "entityName": "User", "status": "done"}),
                "`status`",
            ),
            (
                json!({"id": 1, "entityName": "User", "apiToken": 5}),
                "`apiToken` must be a string",
            ),
            (
                json!({"id": 1, "entityName": "User", "ancestorWorkflowIds": [1]}),
                "ancestorWorkflowIds",
            ),
            (
                json!({"id": 1, "entityName": "User", "refreshInterval": "often"}),
                "`refreshInterval`",
            ),
            (
                json!({"id": 1, "entityName": "User", "apiBase": 3}),
                "`apiBase` must be a string",
            ),
            (
                json!({"id": 1, "entityName": "User", "activityTaskQueue": 3}),
                "`activityTaskQueue` must be a string",
            ),
            (
                json!({"id": 1, "entityName": "User", "activityTaskQueue": "q".repeat(1001)}),
                "`activityTaskQueue` takes 1001 bytes",
            ),
        ] {
            let e = StartInput::parse(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
        let ok = StartInput::parse(&json!({"id": 7, "entityName": "User", "unknown": 1})).unwrap();
        assert_eq!(ok.id, "7");
    }
}
