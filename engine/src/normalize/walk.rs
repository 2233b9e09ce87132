//! The normalization walk: iterative (an explicit stack of tasks), so nested data of any depth is
//! normalized without growing the call stack, and the input is taken apart as it is walked.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::{Entities, Row};
use crate::error::{Error, Result, json_type};
use crate::schema::{EntityDef, Schema};

/// Rows collected during a normalization, per entity in arrival order; [`Staged::finish`] sorts them
/// (stably, so later copies of the same entity merge over earlier ones) and builds each map in one pass.
#[derive(Default)]
pub(super) struct Staged {
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

    pub(super) fn finish(self) -> Entities {
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

/// One step down from a nested entity: a to-one relation field, or an element of a to-many one.
#[derive(Clone, Copy)]
pub(super) enum Seg<'a> {
    /// `.field`
    Field(&'a str),
    /// `.field[i]`
    Item(&'a str, usize),
    /// `[i]` (an element of a top-level array)
    Index(usize),
}

/// The places a normalization visited, as a tree of steps from the root (node 0); only the nested
/// entities and the places of errors get a node, and a path is rendered only for an error.
pub(super) struct Paths<'a> {
    root: &'a str,
    nodes: Vec<(usize, Option<Seg<'a>>)>,
}

impl<'a> Paths<'a> {
    fn new(root: &'a str) -> Self {
        Paths {
            root,
            nodes: vec![(0, None)],
        }
    }

    fn child(&mut self, parent: usize, seg: Seg<'a>) -> usize {
        self.nodes.push((parent, Some(seg)));
        self.nodes.len() - 1
    }

    fn at(&self, node: usize) -> At<'_, 'a> {
        At { paths: self, node }
    }
}

/// A path, displayed as `data.listings[2].user` (iteratively: a path is as long as the data is deep).
pub(super) struct At<'p, 'a> {
    paths: &'p Paths<'a>,
    node: usize,
}

impl fmt::Display for At<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut segs = Vec::new();
        let mut node = self.node;
        while let (parent, Some(seg)) = self.paths.nodes[node] {
            segs.push(seg);
            node = parent;
        }
        f.write_str(self.paths.root)?;
        for seg in segs.iter().rev() {
            match seg {
                Seg::Field(k) => write!(f, ".{k}")?,
                Seg::Item(k, i) => write!(f, ".{k}[{i}]")?,
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

fn bad_data(def: &EntityDef, at: At<'_, '_>, message: String) -> Error {
    Error::BadData {
        entity: def.name.clone(),
        path: at.to_string(),
        message,
    }
}

/// What is left to do: normalize a nested entity (at a path node), or record one whose nested
/// entities are done (after them, so that an outer copy of an entity merges over inner ones).
enum Task<'a> {
    Enter(&'a EntityDef, Value, usize),
    Emit(&'a str, String, Row),
}

/// One normalization in progress.
pub(super) struct Walk<'a> {
    schema: &'a Schema,
    paths: Paths<'a>,
    todo: Vec<Task<'a>>,
    children: Vec<Task<'a>>,
    pub(super) out: Staged,
}

impl<'a> Walk<'a> {
    /// A walk whose paths start at `root` (`data`, `updates.User.u1`, ...).
    pub(super) fn new(schema: &'a Schema, root: &'a str) -> Self {
        Walk {
            schema,
            paths: Paths::new(root),
            todo: Vec::new(),
            children: Vec::new(),
            out: Staged::default(),
        }
    }

    /// Normalizes `data`: one entity, or an array of them.
    pub(super) fn top(&mut self, def: &'a EntityDef, data: Value) -> Result<()> {
        match data {
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate().rev() {
                    let node = self.paths.child(0, Seg::Index(i));
                    self.todo.push(Task::Enter(def, item, node));
                }
            }
            other => self.todo.push(Task::Enter(def, other, 0)),
        }
        self.run()
    }

    /// Normalizes the relation fields of a row at the root (see `Schema::normalize_relations`).
    pub(super) fn row_at_root(&mut self, def: &'a EntityDef, row: &mut Row) -> Result<()> {
        self.relations(def, row, 0)?;
        self.schedule_children();
        self.run()
    }

    fn run(&mut self) -> Result<()> {
        while let Some(task) = self.todo.pop() {
            match task {
                Task::Enter(def, value, node) => self.enter(def, value, node)?,
                Task::Emit(entity, key, row) => self.out.push(entity, key, row),
            }
        }
        Ok(())
    }

    /// Pushes the nested entities found in one row, so that they are walked in order.
    fn schedule_children(&mut self) {
        self.todo.extend(self.children.drain(..).rev());
    }

    fn enter(&mut self, def: &'a EntityDef, value: Value, node: usize) -> Result<()> {
        let mut row = match value {
            Value::Object(m) => m,
            other => {
                let message = format!("expected an object, found {}", json_type(&other));
                return Err(bad_data(def, self.paths.at(node), message));
            }
        };
        let key = def.key_of(&row, &self.paths.at(node))?;
        if !def.relations.is_empty() {
            self.relations(def, &mut row, node)?;
        }
        self.todo.push(Task::Emit(&def.name, key, row));
        self.schedule_children();
        Ok(())
    }

    /// Replaces nested objects in the relation fields of `row` by their ids (collecting them in
    /// `children`), and checks that every relation field holds an id, an array of ids or null.
    fn relations(&mut self, def: &'a EntityDef, row: &mut Row, node: usize) -> Result<()> {
        let schema = self.schema;
        for (field, rel) in &def.relations {
            let Some(v) = row.get_mut(field) else {
                continue;
            };
            let target = schema.entity(&rel.target)?;
            *v = match std::mem::take(v) {
                Value::Null => Value::Null,
                Value::Array(items) => {
                    let mut ids = Vec::with_capacity(items.len());
                    for (i, it) in items.into_iter().enumerate() {
                        ids.push(self.reference(target, it, node, Seg::Item(field, i))?);
                    }
                    Value::Array(ids)
                }
                other => self.reference(target, other, node, Seg::Field(field))?,
            };
        }
        Ok(())
    }

    /// The value a relation holds for `v`: the id as given (composite ids as their key); a nested
    /// object is queued to be normalized too.
    fn reference(
        &mut self,
        target: &'a EntityDef,
        v: Value,
        node: usize,
        seg: Seg<'a>,
    ) -> Result<Value> {
        match v {
            Value::Object(ref m) => {
                let at = self.paths.child(node, seg);
                let idv = match target.id_attribute.single() {
                    Some(a) => m.get(a).cloned().unwrap_or(Value::Null),
                    None => Value::String(target.key_of(m, &self.paths.at(at))?),
                };
                self.children.push(Task::Enter(target, v, at));
                Ok(idv)
            }
            Value::String(ref s) if !s.is_empty() => Ok(v),
            Value::Number(_) => Ok(v),
            other => {
                let message = format!(
                    "a relation holds an object, an id (string or number) or null, found {}",
                    json_type(&other)
                );
                let at = self.paths.child(node, seg);
                Err(bad_data(target, self.paths.at(at), message))
            }
        }
    }
}
