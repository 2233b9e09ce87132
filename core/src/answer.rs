//! What an API's answer does to the store (chrono-forge's `loadData` rules), and the own entity's
//! `data` check shared with the start input.

use serde_json::{Value, json};
use stateful_engine::{Change, EntityRef, Schema, wire};

use crate::load::{LoadOutput, LoadStatus};

/// The own entity's `data`: its id is filled in when missing and must match.
pub(crate) fn own_data(
    schema: &Schema,
    entity: &str,
    id: &str,
    mut data: Value,
) -> Result<Value, String> {
    let def = schema.entity(entity).map_err(|e| e.to_string())?;
    if let (Value::Object(m), Some(attr)) = (&mut data, def.id_attribute.single()) {
        match m.get(attr) {
            None | Some(Value::Null) => {
                m.insert(attr.to_string(), Value::String(id.to_string()));
            }
            Some(v) => {
                if stateful_engine::normalize::id_key(v).as_deref() != Some(id) {
                    return Err(format!(
                        "`data.{attr}` is {v} but the input's `id` is \"{id}\""
                    ));
                }
            }
        }
    }
    Ok(data)
}

/// What a load's output does to the store (chrono-forge's `loadData` rules: `updates` when given, else
/// `data` normalized; `strategy` defaults to `$merge`). A 404 deletes the entity when its schema says
/// `onNotFound: delete`.
pub(crate) fn loaded_change(
    schema: &Schema,
    entity: &str,
    id: &str,
    out: &LoadOutput,
) -> Result<Option<Change>, String> {
    if out.status == LoadStatus::NotFound {
        let def = schema.entity(entity).map_err(|e| e.to_string())?;
        return Ok(
            (def.on_not_found == stateful_engine::OnNotFound::Delete).then(|| Change::Delete {
                refs: [EntityRef::new(entity, id)].into(),
            }),
        );
    }
    // `updates` wins over `data`; only `data` is checked against the own entity.
    let data = match &out.data {
        _ if out.updates.as_ref().is_some_and(|u| !u.is_null()) => None,
        Some(d) if d.is_object() => Some(
            own_data(schema, entity, id, d.clone())
                .map_err(|e| format!("the API's answer is for another entity: {e}"))?,
        ),
        other => other.clone(),
    };
    load_message(out, data, entity)
        .map(|msg| wire::parse_update(schema, entity, &msg))
        .transpose()
        .map(|inc| inc.map(|i| i.change))
        .map_err(|e| format!("the API's answer does not fit the schema: {e}"))
}

/// The `update` message a load's output stands for (chrono-forge's `loadData` rules: `updates` when
/// given, else `data` normalized as `entity`; `strategy` defaults to `$merge`), or none.
fn load_message(out: &LoadOutput, data: Option<Value>, entity: &str) -> Option<Value> {
    let strategy = json!(out.strategy.as_deref().unwrap_or("$merge"));
    match (&out.updates, data) {
        (Some(u), _) if !u.is_null() => Some(json!({"updates": u, "strategy": strategy})),
        (_, Some(d)) if !d.is_null() => {
            Some(json!({"data": d, "entityName": entity, "strategy": strategy}))
        }
        _ => None,
    }
}

/// What a batch output for related entities does: their `data` (a list) or `updates` are merged.
pub(crate) fn related_change(
    schema: &Schema,
    entity: &str,
    out: &LoadOutput,
) -> Result<Option<Change>, String> {
    if out.status == LoadStatus::NotFound {
        return Ok(None);
    }
    load_message(out, out.data.clone(), entity)
        .map(|msg| wire::parse_update(schema, entity, &msg))
        .transpose()
        .map(|inc| inc.map(|i| i.change))
        .map_err(|e| format!("the API's batch answer for {entity} does not fit the schema: {e}"))
}
