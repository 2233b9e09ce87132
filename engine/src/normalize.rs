//! Nested JSON ⇄ normalized `{Entity: {id: row}}`.
//!
//! Relation fields of a normalized row hold ids (the id value as given, string or number; composite ids
//! as their `-`-joined string), arrays of ids, or `null`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::error::{Error, Result, json_type};
use crate::schema::{EntityDef, IdAttribute, Schema};

/// One normalized row: the entity's fields, relations holding ids.
pub type Row = Map<String, Value>;

/// Normalized entities: entity name → id → row.
pub type Entities = BTreeMap<String, BTreeMap<String, Row>>;

/// Maximum number of entity expansions in one denormalization; past it, relations stay ids.
/// This bounds the output for graphs with many shared entities (diamonds), whose expansion would
/// otherwise grow exponentially.
pub const DENORMALIZE_BUDGET: usize = 100_000;

/// Where in the input a value is, rendered only when an error needs it (normalizing allocates no
/// path strings on the happy path).
#[derive(Clone, Copy)]
pub enum Path<'a> {
    /// The top (`data`, or a custom root such as `updates.User.u1`).
    Root(&'a str),
    /// An array element.
    Index(&'a Path<'a>, usize),
    /// An object field.
    Field(&'a Path<'a>, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(r) => write!(f, "{r}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
            Path::Field(p, k) => write!(f, "{p}.{k}"),
        }
    }
}

/// Rows collected during a normalization, per entity in arrival order; [`Staged::finish`] sorts them
/// (stably, so later copies of the same entity merge over earlier ones) and builds each map in one pass.
#[derive(Default)]
struct Staged {
    groups: BTreeMap<String, Vec<(String, Row)>>,
}

impl Staged {
    fn push(&mut self, entity: &str, key: String, row: Row) {
        match self.groups.get_mut(entity) {
            Some(v) => v.push((key, row)),
            None => {
                self.groups.insert(entity.to_string(), vec![(key, row)]);
            }
        }
    }

    fn finish(self) -> Entities {
        let mut out = Entities::new();
        for (name, mut rows) in self.groups {
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            let mut merged: Vec<(String, Row)> = Vec::with_capacity(rows.len());
            for (k, r) in rows {
                match merged.last_mut() {
                    Some((lk, lr)) if *lk == k => lr.extend(r),
                    _ => merged.push((k, r)),
                }
            }
            out.insert(name, merged.into_iter().collect());
        }
        out
    }
}

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
        let key = self.key_of(row, &Path::Root(path))?;
        let v = match &self.id_attribute {
            IdAttribute::Single(attr) => row.get(attr).cloned().unwrap_or(Value::Null),
            IdAttribute::Composite(_) => Value::String(key.clone()),
        };
        Ok((key, v))
    }

    /// The id key of a row.
    pub fn key_of(&self, row: &Map<String, Value>, path: &Path<'_>) -> Result<String> {
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
    /// Normalizes nested data of entity `entity` (one object, or an array of them).
    pub fn normalize(&self, entity: &str, data: &Value) -> Result<Entities> {
        self.normalize_owned(entity, data.clone())
    }

    /// Normalizes nested data, taking ownership (no copy of the rows).
    pub fn normalize_owned(&self, entity: &str, data: Value) -> Result<Entities> {
        let def = self.entity(entity)?;
        let mut staged = Staged::default();
        let root = Path::Root("data");
        match data {
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    self.normalize_one(def, item, &Path::Index(&root, i), &mut staged, 0)?;
                }
            }
            other => {
                self.normalize_one(def, other, &root, &mut staged, 0)?;
            }
        }
        Ok(staged.finish())
    }

    /// Normalizes one entity into `out`.
    fn normalize_one(
        &self,
        def: &EntityDef,
        data: Value,
        path: &Path<'_>,
        out: &mut Staged,
        depth: usize,
    ) -> Result<()> {
        if depth > 256 {
            return Err(Error::BadData {
                entity: def.name.clone(),
                path: path.to_string(),
                message: "nested more than 256 levels deep".into(),
            });
        }
        let mut row = match data {
            Value::Object(m) => m,
            other => {
                return Err(Error::BadData {
                    entity: def.name.clone(),
                    path: path.to_string(),
                    message: format!("expected an object, found {}", json_type(&other)),
                });
            }
        };
        let key = def.key_of(&row, path)?;
        if !def.relations.is_empty() {
            self.normalize_relations_at(def, &mut row, path, out, depth)?;
        }
        out.push(&def.name, key, row);
        Ok(())
    }

    /// Replaces nested objects in the relation fields of `row` by their ids, adding them to `out`, and
    /// checks that every relation field holds an id, an array of ids or null.
    pub fn normalize_relations(
        &self,
        def: &EntityDef,
        row: &mut Row,
        path: &str,
        out: &mut Entities,
        depth: usize,
    ) -> Result<()> {
        let mut staged = Staged::default();
        self.normalize_relations_at(def, row, &Path::Root(path), &mut staged, depth)?;
        for (name, group) in staged.finish() {
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

    fn normalize_relations_at(
        &self,
        def: &EntityDef,
        row: &mut Row,
        path: &Path<'_>,
        out: &mut Staged,
        depth: usize,
    ) -> Result<()> {
        for (field, rel) in &def.relations {
            let Some(v) = row.get_mut(field) else {
                continue;
            };
            let target = self.entity(&rel.target)?;
            let fpath = Path::Field(path, field);
            let taken = std::mem::take(v);
            *v = match taken {
                Value::Null => Value::Null,
                Value::Array(items) => {
                    let mut ids = Vec::with_capacity(items.len());
                    for (i, it) in items.into_iter().enumerate() {
                        ids.push(self.normalize_ref(
                            target,
                            it,
                            &Path::Index(&fpath, i),
                            out,
                            depth,
                        )?);
                    }
                    Value::Array(ids)
                }
                other => self.normalize_ref(target, other, &fpath, out, depth)?,
            };
        }
        Ok(())
    }

    fn normalize_ref(
        &self,
        target: &EntityDef,
        v: Value,
        path: &Path<'_>,
        out: &mut Staged,
        depth: usize,
    ) -> Result<Value> {
        match v {
            Value::Object(ref m) => {
                // The value a relation holds: the id as given (composite ids as their key).
                let idv = match target.id_attribute.single() {
                    Some(a) => m.get(a).cloned().unwrap_or(Value::Null),
                    None => Value::String(target.key_of(m, path)?),
                };
                self.normalize_one(target, v, path, out, depth + 1)?;
                Ok(idv)
            }
            Value::String(ref s) if !s.is_empty() => Ok(v),
            Value::Number(_) => Ok(v),
            other => Err(Error::BadData {
                entity: target.name.clone(),
                path: path.to_string(),
                message: format!(
                    "a relation holds an object, an id (string or number) or null, found {}",
                    json_type(&other)
                ),
            }),
        }
    }

    /// Denormalizes one entity from normalized entities: relations are expanded into nested objects,
    /// a relation back to an entity already being expanded (a cycle) stays an id, and so does a relation
    /// to an entity that is not present. `None` if the entity itself is absent.
    pub fn denormalize(&self, entities: &Entities, entity: &str, id: &str) -> Option<Value> {
        let row = entities.get(entity)?.get(id)?;
        let mut path = BTreeSet::new();
        let mut budget = DENORMALIZE_BUDGET;
        Some(self.denorm_row(entities, entity, id, row, &mut path, &mut budget))
    }

    fn denorm_row(
        &self,
        entities: &Entities,
        entity: &str,
        id: &str,
        row: &Row,
        path: &mut BTreeSet<(String, String)>,
        budget: &mut usize,
    ) -> Value {
        let Some(def) = self.get(entity) else {
            return Value::Object(row.clone());
        };
        path.insert((entity.to_string(), id.to_string()));
        let mut out = Map::new();
        for (k, v) in row {
            let value = match def.relations.get(k) {
                None => v.clone(),
                Some(rel) => match v {
                    Value::Array(items) => Value::Array(
                        items
                            .iter()
                            .map(|it| self.denorm_ref(entities, &rel.target, it, path, budget))
                            .collect(),
                    ),
                    other => self.denorm_ref(entities, &rel.target, other, path, budget),
                },
            };
            out.insert(k.clone(), value);
        }
        path.remove(&(entity.to_string(), id.to_string()));
        Value::Object(out)
    }

    fn denorm_ref(
        &self,
        entities: &Entities,
        target: &str,
        idv: &Value,
        path: &mut BTreeSet<(String, String)>,
        budget: &mut usize,
    ) -> Value {
        let Some(key) = id_key(idv) else {
            return idv.clone();
        };
        if *budget == 0 || path.contains(&(target.to_string(), key.clone())) {
            return idv.clone();
        }
        match entities.get(target).and_then(|g| g.get(&key)) {
            Some(row) => {
                *budget -= 1;
                self.denorm_row(entities, target, &key, row, path, budget)
            }
            None => idv.clone(),
        }
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

    #[test]
    fn denormalize_cuts_cycles_with_ids() {
        let s = schema();
        let data = json!({"id": "u", "listings": [{"id": "l", "user": "u", "photos": [{"id": "p", "listing": "l"}]}]});
        let n = s.normalize("User", &data).unwrap();
        assert_eq!(s.denormalize(&n, "User", "u").unwrap(), data);
        assert_eq!(s.denormalize(&n, "User", "zz"), None);
        // A dangling id stays an id.
        let n = s
            .normalize("User", &json!({"id": "u", "profile": "p9"}))
            .unwrap();
        assert_eq!(
            s.denormalize(&n, "User", "u").unwrap(),
            json!({"id": "u", "profile": "p9"})
        );
    }
}
