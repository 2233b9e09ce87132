//! The wire protocol's message payloads (chrono-forge compatible) turned into [`Change`]s.
//!
//! These functions take the decoded JSON of a signal or update and either return the change it asks
//! for or say, in a sentence, what is wrong with it. They never panic.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::change::{Change, FieldWrite, Stamp, Strategy, Writes};
use crate::error::{Error, Result, json_type};
use crate::normalize::{Entities, EntityRef, Row};
use crate::schema::Schema;

/// A decoded `update`, `delete` or `state` message.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// What to do to the store.
    pub change: Change,
    /// `changeOrigin`: the workflow that sent it, if any.
    pub origin: Option<String>,
    /// `subscriptionId`, if any.
    pub subscription_id: Option<String>,
}

fn object<'a>(v: &'a Value, what: &str, example: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Error::BadInput(format!(
            "{what} must be a JSON object like {example}, found {}",
            json_type(v)
        ))
    })
}

fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Error::BadInput(format!(
            "`{key}` must be a string, found {}",
            json_type(other)
        ))),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Parses a `strategy` field (absent means `$merge`).
pub fn parse_strategy(v: Option<&Value>) -> Result<Strategy> {
    match v {
        None | Some(Value::Null) => Ok(Strategy::Merge),
        Some(Value::String(s)) => s.parse(),
        Some(other) => Err(Error::BadInput(format!(
            "`strategy` must be a string such as \"$merge\", found {}",
            json_type(other)
        ))),
    }
}

fn entity_name(schema: &Schema, m: &Map<String, Value>, own: &str) -> Result<String> {
    let name = opt_string(m, "entityName")?.unwrap_or_else(|| own.to_string());
    schema.entity(&name)?;
    Ok(name)
}

/// Normalized entities given on the wire (`updates`, `state`): checked against the schema, nested
/// objects in relation fields normalized too.
pub fn parse_entities(schema: &Schema, v: &Value, what: &str) -> Result<Entities> {
    let top = object(
        v,
        &format!("`{what}`"),
        "{\"User\": {\"u1\": {\"name\": \"Ann\"}}}",
    )?;
    let mut out = Entities::new();
    let mut nested = Entities::new();
    for (name, group) in top {
        let def = schema.entity(name)?;
        let group = object(group, &format!("`{what}.{name}`"), "{\"<id>\": {fields}}")?;
        for (id, row) in group {
            let mut row: Row =
                object(row, &format!("`{what}.{name}.{id}`"), "{\"field\": value}")?.clone();
            schema.normalize_relations(
                def,
                &mut row,
                &format!("{what}.{name}.{id}"),
                &mut nested,
            )?;
            out.entry(name.clone()).or_default().insert(id.clone(), row);
        }
    }
    // Nested entities first, so that the explicitly given rows win where both name the same field.
    for (name, group) in nested {
        let g = out.entry(name).or_default();
        for (id, row) in group {
            match g.get_mut(&id) {
                Some(existing) => {
                    for (k, v) in row {
                        existing.entry(k).or_insert(v);
                    }
                }
                None => {
                    g.insert(id, row);
                }
            }
        }
    }
    Ok(out)
}

fn parse_stamp(v: &Value, at: &str) -> Result<Stamp> {
    serde_json::from_value(v.clone()).map_err(|_| {
        Error::BadInput(format!(
            "`{at}` must be a stamp [time, \"origin\"], found {}",
            json_type(v)
        ))
    })
}

/// Parses an `update` message: `{data? | updates?, entityName?, strategy?, changeOrigin?,
/// subscriptionId?, stamps?}`.
pub fn parse_update(schema: &Schema, own_entity: &str, v: &Value) -> Result<Incoming> {
    let m = object(
        v,
        "an `update`",
        "{\"data\": {\"id\": \"u1\", \"name\": \"Ann\"}} or {\"updates\": {\"User\": {\"u1\": {\"name\": \"Ann\"}}}}",
    )?;
    if m.contains_key("action") {
        return Err(Error::BadInput(
            "`action` messages (in-process chrono-forge actions) are not supported; send `data` or `updates`".into(),
        ));
    }
    let strategy = parse_strategy(m.get("strategy"))?;
    let origin = opt_string(m, "changeOrigin")?;
    let subscription_id = opt_string(m, "subscriptionId")?;
    let entities = match (m.get("data"), m.get("updates")) {
        (Some(d), _) if !is_empty(d) => {
            let name = entity_name(schema, m, own_entity)?;
            schema.normalize(&name, d)?
        }
        (_, Some(u)) if !u.is_null() => parse_entities(schema, u, "updates")?,
        _ => {
            return Err(Error::BadInput(
                "an `update` needs `data` (the entity, nested) or `updates` (normalized {Entity: {id: fields}})".into(),
            ));
        }
    };
    let change = match m.get("stamps") {
        None | Some(Value::Null) => Change::Upsert { entities, strategy },
        Some(stamps) => Change::Writes(stamped_writes(schema, &entities, stamps)?),
    };
    Ok(Incoming {
        change,
        origin,
        subscription_id,
    })
}

fn stamped_writes(schema: &Schema, entities: &Entities, stamps: &Value) -> Result<Writes> {
    let top = object(
        stamps,
        "`stamps`",
        "{\"User\": {\"u1\": {\"name\": [1700000000000, \"User-u1\"]}}}",
    )?;
    let mut w = Writes::default();
    for (name, group) in top {
        let group = object(group, &format!("`stamps.{name}`"), "{\"<id>\": {...}}")?;
        for (id, fields) in group {
            let fields = object(
                fields,
                &format!("`stamps.{name}.{id}`"),
                "{\"field\": [time, \"origin\"]}",
            )?;
            let row = entities.get(name).and_then(|g| g.get(id));
            let mut out = BTreeMap::new();
            for (f, s) in fields {
                out.insert(
                    f.clone(),
                    FieldWrite {
                        value: row.and_then(|r| r.get(f)).cloned(),
                        stamp: parse_stamp(s, &format!("stamps.{name}.{id}.{f}"))?,
                    },
                );
            }
            w.fields.insert(EntityRef::new(name, id), out);
        }
    }
    for (name, group) in entities {
        let id_attr = schema.entity(name)?.id_attribute.single();
        for (id, row) in group {
            let r = EntityRef::new(name, id);
            let stamped = w.fields.get(&r);
            for f in row.keys() {
                if id_attr != Some(f.as_str()) && !stamped.is_some_and(|s| s.contains_key(f)) {
                    return Err(Error::BadInput(format!(
                        "`updates.{name}.{id}.{f}` has no stamp in `stamps`"
                    )));
                }
            }
            // The id field carries the id's JSON type (a number stays a number); it is never stamped.
            if let Some((f, v)) = id_attr.and_then(|a| row.get_key_value(a)) {
                w.fields.entry(r).or_default().insert(
                    f.clone(),
                    FieldWrite {
                        value: Some(v.clone()),
                        stamp: Stamp::new(0, ""),
                    },
                );
            }
        }
    }
    Ok(w)
}

/// Parses a `delete` message: `{data? | deletions?, entityName?, changeOrigin?, stamps?}`. With
/// `data`, every entity of the normalized graph is deleted (as chrono-forge does).
pub fn parse_delete(schema: &Schema, own_entity: &str, v: &Value) -> Result<Incoming> {
    let m = object(
        v,
        "a `delete`",
        "{\"data\": {\"id\": \"l1\"}, \"entityName\": \"Listing\"} or {\"deletions\": {\"Listing\": {\"l1\": {}}}}",
    )?;
    let origin = opt_string(m, "changeOrigin")?;
    let subscription_id = opt_string(m, "subscriptionId")?;
    let mut refs = BTreeSet::new();
    match (m.get("data"), m.get("deletions")) {
        (Some(d), _) if !is_empty(d) => {
            let name = entity_name(schema, m, own_entity)?;
            for (e, group) in schema.normalize(&name, d)? {
                for id in group.keys() {
                    refs.insert(EntityRef::new(e.clone(), id.clone()));
                }
            }
        }
        (_, Some(d)) if !d.is_null() => {
            let top = object(d, "`deletions`", "{\"Listing\": {\"l1\": {}}}")?;
            for (e, group) in top {
                schema.entity(e)?;
                let ids: Vec<String> = match group {
                    Value::Object(g) => g.keys().cloned().collect(),
                    Value::Array(a) => a.iter().filter_map(crate::normalize::id_key).collect(),
                    other => {
                        return Err(Error::BadInput(format!(
                            "`deletions.{e}` must map ids to rows (or list ids), found {}",
                            json_type(other)
                        )));
                    }
                };
                for id in ids {
                    refs.insert(EntityRef::new(e.clone(), id));
                }
            }
        }
        _ => {
            return Err(Error::BadInput(
                "a `delete` needs `data` (the entity to delete, nested) or `deletions` ({Entity: {id: ...}})".into(),
            ));
        }
    }
    let change = match m.get("stamps") {
        None | Some(Value::Null) => Change::Delete { refs },
        Some(stamps) => {
            let top = object(
                stamps,
                "`stamps`",
                "{\"Listing\": {\"l1\": [time, \"origin\"]}}",
            )?;
            let mut w = Writes::default();
            for r in refs {
                let s = top
                    .get(&r.entity)
                    .and_then(|g| g.get(&r.id))
                    .ok_or_else(|| {
                        Error::BadInput(format!("`stamps.{}.{}` is missing", r.entity, r.id))
                    })?;
                let stamp = parse_stamp(s, &format!("stamps.{}.{}", r.entity, r.id))?;
                w.deletes.insert(r, stamp);
            }
            Change::Writes(w)
        }
    };
    Ok(Incoming {
        change,
        origin,
        subscription_id,
    })
}

/// Parses a `state` message: the whole normalized state, which replaces the current one.
pub fn parse_state(schema: &Schema, v: &Value) -> Result<Incoming> {
    let entities = parse_entities(schema, v, "state")?;
    Ok(Incoming {
        change: Change::SetState { entities },
        origin: None,
        subscription_id: None,
    })
}
