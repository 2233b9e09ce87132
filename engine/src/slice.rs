//! Slices: the part of a store reachable from one entity through its relations, optionally stopping at
//! given entities (a child's slice stops at its parent's entity), and an index that tells, for a change
//! set, which slices it touches and how.

use std::collections::{BTreeMap, BTreeSet};

use crate::change::{ChangeKind, ChangeSet};
use crate::normalize::{Entities, EntityRef};
use crate::schema::Schema;
use crate::store::Store;

/// The entities reachable from `root` (included) through relation fields, not entering `stop`.
/// References to entities that are not stored are included too (they join the slice when they appear).
pub fn reachable(
    schema: &Schema,
    entities: &Entities,
    root: &EntityRef,
    stop: &BTreeSet<EntityRef>,
) -> BTreeSet<EntityRef> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.clone()];
    while let Some(r) = todo.pop() {
        if stop.contains(&r) || !seen.insert(r.clone()) {
            continue;
        }
        if let Some(row) = entities.get(&r.entity).and_then(|g| g.get(&r.id)) {
            for next in schema.refs_of(&r.entity, row) {
                if !seen.contains(&next) && !stop.contains(&next) {
                    todo.push(next);
                }
            }
        }
    }
    seen
}

/// The stored rows of a set of entities, as normalized entities.
pub fn extract(entities: &Entities, members: &BTreeSet<EntityRef>) -> Entities {
    let mut out = Entities::new();
    for r in members {
        if let Some(row) = entities.get(&r.entity).and_then(|g| g.get(&r.id)) {
            out.entry(r.entity.clone())
                .or_default()
                .insert(r.id.clone(), row.clone());
        }
    }
    out
}

/// How a change set affects one slice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceDelta {
    /// The changes to entities that are in the slice (before or after).
    pub changes: ChangeSet,
    /// Stored entities that joined the slice: the holder needs their whole rows, not only what changed.
    pub entered: BTreeSet<EntityRef>,
    /// Entities that left the slice without being deleted.
    pub left: BTreeSet<EntityRef>,
}

impl SliceDelta {
    /// True when the slice is unaffected.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.entered.is_empty() && self.left.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    stop: BTreeSet<EntityRef>,
    members: BTreeSet<EntityRef>,
}

/// Slices of many roots, with an index from each entity to the slices that hold it, kept up to date
/// change set by change set: the cost of [`SliceIndex::update`] grows with the change and the slices it
/// touches, not with the number of slices or the size of the store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SliceIndex {
    slices: BTreeMap<EntityRef, Entry>,
    member_of: BTreeMap<EntityRef, BTreeSet<EntityRef>>,
}

impl SliceIndex {
    /// An empty index.
    pub fn new() -> SliceIndex {
        SliceIndex::default()
    }

    /// Adds (or recomputes) the slice of `root`, stopping at `stop`.
    pub fn insert(
        &mut self,
        schema: &Schema,
        store: &Store,
        root: EntityRef,
        stop: BTreeSet<EntityRef>,
    ) {
        self.remove(&root);
        let members = reachable(schema, store.entities(), &root, &stop);
        for m in &members {
            self.member_of
                .entry(m.clone())
                .or_default()
                .insert(root.clone());
        }
        self.slices.insert(root, Entry { stop, members });
    }

    /// Removes the slice of `root`.
    pub fn remove(&mut self, root: &EntityRef) {
        if let Some(e) = self.slices.remove(root) {
            for m in &e.members {
                if let Some(s) = self.member_of.get_mut(m) {
                    s.remove(root);
                    if s.is_empty() {
                        self.member_of.remove(m);
                    }
                }
            }
        }
    }

    /// True when `root` has a slice here.
    pub fn contains(&self, root: &EntityRef) -> bool {
        self.slices.contains_key(root)
    }

    /// The roots, in order.
    pub fn roots(&self) -> impl Iterator<Item = &EntityRef> {
        self.slices.keys()
    }

    /// The members of `root`'s slice (stored or referenced).
    pub fn members(&self, root: &EntityRef) -> Option<&BTreeSet<EntityRef>> {
        self.slices.get(root).map(|e| &e.members)
    }

    /// The rows of `root`'s slice.
    pub fn slice(&self, store: &Store, root: &EntityRef) -> Entities {
        match self.slices.get(root) {
            Some(e) => extract(store.entities(), &e.members),
            None => Entities::new(),
        }
    }

    /// The slices that hold `r`.
    pub fn slices_holding(&self, r: &EntityRef) -> impl Iterator<Item = &EntityRef> {
        self.member_of.get(r).into_iter().flatten()
    }

    /// Brings the index up to date with a change set already applied to `store`, and returns, for each
    /// affected slice, what it has to learn.
    pub fn update(
        &mut self,
        schema: &Schema,
        store: &Store,
        cs: &ChangeSet,
    ) -> BTreeMap<EntityRef, SliceDelta> {
        // Which slices hold a changed entity, and which of them may have changed shape.
        let mut affected: BTreeMap<EntityRef, bool> = BTreeMap::new();
        for (r, c) in &cs.entities {
            let structural = c.kind != ChangeKind::Updated
                || c.deletion.is_some()
                || schema
                    .get(&r.entity)
                    .is_some_and(|d| c.touches_any(d.relations.keys()));
            for root in self.member_of.get(r).into_iter().flatten() {
                let s = affected.entry(root.clone()).or_insert(false);
                *s |= structural;
            }
        }
        let mut out = BTreeMap::new();
        for (root, structural) in affected {
            let mut delta = SliceDelta::default();
            let old = self
                .slices
                .get(&root)
                .map(|e| e.members.clone())
                .unwrap_or_default();
            let members = if structural {
                let stop = self.slices[&root].stop.clone();
                self.insert(schema, store, root.clone(), stop);
                let new = self.slices[&root].members.clone();
                for r in new.difference(&old) {
                    if store.contains(r) {
                        delta.entered.insert(r.clone());
                    }
                }
                for r in old.difference(&new) {
                    if store.contains(r) {
                        delta.left.insert(r.clone());
                    }
                }
                new.union(&old).cloned().collect::<BTreeSet<_>>()
            } else {
                old
            };
            delta.changes = cs.restricted_to(members.iter().filter(|r| !delta.left.contains(*r)));
            if !delta.is_empty() {
                out.insert(root, delta);
            }
        }
        out
    }
}
