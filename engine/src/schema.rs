//! Entity schemas: which entities exist, how they are identified, how they relate, and how related
//! entities are managed as child workflows.
//!
//! Two file formats are accepted, in YAML or JSON (JSON is read as YAML):
//!
//! chrono-forge's flat format, as is:
//! ```yaml
//! User: { idAttribute: id, listings: [Listing], profile: Profile }
//! Listing: { user: User }
//! Profile: {}
//! ```
//!
//! and an extended format that adds, per entity, its API URL template, and per relation the options of
//! the child workflow that manages the related entity:
//! ```yaml
//! User:
//!   idAttribute: id
//!   apiUrl: "{apiBase}/users/{id}"
//!   refreshInterval: 5m       # reload from the API every 5 minutes (ms, or 30s / 5m / 1h)
//!   onNotFound: keep          # keep (default) | delete: what a 404 from the API does
//!   batchUrl: "{apiBase}/users?ids={ids}"   # a parent loads all its User children in one request
//!   onChange:                 # outbound hooks (see [`crate::hook`])
//!     - url: "{apiBase}/hooks/user-changed"
//!       fields: [name]
//!   listings:
//!     entity: Listing
//!     many: true
//!     onRemove: keep          # cancel (default) | keep
//!     autoStart: true
//!     workflowType: StatefulWorkflow
//!     taskQueue: stateful
//!     includeParentId: false
//!     idAttribute: [orgId, id]
//!     parentClosePolicy: abandon
//!     cancellationType: tryCancel
//!     subscriptions: { update: true, delete: true }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::error::{Error, Result, json_type};

/// Default workflow type of managed children.
pub const DEFAULT_WORKFLOW_TYPE: &str = "StatefulWorkflow";

/// How an entity is identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdAttribute {
    /// One field (`id` by default).
    Single(String),
    /// Several fields (dot paths allowed), joined with `-` to form the id.
    Composite(Vec<String>),
}

impl IdAttribute {
    fn to_json(&self) -> Value {
        match self {
            IdAttribute::Single(s) => json!(s),
            IdAttribute::Composite(v) => json!(v),
        }
    }

    /// The single id field, if the id is a single field.
    pub fn single(&self) -> Option<&str> {
        match self {
            IdAttribute::Single(s) => Some(s),
            IdAttribute::Composite(_) => None,
        }
    }
}

/// What happens to a child workflow whose entity is removed from the relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRemove {
    /// Cancel the child workflow (default).
    #[default]
    Cancel,
    /// Leave it running.
    Keep,
}

/// Temporal's parent-close policy for a managed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentClosePolicy {
    /// The child outlives the parent's run (default: children survive continue-as-new; a cancelled
    /// parent cancels its children explicitly).
    #[default]
    Abandon,
    /// The server requests cancellation of the child when the parent closes.
    RequestCancel,
    /// The server terminates the child when the parent closes.
    Terminate,
}

/// How the parent waits when it cancels a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CancellationType {
    /// Send the request and do not wait (default).
    #[default]
    TryCancel,
    /// Wait until the child has acknowledged the request.
    WaitCancellationRequested,
    /// Wait until the child has finished.
    WaitCancellationCompleted,
    /// Do not send a cancellation request.
    Abandon,
}

/// Options of the child workflow that manages a related entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// Start a child workflow for each related entity (default true).
    pub auto_start: bool,
    /// Workflow type of the child (default `StatefulWorkflow`).
    pub workflow_type: String,
    /// Task queue of the child (default: the parent's).
    pub task_queue: Option<String>,
    /// Child workflow id `{Entity}-{id}-{parentId}` instead of `{Entity}-{id}`.
    pub include_parent_id: bool,
    /// Composite id for the child's workflow id (default: the target entity's id attribute).
    pub id_attribute: Option<IdAttribute>,
    /// What to do when the entity leaves the relation.
    pub on_remove: OnRemove,
    /// Parent-close policy.
    pub parent_close_policy: ParentClosePolicy,
    /// Cancellation type.
    pub cancellation_type: CancellationType,
    /// The child publishes its updates to the parent.
    pub subscribe_updates: bool,
    /// The child publishes its deletions to the parent.
    pub subscribe_deletes: bool,
}

impl Default for Managed {
    fn default() -> Self {
        Managed {
            auto_start: true,
            workflow_type: DEFAULT_WORKFLOW_TYPE.to_string(),
            task_queue: None,
            include_parent_id: false,
            id_attribute: None,
            on_remove: OnRemove::Cancel,
            parent_close_policy: ParentClosePolicy::Abandon,
            cancellation_type: CancellationType::TryCancel,
            subscribe_updates: true,
            subscribe_deletes: true,
        }
    }
}

/// A relation field of an entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Field name in the owning entity.
    pub field: String,
    /// Related entity name.
    pub target: String,
    /// To-many (`[Other]`) or to-one (`Other`).
    pub many: bool,
    /// Child-workflow options.
    pub managed: Managed,
}

/// One entity of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityDef {
    /// Entity name.
    pub name: String,
    /// How its rows are identified.
    pub id_attribute: IdAttribute,
    /// Relation fields, by field name.
    pub relations: BTreeMap<String, Relation>,
    /// API URL template, e.g. `{apiBase}/users/{id}`.
    pub api_url: Option<String>,
    /// Reload from the API this often (ms).
    pub refresh_interval_ms: Option<u64>,
    /// What a 404 from the API does.
    pub on_not_found: OnNotFound,
    /// URL template that loads many entities of this type in one request (`{ids}`: comma-separated).
    pub batch_url: Option<String>,
    /// Outbound change hooks (`onChange`), called by the workflow that owns an entity of this type.
    pub hooks: Vec<crate::hook::Hook>,
}

/// What a 404 from the entity's API does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnNotFound {
    /// Keep the data; the workflow reports `notFound` in its load status.
    #[default]
    Keep,
    /// Delete the entity: its workflow completes (and its children are removed).
    Delete,
}

/// The longest refresh interval taken: 366 days (ms).
pub const MAX_REFRESH_MS: u64 = 366 * 24 * 3_600_000;

/// Parses a duration: a number of milliseconds, or a string such as `500ms`, `30s`, `5m`, `1h`.
pub fn parse_duration_ms(v: &Value) -> std::result::Result<u64, String> {
    let bad = || format!("expected a duration (milliseconds, or e.g. \"30s\", \"5m\"), found {v}");
    let ms = match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad)?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let k = match unit.trim() {
                "" | "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(bad()),
            };
            n.checked_mul(k).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if ms < 1_000 {
        return Err(format!("a refresh interval must be at least 1s, found {v}"));
    }
    if ms > MAX_REFRESH_MS {
        return Err(format!(
            "a refresh interval must be at most 366 days ({MAX_REFRESH_MS} ms), found {v}"
        ));
    }
    Ok(ms)
}

/// A set of entity definitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    entities: BTreeMap<String, EntityDef>,
}

const RELATION_KEYS: &[&str] = &[
    "entity",
    "many",
    "autoStart",
    "workflowType",
    "taskQueue",
    "includeParentId",
    "idAttribute",
    "onRemove",
    "parentClosePolicy",
    "cancellationType",
    "subscriptions",
];

struct Ctx<'a> {
    source: &'a str,
}

impl Ctx<'_> {
    fn err(&self, entity: Option<&str>, field: Option<&str>, message: impl Into<String>) -> Error {
        Error::Schema {
            source_name: self.source.to_string(),
            entity: entity.map(str::to_string),
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

fn valid_entity_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Schema {
    /// Reads a schema file (YAML or JSON).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Schema> {
        let path = path.as_ref();
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Schema {
            source_name: source.clone(),
            entity: None,
            field: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Schema::parse(&text, &source)
    }

    /// Parses a schema from YAML or JSON text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Schema> {
        let ctx = Ctx { source };
        // Through the YAML crate's own Value first: it rejects duplicate keys, which a direct
        // deserialization into a JSON map would silently merge.
        let yaml: serde_norway::Value = serde_norway::from_str(text)
            .map_err(|e| ctx.err(None, None, format!("not valid YAML or JSON: {e}")))?;
        let value: Value = serde_json::to_value(&yaml)
            .map_err(|e| ctx.err(None, None, format!("not a map of names: {e}")))?;
        Schema::from_value_with(&value, &ctx)
    }

    /// Builds a schema from its JSON form (either format).
    pub fn from_json(value: &Value) -> Result<Schema> {
        Schema::from_value_with(value, &Ctx { source: "<inline>" })
    }

    fn from_value_with(value: &Value, ctx: &Ctx<'_>) -> Result<Schema> {
        let top = match value {
            Value::Object(m) => m,
            Value::Null => return Err(ctx.err(None, None, "the schema is empty")),
            other => {
                return Err(ctx.err(
                    None,
                    None,
                    format!("expected a map of entity names, found {}", json_type(other)),
                ));
            }
        };
        if top.is_empty() {
            return Err(ctx.err(None, None, "the schema defines no entity"));
        }
        let mut lower = BTreeMap::new();
        for name in top.keys() {
            if !valid_entity_name(name) {
                return Err(ctx.err(
                    Some(name),
                    None,
                    "entity names may hold only letters, digits and `_` (workflow ids are `{Entity}-{id}`)",
                ));
            }
            if let Some(prev) = lower.insert(name.to_ascii_lowercase(), name.clone()) {
                return Err(ctx.err(
                    Some(name),
                    None,
                    format!("duplicate entity name (differs from `{prev}` only in case)"),
                ));
            }
        }
        let mut entities = BTreeMap::new();
        for (name, def) in top {
            entities.insert(name.clone(), parse_entity(ctx, name, def, top)?);
        }
        Ok(Schema { entities })
    }

    /// The schema in the extended format, as JSON (what a workflow records in its history).
    pub fn to_json(&self) -> Value {
        let mut top = Map::new();
        for (name, def) in &self.entities {
            let mut m = Map::new();
            m.insert("idAttribute".into(), def.id_attribute.to_json());
            if let Some(u) = &def.api_url {
                m.insert("apiUrl".into(), json!(u));
            }
            if let Some(r) = def.refresh_interval_ms {
                m.insert("refreshInterval".into(), json!(r));
            }
            if def.on_not_found == OnNotFound::Delete {
                m.insert("onNotFound".into(), json!("delete"));
            }
            if let Some(b) = &def.batch_url {
                m.insert("batchUrl".into(), json!(b));
            }
            if !def.hooks.is_empty() {
                m.insert(
                    "onChange".into(),
                    Value::Array(def.hooks.iter().map(crate::hook::Hook::to_json).collect()),
                );
            }
            for (field, rel) in &def.relations {
                let g = &rel.managed;
                let mut r = Map::new();
                r.insert("entity".into(), json!(rel.target));
                r.insert("many".into(), json!(rel.many));
                r.insert("autoStart".into(), json!(g.auto_start));
                r.insert("workflowType".into(), json!(g.workflow_type));
                if let Some(tq) = &g.task_queue {
                    r.insert("taskQueue".into(), json!(tq));
                }
                r.insert("includeParentId".into(), json!(g.include_parent_id));
                if let Some(ia) = &g.id_attribute {
                    r.insert("idAttribute".into(), ia.to_json());
                }
                r.insert(
                    "onRemove".into(),
                    json!(match g.on_remove {
                        OnRemove::Cancel => "cancel",
                        OnRemove::Keep => "keep",
                    }),
                );
                r.insert(
                    "parentClosePolicy".into(),
                    json!(match g.parent_close_policy {
                        ParentClosePolicy::Abandon => "abandon",
                        ParentClosePolicy::RequestCancel => "requestCancel",
                        ParentClosePolicy::Terminate => "terminate",
                    }),
                );
                r.insert(
                    "cancellationType".into(),
                    json!(match g.cancellation_type {
                        CancellationType::TryCancel => "tryCancel",
                        CancellationType::WaitCancellationRequested => "waitCancellationRequested",
                        CancellationType::WaitCancellationCompleted => "waitCancellationCompleted",
                        CancellationType::Abandon => "abandon",
                    }),
                );
                r.insert(
                    "subscriptions".into(),
                    json!({"update": g.subscribe_updates, "delete": g.subscribe_deletes}),
                );
                m.insert(field.clone(), Value::Object(r));
            }
            top.insert(name.clone(), Value::Object(m));
        }
        Value::Object(top)
    }

    /// The definition of an entity, or an error naming the known ones.
    pub fn entity(&self, name: &str) -> Result<&EntityDef> {
        self.entities.get(name).ok_or_else(|| Error::UnknownEntity {
            name: name.to_string(),
            known: self.entities.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The definition of an entity, if it exists.
    pub fn get(&self, name: &str) -> Option<&EntityDef> {
        self.entities.get(name)
    }

    /// All entity definitions, by name.
    pub fn entities(&self) -> &BTreeMap<String, EntityDef> {
        &self.entities
    }

    /// The checksum of the schema in the extended format (`sha256:...`): the same for a schema
    /// written in either format, so that a client can tell which schema a workflow runs.
    pub fn checksum(&self) -> String {
        crate::canonical::checksum_value(&self.to_json())
    }

    /// What a running workflow may not take of `next` in place of this schema (each with the
    /// reason): changing how an entity is identified (its `idAttribute`: stored rows are keyed by
    /// it), or how the child workflows of a relation kept by both are identified (the relation's
    /// `idAttribute`, `includeParentId`: its children would move to other workflow ids). Entities
    /// and relations may be added and removed (what the state holds is checked apart).
    pub fn evolution_refusals(&self, next: &Schema) -> Vec<String> {
        let mut out = Vec::new();
        for (name, old) in &self.entities {
            let Some(new) = next.entities.get(name) else {
                continue;
            };
            if old.id_attribute != new.id_attribute {
                out.push(format!(
                    "not allowed: changing the `idAttribute` of `{name}` (from {} to {}): its rows are keyed by it",
                    old.id_attribute.to_json(),
                    new.id_attribute.to_json()
                ));
            }
            for (field, rel) in &old.relations {
                let Some(n) = new.relations.get(field) else {
                    continue;
                };
                if n.target == rel.target
                    && (n.managed.id_attribute != rel.managed.id_attribute
                        || n.managed.include_parent_id != rel.managed.include_parent_id)
                {
                    out.push(format!(
                        "not allowed: changing `idAttribute` or `includeParentId` of the relation `{name}.{field}`: its child workflows would move to other workflow ids"
                    ));
                }
            }
        }
        out
    }
}

fn parse_entity(
    ctx: &Ctx<'_>,
    name: &str,
    def: &Value,
    top: &Map<String, Value>,
) -> Result<EntityDef> {
    let map = match def {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        other => {
            return Err(ctx.err(
                Some(name),
                None,
                format!(
                    "expected a map of fields (e.g. `{{listings: [Listing]}}`), found {}",
                    json_type(other)
                ),
            ));
        }
    };
    let id_attribute = match map.get("idAttribute") {
        None => IdAttribute::Single("id".into()),
        Some(v) => {
            parse_id_attribute(v).map_err(|m| ctx.err(Some(name), Some("idAttribute"), m))?
        }
    };
    let api_url = match map.get("apiUrl") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ctx.err(
                Some(name),
                Some("apiUrl"),
                format!("expected a URL template string, found {}", json_type(other)),
            ));
        }
    };
    let refresh_interval_ms = match map.get("refreshInterval") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            parse_duration_ms(v).map_err(|m| ctx.err(Some(name), Some("refreshInterval"), m))?,
        ),
    };
    let on_not_found = match map.get("onNotFound") {
        None | Some(Value::Null) => OnNotFound::Keep,
        Some(Value::String(s)) if s == "keep" => OnNotFound::Keep,
        Some(Value::String(s)) if s == "delete" => OnNotFound::Delete,
        Some(other) => {
            return Err(ctx.err(
                Some(name),
                Some("onNotFound"),
                format!("expected \"keep\" or \"delete\", found {other}"),
            ));
        }
    };
    let batch_url = match map.get("batchUrl") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.contains("{ids}") => Some(s.clone()),
        Some(other) => {
            return Err(ctx.err(
                Some(name),
                Some("batchUrl"),
                format!(
                    "expected a URL template with `{{ids}}` (e.g. \"{{apiBase}}/users?ids={{ids}}\"), found {other}"
                ),
            ));
        }
    };
    let hooks = match map.get("onChange") {
        None => Vec::new(),
        Some(v) => {
            crate::hook::parse_hooks(v).map_err(|m| ctx.err(Some(name), Some("onChange"), m))?
        }
    };
    let mut relations = BTreeMap::new();
    for (field, v) in &map {
        if matches!(
            field.as_str(),
            "idAttribute" | "apiUrl" | "refreshInterval" | "onNotFound" | "batchUrl" | "onChange"
        ) {
            continue;
        }
        if id_attribute.single() == Some(field.as_str()) {
            return Err(ctx.err(
                Some(name),
                Some(field),
                "the id attribute cannot also be a relation",
            ));
        }
        let rel = parse_relation(ctx, name, field, v, top)?;
        relations.insert(field.clone(), rel);
    }
    Ok(EntityDef {
        name: name.to_string(),
        id_attribute,
        relations,
        api_url,
        refresh_interval_ms,
        on_not_found,
        batch_url,
        hooks,
    })
}

fn parse_id_attribute(v: &Value) -> std::result::Result<IdAttribute, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(IdAttribute::Single(s.clone())),
        Value::Array(items) if !items.is_empty() => {
            let mut parts = Vec::new();
            for it in items {
                match it {
                    Value::String(s) if !s.trim().is_empty() => parts.push(s.clone()),
                    other => {
                        return Err(format!(
                            "a composite idAttribute lists field names; found {}",
                            json_type(other)
                        ));
                    }
                }
            }
            if parts.len() == 1 {
                Ok(IdAttribute::Single(parts.remove(0)))
            } else {
                Ok(IdAttribute::Composite(parts))
            }
        }
        other => Err(format!(
            "expected a field name or a non-empty list of field names, found {}",
            match other {
                Value::String(_) => "an empty string",
                Value::Array(_) => "an empty list",
                o => json_type(o),
            }
        )),
    }
}

fn parse_relation(
    ctx: &Ctx<'_>,
    entity: &str,
    field: &str,
    v: &Value,
    top: &Map<String, Value>,
) -> Result<Relation> {
    let err = |m: String| ctx.err(Some(entity), Some(field), m);
    let check_target = |t: &str| -> Result<()> {
        if top.contains_key(t) {
            Ok(())
        } else {
            Err(err(format!(
                "unknown target entity `{t}` (the schema has: {})",
                top.keys().cloned().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let (target, many, opts) = match v {
        Value::String(t) => (t.clone(), false, None),
        Value::Array(items) if items.len() == 1 => match &items[0] {
            Value::String(t) => (t.clone(), true, None),
            Value::Object(o) => (String::new(), true, Some(o)),
            other => {
                return Err(err(format!(
                    "expected `[Entity]`, found a list holding {}",
                    json_type(other)
                )));
            }
        },
        Value::Array(_) => {
            return Err(err(
                "a to-many relation is written `[Entity]`, with exactly one entity name".into(),
            ));
        }
        Value::Object(o) => (String::new(), false, Some(o)),
        other => {
            return Err(err(format!(
                "expected an entity name, `[Entity]` or an options map, found {}",
                json_type(other)
            )));
        }
    };
    let mut rel = Relation {
        field: field.to_string(),
        target,
        many,
        managed: Managed::default(),
    };
    if let Some(o) = opts {
        for k in o.keys() {
            if !RELATION_KEYS.contains(&k.as_str()) {
                return Err(err(format!(
                    "unknown relation option `{k}` (known: {})",
                    RELATION_KEYS.join(", ")
                )));
            }
        }
        rel.target = match o.get("entity") {
            Some(Value::String(t)) => t.clone(),
            _ => return Err(err("an options map needs `entity: <EntityName>`".into())),
        };
        let boolean = |key: &str, dflt: bool| -> Result<bool> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(dflt),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(err(format!(
                    "`{key}` must be true or false, found {}",
                    json_type(other)
                ))),
            }
        };
        let string = |key: &str| -> Result<Option<String>> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(err(format!(
                    "`{key}` must be a non-empty string, found {}",
                    json_type(other)
                ))),
            }
        };
        rel.many = boolean("many", rel.many)?;
        let g = &mut rel.managed;
        g.auto_start = boolean("autoStart", true)?;
        if let Some(t) = string("workflowType")? {
            g.workflow_type = t;
        }
        g.task_queue = string("taskQueue")?;
        g.include_parent_id = boolean("includeParentId", false)?;
        if let Some(v) = o.get("idAttribute") {
            g.id_attribute =
                Some(parse_id_attribute(v).map_err(|m| err(format!("idAttribute: {m}")))?);
        }
        g.on_remove = match string("onRemove")?.as_deref() {
            None | Some("cancel") => OnRemove::Cancel,
            Some("keep") => OnRemove::Keep,
            Some(x) => {
                return Err(err(format!(
                    "onRemove must be `cancel` or `keep`, found `{x}`"
                )));
            }
        };
        g.parent_close_policy = match string("parentClosePolicy")?.as_deref() {
            None | Some("abandon") => ParentClosePolicy::Abandon,
            Some("requestCancel") => ParentClosePolicy::RequestCancel,
            Some("terminate") => ParentClosePolicy::Terminate,
            Some(x) => {
                return Err(err(format!(
                    "parentClosePolicy must be abandon, requestCancel or terminate, found `{x}`"
                )));
            }
        };
        g.cancellation_type = match string("cancellationType")?.as_deref() {
            None | Some("tryCancel") => CancellationType::TryCancel,
            Some("waitCancellationRequested") => CancellationType::WaitCancellationRequested,
            Some("waitCancellationCompleted") => CancellationType::WaitCancellationCompleted,
            Some("abandon") => CancellationType::Abandon,
            Some(x) => {
                return Err(err(format!(
                    "cancellationType must be tryCancel, waitCancellationRequested, waitCancellationCompleted or abandon, found `{x}`"
                )));
            }
        };
        match o.get("subscriptions") {
            None | Some(Value::Null) => {}
            Some(Value::Object(s)) => {
                for (k, v) in s {
                    let on = match v {
                        Value::Bool(b) => *b,
                        Value::Object(inner) => match inner.get("enabled") {
                            None => true,
                            Some(Value::Bool(b)) => *b,
                            Some(_) => {
                                return Err(err(format!(
                                    "subscriptions.{k}.enabled must be true or false"
                                )));
                            }
                        },
                        _ => {
                            return Err(err(format!(
                                "subscriptions.{k} must be true, false or {{enabled: bool}}"
                            )));
                        }
                    };
                    match k.as_str() {
                        "update" => g.subscribe_updates = on,
                        "delete" => g.subscribe_deletes = on,
                        _ => {
                            return Err(err(format!(
                                "unknown subscription kind `{k}` (expected update or delete)"
                            )));
                        }
                    }
                }
            }
            Some(other) => {
                return Err(err(format!(
                    "subscriptions must be a map, found {}",
                    json_type(other)
                )));
            }
        }
    }
    check_target(&rel.target)?;
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chrono_forge_flat_format() {
        let s = Schema::parse(
            "User: {idAttribute: id, listings: [Listing], profile: Profile}\nListing: {user: User}\nProfile: {}\n",
            "t.yaml",
        )
        .unwrap();
        let u = s.entity("User").unwrap();
        assert_eq!(u.id_attribute, IdAttribute::Single("id".into()));
        assert!(u.relations["listings"].many);
        assert_eq!(u.relations["listings"].target, "Listing");
        assert!(!u.relations["profile"].many);
        assert!(u.relations["profile"].managed.auto_start);
    }

    #[test]
    fn parses_custom_id_attribute_like_chrono_forge_vendor() {
        let s = Schema::parse("Vendor: {idAttribute: name}", "t").unwrap();
        assert_eq!(
            s.entity("Vendor").unwrap().id_attribute,
            IdAttribute::Single("name".into())
        );
    }

    #[test]
    fn parses_extended_format_and_round_trips_through_json() {
        let text = r#"
User:
  apiUrl: "{apiBase}/users/{id}"
  refreshInterval: 5m
  onNotFound: delete
  batchUrl: "{apiBase}/users?ids={ids}"
  listings:
    entity: Listing
    many: true
    onRemove: keep
    autoStart: false
    taskQueue: other
    includeParentId: true
    idAttribute: [orgId, id]
    subscriptions: {update: true, delete: {enabled: false}}
Listing:
  idAttribute: [orgId, id]
"#;
        let s = Schema::parse(text, "x.yaml").unwrap();
        let l = &s.entity("User").unwrap().relations["listings"];
        assert!(l.many);
        assert_eq!(l.managed.on_remove, OnRemove::Keep);
        assert!(!l.managed.auto_start);
        assert!(l.managed.include_parent_id);
        assert!(!l.managed.subscribe_deletes);
        assert_eq!(l.managed.task_queue.as_deref(), Some("other"));
        assert_eq!(
            s.entity("Listing").unwrap().id_attribute,
            IdAttribute::Composite(vec!["orgId".into(), "id".into()])
        );
        let u = s.entity("User").unwrap();
        assert_eq!(u.refresh_interval_ms, Some(300_000));
        assert_eq!(u.on_not_found, OnNotFound::Delete);
        let again = Schema::from_json(&s.to_json()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn durations_and_not_found_options_say_what_is_wrong() {
        assert_eq!(parse_duration_ms(&json!("30s")), Ok(30_000));
        assert_eq!(parse_duration_ms(&json!(1500)), Ok(1500));
        assert_eq!(parse_duration_ms(&json!("2h")), Ok(7_200_000));
        assert!(parse_duration_ms(&json!("10 parsecs")).is_err());
        assert!(
            parse_duration_ms(&json!(10))
                .unwrap_err()
                .contains("at least 1s")
        );
        let e = Schema::parse("User: {refreshInterval: soon}", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("refreshInterval"), "{e}");
        let e = Schema::parse("User: {onNotFound: vanish}", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("onNotFound"), "{e}");
        let e = Schema::parse("User: {batchUrl: 'http://x/users'}", "s.yaml").unwrap_err();
        assert!(e.to_string().contains("{ids}"), "{e}");
    }

    #[test]
    fn json_schema_is_accepted() {
        let s = Schema::parse(
            r#"{"User": {"listings": ["Listing"]}, "Listing": {}}"#,
            "s.json",
        )
        .unwrap();
        assert!(s.entity("User").unwrap().relations["listings"].many);
    }

    #[test]
    fn unknown_target_names_file_entity_and_field() {
        let e =
            Schema::parse("User: {listings: [Listng]}\nListing: {}", "schema.yaml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("schema.yaml"), "{msg}");
        assert!(msg.contains("`User`"), "{msg}");
        assert!(msg.contains("`listings`"), "{msg}");
        assert!(msg.contains("Listng"), "{msg}");
    }

    #[test]
    fn duplicate_names_are_an_error() {
        let e = Schema::parse("User: {}\nUser: {}", "d.yaml").unwrap_err();
        assert!(e.to_string().contains("d.yaml"), "{e}");
        let e = Schema::parse("User: {}\nuser: {}", "d.yaml").unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    #[test]
    fn bad_id_attribute_is_an_error() {
        for bad in [
            "User: {idAttribute: 3}",
            "User: {idAttribute: []}",
            "User: {idAttribute: ''}",
        ] {
            let e = Schema::parse(bad, "b.yaml").unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("`idAttribute`") && msg.contains("`User`"),
                "{msg}"
            );
        }
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        for bad in [
            "",
            "42",
            "[1,2]",
            "User: 3",
            "User: {x: [A, B]}",
            "User: {x: {many: true}}",
            "User: {x: {entity: User, bogus: 1}}",
            "User: {x: {entity: User, onRemove: maybe}}",
            "User-x: {}",
            "User: {x: {entity: User, subscriptions: {update: 3}}}",
            "User: {id: User}",
        ] {
            assert!(Schema::parse(bad, "b").is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn checksums_ignore_the_format_and_identity_changes_are_not_allowed() {
        let flat = Schema::parse("User: {listings: [Listing]}\nListing: {}", "a").unwrap();
        let ext = Schema::parse(
            "User:\n  idAttribute: id\n  listings: {entity: Listing, many: true}\nListing: {}",
            "b",
        )
        .unwrap();
        assert_eq!(flat.checksum(), ext.checksum());
        assert!(flat.checksum().starts_with("sha256:"));
        let added =
            Schema::parse("User: {listings: [Listing], x: Listing}\nListing: {}", "c").unwrap();
        assert_ne!(flat.checksum(), added.checksum());
        assert!(flat.evolution_refusals(&added).is_empty());
        let id = Schema::parse("User: {idAttribute: uid}\nListing: {}", "d").unwrap();
        assert!(flat.evolution_refusals(&id)[0].contains("`idAttribute` of `User`"));
        let moved = Schema::parse(
            "User: {listings: {entity: Listing, many: true, includeParentId: true}}\nListing: {}",
            "e",
        )
        .unwrap();
        assert!(flat.evolution_refusals(&moved)[0].contains("`User.listings`"));
    }
}
