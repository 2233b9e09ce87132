//! Normalized `{Entity: {id: row}}` → nested JSON, with bounded depth and size.

use serde_json::{Map, Value};

use super::{Entities, Row, id_key};
use crate::schema::Schema;

/// Maximum number of entity expansions in one denormalization; past it, relations stay ids.
/// This bounds the output for graphs with many shared entities (diamonds), whose expansion would
/// otherwise grow exponentially.
pub const DENORMALIZE_BUDGET: usize = 100_000;

/// Maximum nesting of expanded relations in one denormalization: the root entity is level 0, and the
/// relations of an entity at this level stay ids (the documented cut-off, as for cycles). It bounds the
/// walk's stack (one frame per level) and the answer's nesting: a to-many relation nests two JSON levels,
/// so 32 levels stay well within the 128 that serde_json (and most JSON readers) accept, with room left
/// for the rows' own nested fields. A chain of references of any length is answered.
pub const DENORMALIZE_DEPTH: usize = 32;

impl Schema {
    /// Denormalizes one entity from normalized entities: relations are expanded into nested objects,
    /// a relation back to an entity already being expanded (a cycle) stays an id, and so does a relation
    /// to an entity that is not present. `None` if the entity itself is absent.
    ///
    /// Cut-offs (the relation stays its id, exactly as for a cycle): relations nested deeper than
    /// [`DENORMALIZE_DEPTH`] levels (the relations of an entity at that level), and every relation once
    /// [`DENORMALIZE_BUDGET`] entities have been expanded. So a chain of references of any length is
    /// answered, with at most [`DENORMALIZE_DEPTH`] levels of nesting.
    pub fn denormalize(&self, entities: &Entities, entity: &str, id: &str) -> Option<Value> {
        let (name, group) = entities.get_key_value(entity)?;
        let (key, row) = group.get_key_value(id)?;
        let mut d = Denorm {
            schema: self,
            entities,
            path: Vec::new(),
            budget: DENORMALIZE_BUDGET,
        };
        Some(d.row(name, key, row))
    }
}

/// One denormalization: the entities being expanded (root first; never longer than
/// [`DENORMALIZE_DEPTH`] + 1, so the recursion is bounded) and the expansions left.
struct Denorm<'a> {
    schema: &'a Schema,
    entities: &'a Entities,
    path: Vec<(&'a str, &'a str)>,
    budget: usize,
}

impl<'a> Denorm<'a> {
    fn row(&mut self, entity: &'a str, id: &'a str, row: &'a Row) -> Value {
        let schema = self.schema;
        let Some(def) = schema.get(entity) else {
            return Value::Object(row.clone());
        };
        self.path.push((entity, id));
        let mut out = Map::new();
        for (k, v) in row {
            let value = match def.relations.get(k) {
                None => v.clone(),
                Some(rel) => match v {
                    Value::Array(items) => Value::Array(
                        items
                            .iter()
                            .map(|it| self.relation(&rel.target, it))
                            .collect(),
                    ),
                    other => self.relation(&rel.target, other),
                },
            };
            out.insert(k.clone(), value);
        }
        self.path.pop();
        Value::Object(out)
    }

    /// The value of one relation: the expanded entity, or the id as it is (not an id, a missing
    /// entity, a cycle, past the depth limit or past the budget).
    fn relation(&mut self, target: &str, idv: &Value) -> Value {
        if self.budget == 0 || self.path.len() > DENORMALIZE_DEPTH {
            return idv.clone();
        }
        let Some(key) = id_key(idv) else {
            return idv.clone();
        };
        let entities = self.entities;
        let found = entities.get_key_value(target).and_then(|(name, group)| {
            let (id, row) = group.get_key_value(&key)?;
            Some((name.as_str(), id.as_str(), row))
        });
        match found {
            Some((name, id, row)) if !self.path.contains(&(name, id)) => {
                self.budget -= 1;
                self.row(name, id, row)
            }
            _ => idv.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(
            "User: {listings: [Listing], profile: Profile}\nListing: {user: User, photos: [Photo]}\nPhoto: {listing: Listing}\nProfile: {user: User}",
            "test",
        )
        .unwrap()
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
