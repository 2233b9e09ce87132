//! Schema evolution: a `schema` message (a client's acknowledged update or signal, or ours from a
//! parent) replaces the schema of a running workflow when the change is allowed and the state
//! conforms to the new schema; the batch's plan then starts the children of new relations, ends
//! those of removed ones, and hands the schema to every StatefulWorkflow child (ordered by its
//! stamp, as other control messages: see [`crate::order`]).
//!
//! Not allowed (refused with the reason): a payload that is not a schema; a schema without the
//! workflow's own entity; changing an entity's `idAttribute`; changing how the children of a kept
//! relation are identified (its `idAttribute`, `includeParentId`); a state that does not conform
//! (an entity it holds that the schema lacks, a row whose id attribute does not match its key, a
//! relation field that holds something other than ids); a schema over [`MAX_SCHEMA_BYTES`]; a run
//! replaying a history recorded before ordered control messages.

use std::sync::Arc;

use serde_json::{Value, json};
use stateful_engine::{Schema, Stamp, Store};

use super::{Core, Ident};

/// The most bytes a schema's JSON may take: it is written into every child's input and every
/// continue-as-new input.
pub const MAX_SCHEMA_BYTES: u64 = 200_000;

/// How many reasons a refusal lists (the rest are counted).
const MAX_REASONS: usize = 10;

/// A schema that passed the checks, set once the messages of its batch before it are applied.
#[derive(Debug)]
pub(super) struct NewSchema {
    pub(super) schema: Schema,
    /// Its JSON in the extended format (what is recorded, carried and handed down).
    pub(super) json: Value,
    /// The stamp it is ordered by (none while legacy).
    pub(super) stamp: Option<Stamp>,
    /// The version a parent gave it (none: the held version plus one).
    pub(super) version: Option<u64>,
}

/// The stamp a `schema` payload carries: ours is `{schema, stamp: [time, origin], version}` (a
/// stamp is an array, which no entity definition is); anything else is the schema itself.
pub(super) fn given_stamp(v: &Value, now: u64) -> Result<Option<Stamp>, String> {
    match parts(v) {
        (_, true, _) => crate::order::stamp_in(v, now),
        _ => Ok(None),
    }
}

fn parts(v: &Value) -> (&Value, bool, Option<u64>) {
    if let (Some(Value::Array(_)), Some(schema @ Value::Object(_))) =
        (v.get("stamp"), v.get("schema"))
    {
        return (schema, true, v.get("version").and_then(Value::as_u64));
    }
    (v, false, None)
}

/// Checks a `schema` payload against the workflow and its current state; the error lists every
/// reason it is refused.
pub(super) fn prepare(
    ident: &Ident,
    store: &Store,
    legacy: bool,
    v: &Value,
    now: u64,
) -> Result<NewSchema, String> {
    if legacy {
        return Err(
            "refused: this run replays a history recorded before ordered control messages; send \
             the schema again after its next continue-as-new (signal `checkpoint`)"
                .into(),
        );
    }
    let stamp = given_stamp(v, now)?;
    let (given, _, version) = parts(v);
    let bytes = crate::outbox::json_len(given);
    if bytes > MAX_SCHEMA_BYTES {
        return Err(format!(
            "refused: the schema takes {bytes} bytes, more than the {MAX_SCHEMA_BYTES} a schema may"
        ));
    }
    let schema = Schema::from_json(given).map_err(|e| format!("refused: not a schema: {e}"))?;
    let mut reasons = Vec::new();
    if schema.get(&ident.entity).is_none() {
        reasons.push(format!(
            "not allowed: removing `{}`, this workflow's own entity",
            ident.entity
        ));
    }
    if let Some(old) = &ident.schema {
        reasons.extend(old.evolution_refusals(&schema));
    }
    let mut findings = Vec::new();
    super::validate::check_schema(store, &schema, &mut findings);
    reasons.extend(
        findings
            .iter()
            .filter(|f| f["severity"] == "error")
            .map(|f| {
                format!(
                    "the state does not conform: {}",
                    f["message"].as_str().unwrap_or_default()
                )
            }),
    );
    if !reasons.is_empty() {
        let more = reasons.len().saturating_sub(MAX_REASONS);
        reasons.truncate(MAX_REASONS);
        if more > 0 {
            reasons.push(format!("and {more} more"));
        }
        return Err(format!("refused: {}", reasons.join("; ")));
    }
    let json = schema.to_json();
    Ok(NewSchema {
        schema,
        json,
        stamp,
        version,
    })
}

impl Core {
    /// Sets a schema that passed [`prepare`] (after the messages before it in its batch): the
    /// next plan runs with it, and reads a removed relation's `onRemove` from the previous one.
    pub(super) fn set_schema(&mut self, next: NewSchema) {
        let ident = &mut self.ident;
        if let Some(s) = &next.stamp {
            ident.schema_order.accept(s);
        }
        ident.schema_version = next
            .version
            .unwrap_or(ident.schema_version.saturating_add(1));
        ident.previous_schema = ident.schema.replace(Arc::new(next.schema));
        ident.schema_json = Arc::new(next.json);
        self.rebuild_slices();
    }

    /// Which schema the workflow runs (the `schema` query, and the answer of an acknowledged
    /// `schema` update): its checksum (of the extended format: the same for either format), how
    /// many changes it has had, the stamp of the change, the entity names and the schema itself.
    pub fn schema_info(&self) -> Value {
        let schema = self.ident.schema.as_deref();
        json!({
            "checksum": schema.map(Schema::checksum),
            "version": self.ident.schema_version,
            "stamp": self.ident.schema_order.get(),
            "entities": schema.map(|s| s.entities().keys().cloned().collect::<Vec<_>>()),
            "schema": *self.ident.schema_json,
        })
    }

    /// The checksum of the schema it runs.
    pub fn schema_checksum(&self) -> Option<String> {
        self.ident.schema.as_deref().map(Schema::checksum)
    }
}
