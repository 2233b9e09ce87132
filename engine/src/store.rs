//! The store: normalized entities, with the stamp of every field write (last-writer-wins), a logical
//! clock and a version.
//!
//! Changes apply whole or not at all: a change is first resolved into stamped field writes (which is
//! where every check happens), then committed (which cannot fail). A batch applies several changes in
//! order, each on its own, and returns one [`ChangeSet`] computed from what the changes touched, never by
//! diffing whole states.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::change::{
    Change, ChangeKind, ChangeSet, Deletion, EntityChange, FieldChange, FieldWrite, Stamp, Strategy,
};
use crate::error::{Error, Result, json_type};
use crate::normalize::{Entities, EntityRef, Row, id_key};
use crate::schema::Schema;

/// At most this many tombstones of deleted entities are kept (the oldest are forgotten first). A write
/// older than a forgotten tombstone could bring its entity back; at this size that needs a message
/// delayed past ten thousand later deletions.
pub const MAX_TOMBSTONES: usize = 10_000;

/// Stamps of one stored entity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Stamp of each field's last write (a removed field keeps its stamp as a tombstone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stamps: BTreeMap<String, Stamp>,
    /// Stamp of the last delete (writes at or before it are ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tomb: Option<Stamp>,
    /// Stamp of the last write that asserted the entity's existence (any write of a value, or a bare
    /// create). The entity exists while this is newer than `tomb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<Stamp>,
}

impl Meta {
    fn lives(&self) -> bool {
        match (&self.alive, &self.tomb) {
            (Some(a), Some(t)) => a > t,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    fn accepts(&self, field: &str, s: &Stamp) -> bool {
        self.tomb.as_ref().is_none_or(|t| s > t) && self.stamps.get(field).is_none_or(|fs| s >= fs)
    }
}

/// Normalized entities with their stamps.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Store {
    entities: Entities,
    #[serde(default)]
    meta: BTreeMap<String, BTreeMap<String, Meta>>,
    /// Stamps of deleted entities (their tombstones), so that late older writes stay dead.
    #[serde(default)]
    tombstones: BTreeMap<String, BTreeMap<String, Meta>>,
    #[serde(default)]
    clock: u64,
    #[serde(default)]
    version: u64,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The normalized entities.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// One row.
    pub fn get(&self, entity: &str, id: &str) -> Option<&Row> {
        self.entities.get(entity)?.get(id)
    }

    /// True when the entity is stored.
    pub fn contains(&self, r: &EntityRef) -> bool {
        self.get(&r.entity, &r.id).is_some()
    }

    /// Number of stored entities.
    pub fn len(&self) -> usize {
        self.entities.values().map(|g| g.len()).sum()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entities.values().all(|g| g.is_empty())
    }

    /// The state version: incremented by every batch that changed something.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The logical clock: the largest stamp time seen.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The stamps of one entity.
    pub fn meta(&self, entity: &str, id: &str) -> Option<&Meta> {
        self.meta.get(entity)?.get(id)
    }

    /// The next stamp for a write made here: after every stamp seen, and not behind `now_ms`. (A
    /// clock at `u64::MAX`, which only a forged stamp can bring, stays there: no overflow.)
    pub fn next_stamp(&mut self, now_ms: u64, origin: &str) -> Stamp {
        self.clock = now_ms.max(self.clock.saturating_add(1));
        Stamp::new(self.clock, origin)
    }

    /// Moves the clock past a stamp seen in a message (the hybrid clock's receive rule), so that the
    /// next stamp made here is newer than anything that message was ordered after.
    pub fn observe_time(&mut self, time: u64) {
        self.clock = self.clock.max(time);
    }

    /// Starts a batch: changes applied through it end up in one change set.
    pub fn batch<'a>(&'a mut self, schema: &'a Schema) -> Batch<'a> {
        Batch {
            store: self,
            schema,
            touched: BTreeMap::new(),
        }
    }

    /// Applies one change as a batch of its own.
    pub fn apply(
        &mut self,
        schema: &Schema,
        change: &Change,
        stamp: &Stamp,
        source: &str,
    ) -> Result<ChangeSet> {
        let mut b = self.batch(schema);
        b.apply(change, stamp, source)?;
        Ok(b.finish())
    }

    /// Checks whether `change` would apply now, without applying it (for update validators). Costs
    /// what resolving the change costs: its size, not the store's.
    pub fn check(&self, schema: &Schema, change: &Change) -> Result<()> {
        Resolver {
            store: self,
            schema,
        }
        .resolve(change, &Stamp::new(self.clock.saturating_add(1), ""))
        .map(|_| ())
    }

    fn observe(&mut self, s: &Stamp) {
        self.clock = self.clock.max(s.time);
    }

    fn trim_tombstones(&mut self) {
        let count: usize = self.tombstones.values().map(|g| g.len()).sum();
        if count <= MAX_TOMBSTONES + MAX_TOMBSTONES / 10 {
            return;
        }
        let mut all: Vec<(Option<Stamp>, EntityRef)> = self
            .tombstones
            .iter()
            .flat_map(|(e, g)| {
                g.iter()
                    .map(move |(id, m)| (m.tomb.clone(), EntityRef::new(e, id)))
            })
            .collect();
        all.sort();
        for (_, r) in all.into_iter().take(count - MAX_TOMBSTONES) {
            take(&mut self.tombstones, &r);
        }
    }

    /// Takes the stamps of an entity out of the store (live or dead).
    fn take_meta(&mut self, r: &EntityRef) -> Meta {
        if self.contains(r) {
            take(&mut self.meta, r).unwrap_or_default()
        } else {
            take(&mut self.tombstones, r).unwrap_or_default()
        }
    }
}

fn take(map: &mut BTreeMap<String, BTreeMap<String, Meta>>, r: &EntityRef) -> Option<Meta> {
    let g = map.get_mut(&r.entity)?;
    let m = g.remove(&r.id);
    if g.is_empty() {
        map.remove(&r.entity);
    }
    m
}

/// The stamps of `r` in `map`, created when missing (keys are cloned only then).
fn meta_mut<'m>(
    map: &'m mut BTreeMap<String, BTreeMap<String, Meta>>,
    r: &EntityRef,
) -> &'m mut Meta {
    if !map.get(&r.entity).is_some_and(|g| g.contains_key(&r.id)) {
        map.entry(r.entity.clone())
            .or_default()
            .insert(r.id.clone(), Meta::default());
    }
    map.get_mut(&r.entity)
        .and_then(|g| g.get_mut(&r.id))
        .expect("inserted above")
}

fn put(map: &mut BTreeMap<String, BTreeMap<String, Meta>>, r: &EntityRef, m: Meta) {
    map.entry(r.entity.clone())
        .or_default()
        .insert(r.id.clone(), m);
}

struct Touch {
    /// The entity existed when the batch first touched it.
    existed: bool,
    /// The values written fields had before the batch (captured at their first write).
    old: BTreeMap<String, Option<Value>>,
    /// The whole row as it was before the batch, captured only when the entity is deleted.
    before: Option<Row>,
    fields: BTreeMap<String, Arc<str>>,
    deletion: Option<Deletion>,
    /// The source of the write that (re)created the entity in this batch.
    created_by: Option<Arc<str>>,
}

/// Changes being applied together; [`Batch::finish`] returns their change set.
pub struct Batch<'a> {
    store: &'a mut Store,
    schema: &'a Schema,
    touched: BTreeMap<EntityRef, Touch>,
}

/// Resolved writes of one entity: the id value to use if it is created, the stamp with which the
/// change asserts that the entity exists (none for pure removals), and the field writes.
struct EntityWrites {
    r: EntityRef,
    idv: Option<Value>,
    asserts: Option<Stamp>,
    writes: Vec<(String, FieldWrite)>,
}

/// Resolved writes of one change.
struct Resolved {
    deletes: Vec<(EntityRef, Stamp)>,
    fields: Vec<EntityWrites>,
}

impl Batch<'_> {
    /// The store as it is now, inside the batch.
    pub fn store(&self) -> &Store {
        self.store
    }

    /// The next stamp for a write made here (see [`Store::next_stamp`]).
    pub fn next_stamp(&mut self, now_ms: u64, origin: &str) -> Stamp {
        self.store.next_stamp(now_ms, origin)
    }

    /// Moves the clock past a stamp seen in a message (see [`Store::observe_time`]).
    pub fn observe(&mut self, time: u64) {
        self.store.observe_time(time)
    }

    /// Applies one change whole, or returns why not and changes nothing.
    pub fn apply(&mut self, change: &Change, stamp: &Stamp, source: &str) -> Result<()> {
        let resolved = Resolver {
            store: self.store,
            schema: self.schema,
        }
        .resolve(change, stamp)?;
        let source: Arc<str> = Arc::from(source);
        self.store.observe(stamp);
        for (r, s) in resolved.deletes {
            self.commit_delete(r, s, &source);
        }
        for ew in resolved.fields {
            self.commit_fields(ew, &source);
        }
        Ok(())
    }

    fn touch(&mut self, r: &EntityRef) -> &mut Touch {
        let store = &*self.store;
        self.touched.entry(r.clone()).or_insert_with(|| Touch {
            existed: store.contains(r),
            old: BTreeMap::new(),
            before: None,
            fields: BTreeMap::new(),
            deletion: None,
            created_by: None,
        })
    }

    fn commit_delete(&mut self, r: EntityRef, s: Stamp, source: &Arc<str>) {
        let current = self.store.get(&r.entity, &r.id).cloned();
        let t = self.touch(&r);
        t.deletion = Some(Deletion {
            stamp: s.clone(),
            source: source.clone(),
        });
        if t.existed && t.before.is_none() {
            // The row as it was before the batch: what is there now, with the fields this batch
            // already wrote put back.
            let mut row = current.unwrap_or_default();
            for (k, v) in &t.old {
                match v {
                    Some(v) => {
                        row.insert(k.clone(), v.clone());
                    }
                    None => {
                        row.remove(k);
                    }
                }
            }
            t.before = Some(row);
        }
        let id_attr = self
            .schema
            .get(&r.entity)
            .and_then(|d| d.id_attribute.single());
        let st = &mut *self.store;
        let was_live = st.contains(&r);
        let mut m = st.take_meta(&r);
        if m.tomb.as_ref().is_none_or(|t| *t < s) {
            m.tomb = Some(s);
        }
        let tomb = m.tomb.clone();
        m.stamps.retain(|_, fs| Some(&*fs) > tomb.as_ref());
        if was_live && m.lives() {
            let row = st
                .entities
                .get_mut(&r.entity)
                .and_then(|g| g.get_mut(&r.id))
                .expect("was_live");
            row.retain(|k, _| id_attr == Some(k.as_str()) || m.stamps.contains_key(k));
            put(&mut st.meta, &r, m);
        } else {
            if was_live {
                remove_row(st, &r);
            }
            put(&mut st.tombstones, &r, m);
            st.trim_tombstones();
        }
    }

    fn commit_fields(&mut self, ew: EntityWrites, source: &Arc<str>) {
        let EntityWrites {
            r,
            idv,
            asserts,
            writes,
        } = ew;
        self.touch(&r);
        let id_attr = self
            .schema
            .get(&r.entity)
            .and_then(|d| d.id_attribute.single());
        let st = &mut *self.store;
        let was_live = st.contains(&r);
        let m = meta_mut(
            if was_live {
                &mut st.meta
            } else {
                &mut st.tombstones
            },
            &r,
        );
        let accepted: Vec<(String, FieldWrite)> = writes
            .into_iter()
            .filter(|(k, w)| m.accepts(k, &w.stamp))
            .collect();
        if let Some(a) = asserts
            && m.tomb.as_ref().is_none_or(|t| a > *t)
            && m.alive.as_ref().is_none_or(|cur| a > *cur)
        {
            m.alive = Some(a);
        }
        for (k, w) in &accepted {
            m.stamps.insert(k.clone(), w.stamp.clone());
        }
        let lives = m.lives();
        if lives && !was_live {
            let m = take(&mut st.tombstones, &r).unwrap_or_default();
            put(&mut st.meta, &r, m);
            let mut row = Row::new();
            if let Some(a) = id_attr {
                row.insert(
                    a.to_string(),
                    idv.unwrap_or_else(|| Value::String(r.id.clone())),
                );
            }
            st.entities
                .entry(r.entity.clone())
                .or_default()
                .insert(r.id.clone(), row);
        } else if !lives {
            st.trim_tombstones();
        }
        if lives {
            let row = st
                .entities
                .get_mut(&r.entity)
                .and_then(|g| g.get_mut(&r.id))
                .expect("live entities have a row");
            let t = self.touched.get_mut(&r).expect("touched above");
            // Old values are only known while the entity is live; after a delete in this batch they
            // come from the snapshot taken then (`before`).
            if t.existed && was_live {
                for (k, _) in &accepted {
                    if !t.old.contains_key(k) {
                        t.old.insert(k.clone(), row.get(k).cloned());
                    }
                }
            }
            for (k, w) in &accepted {
                match &w.value {
                    Some(v) => {
                        row.insert(k.clone(), v.clone());
                    }
                    None => {
                        row.remove(k);
                    }
                }
            }
        }
        let touch = self.touch(&r);
        if lives && !was_live {
            touch.created_by = Some(source.clone());
        }
        for (k, _) in accepted {
            touch.fields.insert(k, source.clone());
        }
    }

    /// Ends the batch: bumps the version if anything changed and returns what changed.
    pub fn finish(self) -> ChangeSet {
        let mut cs = ChangeSet::default();
        let st = &mut *self.store;
        for (r, t) in self.touched {
            let after = st.get(&r.entity, &r.id);
            let meta = st.meta(&r.entity, &r.id);
            let id_attr = self
                .schema
                .get(&r.entity)
                .and_then(|d| d.id_attribute.single());
            let stamp_of = |k: &str| -> Stamp {
                let own = if id_attr == Some(k) {
                    meta.and_then(|m| m.alive.clone())
                } else {
                    meta.and_then(|m| m.stamps.get(k).cloned())
                };
                own.or_else(|| t.deletion.as_ref().map(|d| d.stamp.clone()))
                    .unwrap_or_else(|| Stamp::new(0, ""))
            };
            let source_of = |k: &str| -> Arc<str> {
                t.fields
                    .get(k)
                    .cloned()
                    .or_else(|| t.created_by.clone().filter(|_| id_attr == Some(k)))
                    .or_else(|| t.deletion.as_ref().map(|d| d.source.clone()))
                    .unwrap_or_else(|| Arc::from(""))
            };
            // The entity before the batch: known fully after a delete, else field by field.
            let before_row: Option<Row> = match (&t.before, t.existed) {
                (Some(b), _) => Some(b.clone()),
                (None, true) => Some(Row::new()),
                (None, false) => None,
            };
            let old_of = |k: &str| -> Option<&Value> {
                match t.old.get(k) {
                    Some(v) => v.as_ref(),
                    None => t.before.as_ref().and_then(|b| b.get(k)),
                }
            };
            let change = match (&before_row, after) {
                (None, None) => continue,
                (Some(_), None) => EntityChange {
                    kind: ChangeKind::Deleted,
                    fields: BTreeMap::new(),
                    deletion: t.deletion.clone(),
                    previous: t.before.clone(),
                },
                (None, Some(a)) => EntityChange {
                    kind: ChangeKind::Added,
                    fields: a
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                FieldChange {
                                    value: Some(v.clone()),
                                    stamp: stamp_of(k),
                                    source: source_of(k),
                                },
                            )
                        })
                        .collect(),
                    deletion: t.deletion.clone(),
                    previous: None,
                },
                (Some(b), Some(a)) => {
                    // After a delete, a copy replaying this change set loses every older field: so
                    // then every surviving field is listed, changed or not.
                    let deleted = t.deletion.is_some();
                    let mut keys: BTreeSet<&String> = t.fields.keys().collect();
                    if deleted {
                        keys.extend(b.keys());
                        keys.extend(a.keys());
                    }
                    let mut fields = BTreeMap::new();
                    for k in keys {
                        let (old, new) = (old_of(k), a.get(k));
                        if old != new || (deleted && new.is_some()) {
                            fields.insert(
                                k.clone(),
                                FieldChange {
                                    value: new.cloned(),
                                    stamp: stamp_of(k),
                                    source: source_of(k),
                                },
                            );
                        }
                    }
                    if fields.is_empty() {
                        continue;
                    }
                    EntityChange {
                        kind: ChangeKind::Updated,
                        fields,
                        deletion: t.deletion.clone(),
                        previous: None,
                    }
                }
            };
            cs.entities.insert(r, change);
        }
        if !cs.is_empty() {
            st.version += 1;
        }
        cs
    }
}

/// Turns a change into stamped writes against the current store; every check happens here.
struct Resolver<'a> {
    store: &'a Store,
    schema: &'a Schema,
}

impl Resolver<'_> {
    fn resolve(&self, change: &Change, stamp: &Stamp) -> Result<Resolved> {
        let mut out = Resolved {
            deletes: Vec::new(),
            fields: Vec::new(),
        };
        match change {
            Change::Upsert { entities, strategy } => {
                for (name, group) in entities {
                    for (id, fields) in group {
                        self.resolve_entity(name, id, fields, *strategy, stamp, &mut out)?;
                    }
                }
            }
            Change::Delete { refs } => {
                for r in refs {
                    self.schema.entity(&r.entity)?;
                    out.deletes.push((r.clone(), stamp.clone()));
                }
            }
            Change::SetState { entities } => {
                for (name, group) in &self.store.entities {
                    for id in group.keys() {
                        if !entities.get(name).is_some_and(|g| g.contains_key(id)) {
                            out.deletes.push((EntityRef::new(name, id), stamp.clone()));
                        }
                    }
                }
                for (name, group) in entities {
                    for (id, fields) in group {
                        self.resolve_entity(name, id, fields, Strategy::Replace, stamp, &mut out)?;
                    }
                }
            }
            Change::Writes(w) => {
                for (r, s) in &w.deletes {
                    self.schema.entity(&r.entity)?;
                    out.deletes.push((r.clone(), s.clone()));
                }
                for (r, fields) in &w.fields {
                    let def = self.schema.entity(&r.entity)?;
                    let id_attr = def.id_attribute.single();
                    let id_write = id_attr.and_then(|a| fields.get(a));
                    let writes: Vec<(String, FieldWrite)> = fields
                        .iter()
                        .filter(|(k, _)| id_attr != Some(k.as_str()))
                        .map(|(k, f)| (k.clone(), f.clone()))
                        .collect();
                    // Writing a value asserts existence, and so does the id field's stamp (the
                    // entity's own existence stamp, for rows that hold nothing but their id).
                    let asserts = writes
                        .iter()
                        .filter(|(_, w)| w.value.is_some())
                        .map(|(_, w)| &w.stamp)
                        .chain(id_write.map(|w| &w.stamp))
                        .max()
                        .cloned();
                    out.fields.push(EntityWrites {
                        r: r.clone(),
                        idv: id_write.and_then(|w| w.value.clone()),
                        asserts,
                        writes,
                    });
                }
            }
        }
        Ok(out)
    }

    fn resolve_entity(
        &self,
        name: &str,
        id: &str,
        fields: &Row,
        strategy: Strategy,
        stamp: &Stamp,
        out: &mut Resolved,
    ) -> Result<()> {
        let def = self.schema.entity(name)?;
        let id_attr = def.id_attribute.single();
        let idv = match id_attr.and_then(|a| fields.get(a)) {
            Some(v) => {
                if id_key(v).as_deref() != Some(id) {
                    return Err(Error::BadInput(format!(
                        "{name} `{id}`: its id attribute `{}` holds {v}, which is another id",
                        id_attr.unwrap_or("id")
                    )));
                }
                Some(v.clone())
            }
            None => None,
        };
        let current = self.store.get(name, id);
        let not_found = || Error::EntityNotFound {
            strategy: strategy.name().to_string(),
            entity: name.to_string(),
            id: id.to_string(),
        };
        let w = |value: Option<Value>| FieldWrite {
            value,
            stamp: stamp.clone(),
        };
        let plain = fields.iter().filter(|(k, _)| id_attr != Some(k.as_str()));
        let mut writes: Vec<(String, FieldWrite)> = Vec::new();
        match strategy {
            Strategy::Merge => {
                writes.extend(plain.map(|(k, v)| (k.clone(), w(Some(v.clone())))));
            }
            Strategy::Replace => {
                writes.extend(plain.map(|(k, v)| (k.clone(), w(Some(v.clone())))));
                if let Some(cur) = current {
                    for k in cur.keys() {
                        if id_attr != Some(k.as_str()) && !fields.contains_key(k) {
                            writes.push((k.clone(), w(None)));
                        }
                    }
                }
            }
            Strategy::Set => {
                current.ok_or_else(not_found)?;
                writes.extend(plain.map(|(k, v)| (k.clone(), w(Some(v.clone())))));
            }
            Strategy::Unset => {
                current.ok_or_else(not_found)?;
                writes.extend(plain.map(|(k, _)| (k.clone(), w(None))));
            }
            Strategy::Push | Strategy::Unshift | Strategy::Splice => {
                let cur = current.ok_or_else(not_found)?;
                for (k, v) in plain {
                    let mut arr = match cur.get(k) {
                        None => Vec::new(),
                        Some(Value::Array(a)) => a.clone(),
                        Some(other) => {
                            return Err(Error::NotAnArray {
                                strategy: strategy.name().to_string(),
                                entity: name.to_string(),
                                id: id.to_string(),
                                field: k.clone(),
                                found: json_type(other).to_string(),
                            });
                        }
                    };
                    match strategy {
                        Strategy::Push => match v {
                            Value::Array(items) => arr.extend(items.iter().cloned()),
                            other => arr.push(other.clone()),
                        },
                        Strategy::Unshift => {
                            let mut front = match v {
                                Value::Array(items) => items.clone(),
                                other => vec![other.clone()],
                            };
                            front.append(&mut arr);
                            arr = front;
                        }
                        _ => splice(&mut arr, v).map_err(|message| Error::BadSplice {
                            entity: name.to_string(),
                            id: id.to_string(),
                            field: k.clone(),
                            message,
                        })?,
                    }
                    writes.push((k.clone(), w(Some(Value::Array(arr)))));
                }
            }
        }
        out.fields.push(EntityWrites {
            r: EntityRef::new(name, id),
            idv,
            asserts: (strategy != Strategy::Unset).then(|| stamp.clone()),
            writes,
        });
        Ok(())
    }
}

fn remove_row(st: &mut Store, r: &EntityRef) {
    if let Some(g) = st.entities.get_mut(&r.entity) {
        g.remove(&r.id);
        if g.is_empty() {
            st.entities.remove(&r.entity);
        }
    }
}

/// JavaScript's `splice`, once per `[start, deleteCount?, ...items]` tuple.
fn splice(arr: &mut Vec<Value>, spec: &Value) -> std::result::Result<(), String> {
    let Value::Array(ops) = spec else {
        return Err(format!(
            "expected an array of [start, deleteCount, ...items] arrays, found {}",
            json_type(spec)
        ));
    };
    for op in ops {
        let Value::Array(parts) = op else {
            return Err(format!(
                "each operation is an array [start, deleteCount, ...items], found {}",
                json_type(op)
            ));
        };
        let int = |v: &Value, what: &str| -> std::result::Result<i64, String> {
            v.as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite())
                        .map(|f| f.trunc() as i64)
                })
                .ok_or_else(|| format!("{what} must be a number, found {}", json_type(v)))
        };
        let len = arr.len() as i64;
        let start = match parts.first() {
            None => return Err("an operation needs at least a start index".into()),
            Some(v) => int(v, "start")?,
        };
        let start = if start < 0 {
            (len + start).max(0)
        } else {
            start.min(len)
        } as usize;
        let count = match parts.get(1) {
            None => arr.len() - start,
            Some(v) => (int(v, "deleteCount")?.max(0) as usize).min(arr.len() - start),
        };
        let items: Vec<Value> = parts.iter().skip(2).cloned().collect();
        arr.splice(start..start + count, items);
    }
    Ok(())
}
