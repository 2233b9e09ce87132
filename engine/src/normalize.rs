//! Nested JSON ⇄ normalized `{Entity: {id: row}}`.
//!
//! Relation fields of a normalized row hold ids (the id value as given, string or number; composite ids
//! as their `-`-joined string), arrays of ids, or `null`.
//!
//! Deep data never overflows the stack: normalizing is iterative (nested entities of any depth are
//! normalized, the input taken apart as it is walked), and denormalizing leaves relations nested deeper
//! than [`DENORMALIZE_DEPTH`] levels as ids (see [`Schema::denormalize`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::{Error, Result, json_type};
use crate::schema::{EntityDef, IdAttribute, Schema};

mod denormalize;
mod walk;

pub use denormalize::{DENORMALIZE_BUDGET, DENORMALIZE_DEPTH};

/// One normalized row: the entity's fields, relations holding ids.
pub type Row = Map<String, Value>;

/// Normalized entities: entity name → id → row.
pub type Entities = BTreeMap<String, BTreeMap<String, Row>>;

/// A reference to one entity: its name and its id (as a string key).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct EntityRef {
    /// Entity name.
    pub entity: String,
    /// Id key.
    pub id: String,
}

impl EntityRef {
    /// Builds a reference.
    pub fn new(entity: impl Into<String>, id: impl Into<String>) -> Self {
        EntityRef {
            entity: entity.into(),
            id: id.into(),
        }
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.entity, self.id)
    }
}

/// The key under which an id value is stored (strings as they are, numbers in their JSON form).
pub fn id_key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn get_path<'a>(row: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = row.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

impl EntityDef {
    /// The id of a row (as a key) and the value to put in relation fields that point at it.
    pub fn id_of(&self, row: &Map<String, Value>, path: &str) -> Result<(String, Value)> {
        let key = self.key_of(row, &path)?;
        let v = match &self.id_attribute {
            IdAttribute::Single(attr) => row.get(attr).cloned().unwrap_or(Value::Null),
            IdAttribute::Composite(_) => Value::String(key.clone()),
        };
        Ok((key, v))
    }

    /// The id key of a row; `path` says where the row is in errors.
    pub fn key_of(&self, row: &Map<String, Value>, path: &dyn std::fmt::Display) -> Result<String> {
        let bad = |message: String| Error::BadData {
            entity: self.name.clone(),
            path: path.to_string(),
            message,
        };
        match &self.id_attribute {
            IdAttribute::Single(attr) => match row.get(attr) {
                None | Some(Value::Null) => Err(bad(format!("missing id attribute `{attr}`"))),
                Some(v) => match id_key(v) {
                    Some(k) => Ok(k),
                    None => Err(bad(format!(
                        "id attribute `{attr}` must be a non-empty string or a number, found {}",
                        json_type(v)
                    ))),
                },
            },
            IdAttribute::Composite(attrs) => composite_key(row, attrs).map_err(bad),
        }
    }
}

/// The composite key of a row: the values of `attrs` (dot paths) joined with `-`.
pub fn composite_key(row: &Map<String, Value>, attrs: &[String]) -> Result<String, String> {
    let mut parts = Vec::with_capacity(attrs.len());
    for a in attrs {
        match get_path(row, a) {
            Some(v) => match id_key(v) {
                Some(k) => parts.push(k),
                None => {
                    return Err(format!(
                        "composite id part `{a}` must be a non-empty string or a number, found {}",
                        json_type(v)
                    ));
                }
            },
            None => return Err(format!("missing composite id part `{a}`")),
        }
    }
    Ok(parts.join("-"))
}

impl Schema {
    /// Normalizes nested data of entity `entity` (one object, or an array of them). The walk is
    /// iterative; only the copy of `data` it starts with (serde_json's `clone`) recurses once per JSON
    /// level, as dropping `data` does: use [`Schema::normalize_owned`] to avoid it.
    pub fn normalize(&self, entity: &str, data: &Value) -> Result<Entities> {
        self.normalize_owned(entity, data.clone())
    }

    /// Normalizes nested data, taking ownership (no copy of the rows). Nested entities of any depth are
    /// normalized (iteratively), and `data` is taken apart as it is walked.
    pub fn normalize_owned(&self, entity: &str, data: Value) -> Result<Entities> {
        let def = self.entity(entity)?;
        let mut walk = walk::Walk::new(self, "data");
        walk.top(def, data)?;
        Ok(walk.out.finish())
    }

    /// Replaces nested objects in the relation fields of `row` by their ids, adding them to `out`, and
    /// checks that every relation field holds an id, an array of ids or null. `path` names the row in
    /// errors.
    pub fn normalize_relations(
        &self,
        def: &EntityDef,
        row: &mut Row,
        path: &str,
        out: &mut Entities,
    ) -> Result<()> {
        let mut walk = walk::Walk::new(self, path);
        walk.row_at_root(def, row)?;
        for (name, group) in walk.out.finish() {
            let g = out.entry(name).or_default();
            for (id, r) in group {
                match g.get_mut(&id) {
                    Some(existing) => existing.extend(r),
                    None => {
                        g.insert(id, r);
                    }
                }
            }
        }
        Ok(())
    }

    /// The ids (as references) that a row's relation fields point at.
    pub fn refs_of<'a>(
        &'a self,
        entity: &str,
        row: &'a Row,
    ) -> impl Iterator<Item = EntityRef> + 'a {
        let def = self.get(entity);
        def.into_iter().flat_map(move |def| {
            def.relations.iter().flat_map(move |(field, rel)| {
                let v = row.get(field);
                let ids: Vec<EntityRef> = match v {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(id_key)
                        .map(|k| EntityRef::new(rel.target.clone(), k))
                        .collect(),
                    Some(other) => id_key(other)
                        .map(|k| EntityRef::new(rel.target.clone(), k))
                        .into_iter()
                        .collect(),
                    None => Vec::new(),
                };
                ids
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(
            r#"
User: {listings: [Listing], profile: Profile, friends: [User]}
Listing: {user: User, photos: [Photo]}
Photo: {listing: Listing, likes: [Like]}
Like: {photo: Photo, user: User}
Profile: {user: User}
Vendor: {idAttribute: name}
Member: {idAttribute: [org.id, id]}
"#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn normalizes_like_normalizr() {
        let s = schema();
        let n = s
            .normalize(
                "User",
                &json!({"id": "u", "listings": [{"id": "l", "user": "u"}]}),
            )
            .unwrap();
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"Listing": {"l": {"id": "l", "user": "u"}}, "User": {"u": {"id": "u", "listings": ["l"]}}})
        );
    }

    #[test]
    fn keeps_string_ids_nulls_and_empty_arrays() {
        let s = schema();
        let n = s
            .normalize(
                "User",
                &json!({"id": 1, "listings": [], "profile": null, "friends": ["2", 3]}),
            )
            .unwrap();
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"User": {"1": {"id": 1, "listings": [], "profile": null, "friends": ["2", 3]}}})
        );
    }

    #[test]
    fn merges_the_same_entity_seen_twice() {
        let s = schema();
        let n = s
            .normalize(
                "User",
                &json!({"id": "u", "listings": [
                    {"id": "l1", "user": {"id": "u", "name": "Ann"}},
                    {"id": "l2", "user": {"id": "u", "age": 3}}]}),
            )
            .unwrap();
        assert_eq!(
            serde_json::to_value(&n["User"]["u"]).unwrap(),
            json!({"id": "u", "name": "Ann", "age": 3, "listings": ["l1", "l2"]})
        );
    }

    #[test]
    fn composite_and_custom_ids() {
        let s = schema();
        let n = s
            .normalize("Member", &json!([{"org": {"id": 7}, "id": "a"}]))
            .unwrap();
        assert!(n["Member"].contains_key("7-a"));
        let n = s.normalize("Vendor", &json!({"name": "acme"})).unwrap();
        assert!(n["Vendor"].contains_key("acme"));
        let e = s.normalize("Member", &json!({"id": "a"})).unwrap_err();
        assert!(e.to_string().contains("org.id"), "{e}");
    }

    #[test]
    fn bad_data_is_an_error_with_a_path() {
        let s = schema();
        let e = s
            .normalize(
                "User",
                &json!({"id": "u", "listings": [{"id": "l"}, {"name": "x"}]}),
            )
            .unwrap_err();
        assert!(e.to_string().contains("data.listings[1]"), "{e}");
        assert!(s.normalize("User", &json!({"id": true})).is_err());
        assert!(
            s.normalize("User", &json!({"id": "u", "listings": [true]}))
                .is_err()
        );
        assert!(s.normalize("User", &json!(42)).is_err());
        assert!(s.normalize("Nope", &json!({"id": 1})).is_err());
    }
}
